r"""Adam (Kingma & Ba 2015) for the trainer, as pure functions on ensembles (any array namespace).

Per parameter array ``p`` with update direction ``g`` (the rule's ``dW``, the
gradient for BP), at step ``t = 1, 2, ...``:

.. math::
    m \leftarrow \beta_1 m + (1 - \beta_1) g,\quad
    v \leftarrow \beta_2 v + (1 - \beta_2) g^2,\quad
    p \leftarrow p - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon},

with :math:`\eta` one learning rate per member (the leading ensemble axis).
Weight decay, when the trainer is given one, is decoupled (AdamW, Loshchilov &
Hutter 2019): :math:`p \leftarrow p - \eta\lambda p` besides the Adam step.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import namespace

OPTIMIZERS = ("sgd", "adam")


def check_adam(betas, eps) -> tuple[float, float, float]:
    """``(beta1, beta2, eps)`` as floats; ValueError unless ``0 <= beta < 1`` and ``eps`` is positive and finite."""
    try:
        ok = not isinstance(betas, str | bytes) and len(betas) == 2
    except TypeError:
        ok = False
    if ok:
        ok = all(not isinstance(b, bool) and isinstance(b, int | float | np.integer | np.floating)
                 and 0.0 <= b < 1.0 for b in betas)
    if not ok:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if isinstance(eps, bool) or not isinstance(eps, int | float | np.integer | np.floating) \
            or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return float(betas[0]), float(betas[1]), float(eps)


def adam_moments(first: list, second: list, grads: list, beta1: float, beta2: float) -> tuple[list, list]:
    """The moments after one step: ``m = beta1 m + (1 - beta1) g`` and ``v = beta2 v + (1 - beta2) g**2`` (new arrays)."""
    first = [beta1 * m + (1.0 - beta1) * g for m, g in zip(first, grads)]
    second = [beta2 * v + (1.0 - beta2) * (g * g) for v, g in zip(second, grads)]
    return first, second


def adam_steps(first: list, second: list, t: int, lr, beta1: float, beta2: float, eps: float) -> list:
    r"""The bias-corrected steps :math:`\eta\, \hat m / (\sqrt{\hat v} + \epsilon)` at step ``t >= 1``.

    ``lr`` is ``(E,)``, one learning rate per member (the first axis of every array).
    """
    xp = namespace(*first)
    c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    out = []
    for m, v in zip(first, second):
        rate = xp.reshape(lr / c1, (m.shape[0],) + (1,) * (m.ndim - 1))
        out.append(rate * m / (xp.sqrt(v / c2) + eps))
    return out
