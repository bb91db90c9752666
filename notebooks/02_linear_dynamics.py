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
# # Learning dynamics of linear networks: BP, FA and their conservation laws
#
# A two-layer linear network $\hat y = W_2 W_1 x$ trained on the mean squared error
# $L = \frac{1}{2N}\sum_n \lVert W_2 W_1 x_n - y_n\rVert^2$ is the simplest model in
# which learning has interesting *dynamics*: plateaus, sudden transitions, an order
# in which things are learnt. With whitened inputs ($X^TX/N = I$) only the
# input-output correlation $\Sigma_{yx} = Y^TX/N = U S V^T$ matters, and
# (repository conventions: update $\Delta W = \mathrm{mean}_n\,\delta h^T$, flow
# $\dot W = -\Delta W$, time $t = \eta \times$ steps)
#
# $$\dot W_2 = (\Sigma_{yx} - W_2W_1)\,W_1^T, \qquad
#   \dot W_1 = G\,(\Sigma_{yx} - W_2W_1), \qquad G = W_2^T \text{ (BP)},\ B \text{ (FA)}.$$
#
# This notebook shows Saxe et al.'s (2013) mode solution for BP, our FA analogue of
# it, and the conservation law behind feedback alignment, each time with the
# theory of `theory.closed_forms` beside a simulation by the engine.
#
# Convert it with `jupytext --to ipynb notebooks/02_linear_dynamics.py`. With
# `BBP_NOTEBOOK_SMALL=1` it runs in seconds (the test suite does that).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sim.backend import get_namespace
from sim.data import linear_teacher
from sim.network import init_network, network_from_weights
from sim.plots import mean_and_spread
from sim.rules import draw_feedback, rule_updates
from sim.train import train
from theory import closed_forms as cf
from theory.odes import euler_error_coefficient

SMALL = os.environ.get("BBP_NOTEBOOK_SMALL") == "1"
xp = get_namespace("numpy")
LR = 0.02 if SMALL else 0.01
N_POINTS = 30 if SMALL else 80


def orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.normal(size=(n, k)))
    return q * np.sign(np.diag(r))


def train_at(weights, data, rule, lr, checkpoints, feedback=None):
    """Train in segments with the engine; host weights at each checkpoint step."""
    net = network_from_weights([xp.asarray(w) for w in weights])
    states, done = [[np.asarray(w) for w in net.weights]], 0
    for step in checkpoints[1:]:
        res = train(net, data, rule=rule, steps=step - done, lr=lr, feedback=feedback, record_every=step - done,
                    progress=False)
        net, done = res.network, step
        states.append([np.asarray(w) for w in net.weights])
    return states


# %% [markdown]
# ## 1. Saxe modes: BP from a small balanced init
#
# Start BP in the teacher's frames, $W_1 = \sqrt{u_0}\,R V^T$ and
# $W_2 = \sqrt{u_0}\,U R^T$ with any orthonormal hidden frame $R$. Every mode
# $i$ then evolves on its own: its strength $u_i = (U^TW_2W_1V)_{ii}$ obeys
# $\dot u = 2u(s - u)$, whose solution is
#
# $$u(t) = \frac{s\,e^{2st}}{e^{2st} - 1 + s/u_0},
#   \qquad t_{1/2} = \frac{\ln(s/u_0 - 1)}{2s}.$$
#
# Each mode sits on a plateau, then learns in a sudden sigmoidal step; larger
# singular values go first.

# %%
s = np.array([3.0, 2.0, 1.0, 0.5])
u0 = 1e-3
data = linear_teacher(6, 5, s, 12, seed=0)
U, V = data.info["U"], data.info["V"]
R = orthonormal(np.random.default_rng(1), 6, s.size)
horizon = 1.2 * float(cf.saxe_half_time(s.min(), u0))
every = max(1, int(round(horizon / N_POINTS / LR)))
checkpoints = [j * every for j in range(N_POINTS + 1)]
times = np.array(checkpoints) * LR


