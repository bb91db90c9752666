r"""Two-layer ReLU networks with weight decay as convex programs (Pilanci & Ergen 2020), solved with certificates.

The non-convex training problem of a width-:math:`m` network :math:`x \mapsto
\sum_j \mathrm{relu}(x^T u_j)\,\alpha_j` (no biases: append a column of ones
to :math:`X` for them) on data :math:`X \in \mathbb R^{n\times d}`, :math:`y \in
\mathbb R^n` is

.. math:: L(U, \alpha) = \tfrac12\Big\lVert \sum_j \mathrm{relu}(X u_j)\alpha_j - y\Big\rVert^2
          + \tfrac\beta2 \sum_j \big(\lVert u_j\rVert^2 + \alpha_j^2\big).

Over the arrangement patterns :math:`D_i` of :math:`X` (cones
:math:`K_i = \{u : (2D_i - I)Xu \ge 0\}`, see :mod:`theory.convex.arrangements`)
its convex equivalent (their Theorem 1) is the group lasso with cone constraints

.. math:: p^* = \min_{v_i, w_i \in K_i} \tfrac12\Big\lVert \sum_i D_i X (v_i - w_i) - y\Big\rVert^2
          + \beta \sum_i \big(\lVert v_i\rVert + \lVert w_i\rVert\big),

and :math:`p^* = \min_{m, U, \alpha} L` once :math:`m \ge m^*` (the number of
non-zero :math:`v_i, w_i` at the optimum). **Recovery map**
(:meth:`ReluSolution.network`): every non-zero :math:`v_i` gives the neuron
:math:`u = v_i / \sqrt{\lVert v_i\rVert}`, :math:`\alpha = \sqrt{\lVert v_i\rVert}`, every
non-zero :math:`w_i` the neuron :math:`u = w_i/\sqrt{\lVert w_i\rVert}`,
:math:`\alpha = -\sqrt{\lVert w_i\rVert}`; on :math:`K_i`, :math:`\mathrm{relu}(Xu) = D_i X u`,
so the network's :math:`L` equals the convex objective. Before recovery the blocks are
pruned to linearly independent columns :math:`D_i X v_i` (:func:`prune_blocks`), so
:math:`m^* \le n` (the interior-point solution spreads over many blocks).

**Dual** (:func:`relu_dual`; conic duality of :math:`\max_{v \in K_i, \lVert v\rVert\le 1} c^Tv
= \min_{\mu \ge 0}\lVert c + ((2D_i-I)X)^T\mu\rVert`):

.. math:: d^* = \max_{\lambda,\ \mu_i, \nu_i \ge 0}\ \tfrac12\lVert y\rVert^2 - \tfrac12\lVert\lambda - y\rVert^2
   \ \text{s.t.}\ \lVert X^T D_i\lambda + X^T(2D_i-I)\mu_i\rVert \le \beta,\
   \lVert -X^T D_i\lambda + X^T(2D_i-I)\nu_i\rVert \le \beta,

and :math:`d^* = p^*` (Slater holds: the cones have interior). The optimal
:math:`\lambda` is the residual :math:`y - \hat y`.

**Certificate** (:class:`ReluCertificate`) of any feasible point, whatever
solved it: its objective, the cone-constraint violation, and a certified lower
bound :math:`D(\lambda') \le p^*` from the dual point :math:`\lambda = y - \hat y`
scaled into the dual feasible set, :math:`\lambda' = \lambda\min(1, \beta / s)` with
:math:`s = \max_i \max(\sigma_i(\lambda), \sigma_i(-\lambda))` and
:math:`\sigma_i(c) = \min_{\mu \ge 0}\lVert X^T D_i c + X^T(2D_i-I)\mu\rVert` (non-negative
least squares). Over *sampled* patterns the bound and the optimum are over
those patterns only (``exact`` is then ``False``).

**Gated-ReLU relaxation** (:func:`gated_relu`; Mishkin et al. 2022): drop the
cone constraints, :math:`\min_u \tfrac12\lVert\sum_i D_i X u_i - y\rVert^2 + \beta\sum_i\lVert u_i\rVert`
(a network with fixed gates :math:`1[Xg_i \ge 0]`). Every ReLU-feasible point
gives a gated point of no larger objective (:math:`u_i = v_i - w_i`), so its
optimum :math:`g^* \le p^*`. The **cone decomposition**
(:func:`cone_decompose`) writes each :math:`u_i = v_i - w_i` with
:math:`v_i, w_i \in K_i`; it is *exact* (objective unchanged, hence
:math:`g^* = p^*` and the decomposed point is ReLU-optimal) when every non-zero
:math:`u_i` lies in :math:`K_i` or in :math:`-K_i`. Otherwise it moves along the
pattern's interior gate :math:`g_i`: :math:`v_i = u_i + t g_i`, :math:`w_i = t g_i`
with the least :math:`t \ge 0` that puts :math:`v_i` in :math:`K_i`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import arrangements as arr

SOLVERS = ("auto", "cvxpy", "active-set", "fista", "al")
#: ``solver="auto"`` uses cvxpy + Clarabel when n * P * d is at most this, the active-set method above
#: (:func:`gated_relu`: the first-order FISTA above).
CVXPY_MAX_SIZE = 200_000
#: Clarabel's tolerances (absolute and relative gap, feasibility).
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


# --- the objectives ---------------------------------------------------------------------------------------

def nonconvex_objective(U, alpha, X, y, beta: float):
    r""":math:`L(U, \alpha)` for ``U`` ``(..., m, d)``, ``alpha`` ``(..., m)`` (batched over leading axes)."""
    from array_api_compat import array_namespace

    xp = array_namespace(U, alpha, X, y)
    hidden = xp.maximum(xp.matmul(X, xp.matrix_transpose(U)), 0.0)  # (..., n, m)
    pred = xp.sum(hidden * alpha[..., None, :], axis=-1)
    return 0.5 * xp.sum((pred - y) ** 2, axis=-1) + 0.5 * beta * (xp.sum(U * U, axis=(-2, -1))
                                                                  + xp.sum(alpha * alpha, axis=-1))


def convex_prediction(X, mask, V, W=None):
    r""":math:`\sum_i D_i X (v_i - w_i)` for ``V``, ``W`` ``(P, d)`` (rows are the :math:`v_i`)."""
    U = V if W is None else V - W
    return np.sum(mask * (X @ U.T), axis=1)


def convex_objective(X, y, beta: float, mask, V, W=None) -> float:
    """The convex program's objective at ``(V, W)`` (``W=None``: the gated objective at ``U = V``)."""
    r = convex_prediction(X, mask, V, W) - y
    reg = np.sum(np.linalg.norm(V, axis=1)) + (0.0 if W is None else np.sum(np.linalg.norm(W, axis=1)))
    return float(0.5 * r @ r + beta * reg)


