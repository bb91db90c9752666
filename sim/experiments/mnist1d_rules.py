"""Experiment ``mnist1d-rules``: every rule of the engine on MNIST-1D (Greydanus 2020), an MLP, 8 seeds."""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_host
from ..conv import CONV_RULES, LOCAL_RULES, draw_conv_feedback, train_convnet
from ..conv_local import init_conv_modules
from ..conv_arch import mnist1d_cnn
from ..divergence import divergence_message
from ..data.mnist1d import N_CLASSES, PUBLISHED_BASELINES, mnist1d, standardize
from ..network import init_network
from ..nn import accuracy, predict
from ..plots import ACCURACY_RANGE, ANGLE_RANGE, legend_outside, mean_and_spread, new_figure, note_bands
from ..rules import draw_feedback, get_rule
from ..settings import boolean, choice, integer, list_of, real, setting_error
from ..local import make_block_network, to_network
from ..parallel import BatchPlan, train_blocks
from ..train import TrainResult, train
from . import Context, ExperimentResult, every_member_diverged, experiment, report_all_diverged, summary_stats

#: The rules compared, and the step size each trains with (SGD without momentum, tanh; chosen on the
#: canonical split at 3,000 steps: ``drtp`` diverges above 0.03, ``usf``'s unit magnitudes need a smaller step).
RULE_NAMES = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "kp", "drtp", "sg", "cdni")
RULE_LRS = (0.3, 0.1, 0.1, 0.03, 0.3, 0.3, 0.3, 0.03, 0.1, 0.1)
#: Rules one may add (not in the defaults): ``dgl`` (decoupled greedy learning, Belilovsky et al. 2020) through
#: the block runtime (:func:`sim.parallel.train_blocks`): one block per layer, linear heads, no biases, SGD.
EXTRA_RULES = ("dgl",)
LOGISTIC = "logistic regression (BP, no hidden layer)"
COLORS = {name: f"C{i}" for i, name in enumerate(RULE_NAMES)} | {"dgl": "k"}
MARKERS = dict(zip(RULE_NAMES, "os^vDPX*h<")) | {"dgl": "d"}  # rules whose curves coincide stay visible

POSITIVE_INT, POSITIVE = integer(1), real(0, lo_open=True)


def _check_lrs(settings: dict) -> None:
    if settings["optimizer"] == "sgd" and len(settings["lrs"]) != len(settings["rules"]):
        raise setting_error("lrs", settings["lrs"], f"needs one step size per rule ({len(settings['rules'])} rules: "
                                                    f"{', '.join(settings['rules'])}), got {len(settings['lrs'])}",
                            "a list as long as rules")
    if len(settings["cnn_lrs"]) != len(settings["cnn_rules"]):
        raise setting_error("cnn_lrs", settings["cnn_lrs"], f"needs one step size per CNN rule "
                                                            f"({len(settings['cnn_rules'])}), got "
                                                            f"{len(settings['cnn_lrs'])}", "a list as long as cnn_rules")
    if settings["optimizer"] != "sgd" and "dgl" in settings["rules"]:
        raise setting_error("optimizer", settings["optimizer"], "rule dgl trains by SGD only "
                                                                "(sim.parallel.train_blocks)", "sgd, or rules without dgl")
    if (settings["n_train"] + settings["n_test"]) % 10:
        raise setting_error("n_train", settings["n_train"], f"n_train + n_test must be a multiple of 10, got "
                                                            f"{settings['n_train']} + {settings['n_test']}")


def train_dgl(lr: float, data, test, settings: dict, ctx: Context) -> TrainResult:
    """DGL on the same layer sizes (one block per layer, linear heads, no biases; :mod:`sim.local`), by SGD with
    step ``lr``; test accuracy every ``record_every`` batches, as a :class:`sim.train.TrainResult`."""
    sizes = [data.n_inputs, *settings["hidden"], data.n_outputs]
    net = make_block_network(sizes, ctx.n_seeds, seed=ctx.seed, activation=settings["activation"], head="linear",
                             xp=ctx.xp, dtype=ctx.dtype)
    res = train_blocks(net, BatchPlan(data, settings["batch_size"], settings["steps"], seed=ctx.seed), rule="dgl",
                       lr=lr, snapshot_every=settings["record_every"])
    x_test, y_test = to_device(test.x, ctx.xp, ctx.dtype), to_device(test.y, ctx.xp, ctx.dtype)
    count = res.n_snapshots()
    steps = np.array([max(s[i].batches for s in res.snapshots) for i in range(count)])
    acc = np.array([res.accuracy(x_test, y_test, snapshot=i) for i in range(count)])
    if count == 0 or steps[-1] != settings["steps"]:
        steps, acc = np.append(steps, settings["steps"]), np.concatenate([acc, res.accuracy(x_test, y_test)[None]])
    return TrainResult(to_network(res.network), steps, {"accuracy": acc}, list(res.diverged))


