r"""``bbp bench --convex``: our solvers against cvxpy + Clarabel on the gated-ReLU and the ReLU programs.

Both solve the same problem (:mod:`theory.convex.relu`, gated relaxation over
sampled patterns): Clarabel to its default interior-point accuracy (its
optimum is the reference), FISTA (:mod:`theory.convex.first_order`) until its
own certified relative duality gap is at most ``1e-6`` (which bounds its
relative objective gap to the true optimum; the gap to Clarabel's value is
reported too). Data: :math:`X \sim N(0, I_d)`, :math:`y = \mathrm{sign}(x_1 x_2) + 0.1\varepsilon`,
:math:`\beta = 0.05\max_i\lVert X^T D_i y\rVert` (5% of the value above which
the solution is zero).

Figures: the main case (Clarabel seconds, FISTA seconds, speedup, gaps), the
scaling of FISTA's time with ``n`` and with the number of patterns, and an
ensemble of 16 independent problems in one batched call against 16 calls.
Pass ``xp`` (a namespace such as CuPy) to run FISTA on another backend; the
reference always runs on the CPU.

The ReLU program itself (with the cone constraints, same data and patterns):
Clarabel against the active-set Newton method (:mod:`theory.convex.active_set`,
exact: it stops at a KKT point, feasible to rounding, and reports its certified
gap and its gap to Clarabel's value), and against the augmented Lagrangian
solver (:mod:`theory.convex.augmented`, first-order) run until its certified
relative gap is at most ``1e-6`` and its relative constraint violation at most
``1e-7`` (or ``AL_MAX_ITER`` iterations; its status says which); the active
set's scaling in ``n`` and in the number of patterns; an ensemble of 16
(smaller) problems in one batched AL call against 16 AL calls and 16
active-set calls. (Clarabel's ReLU program has ``2nP`` linear constraints: at
the full size it takes about ten minutes on two cores; the whole bench about twenty.)
"""

from __future__ import annotations

import time

import numpy as np

from .arrangements import sample_arrangements
from .active_set import active_set_relu
from .augmented import al_relu
from .first_order import fista_gated
from .relu import cone_violation, convex_objective, solve_cvxpy

FULL = {"n": 2000, "d": 20, "patterns": 200, "ns": (500, 1000, 2000), "pattern_counts": (50, 100, 200),
        "ensemble": 16, "ensemble_n": 500,
        "relu": {"n": 2000, "d": 20, "patterns": 200, "ns": (500, 1000), "pattern_counts": (50, 100),
                 "ensemble": 16, "ensemble_n": 200, "ensemble_patterns": 50}}
QUICK = {"n": 300, "d": 8, "patterns": 40, "ns": (150, 300), "pattern_counts": (20, 40), "ensemble": 16,
         "ensemble_n": 100,
         "relu": {"n": 300, "d": 8, "patterns": 40, "ns": (150,), "pattern_counts": (20,), "ensemble": 16,
                  "ensemble_n": 60, "ensemble_patterns": 10}}
#: The AL solver's relative constraint violation allowed in the bench (its certified gap is GAP).
FEASIBILITY = 1e-7
#: The most AL iterations per solve in the bench (a run that stops there reports status "max_iter").
AL_MAX_ITER = 5000
GAP = 1e-6


