r"""Shared metrics of all rules: angles and alignments (pure functions, degrees).

The angle between two arrays of one member is
:math:`\arccos\big(\langle a, b\rangle / (\lVert a\rVert\,\lVert b\rVert)\big)`
over all their non-ensemble axes, in degrees; "aligned" means below 90.
Where either norm is zero, or either array (or its squared norm) is not
finite, as for a diverged member, the angle is undefined and reported as ``nan``,
never a plausible number.
"""

from __future__ import annotations

import math

from .backend import namespace


def angle(a, b):
    """Angle in degrees between ``a[m]`` and ``b[m]`` for each member ``m``, shape ``(E,)``."""
    xp = namespace(a, b)
    if a.ndim > b.ndim:
        b = xp.broadcast_to(b, a.shape)
    elif b.ndim > a.ndim:
        a = xp.broadcast_to(a, b.shape)
    axes = tuple(range(1, a.ndim))
    dot = xp.sum(a * b, axis=axes)
    norms = xp.sqrt(xp.sum(a * a, axis=axes) * xp.sum(b * b, axis=axes))
    defined = (norms > 0) & xp.isfinite(norms) & xp.isfinite(dot)
    safe = xp.where(defined, norms, xp.ones_like(norms))
    cos = xp.clip(xp.where(defined, dot, xp.zeros_like(dot)) / safe, -1.0, 1.0)
    nan = xp.full(cos.shape, math.nan, dtype=cos.dtype)
    return xp.where(defined, xp.acos(cos) * (180.0 / math.pi), nan)


def layer_angles(first, second):
    """Per-layer angles between two lists of per-layer arrays: ``(E, L)``."""
    xp = namespace(*first)
    return xp.stack([angle(a, b) for a, b in zip(first, second)], axis=-1)


def fa_weight_alignment(weights, feedback):
    r"""FA weight alignment: angle between :math:`W_{l+1}^T` and :math:`B_{l+1}`, ``l = 1..L-1``.

    Returns ``(E, L-1)``; column ``i`` is hidden layer ``i + 1``.
    """
    xp = namespace(*weights)
    return xp.stack([angle(xp.matrix_transpose(weights[i + 1]), feedback[i]) for i in range(len(feedback))],
                    axis=-1)


def dfa_weight_alignment(weights, feedback):
    r"""DFA weight alignment (Refinetti et al. 2021), layers ``2 .. L``.

    Middle layers: angle between :math:`W_l` and :math:`B_l B_{l-1}^T`; top layer:
    angle between :math:`W_L` and :math:`B_{L-1}^T`. Returns ``(E, L-1)``; column
    ``j`` is layer ``j + 2``.
    """
    xp = namespace(*weights)
    n_layers = len(weights)
    cols = [angle(weights[i], xp.matmul(feedback[i], xp.matrix_transpose(feedback[i - 1])))
            for i in range(1, n_layers - 1)]
    cols.append(angle(weights[-1], xp.matrix_transpose(feedback[-1])))
    return xp.stack(cols, axis=-1)


def weight_norms(weights):
    """Frobenius norm of each layer's weights: ``(E, L)``."""
    xp = namespace(*weights)
    return xp.stack([xp.sqrt(xp.sum(w * w, axis=(1, 2))) for w in weights], axis=-1)