def train_rule(name: str, lr: float, data, test, settings: dict, ctx: Context, *, sizes=None):
    """Train ``ctx.n_seeds`` MLPs on ``data`` with rule ``name``; the recorded metrics are measured on ``test``."""
    if name == "dgl":
        return train_dgl(lr, data, test, settings, ctx)
    sizes = sizes or [data.n_inputs, *settings["hidden"], data.n_outputs]
    net = init_network(sizes, ctx.n_seeds, seed=ctx.seed, activation=settings["activation"], bias=True,
                       xp=ctx.xp, dtype=ctx.dtype)
    feedback = draw_feedback(name, sizes, ctx.n_seeds, seed=ctx.seed, xp=ctx.xp, dtype=ctx.dtype)
    extra = {}
    if get_rule(name).init_modules is not None:
        extra["module_settings"] = dict(kind="linear", target="true", lr=settings["sg_lr"], every=1)
    if get_rule(name).learns_feedback:
        extra["weight_decay"] = settings["kp_weight_decay"]
    # Adam: one step size for every rule and the logistic regression (real-rules has no such setting: SGD)
    if settings.get("optimizer", "sgd") == "adam":
        extra["optimizer"], lr = "adam", settings["adam_lr"]
    return train(net, data, rule=name, steps=settings["steps"], lr=lr, batch_size=settings["batch_size"],
                 feedback=feedback, seed=ctx.seed, record_every=settings["record_every"], observe_on=test,
                 progress=ctx.progress, **extra)


