r"""Vector-output two-layer ReLU networks with weight decay: a certified sandwich of the global optimum.

The non-convex training problem of a width-:math:`m` network
:math:`x \mapsto \sum_j \mathrm{relu}(x^T u_j)\,a_j` with outputs in :math:`\mathbb R^k`
(:math:`U` ``(m, d)``, :math:`A` ``(m, k)``, rows :math:`u_j, a_j`) on :math:`X` ``(n, d)``,
:math:`Y` ``(n, k)`` is

.. math:: L(U, A) = \tfrac12\Big\lVert \sum_j \mathrm{relu}(X u_j)\,a_j^T - Y\Big\rVert_F^2
          + \tfrac\beta2 \sum_j \big(\lVert u_j\rVert^2 + \lVert a_j\rVert^2\big),
          \qquad p^*_k = \inf_{m, U, A} L.

**Exact form (not solved here).** Sahiner, Ergen, Pauly & Pilanci (ICLR 2021) show that
:math:`p^*_k` equals a convex program over the arrangement patterns :math:`D_i` of
:math:`X` (:mod:`theory.convex.arrangements`) whose regulariser is a *cone-constrained*
nuclear norm of :math:`V_i \in \mathbb R^{d\times k}` (the gauge of
:math:`\mathrm{conv}\{u g^T : (2D_i - I)Xu \ge 0, \lVert u\rVert \le 1, \lVert g\rVert \le 1\}`),
a copositive program: intractable in general. For :math:`k = 1` it is the scalar program
of :mod:`theory.convex.relu`.

**The relaxation solved here: the gated vector program** (the cone constraints dropped; the
vector analogue of the gated ReLU of Mishkin et al. 2022),

.. math:: g^* = \min_{V_i \in \mathbb R^{d\times k}} G(V) = \tfrac12\Big\lVert \sum_i D_i X V_i - Y\Big\rVert_F^2
          + \beta\sum_i \lVert V_i\rVert_*

(cvxpy + Clarabel, nuclear norms as semidefinite cones; or FISTA with singular-value
thresholding). What is true (our derivation):

* :math:`g^*` *equals* the optimum of the **gated** vector network (neuron :math:`j` has a fixed
  gate :math:`D_{i(j)}` among the patterns and output :math:`D_{i(j)} X u_j a_j^T`): grouping the
  neurons of gate :math:`i` gives :math:`V_i = \sum_{j \to i} u_j a_j^T`, and
  :math:`\min\{\tfrac12\sum_j(\lVert u_j\rVert^2 + \lVert a_j\rVert^2) : \sum_j u_j a_j^T = V_i\}
  = \lVert V_i\rVert_*` (attained by the SVD).
* :math:`g^* \le L(U, A)` for **every ReLU network whose neurons' patterns**
  :math:`\mathrm{diag}(1[Xu_j \ge 0])` **are among the** :math:`D_i` (it is a gated network with the
  same prediction and weights, as :math:`\mathrm{relu}(Xu_j) = D(u_j) X u_j`). With
  ``arrangements="exact"`` (every pattern) that is every ReLU network of any width, so
  :math:`g^* \le p^*_k`. With sampled patterns it bounds only the networks whose patterns were
  sampled (``exact=False``), *not* :math:`p^*_k`. For :math:`k = 1` it is :func:`theory.convex.relu.gated_relu`.
* Its certificate: :math:`\Lambda = Y - \hat Y` scaled into
  :math:`\{\max_i \lVert X^T D_i \Lambda\rVert_2 \le \beta\}` (spectral norm) gives
  :math:`D(\Lambda') = \tfrac12\lVert Y\rVert_F^2 - \tfrac12\lVert\Lambda' - Y\rVert_F^2 \le g^*`
  (``extra["gated_lower_bound"]``), whatever solved the program.

The gated bound is loose (0.14 to 0.30 of :math:`p^*_k` on the instances measured, 10 points
in the plane plus a bias, :math:`k = 3`: the gated network is far more expressive).
**The exact dual norm** is tighter: for
*every* ReLU network and every :math:`\Lambda`, weak duality gives
:math:`L(U, A) \ge \tfrac12\lVert Y\rVert^2 - \tfrac12\lVert\Lambda' - Y\rVert^2` with
:math:`\Lambda' = \Lambda\min(1, \beta/s(\Lambda))`,
:math:`s(\Lambda) = \max_{\lVert u\rVert\le 1}\lVert\Lambda^T\mathrm{relu}(Xu)\rVert`
(from :math:`\tfrac12\lVert R\rVert^2 \ge \langle\Lambda, R\rangle - \tfrac12\lVert\Lambda\rVert^2` and
:math:`\beta\lVert u_j\rVert\lVert a_j\rVert \ge a_j^T\Lambda^T\mathrm{relu}(Xu_j)`).
:func:`relu_dual_norm` computes :math:`s` exactly for small :math:`d` by enumerating the
faces of every cone (the copositive hardness is here: the work grows like :math:`n^{2d-2}`).

**Networks: the upper bound.** (1) The SVD recovery of the gated blocks
(:func:`recover_vector_network`): a term :math:`s_r b_r c_r^T` of :math:`V_i` with
:math:`\pm b_r \in K_i` is a ReLU neuron as it stands, any other is split as :math:`b_r = v - w`,
:math:`v, w \in K_i` (the prediction is kept, the weights grow: ``extra["recovered_objective"]``,
typically far above :math:`p^*_k`). (2) :func:`refit_output_layer`: the best output layer for the
recovered directions and their negatives (a row-group lasso, convex). (3) Gradient descent on
:math:`L` from the best network (``polish_steps``). (4) With exact arrangements, **column
generation** (:func:`_column_generation`): the residual's most violating direction
:math:`\arg\max_u\lVert\Lambda^T\mathrm{relu}(Xu)\rVert` joins the network, the output layer is
refitted and polished, until the relative gap is at most ``tolerance``. ``upper_bound`` is
:math:`L` of ``network()``, so

.. math:: \text{lower\_bound} \le p^*_k \le \text{upper\_bound},

a certified sandwich of the global optimum when ``exact`` (on 4 of the 5 instances measured it
closed to the default ``tolerance`` 1e-4 in 10 to 24 rounds; the fifth stopped at 30 rounds at 6e-4).
With sampled patterns only
the gated bound is available and the gap says little.

**One-vs-all is another problem.** :math:`k` scalar programs, one per column, train
:math:`k` networks with separate hidden layers (each neuron feeds one output): a vector
network with every :math:`a_j` on a coordinate axis. So :math:`p^*_k \le \sum_c p^*_{1,c}`:
the concatenated one-vs-all network (:func:`one_vs_all_network`) is one more upper bound,
and the vector network can do better by sharing neurons between outputs.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import relu

SOLVERS = ("auto", "cvxpy", "proximal")
#: ``solver="auto"`` uses cvxpy + Clarabel (nuclear norms as semidefinite cones) when P * (r + k)^2 is at most this.
CVXPY_MAX_SIZE = 20_000


# --- objectives -----------------------------------------------------------------------------------------

def vector_objective(U, A, X, Y, beta: float):
    r""":math:`L(U, A)` for ``U`` ``(..., m, d)``, ``A`` ``(..., m, k)`` (batched over leading axes)."""
    hidden = np.maximum(np.matmul(X, np.swapaxes(U, -1, -2)), 0.0)  # (..., n, m)
    r = np.matmul(hidden, A) - Y
    return 0.5 * np.sum(r * r, axis=(-2, -1)) + 0.5 * beta * (np.sum(U * U, axis=(-2, -1))
                                                              + np.sum(A * A, axis=(-2, -1)))


def gated_prediction(X, mask, V):
    r""":math:`\sum_i D_i X V_i` ``(n, k)`` for ``V`` ``(P, d, k)``."""
    return np.sum(mask.T[:, :, None] * np.matmul(X, V), axis=0)


def gated_objective(X, Y, beta: float, mask, V) -> float:
    """The gated vector program's objective :math:`G(V)`."""
    r = gated_prediction(X, mask, V) - Y
    nuclear = np.sum(np.linalg.svd(V, compute_uv=False)) if V.size else 0.0
    return float(0.5 * np.sum(r * r) + beta * nuclear)


