r"""Claims of local and layer-parallel learning (registered on import; see :mod:`theory.claims`).

* ``local.gradient-isolation``: DGL / Greedy InfoMax updates of earlier blocks
  get exactly nothing from a later block's loss.
* ``local.cpc-bound``: :math:`\log N - L_N \le I` and :math:`\le \log N`, and
  tends to :math:`I` with the optimal critic (correlated Gaussians).
* ``local.ntxent-values``: NT-Xent is :math:`\log(2N-1)` on equal embeddings and
  invariant to their scale.
* ``local.dgl-moving-input``: DGL's upper block converges (to a stationary
  point of its limit objective) with Robbins-Monro steps when its input
  distribution's distance to the limit is summable against the steps, and
  stalls at an exact floor when the input never reaches the limit.
* ``local.delayed-ogd-regret``: online gradient descent with gradients ``tau``
  rounds stale has regret :math:`O(\sqrt{\tau T})` on convex losses, and
  :math:`\Omega(\sqrt{\tau T})` on adversarial ones.
* ``local.async-buffer``: the replay buffer never holds more than ``M``
  batches; with ``M = 1`` and a sequential schedule asynchronous DGL is DGL.

None of these is about a rule of :mod:`sim.rules`, so each gives its own
``sabotage``: a context manager under which the property is broken (a leaking
stop-gradient, a wrong formula, a wrong constant), and its check must fail.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import replace
from unittest.mock import patch

import numpy as np

from sim import local, parallel
from sim.data.tasks import Dataset

from . import CheckResult, claim


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))



# --- gradient isolation ---------------------------------------------------------------------------------

def _random_block_net(rng, *, objective: str):
    n_blocks = int(rng.integers(2, 5))
    widths = [int(rng.integers(3, 9)) for _ in range(n_blocks + 1)]
    n_out = int(rng.integers(2, 5))
    sizes = [widths[0], *widths[1:], n_out]
    counts = [1] * (n_blocks - 1) + [2]
    head = str(rng.choice(local.HEADS))
    net = local.make_block_network(sizes, int(rng.integers(1, 4)), layers_per_block=counts,
                                   seed=int(rng.integers(2**31)), activation=str(rng.choice(["relu", "tanh"])),
                                   head=head, head_hidden=int(rng.integers(2, 6)),
                                   head_outputs=(n_out if objective == "supervised" else int(rng.integers(2, 6))))
    batch = int(rng.integers(2, 7))
    rows = 2 * batch if objective != "supervised" else batch
    x = rng.normal(size=(rows, sizes[0]))
    y = np.eye(n_out)[rng.integers(0, n_out, size=rows)]
    return net, x, y


def _perturb_from(net: local.BlockNetwork, j: int, rng) -> local.BlockNetwork:
    """New random parameters for blocks ``j..K-1`` and their heads (earlier blocks untouched)."""
    params = [p if i < j else tuple(rng.normal(size=w.shape) for w in p) for i, p in enumerate(net.params)]
    heads = [h if (i < j or h is None) else tuple(rng.normal(size=w.shape) for w in h)
             for i, h in enumerate(net.head_params)]
    return net.with_params(params, heads)


def _max_diff(a, b) -> float:
    if a is None and b is None:
        return 0.0
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _plot_isolation(result: CheckResult, ax):
    d = result.details
    x = np.arange(1, len(d["isolated_change"]) + 1)
    floor = 1e-18  # an exact zero is drawn here (log axis)
    ax.semilogy(x, np.maximum(d["isolated_change"], floor), "o", ms=4, color="C0",
                label=f"blocks before j (claimed 0; 0 drawn at {floor:g})")
    ax.semilogy(x, np.maximum(d["overlap_leak"], floor), "s", ms=4, color="C3", label="LoCo: block j-1 (changes)")
    ax.set(xlabel="instance", ylabel="max |change of an update|", title="new parameters from block j on",
           ylim=(floor / 10, 1e3))
    ax.legend(fontsize=7, loc="center right")


@claim("local.gradient-isolation", source="Löwe et al. 2019 (Greedy InfoMax); Belilovsky et al. 2020 (DGL)",
       statement="In DGL the update of block i gets exactly zero from the loss of any block j > i: new random "
                 "parameters for blocks j.. and their heads leave the updates of blocks < j bit-for-bit unchanged "
                 "(supervised, InfoNCE and NT-Xent heads); with overlapping blocks (LoCo) exactly block j-1 "
                 "changes.",
       conditions="Random dense block networks (2-4 blocks, relu or tanh, linear or MLP heads), random batches.",
       instances=30, quick_instances=10, hypothesis_examples=10, plot=_plot_isolation,
       sabotage=lambda: _patched_rule("dgl", feedback="neighbour"))
def _check_gradient_isolation(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    leak_seen, isolated = [], []
    for i in range(n_instances):
        rng = _rng(seed, 1, i)
        objective = str(rng.choice(local.OBJECTIVES))
        net, x, y = _random_block_net(rng, objective=objective)
        j = int(rng.integers(1, net.n_blocks))
        other = _perturb_from(net, j, rng)
        isolated.append(0.0)
        for rule in ("dgl", "overlap"):
            before = local.block_updates(rule, net, x, y, objective=objective)
            after = local.block_updates(rule, other, x, y, objective=objective)
            untouched = range(j) if rule == "dgl" else range(j - 1)
            for b in untouched:
                change = max(_max_diff(before.grads[b], after.grads[b]),
                             _max_diff(before.head_grads[b], after.head_grads[b]))
                worst = max(worst, change)
                isolated[-1] = max(isolated[-1], change)
            # the perturbation must be visible where gradients do flow, or the check would be empty
            if _max_diff(before.grads[j], after.grads[j]) == 0.0:
                worst = max(worst, 1.0)
            if rule == "overlap":
                leak_seen.append(_max_diff(before.grads[j - 1], after.grads[j - 1]))
    return CheckResult(n_instances, worst, 0.0, {"overlap_leak": leak_seen, "isolated_change": isolated})


@contextlib.contextmanager
def _patched_rule(name: str, **changes):
    saved = local.BLOCK_RULES[name]
    local.BLOCK_RULES[name] = replace(saved, **changes)
    try:
        yield
    finally:
        local.BLOCK_RULES[name] = saved


# --- the CPC bound --------------------------------------------------------------------------------------

CPC_SIZES = (4, 32, 256)
CPC_SAMPLES = 8192


def gaussian_critic_scores(x, c, rho: float):
    r"""Optimal-critic scores :math:`S_{ik} = \log p(x_k | c_i) / p(x_k)` (constant dropped).

    For :math:`x = \rho c + \sqrt{1-\rho^2}\,\varepsilon` per coordinate:
    :math:`S_{ik} = -\lVert x_k - \rho c_i\rVert^2 / (2(1-\rho^2)) + \lVert x_k\rVert^2/2`.
    """
    diff = x[..., None, :, :] - rho * c[..., :, None, :]
    return -np.sum(diff ** 2, axis=-1) / (2 * (1 - rho ** 2)) + np.sum(x ** 2, axis=-1)[..., None, :] / 2


def gaussian_mutual_information(rho: float, dim: int) -> float:
    r""":math:`I(x; c) = -\frac d2 \log(1-\rho^2)` nats for ``d`` independent coordinates of correlation ``rho``."""
    return -0.5 * dim * math.log(1 - rho ** 2)


def _plot_cpc(result: CheckResult, ax):
    d = result.details
    sizes = np.asarray(d["sizes"])
    for j, (info, means) in enumerate(d["curves"]):
        ax.semilogx(sizes, np.asarray(means) / info, "o-", color="C0", lw=0.8, ms=3, base=2,
                    label="optimal critic, one line per instance" if j == 0 else "_nolegend_")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8, label="I(x; c) (the bound)")
    ax.set(xlabel="N (samples in the InfoNCE batch)", ylabel="E[log N - L_N] / I(x; c)",
           title="InfoNCE lower bound on the mutual information", ylim=(0, 1.15))
    ax.legend(fontsize=7, loc="lower right")


@claim("local.cpc-bound", source="Oord et al. 2018 (CPC); Poole et al. 2019",
       statement="For any critic, E[log N - L_N] <= I(x; c) and log N - L_N <= log N (L_N >= 0); with the optimal "
                 "critic log p(x|c)/p(x) on correlated Gaussians, E[log N - L_N] grows with N towards I, within "
                 "0.06 nats at N = 256.",
       conditions="x = rho c + sqrt(1 - rho^2) eps in d = 1..2 dimensions, rho in [0.5, 0.9] (I <= 1.7 nats); "
                  "expectations by Monte Carlo over 8192 pairs per N, tolerances 4 standard errors.",
       instances=10, quick_instances=3, hypothesis_examples=3, plot=_plot_cpc,
       sabotage=lambda: patch.object(local, "info_nce_from_scores", _info_nce_without_positive))
def _check_cpc_bound(seed: int, n_instances: int) -> CheckResult:
    worst = -math.inf
    curves = []
    for i in range(n_instances):
        rng = _rng(seed, 2, i)
        rho, dim = float(rng.uniform(0.5, 0.9)), int(rng.integers(1, 3))
        info = gaussian_mutual_information(rho, dim)
        estimates = []
        for n in CPC_SIZES:
            batches = CPC_SAMPLES // n
            c = rng.normal(size=(batches, n, dim))
            x = rho * c + math.sqrt(1 - rho ** 2) * rng.normal(size=(batches, n, dim))
            critics = {"optimal": gaussian_critic_scores(x, c, rho),
                       "bilinear": float(rng.uniform(0.2, 3.0)) * np.einsum("bid,bkd->bik", c, x)}
            for name, scores in critics.items():
                loss, _ = local.info_nce_from_scores(scores)
                value = math.log(n) - loss
                mean, se = float(np.mean(value)), float(np.std(value) / math.sqrt(batches))
                worst = max(worst, mean - info - 4 * se, float(np.max(value)) - math.log(n))
                if name == "optimal":
                    estimates.append((mean, se))
        for (a, sa), (b, sb) in zip(estimates[:-1], estimates[1:]):
            worst = max(worst, a - b - 4 * math.hypot(sa, sb))  # grows with N
        gap, se = info - estimates[-1][0], estimates[-1][1]
        worst = max(worst, gap - 0.06 - 4 * se)
        curves.append((info, [m for m, _ in estimates]))
    return CheckResult(n_instances, max(worst, 0.0), 0.0, {"sizes": CPC_SIZES, "curves": curves})


def _info_nce_without_positive(scores):
    """Sabotage: the positive is left out of the denominator (no longer a lower bound)."""
    xp_eye = np.eye(scores.shape[-1])
    masked = np.where(xp_eye > 0, -np.inf, scores)
    top = np.max(masked, axis=-1, keepdims=True)
    log_den = top[..., 0] + np.log(np.sum(np.exp(masked - top), axis=-1))
    loss = -np.mean(np.diagonal(scores, axis1=-2, axis2=-1) - log_den, axis=-1)
    return loss, np.zeros_like(scores)


# --- NT-Xent ----------------------------------------------------------------------------------------------

def _plot_ntxent(result: CheckResult, ax):
    d = result.details
    predicted, measured = np.asarray(d["log_2n_minus_1"]), np.asarray(d["equal_loss"])
    base, scaled = np.asarray(d["unscaled_loss"]), np.asarray(d["scaled_loss"])
    top = float(max(np.max(predicted), np.max(base), 1.0)) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="measured = predicted")
    ax.plot(predicted, measured, "o", ms=4, color="C0", label="equal embeddings vs log(2N - 1)")
    ax.plot(base, scaled, "x", ms=5, color="C1", label="scaled by c vs unscaled")
    ax.set(xlabel="predicted NT-Xent (nats)", ylabel="measured NT-Xent (nats)", title="NT-Xent values")
    ax.legend(fontsize=7, loc="upper left")


@claim("local.ntxent-values", source="Chen et al. 2020 (SimCLR)",
       statement="NT-Xent of 2N equal embeddings is log(2N - 1) for every temperature, and NT-Xent with cosine "
                 "similarity is unchanged when all embeddings are scaled by c > 0.",
       conditions="N in 1..32 pairs, dimension 1..16, temperature in [0.05, 2], scale c in [1e-3, 1e3], "
                  "ensembles of 1..3 members; tolerance 64 eps log(2N).",
       instances=40, quick_instances=15, hypothesis_examples=10, plot=_plot_ntxent,
       sabotage=lambda: patch.object(local, "nt_xent", _nt_xent_dot_product))
def _check_ntxent(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    details = {"log_2n_minus_1": [], "equal_loss": [], "unscaled_loss": [], "scaled_loss": []}
    tol = 64 * np.finfo(float).eps * math.log(64)
    for i in range(n_instances):
        rng = _rng(seed, 3, i)
        n, dim, members = int(rng.integers(1, 33)), int(rng.integers(1, 17)), int(rng.integers(1, 4))
        tau = float(rng.uniform(0.05, 2.0))
        v = rng.normal(size=(members, 1, dim)) * float(10 ** rng.uniform(-2, 2))
        equal = np.broadcast_to(v, (members, n, dim)).copy()
        loss, _, _ = local.nt_xent(equal, equal.copy(), tau)
        worst = max(worst, float(np.max(np.abs(loss - math.log(2 * n - 1)))) / max(1.0, math.log(2 * n)))
        z1, z2 = rng.normal(size=(members, n, dim)), rng.normal(size=(members, n, dim))
        scale = float(10 ** rng.uniform(-3, 3))
        base, _, _ = local.nt_xent(z1, z2, tau)
        scaled, _, _ = local.nt_xent(scale * z1, scale * z2, tau)
        worst = max(worst, float(np.max(np.abs(scaled - base))) / max(1.0, float(np.max(np.abs(base)))))
        details["log_2n_minus_1"] += [math.log(2 * n - 1)] * members
        for key, value in (("equal_loss", loss), ("unscaled_loss", base), ("scaled_loss", scaled)):
            details[key] += [float(v) for v in np.ravel(value)]
    return CheckResult(n_instances, worst, tol, details)


def _nt_xent_dot_product(z1, z2, temperature=0.5):
    """Sabotage: raw dot products instead of cosine similarity, self included in the denominator."""
    z = np.concatenate([z1, z2], axis=-2)
    n = z1.shape[-2]
    sim = np.einsum("...id,...kd->...ik", z, z) / temperature
    idx = np.arange(2 * n)
    top = np.max(sim, axis=-1, keepdims=True)
    log_p = sim - top - np.log(np.sum(np.exp(sim - top), axis=-1, keepdims=True))
    loss = -np.mean(log_p[..., idx, (idx + n) % (2 * n)], axis=-1)
    return loss, np.zeros_like(z1), np.zeros_like(z2)


# --- DGL under a moving input distribution ------------------------------------------------------------------

#: Robbins-Monro steps eta_t = ETA0 / (1 + t / T0)^POWER (sum eta = inf, sum eta^2 < inf for 1/2 < POWER <= 1).
ETA0, T0, POWER = 0.1, 10.0, 0.75


def robbins_monro_steps(n_steps: int) -> np.ndarray:
    r"""Step sizes :math:`\eta_t = \eta_0 (1 + t/t_0)^{-p}` with :math:`p = 3/4`: Robbins-Monro."""
    return ETA0 / (1 + np.arange(n_steps) / T0) ** POWER


#: DGL's condition (Belilovsky et al. 2020): the distance c_t of block j's input distribution to its limit is
#: summable against the steps, sum_t eta_t c_t < inf. Drift schedules c_t on both sides of it (eta_t ~ t^-3/4):
#: ``summable`` (t+1)^-2; ``slow`` (t+1)^-1/2, not summable itself (sum c_t = inf) but sum eta_t c_t < inf;
#: ``offset`` c_inf (1 + (t+1)^-1/2) with c_inf = 1/2, a moving input that never reaches the limit (sum eta_t c_t
#: = inf). The first two must converge, the third stalls at its exact floor.
DRIFTS = {
    "summable": lambda t: (t + 1.0) ** -2,
    "slow": lambda t: (t + 1.0) ** -0.5,
    "offset": lambda t: 0.5 * (1.0 + (t + 1.0) ** -0.5),
}
#: The limit of each schedule (the floor of the stalled case is computed at it).
DRIFT_LIMITS = {"summable": 0.0, "slow": 0.0, "offset": 0.5}


def _dgl_upper_block(rng, n_instances: int, replicas: int, steps: int, *, drift: str, dim: int = 5):
    r"""Train DGL's upper block (a linear least-squares layer) on the output of a moving lower block.

    The lower block's output is :math:`z_t = A_t x_t`, :math:`x_t \sim \mathcal N(0, I)`, with
    :math:`A_t = A^* + c_t \Delta` (:math:`\lVert\Delta\rVert_F = 1`) and :math:`c_t` the schedule
    ``DRIFTS[drift]``; each instance is an independent task (its own :math:`A^*, \Delta, w^*`).
    Targets :math:`y = w^{*T} A^* x + 0.5\,\xi`. The upper block's loss is DGL's local step of
    :func:`sim.local.local_step` (mse). Returns the replica mean of
    :math:`\lVert\nabla L^*(\theta_t)\rVert^2` per step ``(steps, n_instances)`` for the limit objective
    :math:`L^*(\theta) = \tfrac12 E(\theta^T A^* x - y)^2`, with gradient :math:`M(\theta - w^*)`,
    :math:`M = A^* A^{*T}`, and the exact floor :math:`\lVert\nabla L^*(\theta_c)\rVert^2` where
    :math:`\theta_c = (A_c A_c^T)^{-1} A_c A^{*T} w^*` minimises the objective of the schedule's limit
    :math:`A_c = A^* + c_\infty\Delta` (zero when :math:`c_\infty = 0`).
    """
    schedule, limit = DRIFTS[drift], DRIFT_LIMITS[drift]
    a = np.linalg.qr(rng.normal(size=(n_instances, dim, dim)))[0] * rng.uniform(0.7, 1.3, size=(n_instances, 1, dim))
    delta = rng.normal(size=(n_instances, dim, dim))
    delta /= np.linalg.norm(delta, axis=(1, 2), keepdims=True)
    w_star = rng.normal(size=(n_instances, dim))
    m = a @ np.swapaxes(a, 1, 2)
    a_c = a + limit * delta
    rhs = np.einsum("eij,ekj,ek->ei", a_c, a, w_star)
    theta_c = np.linalg.solve(a_c @ np.swapaxes(a_c, 1, 2), rhs[..., None])[..., 0]
    floor = np.sum(np.einsum("eij,ej->ei", m, theta_c - w_star) ** 2, axis=-1)
    rep = lambda arr: np.repeat(arr, replicas, axis=0)  # noqa: E731
    a_r, delta_r, w_r, m_r = rep(a), rep(delta), rep(w_star), rep(m)
    members = n_instances * replicas
    block = local.DenseBlock((dim, 1), "linear", output=True)
    weights = (np.zeros((members, 1, dim)),)
    etas = robbins_monro_steps(steps)
    sq_grad = np.empty((steps, n_instances))
    for t in range(steps):
        x = rng.normal(size=(members, 1, dim))
        z = np.einsum("ebj,eij->ebi", x, a_r + schedule(t) * delta_r)
        y = np.einsum("ei,ebj,eij->eb", w_r, x, a_r)[..., None] + 0.5 * rng.normal(size=(members, 1, 1))
        step = local.local_step(block, weights, None, None, z, y, loss="mse")
        weights = (weights[0] - etas[t] * step.grads[0],)
        g = np.einsum("eij,ej->ei", m_r, weights[0][:, 0, :] - w_r)
        sq_grad[t] = np.sum(g * g, axis=-1).reshape(n_instances, replicas).mean(axis=1)
    return sq_grad, floor


def _plot_dgl(result: CheckResult, ax):
    d = result.details
    for name, color in (("summable", "C0"), ("slow", "C1"), ("offset", "C3")):
        curves = d[name]
        lines = ax.loglog(np.arange(1, curves.shape[0] + 1), curves, color=color, lw=0.8, alpha=0.7)
        for j, line in enumerate(lines):
            line.set_label({"summable": "c_t = (t+1)^-2", "slow": "c_t = (t+1)^-1/2",
                            "offset": "c_t -> 1/2 (condition fails)"}[name] if j == 0 else "_nolegend_")
    for j, value in enumerate(np.atleast_1d(d["floor"])):
        ax.axhline(value, color="C3", ls="--", lw=0.6, label="its exact floor" if j == 0 else "_nolegend_")
    ax.set(xlabel="step t", ylabel="E|grad L*|^2 (running min where c_t -> 0)", title="DGL under a moving input")
    ax.legend(fontsize=7)


@claim("local.dgl-moving-input", source="Belilovsky et al. 2020 (DGL), convergence under a moving input distribution",
       statement="DGL's upper block converges (min over t <= T of E||grad L*(theta_t)||^2 -> 0) when the distance "
                 "c_t of its input distribution to the limit is summable against the Robbins-Monro steps, "
                 "sum_t eta_t c_t < inf, even where sum_t c_t = inf; when the input keeps a distance from the "
                 "limit (sum_t eta_t c_t = inf) it stalls at the level of the exact floor ||grad L*(theta_c)||^2 > 0 "
                 "(late average at least half of it)",
       conditions="each instance an independent task; upper block: linear least squares on z = (A* + c_t Delta) x "
                  "(d = 5), noise 0.5; c_t = (t+1)^-2 and (t+1)^-1/2 (condition holds), c_t = (1 + (t+1)^-1/2)/2 "
                  "(fails); eta_t = 0.1 (1 + t/10)^-3/4; expectation over 32 replicas; T = 4000. Violation = "
                  "max(ratio of the running minimum at T to its value at T/8 - 1/2 for both holding schedules, "
                  "1/2 - mean over the last T/8 steps / floor for the failing one); tolerance 0",
       instances=6, quick_instances=2, hypothesis_examples=2, plot=_plot_dgl,
       sabotage=lambda: patch.object(sys.modules[__name__], "robbins_monro_steps", lambda n: np.full(n, ETA0)))
def _check_dgl_moving_input(seed: int, n_instances: int) -> CheckResult:
    rng = _rng(seed, 4)
    steps, replicas = 4000, 32
    best, violation, floor = {}, 0.0, None
    for name in DRIFTS:
        sq, fl = _dgl_upper_block(rng, n_instances, replicas, steps, drift=name)
        best[name] = np.minimum.accumulate(sq, axis=0)
        if DRIFT_LIMITS[name] == 0.0:
            violation = max(violation, float(np.max(best[name][-1] / best[name][steps // 8 - 1] - 0.5)))
        else:
            floor = fl  # the running minimum can dip below it on the way; the late average cannot
            best[name] = sq  # the figure shows this case's E|grad|^2 itself, not its running minimum
            late = np.mean(sq[-(steps // 8):], axis=0)
            violation = max(violation, float(np.max(0.5 - late / fl)))
    if not math.isfinite(violation):
        violation = math.inf
    # every schedule draws its own tasks (A*, Delta, w*); each task's expectation runs over `replicas` copies
    return CheckResult(n_instances, max(violation, 0.0), 0.0, {**best, "floor": floor},
                       tasks=n_instances * len(DRIFTS), members=n_instances * len(DRIFTS) * replicas)


# --- delayed online gradient descent --------------------------------------------------------------------------

DELAYS = (0, 3, 15, 63)


def delayed_ogd_step(radius: float, lipschitz: float, horizon: int, delay: int) -> float:
    r"""The tuned step :math:`\eta = R / (G\sqrt{(2\tau+1)T})`."""
    return radius / (lipschitz * math.sqrt((2 * delay + 1) * horizon))


def delayed_regret_bound(radius: float, lipschitz: float, horizon: int, delay: int) -> float:
    r"""Regret bound of delayed projected OGD with the tuned step (ours, following Langford et al. 2009).

    With :math:`x_1 = 0`, :math:`x_{t+1} = \Pi_{\lVert x\rVert\le R}(x_t - \eta g_{t-\tau})`:
    :math:`R_T \le R^2/(2\eta) + \eta G^2 T(\tau + \tfrac12) + 2\tau G R`, and with
    :math:`\eta = R/(G\sqrt{(2\tau+1)T})`: :math:`R_T \le RG\sqrt{(2\tau+1)T} + 2\tau GR`.
    """
    return radius * lipschitz * (math.sqrt((2 * delay + 1) * horizon) + 2 * delay)


def delayed_ogd(gradient, x0, *, radius: float, step: float, delay: int, horizon: int):
    r"""Projected online gradient descent with gradients ``delay`` rounds stale.

    ``gradient(t, x)`` is the gradient of round ``t``'s loss at the point
    played; it is applied ``delay`` rounds later:
    :math:`x_{t+1} = \Pi(x_t - \eta g_{t-\tau})`. Vectorised over leading axes
    of ``x0``. Returns the points played ``(T, ..., d)``.
    """
    x = np.array(x0, dtype=float)
    pending, played = [], []
    for t in range(horizon):
        played.append(x)
        pending.append(gradient(t, x))
        if len(pending) > delay:
            x = x - step * pending.pop(0)
            norm = np.linalg.norm(x, axis=-1, keepdims=True)
            x = np.where(norm > radius, x * (radius / np.maximum(norm, 1e-300)), x)
    return np.stack(played)


def _regret_linear(g, x, radius):
    """Regret of linear losses <g_t, x> against the best point of the ball: sum <g, x> + R ||sum g||."""
    return np.sum(np.sum(g * x, axis=-1), axis=0) + radius * np.linalg.norm(np.sum(g, axis=0), axis=-1)


def _plot_delayed(result: CheckResult, ax):
    d = result.details
    taus = np.asarray(DELAYS) + 1.0
    for j, means in enumerate(d["blocked_regret"]):
        ax.loglog(taus, means, "o-", color="C0", lw=0.8, ms=3,
                  label="sign-blocked losses: mean regret, one line per instance" if j == 0 else "_nolegend_")
    for j, bounds in enumerate(d["blocked_bound"]):
        ax.loglog(taus, bounds, "--", color="C3", lw=0.8,
                  label="bound RG(sqrt((2 tau + 1) T) + 2 tau)" if j == 0 else "_nolegend_")
    ax.set(xlabel="tau + 1 (delay of the gradients, rounds)", ylabel="regret after T = 2048 rounds",
           title=f"delayed OGD: log-log slopes {min(d['slopes']):.2f}..{max(d['slopes']):.2f} (claim 0.4-0.6)")
    ax.legend(fontsize=7, loc="upper left")


@claim("local.delayed-ogd-regret", source="Langford, Smola & Zinkevich 2009; Joulani et al. 2013; ours",
       statement="Projected online gradient descent whose gradients arrive tau rounds late, with step "
                 "R/(G sqrt((2 tau + 1) T)), has regret at most RG(sqrt((2 tau + 1) T) + 2 tau) on G-Lipschitz "
                 "convex losses over a ball of radius R; on losses that repeat for tau + 1 rounds its regret "
                 "grows like sqrt(tau T) (log-log slope in tau + 1 between 0.4 and 0.6).",
       conditions="T = 2048 rounds, tau in {0, 3, 15, 63}; random linear and quadratic losses in d = 1..6 "
                  "dimensions; sign-blocked linear losses averaged over 256 sequences.",
       instances=8, quick_instances=3, hypothesis_examples=3, plot=_plot_delayed,
       sabotage=lambda: patch.object(sys.modules[__name__], "delayed_regret_bound",
                                 lambda radius, lipschitz, horizon, delay: radius * lipschitz * math.sqrt(horizon)))
def _check_delayed_ogd(seed: int, n_instances: int) -> CheckResult:
    horizon = 2048
    worst = -math.inf
    slopes, blocked, blocked_bound = [], [], []
    for i in range(n_instances):
        rng = _rng(seed, 5, i)
        dim, radius = int(rng.integers(1, 7)), float(rng.uniform(0.5, 3.0))
        for delay in DELAYS:
            # random linear losses with ||g|| <= G
            lip = float(rng.uniform(0.5, 2.0))
            g = rng.normal(size=(horizon, dim)) + rng.normal(size=dim)  # a drift makes the comparator matter
            g *= lip / float(np.max(np.linalg.norm(g, axis=-1)))
            step = delayed_ogd_step(radius, lip, horizon, delay)
            x = delayed_ogd(lambda t, x, g=g: g[t], np.zeros(dim), radius=radius, step=step, delay=delay,
                            horizon=horizon)
            bound = delayed_regret_bound(radius, lip, horizon, delay)
            worst = max(worst, float(_regret_linear(g, x, radius)) / bound - 1.0)
            # quadratic losses f_t(x) = 1/2 ||x - a_t||^2, ||a_t|| <= R: G = 2R on the ball
            centres = rng.normal(size=(horizon, dim)) * 0.4 * radius + rng.normal(size=dim) * 0.5 * radius
            centres *= np.minimum(1.0, radius / np.linalg.norm(centres, axis=-1, keepdims=True))
            lip_q = 2 * radius
            step = delayed_ogd_step(radius, lip_q, horizon, delay)
            x = delayed_ogd(lambda t, x, c=centres: x - c[t], np.zeros(dim), radius=radius, step=step, delay=delay,
                            horizon=horizon)
            best = np.mean(centres, axis=0)
            best *= min(1.0, radius / max(float(np.linalg.norm(best)), 1e-300))
            losses = 0.5 * np.sum((x - centres) ** 2, axis=-1)
            regret = float(np.sum(losses) - np.sum(0.5 * np.sum((best - centres) ** 2, axis=-1)))
            worst = max(worst, regret / delayed_regret_bound(radius, lip_q, horizon, delay) - 1.0)
        # sign-blocked linear losses: regret grows like sqrt((tau + 1) T)
        means = []
        for delay in DELAYS:
            sequences = 256
            blocks = -(-horizon // (delay + 1))
            signs = rng.choice([-1.0, 1.0], size=(blocks, sequences, 1))
            g = np.repeat(signs, delay + 1, axis=0)[:horizon] * 1.0
            step = delayed_ogd_step(radius, 1.0, horizon, delay)
            x = delayed_ogd(lambda t, x, g=g: g[t], np.zeros((sequences, 1)), radius=radius, step=step, delay=delay,
                            horizon=horizon)
            regret = _regret_linear(g, x, radius)
            worst = max(worst, float(np.max(regret)) / delayed_regret_bound(radius, 1.0, horizon, delay) - 1)
            means.append(float(np.mean(regret)))
        slope = float(np.polyfit(np.log(np.array(DELAYS) + 1.0), np.log(means), 1)[0])
        slopes.append(slope)
        blocked.append(means)
        blocked_bound.append([delayed_regret_bound(radius, 1.0, horizon, delay) for delay in DELAYS])
        worst = max(worst, abs(slope - 0.5) - 0.1)
    return CheckResult(n_instances, max(worst, 0.0), 0.0,
                       {"slopes": slopes, "blocked_regret": blocked, "blocked_bound": blocked_bound})


# --- the async replay buffer -----------------------------------------------------------------------------------

def _buffer_class():
    return local.ReplayBuffer


def _plot_buffer(result: CheckResult, ax):
    d = result.details
    capacity = np.asarray(d["capacity"], dtype=float)
    ax.plot([0.5, capacity.max() + 0.5], [0.5, capacity.max() + 0.5], color="grey", lw=0.8, label="capacity M")
    ax.plot(capacity - 0.08, d["buffer_max"], "o", ms=5, color="C0", label="ReplayBuffer, 200 random pushes/samples")
    ax.plot(capacity + 0.08, d["runtime_max"], "s", ms=5, color="C1", label="async DGL runtime, random ticks")
    same = max(d["async_vs_dgl"]) if d["async_vs_dgl"] else 0.0
    ax.set(xlabel="capacity M (batches)", ylabel="largest occupancy seen (batches)",
           title=f"replay buffer; M = 1 async DGL vs DGL: max weight difference {same:.2g}",
           xlim=(0.4, capacity.max() + 0.6), ylim=(0, capacity.max() + 1.5))
    ax.legend(fontsize=7, loc="upper left")


@claim("local.async-buffer", source="Belilovsky et al. 2020 (asynchronous DGL); ours",
       statement="The replay buffer between two blocks of asynchronous DGL never holds more than M batches, "
                 "under any schedule of pushes and samples; with M = 1 and the sequential round-robin schedule, "
                 "asynchronous DGL gives bit-for-bit the weights of DGL.",
       conditions="Random push/sample sequences with M in 1..5 and reuse caps in {None, 1, 2, 3}; asynchronous "
                  "DGL runs with random tick patterns; small dense networks, 2-3 blocks, 12 batches.",
       instances=12, quick_instances=4, hypothesis_examples=4, plot=_plot_buffer,
       sabotage=lambda: _leaky_buffer())
def _check_async_buffer(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    details = {"capacity": [], "buffer_max": [], "runtime_max": [], "async_vs_dgl": []}
    for i in range(n_instances):
        rng = _rng(seed, 6, i)
        capacity = int(rng.integers(1, 6))
        cap = [None, 1, 2, 3][int(rng.integers(0, 4))]
        buffer = _buffer_class()(capacity, cap)
        for _ in range(200):
            if rng.random() < 0.5:
                buffer.push(object())
            else:
                buffer.sample()
            worst = max(worst, len(buffer) - capacity)
        worst = max(worst, buffer.max_size - capacity)
        details["capacity"].append(capacity)
        details["buffer_max"].append(buffer.max_size)
        # asynchronous DGL with a random schedule: the runtime's buffers stay within M
        n_blocks = int(rng.integers(2, 4))
        data = _toy_data(rng)
        sizes = [data.n_inputs] + [int(rng.integers(3, 8)) for _ in range(n_blocks - 1)] + [data.n_outputs]
        net = local.make_block_network(sizes, 2, seed=int(rng.integers(2**31)), activation="tanh")
        plan = parallel.BatchPlan(data, 8, 12, seed=int(rng.integers(2**31)))
        speeds = [int(v) for v in rng.integers(1, 4, size=n_blocks)]
        res = parallel.train_blocks(net, plan, rule="async-dgl", lr=0.1, workers=1, buffer_size=capacity,
                                    reuse_cap=cap, speeds=speeds)
        worst = max(worst, max(res.buffer_max) - capacity)
        details["runtime_max"].append(max(res.buffer_max))
        # M = 1, round robin: exactly DGL
        one = parallel.train_blocks(net, plan, rule="async-dgl", lr=0.1, workers=1, buffer_size=1)
        dgl = parallel.train_blocks(net, plan, rule="dgl", lr=0.1, workers=1)
        details["async_vs_dgl"].append(max(_max_diff(pa, pb) for pa, pb in zip(one.network.params, dgl.network.params)))
        worst = max(worst, details["async_vs_dgl"][-1])
    return CheckResult(n_instances, float(worst), 0.0, details)


def _toy_data(rng) -> Dataset:
    n_in, n_out = int(rng.integers(3, 7)), int(rng.integers(2, 4))
    x = rng.normal(size=(64, n_in))
    labels = np.argmax(x @ rng.normal(size=(n_in, n_out)), axis=1)
    return Dataset(x, np.eye(n_out)[labels], "classification")


class _LeakyBuffer(local.ReplayBuffer):
    """Sabotage: evicts one entry too late (holds up to M + 1) and samples the oldest entry first."""

    def push(self, item) -> None:
        with self._cond:
            self._entries.append([item, 0, self._order])
            self._order += 1
            self.pushed += 1
            while len(self._entries) > self.capacity + 1:
                self._entries.pop(0)
            self.max_size = max(self.max_size, len(self._entries))
            self._cond.notify_all()

    def sample(self):
        with self._cond:
            if not self._entries:
                return None
            entry = self._entries[0]
            entry[1] += 1
            if self.reuse_cap is not None and entry[1] >= self.reuse_cap:
                self._entries.pop(0)
            return entry[0]


@contextlib.contextmanager
def _leaky_buffer():
    with patch.object(local, "ReplayBuffer", _LeakyBuffer), patch.object(parallel, "ReplayBuffer", _LeakyBuffer):
        yield
