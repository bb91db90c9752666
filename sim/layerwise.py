r"""The layerwise algorithm of Malach & Shalev-Shwartz (2018) and its two baselines, on patch networks.

Layerwise (train, cluster, recode; level by level from the bottom)
------------------------------------------------------------------
The input of level 1 is the image (one channel). At every level :math:`j`:

1. train a two-layer patch network by SGD: a patch convolution (kernel = stride
   = :math:`s`, ``hidden`` channels, ReLU) and one linear classifier applied to every
   patch (:class:`sim.patch.PatchNetwork` with the ``patch`` readout), each patch
   trained to predict the image's label. At the optimum the patch's output
   :math:`\mathrm{softmax}(u_p)` is :math:`P(y \mid x_p)`, which under the model
   depends on the patch only through the symbol that generated it: its *label
   statistics* (:func:`sim.data.hierarchical.label_statistics`);
2. embed every patch of the training images by that output (``embedding="label"``;
   ``"hidden"`` uses the ReLU layer, ``"input"`` the raw patch, as controls) and
   cluster the embeddings with k-means (:func:`scipy.cluster.vq.kmeans2`,
   ``++`` initialisation, seeded, best of ``kmeans_restarts``) into as many
   clusters as the level's alphabet has symbols;
3. replace every patch by the one-hot code of its cluster: an
   :math:`H/s \times W/s` map with one channel per cluster, the next level's input.

After the last level a linear classifier on the flattened top code map predicts
the label (``top_classifier``; the default is full-batch gradient descent on the
L2-regularised multinomial logistic loss; :mod:`theory.convex` gives exact
solvers). Symbols with equal label statistics get the same embedding and are
merged by the clustering: the algorithm's predicted failure mode.

Recovery of a level is measured by the adjusted Rand index between the cluster
of every patch and the true symbol that generated it
(:func:`adjusted_rand_index`, invariant to renaming the clusters).

Baselines on the same architecture and data
-------------------------------------------
``end-to-end`` (:func:`fit_end_to_end`)
    The same stack of patch convolutions (``depth`` layers, ``hidden`` channels)
    and a linear readout of the flattened top map, trained by back-propagation.
``greedy`` (:func:`fit_greedy`)
    Greedy layerwise training with auxiliary classifiers, no clustering
    (Belilovsky et al. 2019): layer :math:`j` (patch convolution + ReLU) is trained
    with its own linear classifier of the flattened map, then frozen; its ReLU map
    is the next layer's input; the last auxiliary classifier is the output.

``linear``, ``random-features``, ``mlp``, ``cnn``
    Shallow and generic baselines on the pixels (:mod:`sim.baselines`), which
    bound the question from below and from the side: the CNN's kernels and strides
    are not the grammar's, while ``end-to-end`` has the oracle architecture.

Departures from the paper are options of :class:`TrainSettings`, the paper's choice
available: ``embedding`` (``label`` is the paper's; ``hidden`` and ``input`` cluster the
hidden layer or the raw patch), ``oversample`` (1 is the paper's plain k-means; r > 1
oversamples and merges by Ward's linkage), ``cluster_count`` (``given``: the true
alphabet size, as the analysis assumes; ``silhouette`` or ``gap``: estimated from the data), and
``clustering="random"`` as a control (the broken clustering of the claims).

The top classifier is linear by default; ``top="mlp"`` fits the two-layer network
of the paper's last level to the whole one-hot top map, which can read an
arrangement of symbols (:mod:`sim.data.arrangements`).

Every member of an ensemble trains at once (a leading axis ``E``). Inputs may be
shared ``(N, H, W)`` or per member ``(E, N, H, W)`` (each member its own training
sample); the k-means step runs per member on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from .backend import blas_policy, get_namespace, namespace, shared_rng, to_device, to_host
from .divergence import DIVERGENCE_FACTOR, Divergence, check_divergence_factor
from .clustering import (  # noqa: F401  (re-exported: the clustering step lives in sim.clustering)
    CLUSTER_COUNTS,
    Clustering,
    adjusted_rand_index,
    contingency_table,
    estimate_n_clusters,
    gap_statistic,
    kmeans,
    random_clustering,
)
from .patch import (
    OPTIMIZERS,
    PatchNetwork,
    _log_softmax,
    _relu,
    evaluate_in_chunks,
    init_patch_network,
    patch_forward,
    patch_logits,
    train_patch_network,
)


EMBEDDINGS = ("label", "hidden", "input")
#: Top classifiers on the one-hot top code map: ``linear`` (softmax regression) or ``mlp`` (the paper's
#: two-layer network on the whole top patch, :mod:`sim.baselines`), which reads arrangements of symbols.
TOPS = ("linear", "mlp")
#: The clustering step: k-means (the paper's), or ``random`` cluster labels (a control: the broken clustering).
CLUSTERINGS = ("kmeans", "random")


# --------------------------------------------------------------------------------------------
# settings, data handling
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSettings:
    """SGD settings shared by the layerwise algorithm and the baselines.

    ``hidden`` channels per patch convolution; ``steps`` SGD steps per trained
    network (per level for layerwise and greedy); ``lr``, ``momentum``,
    ``batch_size``, ``weight_decay`` as in :func:`sim.patch.train_patch_network`.
    ``embedding``, ``kmeans_restarts`` and ``kmeans_points`` concern the layerwise
    clustering; ``top_l2``, ``top_steps`` and ``top_lr`` the default top classifier; ``top``
    (``linear`` or ``mlp``, :data:`TOPS`) and ``top_width`` the top classifier's kind.
    ``clustering`` (``kmeans``, or ``random`` as a control) and ``cluster_count``
    (``given``: the alphabet sizes passed to :func:`fit_layerwise`, the paper's
    oracle; ``silhouette``: estimated per level and member from the data by
    :func:`sim.clustering.estimate_n_clusters` over 2 .. ``max_clusters``; ``gap``: by
    the gap statistic, :func:`sim.clustering.gap_statistic`, over the same range).
    ``divergence_factor``: a member whose loss exceeds this many times its first
    loss diverges (see :func:`sim.patch.train_patch_network`).
    """

    hidden: int = 32
    steps: int = 400
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    embedding: str | tuple = "label"
    kmeans_restarts: int = 10
    kmeans_points: int = 5000
    oversample: int | tuple = 1
    top_l2: float = 1e-3
    top_steps: int = 300
    top_lr: float = 1.0
    top: str = "linear"
    top_width: int = 128
    clustering: str = "kmeans"
    cluster_count: str = "given"
    max_clusters: int = 24
    dtype: str = "float64"
    divergence_factor: float = DIVERGENCE_FACTOR

    def level_embedding(self, level: int) -> str:
        """The embedding of level ``level`` (0 = bottom)."""
        emb = self.embedding
        return emb if isinstance(emb, str) else tuple(emb)[min(level, len(emb) - 1)]

    def level_oversample(self, level: int) -> int:
        """The k-means oversampling of level ``level`` (0 = bottom)."""
        over = self.oversample
        return int(over) if isinstance(over, int) else int(tuple(over)[min(level, len(over) - 1)])

    def __post_init__(self):
        for emb in ((self.embedding,) if isinstance(self.embedding, str) else tuple(self.embedding)):
            if emb not in EMBEDDINGS:
                raise ValueError(f"unknown embedding {emb!r}; allowed: {', '.join(EMBEDDINGS)} (or one per level)")
        for over in ((self.oversample,) if isinstance(self.oversample, int) else tuple(self.oversample)):
            if isinstance(over, bool) or int(over) != over or over < 1:
                raise ValueError(f"oversample must be a positive integer (or one per level), got {self.oversample!r}")
        if self.clustering not in CLUSTERINGS:
            raise ValueError(f"unknown clustering {self.clustering!r}; allowed: {', '.join(CLUSTERINGS)}")
        if self.cluster_count not in CLUSTER_COUNTS:
            raise ValueError(f"unknown cluster_count {self.cluster_count!r}; allowed: {', '.join(CLUSTER_COUNTS)}")
        if isinstance(self.max_clusters, bool) or int(self.max_clusters) != self.max_clusters or self.max_clusters < 2:
            raise ValueError(f"max_clusters must be an integer >= 2, got {self.max_clusters!r}")
        if self.top not in TOPS:
            raise ValueError(f"unknown top {self.top!r}; allowed: {', '.join(TOPS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        for name in ("hidden", "batch_size", "kmeans_restarts", "kmeans_points", "top_width"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("steps", "top_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if not (self.lr > 0 and self.top_lr > 0 and self.top_l2 >= 0 and self.weight_decay >= 0):
            raise ValueError("lr and top_lr must be positive, top_l2 and weight_decay non-negative")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_divergence_factor(self.divergence_factor)

    def train_options(self) -> dict:
        """The keyword arguments of :func:`sim.patch.train_patch_network` these settings fix."""
        return dict(lr=self.lr, batch_size=self.batch_size, momentum=self.momentum, weight_decay=self.weight_decay,
                    optimizer=self.optimizer, divergence_factor=self.divergence_factor)


def _as_maps(images, n_members: int, xp, dtype: str):
    """Single-channel images ``(N, H, W)`` (shared) or ``(E, N, H, W)`` (per member) -> maps with a channel axis."""
    shape = tuple(images.shape)
    if len(shape) == 4 and shape[0] != n_members:
        raise ValueError(f"per-member images (E, N, H, W) must have E = {n_members} members, got shape {shape}")
    if len(shape) not in (3, 4):
        raise ValueError(f"images must be (N, H, W) or (E, N, H, W), got shape {shape}")
    x = images if not isinstance(images, np.ndarray) and namespace(images) is xp else to_device(images, xp, dtype)
    return xp.reshape(x, (*shape, 1))


def _check_labels(labels, n: int, n_classes: int, n_members: int) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape not in ((n,), (n_members, n)):
        raise ValueError(f"labels must be integers of shape ({n},) or ({n_members}, {n}), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{labels.min()}, {labels.max()}]")
    return labels


def _one_hot_targets(labels: np.ndarray, n_classes: int, xp, dtype: str):
    return to_device(np.eye(n_classes)[labels], xp, dtype)


def _level_seeds(seed: int, n: int) -> list[int]:
    return [int(v) for v in shared_rng(seed, "extra").integers(0, 2 ** 31 - 1, size=n)]


def one_hot_maps(codes: np.ndarray, n_codes: int, xp, dtype: str):
    """Integer code maps ``(E, N, H, W)`` -> one-hot maps ``(E, N, H, W, n_codes)`` on ``xp``."""
    return to_device(np.eye(n_codes, dtype=dtype)[codes], xp, dtype)


# --------------------------------------------------------------------------------------------
# the default top classifier
# --------------------------------------------------------------------------------------------

def softmax_regression_objective(weights, features, targets, l2: float):
    r"""Objective and gradient of L2-regularised multinomial logistic regression, per member.

    .. math:: f(W) = \frac1N\sum_n \Big[\log\sum_k e^{(x_n W)_k} - (x_n W)_{y_n}\Big]
              + \frac\lambda2\lVert W\rVert_F^2,\qquad
              \nabla f = \tfrac1N X^T(\mathrm{softmax}(XW) - Y) + \lambda W .

    ``weights`` ``(E, F, K)``, ``features`` ``(E, N, F)``, ``targets`` one-hot
    ``(N, K)`` or ``(E, N, K)``. Returns ``(f (E,), grad (E, F, K))``.
    """
    xp = namespace(weights, features)
    n = features.shape[-2]
    z = xp.matmul(features, weights)
    logp = _log_softmax(z)
    value = -xp.sum(targets * logp, axis=(-2, -1)) / n + 0.5 * l2 * xp.sum(weights * weights, axis=(-2, -1))
    grad = xp.matmul(xp.matrix_transpose(features), xp.exp(logp) - targets) / n + l2 * weights
    return value, grad


def fit_softmax_regression(features, targets, *, l2: float = 1e-3, steps: int = 300, lr: float = 1.0,
                           momentum: float = 0.9):
    r"""Full-batch gradient descent with momentum on :func:`softmax_regression_objective`, every member at once.

    The default top classifier of the layerwise algorithm (no solver certificate;
    :mod:`theory.convex` solves the same objective to optimality).
    Returns the weights ``(E, F, K)``.
    """
    xp = namespace(features)
    k = targets.shape[-1]
    w = xp.zeros((features.shape[0], features.shape[-1], k), dtype=features.dtype)
    v = xp.zeros_like(w)
    for _ in range(int(steps)):
        _, g = softmax_regression_objective(w, features, targets, l2)
        v = momentum * v + g
        w = w - lr * v
    return w


# --------------------------------------------------------------------------------------------
# the layerwise algorithm
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerwiseModel:
    """A fitted layerwise model.

    Attributes
    ----------
    nets : list of PatchNetwork
        The two-layer network of every level, bottom first.
    clusterings : list of lists of Clustering
        ``clusterings[j][m]``: the k-means clustering of level ``j`` of member ``m``.
    top_weights : array
        ``(E, F, K)``: the top classifier on the flattened one-hot top code map.
    n_clusters : tuple of int
        Clusters per level, bottom first.
    train_codes : list of host int arrays
        ``(E, N, H_j, W_j)``: the cluster of every training patch, per level.
    settings : TrainSettings
    patch_size : int
    top_model : BaselineModel or None
        The two-layer top network when ``settings.top == "mlp"`` (then ``top_weights`` is None).
    cluster_counts : tuple of tuples of int
        The clusters used per level (bottom first) and member: the given ones, or the estimates.
    """

    nets: list
    clusterings: list
    top_weights: object
    n_clusters: tuple
    train_codes: list
    settings: TrainSettings
    patch_size: int
    top_model: object = None
    cluster_counts: tuple = ()

    @property
    def n_members(self) -> int:
        return self.nets[0].n_members


def patch_embeddings(net: PatchNetwork, x, embedding: str = "label", chunk: int = 1024):
    r"""The embedding of every patch, ``(E, N, H', W', dim)`` on the host.

    ``label``: :math:`\mathrm{softmax}(u_p)`, the patch's predicted label
    distribution; ``hidden``: the ReLU layer :math:`h_p`; ``input``: the raw patch.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; allowed: {', '.join(EMBEDDINGS)}")
    xp = namespace(x, net.readout)

    def embed(xb):
        fwd = patch_forward(net, xb)
        if embedding == "label":
            out = xp.exp(_log_softmax(fwd.logits))
            return xp.reshape(out, (*fwd.top.shape[:-1], out.shape[-1]))
        if embedding == "hidden":
            return fwd.top
        p = fwd.patches[0]
        return p if p.shape[0] == net.n_members else xp.broadcast_to(p, (net.n_members, *p.shape[1:]))

    return to_host(evaluate_in_chunks(embed, x, chunk))


