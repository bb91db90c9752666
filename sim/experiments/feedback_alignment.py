"""Experiments ``fa-linear`` and ``dfa-nonlinear``: BP, FA and DFA side by side."""

from __future__ import annotations

from ..backend import to_device, to_host
from ..data import lillicrap_linear, teacher_classification
from ..data.tasks import Dataset
from ..divergence import divergence_message
from ..members import train_folded
from ..network import init_network
from ..nn import accuracy, predict
from ..plots import ACCURACY_RANGE, ANGLE_RANGE, end_markers, mean_and_spread, new_figure, note_bands
from ..rules import draw_feedback
from ..settings import choice, integer, list_of, real
from ..train import train
from . import Context, ExperimentResult, every_member_diverged, experiment, report_all_diverged, summary_stats

RULE_NAMES = ("bp", "fa", "dfa")
COLORS = {"bp": "C0", "fa": "C1", "dfa": "C2"}

#: Types and ranges of the settings shared by the experiments that train MLP ensembles.
POSITIVE_INT, POSITIVE = integer(1), real(0, lo_open=True)
TRAINING_SCHEMA = {"steps": POSITIVE_INT, "lr": POSITIVE, "batch_size": POSITIVE_INT, "init_scale": real(0),
                   "record_every": POSITIVE_INT}
TEACHER_SCHEMA = {"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "n_inputs": POSITIVE_INT, "n_classes": integer(2),
                  "hidden": list_of(POSITIVE_INT, max_len=8)}


def rules_setting(names) -> object:
    """The validator of a ``rules`` setting: a non-empty list of distinct names from ``names``."""
    return list_of(choice(*names), max_len=len(names), distinct=True)


def teacher_task(settings: dict, seed: int) -> tuple[Dataset, Dataset, list[int]]:
    """The nonlinear teacher task of an experiment's settings: training set, test set and layer sizes."""
    n_train = settings["n_train"]
    full = teacher_classification(n_train + settings["n_test"], seed=seed, n_inputs=settings["n_inputs"],
                                  n_classes=settings["n_classes"])
    data, test = full.split(n_train)
    return data, test, [settings["n_inputs"], *settings["hidden"], settings["n_classes"]]


#: The settings that :func:`compare_rules_folded` varies per ensemble member (a sweep folds them).
PER_MEMBER = ("lr", "init_scale")


def compare_rules(sizes, data: Dataset, settings: dict, ctx: Context, *, activation: str, probe_for_bp: str):
    """Train one ensemble per rule from the same init; BP's signals are probed with ``probe_for_bp``.

    Returns ``{rule: TrainResult}`` and a list of divergence messages.
    """
    return compare_rules_folded(sizes, data, [settings], ctx, activation=activation, probe_for_bp=probe_for_bp)[0]


def compare_rules_folded(sizes, data: Dataset, settings_list: list[dict], ctx: Context, *, activation: str,
                         probe_for_bp: str) -> list:
    """:func:`compare_rules` for several settings that differ only in :data:`PER_MEMBER`, as one ensemble per rule.

    Settings ``p`` of ``P`` holds the members ``p S .. p S + S - 1`` (``S =
    ctx.n_seeds``), drawn as its own ensemble of ``S`` (seed streams ``0 ..
    S-1``, its ``init_scale``) and trained with its ``lr``
    (:mod:`sim.members`); the results are split back, so each is what
    :func:`compare_rules` gives for those settings alone. A block whose every
    member diverged is trained again alone (alone, training stops when every
    member has diverged, so its records are shorter). Returns one
    ``({rule: TrainResult}, divergence messages)`` per settings.
    """
    first, n_seeds = settings_list[0], ctx.n_seeds
    for settings in settings_list[1:]:
        differ = sorted(k for k in settings if settings[k] != first[k] and k not in PER_MEMBER)
        if differ:
            raise ValueError(f"folded settings may differ only in {', '.join(PER_MEMBER)}; they differ in "
                             f"{', '.join(differ)}")
    out = [({}, []) for _ in settings_list]
    for name in first["rules"]:
        nets = [init_network(sizes, n_seeds, seed=ctx.seed, scale=s["init_scale"], activation=activation,
                             xp=ctx.xp, dtype=ctx.dtype) for s in settings_list]
        feedback_rule = probe_for_bp if name == "bp" else name
        feedback = draw_feedback(feedback_rule, sizes, n_seeds, seed=ctx.seed,
                                 scale=first["feedback_scale"], xp=ctx.xp, dtype=ctx.dtype)

        def run(net, lr, feedback, modules):
            return train(net, data, rule=name, steps=first["steps"], lr=lr, batch_size=first["batch_size"],
                         feedback=feedback, seed=ctx.seed, record_every=first["record_every"],
                         probe=feedback_rule, progress=ctx.progress)

        parts = train_folded(run, nets, [s["lr"] for s in settings_list], feedback)
        for (results, diverged), res in zip(out, parts):
            results[name] = res
            diverged += [divergence_message(name, d) for d in res.diverged]
    return out


