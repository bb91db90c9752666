r"""Local learning rules on block networks: greedy, DGL, async DGL, overlapping blocks, contrastive losses.

A *block network* splits a network into ``K`` blocks :math:`f_1, \dots, f_K`
(each one or more layers; :class:`DenseBlock` for MLPs, or any object with the
same ``forward`` / ``backward`` protocol, such as the patch layers of
:mod:`sim.patch`). Block ``j`` maps :math:`h_{j-1} \mapsto h_j = f_j(h_{j-1};
\theta_j)`; the last block ends with the network's linear output layer and its
loss is the network's loss. Every other block may carry an *auxiliary head*
:math:`g_j(\cdot; \phi_j)` (linear, or an MLP with one hidden layer) and a
*local objective* :math:`\ell_j(g_j(h_j), y)`.

All rules differ only in which loss trains which block and what is passed
between blocks (the teaching-signal view of :mod:`sim.rules`, at block level):

==============  =====================================================================  ==================
rule            gradient that updates block ``j`` (``sg`` = stop-gradient)               locking (f, u, b)
==============  =====================================================================  ==================
``bp``          :math:`\partial L / \partial \theta_j` through every block above         (T, T, T)
``dfa``         block backward from :math:`B_j e` at its output, ``e`` the output error  (T, T, F)
``greedy``      stage ``s``: only block ``s``, from :math:`\ell_s(g_s(f_s(sg\,h_{s-1})))`   (T, F, F)
``dgl``         :math:`\partial \ell_j(g_j(f_j(sg\,h_{j-1}))) / \partial(\theta_j, \phi_j)`  (T, F, F)
``async-dgl``   as DGL, but :math:`h_{j-1}` is drawn from a replay buffer of ``M`` batches (F, F, F)
``overlap``     :math:`\partial(\ell_j + \ell_{j+1}) / \partial \theta_j`: each local       (T, F, T)
                loss also trains the block below it (LoCo, Xiong et al. 2020)
``sg``          block backward from :math:`\mathrm{SG}_j(h_j)` at its output, a linear     (T, F, F)
                module regressed on the input signal of block ``j+1`` (Jaderberg 2016)
``cdni``        as DNI with :math:`\mathrm{SG}_j(h_j, y)` (label-conditioned)              (T, F, F)
==============  =====================================================================  ==================

The locking triple is :class:`sim.rules.Locking` in the sense of Jaderberg et
al. (2016): ``forward`` (the block waits for the forward pass below),
``update`` (it waits for the forward pass to reach the output), ``backward``
(it waits for the blocks above). The layer-parallel runtime
(:mod:`sim.parallel`) builds its message channels from these declarations and
the rule's ``feedback``: DGL and greedy send nothing down; ``overlap`` needs one
message from the block above, ``bp`` a chain of them, ``dfa`` a broadcast of
the output error, ``sg`` (DNI) / ``cdni`` the block above's input signal as their
modules' regression target; a rule that is not forward-locked
(``async-dgl``) reads a replay buffer instead of a channel.

Conventions (as in :mod:`sim.nn` and :mod:`sim.rules`): every array carries the
leading ensemble axis ``E``; a block's *signal* is the per-sample gradient
:math:`\delta = B\,\partial L/\partial h` (``B`` the number of rows), and a weight
update is :math:`\Delta W = \operatorname{mean}_b \delta_b h_{b}^T`, a descent
direction (:math:`W \leftarrow W - \eta \Delta W`). Every function here is pure
and takes the array namespace from its inputs.

Contrastive objectives act on two views of each sample: a batch of ``2N`` rows
holds view 1 in rows ``0..N-1`` and view 2 of the same samples in rows
``N..2N-1``. With embeddings :math:`z` from the head,

* InfoNCE (CPC, Greedy InfoMax): scores :math:`S_{ik} = \langle z^{(1)}_i,
  z^{(2)}_k\rangle / \tau` and :math:`L_N = -\frac1N \sum_i \log
  \frac{e^{S_{ii}}}{\sum_k e^{S_{ik}}}`; :math:`\log N - L_N \le I(z^{(1)}; z^{(2)})`.
* NT-Xent (SimCLR): cosine similarities :math:`s_{ik} = \langle u_i, u_k\rangle /
  \tau`, :math:`u = z/\lVert z\rVert`, over all ``2N`` rows, and
  :math:`L = -\frac{1}{2N}\sum_i \log \frac{e^{s_{i,p(i)}}}{\sum_{k\ne i} e^{s_{ik}}}`
  with :math:`p(i) = i \pm N` the other view.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .backend import get_namespace, member_rngs, namespace, to_device
from .network import Network, init_network
from .nn import activate, activation_derivative, check_activation, check_loss, loss_value, output_error
from .rules import Locking, draw_feedback, signal_updates

HEADS = ("linear", "mlp")
OBJECTIVES = ("supervised", "infonce", "ntxent")
FEEDBACK_KINDS = (None, "neighbour", "chain", "direct", "synthetic")
#: Smallest norm NT-Xent divides by (cosine similarity of a zero embedding).
NORM_EPS = 1e-12


# --- blocks -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DenseBlock:
    r"""A block of dense layers: :math:`a_i = h_{i-1} W_i^T`, :math:`h_i = f(a_i)`.

    ``sizes`` is ``(n_in, n_1, ..., n_k)``; the parameters are the weights
    ``W_1 .. W_k`` of shapes ``(E, n_i, n_{i-1})``. With ``output=True`` the last
    layer is linear (the network's output layer or a head's output); otherwise
    every layer applies ``activation``. A block's protocol (shared with
    :mod:`sim.patch` blocks):

    * ``forward(params, h) -> (out, cache)``;
    * ``backward(params, cache, signal, input_signal=True) -> (grads, signal_in)``
      where ``signal`` is the per-sample gradient at the block's output
      (post-activation), ``grads`` the descent directions of the parameters and
      ``signal_in`` the per-sample gradient at its input (``None`` when not asked).
    """

    sizes: tuple
    activation: str = "relu"
    output: bool = False

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"a dense block needs at least two positive sizes (n_in, n_out, ...), got {self.sizes}")
        object.__setattr__(self, "sizes", sizes)
        check_activation(self.activation)

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def shapes(self) -> list[tuple[int, int]]:
        return [(n_out, n_in) for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:])]

    def flops(self, batch: int, n_members: int = 1) -> float:
        """FLOPs of one forward pass: :math:`\\sum_i 2 E B n_i n_{i-1}`."""
        return float(sum(2 * n_members * batch * a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])))

    def _linear_last(self, i: int) -> bool:
        return self.output and i == self.n_layers - 1

    def forward(self, params, h):
        xp = namespace(h, *params)
        inputs, preacts = [], []
        for i, w in enumerate(params):
            inputs.append(h)
            a = xp.matmul(h, xp.matrix_transpose(w))
            preacts.append(a)
            h = a if self._linear_last(i) else activate(a, self.activation)
        return h, (inputs, preacts)

    def backward(self, params, cache, signal, input_signal: bool = True):
        xp = namespace(signal, *params)
        inputs, preacts = cache
        k = len(params)
        delta = signal if self._linear_last(k - 1) else signal * activation_derivative(preacts[-1], self.activation)
        grads = [None] * k
        signal_in = None
        for i in range(k - 1, -1, -1):
            grads[i] = signal_updates([delta], [inputs[i]])[0]
            if i > 0:
                delta = xp.matmul(delta, params[i]) * activation_derivative(preacts[i - 1], self.activation)
            elif input_signal:
                signal_in = xp.matmul(delta, params[0])
        return tuple(grads), signal_in


@dataclass(frozen=True)
class PatchBlock:
    r"""A block of patch convolutions (kernel = stride = ``s``, ReLU; :mod:`sim.patch`), on flattened maps.

    The block reads maps ``(H, W, C)`` flattened to ``(..., N, H*W*C)`` (row-major,
    channels last) and applies, for each of its layers,
    :math:`a_{n,p} = W x_{n,p} + b`, :math:`h_{n,p} = \mathrm{relu}(a_{n,p})`
    on the non-overlapping :math:`s\times s` patches :math:`x_{n,p}`
    (:func:`sim.patch.extract_patches`); it returns the last map flattened,
    or, with ``n_classes`` (the network's output block), the linear readout
    :math:`z = A\,\mathrm{vec}(h) + c` of the flattened map. Parameters:
    ``(W_1, b_1, ..., W_k, b_k[, A, c])`` with ``W_l`` ``(E, k_l, s*s*C_{l-1})``.
    Same protocol as :class:`DenseBlock`; the backward pass folds patch signals
    back with :func:`sim.patch.fold_patches` (the adjoint of the patch cut).
    """

    input_shape: tuple
    widths: tuple
    patch_size: int
    n_classes: int | None = None

    def __post_init__(self):
        shape = tuple(int(v) for v in self.input_shape)
        widths = tuple(int(k) for k in self.widths)
        s = int(self.patch_size)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) with positive entries, got {self.input_shape}")
        if not widths or min(widths) < 1 or s < 1:
            raise ValueError(f"a patch block needs positive widths and patch size, got {self.widths}, "
                             f"{self.patch_size}")
        if shape[0] % s ** len(widths) or shape[1] % s ** len(widths):
            raise ValueError(f"maps of {shape[0]} x {shape[1]} cannot be cut {len(widths)} times into {s} x {s} "
                             f"patches")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "patch_size", s)

    def map_shapes(self) -> list[tuple[int, int, int]]:
        h, w, c = self.input_shape
        shapes = [(h, w, c)]
        for k in self.widths:
            h, w = h // self.patch_size, w // self.patch_size
            shapes.append((h, w, k))
        return shapes

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_map(self) -> int:
        return int(np.prod(self.map_shapes()[-1]))

    @property
    def n_out(self) -> int:
        return self.n_map if self.n_classes is None else int(self.n_classes)

    def shapes(self) -> list[tuple[int, ...]]:
        out, c = [], self.input_shape[2]
        for k in self.widths:
            out += [(k, self.patch_size ** 2 * c), (k,)]
            c = k
        if self.n_classes is not None:
            out += [(self.n_classes, self.n_map), (self.n_classes,)]
        return out

    def flops(self, batch: int, n_members: int = 1) -> float:
        total = 0.0
        for (h, w, _), k, c in zip(self.map_shapes()[1:], self.widths, [self.input_shape[2], *self.widths]):
            total += 2 * batch * h * w * k * self.patch_size ** 2 * c
        if self.n_classes is not None:
            total += 2 * batch * self.n_map * self.n_classes
        return float(n_members * total)

    def forward(self, params, h):
        from .patch import extract_patches

        xp = namespace(h, *params)
        n = h.shape[-2]
        maps = xp.reshape(h, (h.shape[0] if h.ndim == 3 else 1, n, *self.input_shape))
        patches, preacts = [], []
        for i in range(len(self.widths)):
            w, b = params[2 * i], params[2 * i + 1]
            p = extract_patches(maps, self.patch_size)
            a = xp.matmul(xp.reshape(p, (p.shape[0], -1, p.shape[-1])), xp.matrix_transpose(w)) + b[:, None, :]
            a = xp.reshape(a, (w.shape[0], *p.shape[1:-1], w.shape[1]))
            patches.append(p)
            preacts.append(a)
            maps = xp.maximum(a, xp.zeros_like(a))
        feats = xp.reshape(maps, (maps.shape[0], n, -1))
        if self.n_classes is None:
            return feats, (patches, preacts, None)
        a_out, c_out = params[-2], params[-1]
        return xp.matmul(feats, xp.matrix_transpose(a_out)) + c_out[:, None, :], (patches, preacts, feats)

    def backward(self, params, cache, signal, input_signal: bool = True):
        from .patch import fold_patches

        xp = namespace(signal, *params)
        patches, preacts, feats = cache
        n = signal.shape[-2]
        grads = [None] * len(params)
        if self.n_classes is not None:
            grads[-2] = signal_updates([signal], [feats])[0]
            grads[-1] = xp.mean(signal, axis=-2)
            signal = xp.matmul(signal, params[-2])
        g = xp.reshape(signal, preacts[-1].shape)
        signal_in = None
        channels = [self.input_shape[2], *self.widths]
        for i in range(len(self.widths) - 1, -1, -1):
            a = preacts[i]
            delta = g * xp.astype(a > 0, a.dtype)
            flat = xp.reshape(delta, (delta.shape[0], -1, delta.shape[-1]))
            p = patches[i]
            grads[2 * i] = xp.matmul(xp.matrix_transpose(flat), xp.reshape(p, (p.shape[0], -1, p.shape[-1]))) / n
            grads[2 * i + 1] = xp.sum(flat, axis=1) / n
            if i > 0 or input_signal:
                dp = xp.matmul(flat, params[2 * i])
                dp = xp.reshape(dp, (*delta.shape[:-1], dp.shape[-1]))
                g = fold_patches(dp, self.patch_size, channels[i])
        if input_signal:
            signal_in = xp.reshape(g, (g.shape[0], n, -1))
        return tuple(grads), signal_in


@dataclass(frozen=True)
class SyntheticGradientModule:
    r"""A linear synthetic-gradient module on a block's output (DNI; cDNI with ``n_label > 0``).

    It predicts the per-sample signal at the block output :math:`h` (``n``
    units), :math:`\mathrm{SG}(h, y) = h A^T + y C^T + c`, parameters
    ``(A, c)`` for DNI or ``(A, C, c)`` for cDNI with ``A`` ``(E, n, n)``, ``C``
    ``(E, n, n_label)``, ``c`` ``(E, n)``, all zero at initialisation (so the
    block's first update is exactly zero; Jaderberg et al. 2016). It is trained
    by regression, :math:`\ell = \frac{1}{2B}\sum_b\lVert \mathrm{SG}(h_b, y_b) -
    t_b\rVert^2`, towards the target :math:`t` the block above sends down: the
    signal at its input computed from its own synthetic gradient (the
    bootstrapped target of :mod:`sim.synthetic`; the true gradient for the block
    under the top). The same linear module as :func:`sim.synthetic.init_modules`
    (``inputs=("hidden",)`` or ``("hidden", "label")``), here at block level.
    """

    n: int
    n_label: int = 0

    def shapes(self) -> list[tuple[int, ...]]:
        out = [(self.n, self.n)]
        if self.n_label:
            out.append((self.n, self.n_label))
        return out + [(self.n,)]

    def init(self, n_members: int, xp, dtype: str) -> tuple:
        from .backend import get_dtype

        return tuple(xp.zeros((n_members, *shape), dtype=get_dtype(xp, dtype)) for shape in self.shapes())

    def predict(self, params, h, y):
        """The synthetic signal ``(E, B, n)`` at the block output."""
        xp = namespace(h, *params)
        out = xp.matmul(h, xp.matrix_transpose(params[0]))
        if self.n_label:
            out = out + xp.matmul(y, xp.matrix_transpose(params[1]))
        return out + params[-1][:, None, :]

    def regress(self, params, h, y, target):
        r"""Gradients of the regression loss and the loss ``(E,)``: :math:`\operatorname{mean}_b r_b u_b^T`."""
        xp = namespace(h, target, *params)
        residual = self.predict(params, h, y) - target
        grads = [signal_updates([residual], [h])[0]]
        if self.n_label:
            grads.append(signal_updates([residual], [y])[0])
        grads.append(xp.mean(residual, axis=-2))
        rows = residual.shape[-2]
        return tuple(grads), xp.sum(residual * residual, axis=(-2, -1)) / (2 * rows)


def attach_synthetic_gradients(net: BlockNetwork, *, conditioned: bool = False) -> BlockNetwork:
    """Replace the heads of ``net`` by zero-initialised synthetic-gradient modules (cDNI if ``conditioned``)."""
    xp = namespace(*net.params[0])
    dtype = str(net.params[0][0].dtype).split(".")[-1]
    n_label = net.blocks[-1].n_out if conditioned else 0
    heads, head_params = [], []
    for j, block in enumerate(net.blocks):
        if j == net.n_blocks - 1:
            heads.append(None)
            head_params.append(None)
            continue
        module = SyntheticGradientModule(block.n_out, n_label)
        heads.append(module)
        head_params.append(module.init(net.n_members, xp, dtype))
    return replace(net, heads=tuple(heads), head_params=tuple(head_params))


def synthetic_step(block, params, module, module_params, h_in, y, *, input_signal: bool = False) -> LocalStep:
    r"""DNI's step of a block below the top: update from the synthetic gradient of its own output.

    :math:`\delta = \mathrm{SG}(h_{out}, y)` at the output, back-propagated
    through the block only (update-unlocked). ``input_signal`` also returns
    :math:`\delta` carried to the block's input: the regression target of the
    module of the block below. ``loss`` is ``None`` (the module's regression
    loss is known only when its target arrives).
    """
    out, cache = block.forward(params, h_in)
    signal = module.predict(module_params, out, y)
    grads, signal_in = block.backward(params, cache, signal, input_signal=input_signal)
    return LocalStep(out, cache, None, grads, None, signal_in)


def make_head(kind: str, n_in: int, n_out: int, *, hidden: int = 0, activation: str = "relu") -> DenseBlock:
    r"""An auxiliary head: ``"linear"`` (:math:`z = h V^T`) or ``"mlp"`` (:math:`z = f(h U^T) V^T`).

    Raises
    ------
    ValueError
        Unknown kind, or an ``mlp`` head without a positive ``hidden`` width.
    """
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")
    if kind == "linear":
        return DenseBlock((n_in, n_out), activation, output=True)
    if isinstance(hidden, bool) or int(hidden) != hidden or hidden < 1:
        raise ValueError(f"an mlp head needs a positive integer hidden width, got {hidden!r}")
    return DenseBlock((n_in, int(hidden), n_out), activation, output=True)


def _gaussian_params(shapes, n_members: int, seed: int, component: str, stream: int, xp, dtype, scale=1.0):
    """Gaussian ``N(0, scale^2/n_in)`` arrays ``(E, *shape)``; member ``m`` uses its own stream."""
    host = [np.empty((n_members, *shape)) for shape in shapes]
    for m, rng in enumerate(member_rngs(seed, n_members, component)):
        sub = np.random.default_rng(np.random.SeedSequence(rng.integers(2**63), spawn_key=(stream,)))
        for arr, shape in zip(host, shapes):
            arr[m] = sub.normal(0.0, scale / np.sqrt(shape[-1]), size=shape)
    return tuple(to_device(a, xp, dtype) for a in host)


# --- block networks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockNetwork:
    """An ensemble network cut into blocks, with optional auxiliary heads.

    Attributes
    ----------
    blocks : tuple
        Block specifications (:class:`DenseBlock` or compatible); the last one
        ends with the network's linear output layer.
    params : tuple of tuple
        ``params[j]`` holds block ``j``'s arrays.
    heads : tuple
        ``heads[j]`` is block ``j``'s head specification, ``None`` for the last block.
    head_params : tuple
        ``head_params[j]``: the head's arrays (``None`` for the last block).
    loss : {"ce", "mse"}
        The network's loss (also the supervised local objective).
    """

    blocks: tuple
    params: tuple
    heads: tuple
    head_params: tuple
    loss: str = "ce"

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_members(self) -> int:
        return self.params[0][0].shape[0]

    def with_params(self, params=None, head_params=None) -> BlockNetwork:
        return replace(self, params=self.params if params is None else tuple(tuple(p) for p in params),
                       head_params=self.head_params if head_params is None else tuple(
                           None if h is None else tuple(h) for h in head_params))


def split_sizes(sizes: Sequence[int], layers_per_block) -> list[tuple[int, ...]]:
    """Cut layer ``sizes`` into consecutive blocks of ``layers_per_block`` layers (an int or one per block)."""
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    if isinstance(layers_per_block, int | np.integer):
        if layers_per_block < 1:
            raise ValueError(f"layers_per_block must be positive, got {layers_per_block}")
        counts = [int(layers_per_block)] * (n_layers // layers_per_block)
        if n_layers % layers_per_block:
            counts.append(n_layers % layers_per_block)
    else:
        counts = [int(c) for c in layers_per_block]
        if not counts or min(counts) < 1 or sum(counts) != n_layers:
            raise ValueError(f"layers_per_block must be positive counts summing to {n_layers} layers, "
                             f"got {layers_per_block}")
    out, start = [], 0
    for c in counts:
        out.append(tuple(sizes[start:start + c + 1]))
        start += c
    return out


def make_block_network(sizes: Sequence[int], n_members: int = 1, *, layers_per_block=1, seed: int = 0,
                       activation: str = "relu", loss: str = "ce", head: str = "linear", head_hidden: int = 0,
                       head_outputs: int | None = None, scale: float = 1.0, backend: str = "numpy",
                       dtype: str = "float64", xp=None) -> BlockNetwork:
    r"""A dense block network whose weights are those of :func:`sim.network.init_network`.

    The main weights are exactly ``init_network(sizes, n_members, seed=seed,
    scale=scale, activation=activation)``'s, so a block network and a plain
    :class:`sim.network.Network` trained by BP start from the same point. Heads
    (one per block but the last) draw from the members' ``"extra"`` streams,
    Gaussian :math:`\mathcal N(0, 1/n_{in})`.

    Parameters
    ----------
    sizes : sequence of int
        ``(n_0, ..., n_L)``.
    layers_per_block : int or sequence of int
        Layers in each block (see :func:`split_sizes`).
    head : {"linear", "mlp"}
        Auxiliary head kind; ``head_hidden`` is the MLP head's hidden width.
    head_outputs : int, optional
        Head output width (default ``n_L``: a classifier; set an embedding
        width for contrastive objectives).
    """
    check_loss(loss)
    check_activation(activation)
    xp = get_namespace(backend) if xp is None else xp
    net = init_network(sizes, n_members, seed=seed, scale=scale, activation=activation, xp=xp, dtype=dtype)
    block_sizes = split_sizes(net.sizes, layers_per_block)
    blocks, params, start = [], [], 0
    for j, bs in enumerate(block_sizes):
        blocks.append(DenseBlock(bs, activation, output=(j == len(block_sizes) - 1)))
        params.append(tuple(net.weights[start:start + len(bs) - 1]))
        start += len(bs) - 1
    head_outputs = net.sizes[-1] if head_outputs is None else int(head_outputs)
    return attach_heads(blocks, params, n_members=n_members, head=head, head_hidden=head_hidden,
                        head_outputs=head_outputs, activation=activation, loss=loss, seed=seed, dtype=dtype)


def attach_heads(blocks, params, *, n_members: int, head: str = "linear", head_hidden: int = 0,
                 head_outputs: int, activation: str = "relu", loss: str = "ce", seed: int = 0,
                 dtype: str = "float64") -> BlockNetwork:
    """A :class:`BlockNetwork` from given block specifications and arrays (any block kind), with fresh heads.

    Block ``j``'s head input width is ``blocks[j].n_out`` (its flattened output).
    """
    if len(blocks) != len(params) or not blocks:
        raise ValueError(f"got {len(blocks)} blocks and {len(params)} parameter groups; need one group per block")
    xp = namespace(*params[0])
    heads, head_params = [], []
    for j, block in enumerate(blocks):
        if j == len(blocks) - 1:
            heads.append(None)
            head_params.append(None)
            continue
        spec = make_head(head, block.n_out, head_outputs, hidden=head_hidden, activation=activation)
        heads.append(spec)
        head_params.append(_gaussian_params(spec.shapes(), n_members, seed, "extra", j, xp, dtype))
    return BlockNetwork(tuple(blocks), tuple(tuple(p) for p in params), tuple(heads), tuple(head_params),
                        check_loss(loss))


def make_patch_block_network(input_shape, widths, n_classes: int, n_members: int = 1, *, patch_size: int,
                             layers_per_block=1, seed: int = 0, head: str = "linear", head_hidden: int = 0,
                             head_outputs: int | None = None, scale: float = 1.0, backend: str = "numpy",
                             dtype: str = "float64", xp=None) -> BlockNetwork:
    """A patch network (:func:`sim.patch.init_patch_network`, ``flatten`` readout) cut into :class:`PatchBlock` blocks.

    The weights are exactly those of ``init_patch_network(input_shape, widths,
    n_classes, n_members, patch_size=patch_size, seed=seed, scale=scale)``; the
    last block carries the readout. Heads act on each block's flattened map.
    """
    from .patch import init_patch_network

    xp = get_namespace(backend) if xp is None else xp
    net = init_patch_network(input_shape, widths, n_classes, n_members, patch_size=patch_size, seed=seed,
                             kind="flatten", scale=scale, xp=xp, dtype=dtype)
    widths = [int(k) for k in widths]
    counts = [len(b) - 1 for b in split_sizes(list(range(len(widths) + 1)), layers_per_block)]
    blocks, params, start = [], [], 0
    shape = tuple(int(v) for v in input_shape)
    for j, count in enumerate(counts):
        last = j == len(counts) - 1
        block = PatchBlock(shape, tuple(widths[start:start + count]), patch_size, n_classes if last else None)
        group = []
        for i in range(start, start + count):
            group += [net.kernels[i], net.biases[i]]
        if last:
            group += [net.readout, net.readout_bias]
        blocks.append(block)
        params.append(tuple(group))
        shape = block.map_shapes()[-1]
        start += count
    return attach_heads(blocks, params, n_members=n_members, head=head, head_hidden=head_hidden,
                        head_outputs=n_classes if head_outputs is None else head_outputs, activation="relu",
                        loss="ce", seed=seed, dtype=dtype)


def to_network(net: BlockNetwork) -> Network:
    """The plain :class:`sim.network.Network` of a dense block network (heads dropped)."""
    if not all(isinstance(b, DenseBlock) for b in net.blocks):
        raise ValueError("only a network of DenseBlock blocks converts to a plain Network")
    activations = {b.activation for b in net.blocks}
    if len(activations) != 1:
        raise ValueError(f"blocks use different activations {sorted(activations)}; a Network has one")
    return Network(tuple(w for p in net.params for w in p), None, activations.pop())


def block_outputs(net: BlockNetwork, x) -> list:
    """The outputs ``h_1 .. h_K`` of every block on input ``x`` (the last is the network output)."""
    outs, h = [], x
    for block, params in zip(net.blocks, net.params):
        h, _ = block.forward(params, h)
        outs.append(h)
    return outs


def predict_blocks(net: BlockNetwork, x):
    """The network output ``(E, B, n_L)`` of a block network."""
    return block_outputs(net, x)[-1]


# --- objectives --------------------------------------------------------------------------------------

def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown local objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    return name


def _log_softmax(z):
    xp = namespace(z)
    z = z - xp.max(z, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def info_nce_from_scores(scores):
    r"""InfoNCE loss and its gradient from a score matrix with the positives on the diagonal.

    .. math:: L_N = -\frac1N \sum_{i=1}^N \log \frac{e^{S_{ii}}}{\sum_{k=1}^N e^{S_{ik}}},
              \qquad \frac{\partial L_N}{\partial S} = \frac{1}{N}\big(\operatorname{softmax}(S) - I\big),

    softmax taken along rows. For any critic, :math:`L_N \ge 0` so
    :math:`\log N - L_N \le \log N`; for scores :math:`S_{ik} = f(x_k, c_i)` of
    pairs drawn from :math:`p(x, c)`, :math:`\mathbb E[\log N - L_N] \le I(x; c)`
    (Oord et al. 2018; Poole et al. 2019).

    Parameters
    ----------
    scores : array ``(..., N, N)``
        Row ``i`` scores anchor ``i`` against every candidate; ``S_ii`` is its positive.

    Returns
    -------
    loss : array ``(...)``
    grad : array ``(..., N, N)``
    """
    xp = namespace(scores)
    if scores.ndim < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores must be square in their last two axes (..., N, N), got {tuple(scores.shape)}")
    n = scores.shape[-1]
    log_p = _log_softmax(scores)
    eye = xp.eye(n, dtype=scores.dtype)
    loss = -xp.sum(log_p * eye, axis=(-2, -1)) / n
    return loss, (xp.exp(log_p) - eye) / n


def _check_views(z1, z2, temperature):
    if z1.shape != z2.shape or z1.ndim < 2:
        raise ValueError(f"the two views must have the same shape (..., N, d), got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


def info_nce(z1, z2, temperature: float = 1.0):
    r"""InfoNCE of two views with the bilinear critic :math:`S = z^{(1)} z^{(2)T} / \tau`.

    Returns ``(loss, grad_z1, grad_z2)``: the loss ``(...)`` (one per member) and
    its exact gradients (see :func:`info_nce_from_scores`):
    :math:`\nabla_{z^{(1)}} = G z^{(2)}/\tau`, :math:`\nabla_{z^{(2)}} = G^T z^{(1)}/\tau`.
    """
    _check_views(z1, z2, temperature)
    xp = namespace(z1, z2)
    scores = xp.matmul(z1, xp.matrix_transpose(z2)) / temperature
    loss, g = info_nce_from_scores(scores)
    return loss, xp.matmul(g, z2) / temperature, xp.matmul(xp.matrix_transpose(g), z1) / temperature


def nt_xent(z1, z2, temperature: float = 0.5):
    r"""NT-Xent (SimCLR) of two views, with its exact gradient.

    With :math:`u_i = z_i / \lVert z_i \rVert` over the ``2N`` rows
    :math:`z = [z^{(1)}; z^{(2)}]` and :math:`s_{ik} = \langle u_i, u_k\rangle/\tau`,

    .. math:: L = \frac{1}{2N}\sum_{i=1}^{2N}\Big(-s_{i,p(i)} + \log\sum_{k\ne i} e^{s_{ik}}\Big),

    :math:`p(i) = i \pm N`. Equal embeddings give :math:`L = \log(2N-1)` for any
    :math:`\tau`, and :math:`L` is invariant under :math:`z \mapsto c z`, :math:`c > 0`.
    As in common implementations, :math:`u = z / \max(\lVert z\rVert, \epsilon)` with
    :math:`\epsilon` = ``NORM_EPS``, so a zero embedding (a dead relu unit) is allowed.
    With :math:`G = \partial L/\partial s` (zero diagonal), :math:`\partial L/\partial u =
    (G + G^T) u / \tau` and :math:`\partial L/\partial z_i = (I - u_i u_i^T)\,
    \partial L/\partial u_i / \lVert z_i\rVert`.

    Returns ``(loss, grad_z1, grad_z2)``.
    """
    _check_views(z1, z2, temperature)
    xp = namespace(z1, z2)
    n = z1.shape[-2]
    z = xp.concat([z1, z2], axis=-2)
    norms = xp.sqrt(xp.sum(z * z, axis=-1, keepdims=True))
    small = norms <= NORM_EPS
    norms = xp.where(small, xp.full(norms.shape, NORM_EPS, dtype=norms.dtype), norms)
    u = z / norms
    sim = xp.matmul(u, xp.matrix_transpose(u)) / temperature
    eye = xp.eye(2 * n, dtype=z.dtype)
    masked = xp.where(eye > 0, xp.full(sim.shape, -xp.inf, dtype=sim.dtype), sim)
    log_p = _log_softmax(masked)
    idx = xp.arange(2 * n)
    partner = (idx + n) % (2 * n)
    positive = xp.astype(partner[None, :] == idx[:, None], z.dtype)  # positive[i, k] = [k == p(i)]
    log_p = xp.where(eye > 0, xp.zeros_like(log_p), log_p)
    loss = -xp.sum(log_p * positive, axis=(-2, -1)) / (2 * n)
    g = (xp.exp(log_p) * (1 - eye) - positive) / (2 * n)
    grad_u = xp.matmul(g + xp.matrix_transpose(g), u) / temperature
    projected = grad_u - u * xp.sum(u * grad_u, axis=-1, keepdims=True)
    grad_z = xp.where(small, grad_u, projected) / norms
    return loss, grad_z[..., :n, :], grad_z[..., n:, :]


def objective_signal(objective: str, z, y, *, loss: str = "ce", temperature: float = 0.5):
    r"""Value ``(E,)`` and per-sample signal :math:`R\,\partial\ell/\partial z` of a local objective.

    ``supervised``: the network loss (``ce`` or ``mse``) of the head output ``z``
    against ``y``. ``infonce`` / ``ntxent``: the contrastive loss of the two
    views held in the halves of ``z``'s ``R = 2N`` rows (``y`` unused).
    """
    check_objective(objective)
    if objective == "supervised":
        return loss_value(z, y, loss), output_error(z, y, loss)
    xp = namespace(z)
    rows = z.shape[-2]
    if rows % 2:
        raise ValueError(f"a contrastive objective needs an even number of rows (two views), got {rows}")
    n = rows // 2
    fn = info_nce if objective == "infonce" else nt_xent
    value, g1, g2 = fn(z[..., :n, :], z[..., n:, :], temperature)
    return value, xp.concat([g1, g2], axis=-2) * rows


# --- one block, one batch ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalStep:
    """What one local step of a block produces on one batch.

    ``output`` (the block output sent up, computed before any update), ``cache``
    (for a later backward), ``loss`` ``(E,)`` (local or network loss), ``grads``
    (block), ``head_grads`` (``None`` for the top block), ``signal_in`` (the
    per-sample gradient of this loss at the block's input, when asked).
    """

    output: object
    cache: object
    loss: object
    grads: tuple
    head_grads: tuple | None
    signal_in: object = None


def local_step(block, params, head, head_params, h_in, y, *, objective: str = "supervised", loss: str = "ce",
               temperature: float = 0.5, input_signal: bool = False) -> LocalStep:
    r"""Forward a block on a detached input and back-propagate its own loss only.

    With a head: :math:`\ell = \ell_{obj}(g(f(h_{in}; \theta); \phi), y)` and the
    step returns :math:`\nabla_\theta \ell, \nabla_\phi \ell`. Without a head (the
    top block): the network loss of the block output. ``h_in`` is a plain array,
    so nothing flows below the block unless ``input_signal`` asks for
    :math:`B\,\partial \ell/\partial h_{in}` (used by ``overlap``).
    """
    out, cache = block.forward(params, h_in)
    if head is None:
        value, signal = objective_signal("supervised", out, y, loss=loss)
        grads, signal_in = block.backward(params, cache, signal, input_signal=input_signal)
        return LocalStep(out, cache, value, grads, None, signal_in)
    z, head_cache = head.forward(head_params, out)
    value, signal_z = objective_signal(objective, z, y, loss=loss, temperature=temperature)
    head_grads, signal_out = head.backward(head_params, head_cache, signal_z, input_signal=True)
    grads, signal_in = block.backward(params, cache, signal_out, input_signal=input_signal)
    return LocalStep(out, cache, value, grads, head_grads, signal_in)


# --- rules -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockRule:
    """A rule on a block network: what it trains with and what it must wait for.

    ``feedback`` is what travels down: ``None`` (nothing), ``"neighbour"`` (the
    block above's local-loss signal, one block down), ``"chain"`` (BP's signal,
    block by block), ``"direct"`` (the output error, broadcast to every block),
    ``"synthetic"`` (the block above's input signal, the regression target of a
    synthetic-gradient module; the block's weights do not wait for it).
    ``local_heads``: blocks below the top are trained by auxiliary heads.
    ``staged``: blocks are trained one after the other (greedy).
    """

    name: str
    title: str
    locking: Locking
    feedback: str | None
    local_heads: bool
    staged: bool = False
    paper: str = ""

    def __post_init__(self):
        if self.feedback not in FEEDBACK_KINDS:
            raise ValueError(f"unknown feedback {self.feedback!r}; allowed: {FEEDBACK_KINDS}")
        if not isinstance(self.locking, Locking):
            raise ValueError(f"locking must be a sim.rules.Locking, got {self.locking!r}")


BLOCK_RULES: dict[str, BlockRule] = {
    "bp": BlockRule("bp", "back-propagation", Locking(True, True, True), "chain", False),
    "dfa": BlockRule("dfa", "direct feedback alignment (per block)", Locking(True, True, False), "direct", False,
                     paper="Nøkland 2016"),
    "greedy": BlockRule("greedy", "sequential greedy layerwise", Locking(True, False, False), None, True, True,
                        paper="Belilovsky et al. 2019"),
    "dgl": BlockRule("dgl", "decoupled greedy learning", Locking(True, False, False), None, True,
                     paper="Belilovsky et al. 2020"),
    "async-dgl": BlockRule("async-dgl", "asynchronous DGL with a replay buffer", Locking(False, False, False),
                           None, True, paper="Belilovsky et al. 2020"),
    "overlap": BlockRule("overlap", "overlapping local blocks (LoCo)", Locking(True, False, True), "neighbour",
                         True, paper="Xiong et al. 2020 (LoCo); compared for parallel training by Laskin et al. 2020"),
    "sg": BlockRule("sg", "synthetic gradients (DNI) between blocks", Locking(True, False, False), "synthetic",
                     False, paper="Jaderberg et al. 2016"),
    "cdni": BlockRule("cdni", "label-conditioned synthetic gradients (cDNI)", Locking(True, False, False),
                      "synthetic", False, paper="Jaderberg et al. 2016"),
}


def get_block_rule(rule) -> BlockRule:
    """The :class:`BlockRule` named ``rule`` (a :class:`BlockRule` is returned as is)."""
    if isinstance(rule, BlockRule):
        return rule
    if rule not in BLOCK_RULES:
        raise ValueError(f"unknown block rule {rule!r}; allowed: {', '.join(BLOCK_RULES)}")
    return BLOCK_RULES[rule]


def draw_block_feedback(net: BlockNetwork, *, seed: int = 0, scale: float = 1.0) -> list:
    """DFA's fixed matrices ``B_j`` ``(E, n_j, n_L)`` for the outputs of blocks ``1 .. K-1``."""
    xp = namespace(*net.params[0])
    sizes = [net.blocks[0].n_in] + [b.n_out for b in net.blocks]
    dtype = str(net.params[0][0].dtype).split(".")[-1]
    return draw_feedback("dfa", sizes, net.n_members, seed=seed, scale=scale, xp=xp, dtype=dtype) or []


@dataclass(frozen=True)
class BlockUpdates:
    """The updates one rule applies on one batch (synchronous form).

    ``grads[j]`` (tuple per block, ``None`` for a block the rule does not train
    on this batch), ``head_grads[j]``, ``losses[j]`` ``(E,)`` (local losses,
    the last is the network loss), ``outputs[j]`` the block outputs.
    """

    grads: list
    head_grads: list
    losses: list
    outputs: list = field(default_factory=list)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return tuple(x + y for x, y in zip(a, b))


def block_updates(rule, net: BlockNetwork, x, y, *, objective: str = "supervised", feedback=None,
                  stage: int | None = None, temperature: float = 0.5) -> BlockUpdates:
    r"""The updates of ``rule`` on one batch, every block computed from the same parameters.

    This is the synchronous form: what the sequential schedule applies on a
    batch when nothing is stale (:mod:`sim.parallel` with ``pipelined=False``;
    for ``dgl`` and ``greedy`` also the pipelined schedule). ``async-dgl`` on
    one batch is ``dgl``.

    Parameters
    ----------
    rule : {"bp", "dfa", "greedy", "dgl", "async-dgl", "overlap", "sg", "cdni"}
    net : BlockNetwork
        ``sg`` / ``cdni`` need synthetic-gradient modules as heads
        (:func:`attach_synthetic_gradients`); their ``head_grads`` are the
        modules' regression gradients and ``losses[j]`` their regression losses.
    x, y : arrays
        The batch (``(B, n_0)`` or ``(E, B, n_0)``); for a contrastive
        objective ``x`` holds the two views in its halves.
    objective : {"supervised", "infonce", "ntxent"}
        The local objective of the heads.
    feedback : list, optional
        DFA's matrices (:func:`draw_block_feedback`).
    stage : int, optional
        Greedy: the block being trained (the others get ``None``).

    Raises
    ------
    ValueError
        Unknown rule or objective; DFA without feedback; greedy without a valid stage.
    """
    rule = get_block_rule(rule)
    check_objective(objective)
    k = net.n_blocks
    grads, head_grads, losses, outputs = [None] * k, [None] * k, [None] * k, []
    if rule.name in ("bp", "dfa"):
        caches, h = [], x
        for block, params in zip(net.blocks, net.params):
            h, cache = block.forward(params, h)
            outputs.append(h)
            caches.append(cache)
        error = output_error(h, y, net.loss)
        losses[-1] = loss_value(h, y, net.loss)
        if rule.name == "dfa":
            if feedback is None or len(feedback) != k - 1:
                raise ValueError(f"dfa needs {k - 1} feedback matrices (see draw_block_feedback)")
            xp = namespace(error)
            for j in range(k):
                signal = error if j == k - 1 else xp.matmul(error, xp.matrix_transpose(feedback[j]))
                grads[j], _ = net.blocks[j].backward(net.params[j], caches[j], signal, input_signal=False)
        else:
            signal = error
            for j in range(k - 1, -1, -1):
                grads[j], signal = net.blocks[j].backward(net.params[j], caches[j], signal, input_signal=j > 0)
        return BlockUpdates(grads, head_grads, losses, outputs)
    if rule.feedback == "synthetic":
        return _synthetic_updates(rule, net, x, y)
    if rule.staged:
        if stage is None or isinstance(stage, bool) or not 0 <= int(stage) < k:
            raise ValueError(f"greedy needs the stage being trained, an integer in [0, {k - 1}], got {stage!r}")
        stage = int(stage)
    h, caches = x, []
    for j in range(k):
        if rule.staged and j > stage:
            break
        if rule.staged and j < stage:
            h, _ = net.blocks[j].forward(net.params[j], h)
            outputs.append(h)
            caches.append(None)
            continue
        step = local_step(net.blocks[j], net.params[j], net.heads[j], net.head_params[j], h, y,
                          objective=objective, loss=net.loss, temperature=temperature,
                          input_signal=(rule.feedback == "neighbour" and j > 0))
        grads[j], head_grads[j], losses[j] = _add(grads[j], step.grads), step.head_grads, step.loss
        if step.signal_in is not None:  # overlap: this loss also trains the block below
            below, _ = net.blocks[j - 1].backward(net.params[j - 1], caches[j - 1], step.signal_in,
                                                  input_signal=False)
            grads[j - 1] = _add(grads[j - 1], below)
        outputs.append(step.output)
        caches.append(step.cache)
        h = step.output
    return BlockUpdates(grads, head_grads, losses, outputs)


def _synthetic_updates(rule: BlockRule, net: BlockNetwork, x, y) -> BlockUpdates:
    """DNI / cDNI on one batch: weights from the modules, modules regressed on the block above's input signal."""
    k = net.n_blocks
    for j in range(k - 1):
        if not isinstance(net.heads[j], SyntheticGradientModule) or (
                rule.name == "cdni") != bool(net.heads[j].n_label):
            raise ValueError(f"rule {rule.name!r} needs synthetic-gradient modules on blocks 0 .. {k - 2}: "
                             f"attach_synthetic_gradients(net, conditioned={rule.name == 'cdni'})")
    grads, head_grads, losses, outputs, signals = [None] * k, [None] * k, [None] * k, [], [None] * k
    h = x
    for j in range(k):
        if j == k - 1:
            step = local_step(net.blocks[j], net.params[j], None, None, h, y, loss=net.loss, input_signal=j > 0)
            losses[j] = step.loss
        else:
            step = synthetic_step(net.blocks[j], net.params[j], net.heads[j], net.head_params[j], h, y,
                                  input_signal=j > 0)
        grads[j], signals[j] = step.grads, step.signal_in
        outputs.append(step.output)
        h = step.output
    for j in range(k - 1):
        head_grads[j], losses[j] = net.heads[j].regress(net.head_params[j], outputs[j], y, signals[j + 1])
    return BlockUpdates(grads, head_grads, losses, outputs)


def apply_updates(net: BlockNetwork, updates: BlockUpdates, lr, head_lr=None) -> BlockNetwork:
    r"""One SGD step :math:`\theta \leftarrow \theta - \eta\,\Delta\theta` on every updated block and head.

    ``lr`` is a number or one rate per member ``(E,)``; ``head_lr`` the heads'
    (and synthetic-gradient modules') rate, default ``lr``.
    """
    head_lr = lr if head_lr is None else head_lr

    def head_step(params, grads):
        return step(params, grads, head_lr)

    def step(params, grads, rate=lr):
        if grads is None:
            return params
        xp = namespace(*params)
        out = []
        for p, g in zip(params, grads):
            r = rate if np.ndim(rate) == 0 else xp.reshape(xp.asarray(rate, dtype=p.dtype), (-1,) + (1,) * (p.ndim - 1))
            out.append(p - r * g)
        return tuple(out)

    params = [step(p, g) for p, g in zip(net.params, updates.grads)]
    heads = [None if hp is None else head_step(hp, g) for hp, g in zip(net.head_params, updates.head_grads)]
    return net.with_params(params, heads)


# --- views for contrastive objectives ----------------------------------------------------------------

def two_views(x: np.ndarray, rng: np.random.Generator, *, noise: float = 0.3, drop: float = 0.2) -> np.ndarray:
    r"""Two augmented views of each row of ``x`` (host arrays), stacked to ``(2N, n)``.

    View :math:`v = m \odot x + \sigma \varepsilon` with a random keep-mask
    :math:`m_i \sim \text{Bernoulli}(1 - \text{drop})` and Gaussian noise
    :math:`\varepsilon`; the two views of a sample share only ``x``.
    """
    if noise < 0 or not 0 <= drop < 1:
        raise ValueError(f"noise must be >= 0 and drop in [0, 1), got noise={noise}, drop={drop}")
    x = np.asarray(x, dtype=float)
    views = []
    for _ in range(2):
        mask = rng.random(x.shape) >= drop
        views.append(mask * x + noise * rng.normal(size=x.shape))
    return np.concatenate(views, axis=0)


def hierarchical_views(sample, *, level: int = 1):
    r"""Views for contrastive objectives on hierarchical images: two images from the same upper-level symbols.

    ``sample`` is a :class:`sim.data.hierarchical.HierarchicalSample`. For the
    rows of a batch, the level-``level`` symbol grids are expanded again, twice
    and independently, down to pixels (variants, distractors and pixel noise
    redrawn), so the two views share the label and every symbol of levels
    ``<= level`` and nothing below. Returns ``views(rows, rng) -> (x, y)`` with
    ``x`` ``(2B, side*side)`` (view 1 then view 2) and one-hot ``y`` ``(2B, K)``,
    as :class:`sim.parallel.BatchPlan` expects.
    """
    from .data.hierarchical import expand_level, render

    grammar = sample.grammar
    if isinstance(level, bool) or not 0 <= int(level) <= grammar.depth:
        raise ValueError(f"level must be an integer in [0, {grammar.depth}], got {level!r}")
    level = int(level)
    distractors = np.asarray(grammar.distractor_symbols, dtype=np.int64)

    def views(rows, rng):
        rows = np.asarray(rows)
        top = sample.latents[level][rows] if level > 0 else sample.labels[rows].reshape(-1, 1, 1)
        images = []
        for _ in range(2):
            grid = np.asarray(top)
            if level < grammar.depth:
                for i in range(level, grammar.depth):
                    grid = expand_level(grammar, i, grid, rng)
                if grammar.distractor > 0 and distractors.size:
                    hit = (grid == grammar.background) & (rng.random(grid.shape) < grammar.distractor)
                    grid[hit] = distractors[rng.integers(0, distractors.size, size=int(hit.sum()))]
            img = render(grammar, grid) + grammar.noise * rng.normal(size=(len(rows), grammar.image_size,
                                                                           grammar.image_size))
            images.append(img.reshape(len(rows), -1))
        y = np.eye(grammar.n_classes)[sample.labels[rows]]
        return np.concatenate(images), np.concatenate([y, y])

    return views


# --- the replay buffer of asynchronous DGL -------------------------------------------------------------

class ReplayBuffer:
    r"""The buffer of at most ``M`` batches between two blocks of asynchronous DGL.

    The block below :meth:`push`\ es its outputs; when the buffer holds ``M``
    entries the oldest is dropped, so its size never exceeds ``M``. The block
    above :meth:`sample`\ s the *least-used* entry, ties going to the freshest
    (most recently pushed), and counts the use; with ``reuse_cap`` an entry
    used that many times is removed. With ``M = 1`` and one push before each
    sample, every sample is the batch just pushed: asynchronous DGL is then DGL.

    Thread-safe: :meth:`wait` blocks until something can be sampled.
    """

    def __init__(self, capacity: int, reuse_cap: int | None = None):
        if isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
            raise ValueError(f"the buffer capacity M must be a positive integer, got {capacity!r}")
        if reuse_cap is not None and (isinstance(reuse_cap, bool) or int(reuse_cap) != reuse_cap or reuse_cap < 1):
            raise ValueError(f"reuse_cap must be a positive integer or None, got {reuse_cap!r}")
        self.capacity = int(capacity)
        self.reuse_cap = None if reuse_cap is None else int(reuse_cap)
        self._entries: list[list] = []  # [item, uses, order]
        self._order = 0
        self.max_size = 0
        self.pushed = 0
        self.dropped_unused = 0
        self.closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def push(self, item) -> None:
        """Add an entry (the freshest); drop the oldest if that would exceed ``M``."""
        with self._cond:
            self._entries.append([item, 0, self._order])
            self._order += 1
            self.pushed += 1
            while len(self._entries) > self.capacity:
                oldest = min(range(len(self._entries)), key=lambda i: self._entries[i][2])
                if self._entries[oldest][1] == 0:
                    self.dropped_unused += 1
                self._entries.pop(oldest)
            self.max_size = max(self.max_size, len(self._entries))
            self._cond.notify_all()

    def sample(self):
        """The least-used, freshest entry (``None`` when empty); counts one use."""
        with self._cond:
            if not self._entries:
                return None
            i = min(range(len(self._entries)), key=lambda i: (self._entries[i][1], -self._entries[i][2]))
            entry = self._entries[i]
            entry[1] += 1
            if self.reuse_cap is not None and entry[1] >= self.reuse_cap:
                self._entries.pop(i)
            return entry[0]

    def has_unused(self) -> bool:
        with self._cond:
            return any(e[1] == 0 for e in self._entries)

    def close(self) -> None:
        """Mark that nothing more will be pushed (wakes waiters)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until the buffer is non-empty or closed (or ``timeout`` s); True if non-empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._entries or self.closed, timeout=timeout)
            return bool(self._entries)
