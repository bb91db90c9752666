r"""Synthetic inputs: forward unlocking of a network split in two (Jaderberg et al. 2017).

A network is split at an interface into a *lower* part (layers ``1 .. k``, input
:math:`x`, output :math:`h = h_k`) and an *upper* part (layers ``k+1 .. L``, input
:math:`h`, output :math:`\hat y`); each part is an ensemble of MLPs under the
conventions of :mod:`sim.nn` (its own output layer linear, so :math:`h` is the lower
part's linear output). In back-propagation the upper part is *forward-locked*: it
cannot start its forward pass before the lower part has computed :math:`h`.

A synthetic-input module :math:`I` predicts the interface activation from the
network input alone (DNI's synthetic inputs; the "complete unlock" of the
feed-forward experiments),

.. math:: \hat h_b = I(x_b) = P\,x_b + p, \qquad P\ (E, n_k, n_0),\ p\ (E, n_k),

so that the upper part runs forward and backward on :math:`\hat h` at once, in
parallel with the lower part's forward pass. The module is trained online by
regression onto the true activation, once the lower part has produced it:

.. math:: \ell^{I} = \frac{1}{2B}\sum_b \lVert I(x_b) - h_b\rVert^2, \qquad
          \frac{\partial \ell^I}{\partial P} = \operatorname{mean}_b\, r_b\, x_b^T,\quad
          \frac{\partial \ell^I}{\partial p} = \operatorname{mean}_b\, r_b,\quad r_b = I(x_b) - h_b,

:math:`(P, p) \leftarrow (P, p) - \eta_I\,\partial\ell^I`. One forward-unlocked step
(:func:`forward_unlocked_step`) is then

* upper: the BP updates of its loss :math:`L(\hat h)` on the synthetic input, and the
  per-sample gradient it sends down, :math:`g_b = B\,\partial L/\partial \hat h_b =
  W_{k+1}^T \delta_{k+1,b}`;
* lower: BP of the output error :math:`g` through its own layers, at its own forward
  pass on :math:`x` (it waits for the upper part's backward pass, which needed only
  :math:`\hat h`: the two forward passes run in parallel);
* module: one regression step towards :math:`h`.

When the lower part's map is linear (a linear or deep-linear lower part) the
regression is realisable, :math:`\hat h \to h`, and the step tends to BP's step
(:func:`split_bp_step`, the same split trained on the true :math:`h`).

Every function is pure and takes the array namespace from its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .backend import get_namespace, namespace, to_device, to_host
from .nn import check_activation, check_loss, forward, loss_and_error, loss_value, predict
from .rules import get_rule, signal_updates, teaching_signals


@dataclass(frozen=True)
class SyntheticInputs:
    """Linear synthetic-input modules, one per member: ``weight`` ``(E, n_k, n_0)``, ``bias`` ``(E, n_k)``, ``lr``."""

    weight: object
    bias: object
    lr: object

    @property
    def n_members(self) -> int:
        return self.weight.shape[0]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def init_synthetic_inputs(n_inputs: int, n_outputs: int, n_members: int = 1, *, lr=0.1, backend: str = "numpy",
                          dtype: str = "float64", xp=None) -> SyntheticInputs:
    r"""Zero-initialised modules :math:`I(x) = P x + p` predicting an ``n_outputs``-wide activation.

    ``lr``: one non-negative learning rate for all members or one per member (``0``:
    a module that is never trained). Raises ``ValueError`` on non-positive widths or
    member count and on a negative or non-finite ``lr``.
    """
    n_inputs, n_outputs, n_members = (_check_positive_int(k, v) for k, v in
                                      (("n_inputs", n_inputs), ("n_outputs", n_outputs), ("n_members", n_members)))
    try:
        lrs = np.broadcast_to(np.asarray(lr, dtype=float), (n_members,)).copy()
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a non-negative finite number or one per member ({n_members}), got {lr!r}")
    if not np.all(np.isfinite(lrs)) or np.any(lrs < 0):
        raise ValueError(f"lr must be a non-negative finite number or one per member ({n_members}), got {lr!r}")
    xp = get_namespace(backend) if xp is None else xp
    return SyntheticInputs(to_device(np.zeros((n_members, n_outputs, n_inputs)), xp, dtype),
                           to_device(np.zeros((n_members, n_outputs)), xp, dtype), to_device(lrs, xp, dtype))


def _batched(x, n_members: int, xp):
    """``x`` as ``(E, B, n)``: a batch shared by all members is broadcast."""
    return xp.broadcast_to(x[None, ...], (n_members, *x.shape)) if x.ndim == 2 else x


def predict_input(module: SyntheticInputs, x):
    r"""The synthetic input :math:`I(x) = x P^T + p`, ``(E, B, n_k)``; ``x`` is ``(E, B, n_0)`` or ``(B, n_0)``."""
    xp = namespace(x, module.weight)
    x = _batched(x, module.n_members, xp)
    return xp.matmul(x, xp.matrix_transpose(module.weight)) + module.bias[:, None, :]


def regression_loss(module: SyntheticInputs, x, h):
    r""":math:`\ell^I = \frac{1}{2B}\sum_b\lVert I(x_b) - h_b\rVert^2` per member, ``(E,)``."""
    return loss_value(predict_input(module, x), h, "mse")


def relative_error(module: SyntheticInputs, x, h):
    r"""The prediction error :math:`\sum_b\lVert I(x_b) - h_b\rVert^2 / \sum_b\lVert h_b\rVert^2` per member."""
    xp = namespace(h)
    r = predict_input(module, x) - h
    return xp.sum(r * r, axis=(-2, -1)) / xp.sum(h * h, axis=(-2, -1))


def regression_gradients(module: SyntheticInputs, x, h):
    r"""``(dP, dp)``: the exact gradient of :func:`regression_loss` (module docstring)."""
    xp = namespace(x, h, module.weight)
    x = _batched(x, module.n_members, xp)
    r = predict_input(module, x) - h
    return xp.matmul(xp.matrix_transpose(r), x) / x.shape[-2], xp.mean(r, axis=-2)


def update_synthetic_inputs(module: SyntheticInputs, x, h) -> SyntheticInputs:
    """One regression step of every member's module towards the true activation ``h``."""
    xp = namespace(module.weight)
    d_weight, d_bias = regression_gradients(module, x, h)
    lr = module.lr
    return replace(module, weight=module.weight - xp.reshape(lr, (-1, 1, 1)) * d_weight,
                   bias=module.bias - xp.reshape(lr, (-1, 1)) * d_bias)


