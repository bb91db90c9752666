"""Accuracy and recovery against the number of training samples: the layerwise algorithm and every baseline.

:func:`compare_on_sample_sizes` fits every method of :data:`METHODS` (see
:mod:`sim.layerwise` and :mod:`sim.baselines`) on nested training sets of a
grammar's images and tests them on one test set. Re-exported by :mod:`sim.layerwise`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .backend import blas_policy, get_namespace
from .divergence import divergence_message
from .layerwise import (
    TrainSettings,
    accuracy_of,
    end_to_end_logits,
    fit_end_to_end,
    fit_greedy,
    fit_layerwise,
    greedy_logits,
    layerwise_codes,
    layerwise_logits,
    level_recovery,
)

# --------------------------------------------------------------------------------------------
# accuracy and recovery against the number of training samples
# --------------------------------------------------------------------------------------------

#: The methods of :func:`compare_on_sample_sizes`: the layerwise algorithm, BP and greedy training on the oracle
#: patch architecture (kernel = stride = the grammar's patch size), and the baselines of :mod:`sim.baselines`.
DEFAULT_METHODS = ("layerwise", "end-to-end", "greedy")
METHODS = DEFAULT_METHODS + ("linear", "random-features", "mlp", "cnn")


@dataclass
class SampleSizeComparison:
    """Test accuracy of every method and layerwise level recovery, per sample size and member.

    ``accuracy[method]`` is ``(S, E)``; ``recovery`` is ``(S, levels, E)`` (adjusted
    Rand index of the layerwise clusters with the true symbols of levels ``d .. 1``,
    bottom first); ``seconds[method]`` the fitting time per sample size.
    ``diverged`` lists the members that diverged (``"{method} n={n} member {m}:
    {reason} at step {step}"``); their accuracy and recovery are ``nan``.
    ``all_diverged``: every member of every fit diverged. ``cluster_counts`` ``(S, levels, E)``: the
    clusters the layerwise algorithm used per level (estimated with ``cluster_count="silhouette"`` or ``"gap"``).
    """

    sample_sizes: np.ndarray
    accuracy: dict
    recovery: np.ndarray
    seconds: dict
    methods: tuple
    diverged: list = field(default_factory=list)
    all_diverged: bool = False
    cluster_counts: np.ndarray | None = None


@blas_policy()  # one BLAS thread: small products (see sim.backend)
def compare_on_sample_sizes(grammar, sample_sizes: Sequence[int], *, n_members: int = 2, seed: int = 0,
                            settings: TrainSettings | dict | None = None, n_test: int = 1000,
                            methods: Sequence[str] = DEFAULT_METHODS, top_classifier: Callable | None = None,
                            label_noise: bool = False, xp=None) -> SampleSizeComparison:
    r"""Layerwise vs end-to-end BP vs greedy auxiliary training on data of ``grammar``.

    Member ``m`` trains on its own first ``n`` images of one pool of
    ``max(sample_sizes)`` images (so the training sets are nested in ``n``); all
    are tested on the same ``n_test`` images. The layerwise algorithm clusters
    into the grammar's alphabet sizes; the baselines use ``depth`` layers of
    ``hidden`` channels. ``settings`` is one :class:`TrainSettings` for all methods or
    a dict ``{method: TrainSettings}`` (each method its own learning rate, say); the baselines of
    :mod:`sim.baselines` (``linear``, ``random-features``, ``mlp``, ``cnn``) take a
    :class:`sim.baselines.BaselineSettings` (their defaults when none is given).
    """
    import time

    from .data.hierarchical import generate

    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if isinstance(settings, dict):
        missing = [m for m in methods if m not in settings]
        if missing:
            raise ValueError(f"settings has no entry for the method(s) {', '.join(missing)}")
        per_method = dict(settings)
    else:
        per_method = {m: TrainSettings() if settings is None else settings for m in methods}
    from .baselines import BASELINES, BaselineSettings, baseline_logits, fit_baseline

    for m in methods:
        if m in BASELINES and not isinstance(per_method[m], BaselineSettings):
            per_method[m] = BaselineSettings()
    settings = next((per_method[m] for m in methods if m not in BASELINES), TrainSettings())
    sizes = np.asarray(sorted(int(n) for n in sample_sizes))
    if sizes.size == 0 or sizes[0] < 1:
        raise ValueError(f"sample_sizes must be positive integers, got {list(sample_sizes)}")
    xp = get_namespace("numpy") if xp is None else xp
    pool = generate(grammar, n_members * int(sizes[-1]) + int(n_test), seed=seed, dtype=settings.dtype)
    test = pool.subset(slice(n_members * int(sizes[-1]), None))
    train_images = pool.images[:n_members * int(sizes[-1])].reshape(n_members, int(sizes[-1]), *pool.images.shape[1:])
    train_labels = pool.labels[:n_members * int(sizes[-1])].reshape(n_members, int(sizes[-1]))
    d, s = grammar.depth, grammar.patch_size
    n_clusters = tuple(reversed(grammar.alphabet_sizes[1:]))
    accuracy = {m: np.full((sizes.size, n_members), np.nan) for m in methods}
    seconds = {m: np.zeros(sizes.size) for m in methods}
    recovery = np.full((sizes.size, d, n_members), np.nan)
    counts = np.zeros((sizes.size, d, n_members), dtype=np.int64)
    common = dict(n_classes=grammar.n_classes, patch_size=s, n_members=n_members, xp=xp)
    diverged, every = [], True
    for i, n in enumerate(sizes):
        images, labels = train_images[:, :n], np.ascontiguousarray(train_labels[:, :n])
        for method in methods:
            found = []
            common["divergences"] = found
            start = time.perf_counter()
            if method == "layerwise":
                model = fit_layerwise(images, labels, n_clusters, seed=seed + i, top_classifier=top_classifier,
                                      label_noise=label_noise, settings=per_method[method], **common)
                codes = layerwise_codes(model, test.images)
                logits = layerwise_logits(model, test.images, codes=codes)
                for j in range(d):
                    recovery[i, j] = level_recovery(codes[j], test.latents[d - j])
                    counts[i, j] = model.cluster_counts[j]
            elif method in BASELINES:
                model = fit_baseline(method, images, labels, n_classes=grammar.n_classes, seed=seed + i,
                                     settings=per_method[method])
                logits = baseline_logits(model, test.images)
            elif method == "end-to-end":
                net = fit_end_to_end(images, labels, depth=d, seed=seed + i, settings=per_method[method], **common)
                logits = end_to_end_logits(net, test.images)
            else:
                model = fit_greedy(images, labels, depth=d, seed=seed + i, settings=per_method[method], **common)
                logits = greedy_logits(model, test.images)
            accuracy[method][i] = accuracy_of(logits, test.labels)
            seconds[method][i] = time.perf_counter() - start
            members = sorted({d.member for d in found})
            accuracy[method][i, members] = np.nan
            if method == "layerwise":
                recovery[i][:, members] = np.nan
            every = every and len(members) == n_members
            first = {}
            for d in found:
                first.setdefault(d.member, d)
            diverged += [divergence_message(f"{method} n={n}", first[m]) for m in members]
    return SampleSizeComparison(sizes, accuracy, recovery, seconds, tuple(methods), diverged, every and bool(methods),
                                counts)
