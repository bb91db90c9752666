r"""Convolutional layers on the ensemble axis, and every rule's teaching signal through them.

A *convolutional network* here is a stack of convolutions (each followed by
the hidden activation) then dense layers, the last one linear. Shapes, with
``E`` the ensemble axis:

* input ``x``: ``(E, B, C, H, W)`` or ``(B, C, H, W)`` (shared); a 1-D signal
  is ``H = 1``;
* kernel ``K_l``: ``(E, O, C, kh, kw)``; stride ``(sh, sw)``; zero padding
  ``(ph, pw)``; output ``(E, B, O, H', W')`` with
  :math:`H' = \lfloor (H + 2p_h - k_h)/s_h \rfloor + 1`;
* dense weights after the last convolution: ``(E, n_out, n_in)`` as in
  :mod:`sim.rules`, the convolution's output flattened in C order.

A convolution is an im2col product: the patches
:math:`P_{b,q} \in \mathbb R^{C k_h k_w}` of every output position ``q``
(gathered by :math:`k_h k_w` strided slices) times
:math:`K \in \mathbb R^{O \times C k_h k_w}`, one batched matmul over ``E``.
Its weight update is :math:`\Delta K = \operatorname{mean}_b \sum_q
\delta_{b,q} P_{b,q}^T`, and the signal it passes down through a kernel
``M`` is the transposed convolution: :math:`\partial P = \delta M`, added
back into the padded input slice by slice. For BP ``M = K``; the other rules
(as biotorch defines them for convolutions) use, with the shape of ``K``:

========  ================================================================
rule      backward kernel / hidden signal of a layer below
========  ================================================================
``fa``    ``M = B``, fixed random
``usf``   ``M = sign(K)``
``frsf``  ``M = |R| * sign(K)``, ``R`` fixed (``brsf``: redrawn per batch)
``kp``    ``M = B`` learned: ``B <- B - lr (dK + wd B)``
``dfa``   :math:`\delta_l = (B_l e) \odot f'`, ``B_l`` ``(size_l, n_L)``
``drtp``  :math:`\delta_l = (B_l (-y)) \odot f'`
========  ================================================================

Dense layers below a dense layer use the same backward matrices (``M`` of the
shape of ``W``). Note that here *every* feedback has the shape of the forward
weight it replaces (biotorch's convention), unlike :mod:`sim.rules`, whose FA
matrices ``B_{l+1}`` are ``W_{l+1}^T``-shaped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import member_rngs, namespace, to_device
from .nn import check_activation, check_loss, loss_and_error, times_derivative

CONV_RULES = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "kp", "drtp")
LAYERWISE = ("fa", "usf", "frsf", "brsf", "kp")
DIRECT = ("dfa", "drtp")


@dataclass(frozen=True)
class ConvNet:
    """Kernels and dense weights of an ensemble, and each convolution's ``(stride, padding)``."""

    weights: tuple
    geometry: tuple  # ((stride_h, stride_w), (pad_h, pad_w)) per convolution, in order
    activation: str = "tanh"

    @property
    def n_conv(self) -> int:
        return len(self.geometry)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    r""":math:`\lfloor (n + 2p - k)/s \rfloor + 1`; ``ValueError`` when the kernel does not fit."""
    out = (size + 2 * padding - kernel) // stride + 1
    if kernel > size + 2 * padding or out < 1:
        raise ValueError(f"kernel {kernel} does not fit an input of {size} with padding {padding}")
    return out


def patches(x, kernel_shape, stride, padding):
    """im2col: ``(E, B * H' * W', C * kh * kw)`` patches of ``x`` ``(E, B, C, H, W)``, and ``(H', W')``."""
    xp = namespace(x)
    n_members, batch, channels, height, width = x.shape
    kh, kw = kernel_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    if ph or pw:
        padded = xp.zeros((n_members, batch, channels, height + 2 * ph, width + 2 * pw), dtype=x.dtype)
        padded[..., ph:ph + height, pw:pw + width] = x
    else:
        padded = x
    cols = [padded[..., a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw] for a in range(kh) for b in range(kw)]
    stacked = xp.stack(cols, axis=-1)  # (E, B, C, H', W', kh*kw)
    stacked = xp.permute_dims(stacked, (0, 1, 3, 4, 2, 5))  # (E, B, H', W', C, kh*kw)
    return xp.reshape(stacked, (n_members, batch * oh * ow, channels * kh * kw)), (oh, ow)