def dual_lower_bound(X, Y, beta: float, mask, residual) -> float:
    r"""Certified lower bound on :math:`g^*` from the dual point :math:`\Lambda` (module docstring)."""
    lam = np.asarray(residual, dtype=float)
    corr = np.matmul(X.T, mask.T[:, :, None] * lam)  # X^T D_i Lambda, (P, d, k)
    s = float(np.max(np.linalg.svd(corr, compute_uv=False), initial=0.0))
    lam = lam * min(1.0, beta / s) if s > 0 else lam
    return float(0.5 * np.sum(Y * Y) - 0.5 * np.sum((lam - Y) ** 2))


def _check(X, Y, beta):
    x = np.asarray(X, dtype=float)
    t = np.asarray(Y, dtype=float)
    if x.ndim != 2 or min(x.shape) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"X must be a finite (n, d) matrix with n, d >= 1, got shape {np.shape(X)}")
    if t.ndim != 2 or t.shape[0] != x.shape[0] or t.shape[1] < 1 or not np.all(np.isfinite(t)):
        raise ValueError(f"Y must be a finite (n, k) matrix with n = {x.shape[0]} rows and k >= 1 columns, got "
                         f"shape {np.shape(Y)} (for a vector y pass y[:, None])")
    if isinstance(beta, bool) or not (isinstance(beta, (int, float, np.floating)) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return x, t, float(beta)


# --- solvers --------------------------------------------------------------------------------------------

def solve_cvxpy(X, Y, beta: float, mask):
    """``(V, status, Lambda)``: the gated vector program by cvxpy + Clarabel (nuclear norms as PSD cones)."""
    import cvxpy as cp

    n, d = X.shape
    k = Y.shape[1]
    blocks = [cp.Variable((d, k)) for _ in range(mask.shape[1])]
    pred = sum(cp.multiply(mask[:, [i]], X @ v) for i, v in enumerate(blocks))
    residual = cp.Variable((n, k))
    fit = residual == Y - pred
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(residual) + beta * sum(cp.normNuc(v) for v in blocks)),
                         [fit])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem.solve(solver="CLARABEL", **relu.CLARABEL_OPTIONS)
    if blocks[0].value is None:
        raise RuntimeError(f"Clarabel returned no solution (status {problem.status})")
    lam = np.asarray(fit.dual_value, dtype=float)
    lam = lam if np.sum(lam * np.asarray(residual.value)) >= 0 else -lam
    return np.stack([np.asarray(v.value) for v in blocks]), str(problem.status), lam


