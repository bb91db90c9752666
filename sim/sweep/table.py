"""The results of a sweep as one table and one dataset, rebuilt from the point directories.

``OUT/results.parquet``: one row per point and seed replicate; one column per
swept setting (lists as their JSON text), ``seed`` (the replicate, member
``seed`` of the point's ensemble), every scalar metric flattened to a dotted
name (``dfa.final_loss``, ``bp.test_accuracy``, ...), and ``status``,
``seconds``, ``point``. A summary statistic ``{"mean", "std", "members"}``
gives one value per seed replicate; other numbers are the point's and repeat
on its rows (a statistic without members becomes ``NAME.mean``, ``NAME.std``).
Points not complete have their rows, with their status and no metrics.

``OUT/curves.nc``: an :class:`xarray.Dataset` of the recorded curves, dims
``(point, seed, step)`` (and one more per extra array axis), an array ``K``
being a curve when the point's arrays hold ``P_steps`` (or ``steps``) for a
prefix ``P`` of ``K`` and ``K`` is shaped ``(steps, seeds, ...)``; the swept
settings are coordinates along ``point``.

The directories are the truth: both files are written atomically and can be
rebuilt at any time (:func:`write_tables`, ``bbp sweep-status --rebuild``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import rundir
from .point import point_dir, point_state, read_metrics
from .spec import column_value

TABLE_FILE = "results.parquet"
CURVES_FILE = "curves.nc"
#: Keys of ``metrics.json`` that describe the run rather than measure it.
META_KEYS = ("experiment", "status", "seconds", "diverged", "all_diverged", "partial")
#: Lists of numbers up to this length become one column per element.
MAX_LIST = 16


def _is_stat(value) -> bool:
    """A summary statistic: ``mean`` and ``std`` numbers (a dict of lists, one per sample size, is not one)."""
    return isinstance(value, dict) and "mean" in value and "std" in value and \
        all(isinstance(value[k], bool | int | float) or value[k] is None for k in ("mean", "std"))


def flatten_metrics(metrics: dict, seeds: int) -> tuple[dict, dict]:
    """``(per_seed, per_point)``: dotted name -> list of ``seeds`` values, and dotted name -> value."""
    per_seed, per_point = {}, {}

    def number(value):
        return float("nan") if value is None else float(value)

    def walk(path: str, value):
        if _is_stat(value):
            members = value.get("members")
            if isinstance(members, list) and len(members) == seeds:
                per_seed[path] = [number(v) for v in members]
            else:
                per_point[f"{path}.mean"], per_point[f"{path}.std"] = number(value["mean"]), number(value["std"])
            for k, v in value.items():
                if k not in ("mean", "std", "members"):
                    walk(f"{path}.{k}", v)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{path}.{k}" if path else str(k), v)
        elif isinstance(value, list):
            if len(value) <= MAX_LIST or any(isinstance(v, dict) for v in value):
                for i, v in enumerate(value):
                    walk(f"{path}.{i}", v)
        elif isinstance(value, bool | int | float) or value is None:
            per_point[path] = number(value)

    walk("", {k: v for k, v in metrics.items() if k not in META_KEYS})
    return per_seed, per_point


def build_table(out, points):
    """The results table of ``points`` in sweep directory ``out`` (a :class:`pandas.DataFrame`)."""
    import pandas as pd

    rows = []
    for p in points:
        directory = point_dir(out, p.key)
        state = point_state(directory)
        status = rundir.read_status(directory) or {}
        metrics = read_metrics(directory) if state in ("complete", "failed") else None
        per_seed, per_point = ({}, {}) if not metrics or metrics.get("status") != "complete" else \
            flatten_metrics(metrics, p.seeds)
        seconds = (metrics or {}).get("seconds", status.get("seconds"))  # the run's own clock where it has one
        for j in range(p.seeds):
            row = {k: column_value(v) for k, v in p.values.items()}
            row["seed"] = j
            row.update(per_point)
            row.update({k: v[j] for k, v in per_seed.items()})
            row.update(status=state, seconds=np.nan if seconds is None else float(seconds), point=p.key)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    swept = list(points[0].values)
    fixed = [*swept, "seed"]
    tail = ["status", "seconds", "point"]
    metric_columns = sorted(c for c in frame.columns if c not in fixed and c not in tail)
    return frame[[*fixed, *metric_columns, *tail]]


def _curves_of(arrays: dict, seeds: int) -> dict:
    """``{name: (steps, values shaped (seeds, steps, ...))}`` of the curves among a point's arrays."""
    steps_keys = [k for k in arrays if k == "steps" or k.endswith("_steps")]
    curves = {}
    for name, values in arrays.items():
        if name in steps_keys:
            continue
        prefixes = [k[: -len("steps")] for k in steps_keys if name.startswith(k[: -len("steps")])]
        if not prefixes:
            continue
        steps = np.asarray(arrays[max(prefixes, key=len) + "steps"]).ravel()
        values = np.asarray(values)
        if values.ndim >= 2 and values.shape[0] == steps.size and values.shape[1] == seeds \
                and np.issubdtype(values.dtype, np.number):
            curves[name] = (steps, np.moveaxis(values, 1, 0).astype(float))
    return curves


