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
from .divergence import DIVERGENCE_FACTOR
from .nn import check_activation, check_loss, loss_and_error, times_derivative

CONV_RULES = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "kp", "drtp")
LAYERWISE = ("fa", "usf", "frsf", "brsf", "kp")
DIRECT = ("dfa", "drtp")
#: Rules whose hidden layers learn from trained modules (:mod:`sim.conv_local`); their ``feedback`` is the modules.
LOCAL_RULES = ("sg", "cdni", "dgl")


@dataclass(frozen=True)
class ConvNet:
    """Kernels and dense weights of an ensemble, each convolution's ``(stride, padding)``, and optional biases.

    ``biases`` (or ``None``): one per layer, ``(E, O)`` for a convolution (one
    per output channel, shared by its positions) and ``(E, n_l)`` for a dense layer.
    """

    weights: tuple
    geometry: tuple  # ((stride_h, stride_w), (pad_h, pad_w)) per convolution, in order
    activation: str = "tanh"
    biases: tuple | None = None

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
                 activation="tanh", scale=1.0, xp=None, dtype="float64", bias=False, init="normal") -> ConvNet:
    r"""An ensemble of convolutional networks with weights of variance ``scale^2 / fan_in``.

    ``channels`` ``[C_0, C_1, ..., C_k]`` (``C_0`` the input's), one kernel
    size, stride and padding per convolution, ``dense`` the widths of the
    dense layers after the flattened last convolution (the last is the output),
    ``input_shape`` ``(H, W)``. Member ``m`` draws from its ``"init"`` stream.
    ``init="normal"``: Gaussian weights, zero biases (with ``bias``).
    ``init="uniform"``: PyTorch's default for ``Conv1d`` / ``Conv2d`` / ``Linear``,
    weights and biases uniform on :math:`\pm\,\mathrm{scale}/\sqrt{\mathrm{fan\_in}}`
    (variance ``scale^2 / (3 fan_in)``).
    """
    check_activation(activation)
    if init not in ("normal", "uniform"):
        raise ValueError(f"init must be 'normal' or 'uniform', got {init!r}")
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
    host_biases = [np.zeros((n_members, shape[0])) for shape in shapes]
    for m, rng in enumerate(rngs):
        for arr, arr_b, shape in zip(host, host_biases, shapes):
            fan_in = int(np.prod(shape[1:]))
            if init == "normal":
                arr[m] = rng.normal(0.0, scale / np.sqrt(fan_in), size=shape)
            else:
                bound = scale / np.sqrt(fan_in)
                arr[m] = rng.uniform(-bound, bound, size=shape)
                if bias:  # drawn only with biases, so that the weights of bias=False stay the same
                    arr_b[m] = rng.uniform(-bound, bound, size=shape[0])
    biases = tuple(to_device(b, xp, dtype) for b in host_biases) if bias else None
    return ConvNet(tuple(to_device(a, xp, dtype) for a in host), tuple(geometry), activation, biases)


def _hidden(a, activation):
    xp = namespace(a)
    return {"linear": lambda v: v, "relu": lambda v: xp.maximum(v, 0.0), "tanh": xp.tanh}[activation](a)


