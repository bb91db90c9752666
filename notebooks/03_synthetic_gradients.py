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
# # Synthetic gradients: DNI, cDNI and the unified view
#
# Decoupled neural interfaces (Jaderberg et al. 2016) let a hidden layer learn from
# a **synthetic gradient**: a small trained module predicts the gradient of the loss
# with respect to the layer's output, so the layer can update right after its own
# forward pass, without waiting for the layers above (update and backward unlocking).
# In this toolkit a rule *is* its teaching signal, and synthetic gradients are one
# more row of the table:
#
# $$\delta_l = \mathrm{SG}_l(h_l\,[, y]) \odot f'(a_l), \qquad \Delta W_l = \operatorname{mean}_b \delta_{l,b} h_{l-1,b}^T .$$
#
# The rule `sg` (DNI) reads $h_l$; `cdni` also reads the label $y$. The modules are
# trained by regression on the true gradient $g_l = \partial\ell/\partial h_l$ (or on a
# bootstrapped target). Czarnecki et al. (2017) explain when this works; this notebook
# walks through their results and ours, with the engine.
#
# Convert it with `jupytext --to ipynb notebooks/03_synthetic_gradients.py`; with
# `BBP_NOTEBOOK_SMALL=1` it runs in seconds.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sim import synthetic as sg
from sim.data import linear_teacher, teacher_classification
from sim.network import init_network
from sim.plots import mean_and_spread
from sim.rules import compute_updates, draw_feedback, get_rule
from sim.train import train

SMALL = os.environ.get("BBP_NOTEBOOK_SMALL") == "1"
N_MEMBERS = 2 if SMALL else 8
STEPS = 400 if SMALL else 3000

# %% [markdown]
# ## Locking, zero initialisation and the perfect module
#
# A rule declares what a layer waits for. BP is forward-, update- and
# backward-locked; DFA removes backward locking; synthetic gradients remove update
# and backward locking (the layer still needs its input: forward-locked).

# %%
for name in ("bp", "fa", "dfa", "sg", "cdni"):
    print(f"{name:5s}", get_rule(name).title, get_rule(name).locking)

# %% [markdown]
# The modules' output layer starts at zero, so the first update of every hidden
# layer is exactly zero (only the output layer, which sees the loss, moves). And a
# module equal to the true gradient gives exactly BP's update: with the mse loss and
# a linear network above layer $l$, $g_l = P^T(P h_l - y)$ is *linear* in $(h_l, y)$,
# so the cDNI module $A = P^T P$, $C = -P^T$ represents it.

# %%
sizes = (6, 8, 8, 4)
rng = np.random.default_rng(0)
net = init_network(sizes, 1, seed=0)
x, y = rng.normal(size=(16, sizes[0])), rng.normal(size=(16, sizes[-1]))
zero = compute_updates("cdni", net.weights, x, y, modules=sg.init_modules(sizes, 1, inputs=("hidden", "label")))
print("first update of the hidden layers:", [float(np.abs(dw).max()) for dw in zero[:-1]])
bp = compute_updates("bp", net.weights, x, y)
perfect = compute_updates("cdni", net.weights, x, y, modules=sg.perfect_modules(net.weights))
print("perfect module vs BP, largest difference:", max(float(np.abs(a - b).max()) for a, b in zip(perfect, bp)))

# %% [markdown]
# ## The unified view
#
# Czarnecki et al. (2017) note that the feedback-alignment family is synthetic
# gradients with *fixed* modules: $\mathrm{SG}_l = B_l e$ (linear in the output error)
# is DFA, the module bootstrapped through fixed feedback, $\mathrm{SG}_l = B_{l+1}\delta_{l+1}$,
# is FA, and Kickback is DFA with all-ones feedback. The engine reproduces them bit
# for bit.

# %%
dfa_feedback = draw_feedback("dfa", sizes, 1, seed=1)
fa_feedback = draw_feedback("fa", sizes, 1, seed=1)
pairs = {
    "DFA": (compute_updates("dfa", net.weights, x, y, activation="tanh", feedback=dfa_feedback),
            compute_updates("sg", net.weights, x, y, activation="tanh", modules=sg.dfa_modules(dfa_feedback))),
    "FA": (compute_updates("fa", net.weights, x, y, activation="tanh", feedback=fa_feedback),
           compute_updates("sg", net.weights, x, y, activation="tanh", modules=sg.fa_modules(fa_feedback))),
    "Kickback": (compute_updates("dfa", net.weights, x, y, activation="tanh", feedback=sg.kickback_feedback(sizes)),
                 compute_updates("sg", net.weights, x, y, activation="tanh", modules=sg.kickback_modules(sizes))),
}
for name, (ref, own) in pairs.items():
    print(f"{name:9s} largest difference: {max(float(np.abs(a - b).max()) for a, b in zip(ref, own)):.1e}")

