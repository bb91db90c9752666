r"""Saxe et al. (2013) for deep linear networks (depth D > 2): the balanced mode dynamics and learning times.

A depth-:math:`D` linear network :math:`\hat y = W_D\cdots W_1 x` on whitened inputs, started in the
teacher's modes with every layer of strength :math:`a_0 = u_0^{1/D}` along each mode,

.. math:: W_1 = R_1\,\mathrm{diag}(a_0)\,V^T,\quad W_l = R_l\,\mathrm{diag}(a_0)\,R_{l-1}^T,\quad
          W_D = U\,\mathrm{diag}(a_0)\,R_{D-1}^T ,

(:math:`R_l` orthonormal frames of the hidden layers) stays balanced and decoupled under BP's gradient
flow; each mode's strength :math:`u = a^D` obeys

.. math:: \dot u = D\,u^{2-2/D}\,(s - u)

(:func:`theory.closed_forms.depth_mode_strength`). Gradient descent with step :math:`\eta` is its Euler
scheme, so its deviation from the flow is first order in :math:`\eta`: halving the step halves it.
From a small :math:`u_0` the learning time of a mode grows as :math:`u_0^{-(1-2/D)}/s` for
:math:`D > 2` (against :math:`\log(1/u_0)/s` at :math:`D = 2`): deeper nets wait longer on the plateau.
"""

from __future__ import annotations

import math

import numpy as np

from sim.backend import to_host
from sim.data import linear_teacher
from sim.rules import rule_updates
from theory import closed_forms as cf
from theory.claims import CheckResult, claim
from theory.claims.linear import XP, _orthonormal, _rng

#: Step of the coarse run (the fine run uses half of it) and checkpoints per run.
DEPTH_LR, DEPTH_POINTS = 0.02, 24


def _depth_instance(rng: np.random.Generator):
    """An independent task: depth, a whitened teacher with 2-3 modes, frames, and a small u0."""
    depth = int(rng.integers(3, 5))
    r = int(rng.integers(2, 4))
    n_in, hidden, n_out = (r + int(k) for k in rng.integers(0, 3, size=3))
    s = rng.uniform(1.5, 3.0) * rng.uniform(0.6, 0.8) ** np.arange(r)
    data = linear_teacher(n_in, n_out, s, 2 * n_in, seed=int(rng.integers(2 ** 31)))
    frames = [_orthonormal(rng, hidden, r) for _ in range(depth - 1)]
    u0 = float(10 ** rng.uniform(-2.0, -1.5))
    return depth, data, s, frames, u0


def balanced_weights(depth: int, data, s: np.ndarray, frames: list, u0: float) -> list:
    """The balanced init in the teacher's modes (module docstring), host arrays ``(1, n_l, n_{l-1})``."""
    a = np.full(s.size, u0 ** (1.0 / depth))
    u, v = data.info["U"], data.info["V"]
    left = [*frames, u]
    right = [v, *frames]
    return [(left[l] @ np.diag(a) @ right[l].T)[None] for l in range(depth)]


def _strengths(weights, data) -> np.ndarray:
    product = weights[0][0]
    for w in weights[1:]:
        product = w[0] @ product
    return data.info["U"].T @ product @ data.info["V"]  # (r, r): diagonal while the modes stay decoupled


def depth_run(depth: int, data, s, frames, u0: float, lr: float, horizon: float, points: int = DEPTH_POINTS):
    r"""BP gradient descent with the engine's rule at ``points + 1`` equally spaced times.

    Returns the times, the mode strengths ``(T, r)`` and the full :math:`U^T W_D\cdots W_1 V` ``(T, r, r)``.
    """
    every = int(round(horizon / points / lr))
    w = [XP.asarray(a) for a in balanced_weights(depth, data, s, frames, u0)]
    x, y = XP.asarray(data.x), XP.asarray(data.y)
    out = [_strengths([np.asarray(to_host(a)) for a in w], data)]
    for k in range(points * every):
        upd = rule_updates("bp", w, x, y, validate=(k == 0))
        w = [a - lr * g for a, g in zip(w, upd.weights)]
        if (k + 1) % every == 0:
            out.append(_strengths([np.asarray(to_host(a)) for a in w], data))
    full = np.array(out)
    return np.arange(points + 1) * every * lr, np.diagonal(full, axis1=1, axis2=2), full


