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
# # Two-layer ReLU networks as convex programs
#
# Training a two-layer ReLU network with weight decay,
#
# $$L(U, \alpha) = \tfrac12\Big\lVert \sum_j \mathrm{relu}(X u_j)\alpha_j - y\Big\rVert^2
#   + \tfrac\beta2 \sum_j \big(\lVert u_j\rVert^2 + \alpha_j^2\big),$$
#
# is non-convex in $(U, \alpha)$, yet its global optimum is the optimum of a convex
# program (Pilanci & Ergen 2020): a group lasso over the *arrangement patterns*
# $D_i = \mathrm{diag}(1[X g \ge 0])$ of the data, with cone constraints
# $(2D_i - I) X v_i \ge 0$. This notebook walks through it with `theory.convex`:
# the patterns of a 2-d data set, the convex optimum with its certificate, the
# network it gives back, gradient descent against it, the gated-ReLU relaxation,
# the first-order solver and greedy layerwise training by convex steps.
#
# Convert it with `jupytext --to ipynb notebooks/07_convex.py`.
# With `BBP_NOTEBOOK_SMALL=1` it runs in seconds (the test suite does that).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from theory.convex import (
    arrangement_count,
    cone_decompose,
    exact_arrangements,
    gated_relu,
    nonconvex_objective,
    relu_dual,
    sample_arrangements,
    two_layer_relu,
)
from theory.convex.active_set import active_set_relu
from theory.convex.first_order import fista_gated
from theory.convex.layerwise import convex_greedy
from theory.convex.nonconvex import gradient_descent

SMALL = os.environ.get("BBP_NOTEBOOK_SMALL") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## Arrangement regions for d = 2
#
# Each data point $x_k$ is a line $\{g : x_k^T g = 0\}$ through the origin of the
# gate space. The lines cut the plane into regions; every gate $g$ in one region
# switches on the same set of points: that is one pattern $D_i$. For $n$ points in
# general position in $\mathbb R^d$ there are $2\sum_{k<d}\binom{n-1}{k}$ regions
# ($2n$ in the plane).

# %%
n = 6
X2 = rng.normal(size=(n, 2))
mask, gates = exact_arrangements(X2, include_zero=True)
print(f"{mask.shape[1]} patterns, formula {arrangement_count(n, 2)}")

fig, ax = plt.subplots(figsize=(5, 5))
angles = np.linspace(0, 2 * np.pi, 721)
circle = np.c_[np.cos(angles), np.sin(angles)]
codes = (circle @ X2.T >= 0).astype(int)
ids = {tuple(c): i for i, c in enumerate(mask.T.astype(int))}
region = np.array([ids[tuple(c)] for c in codes])
ax.scatter(circle[:, 0], circle[:, 1], c=region, cmap="tab20", s=12, label="gates g on the unit circle")
for k, x in enumerate(X2):
    normal = np.array([-x[1], x[0]]) / np.linalg.norm(x)
    ax.plot([-1.3 * normal[0], 1.3 * normal[0]], [-1.3 * normal[1], 1.3 * normal[1]], color="grey", lw=0.8,
            label="hyperplanes x_k^T g = 0" if k == 0 else None)
ax.scatter(*(gates / np.linalg.norm(gates, axis=0)), color="k", marker="x", label="interior gate per pattern")
ax.set(xlabel="g_1", ylabel="g_2", title=f"{mask.shape[1]} arrangement regions of {n} points", aspect="equal")
ax.legend(fontsize="x-small", loc="lower left")
plt.show()

# %% [markdown]
# ## The convex optimum, its certificate, and the network it gives back
#
# `two_layer_relu` enumerates the patterns (here with a bias column, so $d = 3$),
# solves the program with cvxpy + Clarabel and certifies the point: the
# cone-constraint violation and a lower bound from a dual point scaled into the
# dual feasible set. The recovery map turns every non-zero block into a neuron.

# %%
n = 8 if SMALL else 14
X = np.c_[rng.normal(size=(n, 2)), np.ones(n)]
y = rng.normal(size=n)
beta = 0.1
sol = two_layer_relu(X, y, beta)
U, alpha = sol.network()
print(f"p* = {sol.objective:.8f} over {sol.n_patterns} patterns ({sol.arrangements}), width m* = {len(alpha)}")
print(f"certificate: relative gap {sol.certificate.relative_gap:.1e}, "
      f"constraint violation {sol.certificate.constraint_violation:.1e}")
