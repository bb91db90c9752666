r"""Experiment ``sg-dynamics``: the joint flow of a two-layer linear net and its SG module, theory beside simulation.

The gradient-flow system of :mod:`theory.synthetic_dynamics` (derived with
sympy) is integrated with ``solve_ivp`` and compared with the engine's discrete
run (rules ``sg`` and ``cdni`` on whitened data) at several step sizes: the gap
shrinks linearly in the step (Euler is first order). The scalar system's fixed
points are listed with the eigenvalues of the Jacobian, and a phase portrait
shows DNI stalling on its spurious set :math:`w_1 = 0` (its sign of :math:`w_1`
never changes) where cDNI converges.
"""

from __future__ import annotations

import numpy as np

from sim.experiments import Context, ExperimentResult, experiment
from sim.plots import new_figure
from sim.settings import integer, list_of, matrix, real, setting_error

from .. import synthetic_dynamics as sd
from ..synthetic_dynamics import sp  # sympy, imported at the first use (sim.lazy)

#: The flow is derived symbolically (sympy): layers of at most this many units.
MAX_UNITS = 4


def _teacher_shape(settings: dict) -> None:
    n_in, _, n_out = settings["sizes"]
    rows, cols = len(settings["teacher"]), len(settings["teacher"][0])
    if (rows, cols) != (n_out, n_in):
        raise setting_error("teacher", settings["teacher"], f"is {rows} x {cols}, not n_out x n_in = {n_out} x {n_in} "
                            "(sizes = [n_in, n_hidden, n_out])", f"a {n_out} x {n_in} matrix of finite numbers")
    for key, horizon in (("lrs", "t_max"),):
        for lr in settings[key]:
            if lr > settings[horizon]:
                raise setting_error(key, settings[key], f"step size {lr:g} is larger than {horizon} = "
                                    f"{settings[horizon]:g}", f"step sizes up to {horizon}")


LABELS = {True: "cDNI", False: "SG (DNI)"}
NAMES = {True: "cdni", False: "sg"}  # the engine's rule names, the keys of the metrics
COLORS = {True: "C2", False: "C1"}


def _family_examples(flow: sd.SGFlow, teacher: float, beta: float) -> list[dict]:
    """Each fixed-point family of the scalar flow at one or two example points, with eigenvalues and verdict."""
    s = flow.teacher[0, 0]
    free_values = {"w1": 0.8, "w2": -0.4, "a": 0.5, "b": 0.0, "c": 0.0}
    out = []
    for family in sd.fixed_points(flow):
        examples = [dict(free_values)]
        named = {str(k) for k in family}
        if "a" not in named and "w1" in named and family[sp.Symbol("w1", real=True)] == 0:
            examples.append({**free_values, "a": -0.5})  # the spurious set of DNI: both signs of a
        for values in examples:
            subs = {sym: values[str(sym)] for sym in flow.state if sym not in family}
            subs[s] = teacher
            point = {sym: float(family[sym].subs(subs)) if sym in family else float(subs[sym]) for sym in flow.state}
            eig = sd.stability(flow, point, teacher=[[teacher]], beta=beta)
            out.append({"family": str(family), "point": {str(k): v for k, v in point.items()},
                        "eigenvalues": [complex(round(e.real, 10), round(e.imag, 10)).__repr__() for e in eig],
                        "verdict": sd.classify(eig)})
    return out