def conv(x, kernel, stride=1, padding=0):
    """The convolution (cross-correlation) of ``x`` ``(E, B, C, H, W)`` with ``kernel`` ``(E, O, C, kh, kw)``."""
    xp = namespace(x, kernel)
    stride, padding = _pair(stride), _pair(padding)
    cols, (oh, ow) = patches(x, kernel.shape[-2:], stride, padding)
    n_members, n_out = kernel.shape[0], kernel.shape[1]
    out = xp.matmul(cols, xp.matrix_transpose(xp.reshape(kernel, (n_members, n_out, -1))))  # (E, B*P, O)
    out = xp.reshape(out, (n_members, x.shape[1], oh, ow, n_out))
    return xp.permute_dims(out, (0, 1, 4, 2, 3))


def conv_transpose(delta, kernel, input_shape, stride=1, padding=0):
    """The signal a convolution passes down: the adjoint of ``conv(., kernel)`` applied to ``delta``.

    ``delta`` ``(E, B, O, H', W')``, ``kernel`` ``(E, O, C, kh, kw)``,
    ``input_shape`` ``(H, W)``; returns ``(E, B, C, H, W)`` with
    :math:`\\langle \\mathrm{conv}(x), \\delta\\rangle = \\langle x, \\mathrm{conv\\_transpose}(\\delta)\\rangle`.
    """
    xp = namespace(delta, kernel)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    n_members, batch, n_out, oh, ow = delta.shape
    channels, kh, kw = kernel.shape[2:]
    height, width = input_shape
    rows = xp.reshape(xp.permute_dims(delta, (0, 1, 3, 4, 2)), (n_members, batch * oh * ow, n_out))
    dcols = xp.matmul(rows, xp.reshape(kernel, (n_members, n_out, -1)))  # (E, B*P, C*kh*kw)
    dcols = xp.reshape(dcols, (n_members, batch, oh, ow, channels, kh * kw))
    dcols = xp.permute_dims(dcols, (0, 1, 4, 2, 3, 5))  # (E, B, C, H', W', kh*kw)
    grad = xp.zeros((n_members, batch, channels, height + 2 * ph, width + 2 * pw), dtype=delta.dtype)
    for j, (a, b) in enumerate((a, b) for a in range(kh) for b in range(kw)):
        grad[..., a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw] += dcols[..., j]
    return grad[..., ph:ph + height, pw:pw + width]


def kernel_update(delta, cols, kernel_shape):
    r""":math:`\Delta K = \operatorname{mean}_b \sum_q \delta_{b,q} P_{b,q}^T`, shaped like the kernel."""
    xp = namespace(delta, cols)
    n_members, batch, n_out = delta.shape[:3]
    rows = xp.reshape(xp.permute_dims(delta, (0, 1, 3, 4, 2)), (n_members, -1, n_out))
    return xp.reshape(xp.matmul(xp.matrix_transpose(rows), cols), kernel_shape) / batch