def forward(net: ConvNet, x):
    """Outputs ``(E, B, n_L)``, and per layer its input (patches for a convolution) and output ``h``."""
    xp = namespace(x, *net.weights)
    biases = net.biases
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
            if biases is not None:
                a = a + biases[i][:, None, :, None, None]
        else:
            if h.ndim == 5:
                h = xp.reshape(h, (n_members, h.shape[1], -1))
            inputs.append(h)
            shapes.append(None)
            a = xp.matmul(h, xp.matrix_transpose(w))
            if biases is not None:
                a = a + biases[i][:, None, :]
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
    r"""The updates ``dW_1 .. dW_L`` (kernels and dense weights) of ``rule`` on the batch ``(x, y)``, and the loss.

    ``feedback``: for ``fa`` / ``kp`` the backward kernels and matrices
    ``M_2 .. M_L`` (shapes of ``W_2 .. W_L``); for ``frsf`` / ``brsf`` the
    magnitudes ``R`` of those shapes; for ``dfa`` / ``drtp`` ``B_1 .. B_{L-1}``
    of shape ``(size_l, n_L)`` (``size_l`` the flattened layer output);
    ``bp`` and ``usf`` need none. See the module docstring for each signal.
    For ``sg``, ``cdni``, ``dgl`` (:data:`LOCAL_RULES`) ``feedback`` is the trained
    modules (:func:`sim.conv_local.init_conv_modules`) and their gradients
    follow the layers' in the list (:func:`sim.conv_local.local_updates`).
    With biases (``net.biases``), their updates follow the weights' in the
    returned list (``dW_1 .. dW_L, db_1 .. db_L``): :math:`\Delta b =
    \operatorname{mean}_b \sum_q \delta_{b,q}` for a convolution,
    :math:`\operatorname{mean}_b \delta_b` for a dense layer.
    """
    if rule in LOCAL_RULES:  # the modules' gradients follow in the list (sim.conv_local)
        from .conv_local import local_updates

        return local_updates(rule, net, x, y, loss=loss, modules=feedback)
    if rule not in CONV_RULES:
        raise ValueError(f"unknown rule {rule!r} for convolutional networks; allowed: "
                         f"{', '.join(CONV_RULES + LOCAL_RULES)}")
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
    if net.biases is not None:
        updates += [xp.sum(d, axis=(1, 3, 4)) / batch if d.ndim == 5 else xp.sum(d, axis=1) / batch for d in deltas]
    return updates, losses


