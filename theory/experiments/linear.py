r"""Experiments ``saxe-modes``, ``fa-conservation`` and ``scalar-chain``: linear-network theory beside simulation.

``saxe-modes``
    Mode strengths :math:`u_i(t)` of a two-layer linear network: BP from a small
    balanced init against Saxe et al.'s closed form, and FA from zero (feedback
    aligned with the output modes) against our FA analogue
    (:func:`theory.closed_forms.fa_mode_strength`), with the half-times of both.
``fa-conservation``
    Drift of FA's :math:`Q = W_1W_1^T - BW_2 - W_2^TB^T` and of BP's
    :math:`W_1W_1^T - W_2^TW_2` at a fixed time against the step size, log-log:
    conserved by the flow, so the drift of gradient descent is :math:`O(\eta)`
    (slope 1).
``scalar-chain``
    Phase portrait of the scalar FA chain :math:`x \to a_1x \to a_2a_1x` with
    feedback :math:`c`: where each start ends (aligned :math:`ca_2 > 0` or
    anti-aligned), simulated against the basins predicted by the conserved
    :math:`a_1^2 - 2ca_2` (:func:`theory.closed_forms.scalar_chain_limit`).
"""

from __future__ import annotations

import math

import numpy as np

from sim.divergence import divergence_message
from sim.backend import check_memory, to_device, to_host
from sim.data import linear_teacher
from sim.data.tasks import Dataset
from sim.experiments import Context, ExperimentResult, every_member_diverged, experiment, report_all_diverged
from sim.lazy import lazy_callable
from sim.network import network_from_weights
from sim.plots import legend_outside, mean_and_spread, new_figure, note_bands
from sim.settings import integer, list_of, real, setting_error
from sim.train import train
from theory import closed_forms as cf

NullFormatter = lazy_callable("matplotlib.ticker", "NullFormatter")  # imported at the first call (sim.lazy)

_POSITIVE_INT, _POSITIVE = integer(1), real(0, lo_open=True)


def _saxe_check(settings: dict) -> None:
    s = settings["singular_values"]
    rank = min(settings["n_inputs"], settings["hidden"], settings["n_outputs"])
    if len(s) > rank:
        raise setting_error("singular_values", s, f"has {len(s)} values, more than min(n_inputs, hidden, "
                            f"n_outputs) = {rank}", f"1 to {rank} positive numbers")
    if settings["u0"] >= min(s) / 2:
        raise setting_error("u0", settings["u0"], f"is not below half the smallest singular value ({min(s):g}); "
                            "the half-time ln(s/u0 - 1)/(2s) needs u0 < s/2", f"a number in (0, {min(s) / 2:g})")


def _enough_steps(lrs_key: str, time_key: str, minimum: int = 1):
    """A check: every step size takes at least ``minimum`` steps to reach the setting ``time_key``."""
    def check(settings: dict) -> None:
        lrs = settings[lrs_key] if isinstance(settings[lrs_key], list) else [settings[lrs_key]]
        time = settings[time_key]
        for lr in lrs:
            if round(time / lr) < minimum:
                raise setting_error(lrs_key, settings[lrs_key], f"step size {lr:g} takes fewer than {minimum} "
                                    f"steps to reach {time_key} = {time:g}", f"step sizes up to {time_key} / "
                                    f"{minimum} = {time / minimum:g}")

    return check


def _frames(rng: np.random.Generator, n: int, k: int, members: int) -> np.ndarray:
    out = np.empty((members, n, k))
    for m in range(members):
        q, r = np.linalg.qr(rng.normal(size=(n, k)))
        out[m] = q * np.sign(np.diag(r))
    return out


def _train_segments(weights, data: Dataset, rule: str, lr: float, checkpoints, ctx: Context, feedback=None):
    """Train an ensemble in segments; host weights ``[W1 (T, E, ...), W2 (T, E, ...)]`` at the checkpoints.

    Also returns the divergence messages and whether every member diverged.
    """
    net = network_from_weights(weights)
    states = [[to_host(w) for w in net.weights]]
    done, diverged, gone = 0, [], set()
    for step in checkpoints[1:]:
        n = int(step - done)
        res = train(net, data, rule=rule, steps=n, lr=lr, feedback=feedback, record_every=n, progress=False)
        diverged += [f"{rule} member {d.member}: {d.reason} at step {done + d.step}" for d in res.diverged]
        gone |= {d.member for d in res.diverged}
        net, done = res.network, step
        states.append([to_host(w) for w in net.weights])
    return [np.stack([s[layer] for s in states]) for layer in range(2)], diverged, len(gone) == net.n_members