# %% [markdown]
# ## A deep linear network: cDNI follows BP, DNI stalls
#
# A 16-6-6-8 linear network on a rank-5 linear teacher: the hidden layers are narrow,
# so they must find the teacher's input subspace (the top layer cannot compensate
# alone). The trainer creates the modules from `module_settings`, trains them every
# step on the same forward pass, and records their error relative to the true
# gradient (`sg_error`) and their angle to it (`sg_angle`).

# %%
data = linear_teacher(16, 8, [3.0, 2.0, 1.5, 1.0, 0.5], 256, seed=0)
lin_sizes = (16, 6, 6, 8)
runs = {}
for rule in ("bp", "sg", "cdni"):
    start = init_network(lin_sizes, N_MEMBERS, seed=0, scale=0.5)
    settings = None if rule == "bp" else dict(lr=0.05)
    runs[rule] = train(start, data, rule=rule, steps=2 * STEPS, lr=0.05, batch_size=32, record_every=40,
                       module_settings=settings)
fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.5))
for rule, label in (("bp", "BP"), ("sg", "DNI"), ("cdni", "cDNI")):
    mean_and_spread(ax_loss, runs[rule].steps, runs[rule].metric("loss"), label=label, log=True)
    if rule != "bp":
        for layer in range(2):
            mean_and_spread(ax_err, runs[rule].steps, runs[rule].metric("sg_error")[..., layer],
                            label=f"{label} layer {layer + 1}", log=True)
ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
ax_err.set(xlabel="step", ylabel="|SG - g| / |g|", title="synthetic-gradient error")
ax_loss.legend()
ax_err.legend(fontsize="small")
plt.show()
print({rule: float(np.mean(r.metric("loss")[-1])) for rule, r in runs.items()})

# %% [markdown]
# ## Why the label matters: regression through a module
#
# Train $p = w^T x$ only through a module on $p$ (the readout stays fixed). The true
# gradient of $\frac12(p - y)^2$ is $p - y$. With the label, $s = a p + b y + c$ can
# represent it and $(a, b, c) \to (1, -1, 0)$ while $w \to w_{LS}$ (Czarnecki et al. 2017).
# Without it, $s = a p + c$ regresses to $a = w^T\Sigma(w - w_{LS}) / w^T\Sigma w$, and
# every $w$ on the ellipse $w^T\Sigma(w - w_{LS}) = 0$ with $a = c = 0$ is a joint fixed
# point: DNI stalls there (ours).

# %%
rng = np.random.default_rng(1)
xr = rng.normal(size=(200, 2)) * np.array([1.0, 0.6])
xr -= xr.mean(axis=0)
yr = xr @ np.array([0.8, -0.6]) + 0.5 * rng.normal(size=200)
yr = (yr - yr.mean())[:, None]
w_ls = np.linalg.lstsq(xr, yr[:, 0], rcond=None)[0]
n_starts = 8
angles = np.linspace(0, 2 * np.pi, n_starts, endpoint=False) + 0.3
starts = 1.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :]
readout = np.ones((n_starts, 1, 1))
paths = {}
for rule, inputs in (("sg", ("hidden",)), ("cdni", ("hidden", "label"))):
    modules = sg.init_modules((2, 1, 1), n_starts, inputs=inputs, lr=0.1)
    paths[rule] = sg.train_fixed_readout([starts, readout], xr, yr, modules, rule=rule, lr=0.1, steps=STEPS,
                                         record_every=5)
sigma = xr.T @ xr / len(xr)
grid = np.linspace(-2, 2, 300)
g1, g2 = np.meshgrid(grid, grid)
points = np.stack([g1, g2], axis=-1)
quad = np.einsum("...i,ij,...j->...", points, sigma, points) - points @ (sigma @ w_ls)  # w'Sigma w - w'Sigma w_LS
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.contour(g1, g2, quad, levels=[0.0], colors="grey")
for rule, color in (("sg", "C1"), ("cdni", "C2")):
    w = paths[rule].first_weights[:, :, 0, :]
    ax.plot(w[:, :, 0], w[:, :, 1], color=color, lw=0.8)
    ax.plot(w[-1, :, 0], w[-1, :, 1], "o", color=color, ms=3, label={"sg": "DNI", "cdni": "cDNI"}[rule])