def _assign(embeddings: np.ndarray, clusterings: Sequence[Clustering]) -> np.ndarray:
    codes = np.empty(embeddings.shape[:-1], dtype=np.int64)
    for m, clustering in enumerate(clusterings):
        codes[m] = clustering.assign(embeddings[m].reshape(-1, embeddings.shape[-1])).reshape(codes.shape[1:])
    return codes


def _top_features(codes: np.ndarray, n_codes: int) -> np.ndarray:
    e, n = codes.shape[:2]
    return np.eye(n_codes)[codes].reshape(e, n, -1)


@blas_policy()  # one BLAS thread: small products (see sim.backend)
def fit_layerwise(images, labels, n_clusters: Sequence[int], *, n_classes: int, patch_size: int,
                  n_members: int = 1, seed: int = 0, settings: TrainSettings | None = None,
                  top_classifier: Callable | None = None, backend: str = "numpy", xp=None,
                  label_noise: bool = False, divergences: list | None = None) -> LayerwiseModel:
    r"""Fit the layerwise algorithm (see the module docstring) to every member at once.

    Parameters
    ----------
    images : array ``(N, H, W)`` or ``(E, N, H, W)``
        Training images (shared, or one training sample per member).
    labels : int array ``(N,)`` or ``(E, N)``
    n_clusters : sequence of int
        Clusters of each level from the bottom: for a grammar of depth :math:`d`,
        ``(|C_d|, ..., |C_1|)``. The number of levels is its length; ``H`` and ``W``
        must be multiples of :math:`s^{levels}`.
    n_classes : int
    patch_size : int
    n_members, seed : int
        Ensemble size and seed (each level's network and k-means draw from it).
    settings : TrainSettings
    top_classifier : callable, optional
        ``top_classifier(features (E, N, F), targets (E, N, K)) -> weights (E, F, K)``
        on host arrays; default :func:`fit_softmax_regression`.
    label_noise : bool
        Train the level networks on randomly permuted labels (a control: the
        embeddings then carry no label statistics).
    divergences : list, optional
        Where the members that diverge are reported (:class:`sim.divergence.Divergence`;
        the steps count on from level to level). A diverged member's level
        network is frozen and its non-finite embeddings are clustered as zeros,
        so the other members go on.
    """
    settings = TrainSettings() if settings is None else settings
    xp = get_namespace(backend) if xp is None else xp
    x = _as_maps(images, n_members, xp, settings.dtype)
    n = x.shape[-4]
    labels = _check_labels(labels, n, n_classes, n_members)
    n_clusters = tuple(int(k) for k in n_clusters)
    if not n_clusters or min(n_clusters) < 1:
        raise ValueError(f"n_clusters must list at least one positive number, got {n_clusters}")
    train_labels = labels
    if label_noise:
        train_labels = shared_rng(seed, "noise").permutation(labels.T).T if labels.ndim == 2 else \
            shared_rng(seed, "noise").permutation(labels)
    y = _one_hot_targets(train_labels, n_classes, xp, settings.dtype)
    seeds = _level_seeds(seed, 2 * len(n_clusters))
    nets, clusterings, codes_all, used_counts = [], [], [], []
    for j, k in enumerate(n_clusters):
        net = init_patch_network(tuple(x.shape[-3:]), [settings.hidden], n_classes, n_members,
                                 patch_size=patch_size, seed=seeds[2 * j], kind="patch", xp=xp, dtype=settings.dtype)
        found = []
        net, _ = train_patch_network(net, x, y, steps=settings.steps, seed=seeds[2 * j + 1], divergences=found,
                                     **settings.train_options())
        _report(divergences, found, j * settings.steps)
        emb = patch_embeddings(net, x, settings.level_embedding(j))
        if found:
            emb = np.where(np.isfinite(emb), emb, 0.0)
        level_clusterings, level_counts = [], []
        codes = np.empty(emb.shape[:-1], dtype=np.int64)
        for m in range(n_members):
            points, k_m = emb[m].reshape(-1, emb.shape[-1]), k
            if settings.cluster_count == "silhouette":
                k_m, _ = estimate_n_clusters(points, range(2, settings.max_clusters + 1), seed=seeds[2 * j + 1] + m,
                                             restarts=1, oversample=settings.level_oversample(j))
            elif settings.cluster_count == "gap":
                k_m, _ = gap_statistic(points, range(2, settings.max_clusters + 1), seed=seeds[2 * j + 1] + m,
                                       restarts=1, oversample=settings.level_oversample(j))
            if settings.clustering == "random":
                clustering, flat = random_clustering(points, k_m, seed=seeds[2 * j + 1] + m)
            else:
                clustering, flat = kmeans(points, k_m, seed=seeds[2 * j + 1] + m, restarts=settings.kmeans_restarts,
                                          max_points=settings.kmeans_points, oversample=settings.level_oversample(j))
            level_clusterings.append(clustering)
            level_counts.append(k_m)
            codes[m] = flat.reshape(codes.shape[1:])
        k = max(level_counts)  # the width of the one-hot code map (members may estimate different counts)
        used_counts.append(tuple(level_counts))
        nets.append(net)
        clusterings.append(level_clusterings)
        codes_all.append(codes)
        x = one_hot_maps(codes, k, xp, settings.dtype)
    n_clusters = tuple(max(c) for c in used_counts)
    feats = _top_features(codes_all[-1], n_clusters[-1])
    targets = np.broadcast_to(np.eye(n_classes)[labels], (n_members, n, n_classes))
    if top_classifier is None and settings.top == "mlp":
        from .baselines import BaselineSettings, fit_baseline

        top = fit_baseline("mlp", feats[:, :, None, :], np.broadcast_to(labels, (n_members, n)), n_classes=n_classes,
                           seed=seeds[-1], settings=BaselineSettings(width=settings.top_width))
        return LayerwiseModel(nets, clusterings, None, n_clusters, codes_all, settings, int(patch_size), top,
                              tuple(used_counts))
    if top_classifier is None:
        w = to_host(fit_softmax_regression(to_device(feats, xp, settings.dtype),
                                           to_device(np.ascontiguousarray(targets), xp, settings.dtype),
                                           l2=settings.top_l2, steps=settings.top_steps, lr=settings.top_lr))
    else:
        w = np.asarray(top_classifier(feats, np.ascontiguousarray(targets)))
    if w.shape != (n_members, feats.shape[-1], n_classes):
        raise ValueError(f"top_classifier must return weights {(n_members, feats.shape[-1], n_classes)}, got {w.shape}")
    return LayerwiseModel(nets, clusterings, w, n_clusters, codes_all, settings, int(patch_size),
                          cluster_counts=tuple(used_counts))