def _mode_strengths(w1, w2, u, v) -> np.ndarray:
    """``diag(U^T W2 W1 V)`` for every checkpoint and member: ``(T, E, r)``."""
    return np.einsum("ir,teih,tehj,jr->ter", u, w2, w1, v)


@experiment(
    "saxe-modes",
    title="Saxe modes under BP and their FA analogue: closed forms vs simulation",
    description="Two-layer linear network, whitened inputs, teacher U diag(s) V^T. BP starts from a small balanced "
                "init in the teacher's modes (strength u0 each) and follows u(t) = s e^{2st}/(e^{2st}-1+s/u0); FA "
                "starts from zero with feedback B = R diag(b) U^T and follows a' = b(s-ac), c' = a(s-ac), "
                "u = a^3/(2b) (ours). Members differ in the hidden frame R.",
    defaults={"singular_values": [3.0, 2.0, 1.0, 0.5], "n_inputs": 6, "hidden": 6, "n_outputs": 5, "u0": 1e-3,
              "feedback_strength": 1.0, "lr": 0.01, "horizon": 12.0, "n_points": 80},
    schema={"singular_values": list_of(_POSITIVE), "n_inputs": _POSITIVE_INT, "hidden": _POSITIVE_INT,
            "n_outputs": _POSITIVE_INT, "u0": _POSITIVE, "feedback_strength": _POSITIVE, "lr": _POSITIVE,
            "horizon": _POSITIVE, "n_points": _POSITIVE_INT},
    checks=(_saxe_check, _enough_steps("lr", "horizon")),
    quick={"lr": 0.02, "horizon": 8.0, "n_points": 40},
    default_seeds=3,
)
def saxe_modes(settings: dict, ctx: Context) -> ExperimentResult:
    s = np.asarray(settings["singular_values"], dtype=float)
    r, n_members = s.size, ctx.n_seeds
    # both rules keep both weights of every member at every checkpoint, plus the trainer's working copies
    check_memory(8 * n_members * settings["hidden"] * (settings["n_inputs"] + settings["n_outputs"])
                 * (2 * (settings["n_points"] + 1) + 8), f"saxe-modes with {n_members} members")
    lr, u0, b = float(settings["lr"]), float(settings["u0"]), float(settings["feedback_strength"])
    data = linear_teacher(settings["n_inputs"], settings["n_outputs"], s, 2 * settings["n_inputs"], seed=ctx.seed)
    u, v = data.info["U"], data.info["V"]
    frames = _frames(np.random.default_rng(np.random.SeedSequence([ctx.seed, 7])), settings["hidden"], r, n_members)
    every = max(1, int(round(settings["horizon"] / settings["n_points"] / lr)))
    checkpoints = [j * every for j in range(settings["n_points"] + 1)]
    times = np.asarray(checkpoints) * lr
    a0 = math.sqrt(u0)
    bp_init = [a0 * frames @ v.T, a0 * u @ np.swapaxes(frames, 1, 2)]
    fa_init = [np.zeros_like(bp_init[0]), np.zeros_like(bp_init[1])]
    feedback = [to_device(b * frames @ u.T, ctx.xp, ctx.dtype)]
    results, diverged, every = {}, [], True
    for name, init, fb in (("bp", bp_init, None), ("fa", fa_init, feedback)):
        weights = [to_device(w, ctx.xp, ctx.dtype) for w in init]
        (w1, w2), bad, all_bad = _train_segments(weights, data, name, lr, checkpoints, ctx, fb)
        every = every and all_bad
        results[name] = _mode_strengths(w1, w2, u, v)
        diverged += bad
    theory = {"bp": cf.saxe_mode_strength(times[:, None], s[None, :], u0),
              "fa": cf.fa_mode_strength(times[:, None], s[None, :], b)}
    fine = np.linspace(0, times[-1], 400)
    fig, axes = new_figure(3)
    metrics, arrays = {"singular_values": s.tolist(), "lr": lr}, {"times": times}
    for ax, name, title in ((axes[0], "bp", "BP from small balanced init"), (axes[1], "fa", "FA from zero")):
        curve = (cf.saxe_mode_strength(fine[:, None], s[None, :], u0) if name == "bp"
                 else cf.fa_mode_strength(fine[:, None], s[None, :], b))
        for j in range(r):
            (line,) = ax.plot(fine, curve[:, j], lw=1.2, label=f"theory s={s[j]:g}")
            mean_and_spread(ax, times, results[name][:, :, j], label="_sim", color=line.get_color(), linestyle=":")
            ax.plot(times[::4], results[name][::4, :, j].mean(axis=1), "o", ms=3, color=line.get_color())
        ax.plot([], [], "o:", ms=3, color="k", label="simulation (mean, band)")
        ax.set(xlabel="t = lr * steps", ylabel="mode strength u", title=title)
        legend_outside(ax, fontsize=7)
        error = np.abs(results[name] - theory[name][:, None, :])
        half = [float(np.interp(0.5, results[name][:, :, j].mean(axis=1) / s[j], times)) for j in range(r)]
        closed_half = (cf.saxe_half_time(s, u0) if name == "bp" else cf.fa_mode_half_time(s, b)).tolist()
        metrics[name] = {"max_abs_error": float(np.max(error)),
                         "max_relative_error": float(np.max(error / s)),
                         "half_time_simulated": half, "half_time_theory": closed_half}
        arrays[f"{name}_strength"] = results[name]
        arrays[f"{name}_theory"] = theory[name]
    grid = np.geomspace(s.min() / 2, s.max() * 2, 100)
    axes[2].loglog(grid, cf.saxe_half_time(grid, u0), label=f"BP: ln(s/u0-1)/(2s), u0={u0:g}")
    axes[2].loglog(grid, cf.fa_mode_half_time(grid, b), label=f"FA: ~ (bs)^(-2/3), b={b:g}")
    for name, marker in (("bp", "o"), ("fa", "s")):
        axes[2].loglog(s, metrics[name]["half_time_simulated"], marker, color="k", mfc="none", ms=6,
                       label=f"{name.upper()} simulated")
    axes[2].xaxis.set_minor_formatter(NullFormatter())
    axes[2].set(xlabel="singular value s", ylabel="half-time", title="larger modes are learnt first")
    axes[2].legend(fontsize=7)
    note_bands(fig, n_members)
    metrics["bp_from_zero_moves"] = False  # BP's update is exactly zero at W = 0 (see claim fa.moves_from_zero)
    summary = (f"max |u_sim - u_theory| / s: BP {metrics['bp']['max_relative_error']:.3g}, "
               f"FA {metrics['fa']['max_relative_error']:.3g} (lr {lr}); half-times BP "
               f"{', '.join(f'{h:.2f}' for h in metrics['bp']['half_time_simulated'])}, FA "
               f"{', '.join(f'{h:.2f}' for h in metrics['fa']['half_time_simulated'])}")
    return report_all_diverged(ExperimentResult(metrics, arrays, {"saxe_modes": fig}, summary, diverged), every)


