r"""The sample-complexity study of the layerwise algorithm: ``hier-sample-complexity`` (registered on import).

Random grammars (:func:`sim.data.hierarchical.random_grammar`: ``depth`` levels, 2 x 2
patches, so :math:`2^{d+1}`-pixel-wide images, ``symbols`` symbols per level, two
variants each) are drawn one per seed; each seed (ensemble member) learns its own
grammar from ``n`` images for every ``n`` of ``sample_sizes``, with the paper's
label-statistics embedding. Recovery of level :math:`i` is the adjusted Rand index
of the clusters with the true symbols. ``depth``, ``noise`` and ``symbols`` each
take one value or a list; the study runs every point of their product
(:func:`study_point`), and a grammar of depth :math:`d` is drawn with its label
statistics at least :func:`separation_floor` apart.

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
from sim.settings import Validator, integer, list_of, real


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


def separation_floor(min_separation: float, depth: int) -> float:
    r"""The margin a grammar of depth ``depth`` is held to: ``min_separation`` :math:`\times\, 4^{-(\max(d, 2) - 2)}`.

    The label-statistics margin of the bottom level shrinks with every level above
    it (the statistic of a symbol is averaged over the symbols that can produce
    it): over 200 random grammars (5 classes, 4 or 6 symbols, 2 x 2 patches, two
    variants) the median bottom margin was 0.06 at depth 2, 0.013-0.016 at depth 3
    and 0.003-0.005 at depth 4, a factor of about 4 per level. ``min_separation``
    is the floor at depth 2 (and depth 1); a deeper grammar's floor shrinks by that
    factor, so that the grammars of every depth are selected alike.
    """
    return float(min_separation) * 4.0 ** -(max(int(depth), 2) - 2)


def _one_or_more(item: Validator) -> Validator:
    """A value allowed by ``item``, or a non-empty list of distinct ones (an axis of the study); canonical: a list."""
    as_list = list_of(item, min_len=1, max_len=6, distinct=True)

    def check(value):
        return as_list(list(value) if isinstance(value, list | tuple) else [value])

    return Validator(f"{item.allowed}, or {as_list.allowed}", check, as_list.plural)


def _stat(v) -> dict:
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "members": [float(x) for x in v]}


def study_point(settings: dict, ctx: Context, *, depth: int, noise: float, symbols: int) -> dict:
    """One point of the study: ``ctx.n_seeds`` random grammars learned from every size; host arrays and numbers."""
    sizes = sorted(int(n) for n in settings["sample_sizes"])
    seeds = [ctx.seed + 1000 * m for m in range(ctx.n_seeds)]
    alphabet = (settings["classes"],) + (symbols,) * depth
    floor = separation_floor(settings["min_separation"], depth)
    grammars = [random_grammar(s, depth=depth, patch_size=2, alphabet_sizes=alphabet, variants=2,
                               noise=noise, min_separation=floor, max_tries=500) for s in seeds]
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
    exponents = [power_law_exponent(sizes, np.nanmean(1.0 - ari[:, lv], axis=1)) for lv in range(depth)]
    levels = [f"level_{lv + 1}" for lv in range(depth)]
    metrics = {"depth": depth, "noise": float(noise), "symbols": int(symbols), "alphabet_sizes": list(alphabet),
               "separation_floor": floor,
               "margin": {k: _stat(margins[:, i]) for i, k in enumerate(levels)},
               "critical_n": {k: _stat(n_star[:, i]) for i, k in enumerate(levels)},
               "exponent": dict(zip(levels, exponents)),
               "ari": {k: {f"n_{n}": _stat(ari[i, lv]) for i, n in enumerate(sizes)} for lv, k in enumerate(levels)},
               "accuracy": {f"n_{n}": _stat(acc[i]) for i, n in enumerate(sizes)}}
    return {"metrics": metrics, "ari": ari, "accuracy": acc, "margin": margins, "critical_n": n_star}


def _point_figure(point: dict, sizes: list, n_seeds: int):
    m = point["metrics"]
    depth, alphabet = m["depth"], m["alphabet_sizes"]
    fig, (ax_err, ax_acc) = new_figure(2, width=4.6, height=3.8)
    for lv in range(depth):
        alpha = m["exponent"][f"level_{lv + 1}"]
        n_star = m["critical_n"][f"level_{lv + 1}"]["mean"]
        line = mean_and_spread(ax_err, sizes, np.clip(1.0 - point["ari"][:, lv], 1e-4, None), marker="o", log=True,
                               label=f"level {lv + 1}: alpha = {alpha:.2f}, n* = {n_star:.0f}")
        if sizes[0] <= n_star <= sizes[-1]:
            ax_err.axvline(n_star, color=line.get_color(), lw=0.8, ls="--")
    ax_err.set_xscale("log")
    ax_err.set(xlabel="training images per grammar", ylabel="1 - adjusted Rand index (log)",
               title="layerwise recovery error per level (dashed: mean n*)")
    ax_err.legend(fontsize=7)
    mean_and_spread(ax_acc, sizes, point["accuracy"], label="layerwise (label embedding)", marker="o",
                    clip=(0.0, 1.0))
    ax_acc.axhline(1 / alphabet[0], color="grey", lw=0.8, ls=":", label=f"chance (1/{alphabet[0]})")
    ax_acc.set_xscale("log")
    ax_acc.set(xlabel="training images per grammar", ylabel="test accuracy", ylim=(0, 1.02), title="test accuracy")
    ax_acc.legend(fontsize=8)
    note_bands(fig, n_seeds, title=f"depth {depth}, noise {m['noise']}, alphabets {tuple(alphabet)}")
    return fig


@experiment(
    "hier-sample-complexity",
    title="Sample complexity of the layerwise algorithm: recovery per level against training-set size",
    description="Random grammars (one per seed; 2x2 patches, two variants per symbol) learned by the layerwise "
                "algorithm with the label-statistics embedding, at every point of depth x noise x symbols: adjusted "
                "Rand index of every level and test accuracy against the number of training images, the fitted "
                "exponent of 1 - ARI ~ n^-alpha per level, and the critical sample size n* = 4K/(P p_min "
                "margin^2) of our rate. depth, noise and symbols each take one value or a list.",
    defaults={"sample_sizes": [100, 200, 400, 800, 1600], "n_test": 400, "noise": [0.1, 0.3], "classes": 5,
              "symbols": [4, 6], "depth": [2, 3], "min_separation": 0.1, "hidden": 32, "steps": 400, "lr": 0.5,
              "kmeans_restarts": 5},
    schema={"sample_sizes": list_of(integer(10), min_len=2, max_len=12, distinct=True), "n_test": integer(10),
            "noise": _one_or_more(real(0)), "classes": integer(2, 10), "symbols": _one_or_more(integer(3, 12)),
            "depth": _one_or_more(integer(1, 4)), "min_separation": real(0), "hidden": integer(1),
            "steps": integer(1), "lr": real(0, lo_open=True), "kmeans_restarts": integer(1)},
    quick={"sample_sizes": [100, 400], "n_test": 200, "noise": 0.1, "symbols": 4, "depth": [2, 3], "steps": 150,
           "kmeans_restarts": 2},
    default_seeds=8,
)
def hier_sample_complexity(settings: dict, ctx: Context) -> ExperimentResult:
    sizes = sorted(int(n) for n in settings["sample_sizes"])
    grid = [(int(d), float(z), int(k))
            for d in settings["depth"] for z in settings["noise"] for k in settings["symbols"]]
    points = [study_point(settings, ctx, depth=d, noise=z, symbols=k) for d, z, k in grid]
    metrics = {"sample_sizes": sizes, "points": [p["metrics"] for p in points]}
    # "points": one row (depth, noise, symbols) per point; "point_{i}_ari" etc. as in study_point
    arrays = {"sample_sizes": np.asarray(sizes), "points": np.asarray(grid, dtype=float)}
    figures = {}
    for i, ((d, z, k), p) in enumerate(zip(grid, points)):
        for name in ("ari", "accuracy", "margin", "critical_n"):
            arrays[f"point_{i}_{name}"] = p[name]
        figures[f"hier_sample_complexity_depth{d}_noise{z:g}_symbols{k}"] = _point_figure(p, sizes, ctx.n_seeds)
    summary = "; ".join(
        f"depth {d} noise {z:g} symbols {k}: alpha " +
        "/".join(f"{p['metrics']['exponent'][f'level_{lv + 1}']:.2f}" for lv in range(d)) +
        f", ARI at n={sizes[-1]} " + "/".join(f"{np.nanmean(p['ari'][-1, lv]):.2f}" for lv in range(d)) +
        f", accuracy {np.nanmean(p['accuracy'][-1]):.2f}" for (d, z, k), p in zip(grid, points))
    return ExperimentResult(metrics, arrays, figures, summary)
