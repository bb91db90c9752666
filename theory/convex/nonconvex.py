r"""The non-convex two-layer ReLU problem trained by gradient descent, many runs at once (the baseline).

:math:`L(U, \alpha)` of :mod:`theory.convex.relu`, with the (sub)gradient

.. math:: \nabla_\alpha L = \mathrm{relu}(XU^T)^T r + \beta\alpha,\qquad
          \nabla_U L = \big((r\alpha^T) \odot 1[XU^T > 0]\big)^T X + \beta U,\qquad r = \hat y - y.

Runs are batched on a leading axis ``R``; each takes plain gradient steps of
its own fixed size, except that a step which more than doubles the objective
is undone and the run's step halved (so a run cannot diverge). Steps that
raise the objective a little are kept: near the ReLU kinks a monotone line
search would shrink the step to nothing and stall, while gradient descent
zig-zags across them. The result is the last iterate.
:func:`gradient_descent_vector` is the same for vector outputs (:mod:`theory.convex.vector`).
"""

from __future__ import annotations

import numpy as np

from .relu import nonconvex_objective


#: Whether :func:`gradient_descent` trains the hidden layer (a seam for the width claim's sabotage, which trains
#: only the output layer: random features).
_TRAIN_HIDDEN = True


def _grads(U, alpha, X, y, beta):
    pre = X @ np.swapaxes(U, -1, -2)  # (R, n, m)
    hidden = np.maximum(pre, 0.0)
    r = np.sum(hidden * alpha[:, None, :], axis=-1) - y  # (R, n)
    g_alpha = np.einsum("rnm,rn->rm", hidden, r) + beta * alpha
    g_U = np.einsum("rnm,nd->rmd", (r[:, :, None] * alpha[:, None, :]) * (pre > 0), X) + beta * U
    return g_U, g_alpha


def gradient_descent(X, y, beta: float, width: int, *, runs: int = 8, steps: int = 3000, lr: float | None = None,
                     init_scale: float = 1.0, seed: int = 0):
    r"""``runs`` gradient-descent runs of width ``width`` from random inits; returns ``(U, alpha, objective)``.

    The objective is that of the returned (last) iterate.

    ``U`` ``(runs, width, d)``, ``alpha`` ``(runs, width)``, ``objective`` ``(runs,)`` the final
    :math:`L`. Inits :math:`u_j \sim N(0, s^2/d)`, :math:`\alpha_j \sim N(0, s^2/m)` with ``s = init_scale``;
    the step is ``lr`` (default :math:`1/(\lVert X\rVert_2^2 + \lVert y\rVert + \beta)`).
    """
    x, t = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if not (isinstance(width, (int, np.integer)) and width >= 1):
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if not (isinstance(runs, (int, np.integer)) and runs >= 1):
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15, 1)))
    d = x.shape[1]
    U = init_scale * rng.normal(size=(runs, width, d)) / np.sqrt(d)
    alpha = init_scale * rng.normal(size=(runs, width)) / np.sqrt(width)
    step = np.full(runs, 1.0 / (np.linalg.norm(x, 2) ** 2 + np.linalg.norm(t) + beta) if lr is None else lr)
    value = nonconvex_objective(U, alpha, x, t, beta)
    for _ in range(int(steps)):
        g_U, g_alpha = _grads(U, alpha, x, t, beta)
        U_new = U - step[:, None, None] * g_U if _TRAIN_HIDDEN else U
        alpha_new = alpha - step[:, None] * g_alpha
        new = nonconvex_objective(U_new, alpha_new, x, t, beta)
        ok = np.isfinite(new) & (new <= 2 * value)
        U = np.where(ok[:, None, None], U_new, U)
        alpha = np.where(ok[:, None], alpha_new, alpha)
        value = np.where(ok, new, value)
        step = np.where(ok, step, step * 0.5)
    return U, alpha, value


def gradient_descent_vector(X, Y, beta: float, width: int, *, runs: int = 8, steps: int = 3000,
                            lr: float | None = None, init_scale: float = 1.0, seed: int = 0, init=None,
                            best: bool = False):
    r"""Gradient descent on the vector-output objective :math:`L(U, A)` of :mod:`theory.convex.vector`.

    As :func:`gradient_descent` (same step rule) with outputs ``Y`` ``(n, k)``: returns ``U``
    ``(runs, width, d)``, ``A`` ``(runs, width, k)`` and the objective ``(runs,)``. Inits
    :math:`u_j \sim N(0, s^2/d)`, :math:`a_j \sim N(0, s^2/m)`, or ``init = (U, A)`` (the same start
    for every run). ``best=True`` returns each run's best iterate instead of its last.
    """
    from .vector import vector_objective

    x, t = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    if t.ndim != 2 or t.shape[0] != x.shape[0]:
        raise ValueError(f"Y must be (n, k) with n = {x.shape[0]} rows, got shape {t.shape}")
    if not (isinstance(width, (int, np.integer)) and width >= 1):
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if not (isinstance(runs, (int, np.integer)) and runs >= 1):
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    d, k = x.shape[1], t.shape[1]
    if init is None:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15, 2)))
        U = init_scale * rng.normal(size=(runs, width, d)) / np.sqrt(d)
        A = init_scale * rng.normal(size=(runs, width, k)) / np.sqrt(width)
    else:
        U = np.broadcast_to(np.asarray(init[0], dtype=float), (runs, width, d)).copy()
        A = np.broadcast_to(np.asarray(init[1], dtype=float), (runs, width, k)).copy()
    step = np.full(runs, 1.0 / (np.linalg.norm(x, 2) ** 2 + np.linalg.norm(t) + beta) if lr is None else lr)
    value = vector_objective(U, A, x, t, beta)
    kept = (U.copy(), A.copy(), value.copy())
    for _ in range(int(steps)):
        pre = x @ np.swapaxes(U, -1, -2)  # (R, n, m)
        hidden = np.maximum(pre, 0.0)
        r = hidden @ A - t  # (R, n, k)
        g_A = np.swapaxes(hidden, -1, -2) @ r + beta * A
        g_U = np.swapaxes((r @ np.swapaxes(A, -1, -2)) * (pre > 0), -1, -2) @ x + beta * U
        U_new = U - step[:, None, None] * g_U
        A_new = A - step[:, None, None] * g_A
        new = vector_objective(U_new, A_new, x, t, beta)
        ok = np.isfinite(new) & (new <= 2 * value)
        U = np.where(ok[:, None, None], U_new, U)
        A = np.where(ok[:, None, None], A_new, A)
        value = np.where(ok, new, value)
        step = np.where(ok, step, step * 0.5)
        if best:
            better = value < kept[2]
            kept = (np.where(better[:, None, None], U, kept[0]), np.where(better[:, None, None], A, kept[1]),
                    np.where(better, value, kept[2]))
    return kept if best else (U, A, value)
