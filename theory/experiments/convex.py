r"""Experiments of the convex view: ``convex-vs-gd`` and ``convex-layerwise``.

``convex-vs-gd``
    The global optimum :math:`p^*` of the two-layer ReLU problem with weight
    decay (:func:`theory.convex.two_layer_relu`, exact arrangements, Clarabel,
    with its certificate) against gradient descent on the non-convex objective
    from many random inits, over the width: GD never ends below :math:`p^*`;
    the best runs approach it once the width reaches :math:`m^*`.
``convex-layerwise``
    Greedy layerwise training by convex steps (:mod:`theory.convex.layerwise`,
    one-vs-all scalar programs on the one-hot labels, or with ``--set head=vector``
    one vector-output block per layer (:mod:`theory.convex.vector`); squared loss, sampled
    arrangements) against SGD-trained greedy, DGL and end-to-end BP
    (:func:`sim.parallel.train_blocks`, cross-entropy, linear heads) on the same
    block architecture, on the nonlinear teacher task or the hierarchical
    digits: per block the training risk, the test accuracy, the bound of
    Prop. 3.1 and the certificate of every step.
"""

from __future__ import annotations

import numpy as np

from sim.experiments import Context, ExperimentResult, experiment
from sim.plots import band_note, mean_and_spread, new_figure
from sim.settings import choice, integer, list_of, real

from ..convex import layerwise
from ..convex.nonconvex import gradient_descent
from ..convex.relu import two_layer_relu

# --- convex-vs-gd ---------------------------------------------------------------------------------------------


@experiment(
    "convex-vs-gd",
    title="Convex optimum of a two-layer ReLU network vs gradient descent over the width",
    description="The convex program (Pilanci & Ergen 2020, exact arrangements, Clarabel, certified) gives the "
                "global optimum p* of the weight-decayed two-layer ReLU objective; gradient descent from many random "
                "inits at each width never ends below it and approaches it once the width reaches m*.",
    defaults={"n": 12, "beta": 0.1, "widths": [1, 2, 4, 8, 16, 32], "runs": 16, "steps": 3000, "init_scale": 1.0},
    schema={"n": integer(3, 40), "beta": real(0, lo_open=True), "widths": list_of(integer(1, 512), max_len=12),
            "runs": integer(1, 256), "steps": integer(1), "init_scale": real(0, lo_open=True)},
    quick={"n": 8, "widths": [1, 4, 16], "runs": 6, "steps": 600},
    default_seeds=3,
)
def convex_vs_gd(settings: dict, ctx: Context) -> ExperimentResult:
    widths = [int(w) for w in settings["widths"]]
    beta = float(settings["beta"])
    best = np.zeros((len(widths), ctx.n_seeds))
    reached = np.zeros((len(widths), ctx.n_seeds))
    optima, m_star, gaps = [], [], []
    for s in range(ctx.n_seeds):
        rng = np.random.default_rng(np.random.SeedSequence(ctx.seed, spawn_key=(15, s)))
        n = int(settings["n"])
        X = np.c_[rng.normal(size=(n, 2)), np.ones(n)]
        y = rng.normal(size=n)
        sol = two_layer_relu(X, y, beta, solver="cvxpy")
        optima.append(sol.objective)
        m_star.append(sol.width)
        gaps.append(sol.certificate.relative_gap)
        for k, m in enumerate(widths):
            _, _, values = gradient_descent(X, y, beta, m, runs=int(settings["runs"]), steps=int(settings["steps"]),
                                            init_scale=float(settings["init_scale"]), seed=ctx.seed * 7919 + s)
            rel = (values - sol.objective) / sol.objective
            best[k, s] = float(rel.min())
            reached[k, s] = float(np.mean(rel <= 1e-2))
    fig, (ax0, ax1) = new_figure(2)
    mean_and_spread(ax0, widths, np.maximum(best, 1e-12), label="best GD run", log=True, marker="o")
    ax0.axvline(float(np.mean(m_star)), color="grey", linestyle=":")
    ax0.set(xscale="log", xlabel="width m (dotted: mean m*)", ylabel="(L_GD - p*) / p*",
            title="best GD run above the convex optimum")
    ax0.legend(fontsize="small", title=band_note(ctx.n_seeds, clipped=False), title_fontsize="x-small")
    mean_and_spread(ax1, widths, reached, label="GD runs within 1% of p*", marker="s", clip=(0.0, 1.0))
    ax1.set(xscale="log", xlabel="width m", ylabel="fraction of runs", ylim=(-0.02, 1.02), title="GD runs that reach p*")
    ax1.legend(fontsize="small", title=band_note(ctx.n_seeds), title_fontsize="x-small")
    ax1.legend(fontsize="small")
    metrics = {"convex_optimum": optima, "m_star": m_star, "certificate_relative_gap": gaps,
               "best_gd_relative_gap": {str(m): best[k].tolist() for k, m in enumerate(widths)},
               "fraction_within_1e-2": {str(m): reached[k].tolist() for k, m in enumerate(widths)},
               "min_relative_gap": float(best.min())}
    summary = (f"convex optimum certified to {max(gaps):.1e}; m* = {m_star}; min over all GD runs of "
               f"(L - p*)/p* = {best.min():.2e} (never below 0); at the largest width the best run is "
               f"{np.mean(best[-1]):.2e} above p*")
    return ExperimentResult(metrics, {"best_relative_gap": best, "fraction_reached": reached,
                                      "widths": np.asarray(widths)}, {"convex_vs_gd": fig}, summary)


