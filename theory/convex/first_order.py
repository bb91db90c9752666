r"""A first-order solver of the gated-ReLU group lasso, batched over an ensemble axis, on any array API.

The problem of every member :math:`e` (:mod:`theory.convex.relu`, Mishkin et al. 2022) is

.. math:: \min_{U \in \mathbb R^{P\times d}} F(U) = \tfrac12\lVert A(U) - y\rVert^2 + \beta\sum_i\lVert u_i\rVert,
   \qquad A(U) = \sum_i D_i X u_i = \mathrm{rowsum}\big(M \odot X U^T\big),

with the adjoint :math:`A^T(r) = (M \odot r 1^T)^T X`. FISTA (Beck & Teboulle 2009)
with the step :math:`1/L`, :math:`L \ge \lVert A\rVert_2^2` (power iteration, times a
safety factor), the proximal map of the group norm
:math:`u_i \mapsto u_i \max(0, 1 - \beta/(L\lVert u_i\rVert))`, and the gradient
restart of O'Donoghue & Candès (2015), each member on its own.

Stopping: the duality gap. :math:`\lambda = y - A(U)` scaled into the dual
feasible set :math:`\{\max_i\lVert X^T D_i\lambda\rVert \le \beta\}` gives
:math:`D(\lambda') = \tfrac12\lVert y\rVert^2 - \tfrac12\lVert\lambda' - y\rVert^2 \le F^*`,
so :math:`(F(U) - D(\lambda'))/\max(1, F(U)) \le` ``tol`` certifies a relative
objective gap of at most ``tol`` for every member.

Every array operation goes through the namespace of the inputs
(``array_api_compat.array_namespace``): numpy, CuPy, array-api-strict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from array_api_compat import array_namespace


@dataclass
class FirstOrderResult:
    """``U`` ``(E, P, d)``, ``objective``/``lower_bound`` ``(E,)`` (``(P, d)`` and scalars unbatched), status."""

    U: object
    objective: object
    lower_bound: object
    iterations: int  # the most of any member
    status: str  # "converged" when every member reached the gap, else "max_iter"
    member_iterations: list = field(default_factory=list)


def _forward(xp, X, mask, U):
    return xp.sum(mask * xp.matmul(X, xp.permute_dims(U, (0, 2, 1))), axis=-1)  # (E, n)


def _adjoint(xp, X, mask, r):
    return xp.matmul(xp.permute_dims(mask * r[:, :, None], (0, 2, 1)), X)  # (E, P, d)


def _row_norms(xp, U):
    return xp.sqrt(xp.sum(U * U, axis=-1))


def lipschitz(X, mask, *, iterations: int = 60, seed: int = 0):
    r"""An estimate of :math:`\lVert A\rVert_2^2` per member ``(E,)`` by power iteration on :math:`A^TA`."""
    xp = array_namespace(X, mask)
    e, p, d = mask.shape[0], mask.shape[2], X.shape[2]
    U = xp.ones((e, p, d), dtype=X.dtype) + xp.reshape(xp.arange(p * d, dtype=X.dtype), (1, p, d)) * 1e-3
    value = xp.ones((e,), dtype=X.dtype)
    for _ in range(iterations):
        norm = xp.sqrt(xp.sum(U * U, axis=(1, 2)))
        U = U / norm[:, None, None]
        U = _adjoint(xp, X, mask, _forward(xp, X, mask, U))
        value = xp.sqrt(xp.sum(U * U, axis=(1, 2)))
    return value


def gated_objective_and_bound(X, y, beta: float, mask, U):
    r"""Primal :math:`F(U)` and the dual lower bound :math:`D(\lambda')` ``(E,)`` (module docstring)."""
    xp = array_namespace(X, y, mask, U)
    lam = y - _forward(xp, X, mask, U)
    primal = 0.5 * xp.sum(lam * lam, axis=-1) + beta * xp.sum(_row_norms(xp, U), axis=-1)
    s = xp.max(_row_norms(xp, _adjoint(xp, X, mask, lam)), axis=-1)
    scale = xp.where(s > beta, beta / xp.maximum(s, 1e-300), xp.ones_like(s))
    lam = lam * scale[:, None]
    dual = 0.5 * xp.sum(y * y, axis=-1) - 0.5 * xp.sum((lam - y) ** 2, axis=-1)
    return primal, dual


def fista_gated(X, y, beta: float, mask, *, tol: float = 1e-6, max_iter: int = 20000, check_every: int = 25,
                init=None, safety: float = 1.05) -> FirstOrderResult:
    r"""FISTA with restarts on the gated-ReLU group lasso (module docstring), all members at once.

    Parameters
    ----------
    X : ``(n, d)`` or ``(E, n, d)``; y : ``(n,)`` or ``(E, n)``; mask : ``(n, P)`` or ``(E, n, P)`` (0/1).
    beta : the group-lasso weight :math:`\beta > 0`.
    tol : stop when every member's relative duality gap is at most ``tol``.
    """
    xp = array_namespace(X, y, mask)
    if not (float(beta) > 0):
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not (0 < float(tol) < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    squeeze = X.ndim == 2
    if squeeze:
        X, y, mask = X[None, ...], y[None, ...], mask[None, ...]
    e = max(X.shape[0], y.shape[0], mask.shape[0])
    X = xp.broadcast_to(X, (e, *X.shape[1:]))
    y = xp.broadcast_to(y, (e, y.shape[-1]))
    mask = xp.broadcast_to(mask, (e, *mask.shape[1:]))
    if X.shape[1] != y.shape[1] or mask.shape[1] != X.shape[1]:
        raise ValueError(f"X (E, n, d), y (E, n) and mask (E, n, P) must share n, got {X.shape}, {y.shape}, "
                         f"{mask.shape}")
    p, d = mask.shape[2], X.shape[2]
    step = 1.0 / (safety * lipschitz(X, mask))[:, None, None]
    U = xp.zeros((e, p, d), dtype=X.dtype) if init is None else xp.asarray(init, dtype=X.dtype)
    U_out, primal_out, dual_out = xp.zeros((e, p, d), dtype=X.dtype), xp.zeros((e,), dtype=X.dtype), \
        xp.zeros((e,), dtype=X.dtype)
    active = list(range(e))  # members still iterating; converged ones leave the batch (no wasted work)
    iterations, converged = [int(max_iter)] * e, [False] * e
    Y, t = U, xp.ones((e,), dtype=X.dtype)
    it = 0
    for it in range(1, int(max_iter) + 1):
        grad = _adjoint(xp, X, mask, _forward(xp, X, mask, Y) - y)
        Z = Y - step * grad
        norms = _row_norms(xp, Z)
        U_new = Z * xp.maximum(1.0 - beta * step[:, :, 0] / xp.maximum(norms, 1e-300), 0.0)[:, :, None]
        restart = xp.sum((Y - U_new) * (U_new - U), axis=(1, 2)) > 0  # gradient restart (O'Donoghue-Candes)
        t_new = (1.0 + xp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = xp.where(restart, xp.zeros_like(t), (t - 1.0) / t_new)
        Y = U_new + momentum[:, None, None] * (U_new - U)
        t = xp.where(restart, xp.ones_like(t), t_new)
        U = U_new
        if it % check_every == 0 or it == int(max_iter):
            primal, dual = gated_objective_and_bound(X, y, beta, mask, U)
            done = (primal - dual) / xp.maximum(xp.abs(primal), xp.ones_like(primal)) <= tol
            flags = [bool(done[j]) or it == int(max_iter) for j in range(len(active))]
            for j, member in enumerate(active):
                if flags[j]:
                    U_out[member, ...] = U[j, ...]
                    primal_out[member], dual_out[member] = primal[j], dual[j]
                    converged[member] = bool(done[j])
                    iterations[member] = it
            if all(flags):
                break
            if any(flags):
                keep = xp.asarray([j for j, f in enumerate(flags) if not f])
                X, y, mask, step, U, Y, t = (xp.take(a, keep, axis=0) for a in (X, y, mask, step, U, Y, t))
                active = [m for m, f in zip(active, flags) if not f]
    status = "converged" if all(converged) else "max_iter"
    U, primal, dual = U_out, primal_out, dual_out
    if squeeze:
        U, primal, dual = U[0, ...], primal[0], dual[0]
    return FirstOrderResult(U, primal, dual, max(iterations), status, iterations)
