"""Run directories and output files: checked before any compute, written atomically, never mixed.

A run directory holds ``config.toml`` (every setting, the seed, backend, dtype
and package versions), ``metrics.json``, ``arrays.npz``, PNG figures,
``log.txt`` (what the run printed) and ``status.json``::

    {"status": "running" | "complete" | "interrupted" | "failed",
     "error": null | "what went wrong", "command": "bbp run ...", "argv": [...],
     "git": {"commit": "...", "dirty": false} | null, "host": "...", "pid": 1234,
     "started": "2026-11-29T22:15:37+00:00", "ended": null | "...", "seconds": null | 12.3}

``status.json`` is written first (``running``) and last; only a directory whose
status is ``complete`` holds a whole run. A ``running`` status whose directory
lock is free (:func:`is_locked`) belongs to a process that died.

:class:`RunDirectory` creates or claims a directory: default directories get a
unique name (timestamp plus a random suffix, created with one ``mkdir``); a
given one is locked (``fcntl.flock`` on ``.lock``) for the run's lifetime, and
must be empty unless ``overwrite`` is set, which empties it first. Every file is
written through a temporary file and a rename, with the permissions the umask
gives (0644 under umask 022).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import math
import os
import platform
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

VERSIONED_PACKAGES = ("beyond-backprop", "numpy", "scipy", "sympy", "cvxpy", "array-api-compat", "matplotlib",
                      "cupy-cuda12x")
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
LOG_FILE = "log.txt"
STATUSES = ("running", "complete", "interrupted", "failed")


class OutputPathError(ValueError):
    """An output path that cannot be used: it names the path and the reason."""


# --- files -------------------------------------------------------------------------------------------

def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (mode from the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(value):
    """Convert numpy values and arrays to JSON; non-finite numbers become ``null``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def _tomlable(value):
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_tomlable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_toml(path: Path, data: dict) -> None:
    import tomli_w

    write_text(path, tomli_w.dumps(_tomlable(data)))