def _report(divergences, found, offset: int) -> None:
    """Add the divergences ``found`` of one trained network to ``divergences`` (if given), steps shifted by ``offset``."""
    if divergences is not None:
        divergences.extend(Divergence(d.member, d.step + offset, d.reason) for d in found)


def layerwise_codes(model: LayerwiseModel, images, *, xp=None) -> list[np.ndarray]:
    """The cluster of every patch of every level for new images: host ints ``(E, N, H_j, W_j)``, bottom first."""
    xp = namespace(model.nets[0].readout) if xp is None else xp
    x = _as_maps(images, model.n_members, xp, model.settings.dtype)
    out = []
    for j, (net, level_clusterings, k) in enumerate(zip(model.nets, model.clusterings, model.n_clusters)):
        codes = _assign(patch_embeddings(net, x, model.settings.level_embedding(j)), level_clusterings)
        out.append(codes)
        x = one_hot_maps(codes, k, xp, model.settings.dtype)
    return out


def layerwise_logits(model: LayerwiseModel, images, *, codes=None) -> np.ndarray:
    """Top-classifier logits ``(E, N, K)`` (host) for new images (or their precomputed ``codes``)."""
    codes = layerwise_codes(model, images) if codes is None else codes
    feats = _top_features(codes[-1], model.n_clusters[-1])
    if model.top_model is not None:
        from .baselines import baseline_logits

        return baseline_logits(model.top_model, feats[:, :, None, :])
    return feats @ model.top_weights


