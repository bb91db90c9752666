r"""Patch networks: convolutions with kernel = stride = s, as a reshape plus a batched matmul.

A patch convolution cuts a map :math:`h` of shape ``(..., N, H, W, C)`` into its
non-overlapping :math:`s \times s` patches (:func:`extract_patches`), a
``(..., N, H/s, W/s, s*s*C)`` array whose last axis is the patch in row-major
order (row, column, channel), and multiplies every patch by the member's kernel
:math:`W \in \mathbb R^{k \times s^2 C}`:

.. math:: a_{n,p} = W\, x_{n,p} + b, \qquad h_{n,p} = \mathrm{relu}(a_{n,p}).

Weights carry the ensemble axis first: a kernel is ``(E, k, s*s*C)``, a bias
``(E, k)``; an input is ``(N, H, W, C)`` (shared by all members) or
``(E, N, H, W, C)`` (one per member, for example one-hot codes that differ
between members). Every function takes the array namespace from its inputs, so
the same code runs on numpy, CuPy and array-api-strict.

A :class:`PatchNetwork` stacks ``L`` patch convolutions with ReLU and ends in a
linear readout to ``K`` classes:

``flatten``
    :math:`z = A\,\mathrm{vec}(h_L) + c`, ``A`` ``(E, K, P_L k_L)`` (the end-to-end
    network and the auxiliary classifiers);
``pool``
    :math:`z = A\, \tfrac1{P_L}\sum_p h_{L,p} + c`, ``A`` ``(E, K, k_L)``;
``patch``
    one linear classifier applied to every patch, :math:`u_p = A h_{L,p} + c`, each
    patch trained to predict the image's label: the loss is the mean over
    patches of the cross-entropy, :math:`\frac1{NP}\sum_{n,p} \mathrm{CE}(u_{n,p}, y_n)`,
    and the image's logits are :math:`z = \frac1P \sum_p \log\mathrm{softmax}(u_p)`.
    At the optimum :math:`\mathrm{softmax}(u_p)` is the label distribution given
    the patch, :math:`P(y \mid x_p)` (the layerwise algorithm's embedding).

Losses are softmax cross-entropies averaged over the batch (and patches), and
:func:`patch_gradients` returns their exact gradients (back-propagation through
the reshapes: :func:`fold_patches` is the adjoint of :func:`extract_patches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from array_api_compat import is_numpy_namespace

from .backend import get_namespace, member_rngs, namespace, shared_rng, to_device, to_host
from .divergence import (
    DIVERGENCE_FACTOR,
    LOSS_EXCEEDED,
    LOSS_NON_FINITE,
    WEIGHTS_NON_FINITE,
    check_divergence_factor,
    collect_divergences,
)

READOUTS = ("flatten", "pool", "patch")


def _check_patch_size(s) -> int:
    if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
        raise ValueError(f"patch size must be a positive integer, got {s!r}")
    return int(s)


def extract_patches(x, s: int):
    r"""Non-overlapping :math:`s \times s` patches of maps ``(..., H, W, C)``.

    Returns ``(..., H/s, W/s, s*s*C)``; entry ``[..., i, j, (r*s + q)*C + c]`` is
    ``x[..., i*s + r, j*s + q, c]``. ``H`` and ``W`` must be multiples of ``s``.
    """
    s = _check_patch_size(s)
    xp = namespace(x)
    if x.ndim < 3:
        raise ValueError(f"maps must have at least 3 axes (..., H, W, C), got shape {tuple(x.shape)}")
    *lead, h, w, c = x.shape
    if h % s or w % s:
        raise ValueError(f"map of {h} x {w} cannot be cut into {s} x {s} patches: H and W must be multiples of {s}")
    n_lead = len(lead)
    y = xp.reshape(x, (*lead, h // s, s, w // s, s, c))
    axes = tuple(range(n_lead)) + tuple(n_lead + a for a in (0, 2, 1, 3, 4))
    y = xp.permute_dims(y, axes)
    return xp.reshape(y, (*lead, h // s, w // s, s * s * c))


def fold_patches(patches, s: int, channels: int):
    """Inverse (and adjoint) of :func:`extract_patches`: ``(..., H/s, W/s, s*s*C)`` -> ``(..., H, W, C)``."""
    s = _check_patch_size(s)
    xp = namespace(patches)
    *lead, ph, pw, d = patches.shape
    if d != s * s * channels:
        raise ValueError(f"patches of size {d} do not hold {s} x {s} x {channels} values")
    n_lead = len(lead)
    y = xp.reshape(patches, (*lead, ph, pw, s, s, channels))
    axes = tuple(range(n_lead)) + tuple(n_lead + a for a in (0, 2, 1, 3, 4))
    y = xp.permute_dims(y, axes)
    return xp.reshape(y, (*lead, ph * s, pw * s, channels))


def _as_members(x):
    """``(N, H, W, C)`` shared or ``(E, N, H, W, C)`` per member -> a leading axis of 1 or E (no copy)."""
    xp = namespace(x)
    return xp.reshape(x, (1, *x.shape)) if x.ndim == 4 else x


def patch_conv(weights, x, s: int, bias=None):
    r"""Pre-activations :math:`a_{n,p} = W x_{n,p} + b` of a patch convolution.

    Parameters
    ----------
    weights : array ``(E, k, s*s*C)``
    x : array ``(N, H, W, C)`` or ``(E, N, H, W, C)``
    s : int
        Kernel size = stride.
    bias : array ``(E, k)``, optional

    Returns
    -------
    array ``(E, N, H/s, W/s, k)``
    """
    xp = namespace(weights, x)
    if weights.ndim != 3:
        raise ValueError(f"kernel must have shape (E, k, s*s*C), got {tuple(weights.shape)}")
    if x.ndim not in (4, 5):
        raise ValueError(f"input must be (N, H, W, C) or (E, N, H, W, C), got shape {tuple(x.shape)}")
    if weights.shape[2] != s * s * x.shape[-1]:
        raise ValueError(f"kernel expects patches of {weights.shape[2]} values, but {s} x {s} patches of "
                         f"{x.shape[-1]} channels have {s * s * x.shape[-1]}")
    if x.ndim == 5 and x.shape[0] != weights.shape[0]:
        raise ValueError(f"per-member input has {x.shape[0]} members, the kernel {weights.shape[0]}")
    p = extract_patches(_as_members(x), s)
    lead = p.shape[:-1]
    flat = xp.reshape(p, (p.shape[0], -1, p.shape[-1]))
    a = xp.matmul(flat, xp.matrix_transpose(weights))
    if bias is not None:
        a = a + bias[:, None, :]
    return xp.reshape(a, (weights.shape[0], *lead[1:], weights.shape[1]))


@dataclass(frozen=True)
class PatchNetwork:
    """An ensemble of ``E`` patch networks (see the module docstring).

    Attributes
    ----------
    kernels : tuple
        ``W_l`` ``(E, k_l, s*s*C_{l-1})`` for ``l = 1 .. L``.
    biases : tuple
        ``b_l`` ``(E, k_l)``.
    readout : array
        ``A``: ``(E, K, P_L * k_L)`` for ``flatten``, ``(E, K, k_L)`` otherwise.
    readout_bias : array
        ``c`` ``(E, K)``.
    patch_size : int
    input_shape : tuple
        ``(H, W, C)``.
    kind : {"flatten", "pool", "patch"}
        The readout (see the module docstring).
    """

    kernels: tuple
    biases: tuple
    readout: object
    readout_bias: object
    patch_size: int
    input_shape: tuple
    kind: str = "flatten"

    @property
    def n_members(self) -> int:
        return int(self.readout.shape[0])

    @property
    def n_layers(self) -> int:
        return len(self.kernels)

    @property
    def n_classes(self) -> int:
        return int(self.readout.shape[1])

    def map_shapes(self) -> list[tuple[int, int, int]]:
        """``(H_l, W_l, C_l)`` of the input and of every layer's output map."""
        h, w, c = self.input_shape
        shapes = [(h, w, c)]
        for k in self.kernels:
            h, w = h // self.patch_size, w // self.patch_size
            shapes.append((h, w, int(k.shape[1])))
        return shapes

    @property
    def parameters(self) -> tuple:
        return (*self.kernels, *self.biases, self.readout, self.readout_bias)

    def with_parameters(self, params: Sequence) -> PatchNetwork:
        n = self.n_layers
        return replace(self, kernels=tuple(params[:n]), biases=tuple(params[n:2 * n]), readout=params[2 * n],
                       readout_bias=params[2 * n + 1])

    def to_host(self) -> PatchNetwork:
        return self.with_parameters([to_host(p) for p in self.parameters])


