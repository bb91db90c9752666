"""Experiment ``dfa-alignment``: DFA's alignment with BP and its loss over time, per layer and width.

Importing this module registers the experiment (see :mod:`sim.experiments`).
For each hidden width an ensemble of ``--seeds`` networks (own init and own
fixed feedback each) is trained with DFA on the nonlinear teacher
classification task; the trainer records, per hidden layer, the angle between
the DFA teaching signal :math:`(B_l e) \\odot f'` and BP's, and the DFA weight
alignment of Refinetti et al. (2021). The figure shows the loss, the per-layer
signal angles over time for every width, and the final angle per layer
against the width (see the claims ``dfa.nonlinear_alignment`` and
``refinetti.*`` for what is checked).
"""

from __future__ import annotations

import numpy as np

from sim.divergence import divergence_message
from sim.data import teacher_classification
from sim.experiments import (
    Context,
    ExperimentResult,
    every_member_diverged,
    experiment,
    report_all_diverged,
    summary_stats,
)
from sim.network import init_network
from sim.nn import ACTIVATIONS
from sim.plots import ANGLE_RANGE, mean_and_spread, new_figure, note_bands
from sim.rules import draw_feedback
from sim.settings import choice, integer, list_of, real
from sim.train import train

SCHEMA = {"n_train": integer(1), "n_inputs": integer(1), "n_classes": integer(2), "depth": integer(1),
          "widths": list_of(integer(1), max_len=16), "activation": choice(*ACTIVATIONS), "steps": integer(1),
          "lr": real(0, lo_open=True), "batch_size": integer(0), "init_scale": real(0),
          "feedback_scale": real(0, lo_open=True), "record_every": integer(1)}


@experiment(
    "dfa-alignment",
    title="DFA: per-layer alignment with BP and loss over time, for several hidden widths",
    description="Trains DFA ensembles of tanh MLPs of several hidden widths on the nonlinear teacher "
                "classification task and records the loss, the angle between each hidden layer's DFA signal "
                "and BP's, and the DFA weight alignment, over time.",
    defaults={"n_train": 2000, "n_inputs": 20, "n_classes": 5, "depth": 3, "widths": [16, 32, 64, 128],
              "activation": "tanh", "steps": 3000, "lr": 0.2, "batch_size": 0, "init_scale": 1.0,
              "feedback_scale": 1.0, "record_every": 50},
    schema=SCHEMA,  # batch_size 0: full-batch gradient descent
    quick={"n_train": 400, "widths": [16, 32, 64], "steps": 400, "record_every": 20},
)
def dfa_alignment(settings: dict, ctx: Context) -> ExperimentResult:
    data = teacher_classification(settings["n_train"], seed=ctx.seed, n_inputs=settings["n_inputs"],
                                  n_classes=settings["n_classes"])
    batch_size = settings["batch_size"] or None
    widths = list(settings["widths"])
    depth = settings["depth"]
    fig, axes = new_figure(2 + len(widths), width=3.8)
    ax_loss, ax_final, width_axes = axes[0], axes[-1], axes[1:-1]
    metrics, arrays, diverged, runs = {"widths": widths}, {}, [], []
    final_angles = np.full((len(widths), depth), np.nan)
    for k, (width, ax) in enumerate(zip(widths, width_axes)):
        sizes = [settings["n_inputs"], *([width] * depth), settings["n_classes"]]
        net = init_network(sizes, ctx.n_seeds, seed=ctx.seed, scale=settings["init_scale"],
                           activation=settings["activation"], xp=ctx.xp, dtype=ctx.dtype)
        fb = draw_feedback("dfa", sizes, ctx.n_seeds, seed=ctx.seed, scale=settings["feedback_scale"], xp=ctx.xp,
                           dtype=ctx.dtype)
        res = train(net, data, rule="dfa", steps=settings["steps"], lr=settings["lr"], batch_size=batch_size,
                    feedback=fb, seed=ctx.seed, record_every=settings["record_every"], progress=ctx.progress)
        diverged += [divergence_message(f"width {width}", d) for d in res.diverged]
        runs.append(res)
        steps, loss = res.steps, res.metric("loss")
        angles = res.metric("signal_angle")  # (T, E, depth)
        alignment = res.metric("weight_alignment")  # (T, E, depth): layers 2 .. L
        mean_and_spread(ax_loss, steps, loss, label=f"width {width}", log=True)
        for layer in range(depth):
            mean_and_spread(ax, steps, angles[..., layer], label=f"hidden layer {layer + 1}", clip=ANGLE_RANGE)
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="angle DFA vs BP signal (degrees)", title=f"width {width}", ylim=(0, 120))
        ax.legend(fontsize=7)
        with np.errstate(all="ignore"):
            final_angles[k] = np.nanmean(angles[-1], axis=0)
        arrays.update({f"w{width}_steps": steps, f"w{width}_loss": loss, f"w{width}_signal_angle": angles,
                       f"w{width}_weight_alignment": alignment, f"w{width}_accuracy": res.metric("accuracy")})
        metrics[f"width_{width}"] = {
            "initial_loss": summary_stats(loss[0]), "final_loss": summary_stats(loss[-1]),
            "final_accuracy": summary_stats(res.metric("accuracy")[-1]),
            "final_signal_angle_deg_per_layer": [summary_stats(angles[-1, :, j]) for j in range(depth)],
            "final_weight_alignment_deg_per_layer": [summary_stats(alignment[-1, :, j]) for j in range(depth)],
            "top_layer_most_aligned_fraction": float(np.mean(np.argmin(angles[-1], axis=1) == depth - 1)),
        }
    for layer in range(depth):
        ax_final.plot(widths, final_angles[:, layer], "o-", label=f"hidden layer {layer + 1}")
    ax_final.set_xscale("log", base=2)
    ax_final.axhline(90, color="grey", lw=0.8, ls="--")
    ax_final.set(xlabel="hidden width", ylabel="final angle to BP (degrees)", title="final alignment",
                 ylim=(0, 120))
    ax_final.legend(fontsize=7)
    ax_loss.set(xlabel="step", ylabel="training loss (ce)", title="DFA loss")
    ax_loss.legend(fontsize=7)
    note_bands(fig, ctx.n_seeds)
    arrays["widths"] = np.asarray(widths)
    arrays["final_signal_angle"] = final_angles
    summary = "; ".join(
        f"width {w}: loss {metrics[f'width_{w}']['final_loss']['mean']:.3g}, layer angles "
        + "/".join(f"{a:.0f}" for a in final_angles[k]) + " deg"
        for k, w in enumerate(widths) if metrics[f"width_{w}"]["final_loss"]["mean"] is not None)
    return report_all_diverged(ExperimentResult(metrics, arrays, {"dfa_alignment": fig}, summary, diverged),
                               every_member_diverged(runs))

