r"""Speed of the ensemble engine (``bbp bench``): throughput, matmul ratio, loop speedup.

For each :class:`BenchCase` (an ensemble of ``E`` MLPs of ``depth`` layers,
all of the same ``width``, trained by ``rule`` on minibatches of ``batch``
samples shared by all members) :func:`run_bench` measures, in one run:

engine
    The trainer's own step, :class:`sim.train.Stepper` (the rule's updates
    scaled by the learning rates, the finite-loss check, the divergence
    bookkeeping and the SGD update), split over the member threads that
    :func:`sim.train.train` would use by default
    (:func:`sim.train.member_threads`; reported as ``threads``), i.e. every
    array operation the trainer does per step except drawing the minibatch
    (one ``take`` of ``B`` rows shared by all members) and the progress bar.
    ``train`` itself is not timed because its cost also holds observer records
    on the observation set, which depend on ``record_every`` and not on the
    engine. When the engine uses more than one thread, the same step on one
    thread is timed too (``one_thread_*``).
(a) matmul reference
    A plain batched ``xp.matmul`` over preallocated, contiguous random operands
    of exactly the shapes and count of the step's matmuls
    (:func:`sim.rules.step_matmul_shapes`), timed in the same run, in one call
    per shape and, when the engine uses threads, also split over the same
    member threads; the faster counts. ``ratio_to_matmul = engine GFLOP/s /
    matmul GFLOP/s`` is the fraction of the machine's own batched matmul speed
    that the engine reaches.
(b) Python loop
    The same step applied to each member as its own ``E = 1`` network, one
    after the other; ``speedup_over_loop`` is the ensemble's member-steps per
    second over the loop's. The loop may be timed over the first
    ``loop_members`` members only and scaled per member (reported).

FLOPs are those of the matmuls only (:func:`sim.rules.step_flops`): the
forward pass, the backward teaching signals and the weight updates;
element-wise work is not counted. Timing: ``time.perf_counter`` with the
garbage collector off (like :mod:`timeit`), warm-up iterations first, then the
best of ``repeats`` timings (fewer when a case runs past its time budget), the
measurements interleaved in each repeat so that they share the machine's
state; on CuPy the device is synchronised before each clock read. Other
processes on the same cores (above all with a multithreaded BLAS) slow every
figure, sometimes by large factors; the best of the repeats tempers this but
cannot remove it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from array_api_compat import is_cupy_array

from . import backend as backend_module
from .backend import DTYPES, column_major, get_dtype, get_namespace, to_device
from .network import init_network
from .nn import check_activation, check_loss
from .rules import draw_feedback, get_rule, step_flops, step_matmul_shapes
from .bench_load import LoadCase, bench_under_load, format_load
from .train import MemberThreads, Stepper, TrainState, member_threads

SCHEMA = "bbp-bench/1"


@dataclass(frozen=True)
class BenchCase:
    """One benchmark setting.

    Attributes
    ----------
    n_members : int
        Ensemble size ``E``.
    width : int
        Width of every layer, input and output included: sizes ``(width,) * (depth + 1)``.
    depth : int
        Number of weight layers ``L``.
    batch : int
        Minibatch size ``B`` (the batch is shared by all members).
    rule, activation, loss : str
        The learning rule, hidden activation and loss of the step.
    ratio_target : float, optional
        Goal for ``ratio_to_matmul`` (engine GFLOP/s over matmul GFLOP/s).
    speedup_target : float, optional
        Goal for ``speedup_over_loop``.
    loop_members : int, optional
        How many members the Python loop times (default: all; quick runs may
        time fewer and scale per member).
    """

    n_members: int
    width: int
    depth: int
    batch: int
    rule: str = "fa"
    activation: str = "relu"
    loss: str = "mse"
    ratio_target: float | None = None
    speedup_target: float | None = None
    loop_members: int | None = None

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.width,) * (self.depth + 1)

    def check(self) -> BenchCase:
        for name in ("n_members", "width", "depth", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"bench case {name} must be a positive integer, got {value!r}")
        if self.loop_members is not None and (isinstance(self.loop_members, bool) or self.loop_members < 1):
            raise ValueError(f"bench case loop_members must be a positive integer, got {self.loop_members!r}")
        get_rule(self.rule)
        check_activation(self.activation)
        check_loss(self.loss)
        return self


#: The standard cases: many small networks (the Python loop's worst case) and
#: a few wide ones (where the matmuls dominate).
#: The many-small-networks case trains on minibatches of 16 (the regime of
#: seed sweeps of small networks, where a Python loop is slowest); the same
#: ensemble on minibatches of 64 is reported too, without a target.
CASES = (
    BenchCase(256, 32, 3, 16, speedup_target=10.0),
    BenchCase(256, 32, 3, 64),
    BenchCase(16, 512, 3, 256, ratio_target=0.5),
)

#: Time budget of one timing (seconds), repeats, warm-up iterations, loop
#: subset (all members, or a quarter of them but at most 64) and the time after
#: which a case stops repeating (at least two repeats are always done), for
#: full and quick runs.
_SETTINGS = {
    False: dict(seconds=1.0, repeats=5, warmup=2, loop_members=None, case_budget=45.0),
    True: dict(seconds=0.25, repeats=3, warmup=1, loop_members="quarter", case_budget=8.0),
}


# --- the timed work --------------------------------------------------------------------------------

def _synchronize(array) -> None:
    """Wait for the device to finish (CuPy); a no-op on the CPU."""
    if is_cupy_array(array):  # pragma: no cover - needs a GPU
        import cupy

        cupy.cuda.Device().synchronize()


def _time(fn: Callable[[], object], n_iter: int, sync_on) -> float:
    """Seconds for ``n_iter`` calls of ``fn`` (garbage collector off, device synchronised)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _synchronize(sync_on())
        start = time.perf_counter()
        for _ in range(n_iter):
            fn()
        _synchronize(sync_on())
        return time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()


