r"""The sample-complexity study of the layerwise algorithm: ``hier-sample-complexity`` (registered on import).

Random grammars (:func:`sim.data.hierarchical.random_grammar`: ``depth`` levels, 2 x 2
patches, ``symbols`` symbols per level, two variants each) are drawn one per seed;
each seed (ensemble member) learns its own grammar from ``n`` images for every
``n`` of ``sample_sizes``, with the paper's label-statistics embedding. Recovery of
level :math:`i` is the adjusted Rand index of the clusters with the true symbols.

The rate (ours; the paper gives no constants for it)
----------------------------------------------------
A level is recovered when every symbol's estimated label statistics lie closer
to its own than to any other symbol's, i.e. within :math:`\Delta/2` where
:math:`\Delta` is the label-statistics margin (:func:`statistics_separation`). A symbol
of frequency :math:`p` at each of :math:`P` positions is seen about :math:`nPp` times;
its estimate of a :math:`K`-class distribution errs by about
:math:`\sqrt{K/(nPp)}`. So recovery needs :math:`n \gtrsim n^* = 4K/(P p \Delta^2)`,
and past that the share of misassigned patches falls as a Gaussian tail in
:math:`\sqrt{n/n^*}`. Across a finite range of :math:`n` we summarise the fall by
the exponent :math:`\alpha` of a power law :math:`1 - \mathrm{ARI} \approx C n^{-\alpha}`
(least squares on the log-log points with :math:`1-\mathrm{ARI} > 10^{-3}`), and report
:math:`n^*` per level for comparison.
"""

from __future__ import annotations

import numpy as np

from sim.data.hierarchical import generate, random_grammar, statistics_separation, symbol_counts
from sim.experiments import Context, ExperimentResult, experiment
from sim.layerwise import TrainSettings, accuracy_of, fit_layerwise, layerwise_codes, layerwise_logits, level_recovery
from sim.plots import mean_and_spread, new_figure, note_bands
from sim.settings import integer, list_of, real


def power_law_exponent(sizes, errors, floor: float = 1e-3) -> float:
    r"""The exponent :math:`\alpha` of :math:`\mathrm{err} \approx C n^{-\alpha}` by least squares in log-log.

    Points with ``errors <= floor`` or non-finite are left out; NaN when fewer than two remain.
    """
    sizes, errors = np.asarray(sizes, dtype=float), np.asarray(errors, dtype=float)
    keep = np.isfinite(errors) & (errors > floor)
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(np.log(sizes[keep]), np.log(errors[keep]), 1)[0]
    return float(-slope)


def critical_sample_size(grammar) -> list[float]:
    r""":math:`n^* = 4K/(P\,p_{\min}\,\Delta^2)` per level ``1 .. d`` (see the module docstring; ours)."""
    k = grammar.n_classes
    out = []
    for level, (counts, delta) in enumerate(zip(symbol_counts(grammar)[1:], statistics_separation(grammar)), 1):
        positions = grammar.grid_size(level) ** 2
        freq = (np.asarray(grammar.class_probs) @ counts) / positions  # P(symbol) at a random position
        p_min = float(freq[freq > 0].min())
        out.append(4 * k / (positions * p_min * delta ** 2) if delta > 0 else float("inf"))
    return out