def _svd_shrink(V, threshold: float):
    """The proximal map of ``threshold * sum_i ||V_i||_*``: soft-thresholded singular values, block by block."""
    b, s, ct = np.linalg.svd(V, full_matrices=False)
    return np.matmul(b * np.maximum(s - threshold, 0.0)[:, None, :], ct)


def solve_proximal(X, Y, beta: float, mask, *, tol: float = 1e-8, max_iter: int = 20_000):
    r"""``(V, status, None)``: FISTA with gradient restarts on :math:`G`, stopped by its certified relative gap.

    The step is :math:`1/L` with :math:`L = \lVert [D_1X, \dots, D_PX]\rVert_2^2`, the exact
    Lipschitz constant of the smooth part.
    """
    n, d = X.shape
    p, k = mask.shape[1], Y.shape[1]
    lipschitz = float(np.linalg.norm((mask[:, :, None] * X[:, None, :]).reshape(n, p * d), 2) ** 2)
    step = 1.0 / max(lipschitz, 1e-300)
    V = np.zeros((p, d, k))
    Z, t = V.copy(), 1.0
    status = "max_iter"
    for it in range(1, max_iter + 1):
        r = gated_prediction(X, mask, Z) - Y
        grad = np.matmul(X.T, mask.T[:, :, None] * r)  # X^T D_i r, (P, d, k)
        V_new = _svd_shrink(Z - step * grad, step * beta)
        if np.sum((Z - V_new) * (V_new - V)) > 0:  # gradient restart (O'Donoghue & Candes 2015)
            t = 1.0
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Z = V_new + ((t - 1) / t_new) * (V_new - V)
        V, t = V_new, t_new
        if it % 20 == 0:
            value = gated_objective(X, Y, beta, mask, V)
            bound = dual_lower_bound(X, Y, beta, mask, Y - gated_prediction(X, mask, V))
            if value - bound <= tol * max(1.0, value):
                status = "converged"
                break
    return V, status, None