def mode_strengths(states):
    return np.array([np.diag(U.T @ w[1][0] @ w[0][0] @ V) for w in states])


a0 = np.sqrt(u0)
bp_states = train_at([(a0 * R @ V.T)[None], (a0 * U @ R.T)[None]], data, "bp", LR, checkpoints)
bp_modes = mode_strengths(bp_states)

fine = np.linspace(0, times[-1], 400)
fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
for j, sj in enumerate(s):
    (line,) = ax.plot(fine, cf.saxe_mode_strength(fine, sj, u0), label=f"closed form, s={sj:g}")
    ax.plot(times, bp_modes[:, j], "o", ms=3, color=line.get_color())
    ax.axvline(cf.saxe_half_time(sj, u0), color=line.get_color(), lw=0.6, ls=":")
ax.set(xlabel="t = lr * steps", ylabel="mode strength u", title="BP: Saxe modes (dots: simulation)")
ax.legend(fontsize=8)
plt.show()

off_diagonal = max(np.max(np.abs(U.T @ w[1][0] @ w[0][0] @ V - np.diag(np.diag(U.T @ w[1][0] @ w[0][0] @ V))))
                   for w in bp_states)
print(f"largest off-diagonal mode coupling over the run: {off_diagonal:.1e} (rounding)")

# %% [markdown]
# ### The simulation is gradient descent, not the flow
#
# Gradient descent with step $\eta$ is the explicit Euler method on the flow, so
# it lags the closed form by $O(\eta)$. The lag is predictable: $y_k = y(\eta k) +
# \eta\,\varepsilon(\eta k) + O(\eta^2)$ with $\dot\varepsilon = J\varepsilon -
# \tfrac12 J f$ (`theory.odes.euler_error_coefficient`). Halving the step halves
# the error.

# %%
s_big = float(s[0])
t_check = 0.04 * round(float(cf.saxe_half_time(s_big, u0)) / 0.04)  # a whole number of steps for every lr below


def mode_field(y):
    return np.array([y[0] * (s_big - y[0] ** 2)])


def mode_jacobian(y):
    return np.array([[s_big - 3 * y[0] ** 2]])


flow, eps = euler_error_coefficient(mode_field, mode_jacobian, [a0], [0.0, t_check])
rows = []
for lr in (0.04, 0.02, 0.01, 0.005):
    a = a0
    for _ in range(int(round(t_check / lr))):
        a += lr * a * (s_big - a * a)  # GD on one balanced mode (exactly what the network does)
    rows.append((lr, a * a - cf.saxe_mode_strength(t_check, s_big, u0), 2 * flow[-1, 0] * lr * eps[-1, 0]))
print(" lr      GD error at t_half   first-order prediction")
for lr, err, pred in rows:
    print(f"{lr:<7} {err: .5f}            {pred: .5f}")
print("ratios of successive errors:", [round(float(rows[i][1] / rows[i + 1][1]), 3) for i in range(len(rows) - 1)])

# %% [markdown]
# ## 2. The FA analogue of the Saxe modes (our derivation)
#
# Give FA a feedback matrix aligned with the output modes, $B = R\,\mathrm{diag}(b)\,U^T$,
# and write $W_1 = R\,\mathrm{diag}(a)V^T$, $W_2 = U\,\mathrm{diag}(c)R^T$. The sympy
# derivation below rotates the matrix flow into the modes and finds
#
# * per mode $\dot a = b(s - ac)$, $\dot c = a(s - ac)$;
# * the conserved quantity $a^2 - 2bc$;
# * from zero, $c = a^2/(2b)$, so $u = ac = a^3/(2b)$ with $\dot a = bs - a^3/2$;
# * no plateau: $u = \tfrac12 b^2 s^3 t^3 - \tfrac{3}{16} b^4 s^5 t^6 + \dots$
#
# BP from zero does not move at all: its hidden signal $W_2^Te$ and its output
# update $eW_1^T$ both vanish at $W = 0$.