def _fa_linear_points(settings_list: list[dict], ctx: Context) -> list[ExperimentResult]:
    """``fa-linear`` for settings that differ only in :data:`PER_MEMBER`, trained as one ensemble per rule."""
    data = lillicrap_linear(settings_list[0]["n_samples"], seed=ctx.seed)
    sizes = [data.n_inputs, settings_list[0]["hidden"], data.n_outputs]
    trained = compare_rules_folded(sizes, data, settings_list, ctx, activation="linear", probe_for_bp="fa")
    return [_fa_linear_report(ctx, results, diverged) for results, diverged in trained]


def _dfa_nonlinear_points(settings_list: list[dict], ctx: Context) -> list[ExperimentResult]:
    """``dfa-nonlinear`` for settings that differ only in :data:`PER_MEMBER`, trained as one ensemble per rule."""
    data, test, sizes = teacher_task(settings_list[0], ctx.seed)
    trained = compare_rules_folded(sizes, data, settings_list, ctx, activation="tanh", probe_for_bp="dfa")
    return [_dfa_nonlinear_report(ctx, test, results, diverged) for results, diverged in trained]


@experiment(
    "fa-linear",
    title="Feedback alignment on the Lillicrap et al. 30-20-10 linear task",
    description="Loss and hidden-layer alignment angle over time for BP, FA and DFA across seeds. The angle is "
                "between the hidden teaching signal of the rule and BP's; for the BP-trained control it is the "
                "angle between a fixed random feedback's signal B e and BP's W^T e.",
    defaults={"n_samples": 1000, "hidden": 20, "steps": 4000, "lr": 0.02, "batch_size": 50, "init_scale": 0.5,
              "feedback_scale": 1.0, "record_every": 20, "rules": list(RULE_NAMES)},
    schema={"n_samples": POSITIVE_INT, "hidden": POSITIVE_INT, **TRAINING_SCHEMA, "feedback_scale": POSITIVE,
            "rules": rules_setting(RULE_NAMES)},
    quick={"steps": 800, "record_every": 20},
    per_member=PER_MEMBER, fold=_fa_linear_points,
)
def fa_linear(settings: dict, ctx: Context) -> ExperimentResult:
    return _fa_linear_points([settings], ctx)[0]


def _fa_linear_report(ctx: Context, results: dict, diverged: list) -> ExperimentResult:
    fig, (ax_loss, ax_angle) = new_figure(2)
    metrics, arrays = {}, {}
    for name, res in results.items():
        steps = res.steps
        loss, angle = res.metric("loss"), res.metric("signal_angle")[..., 0]
        label = {"bp": "BP (angle: fixed B vs BP)", "dfa": "DFA (= FA with one hidden layer)"}.get(name, name.upper())
        style = "--" if name == "dfa" else "-"
        mean_and_spread(ax_loss, steps, loss, label=label, log=True, linestyle=style)
        mean_and_spread(ax_angle, steps, angle, label=label, linestyle=style, clip=ANGLE_RANGE)
        arrays.update({f"{name}_steps": steps, f"{name}_loss": loss, f"{name}_signal_angle": angle})
        metrics[name] = {"final_loss": summary_stats(loss[-1]), "initial_loss": summary_stats(loss[0]),
                         "final_signal_angle_deg": summary_stats(angle[-1])}
    ax_loss.set(xlabel="step", ylabel="training loss (mse)", title="loss")
    ax_angle.axhline(90, color="grey", lw=0.8, ls="--")
    ax_angle.set(xlabel="step", ylabel="angle to BP signal (degrees)", title="hidden-layer alignment", ylim=(0, 120))
    for ax in (ax_loss, ax_angle):
        ax.legend()
    note_bands(fig, ctx.n_seeds)
    summary = "; ".join(f"{n}: final loss {m['final_loss']['mean']:.3g}, hidden angle "
                        f"{m['final_signal_angle_deg']['mean']:.1f} deg" for n, m in metrics.items()
                        if m["final_loss"]["mean"] is not None)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"fa_linear": fig}, summary, diverged),
                               every_member_diverged(results.values()))