# --- recovery -------------------------------------------------------------------------------------------

def recover_vector_network(X, mask, gates, V, *, threshold: float = 1e-7):
    r"""``(U, A, exact)``: a ReLU network from the blocks :math:`V_i` (module docstring).

    ``U`` ``(m, d)``, ``A`` ``(m, k)``; ``exact`` is ``True`` when every kept singular direction lay in
    :math:`K_i` or :math:`-K_i` (then the network's :math:`L` equals :math:`G(V)` up to rounding).
    """
    x = np.asarray(X, dtype=float)
    b, s, ct = np.linalg.svd(V, full_matrices=False)  # (P, d, q), (P, q), (P, q, k)
    top = float(np.max(s, initial=0.0))
    neurons, heads, exact = [], [], True
    scale = np.linalg.norm(x, 2)
    pending = []  # (direction, s, c, pattern index) of terms in neither cone
    for i, r in zip(*np.nonzero(s > threshold * max(top, 1e-300))):
        direction, value, c = b[i, :, r], s[i, r], ct[i, r]
        signed = (2 * mask[:, i] - 1) * (x @ direction)
        if np.all(signed >= -1e-9 * scale):
            neurons.append(np.sqrt(value) * direction)
            heads.append(np.sqrt(value) * c)
        elif np.all(signed <= 1e-9 * scale):
            neurons.append(-np.sqrt(value) * direction)
            heads.append(-np.sqrt(value) * c)
        else:
            pending.append((direction, value, c, i))
    if pending:
        exact = False
        dirs = np.stack([p[0] for p in pending])  # (q, d)
        cols = [p[3] for p in pending]
        sub_mask, sub_gates = mask[:, cols], gates[:, cols]
        signed_u = (2 * sub_mask - 1) * (x @ dirs.T)
        signed_g = (2 * sub_mask - 1) * (x @ sub_gates)
        w = relu._min_norm_split(x, sub_mask, sub_gates, dirs, signed_u, signed_g)
        for (direction, value, c, _), w_j in zip(pending, w):
            for part, sign in ((direction + w_j, 1.0), (w_j, -1.0)):
                norm = float(np.linalg.norm(part))
                if norm > 0:
                    root = np.sqrt(value * norm)
                    neurons.append(root * part / norm)
                    heads.append(sign * root * c)
    d, k = V.shape[1], V.shape[2]
    U = np.asarray(neurons).reshape(-1, d)
    A = np.asarray(heads).reshape(-1, k)
    return U, A, exact


