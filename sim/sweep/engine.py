"""Running a sweep: plan, skip what is done, fold, distribute with Dask, collect, rebuild the table.

The engine is Dask distributed (:mod:`distributed`): by default a
``LocalCluster`` of processes, one per CPU, one thread each, BLAS limited to
one thread; with an address, an existing cluster (``dask scheduler`` /
``dask worker``, dask-jobqueue, Kubernetes). A task is one call of
:func:`run_task` on a worker: one point, or several folded into one ensemble
(:mod:`sim.sweep.fold`). Each task writes its points' run directories itself,
so what a task has finished is on disk whatever happens to the sweep after.
``serial=True`` runs the same tasks in this process without Dask.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributed import WorkerPlugin

from .. import interrupt, rundir
from ..backend import cpu_count
from .fold import fold_tasks, run_folded
from .point import TO_COMPUTE, compute_point, point_dir, point_state, settle
from .spec import SweepSpec, canonical_json, plan

#: Seconds to wait for a scheduler named by address before giving up.
CONNECT_TIMEOUT = 5
SPEC_FILE = "sweep.toml"
DEFAULT_ROOT = "sweeps"


class SchedulerUnreachable(ValueError):
    """The Dask scheduler named by ``--scheduler`` did not answer."""


@dataclass
class SweepResult:
    """What a sweep did: its points and tasks, what was skipped, computed and failed, and the table."""

    out: Path
    points: int
    tasks: int  # tasks this run made of the points to compute (folded ones compute several points at once)
    skipped: int  # complete before this run
    computed: int  # points completed by this run
    failed: dict = field(default_factory=dict)  # point -> error
    busy: list = field(default_factory=list)  # points another live process computes
    interrupted: str | None = None  # the signal that stopped the sweep, if any
    seconds: float = 0.0
    table: object = None  # pandas.DataFrame
    folded: int = 0  # tasks that fold several points into one ensemble
    largest_task: int = 0  # ensemble members of the largest task

    @property
    def remaining(self) -> int:
        return self.points - self.skipped - self.computed - len(self.failed)

    def summary(self) -> str:
        parts = [f"{self.points} points", f"{self.skipped} already complete",
                 f"{self.computed} computed in {self.tasks} tasks{self._fold_note()}", f"{len(self.failed)} failed"]
        if self.busy:
            parts.append(f"{len(self.busy)} running elsewhere")
        if self.remaining > len(self.busy):
            parts.append(f"{self.remaining - len(self.busy)} remaining")
        return f"{', '.join(parts)}; {self.seconds:.1f} s"

    def _fold_note(self) -> str:
        return f" ({self.folded} folded, the largest E = {self.largest_task})" if self.folded else ""


def run_task(out: str, points: list, *, figures: bool = False, argv=None, fold: dict | None = None,
             blas_single: bool = True) -> list[dict]:
    """A task: compute its points (folded into one ensemble when ``fold`` says so); one outcome per point."""
    from ..backend import blas_limit

    with blas_limit(1) if blas_single else contextlib.nullcontext():
        if fold is not None:
            return run_folded(out, points, fold, figures=figures, argv=argv)
        return [compute_point(out, p, figures=figures, argv=argv) for p in points]


def default_out(spec: SweepSpec, points) -> Path:
    """``sweeps/EXPERIMENT-DIGEST``: named by the spec, so the same command again is the same sweep."""
    return Path(DEFAULT_ROOT) / f"{spec.experiment}-{sweep_digest(spec, points)}"


def sweep_digest(spec: SweepSpec, points) -> str:
    """8 hex digits naming a sweep by what it computes: the swept settings and its points' names.

    ``--grid lr=0.01`` and a spec file's ``lr = [1e-2]`` are the same sweep.
    """
    import hashlib

    text = canonical_json({"experiment": spec.experiment, "swept": spec.swept, "points": [p.key for p in points]})
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def claim_out(out: Path, spec: SweepSpec, points) -> None:
    """Check ``out`` and record the spec in ``out/sweep.toml``; a different sweep already there is an error."""
    rundir.check_output_dir(out, "sweep directory")
    path = out / SPEC_FILE
    if path.exists():
        held = read_spec(out)
        if sweep_digest(held, plan(held)) != sweep_digest(spec, points):
            raise ValueError(f"sweep directory {out} holds another sweep (its {SPEC_FILE} has other points); "
                             f"choose another --out, or run the spec in {path} again")
        return
    entries = [p.name for p in out.iterdir()] if out.is_dir() else []
    if entries:
        raise ValueError(f"sweep directory {out} is not empty and holds no {SPEC_FILE} ({len(entries)} entries, "
                         f"e.g. {entries[0]}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_toml(path, {k: v for k, v in spec.to_dict().items() if v is not None})


def read_spec(out) -> SweepSpec:
    """The spec a sweep directory was made with."""
    import tomllib

    path = Path(out) / SPEC_FILE
    try:
        return SweepSpec.from_dict(tomllib.loads(path.read_text()), where=str(path))
    except OSError as err:
        raise ValueError(f"{out} is not a sweep directory: cannot read {path} ({err.strerror or err})") from None


def connect(scheduler: str | None = None, *, workers: int | None = None, dashboard: bool = True):
    """A Dask client and the cluster it owns (``None`` for an external one).

    With ``scheduler``, connect to it or raise :class:`SchedulerUnreachable`
    within :data:`CONNECT_TIMEOUT` seconds; otherwise start a ``LocalCluster``
    of ``workers`` processes (one per CPU), one thread each, on 127.0.0.1.
    """
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT}s"), None
        except (OSError, TimeoutError, ValueError) as err:
            raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT} s "
                                       f"({type(err).__name__}: {err})") from None
    address = ":8787" if dashboard and _has_dashboard() else ":0"  # without bokeh: only the health endpoints
    cluster = LocalCluster(n_workers=workers or cpu_count(), threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=address, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.register_plugin(_QuietWorker(), name="bbp-quiet-worker")
    return client, cluster


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401 - the dashboard needs it
    except ImportError:
        return False
    return True


def dashboard_link(client) -> str | None:
    try:
        has = _has_dashboard() and client.scheduler_info().get("services", {}).get("dashboard")
        return client.dashboard_link if has else None
    except Exception:  # noqa: BLE001 - a link is a courtesy
        return None


class _QuietWorker(WorkerPlugin):
    """A worker plugin: Ctrl-C in the terminal reaches the workers too; only the sweep's process handles it."""

    idempotent = True

    def setup(self, worker):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_sweep(experiment, grid: dict | None = None, *, seeds: int | None = None, settings: dict | None = None,
              out=None, client=None, zip: dict | None = None, seed: int = 0, quick: bool = False,
              backend: str = "numpy", dtype: str = "float64", figures: bool = False, serial: bool = False,
              workers: int | None = None, scheduler: str | None = None, retry_failed: bool = False,
              fold: bool = True, progress: bool = True, argv=None) -> SweepResult:
    """Run a sweep into ``out``; returns a :class:`SweepResult` (its ``table`` is ``results.parquet``).

    ``experiment`` is a name (then ``grid``, ``zip``, ``settings``, ``seeds``
    ... make the spec) or a :class:`SweepSpec`. Points already complete in
    ``out`` are skipped; missing and interrupted ones (failed ones with
    ``retry_failed``) are computed: in this process with ``serial``, else on
    ``client``, the scheduler at ``scheduler``, or a new ``LocalCluster`` of
    ``workers`` processes. With ``fold`` (the default), points that differ
    only in settings their experiment varies per member are computed as one
    ensemble, one task (:mod:`sim.sweep.fold`); the result's ``tasks``,
    ``folded`` and ``largest_task`` say what the sweep became. Bad specs
    raise ``ValueError`` before anything runs. A stop by a signal (``bbp``'s :class:`sim.interrupt.RunInterrupted`)
    ends it with the finished points kept, running ones marked interrupted,
    the table rebuilt and ``interrupted`` set; ``KeyboardInterrupt`` does the
    same and is raised again.
    """
    from .table import write_tables

    spec = experiment if isinstance(experiment, SweepSpec) else SweepSpec(
        experiment, grid=dict(grid or {}), zip=dict(zip or {}), settings=dict(settings or {}), seeds=seeds,
        seed=seed, quick=quick, backend=backend, dtype=dtype, figures=figures)
    points = plan(spec)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    out = Path(out) if out is not None else default_out(spec, points)
    rundir.check_output_dir(out, "sweep directory")
    start = time.perf_counter()
    own_client = cluster = None
    if not serial and client is None and scheduler is not None:
        own_client = client = connect(scheduler)[0]  # an unreachable scheduler fails here, before any work
    try:
        claim_out(out, spec, points)
        states = {p.key: point_state(point_dir(out, p.key)) for p in points}
        wanted = (*TO_COMPUTE, "failed") if retry_failed else TO_COMPUTE
        todo = [p for p in points if states[p.key] in wanted]
        result = SweepResult(out, len(points), 0, sum(s == "complete" for s in states.values()), 0)
        result.busy = [k for k, s in states.items() if s == "running"]
        result.failed = {k: "failed before (run with --retry-failed to compute it again)"
                         for k, s in states.items() if s == "failed" and not retry_failed}
        tasks = fold_tasks(todo, fold=fold)
        result.tasks, result.folded = len(tasks), sum(t.fold is not None for t in tasks)
        result.largest_task = max((t.members for t in tasks), default=0)
        if tasks and not serial and client is None:
            own_client, cluster = connect(workers=min(workers or cpu_count(), len(tasks)))
            client = own_client
        if progress:
            where = "in this process" if serial or client is None else _where(client, cluster)
            print(f"sweep {out}: {len(points)} points, {result.skipped} complete, {len(todo)} to compute "
                  f"in {len(tasks)} tasks{result._fold_note()} {where}", file=sys.stderr, flush=True)
            link = None if serial or client is None else dashboard_link(client)
            if link:
                print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
        try:
            _execute(tasks, result, out=str(out.resolve()), client=None if serial or not tasks else client,
                     figures=spec.figures, argv=argv, progress=progress)
        except (interrupt.RunInterrupted, KeyboardInterrupt) as stop:
            with interrupt.deferred():
                if own_client is not None:
                    _close(own_client, cluster)
                    own_client = None
                for p in todo:
                    settle(point_dir(out, p.key))
                result.interrupted = getattr(stop, "signal_name", "KeyboardInterrupt")
                result.seconds = time.perf_counter() - start
                result.table = write_tables(out, points)
            if isinstance(stop, KeyboardInterrupt):
                raise
            return result
        result.seconds = time.perf_counter() - start
        result.table = write_tables(out, points)
        return result
    finally:
        if own_client is not None:
            _close(own_client, cluster)


