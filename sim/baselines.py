r"""Shallow and generic baselines for image classification, with an ensemble axis.

These bound the hierarchical-digits question from both sides (see
:mod:`sim.layerwise` for the layerwise algorithm and the oracle-architecture
patch CNN). Every member ``e`` of an ensemble trains on its own images
``(E, N, H, W)`` at once; all run on the host (numpy), trained from a seed.

``linear``
    Multinomial logistic regression on the pixels :math:`x \in \mathbb R^{HW}`:
    :math:`z = W^T \tilde x`, with :math:`\tilde x = x / r` scaled so that the mean
    squared norm of the training inputs is one, fitted by full-batch gradient
    descent with momentum on the L2-regularised loss
    (:func:`sim.layerwise.fit_softmax_regression`).
``random-features``
    A wide one-hidden-layer network whose hidden layer is fixed at random and only
    the top is trained (a random-features kernel model):
    :math:`\phi(x) = \mathrm{relu}(G x / \sqrt{HW} + b)`, :math:`G_{ij}, b_i \sim \mathcal N(0, 1)`,
    ``features`` units, then the linear model above on :math:`\phi(x)`.
``mlp``
    A one-hidden-layer ReLU network :math:`z = A\,\mathrm{relu}(W x + b) + c` of
    ``width`` units, every weight trained by back-propagation (Adam, minibatches).
``cnn``
    A generic convolutional network whose kernels and strides are *not* the
    grammar's patch size: a 5 x 5 convolution with stride 2 (``channels[0]``
    maps), ReLU, a 4 x 4 convolution with stride 2 (``channels[1]`` maps), ReLU,
    and a linear readout of the flattened map; trained end to end by
    back-propagation (Adam). On 27 x 27 images the maps are 12 x 12 and 5 x 5.

Convolutions are written as im2col (strided slices, :func:`im2col`) plus a batched
matmul, and their input gradient as the adjoint :func:`col2im`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import blas_policy, shared_rng

BASELINES = ("linear", "random-features", "mlp", "cnn")


@dataclass(frozen=True)
class BaselineSettings:
    """Settings of the baselines.

    ``l2``, ``top_steps``: the L2 constant and gradient steps of the linear models
    (``linear``, the top of ``random-features``); ``features``: random features;
    ``width``: the MLP's hidden units; ``channels``: the CNN's two convolutions;
    ``steps``, ``lr``, ``batch_size``, ``weight_decay``: Adam for ``mlp`` and ``cnn``.
    """

    l2: float = 1e-3
    top_steps: int = 300
    features: int = 2048
    width: int = 256
    channels: tuple = (16, 32)
    steps: int = 1500
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 1e-4

    def __post_init__(self):
        for name in ("top_steps", "features", "width", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(tuple(self.channels)) != 2 or min(int(c) for c in self.channels) < 1:
            raise ValueError(f"channels must be two positive integers, got {self.channels!r}")
        if not (self.lr > 0 and self.l2 >= 0 and self.weight_decay >= 0):
            raise ValueError(f"lr must be positive and l2, weight_decay non-negative, got lr={self.lr!r}, "
                             f"l2={self.l2!r}, weight_decay={self.weight_decay!r}")


@dataclass
class BaselineModel:
    """A fitted baseline: ``method``, its parameters (each with the ensemble axis first), the input scale."""

    method: str
    params: dict
    scale: float

    @property
    def n_members(self) -> int:
        return int(next(iter(self.params.values())).shape[0])


# --------------------------------------------------------------------------------------------
# convolution as im2col
# --------------------------------------------------------------------------------------------

def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Output side of a 'valid' convolution: :math:`\\lfloor (n - k)/\\mathrm{stride}\\rfloor + 1`."""
    if size < kernel:
        raise ValueError(f"a {kernel} x {kernel} kernel does not fit a map of side {size}")
    return (size - kernel) // stride + 1