@experiment(
    "mnist1d-rules",
    title="Every rule on MNIST-1D: test accuracy and alignment (MLP)",
    description="BP, FA, DFA, the sign-symmetry rules (usf, frsf, brsf), Kolen-Pollack, DRTP, DNI and cDNI train "
                "the same tanh MLP (40-100-100-10, biases) on the canonical MNIST-1D split (4,000 / 1,000, the "
                "mnist1d package's generator, offline), by SGD from the same inits, one ensemble of seeds per rule; "
                "test accuracy over time and at the end (mean ± std), beside the published baselines, and the "
                "angle of each hidden layer's teaching signal to BP's on the test set. A logistic regression (BP, "
                "no hidden layer) checks the task against the published 32%. optimizer=adam trains the MLPs and the "
                "logistic regression by Adam with step adam_lr instead (lrs and logistic_lr unused); rules may add dgl "
                "(decoupled greedy learning, sim.local, no biases, SGD). cnn_rules (with one step per rule in "
                "cnn_lrs) add Greydanus's CNN (sim.conv_arch.mnist1d_cnn) trained with those rules for cnn_steps, "
                "by cnn_optimizer (sgd or adam), with biases (cnn_bias) and init cnn_init (normal, or uniform: "
                "PyTorch's default), and the angle of each layer's update to BP's; cnn_rules may include sg, cdni "
                "(linear synthetic-gradient modules on each layer's flattened map, bootstrapped targets) and dgl "
                "(a linear classifier on each layer's flattened map), sim.conv_local, trained with the weights.",
    defaults={"n_train": 4000, "n_test": 1000, "data_seed": 42, "standardize": True, "hidden": [100, 100],
              "activation": "tanh", "steps": 6000, "batch_size": 100, "record_every": 200,
              "rules": list(RULE_NAMES), "lrs": list(RULE_LRS), "sg_lr": 0.01, "kp_weight_decay": 1e-3,
              "logistic_lr": 0.3, "optimizer": "sgd", "adam_lr": 1e-3, "cnn_rules": [], "cnn_lrs": [],
              "cnn_steps": 6000, "cnn_optimizer": "sgd", "cnn_bias": False, "cnn_init": "normal"},
    schema={"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "data_seed": integer(0), "standardize": boolean(),
            "hidden": list_of(POSITIVE_INT, max_len=8), "activation": choice("tanh", "relu", "linear"),
            "steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "record_every": POSITIVE_INT,
            "rules": list_of(choice(*RULE_NAMES, *EXTRA_RULES), max_len=len(RULE_NAMES) + len(EXTRA_RULES),
                             distinct=True),
            "lrs": list_of(POSITIVE, max_len=len(RULE_NAMES) + len(EXTRA_RULES)), "sg_lr": POSITIVE, "kp_weight_decay": real(0),
            "logistic_lr": POSITIVE, "optimizer": choice("sgd", "adam"), "adam_lr": POSITIVE,
            "cnn_rules": list_of(choice(*CONV_RULES, *LOCAL_RULES), min_len=0,
                                 max_len=len(CONV_RULES) + len(LOCAL_RULES), distinct=True),
            "cnn_lrs": list_of(POSITIVE, min_len=0, max_len=len(CONV_RULES) + len(LOCAL_RULES)),
            "cnn_steps": POSITIVE_INT,
            "cnn_optimizer": choice("sgd", "adam"), "cnn_bias": boolean(), "cnn_init": choice("normal", "uniform")},
    quick={"steps": 500, "record_every": 100},
    default_seeds=8,
    checks=(_check_lrs,),
)
def mnist1d_rules(settings: dict, ctx: Context) -> ExperimentResult:
    data, test = mnist1d(settings["n_train"], settings["n_test"], seed=settings["data_seed"])
    if settings["standardize"]:
        data, test = standardize(data, test)
    results, diverged = {}, []
    for name, lr in zip(settings["rules"], settings["lrs"]):
        results[name] = train_rule(name, lr, data, test, settings, ctx)
        diverged += [divergence_message(name, d) for d in results[name].diverged]
    logistic = train_rule("bp", settings["logistic_lr"], data, test, settings, ctx,
                          sizes=[data.n_inputs, data.n_outputs])
    shown = {f"published {k}": v for k, v in PUBLISHED_BASELINES.items() if k in ("logistic regression", "MLP", "CNN")}
    result = report_rules(ctx, settings, data, test, results, logistic, diverged, baselines=shown,
                          title="MNIST-1D", figure_prefix="mnist1d")
    if settings["cnn_rules"]:
        _add_cnn(result, data, test, settings, ctx)
    result.metrics["published_baselines_percent"] = dict(PUBLISHED_BASELINES)
    result.summary += "; published: " + ", ".join(f"{k} {v:.0f}%" for k, v in PUBLISHED_BASELINES.items())
    if settings["optimizer"] == "adam":
        result.summary += f"; MLPs and logistic regression trained by Adam (step {settings['adam_lr']:g})"
    return result


def train_cnn(name: str, lr: float, net, x, y, x_test, y_test, settings: dict, ctx: Context, *, steps: int):
    """Train the ensemble ``net`` with rule ``name`` (:func:`sim.conv.train_convnet`); the record, on the test set.

    ``settings``: ``cnn_optimizer`` (``sgd`` or ``adam``, step ``lr`` either
    way), ``batch_size``, ``record_every``, ``kp_weight_decay`` (for ``kp``).
    ``sg``, ``cdni``, ``dgl`` train fresh modules (:func:`sim.conv_local.init_conv_modules`) alongside.
    """
    feedback = init_conv_modules(name, net, x.shape[-2:], seed=ctx.seed) if name in LOCAL_RULES else \
        draw_conv_feedback(name, net, x.shape[-2:], seed=ctx.seed)
    _, record, _ = train_convnet(net, x, y, rule=name, steps=steps, lr=lr, batch_size=settings["batch_size"],
                                 seed=ctx.seed, feedback=feedback,
                                 weight_decay=settings["kp_weight_decay"] if name == "kp" else 0.0,
                                 test=(x_test, y_test), record_every=settings["record_every"],
                                 optimizer=settings["cnn_optimizer"])
    return record