def init_patch_network(input_shape: Sequence[int], widths: Sequence[int], n_classes: int, n_members: int = 1, *,
                       patch_size: int, seed: int = 0, kind: str = "flatten", scale: float = 1.0,
                       backend: str = "numpy", dtype: str = "float64", xp=None) -> PatchNetwork:
    r"""Initialise an ensemble of patch networks.

    Kernels are He-initialised, :math:`W_{ij} \sim \mathcal N(0, 2 s_c^2 / (s^2 C))`
    with :math:`s_c` = ``scale``; the readout :math:`A_{ij} \sim \mathcal N(0, s_c^2/\text{fan-in})`;
    biases start at zero. Member ``m`` draws from its own ``"init"`` stream.

    Parameters
    ----------
    input_shape : (H, W, C)
        Each of ``H`` and ``W`` must be divisible by ``patch_size ** len(widths)``.
    widths : sequence of int
        Channels ``k_1 .. k_L`` of the patch convolutions (at least one).
    n_classes : int
        ``K``, the readout's outputs.
    kind : {"flatten", "pool", "patch"}
        The readout.
    """
    s = _check_patch_size(patch_size)
    h, w, c = (int(v) for v in input_shape)
    widths = [int(k) for k in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must list at least one positive number of channels, got {widths}")
    if min(h, w, c) < 1 or h % s ** len(widths) or w % s ** len(widths):
        raise ValueError(f"input_shape {tuple(input_shape)}: H and W must be multiples of patch_size ** layers = "
                         f"{s ** len(widths)} and C positive")
    if kind not in READOUTS:
        raise ValueError(f"unknown readout {kind!r}; allowed: {', '.join(READOUTS)}")
    if n_classes < 2 or n_members < 1:
        raise ValueError(f"need n_classes >= 2 and n_members >= 1, got {n_classes} and {n_members}")
    xp = get_namespace(backend) if xp is None else xp
    fan_ins = [s * s * c] + [s * s * k for k in widths[:-1]]
    n_out = (h // s ** len(widths)) * (w // s ** len(widths)) * widths[-1] if kind == "flatten" else widths[-1]
    host_k = [np.zeros((n_members, k, f)) for k, f in zip(widths, fan_ins)]
    host_a = np.zeros((n_members, n_classes, n_out))
    for m, rng in enumerate(member_rngs(seed, n_members, "init")):
        for arr, f in zip(host_k, fan_ins):
            arr[m] = rng.normal(0.0, scale * np.sqrt(2.0 / f), size=arr.shape[1:])
        host_a[m] = rng.normal(0.0, scale / np.sqrt(n_out), size=host_a.shape[1:])
    kernels = tuple(to_device(a, xp, dtype) for a in host_k)
    biases = tuple(xp.zeros((n_members, k), dtype=kernels[0].dtype) for k in widths)
    return PatchNetwork(kernels, biases, to_device(host_a, xp, dtype), xp.zeros((n_members, n_classes),
                        dtype=kernels[0].dtype), s, (h, w, c), kind)


@dataclass(frozen=True)
class PatchForward:
    """What a forward pass keeps: each layer's patches and pre-activations, the top map and the logits.

    ``patches[l]`` is ``(E or 1, N, H_l, W_l, s*s*C_l)``; ``preactivations[l]`` is
    ``(E, N, H_{l+1}, W_{l+1}, k_{l+1})``; ``logits`` is ``(E, N, K)`` for
    ``flatten`` and ``pool``, ``(E, N, P, K)`` (per patch) for ``patch``.
    """

    patches: list
    preactivations: list
    top: object
    logits: object


def _relu(a):
    xp = namespace(a)
    return xp.maximum(a, xp.zeros_like(a))


def patch_forward(net: PatchNetwork, x) -> PatchForward:
    """The forward pass of every member on ``x`` ``(N, H, W, C)`` or ``(E, N, H, W, C)``."""
    xp = namespace(x, net.readout)
    if tuple(x.shape[-3:]) != tuple(net.input_shape) or x.ndim not in (4, 5):
        raise ValueError(f"input must be (N, {', '.join(map(str, net.input_shape))}) or (E, N, ...), "
                         f"got shape {tuple(x.shape)}")
    h = _as_members(x)
    patches, preacts = [], []
    for w, b in zip(net.kernels, net.biases):
        p = extract_patches(h, net.patch_size)
        e = p.shape[0]
        a = xp.matmul(xp.reshape(p, (e, -1, p.shape[-1])), xp.matrix_transpose(w)) + b[:, None, :]
        a = xp.reshape(a, (w.shape[0], *p.shape[1:-1], w.shape[1]))
        patches.append(p)
        preacts.append(a)
        h = _relu(a)
    e, n = h.shape[0], h.shape[1]
    if net.kind == "flatten":
        feats = xp.reshape(h, (e, n, -1))
    elif net.kind == "pool":
        feats = xp.mean(xp.reshape(h, (e, n, -1, h.shape[-1])), axis=2)
    else:
        feats = xp.reshape(h, (e, n, -1, h.shape[-1]))
        z = xp.matmul(xp.reshape(feats, (e, -1, feats.shape[-1])), xp.matrix_transpose(net.readout))
        z = xp.reshape(z + net.readout_bias[:, None, :], (e, n, feats.shape[2], net.n_classes))
        return PatchForward(patches, preacts, h, z)
    z = xp.matmul(feats, xp.matrix_transpose(net.readout)) + net.readout_bias[:, None, :]
    return PatchForward(patches, preacts, h, z)


def _log_softmax(z):
    xp = namespace(z)
    z = z - xp.max(z, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def patch_logits(net: PatchNetwork, x):
    """Image logits ``(E, N, K)`` (for ``patch``: the mean over patches of the per-patch log-softmax)."""
    xp = namespace(x, net.readout)
    z = patch_forward(net, x).logits
    return xp.mean(_log_softmax(z), axis=2) if net.kind == "patch" else z


def _targets(y):
    return y[None, ...] if y.ndim == 2 else y


def patch_loss(net: PatchNetwork, x, y):
    """Cross-entropy of every member ``(E,)``; ``y`` one-hot ``(N, K)`` or ``(E, N, K)``."""
    xp = namespace(x, y, net.readout)
    z = patch_forward(net, x).logits
    t = _targets(y)
    if net.kind == "patch":
        return -xp.mean(xp.sum(t[:, :, None, :] * _log_softmax(z), axis=-1), axis=(1, 2))
    return -xp.mean(xp.sum(t * _log_softmax(z), axis=-1), axis=1)


def patch_gradients(net: PatchNetwork, x, y, *, trainable=None):
    r"""Loss ``(E,)`` and exact gradients of every parameter (back-propagation).

    With :math:`e = \mathrm{softmax}(z) - y` divided by the number of terms, the
    readout gradient is :math:`e^T f`, the top map's signal :math:`e A`, and for a
    layer with pre-activation :math:`a = W x + b`:
    :math:`\delta = g \odot \mathrm{relu}'(a)`, :math:`\nabla W = \sum_{n,p} \delta_{n,p} x_{n,p}^T`,
    :math:`\nabla b = \sum_{n,p}\delta_{n,p}`, and the signal of the map below is
    ``fold_patches(delta @ W)``.

    Parameters
    ----------
    trainable : sequence of bool, optional
        Per layer, whether its kernel and bias get gradients (default: all);
        gradients of frozen layers are ``None`` and no signal goes below the
        lowest trainable layer.

    Returns
    -------
    loss : array ``(E,)``
    grads : list
        In the order of :attr:`PatchNetwork.parameters`.
    """
    xp = namespace(x, y, net.readout)
    trainable = [True] * net.n_layers if trainable is None else list(trainable)
    fwd = patch_forward(net, x)
    t = _targets(y)
    e, n = fwd.top.shape[0], fwd.top.shape[1]
    top = fwd.top
    k_top = top.shape[-1]
    logp = _log_softmax(fwd.logits)
    if net.kind == "patch":
        n_patch = fwd.logits.shape[2]
        loss = -xp.mean(xp.sum(t[:, :, None, :] * logp, axis=-1), axis=(1, 2))
        err = (xp.exp(logp) - t[:, :, None, :]) / (n * n_patch)  # (E, N, P, K)
        err2 = xp.reshape(err, (e, -1, net.n_classes))
        feats = xp.reshape(top, (e, -1, k_top))
        d_readout = xp.matmul(xp.matrix_transpose(err2), feats)
        d_rbias = xp.sum(err2, axis=1)
        g = xp.reshape(xp.matmul(err2, net.readout), top.shape)
    else:
        loss = -xp.mean(xp.sum(t * logp, axis=-1), axis=1)
        err = (xp.exp(logp) - t) / n  # (E, N, K)
        if net.kind == "flatten":
            feats = xp.reshape(top, (e, n, -1))
        else:
            feats = xp.mean(xp.reshape(top, (e, n, -1, k_top)), axis=2)
        d_readout = xp.matmul(xp.matrix_transpose(err), feats)
        d_rbias = xp.sum(err, axis=1)
        df = xp.matmul(err, net.readout)
        if net.kind == "flatten":
            g = xp.reshape(df, top.shape)
        else:
            n_patch = top.shape[2] * top.shape[3]
            g = xp.broadcast_to(df[:, :, None, None, :] / n_patch, top.shape)
    d_kernels, d_biases = [None] * net.n_layers, [None] * net.n_layers
    lowest = next((i for i, flag in enumerate(trainable) if flag), net.n_layers)
    for i in range(net.n_layers - 1, lowest - 1, -1):
        a = fwd.preactivations[i]
        delta = g * xp.astype(a > 0, a.dtype)
        d2 = xp.reshape(delta, (e, -1, delta.shape[-1]))
        if trainable[i]:
            p = fwd.patches[i]
            d_kernels[i] = xp.matmul(xp.matrix_transpose(d2), xp.reshape(p, (p.shape[0], -1, p.shape[-1])))
            d_biases[i] = xp.sum(d2, axis=1)
        if i > lowest:
            dp = xp.matmul(d2, net.kernels[i])
            dp = xp.reshape(dp, (*delta.shape[:-1], dp.shape[-1]))
            g = fold_patches(dp, net.patch_size, net.kernels[i - 1].shape[1])
    return loss, [*d_kernels, *d_biases, d_readout, d_rbias]


def _take(a, idx, axis_from_end: int):
    xp = namespace(a)
    return xp.take(a, idx, axis=a.ndim - axis_from_end)


OPTIMIZERS = ("sgd", "adam")


def train_patch_network(net: PatchNetwork, x, y, *, steps: int, lr: float, batch_size: int | None = 64,
                        momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0, trainable=None,
                        record_every: int | None = None, optimizer: str = "sgd",
                        divergence_factor: float = DIVERGENCE_FACTOR, divergences: list | None = None):
    r"""Minibatch SGD with heavy-ball momentum on every member at once.

    .. math:: v \leftarrow \mu v + \nabla L + \lambda \theta, \qquad \theta \leftarrow \theta - \eta v

    for every trainable parameter :math:`\theta` (kernels, biases and the readout;
    ``trainable`` freezes conv layers). ``x`` ``(N, H, W, C)`` or ``(E, N, H, W, C)``
    and one-hot ``y`` ``(N, K)`` or ``(E, N, K)`` live on the network's backend;
    minibatches come from the run's ``"batches"`` stream (the same indices for every
    member). Returns the trained network and the minibatch losses ``(T, E)`` (host)
    every ``record_every`` steps (default ``max(1, steps // 50)``).

    A member diverges when its minibatch loss becomes non-finite or exceeds
    ``divergence_factor`` times its first one, or its parameters become
    non-finite (checked at every record): it is frozen from that step on, its
    recorded losses are ``nan``, and a :class:`sim.divergence.Divergence` is
    appended to ``divergences`` when that list is given.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
    divergence_factor = check_divergence_factor(divergence_factor)
    xp = namespace(x, y, net.readout)
    n = x.shape[-4]
    if y.shape[-2] != n or y.shape[-1] != net.n_classes:
        raise ValueError(f"targets must be one-hot (N={n}, K={net.n_classes}), got shape {tuple(y.shape)}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    record_every = max(1, steps // 50) if record_every is None else int(record_every)
    trainable = [True] * net.n_layers if trainable is None else list(trainable)
    n_layers = net.n_layers
    train_mask = trainable + trainable + [True, True]
    params = list(net.parameters)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    velocity = [xp.zeros_like(p) if flag else None for p, flag in zip(params, train_mask)]
    second = [xp.zeros_like(p) if flag else None for p, flag in zip(params, train_mask)]
    rng = shared_rng(seed, "batches")
    full = batch_size is None or batch_size >= n
    perm, pos = None, n
    losses = []
    n_members = net.n_members
    alive = xp.ones((n_members,), dtype=xp.bool)
    first_bad = xp.full((n_members,), -1, dtype=xp.int64)
    reason = xp.zeros((n_members,), dtype=xp.int8)
    limit = xp.full((n_members,), np.nan, dtype=params[0].dtype)

    def diverge(bad, code, step):
        return (alive & ~bad, xp.where(bad, xp.asarray(step, dtype=xp.int64), first_bad),
                xp.where(bad, xp.asarray(code, dtype=xp.int8), reason))

    for step in range(int(steps)):
        if full:
            xb, yb = x, y
        else:
            if pos + batch_size > n:
                perm, pos = rng.permutation(n), 0
            idx = xp.asarray(perm[pos:pos + batch_size])
            pos += batch_size
            xb, yb = _take(x, idx, 4), _take(y, idx, 2)
        current = net.with_parameters(params)
        loss, grads = patch_gradients(current, xb, yb, trainable=trainable)
        finite = xp.isfinite(loss)
        limit = xp.where(xp.isnan(limit), xp.where(loss > 0, divergence_factor * loss, xp.inf), limit)
        alive, first_bad, reason = diverge(alive & ~(finite & (loss <= limit)),
                                           xp.where(finite, xp.asarray(LOSS_EXCEEDED, dtype=xp.int8),
                                                    xp.asarray(LOSS_NON_FINITE, dtype=xp.int8)), step)
        if step % record_every == 0:
            ok = alive
            for p in params:
                ok = ok & xp.all(xp.isfinite(p), axis=tuple(range(1, p.ndim)))
            alive, first_bad, reason = diverge(alive & ~ok, WEIGHTS_NON_FINITE, step)
            losses.append(to_host(xp.where(alive, loss, xp.full_like(loss, np.nan))))
        before = list(params)
        for i, g in enumerate(grads):
            if not train_mask[i] or g is None:
                continue
            if weight_decay and (i < n_layers or i == 2 * n_layers):  # kernels and readout, not biases
                g = g + weight_decay * params[i]
            if optimizer == "sgd":
                velocity[i] = momentum * velocity[i] + g
                params[i] = params[i] - lr * velocity[i]
            else:
                velocity[i] = momentum * velocity[i] + (1 - momentum) * g
                second[i] = 0.999 * second[i] + 0.001 * g * g
                v_hat = velocity[i] / (1 - momentum ** (step + 1))
                s_hat = second[i] / (1 - 0.999 ** (step + 1))
                params[i] = params[i] - lr * v_hat / (xp.sqrt(s_hat) + 1e-8)
        if not (is_numpy_namespace(xp) and bool(np.all(alive))):  # frozen members keep their parameters
            params = [p if p is q else xp.where(xp.reshape(alive, (-1,) + (1,) * (p.ndim - 1)), p, q)
                      for p, q in zip(params, before)]
    if divergences is not None:
        divergences.extend(collect_divergences(to_host(first_bad), to_host(reason), divergence_factor))
    return net.with_parameters(params), np.asarray(losses).reshape(-1, net.n_members)


def evaluate_in_chunks(fn, x, chunk: int = 2048, axis_from_end: int = 4):
    """Apply ``fn`` to slices of ``x`` along its sample axis and concatenate along axis 1 (``(E, N, ...)``)."""
    xp = namespace(x)
    n = x.shape[x.ndim - axis_from_end]
    outs = []
    for start in range(0, n, chunk):
        idx = xp.arange(start, min(start + chunk, n))
        outs.append(fn(_take(x, idx, axis_from_end)))
    return xp.concat(outs, axis=1)


def patch_accuracy(net: PatchNetwork, x, labels, chunk: int = 2048):
    """Fraction of images whose arg-max logit is the label, per member ``(E,)``.

    ``labels`` are ints ``(N,)`` or ``(E, N)``.
    """
    xp = namespace(x, net.readout)
    z = evaluate_in_chunks(lambda xb: patch_logits(net, xb), x, chunk)
    pred = xp.argmax(z, axis=-1)
    lab = xp.asarray(labels)
    return xp.mean(xp.astype(pred == lab, z.dtype), axis=-1)