def im2col(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    r"""Patches of maps ``(..., H, W, C)`` for a 'valid' convolution: ``(..., H', W', k*k*C)``.

    Entry ``[..., i, j, (r*k + q)*C + c]`` is ``x[..., i*stride + r, j*stride + q, c]``.
    """
    *lead, h, w, c = x.shape
    ho, wo = conv_output_size(h, kernel, stride), conv_output_size(w, kernel, stride)
    cols = [x[..., r:r + stride * (ho - 1) + 1:stride, q:q + stride * (wo - 1) + 1:stride, :]
            for r in range(kernel) for q in range(kernel)]
    return np.stack(cols, axis=-2).reshape(*lead, ho, wo, kernel * kernel * c)


def col2im(cols: np.ndarray, shape: tuple, kernel: int, stride: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add patch gradients ``(..., H', W', k*k*C)`` back to maps ``shape``."""
    *lead, ho, wo, _ = cols.shape
    c = shape[-1]
    cols = cols.reshape(*lead, ho, wo, kernel * kernel, c)
    out = np.zeros(shape, dtype=cols.dtype)
    for r in range(kernel):
        for q in range(kernel):
            out[..., r:r + stride * (ho - 1) + 1:stride, q:q + stride * (wo - 1) + 1:stride, :] += \
                cols[..., r * kernel + q, :]
    return out


#: The generic CNN's (kernel, stride) per convolution (not the grammar's 3 x 3 patches with stride 3).
CNN_LAYERS = ((5, 2), (4, 2))


# --------------------------------------------------------------------------------------------
# forward passes and gradients
# --------------------------------------------------------------------------------------------

def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _mlp_forward(p, x):
    a = x @ p["W"] + p["b"][:, None, :]
    h = np.maximum(a, 0)
    return h @ p["A"] + p["c"][:, None, :], (x, a, h)


def _mlp_backward(p, cache, g):
    x, a, h = cache
    grads = {"A": np.swapaxes(h, -1, -2) @ g, "c": g.sum(axis=1)}
    ga = (g @ np.swapaxes(p["A"], -1, -2)) * (a > 0)
    grads["W"], grads["b"] = np.swapaxes(x, -1, -2) @ ga, ga.sum(axis=1)
    return grads


def _cnn_forward(p, x):
    """``x`` ``(E, B, H, W)`` -> logits ``(E, B, K)`` and the cache of :func:`_cnn_backward`."""
    h = x[..., None]
    cache = []
    for i, (k, s) in enumerate(CNN_LAYERS):
        cols = im2col(h, k, s)
        a = cols @ p[f"K{i}"][:, None, None] + p[f"b{i}"][:, None, None, None, :]
        cache.append((h.shape, cols, a))
        h = np.maximum(a, 0)
    flat = h.reshape(h.shape[0], h.shape[1], -1)
    cache.append(flat)
    return flat @ p["A"] + p["c"][:, None, :], cache


def _cnn_backward(p, cache, g):
    flat = cache[-1]
    grads = {"A": np.swapaxes(flat, -1, -2) @ g, "c": g.sum(axis=1)}
    gh = (g @ np.swapaxes(p["A"], -1, -2)).reshape(cache[-2][2].shape)
    for i in range(len(CNN_LAYERS) - 1, -1, -1):
        shape, cols, a = cache[i]
        ga = gh * (a > 0)
        e = ga.shape[0]
        grads[f"K{i}"] = np.swapaxes(cols.reshape(e, -1, cols.shape[-1]), -1, -2) @ ga.reshape(e, -1, ga.shape[-1])
        grads[f"b{i}"] = ga.reshape(e, -1, ga.shape[-1]).sum(axis=1)
        if i > 0:
            gh = col2im(ga @ np.swapaxes(p[f"K{i}"], -1, -2)[:, None, None], shape, *CNN_LAYERS[i])
    return grads


_NETWORKS = {"mlp": (_mlp_forward, _mlp_backward), "cnn": (_cnn_forward, _cnn_backward)}


def _init(method: str, shape: tuple, n_classes: int, n_members: int, settings: BaselineSettings, seed: int) -> dict:
    rng = shared_rng(seed, "init")
    h, w = shape
    e = n_members

    def he(fan_in, *size):
        return rng.standard_normal((e, *size)) * np.sqrt(2.0 / fan_in)

    if method == "mlp":
        d, m = h * w, int(settings.width)
        return {"W": he(d, d, m), "b": np.zeros((e, m)), "A": he(m, m, n_classes) / np.sqrt(2.0),
                "c": np.zeros((e, n_classes))}
    params, c_in, side_h, side_w = {}, 1, h, w
    for i, ((k, s), c_out) in enumerate(zip(CNN_LAYERS, settings.channels)):
        params[f"K{i}"], params[f"b{i}"] = he(k * k * c_in, k * k * c_in, int(c_out)), np.zeros((e, int(c_out)))
        c_in, side_h, side_w = int(c_out), conv_output_size(side_h, k, s), conv_output_size(side_w, k, s)
    flat = side_h * side_w * c_in
    params["A"], params["c"] = he(flat, flat, n_classes) / np.sqrt(2.0), np.zeros((e, n_classes))
    return params


def _adam(method, params, x, y, settings: BaselineSettings, seed: int) -> dict:
    """Adam (β = 0.9, 0.999) on the mean cross-entropy plus ``weight_decay/2 * |weights|^2`` (not biases)."""
    forward, backward = _NETWORKS[method]
    rng = shared_rng(seed, "batches")
    e, n = x.shape[:2]
    b = min(int(settings.batch_size), n)
    m1 = {k: np.zeros_like(v) for k, v in params.items()}
    m2 = {k: np.zeros_like(v) for k, v in params.items()}
    rows = np.arange(e)[:, None]
    for t in range(1, int(settings.steps) + 1):
        idx = rng.integers(0, n, size=(e, b))
        z, cache = forward(params, x[rows, idx])
        g = (np.exp(_log_softmax(z)) - y[rows, idx]) / b
        grads = backward(params, cache, g)
        for k, v in params.items():
            gk = grads[k] + (settings.weight_decay * v if v.ndim == 3 else 0.0)
            m1[k] = 0.9 * m1[k] + 0.1 * gk
            m2[k] = 0.999 * m2[k] + 0.001 * gk * gk
            params[k] = v - settings.lr * (m1[k] / (1 - 0.9 ** t)) / (np.sqrt(m2[k] / (1 - 0.999 ** t)) + 1e-8)
    return params


def _random_features(params: dict, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    g, b = params["G"], params["g0"]
    out = np.empty((*x.shape[:2], g.shape[-1]))
    for start in range(0, x.shape[1], chunk):
        xb = x[:, start:start + chunk]
        out[:, start:start + chunk] = np.maximum(xb @ g / np.sqrt(x.shape[-1]) + b[:, None, :], 0)
    return out


# --------------------------------------------------------------------------------------------
# fitting and prediction
# --------------------------------------------------------------------------------------------

def _check(method: str, images, labels, n_classes: int):
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; allowed: {', '.join(BASELINES)}")
    images, labels = np.asarray(images, dtype=float), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be (E, N, H, W), one training sample per member, got shape {images.shape}")
    if labels.shape != images.shape[:2] or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= n_classes:
        raise ValueError(f"labels must be integers in [0, {n_classes}) of shape {images.shape[:2]}, got "
                         f"{labels.dtype} {labels.shape}")
    return images, labels


@blas_policy()
def fit_baseline(method: str, images, labels, *, n_classes: int, seed: int = 0,
                 settings: BaselineSettings | None = None) -> BaselineModel:
    """Fit the baseline ``method`` (see the module docstring) to every member's own images ``(E, N, H, W)``.

    ``labels`` ``(E, N)`` integers in ``[0, n_classes)``. Returns a :class:`BaselineModel`
    whose :func:`baseline_logits` predict new images.
    """
    from .layerwise import fit_softmax_regression

    settings = BaselineSettings() if settings is None else settings
    images, labels = _check(method, images, labels, n_classes)
    e, n, h, w = images.shape
    y = np.eye(n_classes)[labels]
    if method in ("linear", "random-features"):
        x = images.reshape(e, n, h * w)
        params = {}
        if method == "random-features":
            rng = shared_rng(seed, "init")
            params = {"G": rng.standard_normal((e, h * w, int(settings.features))),
                      "g0": rng.standard_normal((e, int(settings.features)))}
            x = _random_features(params, x)
        scale = float(np.sqrt(np.mean(np.sum(x * x, axis=-1)))) or 1.0
        params["W"] = fit_softmax_regression(x / scale, y, l2=settings.l2, steps=settings.top_steps, lr=1.0)
        return BaselineModel(method, params, scale)
    params = _init(method, (h, w), n_classes, e, settings, seed)
    x = images.reshape(e, n, h * w) if method == "mlp" else images
    return BaselineModel(method, _adam(method, params, x, y, settings, seed), 1.0)


@blas_policy()
def baseline_logits(model: BaselineModel, images, chunk: int = 1024) -> np.ndarray:
    """Logits ``(E, N, K)`` of a fitted baseline on images ``(N, H, W)`` (shared) or ``(E, N, H, W)``."""
    images = np.asarray(images, dtype=float)
    if images.ndim == 3:
        images = np.broadcast_to(images, (model.n_members, *images.shape))
    e, n, h, w = images.shape
    outs = []
    for start in range(0, n, chunk):
        xb = images[:, start:start + chunk]
        if model.method in ("linear", "random-features"):
            x = xb.reshape(e, -1, h * w)
            if model.method == "random-features":
                x = _random_features(model.params, x)
            outs.append((x / model.scale) @ model.params["W"])
        else:
            x = xb.reshape(e, -1, h * w) if model.method == "mlp" else xb
            outs.append(_NETWORKS[model.method][0](model.params, x)[0])
    return np.concatenate(outs, axis=1)