def report_cnn(result: ExperimentResult, records: dict, lrs: dict, settings: dict, ctx: Context, *, title: str,
               figure_prefix: str, layer_names, published: tuple | None = None) -> None:
    """Add the CNN runs ``records`` (rule -> :func:`train_cnn`'s record) to ``result``: test accuracy (mean ± std),
    the angle of each layer's update to BP's, divergences; figures ``{prefix}_cnn`` and ``{prefix}_cnn_alignment``."""
    fig, (ax,) = new_figure(1, width=6.0)
    fig_align, ax_layers = new_figure(len(layer_names), width=4.6)
    result.metrics["cnn"] = {}
    for name, record in records.items():
        color, marker = COLORS.get(name, "k"), MARKERS.get(name, ".")
        mean_and_spread(ax, record["steps"], record["accuracy"], label=f"CNN, {name}", color=color,
                        clip=ACCURACY_RANGE, marker=marker)
        angles = record["gradient_angle"]
        result.arrays.update({f"cnn_{name}_test_accuracy": record["accuracy"], f"cnn_{name}_steps": record["steps"],
                              f"cnn_{name}_gradient_angle": angles})
        entry = {"test_accuracy": summary_stats(record["accuracy"][-1]), "lr": lrs[name],
                 "optimizer": settings["cnn_optimizer"],
                 "final_gradient_angle_deg_per_layer": [summary_stats(angles[-1, :, j]) for j in range(angles.shape[-1])]}
        result.metrics["cnn"][name] = entry
        result.diverged += [divergence_message(f"CNN {name}", d) for d in record["diverged"]]
        if name != "bp":
            for j, ax_layer in enumerate(ax_layers):
                mean_and_spread(ax_layer, record["steps"], angles[..., j], label=name, color=color, clip=ANGLE_RANGE,
                                marker=marker)
        acc = entry["test_accuracy"]
        if acc["mean"] is not None:
            result.summary += f"; CNN {name}: test accuracy {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}%"
    if published is not None:
        ax.axhline(published[1] / 100, color="grey", ls="-.", lw=1, label=f"{published[0]} ({published[1]:g}%)")
    ax.set(xlabel="step", ylabel="test accuracy (fraction correct)", ylim=(0, 1), title=f"CNN on {title}")
    legend_outside(ax)
    for ax_layer, layer in zip(ax_layers, layer_names):
        ax_layer.axhline(90, color="grey", lw=0.8, ls="--")
        ax_layer.set(xlabel="step", ylabel="angle to BP's update (degrees)", ylim=(0, 180), title=layer)
        if ax_layer.get_legend_handles_labels()[0]:  # some rule other than BP was drawn
            legend_outside(ax_layer)
    note_bands(fig, ctx.n_seeds, title=f"{title}, CNN (sim.conv, {settings['cnn_optimizer']})")
    note_bands(fig_align, ctx.n_seeds, title=f"{title}, CNN: angle of each layer's weight update to BP's (test set)")
    result.figures[f"{figure_prefix}_cnn"] = fig
    result.figures[f"{figure_prefix}_cnn_alignment"] = fig_align


def _add_cnn(result: ExperimentResult, data, test, settings: dict, ctx: Context) -> None:
    """Greydanus (2020)'s CNN (:func:`sim.conv_arch.mnist1d_cnn`) trained with each of ``cnn_rules``."""
    records = {}
    x, x_test = data.x[:, None, None, :], test.x[:, None, None, :]
    for name, lr in zip(settings["cnn_rules"], settings["cnn_lrs"]):
        net = mnist1d_cnn(data.n_inputs, N_CLASSES, ctx.n_seeds, seed=ctx.seed, bias=settings["cnn_bias"],
                          init=settings["cnn_init"], xp=ctx.xp, dtype=ctx.dtype)
        records[name] = train_cnn(name, lr, net, x, data.y, x_test, test.y, settings, ctx, steps=settings["cnn_steps"])
    report_cnn(result, records, dict(zip(settings["cnn_rules"], settings["cnn_lrs"])), settings, ctx,
               title="MNIST-1D", figure_prefix="mnist1d", layer_names=["conv 1", "conv 2", "conv 3", "read-out"],
               published=("published CNN, Adam", PUBLISHED_BASELINES["CNN"]))