def cone_violation(X, mask, V, W=None) -> float:
    r"""Worst :math:`\max(0, -((2D_i-I)Xv_i)_k)` over the blocks of ``V`` (and ``W``), relative to
    :math:`\lVert X\rVert_2 \max_i \max(\lVert v_i\rVert, \lVert w_i\rVert)`.

    One scale for both sets of blocks: when every :math:`v_i` is zero up to the solver's
    residue, that residue is measured against the solution's size, not its own.
    """
    blocks = V if W is None else np.concatenate([V, W], axis=0)
    masks = mask if W is None else np.concatenate([mask, mask], axis=1)
    signed = (2 * masks - 1) * (X @ blocks.T)
    scale = np.linalg.norm(X, 2) * max(float(np.max(np.linalg.norm(blocks, axis=1), initial=0.0)), 1e-300)
    return float(max(0.0, -float(np.min(signed, initial=0.0))) / scale)


# --- certificates ---------------------------------------------------------------------------------------

def _cone_dual_norm(X, signs_i, c) -> float:
    r""":math:`\min_{\mu \ge 0}\lVert c + X^T(2D_i - I)\mu\rVert` by non-negative least squares."""
    from scipy.optimize import nnls

    a = (signs_i[:, None] * X).T  # (d, n)
    _, residual = nnls(a, -c, maxiter=50 * a.shape[1])
    return float(residual)


def dual_lower_bound(X, y, beta: float, mask, residual, *, gated: bool = False) -> float:
    r"""Certified lower bound :math:`D(\lambda')` on the optimum from the dual point :math:`\lambda = y - \hat y`."""
    lam = np.asarray(residual, dtype=float)
    corr = X.T @ (mask * lam[:, None])  # (d, P): X^T D_i lambda
    if gated:
        s = float(np.max(np.linalg.norm(corr, axis=0), initial=0.0))
    else:
        signs = 2 * mask - 1
        s = 0.0
        for i in range(mask.shape[1]):
            for c in (corr[:, i], -corr[:, i]):
                if np.linalg.norm(c) > s:  # sigma_i(c) <= ||c||: only norms above the running max can matter
                    s = max(s, _cone_dual_norm(X, signs[:, i], c))
    lam = lam * min(1.0, beta / s) if s > 0 else lam
    return float(0.5 * y @ y - 0.5 * (lam - y) @ (lam - y))


