"""The points of a sweep on disk: their state, computing one, and settling those whose process died.

Each point is a run directory ``OUT/points/<key>/`` written by the same code as
``bbp run`` (:func:`sim.rundir.fill_run`), so ``bbp rerun OUT/points/<key>``
runs it again. Its ``status.json`` is the truth:

* ``complete``, with every file it lists present: done, never recomputed;
* ``failed``: recorded with the error and its traceback; recomputed only on request;
* ``running`` with its lock held: a live process computes it now;
* ``running`` with its lock free (the process died), ``interrupted``, a file
  missing, or no directory: recomputed.

``complete`` is written last, after every file, so a point whose worker is
killed mid-write is never counted as done.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .. import rundir

#: The states a point can be in, as :func:`point_state` reports them.
STATES = ("complete", "failed", "running", "interrupted", "missing")
#: The states a sweep computes again (``failed`` only with ``retry_failed``).
TO_COMPUTE = ("interrupted", "missing")


def point_dir(out, key: str) -> Path:
    return Path(out) / "points" / key


def point_state(directory) -> str:
    """One of :data:`STATES` for a point's run directory (see the module docstring)."""
    directory = Path(directory)
    status = rundir.read_status(directory)
    if status is None:
        return "missing"
    state = status.get("status")
    if state == "running":
        return "running" if rundir.is_locked(directory) else "interrupted"
    if state == "complete":
        files = status.get("files", rundir.RUN_FILES)
        return "complete" if all((directory / f).is_file() for f in files) else "missing"
    return state if state in STATES else "missing"


def settle(directory, status: str = "interrupted", error: str = "the sweep stopped while this point ran") -> bool:
    """Mark a point left ``running`` by a process that died as ``status``; whether it was one.

    Takes the point's lock first, so a point that a live process computes is
    never touched.
    """
    directory = Path(directory)
    try:
        fd = os.open(directory / rundir.LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        info = rundir.read_status(directory)
        if info is None or info.get("status") != "running":
            return False
        info.update(status=status, error=error, ended=rundir._now())
        rundir.write_json(directory / rundir.STATUS_FILE, info)
        return True
    finally:
        os.close(fd)


def _load_experiments() -> None:
    from ..cli import _experiments  # every registered experiment, theory's too (the shell's loader)

    _experiments()


def compute_point(out, point, *, figures: bool = False, argv=None, compute=None) -> dict:
    """Compute ``point`` into ``OUT/points/<key>/``; returns ``{"point", "status", "seconds", "error"}``.

    A complete point is left alone (``status = "complete"``, ``skipped``);
    a point another process holds is ``busy``. An error of the experiment is
    recorded in the point (status ``failed``, with its traceback) and returned,
    not raised; so is a run whose every member diverged. A stop by a signal
    (:class:`sim.interrupt.RunInterrupted`) marks the point ``interrupted``
    and goes on. ``compute()`` replaces the experiment's run (folding uses it).
    """
    from ..experiments import run_experiment

    directory = point_dir(out, point.key)
    outcome = {"point": point.key, "status": None, "seconds": None, "error": None}
    if point_state(directory) == "complete":
        return {**outcome, "status": "complete", "skipped": True}
    try:
        run = rundir.RunDirectory.create(directory, overwrite=True, argv=argv or ["bbp", "sweep"])
    except rundir.OutputPathError as err:
        return {**outcome, "status": "busy", "error": str(err)}
    if compute is None:
        _load_experiments()
        context = point.context()

        def compute():
            return run_experiment(point.experiment, context=context, overrides=point.settings)[1]

    with run:
        return fill_point(run, point, compute, figures=figures)


def fill_point(run, point, compute, *, figures: bool = False, config: dict | None = None,
               shared_seconds: float | None = None) -> dict:
    """Fill the run directory ``run`` (held by this process) of ``point`` from ``compute()``; its outcome.

    ``config`` adds entries to the ``sweep`` table of its ``config.toml``;
    ``shared_seconds`` (a folded task's compute time, shared among its
    points) is added to the ``seconds`` of its ``metrics.json``. The status
    ends ``complete`` or ``failed`` (see :func:`compute_point`).
    """
    directory = run.path
    outcome = {"point": point.key, "status": None, "seconds": None, "error": None}
    settings = point.config(run.info["started"])
    settings["sweep"].update(config or {})
    with rundir.logging_to(directory / rundir.LOG_FILE):
        try:
            result, seconds, files = rundir.fill_run(run, settings, compute, figures=figures)
        except Exception as err:  # recorded by fill_run, with its traceback
            return {**outcome, "status": "failed", "error": f"{type(err).__name__}: {err}",
                    "seconds": run.info["seconds"]}
        if shared_seconds is not None:
            seconds += shared_seconds
            metrics = read_metrics(directory)
            metrics["seconds"] = seconds
            rundir.write_json(directory / "metrics.json", metrics)
        if getattr(result, "all_diverged", False):
            run.set_status("failed", error=f"every member diverged: {'; '.join(result.diverged)}", files=files)
            return {**outcome, "status": "failed", "seconds": seconds, "error": run.info["error"]}
        run.set_status("complete", files=files)
    return {**outcome, "status": "complete", "seconds": seconds}


def read_metrics(directory) -> dict | None:
    try:
        return json.loads((Path(directory) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