def report_rules(ctx: Context, settings, data, test, results: dict, logistic, diverged: list, *, baselines: dict,
                 title: str, figure_prefix: str) -> ExperimentResult:
    """Figures, metrics and summary of a comparison of rules on a classification task.

    ``results`` maps rule names to :class:`sim.train.TrainResult` whose
    ``accuracy`` was recorded on ``test``; ``logistic`` is the no-hidden-layer
    BP control (or ``None``); ``baselines`` maps a label to a test accuracy in
    percent, drawn as reference lines. Figures: ``{prefix}_rules`` and
    ``{prefix}_alignment``.
    """
    fig, (ax_curve, ax_final) = new_figure(2, width=6.4, height=3.8)
    fig_align, ax_layers = new_figure(len(settings["hidden"]), width=4.6)
    x_train, y_train = to_device(data.x, ctx.xp, ctx.dtype), to_device(data.y, ctx.xp, ctx.dtype)
    metrics, arrays = {}, {}
    entries = [*results.items(), *([("logistic", logistic)] if logistic is not None else [])]
    for k, (name, res) in enumerate(entries):
        act = settings["activation"]
        color = COLORS.get(name, "k")
        label = LOGISTIC if name == "logistic" else name
        test_acc = res.metric("accuracy")  # recorded on the test set
        train_acc = to_host(accuracy(predict(res.network.weights, x_train, act, res.network.biases), y_train))
        mean_and_spread(ax_curve, res.steps, test_acc, label=label, color=color, clip=ACCURACY_RANGE,
                        linestyle="--" if name == "logistic" else "-", marker=MARKERS.get(name, "."))
        final = test_acc[-1]
        finite = final[np.isfinite(final)]
        if finite.size:
            ax_final.errorbar([k], [finite.mean()], yerr=[finite.std()], fmt=MARKERS.get(name, "."), color=color,
                              capsize=3, label=label)
        arrays.update({f"{name}_steps": res.steps, f"{name}_test_accuracy": test_acc,
                       f"{name}_train_accuracy": train_acc})
        metrics[name] = {"test_accuracy": summary_stats(final), "train_accuracy": summary_stats(train_acc)}
        if name not in ("bp", "logistic") and "signal_angle" in res.metrics:
            angles = res.metric("signal_angle")
            arrays[f"{name}_signal_angle"] = angles
            metrics[name]["final_signal_angle_deg_per_layer"] = [summary_stats(angles[-1, :, j])
                                                                 for j in range(angles.shape[-1])]
            for j, ax in enumerate(ax_layers):
                mean_and_spread(ax, res.steps, angles[..., j], label=name, color=color, clip=ANGLE_RANGE,
                                marker=MARKERS[name])
        if "weight_alignment" in res.metrics:
            arrays[f"{name}_weight_alignment"] = res.metric("weight_alignment")
    for (what, value), style in zip(baselines.items(), (":", "--", "-.", (0, (1, 4)), (0, (5, 8)))):
        ax_final.axhline(value / 100, color="grey", ls=style, lw=1, label=f"{what} ({value:.1f}%)")
    ax_final.set_xticks(range(len(entries)), [n for n, _ in entries], rotation=90, fontsize="small")
    ax_curve.set(xlabel="step", ylabel="test accuracy (fraction correct)", ylim=(0, 1), title="test accuracy")
    ax_final.set(xlabel="rule", ylabel="final test accuracy (fraction correct)", ylim=(0, 1),
                 title="at the end, with the published baselines")
    legend_outside(ax_curve)
    legend_outside(ax_final)
    for j, ax in enumerate(ax_layers):
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="angle to BP's signal (degrees)", ylim=(0, 180),
               title=f"hidden layer {j + 1}: signal vs BP (test set)")
    for ax in ax_layers:
        if ax.get_legend_handles_labels()[0]:  # some rule other than BP was drawn
            legend_outside(ax)
    note_bands(fig, ctx.n_seeds, title=f"{title}, MLP")
    note_bands(fig_align, ctx.n_seeds, title=f"{title}: alignment of the hidden teaching signals with BP's")
    summary = "; ".join(f"{'logistic' if n == 'logistic' else n}: test accuracy "
                        f"{100 * m['test_accuracy']['mean']:.1f} ± {100 * m['test_accuracy']['std']:.1f}%"
                        for n, m in metrics.items() if isinstance(m, dict) and "test_accuracy" in m
                        and m["test_accuracy"]["mean"] is not None)
    result = ExperimentResult(metrics, arrays, {f"{figure_prefix}_rules": fig, f"{figure_prefix}_alignment": fig_align},
                              summary, diverged)
    return report_all_diverged(result, every_member_diverged([r for _, r in entries]))