def build_curves(out, points):
    """The curves of the complete points as an :class:`xarray.Dataset` (``None`` when there are none)."""
    import xarray as xr

    per_point, keys = [], []
    for p in points:
        directory = point_dir(out, p.key)
        if point_state(directory) != "complete":
            continue
        try:
            with np.load(directory / "arrays.npz") as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError):
            continue
        variables = []
        for name, (steps, values) in _curves_of(arrays, p.seeds).items():
            extra = [f"{name}_dim{i}" for i in range(2, values.ndim)]
            _, unique = np.unique(steps, return_index=True)  # a repeated step keeps its first record
            # extra axes (a layer, ...) are indexed, so points with more or fewer layers align, padded with nan
            extra_coords = {d: np.arange(values.shape[i + 2]) for i, d in enumerate(extra)}
            variables.append(xr.DataArray(values[:, unique], dims=("seed", "step", *extra), name=name,
                                          coords={"seed": np.arange(p.seeds), "step": steps[unique], **extra_coords}))
        if variables:
            per_point.append(xr.merge(variables, join="outer", compat="no_conflicts"))
            keys.append(p)
    if not per_point:
        return None
    dataset = xr.concat(per_point, dim="point", join="outer", coords="minimal", compat="override")
    coords = {"point": [p.key for p in keys]}
    for setting in keys[0].values:
        coords[setting] = ("point", [column_value(p.values[setting]) for p in keys])
    return dataset.assign_coords(coords)


def write_tables(out, points):
    """Rebuild ``results.parquet`` and ``curves.nc`` of sweep directory ``out`` atomically; returns the table."""
    out = Path(out)
    table = build_table(out, points)
    if not table.empty:
        with rundir.atomic_path(out / TABLE_FILE) as tmp:
            table.to_parquet(tmp, index=False)
    curves = build_curves(out, points)
    if curves is not None:
        with rundir.atomic_path(out / CURVES_FILE) as tmp:
            curves.to_netcdf(tmp, engine="scipy")
    elif (out / CURVES_FILE).exists():
        (out / CURVES_FILE).unlink()
    return table


def load(out, *, rebuild: bool = False):
    """The results table of sweep directory ``out`` (:class:`pandas.DataFrame`), rebuilt if asked or missing."""
    import pandas as pd

    out = Path(out)
    if rebuild or not (out / TABLE_FILE).exists():
        from .engine import read_spec
        from .spec import plan

        return write_tables(out, plan(read_spec(out)))
    return pd.read_parquet(out / TABLE_FILE)


def load_curves(out):
    """The curves of sweep directory ``out`` (:class:`xarray.Dataset`, dims ``(point, seed, step, ...)``)."""
    import xarray as xr

    path = Path(out) / CURVES_FILE
    if not path.exists():
        load(out, rebuild=True)
    if not path.exists():
        raise ValueError(f"sweep {out} has no curves (no complete point recorded metrics over steps)")
    with xr.open_dataset(path, engine="scipy") as dataset:
        return dataset.load()