def refit_output_layer(X, Y, beta: float, directions, *, iterations: int = 3000, tol: float = 1e-9, init=None):
    r"""``(U, A)``: the best output layer for fixed hidden directions, as a balanced network.

    With unit directions :math:`u_j` (rows of ``directions``, normalised; zero features dropped),
    :math:`\min_A \tfrac12\lVert HA - Y\rVert_F^2 + \beta\sum_j\lVert a_j\rVert`,
    :math:`H = \mathrm{relu}(XU^T)`, is convex (a row-group lasso, FISTA); rescaling each neuron to
    :math:`(\sqrt{\lVert a_j\rVert}u_j, a_j/\sqrt{\lVert a_j\rVert})` makes :math:`L` equal to it. Any
    iterate is a network, so inexactness only loosens the upper bound. Stops at the relative duality gap
    ``tol`` (the residual scaled to :math:`\max_j\lVert\Lambda^T h_j\rVert \le \beta`) or after ``iterations``.
    ``init`` ``(len(directions), k)``: a warm start, the output weights of the unit directions.
    """
    x, t = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    D = np.asarray(directions, dtype=float).reshape(-1, x.shape[1])
    norms = np.linalg.norm(D, axis=1)
    A = np.zeros((D.shape[0], t.shape[1])) if init is None else np.asarray(init, dtype=float).reshape(-1, t.shape[1])
    D, A = D[norms > 0] / norms[norms > 0, None], A[norms > 0]
    H = np.maximum(x @ D.T, 0.0)
    keep = np.linalg.norm(H, axis=0) > 1e-12 * max(float(np.linalg.norm(H)), 1e-300)
    D, H, A = D[keep], H[:, keep], A[keep]
    if D.shape[0] == 0:
        return np.zeros((0, x.shape[1])), np.zeros((0, t.shape[1]))
    step = 1.0 / max(float(np.linalg.norm(H, 2)) ** 2, 1e-300)
    Z, m = A.copy(), 1.0
    for it in range(1, int(iterations) + 1):
        G = Z - step * (H.T @ (H @ Z - t))
        rows = np.linalg.norm(G, axis=1, keepdims=True)
        A_new = G * np.maximum(0.0, 1.0 - step * beta / np.maximum(rows, 1e-300))
        if np.sum((Z - A_new) * (A_new - A)) > 0:
            m = 1.0
        m_new = 0.5 * (1 + np.sqrt(1 + 4 * m * m))
        Z = A_new + ((m - 1) / m_new) * (A_new - A)
        A, m = A_new, m_new
        if it % 25 == 0:
            lam = t - H @ A
            value = 0.5 * np.sum(lam * lam) + beta * np.sum(np.linalg.norm(A, axis=1))
            s = float(np.max(np.linalg.norm(H.T @ lam, axis=1)))
            lam = lam * min(1.0, beta / s) if s > 0 else lam
            if value - (0.5 * np.sum(t * t) - 0.5 * np.sum((lam - t) ** 2)) <= tol * max(1.0, value):
                break
    a_norm = np.linalg.norm(A, axis=1)
    used = a_norm > 0
    root = np.sqrt(a_norm[used])
    return D[used] * root[:, None], A[used] / root[:, None]


def _polish(X, Y, beta, U, A, steps: int):
    """Gradient descent on :math:`L` from ``(U, A)``; the best iterate (never worse than the start)."""
    from .nonconvex import gradient_descent_vector

    if steps <= 0 or U.shape[0] == 0:
        return U, A
    U2, A2, value = gradient_descent_vector(X, Y, beta, U.shape[0], runs=1, steps=steps, init=(U, A), best=True)
    if float(value[0]) < float(vector_objective(U, A, X, Y, beta)):
        return U2[0], A2[0]
    return U, A


# --- the exact dual norm: a lower bound on p*_k from any residual --------------------------------------------

#: The exact dual norm refuses to build more candidate directions than this.
MAX_DUAL_CANDIDATES = 2_000_000


def relu_dual_norm(X, residual, mask, *, argmax: bool = False):
    r""":math:`s(\Lambda) = \max_{\lVert u\rVert \le 1}\lVert\Lambda^T\mathrm{relu}(Xu)\rVert` exactly, given every
    pattern ``mask`` of ``X`` (``exact_arrangements``).

    A maximiser :math:`u^*` lies in some cone :math:`K_i`, in the relative interior of a face
    :math:`K_i \cap \{X_S u = 0\}` (:math:`|S| < d`), where
    :math:`\mathrm{relu}(Xu) = D_i X u`; there it is a critical point of :math:`\lVert\Lambda^T D_i X u\rVert`
    on the unit sphere of :math:`\{X_S u = 0\}`, an eigenvector of :math:`Q^T X^T D_i\Lambda\Lambda^T D_i X Q`
    (:math:`Q` a basis of that subspace). Every such eigenvector (both signs) over all :math:`S` and
    :math:`i` is evaluated with the true function, so the maximum over them is :math:`s(\Lambda)`.
    ``argmax=True`` returns ``(s, u)`` with a maximising unit direction ``u``.
    """
    import itertools
    import math

    x, lam = np.asarray(X, dtype=float), np.asarray(residual, dtype=float)
    n, d = x.shape
    subsets = sum(math.comb(n, size) for size in range(d))
    if subsets * mask.shape[1] * d > MAX_DUAL_CANDIDATES:
        raise ValueError(f"the exact dual norm of n={n}, d={d} with {mask.shape[1]} patterns needs "
                         f"{subsets * mask.shape[1] * d} candidates (allowed: at most {MAX_DUAL_CANDIDATES})")
    M = np.einsum("nk,np,nd->pkd", lam, mask, x)  # Lambda^T D_i X, (P, k, d)
    best, best_u = 0.0, np.zeros(d)
    for size in _FACE_SIZES(d):
        for S in itertools.combinations(range(n), size):
            if size:
                _, sv, vt = np.linalg.svd(x[list(S)])
                rank = int(np.sum(sv > sv[0] * d * 1e-12))
                Q = vt[rank:].T
            else:
                Q = np.eye(d)
            if Q.shape[1] == 0:
                continue
            MQ = M @ Q  # (P, k, q)
            _, vecs = np.linalg.eigh(np.swapaxes(MQ, -1, -2) @ MQ)  # (P, q, q)
            cand = np.swapaxes(Q @ vecs, -1, -2).reshape(-1, d)  # (P q, d) unit vectors
            cand = np.concatenate([cand, -cand])
            values = np.linalg.norm(np.maximum(cand @ x.T, 0.0) @ lam, axis=1)
            j = int(np.argmax(values))
            if values[j] > best:
                best, best_u = float(values[j]), cand[j]
    return (best, best_u) if argmax else best