# %%
derivation = cf.derive_fa_mode_dynamics()
print("per-mode FA field  (a', c') =", derivation.mode_field)
print("per-mode BP field  (a', c') =", derivation.bp_mode_field)
print("conserved quantity:", derivation.invariant, "  its rate:", derivation.invariant_rate)
print("reduced from zero: a' =", derivation.reduced_rate, "   u =", derivation.strength)
print("u(t) =", derivation.series_u, "+ O(t^12)")

# %%
b = np.array([1.0, 1.0, -1.0, 1.0])
feedback = [xp.asarray((R @ np.diag(b) @ U.T)[None])]
zero = [np.zeros((1, 6, 6)), np.zeros((1, 5, 6))]
fa_horizon = 1.5 * float(np.max(cf.fa_mode_half_time(s, b)))
every_fa = max(1, int(round(fa_horizon / N_POINTS / LR)))
fa_checkpoints = [j * every_fa for j in range(N_POINTS + 1)]
fa_times = np.array(fa_checkpoints) * LR
fa_modes = mode_strengths(train_at(zero, data, "fa", LR, fa_checkpoints, feedback))
bp_zero = mode_strengths(train_at(zero, data, "bp", LR, fa_checkpoints))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
fine = np.linspace(0, fa_times[-1], 400)
for j, sj in enumerate(s):
    (line,) = axes[0].plot(fine, cf.fa_mode_strength(fine, sj, b[j]), label=f"closed form, s={sj:g}")
    axes[0].plot(fa_times, fa_modes[:, j], "o", ms=3, color=line.get_color())
axes[0].plot(fa_times, bp_zero[:, 0], "k--", lw=1, label="BP from zero (all modes)")
axes[0].set(xlabel="t", ylabel="mode strength u", title="FA from zero (dots: simulation)")
axes[0].legend(fontsize=8)
early = np.geomspace(1e-2, 1.0, 50)
for j, sj in enumerate(s):
    axes[1].loglog(early, cf.fa_mode_strength(early, sj, b[j]), label=f"s={sj:g}")
    axes[1].loglog(early, cf.fa_mode_early(early, sj, b[j]), "k:", lw=0.8)
axes[1].set(xlabel="t", ylabel="u", title="early growth: u ~ b^2 s^3 t^3 / 2 (dotted)")
axes[1].legend(fontsize=8)
plt.show()
print("BP from zero, largest weight after training:", max(np.max(np.abs(w)) for w in
                                                         train_at(zero, data, "bp", LR, [0, 50])[-1]))

# %% [markdown]
# FA's half-time scales as $(|b|s)^{-2/3}$, BP's as $\ln(s/u_0)/(2s)$: both learn
# the larger modes first, but FA needs no symmetry-breaking initialisation, the
# random feedback breaks the symmetry for it.

# %%
for j, sj in enumerate(s):
    print(f"s={sj:<4g} half-time BP (u0={u0:g}): {cf.saxe_half_time(sj, u0):5.2f}   "
          f"FA (b={b[j]:g}, from zero): {cf.fa_mode_half_time(sj, b[j]):5.2f}")

# %% [markdown]
# ## 3. The conservation law behind feedback alignment
#
# For *any* input covariance, FA's flow conserves
#
# $$Q = W_1W_1^T - BW_2 - W_2^TB^T,$$
#
# because $\tfrac{d}{dt}W_1W_1^T = BEW_1^T + W_1E^TB^T = \tfrac{d}{dt}(BW_2 + W_2^TB^T)$
# with $E = \Sigma_{yx} - W_2W_1\Sigma_{xx}$. Gradient descent drifts by exactly
# $\eta^2\sum_k \Delta W_{1,k}\Delta W_{1,k}^T$, i.e. $O(\eta)$ at a fixed time.
# From zero, $Q = 0$, so $\mathrm{sym}(BW_2) = W_1W_1^T/2 \succeq 0$: the forward
# weights $W_2$ are pulled towards $B^T$ — this is the alignment.