@dataclass(frozen=True)
class SplitStep:
    """One step of a split network: the updates of both parts, the module after the step, and diagnostics.

    ``loss`` is the upper part's loss on the input it ran on (``(E,)``); ``input_error`` the module's
    :func:`relative_error` before its update (``None`` when trained on the true input).
    """

    lower: list
    upper: list
    module: SyntheticInputs | None
    loss: object
    input_error: object = None


def _upper_and_gradient(upper, h_in, y, activation: str, loss: str):
    """The upper part's BP updates on ``h_in``, its loss, and the per-sample gradient ``g = W_{k+1}^T delta_{k+1}``."""
    xp = namespace(h_in, *upper)
    fwd = forward(upper, h_in, activation)
    values, error = loss_and_error(fwd.output, y, loss)
    signals = teaching_signals(get_rule("bp"), upper, fwd, error, activation)
    return signal_updates(signals, fwd.inputs), values, xp.matmul(signals[0], upper[0])


def _lower_updates(lower, x, g, activation: str):
    """BP of the output error ``g`` through the lower part at its forward pass on ``x``; also its output ``h``."""
    fwd = forward(lower, x, activation)
    signals = teaching_signals(get_rule("bp"), lower, fwd, g, activation)
    return signal_updates(signals, fwd.inputs), fwd.output