ax.plot(*w_ls, "k*", ms=10, label="w_LS")
ax.set(xlabel="w_1", ylabel="w_2", aspect="equal", title="grey: w'Sigma(w - w_LS) = 0")
ax.legend()
plt.show()
final = paths["cdni"].module
print("cDNI module (a, b, c):", float(final["hidden"][-1].mean()), float(final["label"][-1].mean()),
      float(final["bias"][-1].mean()))

# %% [markdown]
# ## The dynamics, symbolically
#
# `theory.synthetic_dynamics` derives the joint gradient flow of a two-layer linear
# network and a linear module on its hidden layer with sympy. In the scalar case
# ($y = s x$) DNI's field is short enough to read: $\dot w_1 = -a w_1$, so **the sign of
# $w_1$ never changes**, and $w_1 = 0$ is a set of fixed points for any $w_2, a$ that
# attracts where $a > 0$.

# %%
from theory import synthetic_dynamics as sd  # noqa: E402

dni = sd.derive_flow(label=False)
for symbol, rate in zip(dni.state, dni.field):
    print(f"d{symbol}/dt =", rate)
for family in sd.fixed_points(dni):
    print("fixed points:", family)
eigenvalues = sd.stability(dni, [0, -0.4, 0.5, 0], teacher=[[1.0]], beta=4.0)
print("eigenvalues on w1 = 0 with a = 0.5:", np.round(eigenvalues, 3))

# %% [markdown]
# From a wrong-sign start a fast module drives $w_1$ to 0 before $w_2$ can turn: DNI
# stalls with loss $s^2/2$, while cDNI crosses $w_1 = 0$ and converges.

# %%
cdni_flow = sd.derive_flow(label=True)
t_max = 40.0 if SMALL else 120.0
fig, ax = plt.subplots(figsize=(5, 3.5))
for flow, label in ((dni, "DNI"), (cdni_flow, "cDNI")):
    ode = sd.integrate(flow, sd.pack(flow, W1=[[0.3]], W2=[[-1.0]]), t_max, teacher=[[1.0]], beta=4.0)
    ax.plot(ode.t, ode.loss, label=label)
    print(label, "final (w1, w2):", np.round(ode.states[-1, :2], 4), f"loss {abs(float(ode.loss[-1])):.2e}")
ax.set(xlabel="t", ylabel="loss", yscale="log", title="scalar net from (w1, w2) = (0.3, -1), beta = 4")
ax.legend()
plt.show()

# %% [markdown]
# ## A nonlinear network
#
# On the nonlinear teacher task (tanh network, cross-entropy) the linear modules can
# only approximate the true gradient. cDNI still learns close behind BP and DFA; DNI,
# whose module sees no label, learns least (see `bbp run sg-nonlinear` for the full
# comparison with FA and the time to a target loss).

# %%
task = teacher_classification(1000, seed=0, n_inputs=20, n_classes=5)
nl_sizes = (20, 32, 32, 5)
nl = {}
for rule in ("bp", "dfa", "sg", "cdni"):
    start = init_network(nl_sizes, N_MEMBERS, seed=0, activation="tanh")
    feedback = draw_feedback(rule, nl_sizes, N_MEMBERS, seed=0) if rule == "dfa" else None
    nl[rule] = train(start, task, rule=rule, steps=STEPS, lr=0.1, batch_size=64, feedback=feedback, record_every=40,
                     module_settings=None if rule in ("bp", "dfa") else dict(lr=0.1))
fig, ax = plt.subplots(figsize=(5, 3.5))
for rule, res in nl.items():
    mean_and_spread(ax, res.steps, res.metric("loss"), label={"sg": "DNI", "cdni": "cDNI"}.get(rule, rule.upper()),
                    log=True)
ax.set(xlabel="step", ylabel="training loss (ce)")
ax.legend()
plt.show()
print({rule: round(float(np.mean(res.metric("accuracy")[-1])), 3) for rule, res in nl.items()})

# %% [markdown]
# ## The claims
#
# The statements above are registered claims, checked on random instances by
# `bbp verify`; each is shown to fail when its rule (or the property it relies on)
# is broken.

# %%
from theory.claims import get_claims, run_claim  # noqa: E402

for c in get_claims():
    if c.id.startswith("sg."):
        outcome = run_claim(c, quick=True)
        print(f"{c.id:26s} {outcome.status:4s} worst {outcome.max_violation:.1e} (tolerance {outcome.tolerance:.0e})")
