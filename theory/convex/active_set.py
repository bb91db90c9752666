r"""The ReLU program solved exactly by an active-set Newton method, with a certificate.

The program (:mod:`theory.convex.relu`) over the :math:`2P` blocks :math:`z_j` (the :math:`v_i`, then the
:math:`w_i`; block :math:`j` has the pattern mask :math:`m_j` and the sign :math:`s_j = \pm 1`) is

.. math:: \min_{z}\ \tfrac12\lVert \textstyle\sum_j s_j (m_j \odot X z_j) - y\rVert^2 + \beta\sum_j\lVert z_j\rVert
   \quad\text{s.t.}\quad G_j z_j \ge 0,\qquad G_j = \mathrm{diag}(2m_j - 1)\,X.

At an optimum most blocks are zero and every non-zero block lies on a low-dimensional face of its cone,
usually an extreme ray (:math:`d - 1` tight rows): this is why first-order methods
(:mod:`theory.convex.augmented`) approach it slowly, and why an active-set method, which works on the
faces themselves, reaches it exactly. The *active set* is the non-zero blocks :math:`J` and, for each,
the tight rows :math:`T_j`. On those faces, :math:`z_j = N_j c_j` with :math:`N_j` an orthonormal basis of
:math:`\ker G_{T_j}` (so :math:`\lVert z_j\rVert = \lVert c_j\rVert`) and the program is the smooth problem

.. math:: \min_c\ \tfrac12\lVert A c - y\rVert^2 + \beta\sum_{j\in J}\lVert c_j\rVert,\qquad A_j = s_j (m_j\odot X) N_j,

whose Newton step uses the gradient :math:`A^T(Ac - y) + \beta\hat c_j` and the Hessian
:math:`A^TA + \beta\,\mathrm{blockdiag}((I - \hat c_j\hat c_j^T)/\lVert c_j\rVert)` (on a ray the norm is
linear). As in a primal active-set method (Nocedal & Wright 2006, ch. 16) every iterate stays feasible:

* **blocking**: each block's step stops at the first row of its cone it would cross, and that row joins
  :math:`T_j` (if the steps so cut are no descent direction, all blocks stop where the first one does);
  the step is then shortened by backtracking (Armijo); a block that reaches zero leaves :math:`J`;
* **multipliers**: once Newton has converged on the faces, the stationarity
  :math:`g_j + \beta \hat z_j = G_{T_j}^T\mu_{T_j}` (:math:`g_j = X^T(s_j m_j \odot r)`, :math:`r = \hat y - y`)
  is solved for :math:`\mu` by least squares; a negative :math:`\mu_k` releases row :math:`k` (the most
  negative per block);
* **pricing**: when every multiplier is non-negative, block :math:`j \notin J` may stay zero iff
  :math:`\sigma_j = \lVert\Pi_{K_j}(-g_j)\rVert \le \beta` (its dual constraint;
  :math:`\Pi_{K_j}(-g_j) = G_j^T\mu^\star - g_j` with :math:`\mu^\star` the non-negative least-squares
  solution, :func:`_nnls`); every block above joins :math:`J` along :math:`\Pi_{K_j}(-g_j)`, its steepest
  feasible descent direction, with the rows tight there.

When nothing changes, the point satisfies the KKT conditions to rounding. It starts from zero (all blocks
enter by pricing) or from a given point, each of whose blocks is first moved onto a guessed face of its cone.

**Certificate**, whatever the guesses were: the residual :math:`\lambda = -r` and multipliers
:math:`\mu_j \ge 0` (the clipped least squares on :math:`T_j` for non-zero blocks, :math:`\mu^\star` or
cheaper ones for zero blocks) bound every :math:`\sigma_j \le \lVert G_j^T\mu_j - g_j\rVert`; with :math:`s`
the largest bound, :math:`t\lambda`, :math:`t = \min(1, \beta/s)`, is dual feasible and
:math:`D(t\lambda) \le p^*` (weak duality, :mod:`theory.convex.relu`).

It runs on the host (numpy): the systems have as many unknowns as the active faces have dimensions
(about :math:`m^*`, tens to hundreds), and the cones' projections are small NNLS problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The fewest blocks that may join per pricing (more when the active set is larger: it may double).
ENTER = 8


@dataclass
class ActiveSetResult:
    """``V``, ``W`` ``(P, d)``; ``objective``; ``lower_bound`` (certified, see the module docstring);
    ``violation`` (relative, as :func:`theory.convex.relu.cone_violation`; zero up to rounding, since every
    iterate is feasible); ``status`` ``"kkt"`` (the KKT conditions hold to ``tol``), ``"stalled"`` (the line
    search could not decrease the objective) or ``"max_steps"`` (the certificate holds in every case);
    ``active`` the number of non-zero blocks; ``counts``: Newton ``steps``, rows that ``blocked`` a step,
    rows ``released``, blocks ``entered``, ``pricings``."""

    V: np.ndarray
    W: np.ndarray
    objective: float
    lower_bound: float
    violation: float
    status: str
    active: int
    counts: dict = field(default_factory=dict)

    @property
    def relative_gap(self) -> float:
        """The certified relative gap ``(objective - lower_bound) / max(1, |objective|)``."""
        return (self.objective - self.lower_bound) / max(1.0, abs(self.objective))


def _null_basis(rows: np.ndarray, d: int, tol: float) -> np.ndarray:
    """An orthonormal basis ``(d, r)`` of the null space of ``rows`` ``(t, d)``."""
    if rows.shape[0] == 0:
        return np.eye(d)
    _, sv, vt = np.linalg.svd(rows, full_matrices=True)
    rank = int(np.sum(sv > tol * max(float(sv[0]), 1e-300)))
    return vt[rank:].T


class _Program:
    """The program's data, with the per-block quantities the method needs."""

    def __init__(self, X, y, beta, mask):
        self.X, self.y, self.beta = X, y, float(beta)
        self.n, self.d = X.shape
        self.p = mask.shape[1]
        self.masks = np.concatenate([mask, mask], axis=1)  # (n, 2P)
        self.signs = np.r_[np.ones(self.p), -np.ones(self.p)]
        self.cone = 2.0 * self.masks - 1.0  # (n, 2P): G_j = cone[:, j, None] * X
        self.x_norm = float(np.linalg.norm(X, 2))
        self._bases = {}

    def prediction(self, Z):
        """``Z`` ``(2P, d)`` -> the prediction ``(n,)``."""
        return np.sum(self.masks * self.signs * (self.X @ Z.T), axis=1)

    def objective(self, Z):
        r = self.prediction(Z) - self.y
        return 0.5 * float(r @ r) + self.beta * float(np.sum(np.linalg.norm(Z, axis=1)))

    def smooth_gradients(self, r):
        r""":math:`g_j = X^T(s_j m_j\odot r)` for every block, ``(2P, d)``."""
        return (self.X.T @ (self.masks * self.signs * r[:, None])).T

    def column(self, j, B):
        r""":math:`s_j (m_j \odot X) B` ``(n, r)``: block ``j``'s prediction per coordinate of ``B`` ``(d, r)``."""
        return self.signs[j] * self.masks[:, j, None] * (self.X @ B)

    def G(self, j, rows=slice(None)):
        """:math:`G_j` (or its ``rows``)."""
        return self.cone[rows, j, None] * self.X[rows]

    def basis(self, j, rows, z):
        """The face's orthonormal basis ``(d, r)`` and its :meth:`column` (kept for each block's current face);
        a ray (``r = 1``) points along ``z``."""
        key = tuple(rows)
        if self._bases.get(j, (None,))[0] != key:
            B = _null_basis(self.G(j, rows), self.d, 1e-10)
            self._bases[j] = (key, B, self.column(j, B))
        _, B, col = self._bases[j]
        if B.shape[1] == 1 and float(B[:, 0] @ z) < 0:
            B, col = -B, -col
            self._bases[j] = (key, B, col)
        return B, col


