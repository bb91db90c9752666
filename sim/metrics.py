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
from .nn import activation_derivative


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


def gauss_newton_signals(weights, forward, error, activation: str = "linear") -> list:
    r"""Hidden teaching signals of the Gauss-Newton targets (Meulemans et al. 2020).

    For hidden layer :math:`l = 1 .. L-1` and sample :math:`b`, with
    :math:`J_{l,b} = \partial \hat y_b / \partial h_{l,b}` the Jacobian of the
    network output with respect to the layer's activation, shape ``(n_L, n_l)``,

    .. math:: J_{L-1,b} = W_L,\qquad
              J_{l,b} = J_{l+1,b}\, \operatorname{diag} f'(a_{l+1,b})\, W_{l+1},

    the Gauss-Newton target of :math:`h_{l,b}` moves it by the minimum-norm
    solution :math:`-J_{l,b}^+ e_b` of :math:`J_{l,b}\, \Delta h = -e_b`
    (:math:`e_b` the output error, :math:`^+` the Moore-Penrose pseudo-inverse),
    and a layer that regresses on that target receives, in the rules'
    convention (:mod:`sim.rules`: the signal times :math:`f'(a_l)`),

    .. math:: \delta^{\mathrm{GN}}_{l,b} = \big(J_{l,b}^+ e_b\big) \odot f'(a_{l,b}),

    where back-propagation has :math:`J_{l,b}^T e_b` in place of
    :math:`J_{l,b}^+ e_b`. For a linear network :math:`J_l = W_L \cdots W_{l+1}`
    is the same for every sample and one pseudo-inverse per member suffices;
    otherwise it is computed per sample, batched over members and samples.
    A sample whose Jacobian or error is not finite (a diverged member) gets
    ``nan``.

    Parameters
    ----------
    weights : list
        ``W_1 .. W_L``, each ``(E, n_l, n_{l-1})``.
    forward : sim.nn.Forward
        The forward pass of ``weights`` on the batch (its pre-activations).
    error : array
        The output error ``e``, ``(E, B, n_L)`` (:func:`sim.nn.output_error`).
    activation : {"linear", "relu", "tanh"}
        The hidden activation.

    Returns
    -------
    list
        ``delta^GN_1 .. delta^GN_{L-1}``, each ``(E, B, n_l)``.
    """
    xp = namespace(error, *weights)
    linear = activation == "linear"
    derivatives = [None if linear else activation_derivative(a, activation) for a in forward.preactivations[:-1]]
    n_layers = len(weights)
    jacobian = weights[-1] if linear else weights[-1][:, None, :, :]  # J_{L-1}: (E, n_L, n_{L-1}) or (E, 1, ...)
    signals = [None] * (n_layers - 1)
    for i in range(n_layers - 2, -1, -1):  # hidden layer l = i + 1
        if i < n_layers - 2:
            if linear:
                jacobian = xp.matmul(jacobian, weights[i + 1])
            else:
                jacobian = xp.matmul(jacobian * derivatives[i + 1][..., None, :], weights[i + 1][:, None, :, :])
        if linear:
            signals[i] = xp.matmul(error, xp.matrix_transpose(_safe_pinv(jacobian)))
        else:
            # (E, 1, n_l, n_L) for the top hidden layer (J = W_L for every sample), else (E, B, n_l, n_L)
            step = xp.matmul(_safe_pinv(jacobian), error[..., None])[..., 0]
            signals[i] = step * derivatives[i]
    return signals


def _safe_pinv(matrices):
    """Batched Moore-Penrose pseudo-inverse; ``nan`` where a matrix is not finite (never a LinAlgError)."""
    xp = namespace(matrices)
    finite = xp.all(xp.isfinite(matrices), axis=(-2, -1))
    safe = xp.where(xp.isfinite(matrices), matrices, xp.zeros_like(matrices))
    inverse = xp.linalg.pinv(safe)
    nan = xp.full(inverse.shape, math.nan, dtype=inverse.dtype)
    return xp.where(finite[..., None, None], inverse, nan)
