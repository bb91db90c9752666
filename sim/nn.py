r"""Forward pass, activations and losses of ensembles of MLPs (pure functions).

Conventions (see DESIGN.md):

* weight ``W_l`` has shape ``(E, n_l, n_{l-1})``, bias ``b_l`` shape ``(E, n_l)``;
* a batch ``x`` is ``(E, B, n_0)`` or ``(B, n_0)`` (shared by all members);
* pre-activation :math:`a_l = h_{l-1} W_l^T + b_l`, hidden output
  :math:`h_l = f(a_l)`, and the output layer is linear: :math:`\hat y = a_L`;
* ``mse``: :math:`L = \frac{1}{2B}\sum_b \lVert \hat y_b - y_b\rVert^2`;
  ``ce``: softmax cross-entropy averaged over the batch, ``y`` one-hot.

The output error :math:`e = \partial (B L) / \partial \hat y` is
:math:`\hat y - y` for ``mse`` and :math:`\mathrm{softmax}(\hat y) - y` for
``ce``; a rule's weight update is the batch mean of
:math:`\delta_l h_{l-1}^T`, so that for BP it is exactly :math:`\partial L/\partial W_l`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from array_api_compat import device

from .backend import namespace

ACTIVATIONS = ("linear", "relu", "tanh")
LOSSES = ("mse", "ce")


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return name


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return name


def activate(a, activation: str):
    """The hidden activation :math:`f(a)`."""
    xp = namespace(a)
    if activation == "linear":
        return a
    if activation == "relu":
        return xp.maximum(a, xp.zeros((), dtype=a.dtype, device=device(a)))
    if activation == "tanh":
        return xp.tanh(a)
    raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")


def activation_derivative(a, activation: str):
    """The derivative :math:`f'(a)` at the pre-activation ``a`` (``relu'(0) = 0``)."""
    xp = namespace(a)
    if activation == "linear":
        return xp.ones_like(a)
    if activation == "relu":
        return xp.astype(a > 0, a.dtype)
    if activation == "tanh":
        t = xp.tanh(a)
        return 1 - t * t
    raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")


def times_derivative(signal, h, activation: str):
    """``signal * f'(a)``, with ``f'`` from the layer's output ``h = f(a)``, in place on ``signal``.

    ``relu``: :math:`f' = [h > 0]` (``relu'(0) = 0``); ``tanh``: :math:`f' = 1 - h^2`
    (no second ``tanh``); ``linear``: ``signal`` itself. Bit for bit
    ``signal * activation_derivative(a, activation)``. ``signal`` must be a
    new array: when it has the full shape it is overwritten.
    """
    xp = namespace(signal, h)
    if activation == "linear":
        return signal
    if activation == "relu":
        derivative = xp.astype(h > 0, signal.dtype)
    elif activation == "tanh":
        derivative = 1 - h * h
    else:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if signal.shape != derivative.shape:
        return signal * derivative
    signal *= derivative  # x * y == y * x exactly
    return signal


@dataclass(frozen=True)
class Forward:
    """What a forward pass leaves for the learning rules.

    Attributes
    ----------
    inputs : list
        ``h_0 .. h_{L-1}``: the input of each layer (``h_0 = x``).
    preactivations : list
        ``a_1 .. a_L``; the last one is the output ``y_hat``.
    """

    inputs: list
    preactivations: list

    @property
    def output(self):
        return self.preactivations[-1]


def forward(weights, x, activation: str = "linear", biases=None) -> Forward:
    """Run the ensemble forward on ``x`` and keep what the rules need."""
    xp = namespace(x, *weights)
    h = x
    inputs, preacts = [], []
    n_layers = len(weights)
    for i, w in enumerate(weights):
        inputs.append(h)
        a = xp.matmul(h, xp.matrix_transpose(w))
        if biases is not None:
            a = a + biases[i][:, None, :]
        preacts.append(a)
        if i < n_layers - 1:
            h = activate(a, activation)
    return Forward(inputs, preacts)


def predict(weights, x, activation: str = "linear", biases=None):
    """The network output ``y_hat`` of shape ``(E, B, n_L)``."""
    return forward(weights, x, activation, biases).output


def _log_softmax(z):
    xp = namespace(z)
    z = z - xp.max(z, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def loss_value(y_hat, y, loss: str = "mse"):
    """The loss of each member, shape ``(E,)`` (see the module docstring)."""
    batch = y_hat.shape[-2]
    if loss == "mse":
        d = y_hat - y
        return _sample_sum(d, d) / (2 * batch)
    if loss == "ce":
        return -_sample_sum(y, _log_softmax(y_hat)) / batch
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")


def output_error(y_hat, y, loss: str = "mse"):
    r"""Per-sample output error :math:`e_b = B\,\partial L/\partial \hat y_b`."""
    xp = namespace(y_hat, y)
    if loss == "mse":
        return y_hat - y
    if loss == "ce":
        return xp.exp(_log_softmax(y_hat)) - y
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")


def loss_and_error(y_hat, y, loss: str = "mse"):
    r"""``(loss_value(y_hat, y, loss), output_error(y_hat, y, loss))``, sharing their common work.

    Bit for bit the two functions' results: ``mse`` computes :math:`\hat y - y`
    once, ``ce`` the log-softmax once.
    """
    xp = namespace(y_hat, y)
    batch = y_hat.shape[-2]
    if loss == "mse":
        d = y_hat - y
        return _sample_sum(d, d) / (2 * batch), d
    if loss == "ce":
        log_p = _log_softmax(y_hat)
        return -_sample_sum(y, log_p) / batch, xp.exp(log_p) - y
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")


def _sample_sum(u, v):
    r""":math:`\sum_{b,j} u_{bj} v_{bj}` over the last two axes, leading axes broadcast.

    One dot product per member over the flattened ``(B, n)`` block
    (``vecdot``: a BLAS dot on numpy) instead of a product array and a sum.
    """
    xp = namespace(u, v)
    return xp.vecdot(xp.reshape(u, (*u.shape[:-2], -1)), xp.reshape(v, (*v.shape[:-2], -1)))


def accuracy(y_hat, y):
    """Fraction of samples whose arg-max output matches the one-hot target, per member."""
    xp = namespace(y_hat, y)
    hit = xp.argmax(y_hat, axis=-1) == xp.argmax(y, axis=-1)
    return xp.mean(xp.astype(hit, y_hat.dtype), axis=-1)


def matmul_flops(sizes, n_members: int, batch: int) -> float:
    """FLOPs of one forward pass of an ensemble: ``sum_l 2 E B n_l n_{l-1}``."""
    return float(sum(2 * n_members * batch * a * b for a, b in zip(sizes[:-1], sizes[1:])))


def degrees(radians):
    return radians * (180.0 / math.pi)