@dataclass(frozen=True)
class ReluCertificate:
    """Optimality certificate of a point of the convex program (see the module docstring).

    ``gap = primal - lower_bound`` bounds the point's suboptimality over the
    patterns used; ``dual`` is the dual program's optimal value where it was
    solved (else ``nan``). ``holds`` when the point is feasible to
    ``tolerance`` and ``gap <= tolerance * max(1, primal)``.
    """

    primal: float
    lower_bound: float
    gap: float
    constraint_violation: float
    status: str
    tolerance: float
    dual: float = float("nan")

    @property
    def relative_gap(self) -> float:
        return self.gap / max(1.0, abs(self.primal))

    @property
    def holds(self) -> bool:
        return bool(np.isfinite(self.gap) and self.relative_gap <= self.tolerance
                    and self.constraint_violation <= self.tolerance)


def certify_point(X, y, beta: float, mask, V, W=None, *, status: str = "given", tolerance: float = 1e-6,
                  gated: bool = False, dual_point=None) -> ReluCertificate:
    r"""The certificate of ``(V, W)`` (``gated=True``: of the gated point ``U = V``, no cone constraints).

    The lower bound is the better of the dual points :math:`y - \hat y` and ``dual_point`` (a solver's
    multiplier), each scaled into the dual feasible set.
    """
    primal = convex_objective(X, y, beta, mask, V, None if gated else W)
    residual = y - convex_prediction(X, mask, V, None if gated else W)
    bound = dual_lower_bound(X, y, beta, mask, residual, gated=gated)
    if dual_point is not None:
        bound = max(bound, dual_lower_bound(X, y, beta, mask, dual_point, gated=gated))
    violation = 0.0 if gated else cone_violation(X, mask, V, W)
    return ReluCertificate(primal, bound, primal - bound, violation, status, tolerance)


# --- the solution ---------------------------------------------------------------------------------------

def recover_network(V, W, *, threshold: float = 1e-7):
    r"""The recovery map: neurons :math:`(v_i/\sqrt{\lVert v_i\rVert}, \sqrt{\lVert v_i\rVert})` and
    :math:`(w_i/\sqrt{\lVert w_i\rVert}, -\sqrt{\lVert w_i\rVert})` of the non-zero blocks (norm above
    ``threshold`` times the largest); returns ``U`` ``(m*, d)`` and ``alpha`` ``(m*,)``."""
    blocks = np.concatenate([V, W], axis=0)
    signs = np.concatenate([np.ones(len(V)), -np.ones(len(W))])
    norms = np.linalg.norm(blocks, axis=1)
    keep = norms > threshold * max(float(np.max(norms, initial=0.0)), 1e-300)
    root = np.sqrt(norms[keep])
    return blocks[keep] / root[:, None], signs[keep] * root


def prune_blocks(X, mask, V, W, *, threshold: float = 1e-7):
    r"""Prune an optimal point to at most ``rank X`` non-zero blocks without changing its objective.

    Scale every non-zero block by :math:`t_j \ge 0` (at :math:`t = 1` the point is optimal).
    The prediction is :math:`\sum_j t_j c_j` with :math:`c_j = \pm D_i X v_j` and the penalty
    :math:`\beta\sum_j t_j\lVert v_j\rVert`; while the :math:`c_j` are linearly dependent, a
    null direction :math:`\delta` keeps the prediction, and at an optimum also the penalty
    (it is linear in :math:`t`), so moving along it until a :math:`t_j` reaches zero drops a
    block at no cost (Carathéodory; Pilanci & Ergen 2020, their pruning).
    """
    blocks = np.concatenate([V, W], axis=0)
    p = len(V)
    signs = np.r_[np.ones(p), -np.ones(len(W))]
    masks = np.concatenate([mask, mask], axis=1)
    norms = np.linalg.norm(blocks, axis=1)
    active = list(np.flatnonzero(norms > threshold * max(float(norms.max(initial=0.0)), 1e-300)))
    while len(active) > 1:
        cols = np.stack([signs[j] * masks[:, j] * (X @ blocks[j]) for j in active], axis=1)  # (n, m)
        _, sv, vt = np.linalg.svd(cols, full_matrices=True)
        rank = int(np.sum(sv > sv[0] * max(cols.shape) * 1e-10)) if sv.size else 0
        if rank >= len(active):
            break
        delta = vt[-1]
        if delta @ norms[active] > 0:  # the direction that does not raise the penalty
            delta = -delta
        if not np.any(delta < 0):
            delta = -delta
        step = float(np.min(-1.0 / delta[delta < 0]))
        scale = np.maximum(1.0 + step * delta, 0.0)
        scale[np.argmin(np.where(delta < 0, 1.0 + step * delta, np.inf))] = 0.0
        for j, t in zip(active, scale):
            blocks[j] *= t
        norms = np.linalg.norm(blocks, axis=1)
        active = [j for j in active if norms[j] > 0]
    return blocks[:p], blocks[p:]