def write_arrays(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_figure(path: Path, figure) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --- checking output paths before any compute ---------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _probe_directory(directory: Path, label: str, path: Path) -> None:
    """Create and remove a file in ``directory``: the only test of writability that also holds for root."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".bbp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"{label} {path}: cannot write in {directory} ({err.strerror or err})") from None


def check_output_file(path, label: str = "output file") -> Path:
    """Check that ``path`` can be written as a file (missing parent folders are allowed); returns it.

    Raises :class:`OutputPathError` naming the path and the reason: it is a
    directory, a parent is a file, or the nearest existing folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{label} {path}: is a directory, expected a file path")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise OutputPathError(f"{label} {path}: {existing} is not a directory")
    _probe_directory(existing, label, path)
    return path


def check_output_dir(path, label: str = "output directory") -> Path:
    """Check that ``path`` can be used as a directory to write in (it may not exist yet); returns it."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = "is a file" if existing == path else f"{existing} is not a directory"
        raise OutputPathError(f"{label} {path}: {what}, expected a directory")
    _probe_directory(existing, label, path)
    return path


# --- provenance ---------------------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict | None:
    """The commit and dirty flag of the checkout this package runs from, or ``None`` outside one."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        # --no-optional-locks: never take the index lock (a run stopped mid-call must not leave one behind)
        changes = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                                  "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changes.strip())}


def read_status(directory) -> dict | None:
    """The parsed ``status.json`` of a run directory, or ``None`` when it has none (or it is unreadable)."""
    try:
        return json.loads((Path(directory) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_locked(directory) -> bool:
    """Whether a live process holds the run directory's lock."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# --- the run directory --------------------------------------------------------------------------------

class RunDirectory:
    """A run directory held by this process: unique or locked, with its ``status.json``.

    Use :meth:`create`; call :meth:`set_status` as the run goes and :meth:`close`
    (or use it as a context manager) to release the lock.
    """

    _lock_fd = None  # until __init__ has finished, the lock belongs to create()

    def __init__(self, path: Path, lock_fd: int, argv: list[str] | None = None):
        self.path = Path(path)
        self.info = {"status": "running", "error": None, "command": shlex.join(argv or sys.argv),
                     "argv": list(argv or sys.argv), "git": git_state(), "host": socket.gethostname(),
                     "pid": os.getpid(), "started": _now(), "ended": None, "seconds": None}
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, path=None, *, name: str = "run", root="runs", overwrite: bool = False,
               argv: list[str] | None = None) -> RunDirectory:
        """Create a unique ``root/NAME-TIMESTAMP-XXXX`` directory, or claim ``path``.

        A claimed directory must not be locked by another run and must be empty
        (apart from its lock) unless ``overwrite``, which removes its content.
        Raises :class:`OutputPathError` with the reason otherwise. Writes
        ``status.json`` with ``status = "running"``.
        """
        if path is None:
            directory = cls._unique(Path(root), name)
        else:
            directory = check_output_dir(path, "run directory")
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputPathError(f"run directory {directory}: cannot create it ({err.strerror})") from None
        lock_fd, run = cls._lock(directory), None
        try:
            content = [p for p in directory.iterdir() if p.name != LOCK_FILE]
            if content and not overwrite:
                raise OutputPathError(f"run directory {directory} is not empty ({len(content)} entries, e.g. "
                                      f"{content[0].name}); choose another --out or pass --overwrite to replace "
                                      f"its content")
            for entry in content:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            run = cls(directory, lock_fd, argv)
            run.set_status("running")
        except BaseException:
            if run is not None:
                run.close()  # the run owns the lock now: closing it twice could close another file
            else:
                os.close(lock_fd)
            raise
        return run

    @staticmethod
    def _unique(root: Path, name: str) -> Path:
        check_output_dir(root, "runs folder")
        root.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            candidate = root / f"{name}-{stamp}-{secrets.token_hex(2)}"
            try:
                candidate.mkdir()  # atomic: exactly one process creates it
                return candidate
            except FileExistsError:
                continue
        raise OutputPathError(f"could not find a free run directory name under {root}")

    @staticmethod
    def _lock(directory: Path) -> int:
        try:
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OutputPathError(f"run directory {directory}: cannot write in it ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                owner = read_status(directory) or {}
                who = f" (pid {owner['pid']} on {owner['host']})" if "pid" in owner and "host" in owner else ""
                raise OutputPathError(f"run directory {directory} is in use by another run{who}; "
                                      f"choose another --out") from None
            raise
        return fd

    def set_status(self, status: str, *, error: str | None = None, **extra) -> None:
        """Write ``status.json`` atomically; any status but ``running`` also records the end time."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(STATUSES)}")
        self.info.update(extra, status=status, error=error)
        if status != "running":
            ended = dt.datetime.now(dt.timezone.utc)
            started = dt.datetime.fromisoformat(self.info["started"])
            self.info.update(ended=ended.isoformat(timespec="seconds"),
                             seconds=round((ended - started).total_seconds(), 3))
        write_json(self.path / STATUS_FILE, self.info)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


# --- the log ------------------------------------------------------------------------------------------

class _Tee:
    """A text stream that writes to ``stream`` and, line by line, to ``log``.

    Carriage-return redraws (progress bars on a terminal) reach the log as their
    last state only, so the log has no ``\\r`` clutter.
    """

    def __init__(self, stream, log):
        self._stream, self._log, self._pending = stream, log, ""

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._log.write(line.rsplit("\r", 1)[-1] + "\n")
        if lines:
            self._log.flush()
        return n

    def flush_pending(self) -> None:
        last = self._pending.rsplit("\r", 1)[-1]
        if last.strip():
            self._log.write(last + "\n")
        self._pending = ""
        self._log.flush()

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def logging_to(path: Path):
    """Copy what is printed on stdout and stderr to ``path`` while the block runs."""
    with open(path, "a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            for tee in (sys.stdout, sys.stderr):
                if isinstance(tee, _Tee):
                    tee.flush_pending()
            sys.stdout, sys.stderr = out, err


# --- filling a run directory --------------------------------------------------------------------------

#: The files every complete run directory holds (besides ``status.json`` and ``log.txt``).
RUN_FILES = ("config.toml", "metrics.json", "arrays.npz")


def partial_records(entries) -> tuple[dict, list]:
    """Arrays and a per-training summary of the records an interrupted run kept (:func:`sim.interrupt.journal`)."""
    arrays, parts = {}, []
    for i, (label, res) in enumerate(entries):
        arrays[f"{i}_{label}_steps"] = res.steps
        arrays.update({f"{i}_{label}_{k}": v for k, v in res.metrics.items()})
        last = {k: v[-1] for k, v in res.metrics.items() if len(v)}
        parts.append({"label": label, "last_recorded_step": int(res.steps[-1]) if len(res.steps) else None,
                      "last_record_per_member": last})
    return arrays, parts


def fill_run(run: RunDirectory, config: dict, compute, *, figures: bool = True):
    """Write a run's files around ``compute()`` (an experiment's run); returns ``(result, seconds, files)``.

    ``config.toml`` first, then ``compute() -> ExperimentResult``, then
    ``metrics.json`` (``experiment``, ``status``, ``seconds``, ``diverged``,
    ``all_diverged`` and the result's metrics), ``arrays.npz`` and, with
    ``figures``, one PNG per figure; ``files`` names them. The status is left
    ``running`` for the caller to set (and what is printed goes where the
    caller sends it: wrap the call in :func:`logging_to`). If ``compute`` is stopped by a signal
    (:class:`sim.interrupt.RunInterrupted`), the records of the journal are
    written as partial metrics and arrays, the status becomes ``interrupted``
    and the exception goes on; any other error sets the status ``failed``
    with the error and its traceback, and goes on. Used by ``bbp run`` and by
    every point of a sweep (:mod:`sim.sweep`), so a point is a run.
    """
    import traceback

    from . import interrupt

    out, name = run.path, config["experiment"]
    with interrupt.journal() as journal:
        start = time.perf_counter()
        try:
            write_toml(out / "config.toml", config)
            result = compute()
            seconds = time.perf_counter() - start
            write_json(out / "metrics.json", {"experiment": name, "status": "complete", "seconds": seconds,
                                              "diverged": result.diverged,
                                              "all_diverged": getattr(result, "all_diverged", False),
                                              **result.metrics})
            write_arrays(out / "arrays.npz", result.arrays)
            shown = result.figures if figures else {}
            for figure_name, fig in shown.items():
                write_figure(out / f"{figure_name}.png", fig)
        except interrupt.RunInterrupted as stop:
            with interrupt.deferred():
                arrays, parts = partial_records(journal)
                write_json(out / "metrics.json", {"experiment": name, "status": "interrupted",
                                                  "seconds": time.perf_counter() - start, "partial": parts})
                write_arrays(out / "arrays.npz", arrays)
                run.set_status("interrupted", error=f"stopped by {stop.signal_name}", partial_records=len(parts))
            raise
        except BaseException as err:
            with interrupt.deferred():
                run.set_status("failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            raise
    return result, seconds, [*RUN_FILES, *(f"{n}.png" for n in shown)]
