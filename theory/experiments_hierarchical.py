"""Experiments on hierarchical digits: ``hier-digits-samples`` and ``hier-layerwise`` (registered on import).

They live beside the theory because ``hier-layerwise`` fits the layerwise
algorithm's top classifier with the convex solvers of :mod:`theory.convex`.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sim.data.hierarchical import (
    digits_grammar,
    distinct_patch_tables,
    generate,
    plot_class_samples,
    plot_generation_levels,
    statistics_separation,
)
from sim.experiments import Context, ExperimentResult, experiment, report_all_diverged
from sim.layerwise import EMBEDDINGS, METHODS, TrainSettings, compare_on_sample_sizes
from sim.plots import ACCURACY_RANGE, ARI_RANGE, mean_and_spread, new_figure, note_bands
from sim.settings import choice, integer, list_of, real, setting_error
from theory.convex import METHODS as TOP_METHODS
from theory.convex import solve_top_classifier


def _index_in_sample(settings: dict) -> None:
    n = 40 * settings["per_class"]  # the digits hier-digits-samples draws
    if settings["index"] >= n:
        raise setting_error("index", settings["index"], f"is not below the {n} digits drawn (40 * per_class)",
                            f"an integer from 0 to {n - 1}")


LABELS = {"layerwise": "layerwise (train, cluster, recode)", "end-to-end": "end-to-end BP",
          "greedy": "greedy auxiliary (no clustering)"}


@experiment(
    "hier-digits-samples",
    title="Hierarchical digits (Malach & Shalev-Shwartz 2018): samples per class and one digit's generation levels",
    description="Draws the digits preset (ten classes; a 3x3 grid of stroke symbols, each a 3x3 grid of low-level "
                "symbols with variants and distractor marks, each a 3x3 pixel patch; Gaussian noise) and plots "
                "samples of every class and the levels of one digit, like the reference figure. Also times the "
                "vectorised generator.",
    defaults={"per_class": 5, "noise": 0.2, "distractor": 0.02, "index": 0, "speed_samples": 100000},
    schema={"per_class": integer(1, 100), "noise": real(0), "distractor": real(0, 1), "index": integer(0),
            "speed_samples": integer(1)},
    checks=_index_in_sample,
    quick={"speed_samples": 20000},
    default_seeds=1,
)
def hier_digits_samples(settings: dict, ctx: Context) -> ExperimentResult:
    grammar = digits_grammar(noise=settings["noise"], distractor=settings["distractor"])
    sample = generate(grammar, 40 * settings["per_class"], seed=ctx.seed)
    fig_samples = plot_class_samples(sample, settings["per_class"])
    index = int(settings["index"])
    fig_levels = plot_generation_levels(sample, index)
    start = time.perf_counter()
    big = generate(grammar, int(settings["speed_samples"]), seed=ctx.seed + 1, dtype=ctx.dtype)
    seconds = time.perf_counter() - start
    metrics = {"alphabet_sizes": list(grammar.alphabet_sizes), "image_size": grammar.image_size,
               "symbol_names": [list(n) for n in grammar.names],
               "distinct_patch_tables": distinct_patch_tables(grammar),
               "label_statistics_separation": statistics_separation(grammar),
               "generation": {"images": big.n_samples, "seconds": seconds,
                              "images_per_second": big.n_samples / max(seconds, 1e-9), "dtype": ctx.dtype}}
    arrays = {"images": sample.images, **{f"level_{i}": lat for i, lat in enumerate(sample.latents)}}
    summary = (f"{grammar.n_classes} classes, alphabets {grammar.alphabet_sizes}, {grammar.image_size}x"
               f"{grammar.image_size} images; {big.n_samples} images generated in {seconds:.2f} s")
    return ExperimentResult(metrics, arrays, {"digits_samples": fig_samples, "digits_levels": fig_levels}, summary)


@experiment(
    "hier-layerwise",
    title="Layerwise algorithm vs end-to-end BP vs greedy auxiliary training on hierarchical digits",
    description="Test accuracy against the number of training images for the layerwise algorithm (per level: train a "
                "two-layer patch network, k-means its patch embeddings, recode as one-hot; convex top classifier), "
                "end-to-end BP on the same patch architecture, and greedy layerwise training with auxiliary "
                "classifiers; and the recovery (adjusted Rand index) of each latent level by the layerwise clusters. "
                "Every seed (ensemble member) trains on its own sample.",
    defaults={"sample_sizes": [30, 100, 300, 1000], "n_test": 2000, "noise": 0.2, "distractor": 0.02, "hidden": 32,
              "steps": 300, "batch_size": 64, "lr_layerwise": 0.5, "lr_baselines": 0.05, "embedding": "hidden",
              "oversample": 3, "kmeans_restarts": 4, "top_l2": 1e-3, "top_method": "auto",
              "methods": list(METHODS)},
    schema={"sample_sizes": list_of(integer(10), max_len=16), "n_test": integer(1), "noise": real(0),
            "distractor": real(0, 1), "hidden": integer(1), "steps": integer(1), "batch_size": integer(1),
            "lr_layerwise": real(0, lo_open=True), "lr_baselines": real(0, lo_open=True),
            "embedding": choice(*EMBEDDINGS), "oversample": integer(1), "kmeans_restarts": integer(1),
            "top_l2": real(0, lo_open=True), "top_method": choice(*TOP_METHODS),
            "methods": list_of(choice(*METHODS), max_len=len(METHODS), distinct=True)},
    quick={"sample_sizes": [50, 200], "n_test": 300, "hidden": 16, "steps": 100, "kmeans_restarts": 2,
           "top_method": "lbfgs"},
    default_seeds=3,
)
def hier_layerwise(settings: dict, ctx: Context) -> ExperimentResult:
    grammar = digits_grammar(noise=settings["noise"], distractor=settings["distractor"])
    base = TrainSettings(hidden=settings["hidden"], steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr_layerwise"], embedding=settings["embedding"],
                         oversample=settings["oversample"], kmeans_restarts=settings["kmeans_restarts"],
                         dtype=ctx.dtype)
    per_method = {"layerwise": base, "end-to-end": replace(base, lr=settings["lr_baselines"]),
                  "greedy": replace(base, lr=settings["lr_baselines"])}
    certificates = []

    def top(features, targets):
        sol = solve_top_classifier(features, targets, settings["top_l2"], method=settings["top_method"])
        certificates.extend(sol.certificates)
        return sol.weights

    methods = tuple(settings["methods"])
    result = compare_on_sample_sizes(grammar, settings["sample_sizes"], n_members=ctx.n_seeds, seed=ctx.seed,
                                     settings={m: per_method[m] for m in methods}, n_test=settings["n_test"],
                                     methods=methods, top_classifier=top, xp=ctx.xp)
    sizes = result.sample_sizes
    fig, (ax_acc, ax_ari) = new_figure(2, width=5.0, height=3.8)
    metrics = {"sample_sizes": sizes.tolist(), "accuracy": {}, "recovery_ari": {}, "fit_seconds": {}}
    arrays = {"sample_sizes": sizes}
    for m in methods:
        acc = result.accuracy[m]
        mean_and_spread(ax_acc, sizes, acc, label=LABELS[m], marker="o", clip=ACCURACY_RANGE)
        metrics["accuracy"][m] = {"mean": acc.mean(axis=1).tolist(), "std": acc.std(axis=1).tolist()}
        metrics["fit_seconds"][m] = result.seconds[m].tolist()
        arrays[f"accuracy_{m}"] = acc
    ax_acc.set_xscale("log")
    ax_acc.axhline(1 / grammar.n_classes, color="grey", lw=0.8, ls=":", label=f"chance (1/{grammar.n_classes})")
    ax_acc.set(xlabel="training images per seed", ylabel="test accuracy", ylim=(0, 1.02),
               title="hierarchical digits: test accuracy")
    ax_acc.legend(fontsize=8)
    if "layerwise" in methods:
        names = {2: "level 2 (low-level symbols)", 1: "level 1 (strokes)"}
        for j in range(grammar.depth):
            level = grammar.depth - j
            mean_and_spread(ax_ari, sizes, result.recovery[:, j, :], label=names.get(level, f"level {level}"),
                            marker="o", clip=ARI_RANGE)
            metrics["recovery_ari"][f"level_{level}"] = {"mean": result.recovery[:, j].mean(axis=1).tolist(),
                                                         "std": result.recovery[:, j].std(axis=1).tolist()}
        arrays["recovery_ari"] = result.recovery
        ax_ari.set_xscale("log")
        ax_ari.set(xlabel="training images per seed", ylabel="adjusted Rand index", ylim=(-0.05, 1.02),
                   title="layerwise: recovery of each latent level")
        ax_ari.legend(fontsize=8)
        gaps = [c.duality_gap for c in certificates]
        metrics["top_classifier"] = {"solves": len(certificates), "methods": sorted({c.method for c in certificates}),
                                     "all_certified": all(c.holds for c in certificates),
                                     "max_duality_gap": float(max(gaps)) if gaps else None}
    else:
        ax_ari.set_axis_off()
    note_bands(fig, ctx.n_seeds)
    parts = []
    for i, n in enumerate(sizes):
        accs = ", ".join(f"{m} {result.accuracy[m][i].mean():.3f}" for m in methods)
        ari = ""
        if "layerwise" in methods:
            ari = "; ARI " + "/".join(f"{result.recovery[i, j].mean():.2f}" for j in range(grammar.depth))
        parts.append(f"n={n}: {accs}{ari}")
    return report_all_diverged(ExperimentResult(metrics, arrays, {"hier_layerwise": fig}, " | ".join(parts),
                                                result.diverged), result.all_diverged)