# %%
rng = np.random.default_rng(2)
n_in, hidden, n_out, n_samples = 6, 5, 3, 40
x = rng.normal(size=(n_samples, n_in)) @ (np.eye(n_in) + 0.6 * rng.normal(size=(n_in, n_in)) / np.sqrt(n_in))
x /= np.sqrt(np.linalg.norm(x.T @ x / n_samples, 2))
y = x @ rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
B = rng.normal(size=(hidden, n_out)) / np.sqrt(n_out)


def conserved(w1, w2):
    return w1 @ w1.T - B @ w2 - w2.T @ B.T


t_end = 3.0
start = [xp.asarray(0.7 * rng.normal(size=(1, hidden, n_in)) / np.sqrt(n_in)),
         xp.asarray(0.7 * rng.normal(size=(1, n_out, hidden)) / np.sqrt(hidden))]
q0 = conserved(np.asarray(start[0])[0], np.asarray(start[1])[0])
drift = {}
for lr in (0.04, 0.02, 0.01) if SMALL else (0.04, 0.02, 0.01, 0.005, 0.0025):
    w = list(start)
    second_order = np.zeros((hidden, hidden))
    for _ in range(int(round(t_end / lr))):
        upd = rule_updates("fa", w, xp.asarray(x), xp.asarray(y), feedback=[xp.asarray(B[None])])
        g1 = np.asarray(upd.weights[0])[0]
        second_order += lr * lr * g1 @ g1.T
        w = [a - lr * g for a, g in zip(w, upd.weights)]
    q1 = conserved(np.asarray(w[0])[0], np.asarray(w[1])[0])
    drift[lr] = np.linalg.norm(q1 - q0)
    print(f"lr={lr:<7} |Q(t) - Q(0)| = {drift[lr]:.3e}   "
          f"residual of the exact identity: {np.linalg.norm(q1 - q0 - second_order):.1e}")
lrs = np.array(sorted(drift))
slope = np.polyfit(np.log(lrs), np.log([drift[v] for v in lrs]), 1)[0]
print(f"log-log slope of the drift against lr: {slope:.3f}  (1: O(lr))")

# %% [markdown]
# ### FA from zero, with orthogonal feedback, is never more than 90 degrees from BP
#
# With $B^TB = cI$ and $Q = 0$, $\mathrm{sym}(W_2B) = B^TW_1W_1^TB/(2c)$, so the FA hidden
# signal $Be$ and BP's $W_2^Te$ satisfy $e^TW_2Be = \lVert W_1^TBe\rVert^2/(2c) \ge 0$
# at every moment — the FA update is always a descent direction for the hidden layer.

# %%
B_orth = orthonormal(rng, hidden, n_out) * np.sqrt(0.8)
w = [xp.zeros((1, hidden, n_in)), xp.zeros((1, n_out, hidden))]
angles = []
for step in range(150 if SMALL else 600):
    upd = rule_updates("fa", w, xp.asarray(x), xp.asarray(y), feedback=[xp.asarray(B_orth[None])])
    fa_signal, e = np.asarray(upd.signals[0])[0], np.asarray(upd.signals[-1])[0]
    bp_signal = e @ np.asarray(w[1])[0]
    norm = np.linalg.norm(fa_signal) * np.linalg.norm(bp_signal)
    angles.append(np.degrees(np.arccos(np.sum(fa_signal * bp_signal) / norm)) if norm > 0 else np.nan)
    w = [a - 0.02 * g for a, g in zip(w, upd.weights)]
fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
ax.plot(angles)
ax.axhline(90, color="grey", ls="--", lw=0.8)
ax.set(xlabel="step", ylabel="angle(Be, W2^T e) (degrees)", ylim=(0, 100), title="FA from zero, B^T B = cI")
plt.show()
print(f"largest angle over the run: {np.nanmax(angles):.1f} degrees")