def problem(n: int, d: int, patterns: int, seed: int = 0):
    """``(X, y, mask, beta)`` of the bench (module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15, 9)))
    X = rng.normal(size=(n, d))
    y = np.sign(X[:, 0] * X[:, 1]) + 0.1 * rng.normal(size=n)
    mask, _ = sample_arrangements(X, patterns, seed=seed)
    beta = 0.05 * float(np.max(np.linalg.norm(X.T @ (mask * y[:, None]), axis=0)))
    return X, y, mask, beta


def _fista(X, y, mask, beta, xp):
    args = [xp.asarray(a) for a in (X, y, mask)]
    start = time.perf_counter()
    res = fista_gated(args[0], args[1], beta, args[2], tol=GAP)
    float(res.objective[0] if res.objective.ndim else res.objective)  # synchronise a device backend
    return time.perf_counter() - start, res


def run_convex_bench(*, quick: bool = False, xp=None, progress: bool = True) -> dict:
    """The figures of the module docstring as a JSON-ready dict."""
    import sys

    xp = np if xp is None else xp
    cfg = QUICK if quick else FULL
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    X, y, mask, beta = problem(cfg["n"], cfg["d"], cfg["patterns"])
    say(f"convex bench: Clarabel on n={cfg['n']}, d={cfg['d']}, P={mask.shape[1]} ...")
    start = time.perf_counter()
    u, _, status, _ = solve_cvxpy(X, y, beta, mask, gated=True)
    clarabel_s = time.perf_counter() - start
    reference = convex_objective(X, y, beta, mask, u)
    say("convex bench: FISTA ...")
    fista_s, res = _fista(X, y, mask, beta, xp)
    value = float(res.objective)
    main = {"n": cfg["n"], "d": cfg["d"], "patterns": int(mask.shape[1]), "beta": beta,
            "clarabel_seconds": clarabel_s, "clarabel_status": status, "clarabel_objective": reference,
            "fista_seconds": fista_s, "fista_iterations": int(res.iterations), "fista_status": res.status,
            "fista_objective": value, "fista_certified_gap": float((res.objective - res.lower_bound) / value),
            "gap_to_clarabel": (value - reference) / abs(reference), "speedup": clarabel_s / fista_s}
    scaling = {"n": [], "patterns": []}
    for n in cfg["ns"]:
        say(f"convex bench: scaling n={n} ...")
        seconds, r = _fista(*problem(n, cfg["d"], cfg["patterns"]), xp)
        scaling["n"].append({"n": n, "seconds": seconds, "iterations": int(r.iterations)})
    for p in cfg["pattern_counts"]:
        say(f"convex bench: scaling P={p} ...")
        seconds, r = _fista(*problem(cfg["n"], cfg["d"], p), xp)
        scaling["patterns"].append({"patterns": p, "seconds": seconds, "iterations": int(r.iterations)})
    say(f"convex bench: ensemble of {cfg['ensemble']} ...")
    members = [problem(cfg["ensemble_n"], cfg["d"], cfg["patterns"], seed=s) for s in range(cfg["ensemble"])]
    width = min(m[2].shape[1] for m in members)
    Xs = np.stack([m[0] for m in members])
    ys = np.stack([m[1] for m in members])
    masks = np.stack([m[2][:, :width] for m in members])
    beta_e = float(np.mean([m[3] for m in members]))
    batched_s, batched = _fista(Xs, ys, masks, beta_e, xp)
    start = time.perf_counter()
    loop_values = [float(_fista(Xs[e], ys[e], masks[e], beta_e, xp)[1].objective) for e in range(len(members))]
    loop_s = time.perf_counter() - start
    ensemble = {"members": len(members), "n": cfg["ensemble_n"], "patterns": width, "batched_seconds": batched_s,
                "loop_seconds": loop_s, "speedup": loop_s / batched_s,
                "member_iterations": [int(i) for i in batched.member_iterations],
                "max_relative_difference": float(np.max(np.abs(np.asarray(batched.objective) - loop_values)
                                                        / np.abs(loop_values)))}
    out = {"quick": quick, "target_gap": GAP, "main": main, "scaling": scaling, "ensemble": ensemble}
    if "relu" in cfg:
        out["relu"] = run_relu_bench(cfg["relu"], xp=xp, say=say)
    return out


def _al(X, y, mask, beta, xp):
    args = [xp.asarray(a) for a in (X, y, mask)]
    start = time.perf_counter()
    res = al_relu(args[0], args[1], beta, args[2], tol=GAP, feasibility_tol=FEASIBILITY, max_iter=AL_MAX_ITER)
    float(res.objective[0] if res.objective.ndim else res.objective)  # synchronise a device backend
    return time.perf_counter() - start, res


def _active_set(X, y, mask, beta):
    start = time.perf_counter()
    res = active_set_relu(X, y, beta, mask)
    return time.perf_counter() - start, res


def run_relu_bench(cfg: dict, *, xp=None, say=lambda msg: None) -> dict:
    """The ReLU-program figures (module docstring): Clarabel against the active-set method and the AL solver,
    the active set's scaling, the AL's ensemble."""
    xp = np if xp is None else xp
    X, y, mask, beta = problem(cfg["n"], cfg["d"], cfg["patterns"])
    say(f"convex bench: ReLU program, Clarabel on n={cfg['n']}, d={cfg['d']}, P={mask.shape[1]} ...")
    start = time.perf_counter()
    v, w, status, _ = solve_cvxpy(X, y, beta, mask)
    clarabel_s = time.perf_counter() - start
    reference = convex_objective(X, y, beta, mask, v, w)
    say("convex bench: ReLU program, active-set method ...")
    as_s, act = _active_set(X, y, mask, beta)
    as_value = convex_objective(X, y, beta, mask, act.V, act.W)
    say("convex bench: ReLU program, augmented Lagrangian ...")
    al_s, res = _al(X, y, mask, beta, xp)
    V, W = np.asarray(res.V), np.asarray(res.W)
    value = convex_objective(X, y, beta, mask, V, W)
    main = {"n": cfg["n"], "d": cfg["d"], "patterns": int(mask.shape[1]), "beta": beta,
            "clarabel_seconds": clarabel_s, "clarabel_status": status, "clarabel_objective": reference,
            "clarabel_violation": cone_violation(X, mask, v, w),
            "active_set_seconds": as_s, "active_set_status": act.status, "active_set_objective": as_value,
            "active_set_certified_gap": act.relative_gap, "active_set_violation": cone_violation(X, mask, act.V, act.W),
            "active_set_gap_to_clarabel": (as_value - reference) / abs(reference),
            "active_set_speedup": clarabel_s / as_s, "active_set_width": act.active, "active_set_counts": act.counts,
            "al_seconds": al_s, "al_iterations": int(res.iterations), "al_outer": int(res.outer),
            "al_status": res.status, "al_objective": value,
            "al_certified_gap": (value - float(res.lower_bound)) / abs(value),
            "al_violation": cone_violation(X, mask, V, W),
            "gap_to_clarabel": (value - reference) / abs(reference), "speedup": clarabel_s / al_s}
    scaling = {"n": [], "patterns": []}
    for n in cfg["ns"]:
        say(f"convex bench: ReLU program, active-set scaling n={n} ...")
        seconds, r = _active_set(*problem(n, cfg["d"], cfg["patterns"]))
        scaling["n"].append({"n": n, "seconds": seconds, "steps": r.counts["steps"], "status": r.status})
    scaling["n"].append({"n": cfg["n"], "seconds": as_s, "steps": act.counts["steps"], "status": act.status})
    for p in cfg["pattern_counts"]:
        say(f"convex bench: ReLU program, active-set scaling P={p} ...")
        seconds, r = _active_set(*problem(cfg["n"], cfg["d"], p))
        scaling["patterns"].append({"patterns": p, "seconds": seconds, "steps": r.counts["steps"],
                                    "status": r.status})
    scaling["patterns"].append({"patterns": cfg["patterns"], "seconds": as_s, "steps": act.counts["steps"],
                                "status": act.status})
    say(f"convex bench: ReLU program, AL ensemble of {cfg['ensemble']} ...")
    members = [problem(cfg["ensemble_n"], cfg["d"], cfg["ensemble_patterns"], seed=s) for s in range(cfg["ensemble"])]
    width = min(m[2].shape[1] for m in members)
    Xs, ys = np.stack([m[0] for m in members]), np.stack([m[1] for m in members])
    masks = np.stack([m[2][:, :width] for m in members])
    beta_e = float(np.mean([m[3] for m in members]))
    batched_s, batched = _al(Xs, ys, masks, beta_e, xp)
    start = time.perf_counter()
    singles = [_al(Xs[e], ys[e], masks[e], beta_e, xp)[1] for e in range(len(members))]
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    exact = [_active_set(Xs[e], ys[e], masks[e], beta_e)[1].objective for e in range(len(members))]
    as_loop_s = time.perf_counter() - start
    loop_values = np.array([float(r.objective) for r in singles])
    ensemble = {"members": len(members), "n": cfg["ensemble_n"], "patterns": width, "batched_seconds": batched_s,
                "loop_seconds": loop_s, "speedup": loop_s / batched_s, "batched_status": batched.status,
                "member_iterations": [int(i) for i in batched.member_iterations],
                "max_relative_difference": float(np.max(np.abs(np.asarray(batched.objective) - loop_values)
                                                        / np.abs(loop_values))),
                "active_set_loop_seconds": as_loop_s,
                "al_vs_active_set_max_relative_gap": float(np.max((np.asarray(batched.objective) - exact)
                                                                  / np.abs(exact)))}
    return {"target_gap": GAP, "feasibility": FEASIBILITY, "main": main, "scaling": scaling, "ensemble": ensemble}


def format_relu_bench(results: dict) -> str:
    """A short table of :func:`run_relu_bench`'s figures."""
    m, e = results["main"], results["ensemble"]
    return "\n".join([
        f"ReLU program (cone constraints), n={m['n']}, d={m['d']}, P={m['patterns']}",
        f"  cvxpy + Clarabel  {m['clarabel_seconds']:8.2f} s   ({m['clarabel_status']})",
        f"  active-set Newton {m['active_set_seconds']:8.2f} s   {m['active_set_counts']['steps']} steps "
        f"({m['active_set_status']}), width {m['active_set_width']}, certified gap "
        f"{m['active_set_certified_gap']:.1e}, gap to Clarabel {m['active_set_gap_to_clarabel']:+.1e}, "
        f"violation {m['active_set_violation']:.1e}",
        f"  speedup           {m['active_set_speedup']:8.1f} x",
        f"  augmented Lagrangian {m['al_seconds']:5.2f} s   {m['al_iterations']} iterations ({m['al_status']}; "
        f"certified gap {GAP:g}, violation {FEASIBILITY:g} asked), certified gap {m['al_certified_gap']:.1e}, "
        f"gap to Clarabel {m['gap_to_clarabel']:+.1e}, violation {m['al_violation']:.1e}, "
        + (f"speedup {m['speedup']:.1f} x" if m["al_status"] == "converged" else "not converged: no speedup"),
        "  active-set scaling in n:        " + ", ".join(f"{s['n']}: {s['seconds']:.2f} s ({s['steps']} steps)"
                                                     for s in results["scaling"]["n"]),
        "  active-set scaling in patterns: " + ", ".join(f"{s['patterns']}: {s['seconds']:.2f} s ({s['steps']} steps)"
                                                     for s in results["scaling"]["patterns"]),
        f"  AL ensemble of {e['members']} (n={e['n']}, P={e['patterns']}): batched {e['batched_seconds']:.2f} s, "
        f"{e['members']} calls {e['loop_seconds']:.2f} s, speedup {e['speedup']:.1f} x; "
        f"{e['members']} active-set calls {e['active_set_loop_seconds']:.2f} s"])


