r"""The load case of ``bbp bench``: a quick experiment beside busy processes, default threading against one thread.

A machine's cores are often shared. A BLAS that runs several threads per
matrix product then waits, at every product, for a thread that another process
holds the core of; small products become many times slower. The engine limits
BLAS itself (:func:`sim.backend.blas_policy`); this case checks that it does
so well enough.

:func:`bench_under_load` starts ``busy`` CPU-burning processes (Python loops),
then runs the experiment ``repeats`` times in each of two variants, alternated,
each run in a fresh process (so that no thread setting leaks):

default
    the engine's own threading: the environment without
    ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, as
    a user runs ``bbp run``;
one thread
    the same with those variables set to 1 (BLAS forced to one thread, and
    the trainer's member threads off with it).

The time of a run is that of :func:`sim.experiments.run_experiment` in the
child process (start-up and imports excluded); ``ratio`` is the best default
time over the best one-thread time, the target at most :data:`LOAD_TARGET`.
The busy processes are stopped in a ``finally`` block; should this process die
first, they stop by themselves within a fraction of a second (they watch their
parent) or after their time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

#: Goal for ``ratio`` (default threading under load over one thread under the same load).
LOAD_TARGET = 1.3
#: Variables that set a BLAS library's threads (removed for the default variant, 1 for the other).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_BURNER = """
import os, sys, time
parent, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(20000):
        pass
"""

_CHILD = """
import json, sys, time
from sim.backend import blas_threads
from sim.cli import _experiments
from sim.experiments import Context, get_experiment, run_experiment
name, overrides, quick = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
_experiments()
seeds = get_experiment(name).default_seeds
start = time.perf_counter()
run_experiment(name, context=Context(n_seeds=seeds, quick=quick, progress=False), overrides=overrides)
print(json.dumps({"seconds": time.perf_counter() - start, "blas_threads": blas_threads(), "seeds": seeds}))
"""


@dataclass(frozen=True)
class LoadCase:
    """The experiment (``bbp run NAME [--quick] [--set KEY=VALUE ...]``) and the load of the case."""

    experiment: str = "sg-nonlinear"
    quick: bool = True
    overrides: dict = field(default_factory=dict)
    busy: int = 2
    repeats: int = 2
    target: float = LOAD_TARGET


#: The standard load case: ``sg-nonlinear --quick`` (a few seconds), and a shorter one for ``bbp bench --quick``.
LOAD_CASES = {False: LoadCase(), True: LoadCase(overrides={"steps": "200"}, repeats=1)}


def _environment(threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env.update({k: str(threads) for k in THREAD_VARIABLES})
    return env


def _run_child(case: LoadCase, threads: int | None, timeout: float) -> dict:
    command = [sys.executable, "-c", _CHILD, case.experiment, json.dumps(case.overrides), "1" if case.quick else "0"]
    start = time.perf_counter()
    done = subprocess.run(command, env=_environment(threads), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the load case's run of {case.experiment!r} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - start
    return out


def start_busy(n: int, limit_s: float = 900.0) -> list[subprocess.Popen]:
    """Start ``n`` CPU-burning processes (Python loops); they stop after ``limit_s`` or when this process ends."""
    return [subprocess.Popen([sys.executable, "-c", _BURNER, str(os.getpid()), str(limit_s)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    """Stop the processes of :func:`start_busy` and reap them."""
    for p in processes:
        if p.poll() is None:
            p.kill()
    for p in processes:
        p.wait()


def bench_under_load(case: LoadCase | None = None, *, quick: bool = False, timeout: float = 600.0,
                     progress: bool = False) -> dict:
    """Run the load case (see the module docstring); a JSON-serialisable dict.

    Keys: ``experiment``, ``quick``, ``overrides``, ``seeds``, ``busy``, ``repeats``,
    ``default_seconds`` and ``one_thread_seconds`` (one per repeat, the run alone),
    ``default_process_seconds`` / ``one_thread_process_seconds`` (whole child
    processes), ``default_blas_threads`` (the budget the default run's engine
    saw), ``ratio`` (best default over best one-thread time), ``target`` ``{"max",
    "pass"}`` and ``seconds`` (wall time of the case).
    """
    case = LOAD_CASES[bool(quick)] if case is None else case
    if case.busy < 0 or case.repeats < 1:
        raise ValueError(f"a load case needs busy >= 0 and repeats >= 1, got {case!r}")
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {"default": [], "one_thread": []}
    busy = start_busy(case.busy, limit_s=timeout * 2 * case.repeats + 60)
    try:
        time.sleep(0.2)  # let the busy processes start
        for r in range(case.repeats):
            for variant, threads in (("default", None), ("one_thread", 1)):
                if progress:
                    print(f"[bench] load: {case.experiment} beside {case.busy} busy processes, {variant}, "
                          f"repeat {r + 1}/{case.repeats}", file=sys.stderr, flush=True)
                runs[variant].append(_run_child(case, threads, timeout))
    finally:
        stop_busy(busy)
    best = {k: min(run["seconds"] for run in v) for k, v in runs.items()}
    ratio = best["default"] / best["one_thread"]
    return {
        "experiment": case.experiment, "quick": case.quick, "overrides": dict(case.overrides),
        "seeds": runs["default"][0]["seeds"], "busy": case.busy, "repeats": case.repeats,
        "default_seconds": [run["seconds"] for run in runs["default"]],
        "one_thread_seconds": [run["seconds"] for run in runs["one_thread"]],
        "default_process_seconds": [run["process_seconds"] for run in runs["default"]],
        "one_thread_process_seconds": [run["process_seconds"] for run in runs["one_thread"]],
        "default_blas_threads": runs["default"][0]["blas_threads"],
        "ratio": ratio,
        "target": {"max": case.target, "pass": bool(ratio <= case.target)},
        "seconds": time.perf_counter() - started,
    }


def format_load(load: dict) -> str:
    """One line of :func:`bench_under_load`'s result, for :func:`sim.bench.format_bench`."""
    verdict = "pass" if load["target"]["pass"] else "FAIL"
    sets = "".join(f" --set {k}={v}" for k, v in load["overrides"].items())
    return (f"under load: bbp run {load['experiment']}{' --quick' if load['quick'] else ''}{sets} beside "
            f"{load['busy']} busy processes: {min(load['default_seconds']):.2f} s with the engine's threading, "
            f"{min(load['one_thread_seconds']):.2f} s with BLAS forced to one thread (best of {load['repeats']}); "
            f"ratio {load['ratio']:.2f} ({verdict} <= {load['target']['max']:g})")