def _tight_rows(values, scale, threshold, X_rows):
    """The rows with ``values <= threshold * scale``, tightest first, kept while their rank stays below ``d``."""
    d = X_rows.shape[1]
    order = np.argsort(values)
    chosen = [int(k) for k in order[:4 * d] if values[k] <= threshold * scale]
    while chosen and np.linalg.matrix_rank(X_rows[chosen]) >= d:  # the face must leave the block a direction
        chosen = chosen[:-1]
    return chosen


def _kkt_multipliers(prog, j, rows, gj, zj):
    r"""Least-squares :math:`\mu_{T_j}` of the stationarity :math:`g_j + \beta\hat z_j = G_{T_j}^T\mu`."""
    if not rows:
        return np.zeros(0)
    target = gj + prog.beta * zj / float(np.linalg.norm(zj))
    mu, *_ = np.linalg.lstsq(prog.G(j, rows).T, target, rcond=None)
    return mu


def _least_squares(A, b):
    """``argmin ||A x - b||`` for a tall ``A`` with few columns: the normal equations (fast), or the SVD
    where they are singular."""
    try:
        x = np.linalg.solve(A.T @ A, A.T @ b)
        if np.all(np.isfinite(x)):
            return x
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(A, b, rcond=None)[0]


def _nnls(A, b, start=(), *, max_iter: int = 1000):
    r"""Non-negative least squares :math:`\min_{x \ge 0}\lVert Ax - b\rVert` by Lawson & Hanson's active-set
    method (1974, ch. 23), started from the passive set ``start`` (indices; those whose least-squares
    coefficient is not positive are dropped first). From a nearly right support (the last solve's, as the
    iterate moves) it takes a few iterations where scipy's cold start takes one per support element; if it
    has not converged after ``max_iter`` it hands over to scipy's.
    """
    m, n = A.shape
    passive = np.zeros(n, dtype=bool)
    passive[np.asarray(start, dtype=int)] = True
    x = np.zeros(n)
    while passive.any():  # a feasible start: the least squares on the support, positive coefficients only
        idx = np.flatnonzero(passive)
        coef = _least_squares(A[:, idx], b)
        if np.all(coef > 0):
            x[idx] = coef
            break
        passive[idx[coef <= 0]] = False
    scale = max(float(np.linalg.norm(A, ord=np.inf)) * max(float(np.linalg.norm(b)), 1e-300), 1e-300)
    for _ in range(max_iter):
        w = A.T @ (b - A @ x)
        w[passive] = -np.inf
        k = int(np.argmax(w))
        if w[k] <= 1e-12 * scale:
            return x
        passive[k] = True
        while True:
            idx = np.flatnonzero(passive)
            coef = _least_squares(A[:, idx], b)
            if np.all(coef > 0):
                x[:] = 0.0
                x[idx] = coef
                break
            bad = coef <= 0
            gap = x[idx][bad] - coef[bad]  # >= 0; zero only where both are zero (that step is then zero)
            alpha = float(np.min(np.divide(x[idx][bad], gap, out=np.zeros_like(gap), where=gap > 0)))
            x[idx] = x[idx] + alpha * (coef - x[idx])
            passive[idx[x[idx] <= 1e-300]] = False
            x[~passive] = 0.0
            if not passive.any():
                break
    from scipy.optimize import nnls

    return nnls(A, b, maxiter=50 * n)[0]