class _Timed:
    """A workload to time: ``run()`` does one iteration, ``last()`` an array to synchronise on.

    ``context``, optional, is entered around every timing (a :class:`sim.train.Stepper`
    or :class:`sim.train.MemberThreads`, which holds its pool of threads while open).
    """

    def __init__(self, run, last, context=None):
        self.run, self.last = run, last
        self.context = contextlib.nullcontext() if context is None else context
        self.n_iter = 1
        self.samples: list[float] = []

    def calibrate(self, warmup: int, seconds: float) -> None:
        """Run ``warmup`` iterations, then choose the iterations of a timing to last about ``seconds``."""
        with self.context:
            for _ in range(max(0, warmup - 1)):
                self.run()
            one = _time(self.run, 1, self.last)
        self.n_iter = max(1, math.ceil(seconds / max(one, 1e-9)))

    def measure(self) -> None:
        with self.context:
            self.samples.append(_time(self.run, self.n_iter, self.last) / self.n_iter)

    @property
    def best(self) -> float:
        return min(self.samples)


def _case_arrays(case: BenchCase, xp, dtype: str, seed: int):
    sizes = case.sizes
    net = init_network(sizes, case.n_members, seed=seed, activation=case.activation, xp=xp, dtype=dtype)
    feedback = draw_feedback(case.rule, sizes, case.n_members, seed=seed, xp=xp, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(case.batch, sizes[0]))
    if case.loss == "ce":
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=case.batch)]
    else:
        y = rng.normal(size=(case.batch, sizes[-1]))
    return [column_major(w) for w in net.weights], feedback, to_device(x, xp, dtype), to_device(y, xp, dtype)


