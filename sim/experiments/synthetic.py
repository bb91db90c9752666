r"""Experiments ``sg-linear``, ``sg-regression`` and ``sg-nonlinear``: synthetic gradients beside BP, FA and DFA.

* ``sg-linear``: a deep linear network on a linear teacher trained by BP, DNI
  (``sg``) and cDNI; loss and SG error (relative to the true gradient) over time.
* ``sg-regression``: the fixed-point picture of Czarnecki et al. (2017) and ours:
  linear regression through a module stalls on the ellipse
  :math:`w^T\Sigma(w - w_{LS}) = 0` without the label (DNI) and converges with it
  (cDNI, :math:`(a, b, c) \to (1, -1, 0)`); in a two-layer linear net, DNI's loss
  stalls for a bottleneck and is compensated by a wide hidden layer.
* ``sg-nonlinear``: a tanh (or relu) MLP on the nonlinear teacher task, trained by
  BP, FA, DFA, DNI and cDNI: final accuracy and time to a target loss.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_host
from ..data import linear_teacher
from ..data.tasks import Dataset, whitened_gaussian
from ..divergence import divergence_message
from ..network import init_network
from ..nn import accuracy, predict
from ..plots import (ACCURACY_RANGE, ANGLE_RANGE, end_markers, legend_outside, mean_and_spread, new_figure,
                     note_bands)
from ..nn import ACTIVATIONS
from ..rules import draw_feedback
from ..settings import choice, integer, list_of, real, setting_error
from ..synthetic import KINDS, TARGETS, init_modules, train_fixed_readout
from ..train import train
from . import Context, ExperimentResult, every_member_diverged, experiment, report_all_diverged, summary_stats
from .feedback_alignment import POSITIVE, POSITIVE_INT, TEACHER_SCHEMA, TRAINING_SCHEMA, rules_setting, teacher_task

RULE_NAMES = ("bp", "fa", "dfa", "sg", "cdni")

LABELS = {"bp": "BP", "fa": "FA", "dfa": "DFA", "sg": "SG (DNI)", "cdni": "cDNI"}
COLORS = {"bp": "C0", "fa": "C4", "dfa": "C3", "sg": "C1", "cdni": "C2"}


def time_to_target(steps, loss, target: float) -> np.ndarray:
    """Per member, the first recorded step whose loss is at most ``target`` (``nan`` if never): ``(E,)``."""
    loss = np.asarray(loss, dtype=float)
    hit = loss <= target
    first = np.argmax(hit, axis=0)
    return np.where(hit.any(axis=0), np.asarray(steps, dtype=float)[first], np.nan)


def _reached(times) -> dict:
    t = np.asarray(times, dtype=float)
    return {**summary_stats(t), "fraction_reached": float(np.mean(np.isfinite(t)))}


def train_rules(rules, sizes, data: Dataset, settings: dict, ctx: Context, *, activation: str,
                observe_on: Dataset | None = None):
    """One ensemble per rule from the same initialisation; ``{rule: TrainResult}`` and divergence messages."""
    return train_rules_folded(rules, sizes, data, [settings], ctx, activation=activation, observe_on=observe_on)[0]


def train_rules_folded(rules, sizes, data: Dataset, settings_list: list[dict], ctx: Context, *, activation: str,
                       observe_on: Dataset | None = None) -> list:
    """:func:`train_rules` for settings that differ only in ``lr`` and ``init_scale``, as one ensemble per rule.

    As :func:`sim.experiments.feedback_alignment.compare_rules_folded`: each
    settings' block of ``S = ctx.n_seeds`` members (network and, for DNI and
    cDNI, modules) is drawn alone, the blocks are joined, trained at once and
    split back (:mod:`sim.members`); a block whose every member diverged is
    trained again alone. One ``({rule: TrainResult}, divergence messages)``
    per settings, each what :func:`train_rules` gives for it alone.
    """
    from ..members import join_modules, train_folded
    from ..rules import get_rule

    first, n_points, n_seeds = settings_list[0], len(settings_list), ctx.n_seeds
    out = [({}, []) for _ in settings_list]
    for name in rules:
        nets = [init_network(sizes, n_seeds, seed=ctx.seed, scale=s["init_scale"], activation=activation,
                             xp=ctx.xp, dtype=ctx.dtype) for s in settings_list]
        feedback = draw_feedback(name, sizes, n_seeds, seed=ctx.seed, xp=ctx.xp, dtype=ctx.dtype) \
            if name in ("fa", "dfa") else None
        module_settings = None
        if name in ("sg", "cdni"):
            module_settings = dict(lr=first["sg_lr"], target=first["sg_target"], kind=first["sg_kind"],
                                   every=first["sg_every"])

        def run(net, lr, feedback, modules):
            return train(net, data, rule=name, steps=first["steps"], lr=lr, batch_size=first["batch_size"],
                         feedback=feedback, seed=ctx.seed, record_every=first["record_every"],
                         observe_on=observe_on, progress=ctx.progress,
                         module_settings=module_settings if modules is None else None, modules=modules)

        modules = None if module_settings is None or n_points == 1 else join_modules(
            [get_rule(name).init_modules(net, seed=ctx.seed, **module_settings) for net in nets])
        parts = train_folded(run, nets, [s["lr"] for s in settings_list], feedback, modules)
        for (results, diverged), res in zip(out, parts):
            results[name] = res
            diverged += [divergence_message(name, d) for d in res.diverged]
    return out


SG_DEFAULTS = {"sg_lr": 0.05, "sg_target": "true", "sg_kind": "linear", "sg_every": 1}
SG_SCHEMA = {"sg_lr": POSITIVE, "sg_target": choice(*TARGETS), "sg_kind": choice(*KINDS), "sg_every": POSITIVE_INT}


def _spectrum_fits(key: str, n_inputs: str, n_outputs: str, n_samples: str):
    """A check: at most ``min(n_inputs, n_outputs)`` singular values, and ``n_samples >= n_inputs`` (whitening)."""
    def check(settings):
        rank = min(settings[n_inputs], settings[n_outputs])
        if len(settings[key]) > rank:
            raise setting_error(key, settings[key], f"has {len(settings[key])} values, more than "
                                f"min({n_inputs}, {n_outputs}) = {rank}", f"1 to {rank} positive numbers")
        if settings[n_samples] < settings[n_inputs]:
            raise setting_error(n_samples, settings[n_samples], f"whitened inputs need {n_samples} >= {n_inputs} "
                                f"({settings[n_inputs]})", f"an integer >= {settings[n_inputs]}")

    return check


# --- sg-linear ------------------------------------------------------------------------------------

def _sg_linear_points(settings_list: list[dict], ctx: Context) -> list[ExperimentResult]:
    """``sg-linear`` for settings that differ only in ``lr`` and ``init_scale``, as one ensemble per rule."""
    first = settings_list[0]
    data = linear_teacher(first["n_inputs"], first["n_outputs"], first["singular_values"], first["n_samples"],
                          seed=ctx.seed)
    sizes = [data.n_inputs, *first["hidden"], data.n_outputs]
    trained = train_rules_folded(first["rules"], sizes, data, settings_list, ctx, activation="linear")
    return [_sg_linear_report(s, ctx, results, diverged) for s, (results, diverged) in zip(settings_list, trained)]


@experiment(
    "sg-linear",
    title="Synthetic gradients in a deep linear network: BP, DNI and cDNI",
    description="A deep linear network with narrow hidden layers (16-6-6-8, a rank-5 teacher, whitened inputs: "
                "the hidden layers must find the teacher's input subspace, the top layer cannot compensate alone) "
                "trained by BP and by synthetic gradients without (DNI) and with (cDNI) the label; training loss, "
                "the SG modules' error relative to the true gradient per hidden layer, and the time to reach a "
                "loss target. With the mse loss the true gradient is linear in (h, y), so cDNI's linear module can "
                "represent it and follows BP; DNI's cannot and stalls.",
    defaults={"n_inputs": 16, "n_outputs": 8, "singular_values": [3.0, 2.0, 1.5, 1.0, 0.5], "n_samples": 256,
              "hidden": [6, 6], "steps": 3000, "lr": 0.05, "batch_size": 32, "init_scale": 0.5,
              "record_every": 30, "target_fraction": 0.01, "rules": ["bp", "sg", "cdni"], **SG_DEFAULTS},
    schema={"n_inputs": POSITIVE_INT, "n_outputs": POSITIVE_INT, "singular_values": list_of(POSITIVE),
            "n_samples": POSITIVE_INT, "hidden": list_of(POSITIVE_INT, max_len=8), **TRAINING_SCHEMA,
            "target_fraction": real(0, 1, lo_open=True), "rules": rules_setting(RULE_NAMES), **SG_SCHEMA},
    checks=_spectrum_fits("singular_values", "n_inputs", "n_outputs", "n_samples"),
    quick={"steps": 1200, "record_every": 20},
    per_member=("lr", "init_scale"), fold=_sg_linear_points,
)
def sg_linear(settings: dict, ctx: Context) -> ExperimentResult:
    return _sg_linear_points([settings], ctx)[0]


def _sg_linear_report(settings: dict, ctx: Context, results: dict, diverged: list) -> ExperimentResult:
    fig, (ax_loss, ax_err, ax_angle) = new_figure(3)
    metrics, arrays = {}, {}
    for name, res in results.items():
        steps, loss = res.steps, res.metric("loss")
        target = settings["target_fraction"] * float(np.nanmean(loss[0]))
        times = time_to_target(steps, loss, target)
        mean_and_spread(ax_loss, steps, loss, label=LABELS[name], log=True, color=COLORS[name])
        arrays.update({f"{name}_steps": steps, f"{name}_loss": loss, f"{name}_time_to_target": times})
        metrics[name] = {"final_loss": summary_stats(loss[-1]), "time_to_target": _reached(times), "target_loss": target}
        if "sg_error" in res.metrics:
            err, ang = res.metric("sg_error"), res.metric("sg_angle")
            for layer in range(err.shape[-1]):
                style = "-" if name == "cdni" else "--"
                mean_and_spread(ax_err, steps, err[..., layer], label=f"{LABELS[name]} layer {layer + 1}", log=True,
                                linestyle=style)
                # the zero-initialised module makes the first angle undefined: start at the second record
                mean_and_spread(ax_angle, steps[1:], ang[1:, :, layer], label=f"{LABELS[name]} layer {layer + 1}",
                                linestyle=style, clip=ANGLE_RANGE)
            arrays.update({f"{name}_sg_error": err, f"{name}_sg_angle": ang})
            middle = len(steps) // 4
            metrics[name]["sg_error_early_per_layer"] = [summary_stats(err[middle, :, j]) for j in range(err.shape[-1])]
            metrics[name]["sg_angle_final_per_layer"] = [summary_stats(ang[-1, :, j]) for j in range(ang.shape[-1])]
    ax_loss.set(xlabel="step", ylabel="training loss (mse)", title="loss")
    ax_err.set(xlabel="step", ylabel="|SG - g| / |g|", title="synthetic-gradient error")
    ax_angle.axhline(90, color="grey", lw=0.8, ls="--")
    ax_angle.set(xlabel="step", ylabel="angle(SG, g) (degrees)", title="synthetic vs true gradient", ylim=(0, 120))
    for ax in (ax_loss, ax_err, ax_angle):
        ax.legend(fontsize="small")
    note_bands(fig, ctx.n_seeds)
    summary = "; ".join(f"{LABELS[n]}: final loss {m['final_loss']['mean']:.3g}, reached {m['target_loss']:.3g} "
                        f"in {m['time_to_target']['fraction_reached']:.0%} of seeds"
                        for n, m in metrics.items() if m["final_loss"]["mean"] is not None)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"sg_linear": fig}, summary, diverged),
                               every_member_diverged(results.values()))


# --- sg-regression --------------------------------------------------------------------------------

def _regression_data(seed: int, n_inputs: int, n_samples: int, noise: float, scale_inputs):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    x = whitened_gaussian(rng, n_samples, n_inputs) * np.asarray(scale_inputs, dtype=float)
    w_star = rng.normal(size=n_inputs)
    w_star /= np.linalg.norm(w_star)
    y = x @ w_star + noise * rng.normal(size=n_samples)
    y -= y.mean()
    w_ls = np.linalg.lstsq(x, y, rcond=None)[0]
    return x, y[:, None], w_ls


@experiment(
    "sg-regression",
    title="The fixed points of learning through a synthetic-gradient module: DNI stalls, cDNI converges",
    description="Linear regression p = w.x trained only through a module on p (Czarnecki et al. 2017): without the "
                "label (DNI, s = a p + c) w stalls on the ellipse w^T Sigma (w - w_LS) = 0 where a = c = 0; with it "
                "(cDNI, s = a p + b y + c) w converges to w_LS and (a, b, c) to (1, -1, 0). Then a two-layer linear "
                "net whose top layer sees the loss: DNI's loss stalls above the optimum for a bottleneck hidden "
                "layer and reaches it when the hidden layer is wide enough for the top layer to compensate.",
    defaults={"n_samples": 200, "noise": 0.5, "input_scales": [1.0, 0.6], "lr": 0.1, "sg_lr": 0.1, "steps": 3000,
              "record_every": 10, "init_radius": 1.5, "widths": [1, 2, 3, 4, 6, 8], "net_inputs": 6,
              "net_outputs": 4, "net_singular_values": [2.0, 1.6, 1.2, 0.8], "net_steps": 3000, "net_lr": 0.05,
              "net_sg_lr": 0.05},
    schema={"n_samples": integer(2), "noise": real(0), "input_scales": list_of(POSITIVE, min_len=2, max_len=2),
            "lr": POSITIVE, "sg_lr": POSITIVE, "steps": POSITIVE_INT, "record_every": POSITIVE_INT,
            "init_radius": POSITIVE, "widths": list_of(POSITIVE_INT, max_len=32), "net_inputs": POSITIVE_INT,
            "net_outputs": POSITIVE_INT, "net_singular_values": list_of(POSITIVE), "net_steps": POSITIVE_INT,
            "net_lr": POSITIVE, "net_sg_lr": POSITIVE},
    checks=_spectrum_fits("net_singular_values", "net_inputs", "net_outputs", "n_samples"),
    quick={"steps": 1500, "record_every": 10, "widths": [1, 2, 4, 8], "net_steps": 1500},
    default_seeds=8,
)
def sg_regression(settings: dict, ctx: Context) -> ExperimentResult:
    xp, dtype, n = ctx.xp, ctx.dtype, ctx.n_seeds
    x, y, w_ls = _regression_data(ctx.seed, 2, settings["n_samples"], settings["noise"], settings["input_scales"])
    sigma = x.T @ x / x.shape[0]
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    starts = settings["init_radius"] * np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :]
    runs = {}
    for name, inputs in (("sg", ("hidden",)), ("cdni", ("hidden", "label"))):
        modules = init_modules((2, 1, 1), n, inputs=inputs, lr=settings["sg_lr"], xp=xp, dtype=dtype)
        weights = [to_device(starts, xp, dtype), to_device(np.ones((n, 1, 1)), xp, dtype)]
        runs[name] = train_fixed_readout(weights, to_device(x, xp, dtype), to_device(y, xp, dtype), modules, rule=name,
                                         lr=settings["lr"], steps=settings["steps"],
                                         record_every=settings["record_every"])
    fig, axes = new_figure(4)
    metrics, arrays = {}, {"w_ls": w_ls, "sigma": sigma, "starts": starts[:, 0]}
    # the ellipse w^T Sigma (w - w_LS) = 0: centre w_LS / 2, Sigma-radius |w_LS|_Sigma / 2
    evals, evecs = np.linalg.eigh(sigma)
    theta = np.linspace(0, 2 * np.pi, 200)
    radius = 0.5 * np.sqrt(w_ls @ sigma @ w_ls)
    ellipse = w_ls / 2 + radius * (evecs @ np.diag(evals ** -0.5) @ np.stack([np.cos(theta), np.sin(theta)])).T
    ax = axes[0]
    ax.plot(ellipse[:, 0], ellipse[:, 1], color="grey", lw=1, label="w'Sigma(w - w_LS) = 0")
    for name, color in (("sg", COLORS["sg"]), ("cdni", COLORS["cdni"])):
        traj = runs[name].first_weights[:, :, 0, :]
        for m in range(n):
            ax.plot(traj[:, m, 0], traj[:, m, 1], color=color, lw=0.8, label=LABELS[name] if m == 0 else None)
        ax.plot(traj[-1, :, 0], traj[-1, :, 1], "o", color=color, ms=3)
    ax.plot(*w_ls, "k*", ms=10, label="w_LS")
    ax.set(xlabel="w_1", ylabel="w_2", title="regression through a module", aspect="equal")
    ax.legend(fontsize="x-small", loc="best")
    floor = 0.5 * float(np.mean((y[:, 0] - x @ w_ls) ** 2))
    for name, res in runs.items():
        mean_and_spread(axes[1], res.steps, np.maximum(res.loss - floor, 1e-16), label=LABELS[name], log=True,
                        color=COLORS[name])
        w_end = res.first_weights[-1, :, 0, :]
        distance = np.sqrt(np.einsum("mi,ij,mj->m", w_end - w_ls, sigma, w_end - w_ls))
        residual = np.einsum("mi,ij,mj->m", w_end, sigma, w_end - w_ls)
        metrics[name] = {"distance_to_w_ls": summary_stats(distance), "ellipse_residual": summary_stats(np.abs(residual)),
                         "final_excess_loss": summary_stats(res.loss[-1] - floor),
                         "module_final": {k: summary_stats(v[-1].reshape(n, -1)[:, 0]) for k, v in res.module.items()}}
        arrays.update({f"{name}_steps": res.steps, f"{name}_loss": res.loss, f"{name}_w": res.first_weights[:, :, 0],
                       **{f"{name}_module_{k}": v.reshape(v.shape[0], n, -1)[..., 0] for k, v in res.module.items()}})
    for (key, label), color in zip((("hidden", "a"), ("label", "b"), ("bias", "c")), ("C4", "C5", "C6")):
        mean_and_spread(axes[2], runs["cdni"].steps, runs["cdni"].module[key].reshape(-1, n), label=f"cDNI {label}",
                        color=color)
    axes[1].set(xlabel="step", ylabel="excess loss L - L_min", title="excess loss")
    axes[2].set(xlabel="step", ylabel="module parameter", title="(a, b, c) -> (1, -1, 0) with the label")
    axes[1].legend(fontsize="small")
    axes[2].set_ylim(-1.15, 1.5)  # room for the legend above the curves
    axes[2].legend(fontsize="small", loc="upper center", ncols=3)
    # the two-layer net: final loss against the hidden width
    s = np.asarray(settings["net_singular_values"], dtype=float)
    data = linear_teacher(settings["net_inputs"], settings["net_outputs"], s, settings["n_samples"], seed=ctx.seed)
    widths = list(settings["widths"])
    finals = {name: [] for name in ("bp", "sg", "cdni")}
    net_settings = {"steps": settings["net_steps"], "lr": settings["net_lr"], "batch_size": None, "init_scale": 0.5,
                    "record_every": settings["net_steps"], "sg_lr": settings["net_sg_lr"], "sg_target": "true",
                    "sg_kind": "linear", "sg_every": 1}
    diverged, trained = [], []
    for width in widths:
        sizes = [data.n_inputs, width, data.n_outputs]
        results, div = train_rules(("bp", "sg", "cdni"), sizes, data, net_settings, ctx, activation="linear")
        diverged += [f"width {width}: {d}" for d in div]
        trained += list(results.values())
        for name, res in results.items():
            finals[name].append(res.metric("loss")[-1])
    optimum = np.array([0.5 * float(np.sum(s[w:] ** 2)) for w in widths])
    for name, values in finals.items():
        values = np.stack(values)  # (W, E)
        # BP and cDNI both reach the optimum: BP as large open circles, so that cDNI's marks inside stay visible
        style = {"bp": dict(fmt="o-", ms=9, mfc="none"), "sg": dict(fmt="s--", ms=5),
                 "cdni": dict(fmt="^:", ms=5)}[name]
        axes[3].errorbar(widths, values.mean(axis=1), yerr=values.std(axis=1), capsize=2, label=LABELS[name],
                         color=COLORS[name], zorder=3, **style)
        arrays[f"net_{name}_final_loss"] = values
        metrics.setdefault("two_layer", {})[name] = [summary_stats(v) for v in values]
    axes[3].plot(widths, optimum, "-", color="0.75", lw=5, zorder=1, label="optimum at this width")
    axes[3].axvline(settings["net_inputs"], color="grey", lw=0.8, ls="--", label="width = input dimension")
    axes[3].set(xlabel="hidden width", ylabel="final loss", title="two-layer net: bottleneck vs wide",
                ylim=(0, None))
    axes[3].legend(fontsize="small")
    fig.suptitle(f"band: mean ± std over the {n} starting points (error bars: over the seeds)", fontsize="small")
    metrics["two_layer"]["widths"] = widths
    metrics["two_layer"]["optimum"] = optimum.tolist()
    arrays.update({"net_widths": np.asarray(widths), "net_optimum": optimum})
    summary = (f"DNI stalls at distance {metrics['sg']['distance_to_w_ls']['mean']:.3g} from w_LS (ellipse residual "
               f"{metrics['sg']['ellipse_residual']['mean']:.1e}); cDNI reaches "
               f"{metrics['cdni']['distance_to_w_ls']['mean']:.1e} "
               f"with a = {metrics['cdni']['module_final']['hidden']['mean']:.4f}, b = "
               f"{metrics['cdni']['module_final']['label']['mean']:.4f}")
    return report_all_diverged(ExperimentResult(metrics, arrays, {"sg_regression": fig}, summary, diverged),
                               every_member_diverged(trained))


# --- sg-nonlinear ---------------------------------------------------------------------------------

def _sg_nonlinear_points(settings_list: list[dict], ctx: Context) -> list[ExperimentResult]:
    """``sg-nonlinear`` for settings that differ only in ``lr`` and ``init_scale``, as one ensemble per rule."""
    first = settings_list[0]
    data, test, sizes = teacher_task(first, ctx.seed)
    trained = train_rules_folded(first["rules"], sizes, data, settings_list, ctx, activation=first["activation"])
    return [_sg_nonlinear_report(s, ctx, test, results, diverged)
            for s, (results, diverged) in zip(settings_list, trained)]


@experiment(
    "sg-nonlinear",
    title="BP, FA, DFA, DNI and cDNI on a nonlinear teacher",
    description="An MLP (tanh by default) on the nonlinear teacher classification task trained by BP, FA, DFA and "
                "by synthetic gradients without (DNI) and with (cDNI) the label: training loss, test accuracy, the "
                "angle of each rule's hidden signals to BP's, the SG error, and the time to a target training loss.",
    defaults={"n_train": 2000, "n_test": 1000, "n_inputs": 20, "n_classes": 5, "hidden": [64, 64],
              "activation": "tanh", "steps": 3000, "lr": 0.1, "batch_size": 64, "init_scale": 1.0,
              "record_every": 50, "target_loss": 0.5, "rules": ["bp", "fa", "dfa", "sg", "cdni"],
              **{**SG_DEFAULTS, "sg_lr": 0.1}},
    schema={**TEACHER_SCHEMA, "activation": choice(*ACTIVATIONS), **TRAINING_SCHEMA, "target_loss": POSITIVE,
            "rules": rules_setting(RULE_NAMES), **SG_SCHEMA},
    quick={"n_train": 1000, "n_test": 500, "hidden": [32, 32], "steps": 800, "record_every": 40},
    per_member=("lr", "init_scale"), fold=_sg_nonlinear_points,
)
def sg_nonlinear(settings: dict, ctx: Context) -> ExperimentResult:
    return _sg_nonlinear_points([settings], ctx)[0]


def _sg_nonlinear_report(settings: dict, ctx: Context, test: Dataset, results: dict, diverged: list):
    activation = settings["activation"]
    fig, axes = new_figure(4)
    metrics, arrays = {}, {}
    x_test, y_test = to_device(test.x, ctx.xp, ctx.dtype), to_device(test.y, ctx.xp, ctx.dtype)
    for name, res in results.items():
        steps, loss, acc, angles = res.steps, res.metric("loss"), res.metric("accuracy"), res.metric("signal_angle")
        test_acc = to_host(accuracy(predict(res.network.weights, x_test, activation), y_test))
        times = time_to_target(steps, loss, settings["target_loss"])
        mean_and_spread(axes[0], steps, loss, label=LABELS[name], log=True, color=COLORS[name])
        mean_and_spread(axes[1], steps, acc, label=f"{LABELS[name]} training", color=COLORS[name], clip=ACCURACY_RANGE)
        k = list(settings["rules"]).index(name)  # side by side just after the last step
        end_markers(axes[1], steps[-1] * (1.02 + 0.03 * k), test_acc, label=f"{LABELS[name]} test (end)",
                    color=COLORS[name], marker="sD^vo"[k % 5])
        if name != "bp":  # (the zero-initialised SG modules make the first angle undefined)
            mean_and_spread(axes[2], steps[1:], angles[1:].mean(axis=-1), label=LABELS[name], color=COLORS[name],
                            clip=ANGLE_RANGE)
        arrays.update({f"{name}_steps": steps, f"{name}_loss": loss, f"{name}_accuracy": acc,
                       f"{name}_signal_angle": angles, f"{name}_test_accuracy": test_acc,
                       f"{name}_time_to_target": times})
        metrics[name] = {"final_loss": summary_stats(loss[-1]), "train_accuracy": summary_stats(acc[-1]),
                         "test_accuracy": summary_stats(test_acc), "time_to_target": _reached(times),
                         "final_signal_angle_deg_per_layer": [summary_stats(angles[-1, :, j])
                                                              for j in range(angles.shape[-1])]}
        if "sg_error" in res.metrics:
            err = res.metric("sg_error")
            for layer in range(err.shape[-1]):
                mean_and_spread(axes[3], steps, err[..., layer], label=f"{LABELS[name]} layer {layer + 1}",
                                linestyle="-" if name == "cdni" else "--")
            arrays[f"{name}_sg_error"] = err
            metrics[name]["final_sg_error_per_layer"] = [summary_stats(err[-1, :, j]) for j in range(err.shape[-1])]
    axes[0].axhline(settings["target_loss"], color="grey", lw=0.8, ls=":", label="target loss")
    axes[0].set(xlabel="step", ylabel="training loss (ce)", title="loss")
    axes[1].set(xlabel="step", ylabel="accuracy (fraction correct)", ylim=(0, 1.02),
                title="accuracy: training, and test at the end")
    axes[2].axhline(90, color="grey", lw=0.8, ls="--")
    axes[2].set(xlabel="step", ylabel="mean angle to BP signal (degrees)", title="hidden signals vs BP", ylim=(0, 120))
    axes[3].set(xlabel="step", ylabel="|SG - g| / |g|", title="synthetic-gradient error", ylim=(0, None))
    for ax in (axes[0], axes[2], axes[3]):
        ax.legend(fontsize="small")
    legend_outside(axes[1], fontsize="x-small")
    note_bands(fig, ctx.n_seeds)
    summary = "; ".join(f"{LABELS[n]}: test accuracy {m['test_accuracy']['mean']:.3f}, loss {settings['target_loss']} "
                        f"at step {m['time_to_target']['mean'] if m['time_to_target']['mean'] is not None else 'never'}"
                        for n, m in metrics.items() if m["test_accuracy"]["mean"] is not None)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"sg_nonlinear": fig}, summary, diverged),
                               every_member_diverged(results.values()))