def _price(prog, j, gj, mu_warm):
    r"""An upper bound on :math:`\sigma_j` for a zero block, and (when above :math:`\beta`) the exact value with
    the direction :math:`\Pi_{K_j}(-g_j)`; ``(bound, direction or None)``.

    Any :math:`\mu \ge 0` bounds :math:`\sigma_j \le \lVert G_j^T\mu - g_j\rVert`: first :math:`\mu = 0`, then
    the multipliers ``mu_warm[:, j]`` (a warm start's, or the last exact solve's); only above :math:`\beta`
    the exact :math:`\mu^\star` (:func:`_nnls`, started from the support of ``mu_warm[:, j]``), which then
    replaces ``mu_warm[:, j]``.
    """
    bound = float(np.linalg.norm(gj))
    if bound <= prog.beta:
        return bound, None
    Gj = prog.G(j)
    warm = mu_warm[:, j]
    bound = min(bound, float(np.linalg.norm(Gj.T @ warm - gj)))
    if bound <= prog.beta:
        return bound, None
    support = np.flatnonzero(warm > 0)
    mu = _nnls(Gj.T, gj, support[np.argsort(-warm[support])][:prog.d])
    mu_warm[:, j] = mu
    direction = Gj.T @ mu - gj
    return float(np.linalg.norm(direction)), direction