#: The recovery map used by :meth:`ReluSolution.network` (a seam for the global-optimum claim's sabotage).
_RECOVER = recover_network


@dataclass
class ReluSolution:
    """A solution of the convex program (see the module docstring).

    ``V``, ``W`` ``(P, d)`` are the blocks :math:`v_i, w_i` (for a gated solution
    ``V`` holds the :math:`u_i` and ``W`` is zero); ``mask`` ``(n, P)`` and
    ``gates`` ``(d, P)`` the patterns; ``exact`` is ``True`` when all patterns
    were enumerated (the optimum is then the global optimum of :math:`L`).
    """

    objective: float
    V: np.ndarray
    W: np.ndarray
    mask: np.ndarray
    gates: np.ndarray
    certificate: ReluCertificate
    arrangements: str
    exact: bool
    solver: str
    seconds: float
    beta: float
    relaxation: str = "relu"
    extra: dict = field(default_factory=dict)

    @property
    def n_patterns(self) -> int:
        return int(self.mask.shape[1])

    def network(self, *, threshold: float = 1e-7, prune: bool = True):
        r"""``(U, alpha)``: an optimal ReLU network, ``U`` ``(m*, d)`` like any ``W_l``, ``alpha`` ``(m*,)``.

        With ``prune`` (and the data kept in ``extra["X"]``: solutions of the cvxpy path, which
        are optimal; a pruning step at a point that is not optimal would lower its objective) the
        blocks are first pruned to linearly independent columns :math:`D_i X v_i` (:func:`prune_blocks`), so
        :math:`m^* \le \mathrm{rank}\,X \le n`. A gated solution is not a ReLU network:
        cone-decompose it first (:func:`cone_decompose`).
        """
        if self.relaxation == "gated":
            raise ValueError("a gated-ReLU solution is not a ReLU network; call cone_decompose(X, solution) "
                             "first (relaxation='gated', allowed: 'relu')")
        V, W = self.V, self.W
        if prune and self.extra.get("X") is not None:
            V, W = prune_blocks(self.extra["X"], self.mask, V, W, threshold=threshold)
        return _RECOVER(V, W, threshold=threshold)

    @property
    def width(self) -> int:
        """:math:`m^*`, the width of the recovered network."""
        return int(self.network()[0].shape[0])