# --- convex-layerwise -------------------------------------------------------------------------------------------

def _task(settings: dict, seed: int):
    """``(x_train, y_train, x_test, y_test)``; the features are scaled to unit mean square.

    ``teacher``: the nonlinear teacher task of :mod:`sim.data.tasks` with ``n_inputs`` inputs.
    ``hierarchical``: the hierarchical digits, projected on their top ``n_inputs`` principal components.
    """
    n_train, n_test = int(settings["n_train"]), int(settings["n_test"])
    if settings["task"] == "teacher":
        from sim.data import teacher_classification

        data = teacher_classification(n_train + n_test, seed=seed, n_inputs=int(settings["n_inputs"]), n_hidden=64,
                                      n_classes=int(settings["n_classes"]), gain=3.0)
        x, y = np.asarray(data.x), np.asarray(data.y)
    else:
        from sim.data.hierarchical import digits

        data = digits(n_train + n_test, seed=seed).to_dataset()
        x = np.asarray(data.x, dtype=float).reshape(n_train + n_test, -1)
        y = np.asarray(data.y)
        # the convex programs grow with the input dimension: the top n_inputs principal components of the
        # training images (the same projection for every method)
        x = x - x[:n_train].mean(axis=0)
        _, _, vt = np.linalg.svd(x[:n_train], full_matrices=False)
        x = x @ vt[: int(settings["n_inputs"])].T
    x = x / np.sqrt(np.mean(x * x))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _sgd_rules(settings: dict, ctx: Context, x, y, x_test, y_test) -> dict:
    """SGD greedy, DGL and BP on the same blocks (width ``sgd_width``, linear heads, cross-entropy), one data seed."""
    from sim.data.tasks import Dataset
    from sim.local import make_block_network
    from sim.parallel import BatchPlan, evaluate, train_blocks

    k = int(settings["n_blocks"])
    sizes = [x.shape[1], *([int(settings["sgd_width"])] * k), y.shape[1]]
    train = Dataset(x, y, "classification", {})
    steps = int(settings["sgd_epochs"]) * (x.shape[0] // int(settings["batch_size"]))
    out = {}
    for rule in ("greedy", "dgl", "bp"):
        net = make_block_network(sizes, ctx.n_seeds, layers_per_block=[1] * (k - 1) + [2], seed=ctx.seed,
                                 activation="relu", head="linear")
        res = train_blocks(net, BatchPlan(train, int(settings["batch_size"]), steps, seed=ctx.seed), rule=rule,
                           lr=float(settings["lr"]))
        out[rule] = {"test_accuracy": evaluate(res.network, x_test, y_test).tolist(),
                     "train_accuracy": evaluate(res.network, x, y).tolist(),
                     "block_test_accuracy": _block_accuracies(res.network, x_test, y_test)}
    return out


def _block_accuracies(net, x, y) -> list:
    """Test accuracy ``[K]`` (member mean) of every block's auxiliary head, the last block's output last."""
    from sim.backend import to_host
    from sim.local import block_outputs

    outs = block_outputs(net, x)
    accs = []
    for j, h in enumerate(outs):
        logits = h if j == len(outs) - 1 else net.heads[j].forward(net.head_params[j], h)[0]
        accs.append(float(np.mean(np.argmax(to_host(logits), -1) == np.argmax(y, -1))))
    return accs


@experiment(
    "convex-layerwise",
    title="Greedy layerwise training by convex steps vs SGD greedy, DGL and BP",
    description="Every block solves the two-layer ReLU program (one-vs-all on one-hot labels, sampled arrangements, "
                "Clarabel) on the detached features of the block below and passes relu(X U) up; per block the "
                "training risk, test accuracy, the bound of Belilovsky et al.'s Prop. 3.1 and the certificates, "
                "against SGD greedy, DGL and BP on the same blocks.",
    defaults={"task": "teacher", "n_train": 150, "n_test": 1000, "n_inputs": 10, "n_classes": 3, "n_blocks": 3,
              "beta": 0.05, "arrangements": 16, "sgd_width": 64, "sgd_epochs": 60, "batch_size": 32, "lr": 0.05,
              "head": "ova"},
    schema={"task": choice("teacher", "hierarchical"), "n_train": integer(10, 5000), "n_test": integer(1),
            "n_inputs": integer(1, 200), "n_classes": integer(2, 20), "n_blocks": integer(1, 8),
            "beta": real(0, lo_open=True), "arrangements": integer(1, 2000), "sgd_width": integer(1, 4096),
            "sgd_epochs": integer(1), "batch_size": integer(1), "lr": real(0, lo_open=True),
            "head": choice("ova", "vector")},
    quick={"n_train": 80, "n_test": 200, "n_blocks": 2, "arrangements": 12, "sgd_epochs": 10, "sgd_width": 16},
    default_seeds=2,
)
def convex_layerwise(settings: dict, ctx: Context) -> ExperimentResult:
    k = int(settings["n_blocks"])
    risks, test_acc, train_acc, gaps, bound_viol, widths = (np.zeros((k, ctx.n_seeds)) for _ in range(6))
    sgd = []
    for s in range(ctx.n_seeds):
        x, y, x_test, y_test = _task(settings, ctx.seed + s)
        vector = settings["head"] == "vector"  # one shared hidden layer per block (theory.convex.vector)
        result = layerwise.convex_greedy(x, y, float(settings["beta"]), k, arrangements=int(settings["arrangements"]),
                                         solver="auto" if vector else "cvxpy", seed=ctx.seed + s,
                                         head=settings["head"])
        for b, block in enumerate(result.blocks):
            risks[b, s] = result.risks[b]
            train_acc[b, s] = np.mean(np.argmax(result.predict(x, b + 1), 1) == np.argmax(y, 1))
            test_acc[b, s] = np.mean(np.argmax(result.predict(x_test, b + 1), 1) == np.argmax(y_test, 1))
            gaps[b, s] = max(c.relative_gap for c in block.certificates)
            widths[b, s] = block.U.shape[0]
        bound_viol[1:, s] = result.bound_violations
        if s == 0:
            sgd = _sgd_rules(settings, ctx, x, y, x_test, y_test) if ctx.n_seeds else {}
    blocks = np.arange(1, k + 1)
    fig, (ax0, ax1) = new_figure(2)
    mean_and_spread(ax0, blocks, risks, label="convex greedy", marker="o")
    ax0.set(xlabel="block", ylabel="training risk (1/2n)||Y_hat - Y||^2", title="convex greedy: training risk")
    ax0.legend(fontsize="small", title=band_note(ctx.n_seeds, clipped=False), title_fontsize="x-small")
    mean_and_spread(ax1, blocks, test_acc, label="convex greedy (block head)", marker="o", clip=(0.0, 1.0))
    styles = {"greedy": ("C1", "--", "^"), "dgl": ("C2", "-.", "v")}
    for rule, (color, ls, marker) in styles.items():
        ax1.plot(blocks, sgd[rule]["block_test_accuracy"], color=color, linestyle=ls, marker=marker,
                 label=f"SGD {rule} (block head, seed 0)")
    acc = float(np.mean(sgd["bp"]["test_accuracy"]))
    ax1.plot([blocks[0], blocks[-1]], [acc, acc], color="C3", linestyle=":", label="SGD BP (network, seed 0)")
    ax1.set(xlabel="block", ylabel="test accuracy", title=f"test accuracy ({settings['task']} task)")
    ax1.legend(fontsize="x-small", title=band_note(ctx.n_seeds), title_fontsize="x-small")
    for ax in (ax0, ax1):
        ax.set_xticks(blocks)
    metrics = {"task": settings["task"], "training_risk": risks.tolist(), "train_accuracy": train_acc.tolist(),
               "test_accuracy": test_acc.tolist(), "max_certificate_relative_gap": gaps.tolist(),
               "prop31_bound_violation": bound_viol.tolist(), "block_widths": widths.tolist(), "sgd": sgd,
               "head": settings["head"],
               "loss": "convex: squared loss on one-hot targets, " + ("one-vs-all scalar programs"
                       if settings["head"] == "ova" else "vector-output blocks (gated program, refit, polish)")
                       + "; SGD: cross-entropy"}
    summary = (f"convex greedy ({settings['head']} head) on {settings['task']}: training risk per block "
               f"{np.round(risks.mean(1), 4).tolist()}, "
               f"test accuracy {np.round(test_acc.mean(1), 3).tolist()}, worst certificate gap {gaps.max():.1e}, "
               f"worst Prop. 3.1 bound violation {bound_viol.max():.1e}; SGD final test accuracy "
               + ", ".join(f"{r} {np.mean(v['test_accuracy']):.3f}" for r, v in sgd.items()))
    return ExperimentResult(metrics, {"training_risk": risks, "test_accuracy": test_acc}, {"convex_layerwise": fig},
                            summary)
