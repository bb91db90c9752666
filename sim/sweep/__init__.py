"""Studies: sweeps of an experiment over settings and seeds, on Dask distributed, resumable, into one table.

``run_sweep(experiment, grid, *, seeds, settings, out, client) -> SweepResult``
computes every point of the grid that ``out`` does not hold complete yet (each
point a run directory ``out/points/<key>/``), then rebuilds
``out/results.parquet`` (:func:`load`) and ``out/curves.nc``
(:func:`load_curves`) from those directories. ``bbp sweep``,
``bbp sweep-status`` and ``bbp sweep-plot`` are the command line.

Modules: :mod:`.spec` (the spec and its points), :mod:`.point` (a point on
disk), :mod:`.fold` (points folded into one ensemble), :mod:`.engine` (Dask),
:mod:`.table` (the table and the curves), :mod:`.plot` (a metric against a setting).
"""

from .engine import SchedulerUnreachable, SweepResult, connect, read_spec, run_sweep
from .spec import Point, SweepSpec, plan
from .table import load, load_curves

__all__ = ["run_sweep", "load", "load_curves", "SweepResult", "SweepSpec", "Point", "plan", "read_spec",
           "connect", "SchedulerUnreachable"]