def _check_split(lower, upper, x, y, lower_activation, upper_activation, loss):
    check_activation(lower_activation)
    check_activation(upper_activation)
    check_loss(loss)
    if not lower or not upper:
        raise ValueError("both parts of the split need at least one layer")
    if lower[-1].shape[1] != upper[0].shape[2]:
        raise ValueError(f"the lower part's output width {lower[-1].shape[1]} must be the upper part's input width "
                         f"{upper[0].shape[2]}")
    if x.shape[-1] != lower[0].shape[2] or y.shape[-1] != upper[-1].shape[1] or x.shape[-2] != y.shape[-2]:
        raise ValueError(f"x must be (B, {lower[0].shape[2]}) and y (B, {upper[-1].shape[1]}) with the same B, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def split_bp_step(lower: Sequence, upper: Sequence, x, y, *, lower_activation: str = "linear",
                  upper_activation: str = "tanh", loss: str = "mse") -> SplitStep:
    """BP on the split network (the upper part waits for the true ``h``): exactly the gradient of the whole."""
    _check_split(lower, upper, x, y, lower_activation, upper_activation, loss)
    h = predict(list(lower), x, lower_activation)
    up, values, g = _upper_and_gradient(list(upper), h, y, upper_activation, loss)
    low, _ = _lower_updates(list(lower), x, g, lower_activation)
    return SplitStep(low, up, None, values)


def forward_unlocked_step(lower: Sequence, upper: Sequence, module: SyntheticInputs, x, y, *,
                          lower_activation: str = "linear", upper_activation: str = "tanh",
                          loss: str = "mse") -> SplitStep:
    """One forward-unlocked step (module docstring): the upper part on ``I(x)``, the lower part on its gradient."""
    _check_split(lower, upper, x, y, lower_activation, upper_activation, loss)
    if module.weight.shape[1:] != (upper[0].shape[2], lower[0].shape[2]):
        raise ValueError(f"the module must map {lower[0].shape[2]} inputs to {upper[0].shape[2]} outputs, got "
                         f"weight {tuple(module.weight.shape)}")
    h_hat = predict_input(module, x)  # available at once: the upper part does not wait for the lower one
    up, values, g = _upper_and_gradient(list(upper), h_hat, y, upper_activation, loss)
    low, h = _lower_updates(list(lower), x, g, lower_activation)
    error = relative_error(module, x, h)
    return SplitStep(low, up, update_synthetic_inputs(module, x, h), values, error)


@dataclass(frozen=True)
class SplitRun:
    """A full-batch run of a split network: final parts and module, and per-step curves ``(steps + 1, E)``.

    ``loss`` is the whole network's loss on the true path (upper on the lower part's ``h``);
    ``input_error`` the module's relative error (``None`` for BP).
    """

    lower: list
    upper: list
    module: SyntheticInputs | None
    loss: np.ndarray
    input_error: np.ndarray | None


def split_loss(lower, upper, x, y, *, lower_activation: str = "linear", upper_activation: str = "tanh",
               loss: str = "mse"):
    """The whole network's loss per member: the upper part on the lower part's true output."""
    return loss_value(predict(list(upper), predict(list(lower), x, lower_activation), upper_activation), y, loss)


def train_split(lower, upper, x, y, *, steps: int, lr: float, module: SyntheticInputs | None = None,
                lower_activation: str = "linear", upper_activation: str = "tanh", loss: str = "mse") -> SplitRun:
    """Full-batch gradient descent for ``steps`` steps: forward-unlocked with ``module``, BP without."""
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not np.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a non-negative finite number, got {lr!r}")
    lower, upper = list(lower), list(upper)
    acts = dict(lower_activation=lower_activation, upper_activation=upper_activation, loss=loss)
    losses, errors = [], []
    for _ in range(steps):
        losses.append(to_host(split_loss(lower, upper, x, y, **acts)))
        if module is None:
            step = split_bp_step(lower, upper, x, y, **acts)
        else:
            step = forward_unlocked_step(lower, upper, module, x, y, **acts)
            errors.append(to_host(step.input_error))
            module = step.module
        lower = [w - lr * d for w, d in zip(lower, step.lower)]
        upper = [w - lr * d for w, d in zip(upper, step.upper)]
    losses.append(to_host(split_loss(lower, upper, x, y, **acts)))
    if module is not None:
        errors.append(to_host(relative_error(module, x, predict(lower, x, lower_activation))))
    return SplitRun(lower, upper, module, np.array(losses), np.array(errors) if module is not None else None)
