# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Studies: sweeps over settings and seeds
#
# A study is an experiment over a grid of settings, with seed replicates, into one table.
# `sim.sweep.run_sweep` (the command line: `bbp sweep`) computes every point of the grid
# that its directory does not hold complete yet, each point a run directory written by
# the experiment's own `run`, on a local Dask cluster (or a real one, or in this process
# with `serial=True`), and rebuilds the table `results.parquet` from those directories.
#
# Vectorise first, distribute second: a point's seed replicates are one ensemble, and
# settings the trainer varies per member (the learning rate, the initial scale of
# `fa-linear` and `dfa-nonlinear`) fold several points into one ensemble, one task.
#
# Three studies, each also a command in the README ("Sweeps and clusters"):
#
# 1. FA and DFA alignment and test accuracy over width x initial scale: a phase diagram;
# 2. BP, DNI and cDNI: time to a target loss over depth;
# 3. the layerwise algorithm on the hierarchical digits: recovery of each level (ARI)
#    and accuracy over the training-set size.
#
# Convert it with `jupytext --to ipynb notebooks/06_sweeps.py`. With
# `BBP_NOTEBOOK_SMALL=1` it runs in seconds, in this process (the test suite does that).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sim.sweep import load, run_sweep
from sim.sweep.plot import plot_phase

SMALL = os.environ.get("BBP_NOTEBOOK_SMALL") == "1"
SEEDS = 2 if SMALL else 8
OUT = Path(tempfile.mkdtemp(prefix="bbp-sweeps-"))
# small: in this process; otherwise a LocalCluster of one worker per CPU (started by each sweep)
RUN = dict(seeds=SEEDS, quick=True, serial=SMALL, progress=False)

# %% [markdown]
# ## 1. FA and DFA alignment: a phase diagram over width and initial scale
#
# A tanh network with two hidden layers of the same width on the nonlinear teacher task,
# trained by FA and DFA from initial scales `s` (weights `N(0, s^2/n_in)`). The angle
# between a rule's teaching signal of hidden layer 1 and BP's, at the end of training, says
# how well the forward weights came to align with the fixed feedback; small scales align
# (the weights grow into the feedback's direction), large ones start far and stay there.
# Every width is one task: its 5 initial scales x 8 seeds are one ensemble of 40.

# %%
widths = [8, 16] if SMALL else [16, 32, 64, 128]
scales = [0.5, 2.0] if SMALL else [0.25, 0.5, 1.0, 2.0, 4.0]
fixed = {"rules": ["fa", "dfa"]}
if SMALL:
    fixed.update(steps=100, record_every=20, n_train=200, n_test=100)
phase = run_sweep("dfa-nonlinear", {"hidden": [[w, w] for w in widths], "init_scale": scales}, settings=fixed,
                  out=OUT / "dfa-phase", **RUN)
print(phase.summary())
table = load(OUT / "dfa-phase")
fig = plot_phase(table, "init_scale", "hidden",
                 ["final_signal_angle_deg_per_layer.0.fa", "final_signal_angle_deg_per_layer.0.dfa",
                  "test_accuracy.fa", "test_accuracy.dfa"],
                 labels=["FA: layer-1 angle to BP (degrees)", "DFA: layer-1 angle to BP (degrees)",
                         "FA: test accuracy", "DFA: test accuracy"],
                 title=f"dfa-nonlinear: mean over {SEEDS} seeds per cell")
fig

# %% [markdown]
# The metric columns are named as the experiment nests them (`fa.test_accuracy`,
# `dfa.final_signal_angle_deg_per_layer.0`); a name with the same parts in another order
# (`test_accuracy.fa`) finds the column as long as only one column has those parts.

# %% [markdown]
# ## 2. BP, DNI and cDNI: time to a target loss over depth
#
# The same teacher task with 1 to 4 hidden layers of 32 tanh units, trained by BP and by
# synthetic gradients without (DNI, rule `sg`) and with (cDNI) the label. The time to
# target is the first recorded step at which a member's training loss is at most
# `target_loss`; a member that never gets there is left out of the mean and counted in
# the fraction that reached it.

# %%
depths = [1, 2] if SMALL else [1, 2, 3, 4]
fixed = {"rules": ["bp", "sg", "cdni"]}
if SMALL:
    fixed.update(steps=100, record_every=10, n_train=200, n_test=100, target_loss=1.2)
depth = run_sweep("sg-nonlinear", {"hidden": [[32] * d for d in depths]}, settings=fixed, out=OUT / "sg-depth",
                  **RUN)