# %% [markdown]
# ## 4. The scalar chain: anti-aligned solutions from large inits
#
# Baldi et al. (2018) studied the scalar chain $x \to a_1x \to a_2a_1x$ with feedback
# $c$. It conserves $\kappa = a_1^2 - 2ca_2$ and always converges to
# $a_1a_2 = \alpha/\beta$ ($\alpha = E[xy]$, $\beta = E[x^2]$), but when
# $\kappa > 3(|c\alpha|/\beta)^{2/3}$ its level set holds two stable equilibria, and
# starts beyond the middle one end *anti-aligned*, $ca_2 < 0$.
# `bbp run scalar-chain` draws the full phase portrait; here are the predicted basins.

# %%
alpha = beta = c = 1.0
grid = np.linspace(-4, 4, 61 if SMALL else 161)
g1, g2 = np.meshgrid(grid, grid)
_, limit2 = cf.scalar_chain_limit(g1, g2, c, alpha, beta)
fig, ax = plt.subplots(figsize=(4.6, 4.2), layout="constrained")
ax.contourf(grid, grid, (c * limit2 < 0).astype(float), levels=[-0.5, 0.5, 1.5], colors=["#bcd0f7", "#f5b7a4"])
curve = np.linspace(-4, 4, 801)
curve = curve[np.abs(curve) > 1e-3]
ax.plot(curve, alpha / beta / curve, "k.", ms=0.8)
ax.set(xlim=(-4, 4), ylim=(-4, 4), xlabel="a1", ylabel="a2", title="predicted basins (red: anti-aligned)")
plt.show()
print(f"fraction of [-4, 4]^2 that ends anti-aligned: {np.mean(c * limit2 < 0):.3f}")

# %% [markdown]
# ## 5. The DFA alignment phase
#
# Direct feedback alignment sends the output error to every hidden layer through its
# own fixed matrix $B_l$. In deep linear networks from zero init the weights keep the
# exact structure $W_1 = B_1M$, $W_l = B_lC_lB_{l-1}^T$, $W_L = C_LB_{L-1}^T$, and
# Refinetti et al. (2021) describe the dynamics as "align, then memorise": the
# alignment between the DFA and BP signals rises before the loss falls.
# `bbp run dfa-alignment` plots alignment and loss over time, per layer, for several
# widths, and `bbp verify` checks the DFA claims; the short run below shows the first
# phase on a three-layer linear network from a small random init: the angle between the
# DFA and BP hidden signals leaves 90 degrees within the first steps, while the loss has
# barely moved.

# %%
sizes = [8, 16, 16, 4]
dfa_data = linear_teacher(8, 4, [2.0, 1.5, 1.0, 0.5], 32, seed=3)
dfa_net = init_network(sizes, 4, seed=0, scale=0.1)
dfa_feedback = draw_feedback("dfa", sizes, 4, seed=0)
steps = 300 if SMALL else 1500
run = train(dfa_net, dfa_data, rule="dfa", steps=steps, lr=0.02, feedback=dfa_feedback, record_every=2,
            progress=False)
angles = run.metric("signal_angle")
defined = np.all(np.isfinite(angles), axis=(1, 2))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
mean_and_spread(axes[0], run.steps, run.metric("loss"), label="DFA", log=True)
for layer in range(2):
    mean_and_spread(axes[1], run.steps[defined], angles[defined, :, layer], label=f"hidden layer {layer + 1}")
axes[0].set(xlabel="step", title="loss")
axes[1].set(xlabel="step", ylabel="angle to BP's signal (degrees)", ylim=(0, 120), title="alignment")
axes[1].axhline(90, color="grey", ls="--", lw=0.8)
axes[1].legend()
plt.show()
early = int(np.argmax(run.steps >= 10))
loss = run.metric("loss").mean(axis=1)
print(f"step 0: loss {loss[0]:.3f}, angles {np.round(angles[0].mean(axis=0), 1)} degrees")
print(f"step {run.steps[early]}: loss {loss[early]:.3f}, angles {np.round(angles[early].mean(axis=0), 1)} degrees")
print(f"end: loss {loss[-1]:.2e}, angles {np.round(angles[-1].mean(axis=0), 1)} degrees")