def _engine(case: BenchCase, weights, feedback, x, y, xp, dtype: str, lr: float, threads: int) -> _Timed:
    n_members = weights[0].shape[0]
    # its own copy of the weights: the step updates them in place
    stepper = Stepper(TrainState.start([column_major(w) for w in weights]), rule=case.rule,
                      activation=case.activation, loss=case.loss, lr=to_device(np.full(n_members, lr), xp, dtype),
                      feedback=feedback, threads=threads)
    count = [0]

    def run():
        stepper(x, y, count[0])
        count[0] += 1

    return _Timed(run, lambda: stepper.state.weights[-1], stepper)


def _matmul_reference(case: BenchCase, xp, dtype: str, seed: int, threads: int) -> _Timed:
    rng = np.random.default_rng(seed + 1)
    operands = [(to_device(rng.normal(size=(e, m, k)), xp, dtype), to_device(rng.normal(size=(e, k, n)), xp, dtype))
                for e, m, k, n in step_matmul_shapes(case.rule, case.sizes, case.n_members, case.batch)]
    members = MemberThreads(case.n_members, threads)
    out = [None]

    def products(part):
        for a, b in operands:
            out[0] = xp.matmul(a[part], b[part])

    def run():
        members.run(products)

    with members:
        run()
    return _Timed(run, lambda: out[0], members)


def _loop(case: BenchCase, weights, feedback, x, y, xp, dtype: str, lr: float, n_loop: int) -> _Timed:
    steppers = []
    for m in range(n_loop):
        own = [column_major(w[m:m + 1, ...]) for w in weights]
        fb = None if feedback is None else [xp.asarray(b[m:m + 1, ...], copy=True) for b in feedback]
        steppers.append(Stepper(TrainState.start(own), rule=case.rule, activation=case.activation, loss=case.loss,
                                lr=to_device(np.full(1, lr), xp, dtype), feedback=fb))
    count = [0]

    def run():
        for stepper in steppers:
            stepper(x, y, count[0])
        count[0] += 1

    return _Timed(run, lambda: steppers[-1].state.weights[-1])


# --- environment -------------------------------------------------------------------------------------