def _check_problem(X, y, beta):
    x = np.asarray(X, dtype=float)
    t = np.asarray(y, dtype=float)
    if x.ndim != 2 or min(x.shape) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"X must be a finite (n, d) matrix, got shape {np.shape(X)}")
    if t.shape != (x.shape[0],) or not np.all(np.isfinite(t)):
        raise ValueError(f"y must be a finite vector of n = {x.shape[0]} targets, got shape {np.shape(y)} "
                         "(for one-hot Y use theory.convex.layerwise.one_vs_all)")
    if not (isinstance(beta, (int, float, np.floating)) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return x, t, float(beta)


def patterns(X, arrangements="exact", *, seed: int = 0):
    """``(mask, gates, label, exact)`` for ``arrangements="exact"``, an integer number of sampled gates, or
    given gates ``(d, P)`` (an array; their patterns ``1[X g >= 0]`` are used)."""
    if isinstance(arrangements, np.ndarray):
        gates = np.asarray(arrangements, dtype=float)
        if gates.ndim != 2 or gates.shape[0] != np.shape(X)[1]:
            raise ValueError(f"given gates must be a (d, P) array with d = {np.shape(X)[1]}, got {gates.shape}")
        mask = (np.asarray(X, float) @ gates >= 0).astype(float)
        return mask, gates, f"given ({gates.shape[1]} gates)", False
    if isinstance(arrangements, str):
        if arrangements != "exact":
            raise ValueError(f"arrangements must be 'exact' or an integer >= 1, got {arrangements!r}")
        mask, gates = arr.exact_arrangements(X)
        return mask, gates, "exact", True
    if isinstance(arrangements, bool) or not isinstance(arrangements, (int, np.integer)) or arrangements < 1:
        raise ValueError(f"arrangements must be 'exact' or an integer >= 1, got {arrangements!r}")
    mask, gates = arr.sample_arrangements(X, int(arrangements), seed=seed)
    return mask, gates, f"sampled ({int(arrangements)} gates, {mask.shape[1]} distinct patterns)", False


# --- cvxpy + Clarabel -----------------------------------------------------------------------------------

def _solve(problem) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem.solve(solver="CLARABEL", **CLARABEL_OPTIONS)
    return str(problem.status)


class ReluProgram:
    r"""The convex (or gated) program on fixed data ``X`` and patterns, compiled once by cvxpy.

    The targets :math:`y` and :math:`\beta` are cvxpy ``Parameter`` s (the program is DPP), so
    :meth:`solve` for new targets (one-vs-all classes, a path of :math:`\beta`) re-solves with
    Clarabel without compiling again; ``n_solves`` counts the solves.
    """

    def __init__(self, X, mask, *, gated: bool = False):
        import cvxpy as cp

        self.X, self.mask, self.gated = np.asarray(X, dtype=float), np.asarray(mask, dtype=float), bool(gated)
        n, d = self.X.shape
        p = self.mask.shape[1]
        self.y = cp.Parameter(n, name="targets")
        self.beta = cp.Parameter(nonneg=True, name="beta")
        self.V = cp.Variable((d, p))
        if gated:
            pred = cp.sum(cp.multiply(self.mask, self.X @ self.V), axis=1)
            reg = cp.sum(cp.norm(self.V, 2, axis=0))
            constraints = []
        else:
            self.W = cp.Variable((d, p))
            pred = cp.sum(cp.multiply(self.mask, self.X @ (self.V - self.W)), axis=1)
            reg = cp.sum(cp.norm(self.V, 2, axis=0)) + cp.sum(cp.norm(self.W, 2, axis=0))
            signs = 2 * self.mask - 1
            constraints = [cp.multiply(signs, self.X @ self.V) >= 0, cp.multiply(signs, self.X @ self.W) >= 0]
        self.residual = cp.Variable(n)
        self.fit = self.residual == self.y - pred  # its multiplier is the dual point lambda (up to sign)
        self.problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(self.residual) + self.beta * reg),
                                  [self.fit, *constraints])
        self.n_solves = 0

    def solve(self, y, beta: float):
        """``(V, W, status, lambda)`` for targets ``y`` and ``beta``; only the first call compiles."""
        self.y.value = np.asarray(y, dtype=float)
        self.beta.value = float(beta)
        status = _solve(self.problem)
        self.n_solves += 1
        if self.V.value is None:
            raise RuntimeError(f"Clarabel returned no solution (status {status})")
        lam = np.asarray(self.fit.dual_value, dtype=float)
        lam = lam if lam @ np.asarray(self.residual.value) >= 0 else -lam
        v = np.asarray(self.V.value).T
        w = np.zeros_like(v) if self.gated else np.asarray(self.W.value).T
        if not self.gated:  # the tiny negative margins an interior-point solution leaves are projected away
            v, w = _project_to_cones(self.X, self.mask, v), _project_to_cones(self.X, self.mask, w)
        return v, w, status, lam


def solve_cvxpy(X, y, beta: float, mask, *, gated: bool = False):
    """``(V, W, status, lambda)``: the convex (or gated) program by cvxpy + Clarabel, and Clarabel's dual point."""
    return ReluProgram(X, mask, gated=gated).solve(y, beta)


def _project_to_cones(X, mask, V):
    """Zero the blocks whose cone constraint is violated by more than rounding (interior-point residue)."""
    signed = (2 * mask - 1) * (X @ V.T)  # (n, P)
    norms = np.linalg.norm(V, axis=1) * np.linalg.norm(X, 2)
    bad = np.min(signed, axis=0) < -1e-7 * np.maximum(norms, 1e-300)
    out = V.copy()
    out[bad & (norms < 1e-6 * max(float(np.max(norms, initial=0.0)), 1e-300))] = 0.0
    return out