def init_convnet(channels, kernels, strides, paddings, dense, input_shape, n_members=1, *, seed=0,
                 activation="tanh", scale=1.0, xp=None, dtype="float64") -> ConvNet:
    """An ensemble of convolutional networks with Gaussian weights of variance ``scale^2 / fan_in``.

    ``channels`` ``[C_0, C_1, ..., C_k]`` (``C_0`` the input's), one kernel
    size, stride and padding per convolution, ``dense`` the widths of the
    dense layers after the flattened last convolution (the last is the output),
    ``input_shape`` ``(H, W)``. Member ``m`` draws from its ``"init"`` stream.
    """
    check_activation(activation)
    if xp is None:
        from .backend import get_namespace

        xp = get_namespace("numpy")
    rngs = member_rngs(seed, n_members, "init")
    shapes, geometry = [], []
    height, width = input_shape
    for c_in, c_out, k, s, p in zip(channels[:-1], channels[1:], kernels, strides, paddings):
        k, s, p = _pair(k), _pair(s), _pair(p)
        shapes.append((c_out, c_in, *k))
        geometry.append((s, p))
        height, width = output_size(height, k[0], s[0], p[0]), output_size(width, k[1], s[1], p[1])
    sizes = [channels[-1] * height * width, *dense]
    shapes += [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    host = [np.empty((n_members, *shape)) for shape in shapes]
    for m, rng in enumerate(rngs):
        for arr, shape in zip(host, shapes):
            fan_in = int(np.prod(shape[1:]))
            arr[m] = rng.normal(0.0, scale / np.sqrt(fan_in), size=shape)
    return ConvNet(tuple(to_device(a, xp, dtype) for a in host), tuple(geometry), activation)


def _hidden(a, activation):
    xp = namespace(a)
    return {"linear": lambda v: v, "relu": lambda v: xp.maximum(v, 0.0), "tanh": xp.tanh}[activation](a)


def forward(net: ConvNet, x):
    """Outputs ``(E, B, n_L)``, and per layer its input (patches for a convolution) and output ``h``."""
    xp = namespace(x, *net.weights)
    n_members = net.weights[0].shape[0]
    h = x if x.ndim == 5 else xp.broadcast_to(x, (n_members, *x.shape))
    inputs, outputs, shapes = [], [], []
    for i, w in enumerate(net.weights):
        if i < net.n_conv:
            stride, padding = net.geometry[i]
            cols, (oh, ow) = patches(h, w.shape[-2:], stride, padding)
            shapes.append(h.shape[-2:])
            inputs.append(cols)
            a = xp.reshape(xp.matmul(cols, xp.matrix_transpose(xp.reshape(w, (n_members, w.shape[1], -1)))),
                           (n_members, h.shape[1], oh, ow, w.shape[1]))
            a = xp.permute_dims(a, (0, 1, 4, 2, 3))
        else:
            if h.ndim == 5:
                h = xp.reshape(h, (n_members, h.shape[1], -1))
            inputs.append(h)
            shapes.append(None)
            a = xp.matmul(h, xp.matrix_transpose(w))
        h = a if i == len(net.weights) - 1 else _hidden(a, net.activation)
        outputs.append(h)
    return outputs[-1], inputs, outputs, shapes


def backward_kernels(rule: str, weights, feedback) -> list:
    """The backward kernels ``M_2 .. M_L`` (shapes of ``W_2 .. W_L``) of a layerwise rule."""
    xp = namespace(*weights)
    if rule == "bp":
        return list(weights[1:])
    if rule in ("fa", "kp"):
        return list(feedback)
    if rule == "usf":
        return [xp.sign(w) for w in weights[1:]]
    return [xp.abs(r) * xp.sign(w) for r, w in zip(feedback, weights[1:])]  # frsf, brsf


def conv_updates(rule: str, net: ConvNet, x, y, *, loss: str = "ce", feedback=None):
    """The updates ``dW_1 .. dW_L`` (kernels and dense weights) of ``rule`` on the batch ``(x, y)``, and the loss.

    ``feedback``: for ``fa`` / ``kp`` the backward kernels and matrices
    ``M_2 .. M_L`` (shapes of ``W_2 .. W_L``); for ``frsf`` / ``brsf`` the
    magnitudes ``R`` of those shapes; for ``dfa`` / ``drtp`` ``B_1 .. B_{L-1}``
    of shape ``(size_l, n_L)`` (``size_l`` the flattened layer output);
    ``bp`` and ``usf`` need none. See the module docstring for each signal.
    """
    if rule not in CONV_RULES:
        raise ValueError(f"unknown rule {rule!r} for convolutional networks; allowed: {', '.join(CONV_RULES)}")
    check_loss(loss)
    if rule not in ("bp", "usf") and feedback is None:
        raise ValueError(f"rule {rule!r} needs feedback (see sim.conv.draw_conv_feedback)")
    xp = namespace(x, *net.weights)
    y_hat, inputs, outputs, shapes = forward(net, x)
    batch = y_hat.shape[1]
    losses, error = loss_and_error(y_hat, y, loss)
    n_layers = len(net.weights)
    deltas = [None] * n_layers
    deltas[-1] = error
    back = backward_kernels(rule, net.weights, feedback) if rule not in DIRECT else None
    for i in range(n_layers - 2, -1, -1):
        out_shape = outputs[i].shape
        if rule in DIRECT:
            source = error if rule == "dfa" else -xp.broadcast_to(xp.astype(y, error.dtype), error.shape)
            signal = xp.reshape(xp.matmul(source, xp.matrix_transpose(feedback[i])), out_shape)
        elif i + 1 < net.n_conv:  # the layer above is a convolution
            stride, padding = net.geometry[i + 1]
            signal = conv_transpose(deltas[i + 1], back[i], shapes[i + 1], stride, padding)
        else:
            signal = xp.reshape(xp.matmul(deltas[i + 1], back[i]), out_shape)
        deltas[i] = times_derivative(signal, outputs[i], net.activation)
    updates = []
    for i, (w, delta) in enumerate(zip(net.weights, deltas)):
        if i < net.n_conv:
            updates.append(kernel_update(delta, inputs[i], w.shape))
        else:
            updates.append(xp.matmul(xp.matrix_transpose(delta), inputs[i]) / batch)
    return updates, losses


def draw_conv_feedback(rule: str, net: ConvNet, input_shape, *, seed: int = 0, scale: float = 1.0):
    """Fixed random feedback for ``rule`` (``None`` for ``bp``, ``usf``), Gaussian, std ``scale / sqrt(fan)``.

    Layerwise rules: one array per ``W_2 .. W_L`` of its shape (``fan`` its
    fan-out, the size of the signal it carries down); direct rules: ``B_l``
    ``(size_l, n_L)`` (``fan = n_L``). Member ``m`` draws from its ``"feedback"`` stream.
    """
    if rule in ("bp", "usf"):
        return None
    xp = namespace(*net.weights)
    n_members = net.weights[0].shape[0]
    if rule in DIRECT:
        x = xp.zeros((1, net.weights[0].shape[2], *input_shape), dtype=net.weights[0].dtype)
        _, _, outputs, _ = forward(ConvNet(tuple(w[:1] for w in net.weights), net.geometry, net.activation), x)
        n_out = outputs[-1].shape[-1]
        shapes = [(int(np.prod(o.shape[2:])), n_out) for o in outputs[:-1]]
        fans = [n_out] * len(shapes)
    else:
        shapes = [tuple(w.shape[1:]) for w in net.weights[1:]]
        fans = [s[0] for s in shapes]
    host = [np.empty((n_members, *shape)) for shape in shapes]
    for m, rng in enumerate(member_rngs(seed, n_members, "feedback")):
        for arr, shape, fan in zip(host, shapes, fans):
            arr[m] = rng.normal(0.0, scale / np.sqrt(fan), size=shape)
    return [to_device(a, xp, str(net.weights[0].dtype).split(".")[-1]) for a in host]


def train_convnet(net: ConvNet, x, y, *, rule: str, steps: int, lr: float, batch_size: int, feedback=None,
                  seed: int = 0, weight_decay: float = 0.0, loss: str = "ce", test=None,
                  record_every: int = 100) -> tuple[ConvNet, dict, list | None]:
    r"""SGD on every member of a convolutional ensemble with ``rule``: ``W <- W - lr (dW + wd W)``.

    ``x`` ``(N, C, H, W)`` and one-hot ``y`` ``(N, n_L)`` on the host (shared
    by the members); minibatches are drawn from the run's ``"batches"``
    stream of ``seed``. ``kp`` moves its backward kernels by
    :math:`-\mathrm{lr}(\Delta W + \mathrm{wd}\,B)`; ``brsf`` redraws its
    magnitudes before every step (member streams ``"feedback_batch"``).
    Every ``record_every`` steps (and at the end) the loss and accuracy of each
    member on ``test = (x, y)`` (default: the training data) are recorded.
    Returns the trained network, ``{"steps", "loss", "accuracy"}`` (host
    arrays ``(T,)``, ``(T, E)``, ``(T, E)``) and the last feedback.
    Members are not checked for divergence (their metrics become ``nan``).
    """
    from .backend import shared_rng, to_host
    from .nn import accuracy

    xp = namespace(*net.weights)
    dtype = str(net.weights[0].dtype).split(".")[-1]
    x_dev, y_dev = to_device(np.asarray(x), xp, dtype), to_device(np.asarray(y), xp, dtype)
    x_obs, y_obs = (x_dev, y_dev) if test is None else (to_device(np.asarray(test[0]), xp, dtype),
                                                          to_device(np.asarray(test[1]), xp, dtype))
    rng = shared_rng(seed, "batches")
    redraw = member_rngs(seed, net.weights[0].shape[0], "feedback_batch") if rule == "brsf" else None
    weights = [xp.asarray(w, copy=True) for w in net.weights]
    record = {"steps": [], "loss": [], "accuracy": []}

    def observe(step):
        current = ConvNet(tuple(weights), net.geometry, net.activation)
        y_hat = forward(current, x_obs)[0]
        losses, _ = loss_and_error(y_hat, y_obs, loss)
        record["steps"].append(step)
        record["loss"].append(to_host(losses))
        record["accuracy"].append(to_host(accuracy(y_hat, y_obs)))

    order = rng.permutation(x.shape[0])
    cursor = 0
    for step in range(steps):
        if step % record_every == 0:
            observe(step)
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(x.shape[0]), 0
        idx = xp.asarray(order[cursor:cursor + batch_size])
        cursor += batch_size
        if redraw is not None:
            host = [np.stack([r.normal(0.0, 1.0 / np.sqrt(w.shape[1]), size=w.shape[1:]) for r in redraw])
                    for w in weights[1:]]
            feedback = [to_device(h, xp, dtype) for h in host]
        current = ConvNet(tuple(weights), net.geometry, net.activation)
        updates, _ = conv_updates(rule, current, xp.take(x_dev, idx, axis=0), xp.take(y_dev, idx, axis=0),
                                  loss=loss, feedback=feedback)
        if rule == "kp":
            feedback = [b - lr * (u + weight_decay * b) for b, u in zip(feedback, updates[1:])]
        weights = [w - lr * (u + weight_decay * w) for w, u in zip(weights, updates)]
    observe(steps)
    out = {k: np.asarray(v) for k, v in record.items()}
    return ConvNet(tuple(weights), net.geometry, net.activation), out, feedback
