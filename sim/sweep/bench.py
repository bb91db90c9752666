"""``bbp bench --sweep``: the speed of the sweep engine.

* throughput: a CPU-bound sweep of 16 points on a ``LocalCluster`` of 2
  workers against ``--serial`` (the cluster started beforehand; its start-up
  is reported apart);
* overhead per point: a sweep of a trivial experiment (``sweep-noop``, which
  returns at once) on the cluster: wall time per point, everything included
  (the task round trip and the point's run directory: status, config, log,
  metrics, arrays).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

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
    client.run(__import__, __name__, fromlist=["_noop"])  # registers sweep-noop in every worker


def run_sweep_bench(*, quick: bool = False, workers: int = 2) -> dict:
    """Throughput of 2 local workers vs serial, and overhead per point; a dict of figures."""
    steps = 600 if quick else 2500
    grid = {"lr": [str(0.005 * (i + 1)) for i in range(4)], "hidden": ["16", "24", "32", "40"]}  # 16 points
    fixed = {"steps": str(steps), "record_every": "50", "n_samples": "500"}
    n_noop = 40 if quick else 200
    root = Path(tempfile.mkdtemp(prefix="bbp-bench-sweep-"))
    try:
        start = time.perf_counter()
        serial = run_sweep("fa-linear", grid, seeds=4, settings=fixed, quick=True, out=root / "serial", serial=True,
                           progress=False)
        serial_s = time.perf_counter() - start
        start = time.perf_counter()
        client, cluster = connect(workers=workers, dashboard=False)
        startup_s = time.perf_counter() - start
        try:
            _register_on_workers(client)
            start = time.perf_counter()
            parallel = run_sweep("fa-linear", grid, seeds=4, settings=fixed, quick=True, out=root / "dask",
                                 client=client, progress=False)
            dask_s = time.perf_counter() - start
            start = time.perf_counter()
            noop = run_sweep("sweep-noop", {"k": [str(i) for i in range(n_noop)]}, seeds=1, out=root / "noop",
                             client=client, progress=False)
            noop_s = time.perf_counter() - start
        finally:
            client.close()
            cluster.close()
        assert serial.computed == parallel.computed == 16 and noop.computed == n_noop
        return {"points": 16, "workers": workers, "steps_per_point": steps, "serial_seconds": serial_s,
                "dask_seconds": dask_s, "throughput_ratio": serial_s / dask_s, "cluster_startup_seconds": startup_s,
                "noop_points": n_noop, "overhead_ms_per_point": 1e3 * noop_s / n_noop,
                "folded_vs_unfolded": None}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_sweep_bench(r: dict) -> str:
    lines = [f"sweep of {r['points']} CPU-bound points (fa-linear, {r['steps_per_point']} steps, 4 seeds each):",
             f"  serial {r['serial_seconds']:.2f} s, LocalCluster of {r['workers']} workers {r['dask_seconds']:.2f} s: "
             f"{r['throughput_ratio']:.2f}x (cluster start-up {r['cluster_startup_seconds']:.1f} s, not counted)",
             f"overhead per point (trivial experiment, {r['noop_points']} points on the cluster): "
             f"{r['overhead_ms_per_point']:.1f} ms",
             "folded vs unfolded (6 learning rates x 8 seeds): not measured (folding of settings other than seeds "
             "is not available yet)"]
    return "\n".join(lines)
