"""Experiments on hierarchical digits: ``hier-digits-samples`` and ``hier-layerwise`` (registered on import).

They live beside the theory because ``hier-layerwise`` fits the layerwise
algorithm's top classifier with the convex solvers of :mod:`theory.convex`.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sim.baselines import BaselineSettings
from sim.data.arrangements import arrangement_grammar
from sim.data.hierarchical import (
    digits_grammar,
    distinct_patch_tables,
    generate,
    plot_class_samples,
    plot_generation_levels,
    statistics_separation,
)
from sim.experiments import Context, ExperimentResult, experiment, report_all_diverged
from sim.layerwise import CLUSTER_COUNTS, EMBEDDINGS, METHODS, TOPS, TrainSettings, compare_on_sample_sizes
from sim.plots import ACCURACY_RANGE, ARI_RANGE, mean_and_spread, new_figure, note_bands
from sim.settings import choice, integer, list_of, real, setting_error
from theory.convex import METHODS as TOP_METHODS
from theory.convex import solve_top_classifier


def _index_in_sample(settings: dict) -> None:
    n = 40 * settings["per_class"]  # the digits hier-digits-samples draws
    if settings["index"] >= n:
        raise setting_error("index", settings["index"], f"is not below the {n} digits drawn (40 * per_class)",
                            f"an integer from 0 to {n - 1}")


LABELS = {"layerwise": "layerwise (train, cluster, recode)", "end-to-end": "oracle CNN, BP (kernel = stride = 3)",
          "greedy": "greedy auxiliary, oracle CNN (no clustering)", "linear": "linear on pixels",
          "random-features": "random features (top only trained)", "mlp": "one-hidden-layer MLP, BP",
          "cnn": "generic CNN, BP (5x5/2, 4x4/2)"}
#: The presets: the depth-needing one (only the arrangement of strokes carries the label) and the easy digits.
PRESETS = ("arrangements", "digits")


def preset_grammar(name: str, settings: dict):
    """The grammar of preset ``name`` with the run's noise, distractors and (arrangements) signature probability."""
    if name == "digits":
        return digits_grammar(noise=settings["noise"], distractor=settings["distractor"])
    return arrangement_grammar(noise=settings["noise"], distractor=settings["distractor"],
                               signature=settings["signature"])


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
    title="Layerwise algorithm against BP, greedy and shallow baselines, on a depth-needing and an easy preset",
    description="Test accuracy against the number of training images for the layerwise algorithm (per level: train a "
                "two-layer patch network, k-means its patch embeddings, recode as one-hot; top classifier on the top "
                "code map; the embedding is the raw patch by default, and the paper's label statistics and the hidden "
                "layer run as comparisons), end-to-end BP and greedy auxiliary training on the oracle patch architecture (kernel = "
                "stride = 3, the grammar's), a linear classifier on pixels, random features, a one-hidden-layer MLP "
                "and a generic CNN (5x5 stride 2, 4x4 stride 2); and the recovery (adjusted Rand index) of each "
                "latent level by the layerwise clusters. Two presets: 'arrangements' (only the arrangement of the "
                "strokes carries the label; the label-statistics margin is reported) and the easy 'digits'. Every "
                "seed (ensemble member) trains on its own sample.",
    defaults={"presets": list(PRESETS), "sample_sizes": [30, 100, 300, 1000], "n_test": 2000, "noise": 0.2,
              "distractor": 0.02, "signature": 0.3, "hidden": 32, "steps": 300, "batch_size": 64,
              "lr_layerwise": 0.5, "lr_baselines": 0.05, "embedding": "input", "oversample": 3,
              "kmeans_restarts": 4, "top": "mlp", "top_l2": 1e-3, "top_method": "auto",
              "baseline_steps": 1500, "mlp_width": 256, "random_features": 2048, "methods": list(METHODS),
              "compare_embeddings": ["label", "hidden"], "cluster_count": "given", "max_clusters": 24},
    schema={"presets": list_of(choice(*PRESETS), max_len=len(PRESETS), distinct=True),
            "sample_sizes": list_of(integer(10), max_len=16), "n_test": integer(1), "noise": real(0),
            "distractor": real(0, 1), "signature": real(0, 1, lo_open=True, hi_open=True), "hidden": integer(1),
            "steps": integer(1), "batch_size": integer(1),
            "lr_layerwise": real(0, lo_open=True), "lr_baselines": real(0, lo_open=True),
            "embedding": choice(*EMBEDDINGS), "oversample": integer(1), "kmeans_restarts": integer(1),
            "top": choice(*TOPS), "top_l2": real(0, lo_open=True), "top_method": choice(*TOP_METHODS),
            "baseline_steps": integer(1), "mlp_width": integer(1), "random_features": integer(1),
            "methods": list_of(choice(*METHODS), max_len=len(METHODS), distinct=True),
            "compare_embeddings": list_of(choice(*EMBEDDINGS), min_len=0, max_len=len(EMBEDDINGS), distinct=True),
            "cluster_count": choice(*CLUSTER_COUNTS), "max_clusters": integer(2, 64)},
    quick={"sample_sizes": [50, 200], "n_test": 300, "hidden": 16, "steps": 100, "kmeans_restarts": 2,
           "top_method": "lbfgs", "baseline_steps": 200, "mlp_width": 64, "random_features": 256,
           "compare_embeddings": []},
    default_seeds=3,
)
def hier_layerwise(settings: dict, ctx: Context) -> ExperimentResult:
    base = TrainSettings(hidden=settings["hidden"], steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr_layerwise"], embedding=settings["embedding"],
                         oversample=settings["oversample"], kmeans_restarts=settings["kmeans_restarts"],
                         top=settings["top"], cluster_count=settings["cluster_count"],
                         max_clusters=settings["max_clusters"], dtype=ctx.dtype)
    shallow = BaselineSettings(steps=settings["baseline_steps"], width=settings["mlp_width"],
                               features=settings["random_features"], batch_size=settings["batch_size"])
    per_method = {"layerwise": base, "end-to-end": replace(base, lr=settings["lr_baselines"]),
                  "greedy": replace(base, lr=settings["lr_baselines"]), "linear": shallow,
                  "random-features": shallow, "mlp": shallow, "cnn": shallow}
    certificates = []

    def top(features, targets):
        sol = solve_top_classifier(features, targets, settings["top_l2"], method=settings["top_method"])
        certificates.extend(sol.certificates)
        return sol.weights

    methods = tuple(settings["methods"])
    presets = tuple(settings["presets"])
    fig, axes = new_figure(2 * len(presets), width=4.4, height=4.6)
    metrics = {"sample_sizes": None, "presets": {}}
    arrays, parts, diverged, all_diverged = {}, [], [], True
    for k, name in enumerate(presets):
        grammar = preset_grammar(name, settings)
        variant_recovery = {}
        result = compare_on_sample_sizes(grammar, settings["sample_sizes"], n_members=ctx.n_seeds, seed=ctx.seed,
                                         settings={m: per_method[m] for m in methods}, n_test=settings["n_test"],
                                         methods=methods, top_classifier=top if settings["top"] == "linear" else None,
                                         xp=ctx.xp)
        variants = [e for e in settings["compare_embeddings"] if e != settings["embedding"]]
        if "layerwise" not in methods:
            variants = []
        for emb in variants:  # the layerwise algorithm with another embedding: what that departure changes
            extra = compare_on_sample_sizes(grammar, settings["sample_sizes"], n_members=ctx.n_seeds, seed=ctx.seed,
                                            settings={"layerwise": replace(base, embedding=emb)},
                                            n_test=settings["n_test"], methods=("layerwise",),
                                            top_classifier=top if settings["top"] == "linear" else None, xp=ctx.xp)
            result.accuracy[f"layerwise-{emb}"] = extra.accuracy["layerwise"]
            result.seconds[f"layerwise-{emb}"] = extra.seconds["layerwise"]
            result.diverged += extra.diverged
            variant_recovery[emb] = extra.recovery
        diverged += [f"{name}: {d}" for d in result.diverged]
        all_diverged = all_diverged and result.all_diverged
        sizes = result.sample_sizes
        metrics["sample_sizes"] = sizes.tolist()
        arrays["sample_sizes"] = sizes
        seps = statistics_separation(grammar)
        entry = {"alphabet_sizes": list(grammar.alphabet_sizes), "distinct_patch_tables": distinct_patch_tables(grammar),
                 "label_statistics_margin": {f"level_{i + 1}": v for i, v in enumerate(seps)},
                 "accuracy": {}, "recovery_ari": {}, "fit_seconds": {}}
        ax_acc, ax_ari = axes[2 * k], axes[2 * k + 1]
        entry["cluster_counts"] = {"estimated" if settings["cluster_count"] != "given" else "given":
                                   result.cluster_counts.tolist(), "truth_bottom_first":
                                   list(reversed(grammar.alphabet_sizes[1:]))}
        for m in methods + tuple(f"layerwise-{e}" for e in variants):
            acc = result.accuracy[m]
            variant = m.startswith("layerwise-")
            label = (f"layerwise, {m.split('-', 1)[1]} embedding" if variant else
                     f"layerwise ({settings['embedding']} embedding)" if m == "layerwise" else LABELS[m])
            mean_and_spread(ax_acc, sizes, acc, label=label, marker="o", clip=ACCURACY_RANGE,
                            linestyle="--" if variant else "-")
            entry["accuracy"][m] = {"mean": acc.mean(axis=1).tolist(), "std": acc.std(axis=1).tolist()}
            entry["fit_seconds"][m] = result.seconds[m].tolist()
            arrays[f"{name}_accuracy_{m}"] = acc
        ax_acc.set_xscale("log")
        ax_acc.axhline(1 / grammar.n_classes, color="grey", lw=0.8, ls=":", label=f"chance (1/{grammar.n_classes})")
        margin = ", ".join(f"{v:.3f}" for v in seps)
        ax_acc.set(xlabel="training images per seed", ylabel="test accuracy", ylim=(0, 1.02),
                   title=f"{name}: test accuracy\n(label-statistics margin per level: {margin})")
        if "layerwise" in methods:
            for j in range(grammar.depth):
                level = grammar.depth - j
                mean_and_spread(ax_ari, sizes, result.recovery[:, j, :], label=f"level {level}", marker="o",
                                clip=ARI_RANGE)
                entry["recovery_ari"][f"level_{level}"] = {"mean": result.recovery[:, j].mean(axis=1).tolist(),
                                                           "std": result.recovery[:, j].std(axis=1).tolist()}
            arrays[f"{name}_recovery_ari"] = result.recovery
            for emb, rec in variant_recovery.items():
                arrays[f"{name}_recovery_ari_{emb}"] = rec
                entry["recovery_ari"][f"embedding_{emb}"] = {
                    f"level_{grammar.depth - j}": rec[:, j].mean(axis=1).tolist() for j in range(grammar.depth)}
            ax_ari.set_xscale("log")
            ax_ari.set(xlabel="training images per seed", ylabel="adjusted Rand index", ylim=(-0.05, 1.02),
                       title=f"{name}: layerwise recovery of each level")
            ax_ari.legend(fontsize=8)
        else:
            ax_ari.set_axis_off()
        metrics["presets"][name] = entry
        for i, n in enumerate(sizes):
            accs = ", ".join(f"{m} {result.accuracy[m][i].mean():.3f}" for m in result.accuracy)
            ari = ""
            if "layerwise" in methods:
                ari = "; ARI " + "/".join(f"{result.recovery[i, j].mean():.2f}" for j in range(grammar.depth))
            parts.append(f"{name} n={n}: {accs}{ari}")
    if certificates:
        gaps = [c.duality_gap for c in certificates]
        metrics["top_classifier"] = {"solves": len(certificates), "methods": sorted({c.method for c in certificates}),
                                     "all_certified": all(c.holds for c in certificates),
                                     "max_duality_gap": float(max(gaps)) if gaps else None}
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
    note_bands(fig, ctx.n_seeds)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"hier_layerwise": fig}, " | ".join(parts),
                                                diverged), all_diverged)