def _correlated_task(seed: int, n_in: int, n_out: int, n_samples: int) -> Dataset:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    mix = np.eye(n_in) + 0.6 * rng.normal(size=(n_in, n_in)) / np.sqrt(n_in)
    x = rng.normal(size=(n_samples, n_in)) @ mix
    x /= np.sqrt(np.linalg.norm(x.T @ x / n_samples, 2))
    teacher = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
    return Dataset(x, x @ teacher.T + 0.3 * rng.normal(size=(n_samples, n_out)), "regression")


def _conserved(w1, w2, feedback=None):
    """FA's Q (with ``feedback``) or BP's balance (without), per member."""
    gram = w1 @ np.swapaxes(w1, -1, -2)
    if feedback is None:
        return gram - np.swapaxes(w2, -1, -2) @ w2
    bw = feedback @ w2
    return gram - bw - np.swapaxes(bw, -1, -2)


@experiment(
    "fa-conservation",
    title="Conservation laws of FA and BP: drift of gradient descent vs step size",
    description="Two-layer linear network on non-white inputs, random init and random Gaussian feedback. The flow "
                "conserves FA's Q = W1 W1^T - B W2 - W2^T B^T and BP's W1 W1^T - W2^T W2; gradient descent with step "
                "lr drifts by exactly lr^2 sum dW dW^T, i.e. O(lr) at a fixed time: slope 1 on log-log axes.",
    defaults={"n_inputs": 8, "hidden": 6, "n_outputs": 4, "n_samples": 64, "init_scale": 0.8, "time": 4.0,
              "lrs": [0.04, 0.02, 0.01, 0.005, 0.0025]},
    schema={"n_inputs": _POSITIVE_INT, "hidden": _POSITIVE_INT, "n_outputs": _POSITIVE_INT,
            "n_samples": _POSITIVE_INT, "init_scale": _POSITIVE, "time": _POSITIVE,
            "lrs": list_of(_POSITIVE, min_len=2, max_len=32, min_distinct=2)},  # a slope fit: 2 different lrs
    checks=_enough_steps("lrs", "time"),
    quick={"time": 2.0, "lrs": [0.04, 0.02, 0.01, 0.005]},
    default_seeds=4,
)
def fa_conservation(settings: dict, ctx: Context) -> ExperimentResult:
    n_in, hidden, n_out = settings["n_inputs"], settings["hidden"], settings["n_outputs"]
    data = _correlated_task(ctx.seed, n_in, n_out, settings["n_samples"])
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 13]))
    e, scale = ctx.n_seeds, settings["init_scale"]
    # weights, feedback, the trainer's copies and updates, and activations on the whole training set
    check_memory(8 * e * (8 * hidden * (n_in + 2 * n_out) + 4 * settings["n_samples"] * (hidden + n_out)),
                 f"fa-conservation with {e} members")
    init = [scale * rng.normal(size=(e, hidden, n_in)) / np.sqrt(n_in),
            scale * rng.normal(size=(e, n_out, hidden)) / np.sqrt(hidden)]
    feedback = rng.normal(size=(e, hidden, n_out)) / np.sqrt(n_out)
    lrs = np.asarray(sorted(settings["lrs"], reverse=True), dtype=float)
    drift = {"fa": np.empty((lrs.size, e)), "bp": np.empty((lrs.size, e))}
    diverged, runs = [], []
    for name, fb in (("fa", feedback), ("bp", None)):
        start = _conserved(*init, fb)
        for k, lr in enumerate(lrs):
            steps = int(round(settings["time"] / lr))
            net = network_from_weights([to_device(w, ctx.xp, ctx.dtype) for w in init])
            res = train(net, data, rule=name, steps=steps, lr=float(lr), record_every=steps, progress=False,
                        feedback=None if fb is None else [to_device(fb, ctx.xp, ctx.dtype)])
            diverged += [divergence_message(f"{name} lr={lr}", d) for d in res.diverged]
            runs.append(res)
            w1, w2 = (to_host(w) for w in res.network.weights)
            change = _conserved(w1, w2, fb) - start
            drift[name][k] = np.linalg.norm(change, axis=(1, 2)) / np.linalg.norm(start, axis=(1, 2))
    fig, (ax,) = new_figure(1, width=5.0)
    metrics, arrays = {"lrs": lrs.tolist(), "time": settings["time"]}, {"lrs": lrs}
    for name, label in (("fa", "FA: Q = W1W1^T - BW2 - W2^TB^T"), ("bp", "BP: W1W1^T - W2^TW2")):
        logs = np.log(drift[name])
        slopes = [float(np.polyfit(np.log(lrs), logs[:, m], 1)[0]) for m in range(e)]
        mean_and_spread(ax, lrs, drift[name], label=f"{label} (slope {np.mean(slopes):.2f})", log=True)
        ax.plot(lrs, drift[name].mean(axis=1), "o", ms=3, color=ax.lines[-1].get_color())
        metrics[name] = {"slope_mean": float(np.mean(slopes)), "slope_min": float(np.min(slopes)),
                         "slope_max": float(np.max(slopes)), "relative_drift": drift[name].mean(axis=1).tolist()}
        arrays[f"{name}_relative_drift"] = drift[name]
    reference = drift["fa"].mean(axis=1)[-1] * lrs / lrs[-1]
    ax.plot(lrs, reference, color="grey", lw=0.8, ls="--", label="slope 1")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="step size lr", ylabel=f"|drift at t={settings['time']:g}| / |initial value|",
           title="conserved by the flow, O(lr) under GD")
    ax.legend(fontsize=7)
    note_bands(fig, e, clipped=False)
    summary = (f"log-log slope of the drift vs lr: FA {metrics['fa']['slope_mean']:.3f}, "
               f"BP {metrics['bp']['slope_mean']:.3f} (1 = O(lr))")
    return report_all_diverged(ExperimentResult(metrics, arrays, {"fa_conservation": fig}, summary, diverged),
                               every_member_diverged(runs))