print(depth.summary())
table = load(OUT / "sg-depth")
table["depth"] = table["hidden"].map(lambda h: len(h.strip("[]").split(",")))
fig, (ax_time, ax_reached) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for i, (rule, label) in enumerate([("bp", "BP"), ("sg", "DNI"), ("cdni", "cDNI")]):
    stats = table.groupby("depth")[f"{rule}.time_to_target"].agg(["mean", "std"])
    reached = table.groupby("depth")[f"{rule}.time_to_target"].apply(lambda t: np.isfinite(t).mean())
    d = stats.index.to_numpy()
    ax_time.errorbar(d + 0.05 * (i - 1), stats["mean"], yerr=stats["std"].fillna(0), marker="os^"[i], capsize=3,
                     color=f"C{i}", label=label)
    ax_reached.plot(d, reached, marker="os^"[i], color=f"C{i}", label=label)
ax_time.set(xlabel="hidden layers", ylabel="steps to the target loss", xticks=depths,
            title="time to target: mean, bars one std over the seeds that reached it")
ax_reached.set(xlabel="hidden layers", ylabel="fraction of seeds that reached it", xticks=depths, ylim=(-0.05, 1.05),
               title="fraction of seeds reaching the target loss")
for ax in (ax_time, ax_reached):
    ax.legend()
plt.show()

# %% [markdown]
# ## 3. Layerwise recovery and accuracy over the training-set size
#
# `hier-layerwise` trains the provable layerwise algorithm on hierarchically generated
# digits, level by level (a patch network, k-means of its patch embeddings, recoding),
# and measures how well the clusters recover each latent level (adjusted Rand index) and
# the test accuracy. Each point of the sweep is one training-set size (the experiment's
# own `sample_sizes` setting, one value per point), so the sizes run in parallel.

# %%
sizes = [30, 60] if SMALL else [30, 100, 300, 1000]
fixed = {"methods": ["layerwise"]}
if SMALL:
    fixed.update(n_test=100, steps=30, kmeans_restarts=1)
layer = run_sweep("hier-layerwise", {"sample_sizes": [[n] for n in sizes]}, settings=fixed,
                  out=OUT / "layerwise", **{**RUN, "seeds": 2 if SMALL else 4})
print(layer.summary())
table = load(OUT / "layerwise")
table["n"] = table["sample_sizes"].map(lambda s: int(s.strip("[]")))
points = table.groupby("n").first()  # the experiment reports mean and std over its seeds: one row per size
ari = sorted(c for c in table.columns if ".recovery_ari." in c and c.endswith(".mean.0"))
accuracy = sorted(c for c in table.columns if ".accuracy.layerwise.mean.0" in c)


def clipped(mean, std, lo=0.0, hi=1.0):
    """Error bars of one std, clipped to the range [lo, hi] of a bounded quantity (accuracy, ARI <= 1)."""
    mean, std = mean.to_numpy(float), std.to_numpy(float)
    return np.stack([np.minimum(std, np.maximum(mean - lo, 0)), np.minimum(std, np.maximum(hi - mean, 0))])


fig, (ax_ari, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for i, column in enumerate(ari):
    preset, level = column.split(".")[1], column.split(".")[3].replace("_", " ")
    std = clipped(points[column], points[column.replace(".mean.0", ".std.0")], lo=-1.0)
    ax_ari.errorbar(points.index, points[column], yerr=std, marker="o", capsize=3, color=f"C{i}",
                    label=f"{preset}: {level}")
for i, column in enumerate(accuracy):
    std = clipped(points[column], points[column.replace(".mean.0", ".std.0")])
    ax_acc.errorbar(points.index, points[column], yerr=std, marker="s", capsize=3, color=f"C{i}",
                    label=f"{column.split('.')[1]}: layerwise")
ax_ari.set(xscale="log", xlabel="training images per seed", ylabel="adjusted Rand index", ylim=(-0.05, 1.05),
           title="recovery of each level: mean, bars one std\n(over seeds, clipped at 1)")
ax_acc.set(xscale="log", xlabel="training images per seed", ylabel="test accuracy", ylim=(0, 1.02),
           title="layerwise test accuracy: mean, bars one std\n(over seeds, clipped to [0, 1])")
for ax in (ax_ari, ax_acc):
    ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Every sweep directory can be run again: complete points are skipped, so the same call
# computes nothing more, and an interrupted sweep resumes where it stopped.

# %%
again = run_sweep("hier-layerwise", {"sample_sizes": [[n] for n in sizes]}, settings=fixed,
                  out=OUT / "layerwise", **{**RUN, "seeds": 2 if SMALL else 4})
print(again.summary())
assert again.computed == 0 and again.skipped == len(sizes)