def _all_face_sizes(d: int):
    """The sizes of the active sets to enumerate: every face of dimension >= 1 (``|S| < d``)."""
    return range(d)


#: Which faces :func:`relu_dual_norm` enumerates (a seam for the sandwich claim's sabotage, which keeps only
#: the cones' interiors and so misses maximisers on their boundaries).
_FACE_SIZES = _all_face_sizes


def relu_lower_bound(X, Y, beta: float, residual, mask) -> float:
    r"""Weak duality for every ReLU network of any width: :math:`L(U, A) \ge \tfrac12\lVert Y\rVert^2 -
    \tfrac12\lVert\Lambda' - Y\rVert^2` with :math:`\Lambda' = \Lambda\min(1, \beta/s(\Lambda))`
    (:func:`relu_dual_norm`, inflated by 1e-9 relative against rounding)."""
    lam = np.asarray(residual, dtype=float)
    s = relu_dual_norm(X, lam, mask) * (1 + 1e-9)
    lam = lam * min(1.0, beta / s) if s > 0 else lam
    return float(0.5 * np.sum(Y * Y) - 0.5 * np.sum((lam - Y) ** 2))


# --- the solution ---------------------------------------------------------------------------------------

@dataclass
class VectorSolution:
    """A certified sandwich of the vector-output problem (module docstring).

    ``lower_bound`` (certified, :math:`\\le g^*`; :math:`\\le p^*_k` when ``exact``), ``gated_objective``
    (:math:`G` at the solver's point), ``upper_bound`` (:math:`L` of ``network()``), ``gap``; ``V``
    ``(P, d, k)``, ``mask`` ``(n, P)``, ``gates`` ``(d, P)``.
    """

    lower_bound: float
    gated_objective: float
    upper_bound: float
    U: np.ndarray
    A: np.ndarray
    V: np.ndarray
    mask: np.ndarray
    gates: np.ndarray
    arrangements: str
    exact: bool
    exact_recovery: bool
    solver: str
    status: str
    seconds: float
    beta: float
    extra: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """``upper_bound - lower_bound`` (>= 0 up to rounding)."""
        return self.upper_bound - self.lower_bound

    @property
    def relative_gap(self) -> float:
        return self.gap / max(1.0, abs(self.upper_bound))

    @property
    def width(self) -> int:
        return int(self.U.shape[0])

    def network(self):
        """``(U, A)``: the recovered ReLU network, ``U`` ``(m, d)`` like any ``W_l``, ``A`` ``(m, k)``."""
        return self.U, self.A


def _pick(solver: str, mask, rank: int, k: int) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        return "cvxpy" if mask.shape[1] * (rank + k) ** 2 <= CVXPY_MAX_SIZE else "proximal"
    return solver