def environment(backend: str) -> dict:
    """Versions and BLAS of the machine (``numpy.show_config``), JSON-serialisable."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "numpy": np.__version__, "blas": _blas_info(),
           "allocator_tuned": backend_module.ALLOCATOR_TUNED}
    if backend == "cupy":  # pragma: no cover - needs a GPU
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props.get("name", b"")
            env["cupy"] = cupy.__version__
            env["device"] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as err:
            env["cupy"] = f"unavailable: {err}"
    return env


def _blas_info() -> dict:
    try:
        config = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25 has no mode=
        return {"name": "unknown (numpy.show_config has no dicts mode)"}
    except Exception as err:  # pragma: no cover - unusual builds
        return {"name": f"unknown ({err})"}
    blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
    return {k: str(v) for k, v in blas.items() if k in ("name", "version", "openblas configuration",
                                                        "detection method")}


# --- the benchmark ------------------------------------------------------------------------------------

def _progress(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


def bench_case(case: BenchCase, *, xp, dtype: str, quick: bool = False, seed: int = 0, lr: float = 1e-3,
               repeats: int | None = None, seconds: float | None = None, progress: bool = False) -> dict:
    """Measure one :class:`BenchCase` (see the module docstring); a JSON-serialisable dict."""
    case = case.check()
    settings = dict(_SETTINGS[bool(quick)])
    if repeats is not None:
        settings["repeats"] = repeats
    if seconds is not None:
        settings["seconds"] = seconds
    n_members = case.n_members
    limit = case.loop_members if case.loop_members is not None else settings["loop_members"]
    if limit == "quarter":  # quick runs: a quarter of the members, at most 64
        limit = min(64, max(1, n_members // 4))
    n_loop = n_members if limit is None else min(n_members, limit)
    label = f"E={n_members} width={case.width} depth={case.depth} batch={case.batch}"

    weights, feedback, x, y = _case_arrays(case, xp, dtype, seed)
    threads = member_threads(xp, case.rule, case.sizes, n_members, case.batch)
    workloads = {
        "engine": _engine(case, weights, feedback, x, y, xp, dtype, lr, threads),
        "matmul": _matmul_reference(case, xp, dtype, seed, 1),
        "loop": _loop(case, weights, feedback, x, y, xp, dtype, lr, n_loop),
    }
    if threads > 1:  # the same work on one thread, for comparison
        workloads["engine_one_thread"] = _engine(case, weights, feedback, x, y, xp, dtype, lr, 1)
        workloads["matmul_threads"] = _matmul_reference(case, xp, dtype, seed, threads)
    _progress(progress, f"{label}: warm-up")
    started = time.perf_counter()
    n_repeats = 0
    # every workload under the BLAS threads train() would use for these products (sim.backend.blas_policy)
    with backend_module.blas_policy(2 * case.batch * case.width ** 2) as blas:
        for work in workloads.values():
            work.calibrate(settings["warmup"], settings["seconds"])
        for r in range(settings["repeats"]):
            if r >= 2 and time.perf_counter() - started > settings["case_budget"]:
                _progress(progress, f"{label}: over the time budget, stopping after {r} repeats")
                break
            _progress(progress, f"{label}: repeat {r + 1}/{settings['repeats']}")
            for work in workloads.values():
                work.measure()
            n_repeats += 1

    flops = step_flops(case.rule, case.sizes, n_members, case.batch)
    step_s = workloads["engine"].best
    # the machine's batched matmul speed: one call, or split over the engine's threads, whichever is faster
    matmul_s = min(workloads[k].best for k in ("matmul", "matmul_threads") if k in workloads)
    one_thread_s = workloads["engine_one_thread"].best if threads > 1 else step_s
    loop_member_s = workloads["loop"].best / n_loop
    steps_per_s = 1.0 / step_s
    gflops, matmul_gflops = flops / step_s / 1e9, flops / matmul_s / 1e9
    ensemble_member_steps = n_members * steps_per_s
    loop_member_steps = 1.0 / loop_member_s
    result = {
        "E": n_members, "width": case.width, "depth": case.depth, "batch": case.batch,
        "sizes": list(case.sizes), "rule": get_rule(case.rule).name, "activation": case.activation,
        "loss": case.loss, "dtype": dtype,
        "threads": threads,
        "blas_threads": blas,
        "flops_per_step": flops,
        "seconds_per_step": step_s,
        "steps_per_s": steps_per_s,
        "gflops": gflops,
        "matmul_seconds": matmul_s,
        "matmul_gflops": matmul_gflops,
        "ratio_to_matmul": gflops / matmul_gflops,
        "loop_members_timed": n_loop,
        "loop_member_steps_per_s": loop_member_steps,
        "ensemble_member_steps_per_s": ensemble_member_steps,
        "speedup_over_loop": ensemble_member_steps / loop_member_steps,
        # the same engine on one thread (equal to the above when threads == 1)
        "one_thread_steps_per_s": 1.0 / one_thread_s,
        "one_thread_speedup_over_loop": n_members / one_thread_s / loop_member_steps,
        # what an ensemble running at the reference matmul speed (no element-wise work) would reach
        "speedup_at_matmul_speed": (n_members / matmul_s) / loop_member_steps,
        "repeats": n_repeats,
        "iterations": {k: w.n_iter for k, w in workloads.items()},
        "samples_seconds": {k: list(w.samples) for k, w in workloads.items()},
    }
    targets = {}
    if case.ratio_target is not None:
        targets["ratio_to_matmul"] = {"min": case.ratio_target,
                                      "pass": bool(result["ratio_to_matmul"] >= case.ratio_target)}
    if case.speedup_target is not None:
        targets["speedup_over_loop"] = {"min": case.speedup_target,
                                        "pass": bool(result["speedup_over_loop"] >= case.speedup_target)}
    result["targets"] = targets
    result["targets_pass"] = all(t["pass"] for t in targets.values())
    _progress(progress, f"{label}: {steps_per_s:.3g} steps/s, {gflops:.3g} GFLOP/s "
                        f"({result['ratio_to_matmul']:.2f} of matmul), "
                        f"{result['speedup_over_loop']:.3g}x over the loop")
    return result


def run_bench(*, quick: bool = False, backend: str = "numpy", dtype: str = "float64", progress: bool = True,
              cases: Sequence[BenchCase] | None = None, repeats: int | None = None,
              seconds: float | None = None, seed: int = 0, load: LoadCase | bool | None = None) -> dict:
    """Measure the ensemble engine's speed (the figures of ``bbp bench``).

    Parameters
    ----------
    quick : bool
        Shorter timings, fewer repeats and a Python loop over a quarter of
        the members, at most 64 (scaled per member); same cases.
    backend : {"numpy", "cupy"}
        Where the arrays live.
    dtype : {"float64", "float32"}
        Floating dtype of every array.
    progress : bool
        Print what is being timed to standard error.
    cases : sequence of BenchCase, optional
        Default :data:`CASES`.
    repeats, seconds : optional
        Override the number of repeats and the target length (s) of one timing.
    seed : int
        Seed of the weights, feedback and data.
    load : LoadCase or bool, optional
        The load case (:mod:`sim.bench_load`: a quick experiment beside busy
        processes, the engine's threading against one BLAS thread): ``True``
        the standard one (:data:`sim.bench_load.LOAD_CASES`, by ``quick``),
        ``False`` none; default: the standard one when ``cases`` is the
        default and the backend numpy.

    Returns
    -------
    dict
        JSON-serialisable: ``schema``, ``quick``, ``backend``, ``dtype``,
        ``environment`` (versions, BLAS), ``method`` (what was timed, in words),
        ``cases`` (one dict per case, see :func:`bench_case`), ``load`` (the
        load case, see :func:`sim.bench_load.bench_under_load`, or ``None``),
        ``targets_pass`` (the load case's target included) and ``seconds``
        (wall time of the whole benchmark).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    xp = get_namespace(backend)
    get_dtype(xp, dtype)
    if load is None:
        load = cases is None and backend == "numpy"
    if load is not False and not isinstance(load, bool | LoadCase):
        raise ValueError(f"load must be a LoadCase or a bool, got {load!r}")
    cases = CASES if cases is None else tuple(cases)
    if not cases:
        raise ValueError("run_bench needs at least one case")
    for case in cases:
        if not isinstance(case, BenchCase):
            raise ValueError(f"cases must be BenchCase instances, got {case!r}")
        case.check()
    settings = dict(_SETTINGS[bool(quick)])
    settings.update({k: v for k, v in (("repeats", repeats), ("seconds", seconds)) if v is not None})
    backend_module.tune_allocator()  # as the trainer and bbp run (see its docstring)
    start = time.perf_counter()
    results = [bench_case(case, xp=xp, dtype=dtype, quick=quick, seed=seed, repeats=repeats, seconds=seconds,
                          progress=progress) for case in cases]
    under_load = None
    if load is not False:
        under_load = bench_under_load(None if load is True else load, quick=quick, progress=progress)
    return {
        "schema": SCHEMA,
        "quick": bool(quick),
        "backend": backend,
        "dtype": dtype,
        "environment": environment(backend),
        "method": {
            "engine": "the trainer's step, sim.train.Stepper (rule_updates scaled by lr, finite check, "
                      "divergence bookkeeping, SGD update) on the member threads train() uses by default "
                      "(sim.train.member_threads); minibatch sampling excluded; shared batch (B, n)",
            "flops": "matmuls only: forward, backward teaching signals, weight updates (2mkn per product)",
            "matmul": "plain xp.matmul over preallocated contiguous operands of the same shapes and count, "
                      "one call per shape or split over the engine's member threads, whichever is faster",
            "loop": "the same step on each member as an E=1 network in a Python loop, "
                    "per-member rate from the first loop_members_timed members",
            "timer": f"time.perf_counter, gc off, {settings['warmup']} warm-up iteration(s), then the best of up to "
                     f"{settings['repeats']} interleaved repeats of about {settings['seconds']:g} s each; "
                     "the device is synchronised before each clock read on cupy",
            "blas": "each case under sim.backend.blas_policy for its products (the BLAS threads train() uses), "
                    "engine and matmul alike",
            "load": "sim.bench_load: the experiment in fresh processes beside busy processes, the engine's "
                    "threading against BLAS forced to one thread (environment); best of the repeats each",
        },
        "cases": results,
        "load": under_load,
        "targets_pass": all(r["targets_pass"] for r in results)
        and (under_load is None or under_load["target"]["pass"]),
        "seconds": time.perf_counter() - start,
        "cases_defined": [asdict(c) for c in cases],
    }


def _target_cell(case: dict, key: str, value: float, fmt: str, unit: str = "") -> str:
    text = format(value, fmt) + unit
    target = case["targets"].get(key)
    if target is None:
        return text
    return f"{text} ({'pass' if target['pass'] else 'FAIL'} >= {target['min']:g})"


def format_bench(results: dict) -> str:
    """A readable table of :func:`run_bench`'s results."""
    env = results.get("environment", {})
    blas = env.get("blas", {})
    blas_text = " ".join(str(blas[k]) for k in ("name", "version") if k in blas) or "unknown"
    lines = [
        f"bbp bench{' (quick)' if results.get('quick') else ''}: backend {results['backend']}, "
        f"dtype {results['dtype']}, numpy {env.get('numpy', '?')}, BLAS {blas_text}, "
        f"{env.get('cpu_count', '?')} CPUs" + (f", device {env['device']}" if "device" in env else ""),
    ]
    header = ("E", "width", "depth", "batch", "rule", "threads", "steps/s", "GFLOP/s", "matmul GFLOP/s",
              "ratio to matmul", "loop m-steps/s", "ensemble m-steps/s", "speedup over loop")
    rows = []
    for c in results["cases"]:
        rows.append((str(c["E"]), str(c["width"]), str(c["depth"]), str(c["batch"]), c["rule"], str(c["threads"]),
                     f"{c['steps_per_s']:.4g}", f"{c['gflops']:.3g}", f"{c['matmul_gflops']:.3g}",
                     _target_cell(c, "ratio_to_matmul", c["ratio_to_matmul"], ".2f"),
                     f"{c['loop_member_steps_per_s']:.4g}", f"{c['ensemble_member_steps_per_s']:.4g}",
                     _target_cell(c, "speedup_over_loop", c["speedup_over_loop"], ".1f", "x")))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    lines.append("")
    for c in results["cases"]:
        notes = [f"{c['activation']} {c['loss']}", f"{c['flops_per_step'] / 1e6:.4g} MFLOP/step"]
        if c["loop_members_timed"] < c["E"]:
            notes.append(f"loop timed over {c['loop_members_timed']} of {c['E']} members, scaled per member")
        if c["threads"] > 1:
            notes.append(f"on one thread {c['one_thread_steps_per_s']:.4g} steps/s, "
                         f"{c['one_thread_speedup_over_loop']:.1f}x over the loop")
        notes.append(f"speedup if the step ran at matmul speed: {c['speedup_at_matmul_speed']:.1f}x")
        lines.append(f"E={c['E']} width={c['width']}: " + "; ".join(notes))
    if results.get("load") is not None:
        lines.append(format_load(results["load"]))
    verdict = "all targets met" if results.get("targets_pass") else "some targets NOT met"
    lines.append(f"{verdict}; {results.get('seconds', float('nan')):.1f} s. FLOPs: matmuls of forward, "
                 "backward signals and weight updates; engine = the trainer's step on its default member threads.")
    return "\n".join(lines)