@experiment(
    "hier-sample-complexity",
    title="Sample complexity of the layerwise algorithm: recovery per level against training-set size",
    description="Random grammars (one per seed; 2x2 patches, two variants per symbol) learned by the layerwise "
                "algorithm with the label-statistics embedding: adjusted Rand index of every level and test accuracy "
                "against the number of training images, the fitted exponent of 1 - ARI ~ n^-alpha per level, and "
                "the critical sample size n* = 4K/(P p_min margin^2) of our rate. Sweep noise, symbols and depth "
                "with bbp sweep.",
    defaults={"sample_sizes": [100, 200, 400, 800, 1600], "n_test": 400, "noise": 0.1, "classes": 5, "symbols": 5,
              "depth": 2, "min_separation": 0.1, "hidden": 32, "steps": 400, "lr": 0.5, "kmeans_restarts": 5},
    schema={"sample_sizes": list_of(integer(10), min_len=2, max_len=12, distinct=True), "n_test": integer(10),
            "noise": real(0), "classes": integer(2, 10), "symbols": integer(3, 12), "depth": integer(1, 3),
            "min_separation": real(0), "hidden": integer(1), "steps": integer(1), "lr": real(0, lo_open=True),
            "kmeans_restarts": integer(1)},
    quick={"sample_sizes": [100, 400], "n_test": 200, "steps": 150, "kmeans_restarts": 2},
    default_seeds=8,
)
def hier_sample_complexity(settings: dict, ctx: Context) -> ExperimentResult:
    depth = int(settings["depth"])
    sizes = sorted(int(n) for n in settings["sample_sizes"])
    seeds = [ctx.seed + 1000 * m for m in range(ctx.n_seeds)]
    alphabet = (settings["classes"],) + (settings["symbols"],) * depth
    grammars = [random_grammar(s, depth=depth, patch_size=2, alphabet_sizes=alphabet, variants=2,
                               noise=settings["noise"], min_separation=settings["min_separation"], max_tries=500)
                for s in seeds]
    pool = [generate(g, sizes[-1], seed=s) for g, s in zip(grammars, seeds)]
    test = [generate(g, settings["n_test"], seed=s + 1) for g, s in zip(grammars, seeds)]
    test_images, test_labels = np.stack([t.images for t in test]), np.stack([t.labels for t in test])
    train = TrainSettings(hidden=settings["hidden"], steps=settings["steps"], lr=settings["lr"], embedding="label",
                          kmeans_restarts=settings["kmeans_restarts"], dtype=ctx.dtype)
    ari = np.full((len(sizes), depth, ctx.n_seeds), np.nan)  # levels 1 .. d
    acc = np.full((len(sizes), ctx.n_seeds), np.nan)
    for i, n in enumerate(sizes):
        images = np.stack([p.images[:n] for p in pool])
        labels = np.stack([p.labels[:n] for p in pool])
        model = fit_layerwise(images, labels, tuple(reversed(alphabet[1:])), n_classes=alphabet[0], patch_size=2,
                              n_members=ctx.n_seeds, seed=ctx.seed + i, settings=train, xp=ctx.xp)
        codes = layerwise_codes(model, test_images)
        for j in range(depth):  # codes bottom first
            level = depth - j
            ari[i, level - 1] = level_recovery(codes[j], np.stack([t.latents[level] for t in test]))
        acc[i] = accuracy_of(layerwise_logits(model, test_images, codes=codes), test_labels)
    margins = np.asarray([statistics_separation(g) for g in grammars])  # (seeds, levels)
    n_star = np.asarray([critical_sample_size(g) for g in grammars])

    def stat(v):
        return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "members": [float(x) for x in v]}

    metrics = {"sample_sizes": sizes, "alphabet_sizes": list(alphabet),
               "margin": {f"level_{i + 1}": stat(margins[:, i]) for i in range(depth)},
               "critical_n": {f"level_{i + 1}": stat(n_star[:, i]) for i in range(depth)},
               "exponent": {}, "ari": {}, "accuracy": {}}
    for i, n in enumerate(sizes):
        metrics["accuracy"][f"n_{n}"] = stat(acc[i])
        for lv in range(depth):
            metrics["ari"].setdefault(f"level_{lv + 1}", {})[f"n_{n}"] = stat(ari[i, lv])
    fig, (ax_err, ax_acc) = new_figure(2, width=4.6, height=3.8)
    for lv in range(depth):
        err = 1.0 - ari[:, lv]
        alpha = power_law_exponent(sizes, np.nanmean(err, axis=1))
        metrics["exponent"][f"level_{lv + 1}"] = alpha
        mean_and_spread(ax_err, sizes, np.clip(err, 1e-4, None), label=f"level {lv + 1}: alpha = {alpha:.2f}",
                        marker="o", log=True)
    ax_err.set_xscale("log")
    ax_err.set(xlabel="training images per grammar", ylabel="1 - adjusted Rand index (log)",
               title="layerwise recovery error per level")
    ax_err.legend(fontsize=8)
    mean_and_spread(ax_acc, sizes, acc, label="layerwise (label embedding)", marker="o", clip=(0.0, 1.0))
    ax_acc.axhline(1 / alphabet[0], color="grey", lw=0.8, ls=":", label=f"chance (1/{alphabet[0]})")
    ax_acc.set_xscale("log")
    ax_acc.set(xlabel="training images per grammar", ylabel="test accuracy", ylim=(0, 1.02),
               title="test accuracy")
    ax_acc.legend(fontsize=8)
    note_bands(fig, ctx.n_seeds)
    arrays = {"sample_sizes": np.asarray(sizes), "ari": ari, "accuracy": acc, "margin": margins, "critical_n": n_star}
    summary = (f"alphabets {alphabet}, noise {settings['noise']}: exponents " +
               ", ".join(f"level {k[-1]} {v:.2f}" for k, v in metrics["exponent"].items()) + "; ARI at n=" +
               f"{sizes[-1]}: " + ", ".join(f"level {lv + 1} {np.nanmean(ari[-1, lv]):.2f}" for lv in range(depth)) +
               f"; accuracy {np.nanmean(acc[-1]):.2f}")
    return ExperimentResult(metrics, arrays, {"hier_sample_complexity": fig}, summary)