def _where(client, cluster) -> str:
    try:
        n = len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001
        n = "?"
    return f"on a local cluster of {n} workers" if cluster is not None else f"on {client.scheduler.address} ({n} workers)"


def _close(client, cluster) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=10)
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


def _execute(tasks, result: SweepResult, *, out: str, client, figures: bool, argv, progress: bool) -> None:
    from ..progress import progress_bar

    total = sum(len(t.points) for t in tasks)
    bar = progress_bar(total=total, desc="sweep", unit="point", disable=not progress or total == 0)

    def collect(task, outcomes):
        for o in outcomes:
            if o["status"] == "complete":
                result.computed += 1
            elif o["status"] == "busy":
                result.busy.append(o["point"])
            else:
                result.failed[o["point"]] = o["error"] or o["status"]
        note = f"done {result.computed}, failed {len(result.failed)}, remaining {total - bar.n - len(task.points)}"
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(note, refresh=False)
        else:
            bar.desc = f"sweep ({note})"
        bar.update(len(task.points))  # shows the note with the new count

    with bar:
        if client is None:
            for task in tasks:
                collect(task, run_task(out, task.points, figures=figures, argv=argv, fold=task.fold,
                                       blas_single=False))
            return
        from distributed import as_completed

        nonce = secrets.token_hex(4)  # a task run again (after its point was deleted) is a new Dask key
        futures = {client.submit(run_task, out, task.points, figures=figures, argv=argv, fold=task.fold,
                                 key=f"bbp-sweep-{task.key}-{nonce}"): task for task in tasks}
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    outcomes = future.result()
                except Exception as err:  # noqa: BLE001 - the task died with its worker (KilledWorker), ...
                    message = f"{type(err).__name__}: {err}"
                    for p in task.points:
                        settle(point_dir(out, p.key), "failed", message)
                    outcomes = [{"point": p.key, "status": "failed", "error": message} for p in task.points]
                collect(task, outcomes)
        except BaseException:
            client.cancel(list(futures))
            raise