def _column_generation(x, t, beta, mask, U, A, upper, lower, rounds: int, tolerance: float):
    r"""Tighten both bounds: the residual :math:`\Lambda` of the current network gives the lower bound
    :func:`relu_lower_bound`; its most violating direction :math:`u^* = \arg\max\lVert\Lambda^T\mathrm{relu}(Xu)\rVert`
    joins the network's directions, the output layer is refitted (:func:`refit_output_layer`, whose
    dual is the dual restricted to those directions) and polished. Stops at the relative gap
    ``tolerance``, when a round does not lower the upper bound, or after ``rounds`` rounds."""
    done = 0
    for done in range(1, rounds + 1):
        residual = t - np.maximum(x @ U.T, 0.0) @ A
        s, u_star = relu_dual_norm(x, residual, mask, argmax=True)
        s *= 1 + 1e-9
        lam = residual * min(1.0, beta / s) if s > 0 else residual
        lower = max(lower, float(0.5 * np.sum(t * t) - 0.5 * np.sum((lam - t) ** 2)))
        if upper - lower <= tolerance * max(1.0, abs(upper)):
            break
        warm = np.concatenate([A * np.linalg.norm(U, axis=1, keepdims=True), np.zeros((1, A.shape[1]))])
        U2, A2 = refit_output_layer(x, t, beta, np.concatenate([U, u_star[None]]), init=warm,
                                    tol=min(1e-7, 0.01 * tolerance))
        U2, A2 = _polish(x, t, beta, U2, A2, 200)
        value = float(vector_objective(U2, A2, x, t, beta))
        if value < upper:
            U, A, upper = U2, A2, value
        else:
            break
    return U, A, upper, lower, done