def level_recovery(codes: np.ndarray, true_symbols: np.ndarray) -> np.ndarray:
    """Adjusted Rand index ``(E,)`` of the clusters ``(E, N, H, W)`` with the true symbols (``(N, H, W)`` or per member)."""
    codes = np.asarray(codes)
    truth = np.broadcast_to(np.asarray(true_symbols), codes.shape)
    return np.asarray([adjusted_rand_index(truth[m], codes[m]) for m in range(codes.shape[0])])


def accuracy_of(logits, labels) -> np.ndarray:
    """Fraction of correct arg-max predictions per member: logits ``(E, N, K)``, labels ``(N,)`` or ``(E, N)``."""
    logits = to_host(logits)
    return np.mean(np.argmax(logits, axis=-1) == np.asarray(labels), axis=-1)


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------

@blas_policy()  # one BLAS thread: small products (see sim.backend)
def fit_end_to_end(images, labels, *, depth: int, n_classes: int, patch_size: int, n_members: int = 1,
                   seed: int = 0, settings: TrainSettings | None = None, backend: str = "numpy",
                   xp=None, divergences: list | None = None) -> PatchNetwork:
    """End-to-end BP on ``depth`` patch convolutions (``hidden`` channels each) and a flattened linear readout.

    Members that diverge are reported in ``divergences`` (if given), as by :func:`fit_layerwise`.
    """
    settings = TrainSettings() if settings is None else settings
    xp = get_namespace(backend) if xp is None else xp
    x = _as_maps(images, n_members, xp, settings.dtype)
    labels = _check_labels(labels, x.shape[-4], n_classes, n_members)
    s_init, s_batch = _level_seeds(seed, 2)
    net = init_patch_network(tuple(x.shape[-3:]), [settings.hidden] * int(depth), n_classes, n_members,
                             patch_size=patch_size, seed=s_init, kind="flatten", xp=xp, dtype=settings.dtype)
    found = []
    net, _ = train_patch_network(net, x, _one_hot_targets(labels, n_classes, xp, settings.dtype),
                                 steps=settings.steps * int(depth), seed=s_batch, divergences=found,
                                 **settings.train_options())
    _report(divergences, found, 0)
    return net