def _horizon(s_min: float, u0: float, depth: int) -> float:
    """A time by which the weakest mode has passed 90% of its value (from the closed form, doubling)."""
    t = 1.0
    while float(cf.depth_mode_strength([t], s_min, u0, depth)[0]) < 0.9 * s_min:
        t *= 1.5
    return t


def _plot(result: CheckResult, ax):
    d = result.details
    for j, s in enumerate(d["s"]):
        ax.plot(d["times"], d["simulated"][:, j], "o", ms=3, color=f"C{j}", label=f"GD, s = {s:.2f}")
        ax.plot(d["fine_times"], d["fine_theory"][:, j], "-", color=f"C{j}", lw=1)
    ax.set(xlabel="t = eta k", ylabel="mode strength u", title=d["title"])
    ax.legend(fontsize=7)


@claim("saxe.depth_modes",
       source="Saxe et al. 2013 (Exact solutions to the nonlinear dynamics of learning in deep linear neural "
              "networks: networks with more than one hidden layer)",
       statement="BP on a depth-D linear net (D = 3, 4) from a small balanced init in the teacher's modes keeps the "
                 "modes decoupled, each following du/dt = D u^(2-2/D) (s - u); GD is the flow's Euler scheme: its "
                 "deviation from the flow halves when the step halves",
       conditions="each instance an independent task: whitened teacher with 2-3 modes, s in [0.5, 3], widths r..r+2, "
                  "u0 in [10^-2, 10^-1.5], horizon until the weakest mode passes 0.9 s; full-batch GD with eta = "
                  "0.02 and 0.01; e(eta) = max over times and modes of |u_GD - u_flow| / s. Violation = max(|e(eta) / "
                  "e(eta/2) - 2| / 0.75, e(eta/2) / 0.1, off-diagonal strength / (1e-8 s)); tolerance 1",
       rules=("bp",), instances=6, quick_instances=2, hypothesis_examples=2, plot=_plot)
def check_depth_modes(seed: int, n_instances: int) -> CheckResult:
    worst, details = 0.0, {}
    for i in range(n_instances):
        depth, data, s, frames, u0 = _depth_instance(_rng(seed, "saxe.depth_modes", i))
        horizon = _horizon(float(s.min()), u0, depth)
        errors = []
        for lr in (DEPTH_LR, DEPTH_LR / 2):
            times, simulated, full = depth_run(depth, data, s, frames, u0, lr, horizon)
            off = float(np.max(np.abs(full - np.einsum("tj,jk->tjk", simulated, np.eye(s.size)))))
            flow = np.stack([cf.depth_mode_strength(times, float(sj), u0, depth) for sj in s], axis=1)
            errors.append(float(np.max(np.abs(simulated - flow) / s)))
        ratio = errors[0] / errors[1] if errors[1] > 0 else math.inf
        violation = max(abs(ratio - 2.0) / 0.75, errors[1] / 0.1, off / (1e-8 * float(s.min())))
        worst = max(worst, violation if math.isfinite(violation) else math.inf)
        if i == 0:
            fine = np.linspace(0, times[-1], 200)
            details = {"s": s, "times": times, "simulated": simulated, "fine_times": fine,
                       "fine_theory": np.stack([cf.depth_mode_strength(fine, float(sj), u0, depth) for sj in s], 1),
                       "title": f"depth {depth}, u0 = {u0:.1e}", "errors": errors}
    return CheckResult(n_instances, worst, 1.0, details)
