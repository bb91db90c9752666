r"""Rules with trained modules on convolutional networks: DNI (``sg``), cDNI (``cdni``) and DGL (``dgl``).

The network is a :class:`sim.conv.ConvNet` (convolutions, then dense layers,
the last one linear). Its hidden layers ``l = 1 .. L-1`` each get a trained
module that reads the layer's output :math:`h_l` flattened in C order
(:math:`n_l = C_l H_l W_l` for a convolution), so that every hidden layer
learns from a signal at its own output instead of waiting for the layers above
(Jaderberg et al. 2016; Belilovsky et al. 2020). The output layer learns from
the loss, :math:`\delta_L = e = B\,\partial L/\partial \hat y`, on its
(detached) input. As in :mod:`sim.conv`, a signal is per sample
(:math:`B\,\partial L/\partial h`), :math:`\delta_l = g_l \odot f'(a_l)` and the
update of a kernel is :math:`\Delta K_l = \operatorname{mean}_b \sum_q
\delta_{l,b,q} P_{l,b,q}^T` (biases: :math:`\operatorname{mean}_b \sum_q
\delta_{l,b,q}`).

Synthetic gradients (``sg``: DNI, ``cdni``: label-conditioned)
--------------------------------------------------------------
A linear module predicts the per-sample gradient at the layer's output,

.. math:: g_l = \mathrm{SG}_l(h_l\,[, y]) = A_l h_l\; [+\, C_l y] + c_l, \qquad
          A_l \in \mathbb R^{n_l \times n_l},\; C_l \in \mathbb R^{n_l \times n_L},

all zero at initialisation (the first update of every hidden layer is exactly
zero). It is trained by regression,
:math:`\ell^{SG}_l = \frac{1}{2B}\sum_b \lVert \mathrm{SG}_l(h_{l,b}) - t_{l,b}\rVert^2`,
with gradients :math:`\partial_{A} = \operatorname{mean}_b r_b h_b^T`,
:math:`\partial_C = \operatorname{mean}_b r_b y_b^T`, :math:`\partial_c =
\operatorname{mean}_b r_b`, :math:`r = \mathrm{SG}_l - t_l`, towards the target
(``target``):

``bootstrap``  :math:`t_l = \partial h_{l+1}/\partial h_l^{\,T}\, \delta_{l+1}` with the rule's
               *own* signal above, :math:`\delta_{l+1} = \mathrm{SG}_{l+1} \odot f'(a_{l+1})`:
               the transposed convolution of :math:`\delta_{l+1}` by :math:`K_{l+1}` (or
               :math:`W_{l+1}^T\delta_{l+1}` for a dense layer). The top hidden layer's target
               is :math:`W_L^T e`, the true gradient (Jaderberg et al. 2016);
``true``       BP's :math:`t_l = \partial h_{l+1}/\partial h_l^{\,T}\,\delta^{BP}_{l+1}`.

DGL (decoupled greedy learning)
-------------------------------
One block per layer (as :func:`sim.local.make_block_network` with one layer per
block). Hidden layer ``l`` has an auxiliary linear classifier on its output,
optionally average-pooled first to keep it small (``head_pool = (H^*, W^*)``:
adaptive average pooling :math:`\bar h = P_H\, h\, P_W^T`, row ``k`` of
:math:`P_H` averaging the bins :math:`[\lfloor kH/H^*\rfloor, \lceil (k+1)H/H^*\rceil)`
as PyTorch's ``AdaptiveAvgPool2d``), :math:`z_l = V_l \bar h_l + c_l`, and its
own loss :math:`\ell_l(z_l, y)` (the network's: cross-entropy or mse). The
layer and its head descend :math:`\ell_l` only: with
:math:`e_l = B\,\partial\ell_l/\partial z_l`,

.. math:: \partial_{V} = \operatorname{mean}_b e_{l,b} \bar h_{l,b}^T,\quad
          \partial_c = \operatorname{mean}_b e_{l,b},\quad
          g_l = P_H^T (V_l^T e_l) P_W ,

and no gradient crosses from one block to the one below (the layer's input is a
plain array). Heads are Gaussian :math:`\mathcal N(0, 1/m)` (``m`` the pooled
width; member streams ``"extra"``), their biases zero.

Training (:func:`sim.conv.train_convnet` with ``feedback`` the modules): the
weights and the modules take one step each from the same forward pass, by the
same optimizer and step ``lr`` (the modules' step times ``lr_scale``); the
trained modules are returned as the run's feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .backend import member_rngs, namespace, to_device
from .conv import LOCAL_RULES, ConvNet, conv_transpose, forward, kernel_update
from .nn import check_loss, loss_and_error, times_derivative
from .rules import Locking

TARGETS = ("bootstrap", "true")
#: What a layer's update waits for (Jaderberg et al. 2016): its own forward pass only. A DNI module's own
#: regression also waits for the signal of the layer above (its target), the layer's weights do not.
LOCKING = {rule: Locking(forward=True, update=False, backward=False) for rule in LOCAL_RULES}


@dataclass(frozen=True)
class ConvModules:
    """The trained modules of every hidden layer of a convolutional ensemble (pure data).

    ``params[l]``: for ``sg`` ``(A, c)``, for ``cdni`` ``(A, C, c)``, for
    ``dgl`` ``(V, c)`` (shapes in the module docstring, ensemble axis first).
    ``pools[l]``: ``None`` or the pooling matrices ``(P_H, P_W)`` of a DGL head.
    """

    rule: str
    params: tuple
    pools: tuple
    target: str = "bootstrap"
    lr_scale: float = 1.0

    def arrays(self) -> list:
        """Every trained array, layer by layer (the order of the module gradients)."""
        return [a for p in self.params for a in p]

    def with_arrays(self, arrays) -> ConvModules:
        """The same modules holding ``arrays`` (in the order of :meth:`arrays`)."""
        arrays, out, start = list(arrays), [], 0
        for p in self.params:
            out.append(tuple(arrays[start:start + len(p)]))
            start += len(p)
        if start != len(arrays):
            raise ValueError(f"expected {start} module arrays, got {len(arrays)}")
        return replace(self, params=tuple(out))

    def member(self, m: int) -> ConvModules:
        """The modules of member ``m`` alone (``E = 1``)."""
        return replace(self, params=tuple(tuple(a[m:m + 1] for a in p) for p in self.params))


def pool_matrix(size: int, out: int) -> np.ndarray:
    """Adaptive average pooling of ``size`` positions into ``min(out, size)`` bins, as a ``(bins, size)`` matrix."""
    bins = min(int(out), int(size))
    matrix = np.zeros((bins, size))
    for k in range(bins):
        start, stop = (k * size) // bins, -((-(k + 1) * size) // bins)
        matrix[k, start:stop] = 1.0 / (stop - start)
    return matrix


def hidden_shapes(net: ConvNet, input_shape) -> list:
    """The output shape of every hidden layer: ``(C, H, W)`` for a convolution, ``(n,)`` for a dense layer."""
    xp = namespace(*net.weights)
    x = xp.zeros((1, net.weights[0].shape[2], *input_shape), dtype=net.weights[0].dtype)
    _, _, outputs, _ = forward(ConvNet(tuple(w[:1] for w in net.weights), net.geometry, net.activation), x)
    return [tuple(int(s) for s in o.shape[2:]) for o in outputs[:-1]]


def init_conv_modules(rule: str, net: ConvNet, input_shape, *, seed: int = 0, head_pool=None,
                      target: str = "bootstrap", lr_scale: float = 1.0) -> ConvModules:
    """Fresh modules of ``rule`` (``sg``, ``cdni``, ``dgl``) for ``net`` on inputs of ``input_shape`` ``(H, W)``.

    ``head_pool``: ``None`` or ``(H*, W*)`` (an int for both), the pooled size
    of a convolution's map before its DGL head (clipped to the map's size);
    only for ``dgl``. ``target``: ``bootstrap`` or ``true`` (``sg`` / ``cdni``).
    ``lr_scale``: the modules' step relative to the weights'.
    """
    if rule not in LOCAL_RULES:
        raise ValueError(f"unknown rule {rule!r} with trained modules; allowed: {', '.join(LOCAL_RULES)}")
    if target not in TARGETS:
        raise ValueError(f"unknown module target {target!r}; allowed: {', '.join(TARGETS)}")
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, int | float | np.integer | np.floating) \
            or not np.isfinite(lr_scale) or lr_scale < 0:
        raise ValueError(f"lr_scale must be a non-negative finite number, got {lr_scale!r}")
    if head_pool is not None:
        if rule != "dgl":
            raise ValueError(f"head_pool is for the DGL heads only (rule 'dgl'), got rule {rule!r}")
        pair = (head_pool, head_pool) if isinstance(head_pool, int | np.integer) else tuple(head_pool)
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in pair):
            raise ValueError(f"head_pool must be None, a positive integer or two of them, got {head_pool!r}")
        head_pool = pair
    xp = namespace(*net.weights)
    dtype = str(net.weights[0].dtype).split(".")[-1]
    n_members, n_out = net.weights[0].shape[0], net.weights[-1].shape[1]
    shapes = hidden_shapes(net, input_shape)
    params, pools = [], []
    rngs = member_rngs(seed, n_members, "extra") if rule == "dgl" else None
    for shape in shapes:
        n = int(np.prod(shape))
        if rule == "dgl":
            pool = None
            if head_pool is not None and len(shape) == 3:
                pool = tuple(to_device(pool_matrix(s, p), xp, dtype) for s, p in zip(shape[1:], head_pool))
                n = shape[0] * pool[0].shape[0] * pool[1].shape[0]
            head = np.stack([rng.normal(0.0, 1.0 / np.sqrt(n), size=(n_out, n)) for rng in rngs])
            params.append((to_device(head, xp, dtype), xp.zeros((n_members, n_out), dtype=net.weights[0].dtype)))
            pools.append(pool)
            continue
        sizes = [(n, n), *([(n, n_out)] if rule == "cdni" else []), (n,)]
        params.append(tuple(xp.zeros((n_members, *s), dtype=net.weights[0].dtype) for s in sizes))
        pools.append(None)
    return ConvModules(rule, tuple(params), tuple(pools), target, float(lr_scale))


def _flat(h):
    xp = namespace(h)
    return xp.reshape(h, (h.shape[0], h.shape[1], -1))


def _mean_outer(r, u):
    r""":math:`\operatorname{mean}_b r_b u_b^T`, ``(E, n, m)`` from ``(E, B, n)`` and ``(E, B, m)``."""
    xp = namespace(r, u)
    return xp.matmul(xp.matrix_transpose(r), u) / r.shape[1]


def synthetic_gradient(params, h, y=None):
    r""":math:`\mathrm{SG}(h[, y]) = A h [+ C y] + c` on the flattened ``h``, ``(E, B, n)``; ``y`` for cDNI."""
    xp = namespace(h, *params)
    out = xp.matmul(_flat(h), xp.matrix_transpose(params[0]))
    if len(params) == 3:
        out = out + xp.matmul(y, xp.matrix_transpose(params[1]))
    return out + params[-1][:, None, :]


def regression(params, h, y, target):
    r"""Gradients of the regression loss and its value ``(E,)``.

    :math:`\ell^{SG} = \frac{1}{2B}\sum_b\lVert\mathrm{SG}(h_b[, y_b]) - t_b\rVert^2`.
    ``target`` has the shape of ``h`` (or is flattened); ``y`` ``(E, B, n_L)`` for cDNI.
    """
    xp = namespace(h, target, *params)
    residual = synthetic_gradient(params, h, y) - _flat(target)
    grads = [_mean_outer(residual, _flat(h))]
    if len(params) == 3:
        grads.append(_mean_outer(residual, y))
    grads.append(xp.sum(residual, axis=1) / residual.shape[1])
    return tuple(grads), xp.sum(residual * residual, axis=(1, 2)) / (2 * residual.shape[1])


def _pool(h, pool):
    xp = namespace(h)
    return h if pool is None else xp.matmul(xp.matmul(pool[0], h), xp.matrix_transpose(pool[1]))


def _unpool(g, pool, shape):
    xp = namespace(g)
    if pool is None:
        return xp.reshape(g, shape)
    g = xp.reshape(g, (*shape[:3], pool[0].shape[0], pool[1].shape[0]))
    return xp.matmul(xp.matmul(xp.matrix_transpose(pool[0]), g), pool[1])


def head_step(params, h, y, pool=None, *, loss: str = "ce"):
    r"""DGL's auxiliary classifier on ``h``: ``(head gradients, g, local loss (E,))``, ``g`` the signal at ``h``.

    :math:`z = V \bar h + c`, :math:`e = B\,\partial\ell/\partial z`, gradients
    :math:`(\operatorname{mean}_b e_b \bar h_b^T, \operatorname{mean}_b e_b)`,
    :math:`g = P_H^T (V^T e) P_W` shaped like ``h``.
    """
    xp = namespace(h, *params)
    pooled = _flat(_pool(h, pool))
    z = xp.matmul(pooled, xp.matrix_transpose(params[0])) + params[1][:, None, :]
    value, error = loss_and_error(z, y, loss)
    grads = (_mean_outer(error, pooled), xp.sum(error, axis=1) / error.shape[1])
    return grads, _unpool(xp.matmul(error, params[0]), pool, h.shape), value


def _propagate(net: ConvNet, i: int, delta_above, shapes, out_shape):
    """The signal at the output of layer ``i`` from ``delta_{i+1}`` through ``W_{i+1}`` (BP's transpose)."""
    xp = namespace(delta_above, *net.weights)
    if i + 1 < net.n_conv:
        stride, padding = net.geometry[i + 1]
        return conv_transpose(delta_above, net.weights[i + 1], shapes[i + 1], stride, padding)
    return xp.reshape(xp.matmul(delta_above, net.weights[i + 1]), out_shape)


def check_modules(rule: str, net: ConvNet, modules) -> None:
    """``ValueError`` unless ``modules`` are :class:`ConvModules` of ``rule`` for every hidden layer of ``net``."""
    if rule not in LOCAL_RULES:
        raise ValueError(f"unknown rule {rule!r} with trained modules; allowed: {', '.join(LOCAL_RULES)}")
    if not isinstance(modules, ConvModules) or modules.rule != rule:
        raise ValueError(f"rule {rule!r} needs its trained modules as feedback "
                         f"(sim.conv_local.init_conv_modules({rule!r}, net, input_shape))")
    if len(modules.params) != len(net.weights) - 1:
        raise ValueError(f"the modules serve {len(modules.params)} hidden layers, the network has "
                         f"{len(net.weights) - 1}")


@dataclass(frozen=True)
class LocalConvStep:
    """One step of a rule with modules: the layers' ``updates`` (``dW_1 .. dW_L[, db_1 .. db_L]``), the modules'
    gradients (order of :meth:`ConvModules.arrays`), the network ``loss`` ``(E,)``, the modules' own losses
    ``(E, L-1)`` (regression or local classification) and the hidden signals ``g_l`` before ``f'``."""

    updates: list
    module_grads: list
    loss: object
    module_loss: object
    signals: list


def local_step(rule: str, net: ConvNet, x, y, *, loss: str = "ce", modules: ConvModules) -> LocalConvStep:
    """The updates of ``sg``, ``cdni`` or ``dgl`` on the batch ``(x, y)`` and their modules' gradients."""
    check_modules(rule, net, modules)
    check_loss(loss)
    xp = namespace(x, *net.weights)
    y_hat, inputs, outputs, shapes = forward(net, x)
    n_members, batch = y_hat.shape[0], y_hat.shape[1]
    labels = xp.broadcast_to(xp.astype(y, y_hat.dtype), y_hat.shape)
    losses, error = loss_and_error(y_hat, labels, loss)
    n_layers = len(net.weights)
    deltas, signals, grads, module_losses = [None] * n_layers, [None] * (n_layers - 1), [], []
    deltas[-1] = error
    for i in range(n_layers - 1):
        params = modules.params[i]
        if rule == "dgl":
            head_grads, signals[i], value = head_step(params, outputs[i], labels, modules.pools[i], loss=loss)
            grads += head_grads
            module_losses.append(value)
        else:
            signals[i] = xp.reshape(synthetic_gradient(params, outputs[i], labels), outputs[i].shape)
        deltas[i] = times_derivative(signals[i] * 1, outputs[i], net.activation)
    if rule != "dgl":
        targets = [None] * (n_layers - 1)
        above = deltas[-1]
        for i in range(n_layers - 2, -1, -1):  # own signals (bootstrap) or BP's (true), from the top down
            targets[i] = _propagate(net, i, above if modules.target == "true" else deltas[i + 1], shapes,
                                    outputs[i].shape)
            if modules.target == "true":
                above = times_derivative(targets[i] * 1, outputs[i], net.activation)
        for i in range(n_layers - 1):
            module_grads, value = regression(modules.params[i], outputs[i], labels, targets[i])
            grads += module_grads
            module_losses.append(value)
    updates = []
    for i, (w, delta) in enumerate(zip(net.weights, deltas)):
        updates.append(kernel_update(delta, inputs[i], w.shape) if i < net.n_conv else _mean_outer(delta, inputs[i]))
    if net.biases is not None:
        updates += [xp.sum(d, axis=(1, 3, 4)) / batch if d.ndim == 5 else xp.sum(d, axis=1) / batch for d in deltas]
    module_loss = xp.stack(module_losses, axis=-1) if module_losses else xp.zeros((n_members, 0), dtype=y_hat.dtype)
    return LocalConvStep(updates, grads, losses, module_loss, signals)


def local_updates(rule: str, net: ConvNet, x, y, *, loss: str = "ce", modules: ConvModules):
    """:func:`sim.conv.conv_updates` for the rules with modules: the layers' updates then the modules'
    gradients in one list, and the network loss ``(E,)``."""
    step = local_step(rule, net, x, y, loss=loss, modules=modules)
    return step.updates + step.module_grads, step.loss