def _certified_bound(prog, Z, faces, mu_warm) -> float:
    r"""The certified lower bound :math:`D(t\lambda)` of the module docstring at ``Z`` with the faces ``faces``."""
    r = prog.prediction(Z) - prog.y
    g = prog.smooth_gradients(r)
    s = 0.0
    for j in range(2 * prog.p):
        zn = float(np.linalg.norm(Z[j]))
        rows = faces.get(j, []) if zn > 0 else []
        if zn > 0:
            mu = np.maximum(_kkt_multipliers(prog, j, rows, g[j], Z[j]), 0.0)
            s = max(s, float(np.linalg.norm(prog.G(j, rows).T @ mu - g[j])) if rows else float(np.linalg.norm(g[j])))
        else:
            s = max(s, _price(prog, j, g[j], mu_warm)[0])
    lam = -r * (min(1.0, prog.beta / s) if s > 0 else 1.0)
    return 0.5 * float(prog.y @ prog.y) - 0.5 * float((lam - prog.y) @ (lam - prog.y))


def _initial_faces(prog, Z, block_threshold, row_threshold, mu=None):
    """A feasible start: the large blocks of ``Z``, each moved onto a guessed face of its cone.

    A row is guessed tight when its value is below ``row_threshold`` relatively, or when ``mu`` (the warm
    start's multipliers) is positive on it; tightest first, at most rank ``d - 1``. The block is projected
    onto the face's span; while that leaves the cone, the least tight guessed row is dropped, and as a last
    resort the block is projected onto its cone (NNLS), whose active rows are the face.
    """
    norms = np.linalg.norm(Z, axis=1)
    big = max(float(norms.max(initial=0.0)), 1e-300)
    out, faces = np.zeros_like(Z), {}
    for j in np.flatnonzero(norms > block_threshold * big):
        j = int(j)
        Gj = prog.G(j)
        values = Gj @ Z[j]
        if mu is not None and np.any(mu[:, j] > 0):
            values = np.where(mu[:, j] > 1e-6 * np.max(mu[:, j]), -np.inf, values)
        rows = _tight_rows(values, prog.x_norm * norms[j], row_threshold, prog.X)
        floor = -1e-12 * prog.x_norm * norms[j]
        while True:
            B = _null_basis(Gj[rows], prog.d, 1e-10)
            z = B @ (B.T @ Z[j])
            if np.linalg.norm(z) > 1e-6 * norms[j] and np.min(Gj @ z) >= floor:
                break
            if not rows:
                z = Z[j] + Gj.T @ _nnls(Gj.T, -Z[j])  # the projection onto the cone
                rows = _tight_rows(Gj @ z, prog.x_norm * norms[j], 1e-12, prog.X)
                break
            rows = rows[:-1]
        if np.linalg.norm(z) > 1e-12 * big:
            out[j], faces[j] = z, rows
    return out, faces


def _newton_system(prog, blocks, bases, c, edges):
    """Gradient and Hessian of the face problem (module docstring) at ``c``."""
    A = np.concatenate([prog.column(j, B) for j, B in zip(blocks, bases)], axis=1)
    grad, hess = A.T @ (A @ c - prog.y), A.T @ A
    for a, b in zip(edges, edges[1:]):
        norm = float(np.linalg.norm(c[a:b]))
        grad[a:b] += prog.beta * c[a:b] / norm
        if b - a > 1:  # along a ray the norm is linear
            hess[a:b, a:b] += prog.beta * (np.eye(b - a) - np.outer(c[a:b], c[a:b]) / norm ** 2) / norm
    return A, grad, hess


def _blocking_rows(prog, blocks, faces, Z, moves):
    """Per block, the fraction of its step ``moves`` ``(d, blocks)`` it can take before a row of its cone
    (not in its face) turns negative, capped at 1, and that row."""
    signs = prog.cone[:, blocks]
    values = signs * (prog.X @ Z[blocks].T)
    rates = signs * (prog.X @ moves)
    falling = rates < -1e-14 * prog.x_norm * np.linalg.norm(moves, axis=0)
    for k, j in enumerate(blocks):
        falling[faces[j], k] = False
    ratios = np.where(falling, np.maximum(values, 0.0) / np.where(falling, -rates, 1.0), np.inf)
    rows = np.argmin(ratios, axis=0)
    return np.minimum(ratios[rows, np.arange(len(blocks))], 1.0), rows


