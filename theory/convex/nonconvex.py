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
"""

from __future__ import annotations

import numpy as np

from .relu import nonconvex_objective


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
        U_new = U - step[:, None, None] * g_U
        alpha_new = alpha - step[:, None] * g_alpha
        new = nonconvex_objective(U_new, alpha_new, x, t, beta)
        ok = np.isfinite(new) & (new <= 2 * value)
        U = np.where(ok[:, None, None], U_new, U)
        alpha = np.where(ok[:, None], alpha_new, alpha)
        value = np.where(ok, new, value)
        step = np.where(ok, step, step * 0.5)
    return U, alpha, value