def draw_conv_feedback(rule: str, net: ConvNet, input_shape, *, seed: int = 0, scale: float = 1.0):
    """Fixed random feedback for ``rule`` (``None`` for ``bp``, ``usf``), Gaussian, std ``scale / sqrt(fan)``.

    Layerwise rules: one array per ``W_2 .. W_L`` of its shape (``fan`` its
    fan-out, the size of the signal it carries down); direct rules: ``B_l``
    ``(size_l, n_L)`` (``fan = n_L``). Member ``m`` draws from its ``"feedback"`` stream.
    """
    if rule in ("bp", "usf"):
        return None
    if rule in LOCAL_RULES:
        raise ValueError(f"rule {rule!r} learns from trained modules: sim.conv_local.init_conv_modules")
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
                  record_every: int = 100, optimizer: str = "sgd", betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                  divergence_factor: float = DIVERGENCE_FACTOR) -> tuple[ConvNet, dict, list | None]:
    r"""Train every member of a convolutional ensemble with ``rule``, by SGD or Adam, as :func:`sim.train.train` does.

    ``x`` ``(N, C, H, W)`` and one-hot ``y`` ``(N, n_L)`` on the host (shared
    by the members); minibatches are drawn from the run's ``"batches"``
    stream of ``seed``. ``optimizer="sgd"``: :math:`W \leftarrow W - \mathrm{lr}
    (\Delta W + \mathrm{wd}\, W)`; ``"adam"``: Adam on the rule's updates
    (:mod:`sim.optim`, ``betas``, ``eps``), the weight decay decoupled
    (:math:`\mathrm{lr}\,\mathrm{wd}\, W` more); biases (``net.biases``) move
    alike, without decay. ``kp`` moves its backward kernels by the same step as
    the weights they mirror (:math:`-\mathrm{lr}(\Delta W + \mathrm{wd}\,B)` by
    SGD); ``brsf`` redraws its magnitudes before every step (member streams
    ``"feedback_batch"``). ``sg``, ``cdni``, ``dgl`` (:mod:`sim.conv_local`):
    ``feedback`` is their modules, which take a step by the same optimizer from
    the same forward pass (times their ``lr_scale``); the trained modules are
    returned as the last feedback.

    Every ``record_every`` steps (and at the end) each member is measured on
    ``test = (x, y)`` (default: the training data): ``loss`` and ``accuracy``
    ``(T, E)``, and ``gradient_angle`` ``(T, E, L)``, the angle in degrees
    between the rule's update of each layer's weights and BP's on that set
    (:func:`sim.metrics.layer_angles`; 0 for ``bp``).

    A member *diverges* (:mod:`sim.divergence`) when its training loss becomes
    non-finite or exceeds ``divergence_factor`` times its first loss, or its
    weights become non-finite (checked at every record): it is frozen from that
    step on, its recorded metrics are ``nan`` from then, and it is listed in
    ``record["diverged"]`` (:class:`sim.divergence.Divergence`, worded by
    :func:`sim.divergence.divergence_message`). A stop requested by a signal
    (:mod:`sim.interrupt`) is honoured between steps, the records so far kept.

    Returns the trained network, ``{"steps", "loss", "accuracy",
    "gradient_angle", "diverged"}`` (host arrays with ``T`` records, and the
    list of divergences) and the last feedback.
    """
    from types import SimpleNamespace

    from . import interrupt
    from .backend import check_seed, shared_rng, to_host
    from .divergence import (LOSS_EXCEEDED, LOSS_NON_FINITE, WEIGHTS_NON_FINITE, check_divergence_factor,
                             collect_divergences, mask_diverged)
    from .metrics import layer_angles
    from .nn import accuracy
    from .optim import OPTIMIZERS, adam_moments, adam_steps, check_adam
    from .stepper import sgd_step

    if rule in LOCAL_RULES:
        from .conv_local import check_modules

        check_modules(rule, net, feedback)
    elif rule not in CONV_RULES:
        raise ValueError(f"unknown rule {rule!r} for convolutional networks; allowed: "
                         f"{', '.join(CONV_RULES + LOCAL_RULES)}")
    if rule not in ("bp", "usf") and feedback is None:
        raise ValueError(f"rule {rule!r} needs feedback (see sim.conv.draw_conv_feedback)")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("record_every", record_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    check_seed(seed)
    beta1, beta2, eps = check_adam(betas, eps)
    factor = check_divergence_factor(divergence_factor)
    xp = namespace(*net.weights)
    dtype = str(net.weights[0].dtype).split(".")[-1]
    n_members, n_layers = net.weights[0].shape[0], len(net.weights)
    x_dev, y_dev = to_device(np.asarray(x), xp, dtype), to_device(np.asarray(y), xp, dtype)
    x_obs, y_obs = (x_dev, y_dev) if test is None else (to_device(np.asarray(test[0]), xp, dtype),
                                                          to_device(np.asarray(test[1]), xp, dtype))
    rng = shared_rng(seed, "batches")
    redraw = member_rngs(seed, n_members, "feedback_batch") if rule == "brsf" else None
    params = [xp.asarray(p, copy=True) for p in [*net.weights, *(net.biases or ())]]
    n_main = len(params)  # rules with modules (sim.conv_local) train them after the weights and biases
    if rule in LOCAL_RULES:
        params += [xp.asarray(p, copy=True) for p in feedback.arrays()]
    if rule == "kp" and feedback is not None:  # learned: a private copy (moved in place on numpy)
        feedback = [xp.asarray(b, copy=True) for b in feedback]
    moments = [xp.zeros_like(p) for _ in range(2) for p in params] if optimizer == "adam" else None
    alive = xp.ones((n_members,), dtype=xp.bool)
    first_bad = np.full(n_members, -1)
    reasons = np.zeros(n_members, dtype=np.int8)
    limit = None
    record = {"steps": [], "loss": [], "accuracy": [], "gradient_angle": []}

    def current():
        biases = None if net.biases is None else tuple(params[n_layers:n_main])
        return ConvNet(tuple(params[:n_layers]), net.geometry, net.activation, biases)

    def freeze(bad, step, code):  # host bookkeeping of the members found diverged at ``step``
        bad = to_host(bad) & (first_bad < 0)
        first_bad[bad], reasons[bad] = step, code
        return xp.asarray(first_bad < 0)

    def observe(step):
        nonlocal alive
        finite = xp.ones((n_members,), dtype=xp.bool)
        for p in params:
            finite = finite & xp.all(xp.isfinite(p), axis=tuple(range(1, p.ndim)))
        alive = alive & freeze(~finite, step, WEIGHTS_NON_FINITE)
        net_now = current()
        signals = feedback.with_arrays(params[n_main:]) if rule in LOCAL_RULES else feedback
        bp, losses = conv_updates("bp", net_now, x_obs, y_obs, loss=loss)
        own = bp if rule == "bp" else conv_updates(rule, net_now, x_obs, y_obs, loss=loss, feedback=signals)[0]
        record["steps"].append(step)
        record["loss"].append(to_host(losses))
        record["accuracy"].append(to_host(accuracy(forward(net_now, x_obs)[0], y_obs)))
        record["gradient_angle"].append(to_host(layer_angles(own[:n_layers], bp[:n_layers])))

    def records(diverged):
        out = {k: np.asarray(v) for k, v in record.items() if k != "steps"}
        return mask_diverged(out, record["steps"], diverged)

    order = rng.permutation(x.shape[0])
    cursor = 0
    try:
        with np.errstate(all="ignore"), interrupt.polling():
            for step in range(steps):
                interrupt.check()  # a signal stops the loop here, between whole steps
                if step % record_every == 0:
                    observe(step)
                    if not bool(xp.any(alive)):
                        break
                if cursor + batch_size > len(order):
                    order, cursor = rng.permutation(x.shape[0]), 0
                idx = xp.asarray(order[cursor:cursor + batch_size])
                cursor += batch_size
                if redraw is not None:
                    host = [np.stack([r.normal(0.0, 1.0 / np.sqrt(w.shape[1]), size=w.shape[1:]) for r in redraw])
                            for w in params[1:n_layers]]
                    feedback = [to_device(h, xp, dtype) for h in host]
                if rule in LOCAL_RULES:
                    feedback = feedback.with_arrays(params[n_main:])
                updates, losses = conv_updates(rule, current(), xp.take(x_dev, idx, axis=0),
                                               xp.take(y_dev, idx, axis=0), loss=loss, feedback=feedback)
                if limit is None:  # the first step sets the bound (none from a zero loss)
                    limit = xp.where(losses > 0, factor * losses, xp.full(losses.shape, np.inf, dtype=losses.dtype))
                bad = alive & ~(losses < limit)  # false for a nan or inf loss too
                if bool(xp.any(bad)):
                    code = xp.where(xp.isfinite(losses), xp.asarray(LOSS_EXCEEDED, dtype=xp.int8),
                                    xp.asarray(LOSS_NON_FINITE, dtype=xp.int8))
                    hit = to_host(bad) & (first_bad < 0)
                    first_bad[hit], reasons[hit] = step, to_host(code)[hit]
                    alive = alive & ~bad
                if moments is not None:
                    first, second = adam_moments(moments[:len(params)], moments[len(params):], updates, beta1, beta2)
                    moves = adam_steps(first, second, step + 1, xp.full((n_members,), float(lr), dtype=params[0].dtype),
                                       beta1, beta2, eps)
                    moments = first + second
                else:
                    moves = [lr * u for u in updates]
                if rule in LOCAL_RULES and feedback.lr_scale != 1.0:
                    moves = moves[:n_main] + [feedback.lr_scale * m for m in moves[n_main:]]
                if rule == "kp":  # B follows the step of the weight it mirrors, and decays alike
                    feedback = sgd_step(list(feedback), [m + lr * weight_decay * b for m, b in
                                                         zip(moves[1:n_layers], feedback)], alive)
                if weight_decay:
                    moves = [m + lr * weight_decay * w for m, w in zip(moves[:n_layers], params)] + moves[n_layers:]
                params = sgd_step(params, moves, alive)
            else:
                observe(steps)
    except interrupt.RunInterrupted:  # keep the records so far for the shell (sim.interrupt.journal)
        interrupt.record(f"cnn {rule}", SimpleNamespace(steps=np.asarray(record["steps"]), metrics=records([])))
        raise
    if rule in LOCAL_RULES:
        feedback = feedback.with_arrays(params[n_main:])
    diverged = collect_divergences(first_bad, reasons, factor)
    out = {"steps": np.asarray(record["steps"]), **records(diverged), "diverged": diverged}
    interrupt.record(f"cnn {rule}", SimpleNamespace(steps=out["steps"], metrics=records(diverged)))
    return current(), out, feedback