def _walk(prog, Z, faces, *, mu_warm, tol, max_steps, counts) -> str:
    """The active-set loop (module docstring) on ``Z`` ``(2P, d)`` and ``faces`` (block -> tight rows), both
    updated in place; returns the status."""
    X, beta = prog.X, prog.beta
    for _ in range(max_steps):
        blocks = sorted(faces)
        bases = [prog.basis(j, faces[j], Z[j])[0] for j in blocks]
        edges = np.cumsum([0, *[B.shape[1] for B in bases]])
        converged = not blocks
        if blocks:
            c = np.concatenate([B.T @ Z[j] for j, B in zip(blocks, bases)])
            A, grad, hess = _newton_system(prog, blocks, bases, c, edges)

            def value(cc):
                r = A @ cc - prog.y
                return 0.5 * float(r @ r) + beta * float(np.sum(np.sqrt(np.add.reduceat(cc * cc, edges[:-1]))))

            f0 = value(c)
            ridge = 1e-13 * max(float(np.trace(hess)) / len(c), 1e-300)
            step = -np.linalg.solve(hess + ridge * np.eye(len(c)), grad)
            decrement = -float(grad @ step)
            converged = decrement <= 1e-20 * max(1.0, f0)
        if not converged:
            counts["steps"] += 1
            moves = np.stack([B @ step[a:b] for B, a, b in zip(bases, edges, edges[1:])], axis=1)
            limits, rows = _blocking_rows(prog, blocks, faces, Z, moves)
            direction = step * np.repeat(limits, np.diff(edges))
            slope = float(grad @ direction)
            if slope >= 0:  # the blocks' own cuts spoil descent: all stop where the first one does
                first = int(np.argmin(limits))
                limits = np.where(np.arange(len(blocks)) == first, limits[first], np.inf)
                direction, slope = step * limits[first], -decrement * limits[first]
            t = 1.0
            while t > 1e-14 and value(c + t * direction) > f0 + 1e-4 * t * slope:
                t *= 0.5
            if t <= 1e-14:
                return "stalled"
            c = c + t * direction
            for j, B, a, b in zip(blocks, bases, edges, edges[1:]):
                Z[j] = B @ c[a:b]
            if t == 1.0:
                for k in np.flatnonzero(limits < 1.0):
                    faces[blocks[k]] = [*faces[blocks[k]], int(rows[k])]
                    counts["blocked"] += 1
            # blocks leave when zero is their best value with the others fixed (Newton only creeps towards
            # it: the norm is not smooth there), when they reached zero, or when their face left no direction
            # (one at a time, the residual updated after each: each removal is then a descent step)
            r = A @ c - prog.y
            scale = max(float(np.abs(Z).max()), 1e-300)
            for j, a, b in zip(blocks, edges, edges[1:]):
                mine = A[:, a:b] @ c[a:b]
                alone = A[:, a:b].T @ (r - mine)  # the gradient at c_j = 0
                zero_best = (alone[0] >= -beta) if b - a == 1 else (np.linalg.norm(alone) <= beta)
                if (zero_best or np.linalg.norm(Z[j]) <= 1e-13 * scale
                        or prog.basis(j, faces[j], Z[j])[0].shape[1] == 0):
                    Z[j] = 0.0
                    del faces[j]
                    r = r - mine
            continue
        # converged on these faces: the multipliers, then the zero blocks
        r = prog.prediction(Z) - prog.y
        changed = False
        for j in blocks:
            gj = X.T @ (prog.signs[j] * prog.masks[:, j] * r)
            mu = _kkt_multipliers(prog, j, faces[j], gj, Z[j])
            if mu.size and np.min(mu) < -tol * max(beta, float(np.max(np.abs(mu)))):
                del faces[j][int(np.argmin(mu))]
                counts["released"] += 1
                changed = True
        if changed:
            continue
        counts["pricings"] += 1
        g = prog.smooth_gradients(r)
        candidates = []
        for j in range(2 * prog.p):
            if j not in faces:
                bound, direction = _price(prog, j, g[j], mu_warm)
                if direction is not None and bound > beta * (1 + tol):
                    candidates.append((bound, j, direction))
        # the most violated enter, at most doubling the active set (many patterns' blocks are near copies)
        for bound, j, direction in sorted(candidates, key=lambda item: -item[0])[:max(ENTER, len(faces))]:
            a = prog.column(j, direction[:, None])[:, 0]  # the best step along the direction, alone
            Z[j] = direction * (bound - beta) * bound / max(float(a @ a), 1e-300)
            faces[j] = _tight_rows(prog.cone[:, j] * (X @ direction), prog.x_norm * bound, 1e-9, X)
            counts["entered"] += 1
            changed = True
        if not changed:
            return "kkt"
    return "max_steps"