@experiment(
    "dfa-nonlinear",
    title="BP, FA and DFA on a nonlinear teacher (tanh network)",
    description="Loss, accuracy and per-layer alignment of the hidden teaching signals with BP's, and the weight "
                "alignment of FA and DFA, for a tanh MLP on a nonlinear teacher classification task.",
    defaults={"n_train": 4000, "n_test": 2000, "n_inputs": 20, "n_classes": 5, "hidden": [64, 64], "steps": 6000,
              "lr": 0.1, "batch_size": 64, "init_scale": 1.0, "feedback_scale": 1.0, "record_every": 100,
              "rules": list(RULE_NAMES)},
    schema={**TEACHER_SCHEMA, **TRAINING_SCHEMA, "feedback_scale": POSITIVE, "rules": rules_setting(RULE_NAMES)},
    quick={"n_train": 1000, "n_test": 500, "steps": 1200, "record_every": 50},
    per_member=PER_MEMBER, fold=_dfa_nonlinear_points,
)
def dfa_nonlinear(settings: dict, ctx: Context) -> ExperimentResult:
    return _dfa_nonlinear_points([settings], ctx)[0]


def _dfa_nonlinear_report(ctx: Context, test: Dataset, results: dict, diverged: list) -> ExperimentResult:
    fig, axes = new_figure(4)
    metrics, arrays = {}, {}
    x_test, y_test = to_device(test.x, ctx.xp, ctx.dtype), to_device(test.y, ctx.xp, ctx.dtype)
    for name, res in results.items():
        steps = res.steps
        loss, acc, angles = res.metric("loss"), res.metric("accuracy"), res.metric("signal_angle")
        test_acc = to_host(accuracy(predict(res.network.weights, x_test, "tanh"), y_test))
        color = COLORS.get(name)
        mean_and_spread(axes[0], steps, loss, label=name.upper(), log=True, color=color)
        mean_and_spread(axes[1], steps, acc, label=f"{name.upper()} training", color=color, clip=ACCURACY_RANGE)
        # side by side just after the last step, so that equal accuracies stay visible
        end_markers(axes[1], steps[-1] * (1.02 + 0.03 * RULE_NAMES.index(name)), test_acc,
                    label=f"{name.upper()} test (end)", color=color, marker="sD^"[RULE_NAMES.index(name)])
        if name != "bp":
            for layer in range(angles.shape[-1]):
                mean_and_spread(axes[2 if name == "fa" else 3], steps, angles[..., layer], label=f"layer {layer + 1}",
                                clip=ANGLE_RANGE)
        arrays.update({f"{name}_steps": steps, f"{name}_loss": loss, f"{name}_accuracy": acc,
                       f"{name}_signal_angle": angles, f"{name}_test_accuracy": test_acc})
        if "weight_alignment" in res.metrics:
            arrays[f"{name}_weight_alignment"] = res.metric("weight_alignment")
        metrics[name] = {"final_loss": summary_stats(loss[-1]), "train_accuracy": summary_stats(acc[-1]),
                         "test_accuracy": summary_stats(test_acc),
                         "final_signal_angle_deg_per_layer": [summary_stats(angles[-1, :, j])
                                                              for j in range(angles.shape[-1])]}
    axes[0].set(xlabel="step", ylabel="training loss (ce)", title="loss")
    axes[1].set(xlabel="step", ylabel="accuracy (fraction correct)", ylim=(0, 1.02),
                title="accuracy: training, and test at the end")
    for ax, name in zip(axes[2:], ("FA", "DFA")):
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="angle to BP signal (degrees)", title=f"{name}: hidden alignment", ylim=(0, 120))
    for ax in axes:
        ax.legend(fontsize="small")
    note_bands(fig, ctx.n_seeds)
    summary = "; ".join(f"{n}: test accuracy {m['test_accuracy']['mean']:.3f}" for n, m in metrics.items()
                        if m["test_accuracy"]["mean"] is not None)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"dfa_nonlinear": fig}, summary, diverged),
                               every_member_diverged(results.values()))