def two_layer_relu_vector(X, Y, beta: float, *, arrangements="exact", solver: str = "auto", seed: int = 0,
                          one_vs_all: bool = False, extra_directions=None, polish_steps: int = 1000,
                          refine_rounds: int = 30, tolerance: float = 1e-4,
                          gated_tolerance: float = 1e-7) -> VectorSolution:
    r"""The certified sandwich ``lower_bound <= p*_k <= upper_bound`` of the vector-output problem.

    Steps: (1) the gated vector program (module docstring), certified: ``gated_lower_bound``;
    (2) the SVD recovery of its blocks (``extra["recovered_objective"]``); (3) the output layer
    refitted on the recovered directions and their negatives (and on the one-vs-all neurons with
    ``one_vs_all=True``; :func:`refit_output_layer`); (4) ``polish_steps`` gradient steps from the
    best of these networks. ``upper_bound`` is :math:`L` of the network returned by ``network()``.
    With ``arrangements="exact"`` the lower bound is also the weak-duality bound of the
    network's residual under the exact dual norm (:func:`relu_lower_bound`), which is tight at a
    global optimum; the better of the two is ``lower_bound`` (a bound on :math:`p^*_k`).

    Parameters
    ----------
    X : (n, d) data (no biases; append a column of ones for them).
    Y : (n, k) targets.
    beta : weight decay :math:`\beta > 0`.
    arrangements : ``"exact"`` (every pattern: the lower bound is then on the global optimum
        :math:`p^*_k`), an integer number of sampled Gaussian gates, or given gates ``(d, P)``
        (the lower bound then holds only for networks whose patterns are among them).
    solver : ``"cvxpy"`` (Clarabel), ``"proximal"`` (FISTA with singular-value thresholding,
        to the certified relative gap ``gated_tolerance``) or ``"auto"``.
    one_vs_all : also solve the :math:`k` scalar programs and offer their neurons to the refit (so
        ``upper_bound <= sum_c p*_{1,c}`` up to the refit's accuracy).
    extra_directions : ``(q, d)`` hidden directions also offered to the refit (e.g. the identity on
        non-negative features, so that a block can pass its input through).
    polish_steps : gradient steps on :math:`L` from the best network (0: none).
    refine_rounds : with exact arrangements, rounds of column generation (:func:`_column_generation`):
        each adds the neuron that most violates the dual constraint, refits and polishes, until the
        relative gap ``(upper - lower) / max(1, upper)`` is at most ``tolerance``.

    Returns
    -------
    VectorSolution (see the module docstring for what each number bounds).
    """
    x, t, beta = _check(X, Y, beta)
    if isinstance(polish_steps, bool) or not (isinstance(polish_steps, (int, np.integer)) and polish_steps >= 0):
        raise ValueError(f"polish_steps must be an integer >= 0, got {polish_steps!r}")
    if isinstance(refine_rounds, bool) or not (isinstance(refine_rounds, (int, np.integer)) and refine_rounds >= 0):
        raise ValueError(f"refine_rounds must be an integer >= 0, got {refine_rounds!r}")
    mask, gates, label, exact = relu.patterns(x, arrangements, seed=seed)
    basis = relu._row_space(x)  # the optimal V_i lie in the row space of X (the nuclear norm only grows off it)
    solver = _pick(solver, mask, basis.shape[1], t.shape[1])
    start = time.perf_counter()
    if solver == "cvxpy":
        Vr, status, lam = solve_cvxpy(x @ basis, t, beta, mask)
    else:
        Vr, status, lam = solve_proximal(x @ basis, t, beta, mask, tol=gated_tolerance)
    V = np.matmul(basis, Vr)
    value = gated_objective(x, t, beta, mask, V)
    duals = [t - gated_prediction(x, mask, V)] + ([] if lam is None else [lam])
    gated_lower = max(dual_lower_bound(x, t, beta, mask, d) for d in duals)
    U0, A0, exact_recovery = recover_vector_network(x, mask, gates, V)
    candidates = [(U0, A0)]
    b, sv, _ = np.linalg.svd(V, full_matrices=False)
    directions = np.swapaxes(b, 1, 2)[sv > 1e-7 * max(float(np.max(sv, initial=0.0)), 1e-300)]
    directions = [directions, -directions, U0]
    extra = {"recovered_objective": float(vector_objective(U0, A0, x, t, beta))}
    if one_vs_all:
        U_ova, A_ova, objectives = one_vs_all_network(x, t, beta, arrangements=arrangements, seed=seed)
        candidates.append((U_ova, A_ova))
        directions.append(U_ova)
        extra["one_vs_all_objective"] = float(np.sum(objectives))
    if extra_directions is not None:
        extra_dirs = np.asarray(extra_directions, dtype=float)
        if extra_dirs.ndim != 2 or extra_dirs.shape[1] != x.shape[1] or not np.all(np.isfinite(extra_dirs)):
            raise ValueError(f"extra_directions must be a finite (q, d) array with d = {x.shape[1]}, got shape "
                             f"{extra_dirs.shape}")
        directions.append(extra_dirs)
    candidates.append(refit_output_layer(x, t, beta, np.concatenate(directions)))
    values = [float(vector_objective(U, A, x, t, beta)) for U, A in candidates]
    U, A = candidates[int(np.argmin(values))]
    U, A = _polish(x, t, beta, U, A, int(polish_steps))
    upper = float(vector_objective(U, A, x, t, beta))
    lower, rounds = gated_lower, 0
    if exact:
        try:
            lower = max(lower, *(relu_lower_bound(x, t, beta, d, mask) for d in duals))
            U, A, upper, lower, rounds = _column_generation(x, t, beta, mask, U, A, upper, lower,
                                                            int(refine_rounds), tolerance)
        except ValueError:  # too many candidates for the exact dual norm: the gated bound stands
            pass
    extra["gated_lower_bound"] = gated_lower
    extra["refine_rounds"] = rounds
    return VectorSolution(lower, value, upper, U, A, V, mask, gates, label, exact, exact_recovery, solver, status,
                          time.perf_counter() - start, beta, extra)


def one_vs_all_network(X, Y, beta: float, *, arrangements="exact", seed: int = 0):
    r"""``(U, A, objectives)``: the :math:`k` scalar optima (:func:`theory.convex.relu.two_layer_relu_columns`)
    as one vector network, each neuron feeding one output; :math:`L(U, A) = \sum_c p^*_{1,c}` (module docstring)."""
    x, t, beta = _check(X, Y, beta)
    solutions = relu.two_layer_relu_columns(x, t, beta, arrangements=arrangements, seed=seed)
    neurons, heads = [], []
    for c, sol in enumerate(solutions):
        U, alpha = sol.network()
        head = np.zeros((len(alpha), t.shape[1]))
        head[:, c] = alpha
        neurons.append(U)
        heads.append(head)
    return np.concatenate(neurons), np.concatenate(heads), [s.objective for s in solutions]
