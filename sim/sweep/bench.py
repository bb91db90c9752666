"""``bbp bench --sweep``: the speed of the sweep engine.

* throughput: a CPU-bound sweep of 16 points (one task each, not folded)
  on a ``LocalCluster`` of 2 workers against ``--serial`` (the cluster started beforehand; its start-up
  is reported apart), and beside it the machine's ceiling measured in the
  same run (fixed CPU work on the 2 workers at once against one after the
  other here: on a machine shared with other jobs it falls towards 1);
* overhead per point: a sweep of a trivial experiment (``sweep-noop``, which
  returns at once) on the cluster: wall time per point, everything included
  (the task round trip and the point's run directory: status, config, log,
  metrics, arrays);
* folding: a sweep of 6 learning rates x 8 seeds of ``fa-linear``, serial,
  folded into one task of ``E = 48`` against 6 tasks of ``E = 8``
  (``--no-fold``), both on one thread; the numbers are the same, the ratio
  is the speed-up of vectorising.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ..backend import blas_limit
from ..experiments import ExperimentResult, experiment
from ..settings import integer
from .engine import connect, run_sweep


@experiment("sweep-noop", title="A trivial experiment (the sweep benchmark's overhead probe)",
            description="Returns at once with one metric per member; for measuring the sweep engine.",
            defaults={"k": 0}, schema={"k": integer(0)}, default_seeds=1)
def _noop(settings, ctx):
    import numpy as np

    return ExperimentResult({"k": {"mean": float(settings["k"]), "std": 0.0,
                                   "members": [float(settings["k"])] * ctx.n_seeds}},
                            {"steps": np.arange(3), "value": np.zeros((3, ctx.n_seeds))})


def _register_on_workers(client) -> None:
    """Register sweep-noop in every worker and load the experiment registry there (the imports, theory's too)."""
    from .point import _load_experiments

    client.run(__import__, __name__, fromlist=["_noop"])
    client.run(_load_experiments)


def _busy(rounds: int = 300) -> float:
    """CPU-bound work of a fixed size (small matmuls on one thread); its own duration in seconds."""
    import numpy as np

    from ..backend import blas_limit

    a = np.random.default_rng(0).normal(size=(64, 64))
    start = time.perf_counter()
    with blas_limit(1):
        for _ in range(rounds * 20):
            a = np.tanh(a @ a * 0.01)
    return time.perf_counter() - start


def _ceiling(client, workers: int) -> float:
    """The machine's parallel ceiling now: ``workers`` copies of :func:`_busy` here one after the other,
    against the same copies on the cluster's workers at once (what any sweep could gain at best)."""
    client.gather(client.map(_busy, [1] * workers, pure=False))  # warm
    start = time.perf_counter()
    for _ in range(workers):
        _busy()
    serial = time.perf_counter() - start
    start = time.perf_counter()
    client.gather(client.map(_busy, [300] * workers, pure=False))
    return serial / (time.perf_counter() - start)


def run_sweep_bench(*, quick: bool = False, workers: int = 2) -> dict:
    """Throughput of 2 local workers vs serial, and overhead per point; a dict of figures."""
    steps = 600 if quick else 2500
    grid = {"lr": [str(0.005 * (i + 1)) for i in range(4)], "hidden": ["16", "24", "32", "40"]}  # 16 points
    fixed = {"steps": str(steps), "record_every": "50", "n_samples": "500"}
    n_noop = 40 if quick else 200
    root = Path(tempfile.mkdtemp(prefix="bbp-bench-sweep-"))
    try:
        from .point import _load_experiments

        _load_experiments()  # this process's imports, as the workers' below: not counted
        start = time.perf_counter()
        # one task per point (no folding): this measures distribution; folding is measured below
        serial = run_sweep("fa-linear", grid, seeds=4, settings=fixed, quick=True, out=root / "serial", serial=True,
                           fold=False, progress=False)
        serial_s = time.perf_counter() - start
        start = time.perf_counter()
        client, cluster = connect(workers=workers, dashboard=False)
        try:
            _register_on_workers(client)  # the workers' imports are part of their start-up, as in a long sweep
            startup_s = time.perf_counter() - start
            ceiling = _ceiling(client, workers)
            start = time.perf_counter()
            parallel = run_sweep("fa-linear", grid, seeds=4, settings=fixed, quick=True, out=root / "dask",
                                 client=client, fold=False, progress=False)
            dask_s = time.perf_counter() - start
            start = time.perf_counter()
            noop = run_sweep("sweep-noop", {"k": [str(i) for i in range(n_noop)]}, seeds=1, out=root / "noop",
                             client=client, progress=False)
            noop_s = time.perf_counter() - start
        finally:
            client.close()
            cluster.close()
        lrs = {"lr": [str(0.005 * (i + 1)) for i in range(6)]}
        fold_fixed = {"steps": str(steps), "record_every": "50"}
        with blas_limit(1):  # one thread for both (no member threads): the gain of vectorising alone
            start = time.perf_counter()
            unfolded = run_sweep("fa-linear", lrs, seeds=8, settings=fold_fixed, quick=True, out=root / "unfolded",
                                 serial=True, fold=False, progress=False)
            unfolded_s = time.perf_counter() - start
            start = time.perf_counter()
            folded = run_sweep("fa-linear", lrs, seeds=8, settings=fold_fixed, quick=True, out=root / "folded",
                               serial=True, progress=False)
            folded_s = time.perf_counter() - start
        assert serial.computed == parallel.computed == 16 and noop.computed == n_noop
        assert (unfolded.tasks, folded.tasks, folded.largest_task) == (6, 1, 48)
        return {"points": 16, "workers": workers, "steps_per_point": steps, "serial_seconds": serial_s,
                "dask_seconds": dask_s, "throughput_ratio": serial_s / dask_s, "machine_ceiling": ceiling, "cluster_startup_seconds": startup_s,
                "noop_points": n_noop, "overhead_ms_per_point": 1e3 * noop_s / n_noop,
                "fold_points": 6, "fold_seeds": 8, "unfolded_seconds": unfolded_s, "folded_seconds": folded_s,
                "folded_vs_unfolded": unfolded_s / folded_s}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_sweep_bench(r: dict) -> str:
    lines = [f"sweep of {r['points']} CPU-bound points (fa-linear, {r['steps_per_point']} steps, 4 seeds each):",
             f"  serial {r['serial_seconds']:.2f} s, LocalCluster of {r['workers']} workers {r['dask_seconds']:.2f} s: "
             f"{r['throughput_ratio']:.2f}x (cluster start-up with the workers' imports "
             f"{r['cluster_startup_seconds']:.1f} s, not counted)",
             f"  the machine's ceiling now (the same fixed CPU work on {r['workers']} workers at once vs one after "
             f"the other here): {r['machine_ceiling']:.2f}x",
             f"overhead per point (trivial experiment, {r['noop_points']} points on the cluster): "
             f"{r['overhead_ms_per_point']:.1f} ms",
             f"folded vs unfolded ({r['fold_points']} learning rates x {r['fold_seeds']} seeds, serial): one task of "
             f"E = {r['fold_points'] * r['fold_seeds']} {r['folded_seconds']:.2f} s, {r['fold_points']} tasks of "
             f"E = {r['fold_seeds']} {r['unfolded_seconds']:.2f} s: {r['folded_vs_unfolded']:.2f}x (one thread)"]
    return "\n".join(lines)