def _check(X, y, beta, mask, V, W):
    X, y, mask = (np.asarray(a, dtype=float) for a in (X, y, mask))
    if X.ndim != 2 or y.shape != (X.shape[0],) or mask.ndim != 2 or mask.shape[0] != X.shape[0]:
        raise ValueError(f"X must be (n, d), y (n,) and mask (n, P); got {X.shape}, {y.shape}, {mask.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must hold 0/1 patterns")
    if not (isinstance(beta, (int, float, np.floating)) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    shape = (mask.shape[1], X.shape[1])
    blocks = []
    for name, B in (("V", V), ("W", W)):
        B = np.zeros(shape) if B is None else np.asarray(B, dtype=float)
        if B.shape != shape or not np.all(np.isfinite(B)):
            raise ValueError(f"{name} must be a finite (P, d) = {shape} array (or None), got shape {B.shape}")
        blocks.append(B)
    return X, y, float(beta), mask, np.concatenate(blocks)


def active_set_relu(X, y, beta: float, mask, V=None, W=None, *, multipliers=None, tol: float = 1e-9,
                    max_steps: int | None = None, block_threshold: float = 1e-4,
                    row_threshold: float = 1e-4) -> ActiveSetResult:
    r"""The ReLU program over the patterns ``mask`` ``(n, P)`` solved by the active-set method (module docstring).

    Parameters
    ----------
    X : ``(n, d)``; y : ``(n,)``; beta : the weight decay :math:`\beta > 0`; mask : 0/1 patterns ``(n, P)``.
    V, W : an optional warm start ``(P, d)`` (default zero): blocks above ``block_threshold`` times the
        largest norm are kept, each moved onto a guessed face (rows below ``row_threshold`` times
        :math:`\lVert X\rVert_2\lVert z_j\rVert`, or with a positive multiplier).
    multipliers : optional :math:`\mu \ge 0` ``(n, 2P)`` (an AL solver's): guessed faces, and cheap bounds
        that spare most of the zero blocks' NNLS.
    tol : the relative tolerance of the KKT checks (negative multipliers, pricing).
    max_steps : the most Newton steps and corrections (default ``max(10000, 20 d min(n, 2P))``).

    Returns
    -------
    ActiveSetResult, with a certified ``lower_bound`` whatever its ``status``.
    """
    from .relu import _row_space

    X, y, beta, mask, Z0 = _check(X, y, beta, mask, V, W)
    basis = _row_space(X)  # optimal blocks lie in the row space of X: work in rank(X) coordinates
    X, Z0 = X @ basis, Z0 @ basis
    prog = _Program(X, y, beta, mask)
    max_steps = max(10_000, 20 * prog.d * min(prog.n, 2 * prog.p)) if max_steps is None else int(max_steps)
    if multipliers is None:
        mu_warm = np.zeros((prog.n, 2 * prog.p))
    else:
        mu_warm = np.array(np.broadcast_to(np.asarray(multipliers, dtype=float), (prog.n, 2 * prog.p)))
        if not np.all(mu_warm >= 0):
            raise ValueError("multipliers must be finite and >= 0")
    Z, faces = _initial_faces(prog, Z0, block_threshold, row_threshold,
                              mu_warm if multipliers is not None else None)
    counts = {"steps": 0, "blocked": 0, "released": 0, "entered": 0, "pricings": 0}
    status = _walk(prog, Z, faces, mu_warm=mu_warm, tol=tol, max_steps=max_steps, counts=counts)
    lower = _certified_bound(prog, Z, faces, mu_warm)
    signed = prog.cone * (X @ Z.T)
    zmax = max(float(np.max(np.linalg.norm(Z, axis=1), initial=0.0)), 1e-300)
    violation = max(0.0, -float(np.min(signed, initial=0.0))) / (prog.x_norm * zmax)
    objective = prog.objective(Z)
    Z = Z @ basis.T
    return ActiveSetResult(Z[:prog.p], Z[prog.p:], objective, lower, violation, status,
                           int(np.sum(np.linalg.norm(Z, axis=1) > 0)), counts)