print(f"L(recovered network) = {float(nonconvex_objective(U, alpha, X, y, beta)):.8f}")
dual, _ = relu_dual(X, y, beta, sol.mask)
print(f"dual program's value = {dual:.8f} (strong duality)")

# %% [markdown]
# ## Gradient descent never beats it
#
# Gradient descent on $L$ from random inits, at several widths: every run ends
# above $p^*$, and the wider networks get close.

# %%
widths = [1, 4, 16] if SMALL else [1, 2, 4, 8, 16, 32, 64]
steps = 500 if SMALL else 5000
fig, ax = plt.subplots(figsize=(5, 3.5))
for m in widths:
    _, _, values = gradient_descent(X, y, beta, m, runs=8, steps=steps, seed=m)
    ax.scatter(np.full(values.shape, m), (values - sol.objective) / sol.objective, s=10, color="C0",
               label="GD runs" if m == widths[0] else None)
ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="(L_GD - p*) / p*",
       title="gradient descent against the convex optimum")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# ## The gated-ReLU relaxation and the cone decomposition
#
# Dropping the cone constraints gives a plain group lasso with fixed gates
# (Mishkin et al. 2022). Its optimum is a lower bound; its cone decomposition is a
# feasible ReLU point, optimal when every gated block already lies in its cone.

# %%
gated = gated_relu(X, y, beta, arrangements=20, solver="cvxpy")
relu20 = two_layer_relu(X, y, beta, arrangements=20, solver="cvxpy")
split = cone_decompose(X, gated, y=y)
print(f"gated {gated.objective:.6f} <= ReLU {relu20.objective:.6f} <= decomposed {split.objective:.6f} "
      f"(exact decomposition: {split.extra['exact_decomposition']})")

# %% [markdown]
# ## The first-order solver
#
# FISTA with restarts on the gated program, batched over an ensemble axis and
# written on the array API (numpy, CuPy). It stops on its own certified duality gap.

# %%
n_big = 300 if SMALL else 2000
Xb = rng.normal(size=(n_big, 10))
yb = np.sign(Xb[:, 0] * Xb[:, 1])
maskb, _ = sample_arrangements(Xb, 50)
res = fista_gated(Xb, yb, 5.0, maskb, tol=1e-6)
print(f"FISTA: {res.iterations} iterations, objective {float(res.objective):.6f}, "
      f"certified gap {float(res.objective - res.lower_bound) / float(res.objective):.1e}")

# %% [markdown]
# ## The ReLU program itself, exactly: the active-set method
#
# With the cone constraints kept, the optimum's non-zero blocks sit on faces of
# their cones (mostly extreme rays). The active-set Newton method walks those
# faces: it is exact (a KKT point, feasible to rounding) and certifies its gap.

# %%
exact = active_set_relu(Xb, yb, 5.0, maskb)
print(f"active set: {exact.status}, {exact.counts['steps']} Newton steps, {exact.active} non-zero blocks, "
      f"objective {exact.objective:.6f}, certified gap {exact.relative_gap:.1e}; "
      f"gated (a lower bound) {float(res.objective):.6f}")

# %% [markdown]
# ## Greedy layerwise training by convex steps
#
# Every block solves the two-layer program on the detached features of the block
# below (one-vs-all on one-hot labels) and passes $\mathrm{relu}([H, 1] U^T)$ up.
# Belilovsky et al.'s Proposition 3.1 in its weight-decay form bounds each block's
# optimum by the block below's loss plus $\beta(\lVert\alpha^+\rVert + \lVert\alpha^-\rVert)$.

# %%
Xg = rng.normal(size=(30 if SMALL else 80, 2))
Yg = np.eye(2)[(Xg[:, 0] * Xg[:, 1] > 0).astype(int)]
greedy = convex_greedy(Xg, Yg, 0.02, 3, arrangements=12 if SMALL else 30)
print("training risk per block:", np.round(greedy.risks, 5).tolist())
print("bound violations (<= 0):", np.round(greedy.bound_violations, 5).tolist())