@experiment(
    "sg-dynamics",
    title="Synthetic gradients as a dynamical system: sympy flow, ODE and simulation",
    description="The joint gradient flow of a two-layer linear network and a linear synthetic-gradient module on "
                "its hidden layer (DNI and cDNI), derived with sympy and integrated with scipy, against the engine's "
                "discrete run at several step sizes (the gap is first order in the step); the scalar system's fixed "
                "points with their Jacobian eigenvalues; and a phase portrait where DNI stalls on w1 = 0 while cDNI "
                "converges.",
    defaults={"sizes": [2, 2, 2], "teacher": [[2.0, 0.3], [0.1, 1.0]], "beta": 2.0, "t_max": 10.0,
              "init_scale": 0.3, "lrs": [0.04, 0.02, 0.01], "n_points": 40, "scalar_teacher": 1.0,
              "scalar_betas": [0.5, 4.0], "scalar_t_max": 60.0},
    schema={"sizes": list_of(integer(1, MAX_UNITS), min_len=3, max_len=3), "teacher": matrix(real()),
            "beta": real(0, lo_open=True), "t_max": real(0, lo_open=True), "init_scale": real(0),
            "lrs": list_of(real(0, lo_open=True), min_len=2, max_len=16, min_distinct=2),  # a slope fit
            "n_points": integer(1), "scalar_teacher": real(nonzero=True),
            "scalar_betas": list_of(real(0, lo_open=True), max_len=16), "scalar_t_max": real(0, lo_open=True)},
    checks=_teacher_shape,
    quick={"t_max": 6.0, "lrs": [0.04, 0.02], "n_points": 20, "scalar_t_max": 40.0},
    default_seeds=3,
)
def sg_dynamics(settings: dict, ctx: Context) -> ExperimentResult:
    n_in, n_hidden, n_out = (int(v) for v in settings["sizes"])
    teacher = np.asarray(settings["teacher"], dtype=float)
    if teacher.shape != (n_out, n_in):
        raise ValueError(f"teacher must have shape (n_out, n_in) = {(n_out, n_in)}, got {teacher.shape}")
    beta, t_max, lrs = float(settings["beta"]), float(settings["t_max"]), [float(v) for v in settings["lrs"]]
    fig, axes = new_figure(4)
    metrics, arrays = {}, {}
    for label in (True, False):
        flow = sd.derive_flow(n_in, n_hidden, n_out, label=label)
        name = NAMES[label]
        errors = np.zeros((len(lrs), ctx.n_seeds))
        finals = []
        for m in range(ctx.n_seeds):
            rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, m]))
            z0 = sd.pack(flow, W1=settings["init_scale"] * rng.normal(size=(n_hidden, n_in)),
                         W2=settings["init_scale"] * rng.normal(size=(n_out, n_hidden)))
            t_eval = np.linspace(0.0, t_max, settings["n_points"] + 1)
            ode = sd.integrate(flow, z0, t_max, teacher=teacher, beta=beta, t_eval=t_eval)
            finals.append(ode.loss[-1])
            axes[0].plot(ode.t, ode.loss, color=COLORS[label], lw=1, label=f"{LABELS[label]} ODE" if m == 0 else None)
            for k, lr in enumerate(lrs):
                steps = int(round(t_max / lr))
                every = max(1, int(round(t_max / settings["n_points"] / lr)))
                sim = sd.simulate(flow, z0, teacher=teacher, lr=lr, beta=beta, steps=steps, record_every=every)
                ref = sd.integrate(flow, z0, t_max, teacher=teacher, beta=beta, t_eval=sim.t)
                errors[k, m] = float(np.max(np.abs(sim.states - ref.states)))
                if k == len(lrs) - 1:
                    axes[0].plot(sim.t, sim.loss, "o", ms=2.5, color=COLORS[label],
                                 label=f"{LABELS[label]} engine (lr {lr})" if m == 0 else None)
            arrays[f"{name}_ode_loss_{m}"] = ode.loss
        arrays[f"{name}_ode_t"] = t_eval
        arrays[f"{name}_max_state_error"] = errors
        mean_err = errors.mean(axis=1)
        slope = float(np.polyfit(np.log(lrs), np.log(mean_err), 1)[0]) if len(lrs) > 1 else float("nan")
        axes[1].loglog(lrs, mean_err, "o-", color=COLORS[label], label=f"{LABELS[label]} (slope {slope:.2f})")
        metrics[name] = {"max_state_error_per_lr": dict(zip(map(str, lrs), mean_err.tolist())),
                         "error_slope_in_lr": slope, "ode_final_loss": [float(v) for v in finals],
                         "ode_initial_loss": float(ode.loss[0])}
    ref_lrs = np.asarray(lrs)
    axes[1].loglog(ref_lrs, metrics["cdni"]["max_state_error_per_lr"][str(lrs[0])] * ref_lrs / ref_lrs[0], "k:",
                   lw=0.8, label="slope 1")
    axes[0].set(xlabel="t = lr * step", ylabel="loss", yscale="log",
                title=f"{n_in}-{n_hidden}-{n_out} net, beta = {beta}")
    axes[1].set(xlabel="step size lr", ylabel="max |engine - ODE| over the run", title="Euler gap is first order")
    # the scalar system: fixed points and a phase portrait
    s = float(settings["scalar_teacher"])
    starts = [(0.3, -1.0), (0.6, -0.8), (-0.4, 1.2), (0.2, 0.2), (1.5, -0.3)]
    for ax, beta_s in zip(axes[2:], settings["scalar_betas"][:2]):
        grid = np.linspace(-2, 2, 400)
        with np.errstate(divide="ignore"):
            hyper = s / grid
        ax.plot(grid, np.where(np.abs(hyper) < 3, hyper, np.nan), color="grey", lw=1, label="w1 w2 = s")
        ax.axvline(0, color="k", lw=0.6)
        for label in (False, True):
            flow = sd.derive_flow(label=label)
            for j, (w1, w2) in enumerate(starts):
                ode = sd.integrate(flow, sd.pack(flow, W1=[[w1]], W2=[[w2]]), settings["scalar_t_max"],
                                   teacher=[[s]], beta=beta_s, t_eval=np.linspace(0, settings["scalar_t_max"], 400))
                ax.plot(ode.states[:, 0], ode.states[:, 1], color=COLORS[label], lw=1,
                        ls="-" if not label else "--", label=LABELS[label] if j == 0 else None)
                ax.plot(ode.states[-1, 0], ode.states[-1, 1], "o", ms=3, color=COLORS[label])
                arrays[f"scalar_{NAMES[label]}_beta{beta_s}_start{j}"] = ode.states
        ax.set(xlabel="w1", ylabel="w2", xlim=(-2, 2), ylim=(-2, 2), title=f"scalar system, beta = {beta_s}")
        ax.legend(fontsize="x-small", loc="lower left")
    for ax in axes[:2]:
        ax.legend(fontsize="x-small")
    metrics["scalar_fixed_points"] = {NAMES[label]: _family_examples(sd.derive_flow(label=label), s,
                                                                             float(settings["scalar_betas"][-1]))
                                      for label in (False, True)}
    stalls = {}
    for beta_s in settings["scalar_betas"]:
        flow = sd.derive_flow(label=False)
        end = sd.integrate(flow, sd.pack(flow, W1=[[0.3]], W2=[[-1.0]]), settings["scalar_t_max"], teacher=[[s]],
                           beta=beta_s, t_eval=[0.0, settings["scalar_t_max"]])
        stalls[str(beta_s)] = {"final_w1": float(end.states[-1, 0]), "final_loss": float(end.loss[-1])}
    metrics["scalar_sg_from_wrong_sign"] = stalls
    summary = (f"engine vs ODE gap slope in lr: cDNI {metrics['cdni']['error_slope_in_lr']:.2f}, SG (DNI) "
               f"{metrics['sg']['error_slope_in_lr']:.2f}; final ODE loss cDNI "
               f"{np.mean(metrics['cdni']['ode_final_loss']):.2e}, SG (DNI) "
               f"{np.mean(metrics['sg']['ode_final_loss']):.2e}; "
               "scalar DNI from (0.3, -1): " + ", ".join(f"beta {b}: loss {v['final_loss']:.3g}"
                                                        for b, v in stalls.items()))
    return ExperimentResult(metrics, arrays, {"sg_dynamics": fig}, summary, [])