def relu_dual(X, y, beta: float, mask, *, gated: bool = False) -> tuple[float, np.ndarray]:
    """The dual program's optimal value and :math:`\\lambda` (module docstring), by cvxpy + Clarabel."""
    import cvxpy as cp

    x, t, beta = _check_problem(X, y, beta)
    p = mask.shape[1]
    lam = cp.Variable(x.shape[0])
    objective = 0.5 * float(t @ t) - 0.5 * cp.sum_squares(lam - t)
    signs = 2 * mask - 1
    gated_corr = x.T @ cp.multiply(mask, cp.reshape(lam, (x.shape[0], 1), order="F") @ np.ones((1, p)))
    if gated:
        constraints = [cp.norm(gated_corr, 2, axis=0) <= beta]
    else:
        constraints = _dual_constraints(cp, x, signs, gated_corr, beta)
    problem = cp.Problem(cp.Maximize(objective), constraints)
    _solve(problem)
    if lam.value is None:
        raise RuntimeError(f"Clarabel returned no dual solution (status {problem.status})")
    return float(problem.value), np.asarray(lam.value)


def _both_sign_constraints(cp, x, signs, corr, beta):
    mu = cp.Variable(signs.shape, nonneg=True)
    nu = cp.Variable(signs.shape, nonneg=True)
    return [cp.norm(corr + x.T @ cp.multiply(signs, mu), 2, axis=0) <= beta,
            cp.norm(-corr + x.T @ cp.multiply(signs, nu), 2, axis=0) <= beta]


#: The dual's constraints (a seam for the strong-duality claim's sabotage, which drops the -lambda side).
_dual_constraints = _both_sign_constraints


# --- the public entry points ----------------------------------------------------------------------------

def _row_space(x) -> np.ndarray:
    r"""An orthonormal basis ``(d, r)`` of the row space of ``X`` (identity when ``X`` has full column rank).

    Only :math:`Xv` and :math:`\lVert v\rVert` enter the program, and the part of :math:`v` orthogonal to the
    row space changes the first not at all and raises the second, so every optimal :math:`v_i, w_i` lies in the
    row space: the program in the coordinates :math:`X B` (``r = rank X`` columns) is the same program.
    """
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(sv > sv[0] * max(x.shape) * np.finfo(float).eps)) if sv.size and sv[0] > 0 else 0
    return np.eye(x.shape[1]) if rank == x.shape[1] else vt[:max(rank, 1)].T


def _pick_solver(solver: str, x, mask, *, large: str = "active-set") -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        return "cvxpy" if x.shape[0] * x.shape[1] * mask.shape[1] <= CVXPY_MAX_SIZE else large
    return solver


def gated_relu(X, y, beta: float, *, arrangements="exact", solver: str = "auto", seed: int = 0,
               tolerance: float = 1e-6) -> ReluSolution:
    r"""The gated-ReLU relaxation over the patterns (module docstring); a lower bound on :func:`two_layer_relu`."""
    x, t, beta = _check_problem(X, y, beta)
    mask, gates, label, exact = patterns(x, arrangements, seed=seed)
    solver = _pick_solver(solver, x, mask, large="fista")
    if solver in ("al", "active-set"):
        raise ValueError(f"solver={solver!r} solves the ReLU program (two_layer_relu); the gated program allows "
                         "'auto', 'cvxpy' or 'fista'")
    start = time.perf_counter()
    if solver == "cvxpy":
        u, _, status, lam = solve_cvxpy(x, t, beta, mask, gated=True)
    else:
        from .first_order import fista_gated

        res = fista_gated(x, t, beta, mask, tol=tolerance / 10)
        u, status, lam = np.asarray(res.U), res.status, None
    seconds = time.perf_counter() - start
    cert = certify_point(x, t, beta, mask, u, status=status, tolerance=tolerance, gated=True, dual_point=lam)
    return ReluSolution(cert.primal, u, np.zeros_like(u), mask, gates, cert, label, exact, solver, seconds, beta,
                        relaxation="gated")