@experiment(
    "scalar-chain",
    title="Scalar FA chain: phase portrait, aligned and anti-aligned basins",
    description="x -> a1 x -> a2 a1 x with feedback c, E[x^2] = beta, E[xy] = alpha. FA conserves a1^2 - 2 c a2; "
                "every start converges to a1 a2 = alpha/beta, aligned (c a2 > 0) or, from large starts beyond the "
                "middle equilibrium of its level set, anti-aligned (c a2 < 0). A grid of starts is trained at once "
                "(one ensemble member each) and compared with the predicted basins.",
    defaults={"alpha": 1.0, "beta": 1.0, "c": 1.0, "extent": 4.0, "grid": 41, "lr": 0.005, "time": 40.0},
    schema={"alpha": real(nonzero=True), "beta": _POSITIVE, "c": real(nonzero=True), "extent": _POSITIVE,
            "grid": integer(2, 401), "lr": _POSITIVE, "time": _POSITIVE},
    checks=_enough_steps("lr", "time", 40),  # 40 checkpoints
    quick={"grid": 25, "lr": 0.01, "time": 30.0},
    default_seeds=4,
)
def scalar_chain(settings: dict, ctx: Context) -> ExperimentResult:
    alpha, beta, c = float(settings["alpha"]), float(settings["beta"]), float(settings["c"])
    extent, n = float(settings["extent"]), int(settings["grid"])
    axis = np.linspace(-extent, extent, n)
    a1, a2 = (g.ravel() for g in np.meshgrid(axis, axis))
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 17]))
    extra = []  # random starts whose trajectories are drawn, alternating predicted anti-aligned and aligned
    while len(extra) < ctx.n_seeds:
        start = rng.uniform(-extent, extent, size=2)
        end = cf.scalar_chain_limit(start[0], start[1], c, alpha, beta)[1]
        if (c * float(end) < 0) == (len(extra) % 2 == 0):
            extra.append(start)
    extra = np.array(extra)
    a1, a2 = np.concatenate([a1, extra[:, 0]]), np.concatenate([a2, extra[:, 1]])
    members = a1.size
    root = math.sqrt(beta)
    data = Dataset(np.array([[root], [-root]]), np.array([[alpha / root], [-alpha / root]]), "regression")
    lr, steps = float(settings["lr"]), int(round(settings["time"] / settings["lr"]))
    weights = [to_device(a1.reshape(members, 1, 1), ctx.xp, ctx.dtype),
               to_device(a2.reshape(members, 1, 1), ctx.xp, ctx.dtype)]
    feedback = [to_device(np.full((members, 1, 1), c), ctx.xp, ctx.dtype)]
    checkpoints = [0, *np.linspace(steps / 40, steps, 40).astype(int)]
    (w1, w2), diverged, every = _train_segments(weights, data, "fa", lr, checkpoints, ctx, feedback)
    end1, end2 = w1[-1].reshape(members), w2[-1].reshape(members)
    limit1, limit2 = cf.scalar_chain_limit(a1, a2, c, alpha, beta)
    predicted_anti = c * limit2 < 0
    simulated_anti = c * end2 < 0
    optimum = alpha / beta
    converged = np.abs(end1 * end2 - optimum) <= 1e-3 * abs(optimum)
    # starts within 5% of the unstable equilibrium of their level set are too close to call
    clear = np.ones(members, dtype=bool)
    for m in range(members):
        kappa = a1[m] ** 2 - 2 * c * a2[m]
        roots = cf.scalar_chain_equilibria(kappa, c, alpha, beta)
        if roots.size == 3 and abs(a1[m] - roots[1]) < 0.05 * (1 + abs(roots[1])):
            clear[m] = False
    grid_part = slice(0, n * n)
    fig, (ax_phase, ax_basin) = new_figure(2, width=4.6, height=4.2)
    fine = np.linspace(-extent, extent, 30)
    g1, g2 = np.meshgrid(fine, fine)
    residual = alpha - beta * g1 * g2
    stream = ax_phase.streamplot(g1, g2, c * residual, g1 * residual, density=1.1, color="0.6", linewidth=0.6)
    stream.lines.set_label("FA flow (streamlines)")
    for m in range(n * n, members):
        colour = "tab:red" if simulated_anti[m] else "tab:blue"
        ax_phase.plot(w1[:, m, 0, 0], w2[:, m, 0, 0], color=colour, lw=1.2,
                      label="simulated run, ends anti-aligned" if simulated_anti[m] else "simulated run, ends aligned")
        ax_phase.plot(a1[m], a2[m], "o", color=colour, ms=3)
    curve = np.linspace(-extent, extent, 801)
    with np.errstate(divide="ignore"):
        hyperbola = np.where(np.abs(curve) > 1e-9, optimum / curve, np.nan)
    for ax in (ax_phase, ax_basin):
        ax.plot(curve, hyperbola, color="k", lw=1.0, label="equilibria a1 a2 = alpha/beta")
        ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="a1", ylabel="a2")
    ax_phase.set_title(f"FA flow, c={c:g}, alpha/beta={optimum:g}", fontsize=10)
    image = np.where(simulated_anti[grid_part], 1.0, 0.0).reshape(n, n)
    ax_basin.imshow(image, origin="lower", extent=(-extent, extent, -extent, extent), cmap="coolwarm",
                    vmin=-0.5, vmax=1.5, alpha=0.6, aspect="auto")
    # predicted boundary of the anti-aligned basin: the fold level set kappa = 3 (|c alpha|/beta)^{2/3} beyond the
    # fold point, then the repelling part of the hyperbola of equilibria between the fold point and a1 = 0
    fold_kappa = 3.0 * (abs(c * alpha) / beta) ** (2.0 / 3.0)
    fold = -math.copysign((abs(c * alpha) / beta) ** (1.0 / 3.0), c * alpha)
    outward = fold + math.copysign(1.0, fold) * np.linspace(0.0, 2 * extent, 400)
    inner = np.linspace(fold, 0.0, 400)[:-1]
    for ax in (ax_phase, ax_basin):
        ax.plot(outward, (outward ** 2 - fold_kappa) / (2 * c), "k--", lw=1.0, label="predicted basin boundary")
        ax.plot(inner, optimum / inner, "k--", lw=1.0)
    ax_basin.set_title("simulated basins of the starts\n(red: ends anti-aligned, blue: aligned)", fontsize=9)
    handles, labels = ax_phase.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncols=3, fontsize="small")
    agreement = float(np.mean((predicted_anti == simulated_anti)[clear]))
    metrics = {"alpha": alpha, "beta": beta, "c": c, "members": int(members),
               "fraction_converged": float(np.mean(converged)),
               "fraction_anti_aligned": float(np.mean(simulated_anti[grid_part])),
               "fraction_anti_aligned_predicted": float(np.mean(predicted_anti[grid_part])),
               "basin_agreement": agreement,
               "max_product_error": float(np.max(np.abs(end1 * end2 - optimum)))}
    arrays = {"start": np.stack([a1, a2], axis=1), "end": np.stack([end1, end2], axis=1),
              "predicted_limit": np.stack([limit1, limit2], axis=1), "simulated_anti": simulated_anti,
              "predicted_anti": predicted_anti}
    summary = (f"{metrics['fraction_converged']:.3f} of starts reach a1 a2 = alpha/beta; "
               f"{metrics['fraction_anti_aligned']:.3f} of the grid ends anti-aligned "
               f"(predicted {metrics['fraction_anti_aligned_predicted']:.3f}); basin agreement {agreement:.3f}")
    return report_all_diverged(ExperimentResult(metrics, arrays, {"scalar_chain": fig}, summary, diverged), every)