@dataclass(frozen=True)
class GreedyModel:
    """Greedy auxiliary-classifier model: one single-layer patch network per block, bottom first."""

    blocks: list = field(default_factory=list)

    @property
    def n_members(self) -> int:
        return self.blocks[0].n_members


def _block_map(net: PatchNetwork, x):
    return evaluate_in_chunks(lambda xb: _relu(patch_forward(net, xb).preactivations[0]), x, 1024)


@blas_policy()  # one BLAS thread: small products (see sim.backend)
def fit_greedy(images, labels, *, depth: int, n_classes: int, patch_size: int, n_members: int = 1, seed: int = 0,
               settings: TrainSettings | None = None, backend: str = "numpy", xp=None,
               divergences: list | None = None) -> GreedyModel:
    """Greedy layerwise training with auxiliary linear classifiers (no clustering); see the module docstring.

    Members that diverge are reported in ``divergences`` (if given), as by :func:`fit_layerwise`.
    """
    settings = TrainSettings() if settings is None else settings
    xp = get_namespace(backend) if xp is None else xp
    x = _as_maps(images, n_members, xp, settings.dtype)
    labels = _check_labels(labels, x.shape[-4], n_classes, n_members)
    y = _one_hot_targets(labels, n_classes, xp, settings.dtype)
    seeds = _level_seeds(seed, 2 * int(depth))
    blocks = []
    for j in range(int(depth)):
        net = init_patch_network(tuple(x.shape[-3:]), [settings.hidden], n_classes, n_members,
                                 patch_size=patch_size, seed=seeds[2 * j], kind="flatten", xp=xp, dtype=settings.dtype)
        found = []
        net, _ = train_patch_network(net, x, y, steps=settings.steps, seed=seeds[2 * j + 1], divergences=found,
                                     **settings.train_options())
        _report(divergences, found, j * settings.steps)
        blocks.append(net)
        if j < int(depth) - 1:
            x = _block_map(net, x)
    return GreedyModel(blocks)