def _min_norm_split(x, mask, gates, u, signed_u, signed_g):
    r"""The least-norm :math:`w_i` with :math:`w_i \in K_i` and :math:`u_i + w_i \in K_i` (a QP, Clarabel);
    falls back to the gate direction :math:`w_i = t g_i` (least :math:`t`) if the QP fails."""
    import cvxpy as cp

    signs = 2 * mask - 1
    need = np.maximum(-signed_u, 0.0)  # (2D_i - I) X w_i >= max(0, -(2D_i - I) X u_i)
    w = cp.Variable((x.shape[1], mask.shape[1]))
    problem = cp.Problem(cp.Minimize(cp.sum_squares(w)), [cp.multiply(signs, x @ w) >= need])
    _solve(problem)
    if w.value is not None:
        out = np.asarray(w.value).T
        slack = np.min(signs * (x @ out.T) - need, axis=0)  # interior-point residue: push along the gate
        t = np.maximum(-slack, 0.0) / np.maximum(np.min(signed_g, axis=0), 1e-300)
        return out + t[:, None] * gates.T
    t = np.max(need / np.maximum(signed_g, 1e-300), axis=0)
    return t[:, None] * gates.T


#: The split used by :func:`cone_decompose` for blocks in neither cone (a seam for the gated claim's sabotage).
_DECOMPOSE = _min_norm_split


def cone_decompose(X, solution: ReluSolution, *, y=None, tolerance: float = 1e-6) -> ReluSolution:
    r"""The cone decomposition of a gated solution into a feasible point of the ReLU program.

    ``extra["exact_decomposition"]`` says whether every non-zero block was in
    :math:`\pm K_i` (then the objective is unchanged; module docstring).
    """
    x = np.asarray(X, dtype=float)
    u, mask, gates = solution.V, solution.mask, solution.gates
    signed_u = (2 * mask - 1) * (x @ u.T)  # (n, P)
    signed_g = (2 * mask - 1) * (x @ gates)
    scale = np.linalg.norm(x, 2) * np.linalg.norm(u, axis=1)
    slack = 1e-9 * np.maximum(scale, 1e-300)
    inside = np.all(signed_u >= -slack, axis=0)
    opposite = np.all(signed_u <= slack, axis=0) & ~inside
    v = np.where(inside[:, None], u, 0.0)
    w = np.where(opposite[:, None], -u, 0.0)
    rest = np.flatnonzero(~(inside | opposite))
    if rest.size:
        w[rest] = _DECOMPOSE(x, mask[:, rest], gates[:, rest], u[rest], signed_u[:, rest], signed_g[:, rest])
        v[rest] = u[rest] + w[rest]
    nonzero = np.linalg.norm(u, axis=1) > 1e-7 * max(float(np.max(np.linalg.norm(u, axis=1), initial=0)), 1e-300)
    exact = bool(np.all((inside | opposite)[nonzero]))
    target = y if y is not None else solution.extra.get("y")
    if target is None:
        raise ValueError("cone_decompose needs the targets y to certify the decomposed point")
    cert = certify_point(x, np.asarray(target, float), solution.beta, mask, v, w, status=solution.certificate.status,
                         tolerance=tolerance)
    return ReluSolution(cert.primal, v, w, mask, gates, cert, solution.arrangements, solution.exact,
                        solution.solver, solution.seconds, solution.beta, "relu",
                        {"exact_decomposition": exact, "gated_objective": solution.objective})


def two_layer_relu_columns(X, Y, beta: float, *, arrangements=40, seed: int = 0,
                           tolerance: float = 1e-6) -> list[ReluSolution]:
    r"""One :func:`two_layer_relu` solution (cvxpy) per column of ``Y`` ``(n, k)``: the same patterns, one
    compiled :class:`ReluProgram` re-solved for every column (one-vs-all on one-hot labels)."""
    x = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] != x.shape[0]:
        raise ValueError(f"Y must be (n, k) with n = {x.shape[0]} rows, got shape {np.shape(Y)}")
    x, _, beta = _check_problem(x, Y[:, 0], beta)
    mask, gates, label, exact = patterns(x, arrangements, seed=seed)
    basis = _row_space(x)
    program = ReluProgram(x @ basis, mask)
    out = []
    for c in range(Y.shape[1]):
        start = time.perf_counter()
        t = _check_problem(x, Y[:, c], beta)[1]
        v, w, status, lam = program.solve(t, beta)
        v, w = v @ basis.T, w @ basis.T
        cert = certify_point(x, t, beta, mask, v, w, status=status, tolerance=tolerance, dual_point=lam)
        out.append(ReluSolution(cert.primal, v, w, mask, gates, cert, label, exact, "cvxpy",
                                time.perf_counter() - start, beta, extra={"X": x}))
    return out


