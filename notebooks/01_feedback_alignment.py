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
# # Feedback alignment on a linear network
#
# Lillicrap et al. (2016) replaced the transposed forward weights $W_{l+1}^T$ of
# back-propagation by a fixed random matrix $B_{l+1}$. The network still learns,
# because the forward weights come to *align* with the feedback. This notebook
# trains an ensemble of 30-20-10 linear networks with BP and FA on the same task
# and from the same initialisations, and watches that alignment happen.
#
# Convert it to a notebook with `jupytext --to ipynb notebooks/01_feedback_alignment.py`.
# With `BBP_NOTEBOOK_SMALL=1` it runs in seconds (the test suite does that).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sim.data import lillicrap_linear
from sim.network import init_network
from sim.plots import mean_and_spread
from sim.rules import compute_updates, draw_feedback
from sim.train import train

SMALL = os.environ.get("BBP_NOTEBOOK_SMALL") == "1"
N_MEMBERS = 4 if SMALL else 16
STEPS = 400 if SMALL else 4000

# %% [markdown]
# ## The task and the ensemble
#
# Targets are $y = T x$ for a random $T$ with entries uniform on $[-1, 1]$.
# `init_network` draws `N_MEMBERS` independent networks at once: every weight
# array has a leading ensemble axis, and one batched computation trains them all.

# %%
data = lillicrap_linear(1000, seed=0)
sizes = [30, 20, 10]
net = init_network(sizes, N_MEMBERS, seed=0, scale=0.5)
feedback = draw_feedback("fa", sizes, N_MEMBERS, seed=0)
print([w.shape for w in net.weights], [b.shape for b in feedback])

# %% [markdown]
# ## At initialisation the FA signal is unrelated to BP's
#
# The hidden teaching signal of FA is $\delta_1 = B_2 e$, BP's is $W_2^T e$; both
# rules give the same update for the output layer.

# %%
x, y = data.x[:100], data.y[:100]
bp = compute_updates("bp", net.weights, x, y)
fa = compute_updates("fa", net.weights, x, y, feedback=feedback)
print("output layer identical:", np.array_equal(bp[1], fa[1]))


def angle(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


print("hidden-layer update angle, FA vs BP (degrees):", np.round(angle(fa[0], bp[0]), 1))

# %% [markdown]
# ## Training
#
# The trainer records, every few steps and per member, the loss, the angle between
# each rule's hidden teaching signal and BP's, and the weight alignment
# $\angle(W_2^T, B_2)$. The BP-trained control is probed with the same fixed $B_2$.

# %%
runs = {}
for rule in ("bp", "fa"):
    runs[rule] = train(net, data, rule=rule, steps=STEPS, lr=0.02, batch_size=50, feedback=feedback,
                       probe="fa", record_every=max(1, STEPS // 100))

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
for rule, res in runs.items():
    mean_and_spread(axes[0], res.steps, res.metric("loss"), label=rule.upper(), log=True)
    mean_and_spread(axes[1], res.steps, res.metric("signal_angle")[..., 0], label=rule.upper())
    mean_and_spread(axes[2], res.steps, res.metric("weight_alignment")[..., 0], label=rule.upper())
axes[0].set(title="training loss", xlabel="step")
axes[1].set(title=r"angle($B_2 e$, $W_2^T e$) (degrees)", xlabel="step", ylim=(0, 120))
axes[2].set(title=r"weight alignment angle($W_2^T$, $B_2$)", xlabel="step", ylim=(0, 120))
for ax in axes:
    ax.legend()
plt.show()

# %% [markdown]
# FA drives the error down as BP does, a little slower, and its hidden signal
# swings from about 90 degrees to well below it: the forward weights $W_2$ turn
# towards $B_2^T$. The BP-trained control never aligns with the random feedback.

# %%
final = {rule: res.metric("signal_angle")[-1, :, 0] for rule, res in runs.items()}
for rule, angles in final.items():
    print(f"{rule}: final hidden-signal angle {angles.mean():.1f} +- {angles.std():.1f} degrees")
assert final["fa"].mean() < 60 < final["bp"].mean()