def format_convex_bench(results: dict) -> str:
    """A short table of :func:`run_convex_bench`'s figures."""
    m, e = results["main"], results["ensemble"]
    lines = [f"gated-ReLU program, n={m['n']}, d={m['d']}, P={m['patterns']}, target relative gap {GAP:g}",
             f"  cvxpy + Clarabel  {m['clarabel_seconds']:8.2f} s   ({m['clarabel_status']})",
             f"  FISTA (first-order) {m['fista_seconds']:6.2f} s   {m['fista_iterations']} iterations, "
             f"certified gap {m['fista_certified_gap']:.1e}, gap to Clarabel {m['gap_to_clarabel']:+.1e}",
             f"  speedup           {m['speedup']:8.1f} x",
             "  FISTA scaling in n:        " + ", ".join(f"{s['n']}: {s['seconds']:.2f} s"
                                                        for s in results["scaling"]["n"]),
             "  FISTA scaling in patterns: " + ", ".join(f"{s['patterns']}: {s['seconds']:.2f} s"
                                                        for s in results["scaling"]["patterns"]),
             f"  ensemble of {e['members']} (n={e['n']}, P={e['patterns']}): batched {e['batched_seconds']:.2f} s, "
             f"{e['members']} calls {e['loop_seconds']:.2f} s, speedup {e['speedup']:.1f} x"]
    if "relu" in results:
        lines.append(format_relu_bench(results["relu"]))
    return "\n".join(lines)