def two_layer_relu(X, y, beta: float, *, arrangements="exact", solver: str = "auto", seed: int = 0,
                   tolerance: float = 1e-6) -> ReluSolution:
    r"""The global optimum of the two-layer ReLU training problem with weight decay (module docstring).

    Parameters
    ----------
    X : (n, d) data (no biases; append a column of ones for them).
    y : (n,) targets.
    beta : weight decay :math:`\beta > 0`.
    arrangements : ``"exact"`` (every pattern; points in general position, small ``d``), an
        integer number of Gaussian gates (the optimum is then over the sampled patterns), or an
        array of given gates ``(d, P)``.
    solver : ``"cvxpy"`` (Clarabel, the oracle), ``"active-set"`` (the ReLU program itself by the
        active-set Newton method, :func:`theory.convex.active_set.active_set_relu`: exact and
        feasible to rounding, certified; the fast one), ``"fista"`` (gated relaxation by
        :func:`theory.convex.first_order.fista_gated`, then the cone decomposition: feasible,
        optimal when the decomposition is exact, certified by the gap either way), ``"al"`` (the
        ReLU program itself by the augmented Lagrangian method,
        :func:`theory.convex.augmented.al_relu`: optimal to the certified gap, feasible to
        ``tolerance`` relatively, not exactly) or ``"auto"`` (cvxpy when n * P * d <=
        :data:`CVXPY_MAX_SIZE`, else ``"active-set"``).

    Returns
    -------
    ReluSolution with ``objective`` (:math:`p^*`, the optimal value of :math:`L`), ``network()``,
    ``certificate``, ``arrangements``, ``solver``, ``seconds``.
    """
    x, t, beta = _check_problem(X, y, beta)
    mask, gates, label, exact = patterns(x, arrangements, seed=seed)
    solver = _pick_solver(solver, x, mask)
    start = time.perf_counter()
    if solver == "cvxpy":
        basis = _row_space(x)  # v_i lies in the row space of X at the optimum: solve in rank(X) coordinates
        v, w, status, lam = solve_cvxpy(x @ basis, t, beta, mask)
        v, w = v @ basis.T, w @ basis.T
        cert = certify_point(x, t, beta, mask, v, w, status=status, tolerance=tolerance, dual_point=lam)
        return ReluSolution(cert.primal, v, w, mask, gates, cert, label, exact, solver,
                            time.perf_counter() - start, beta, extra={"X": x})
    if solver == "al":
        return _solve_al(x, t, beta, mask, gates, label, exact, tolerance, start)
    if solver == "active-set":
        return _solve_active_set(x, t, beta, mask, gates, label, exact, tolerance, start)
    gated = gated_relu(x, t, beta, arrangements=arrangements, solver="fista", seed=seed, tolerance=tolerance)
    gated.extra["y"] = t
    out = cone_decompose(x, gated, y=t, tolerance=tolerance)
    out.seconds = time.perf_counter() - start
    return out


def _solve_active_set(x, t, beta, mask, gates, label, exact, tolerance, start) -> ReluSolution:
    """The ``solver="active-set"`` path of :func:`two_layer_relu`."""
    from .active_set import active_set_relu

    res = active_set_relu(x, t, beta, mask)
    v, w = res.V, res.W
    primal = convex_objective(x, t, beta, mask, v, w)
    cert = ReluCertificate(primal, res.lower_bound, primal - res.lower_bound, cone_violation(x, mask, v, w),
                           res.status, tolerance)
    return ReluSolution(primal, v, w, mask, gates, cert, label, exact, "active-set", time.perf_counter() - start,
                        beta, extra={**({"X": x} if res.status == "kkt" else {}), **res.counts})  # prune optima only


def _solve_al(x, t, beta, mask, gates, label, exact, tolerance, start) -> ReluSolution:
    """The ``solver="al"`` path of :func:`two_layer_relu`; the certificate's bound is the AL's own dual point."""
    from .augmented import al_relu

    res = al_relu(x, t, beta, mask, tol=tolerance)
    v, w = np.asarray(res.V), np.asarray(res.W)
    primal = convex_objective(x, t, beta, mask, v, w)
    bound = float(res.lower_bound)
    cert = ReluCertificate(primal, bound, primal - bound, cone_violation(x, mask, v, w), res.status, tolerance)
    return ReluSolution(primal, v, w, mask, gates, cert, label, exact, "al", time.perf_counter() - start, beta,
                        extra={"iterations": res.iterations, "outer": res.outer, "rho": float(res.rho)})