def greedy_logits(model: GreedyModel, images):
    """Logits ``(E, N, K)`` of the greedy model: the frozen blocks, then the last auxiliary classifier."""
    xp = namespace(model.blocks[0].readout)
    x = _as_maps(images, model.n_members, xp, str(model.blocks[0].readout.dtype).split(".")[-1])
    for net in model.blocks[:-1]:
        x = _block_map(net, x)
    last = model.blocks[-1]
    return evaluate_in_chunks(lambda xb: patch_logits(last, xb), x, 1024)


def end_to_end_logits(net: PatchNetwork, images):
    """Logits ``(E, N, K)`` of an end-to-end network on images ``(N, H, W)`` or ``(E, N, H, W)``."""
    xp = namespace(net.readout)
    x = _as_maps(images, net.n_members, xp, str(net.readout.dtype).split(".")[-1])
    return evaluate_in_chunks(lambda xb: patch_logits(net, xb), x, 1024)


# --------------------------------------------------------------------------------------------
# the sample-size comparison lives in sim.layerwise_compare (re-exported here, lazily)
# --------------------------------------------------------------------------------------------

_COMPARE = ("DEFAULT_METHODS", "METHODS", "SampleSizeComparison", "compare_on_sample_sizes")


def __getattr__(name: str):
    if name in _COMPARE:
        from . import layerwise_compare

        return getattr(layerwise_compare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
