"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM, and the records it keeps until then.

The shell wraps a command in :func:`handle_signals`. On the first signal:

* inside a :func:`polling` region (the trainer's step loop), a flag is set and
  the loop stops at its next safe point, between two whole steps
  (:func:`check` raises :class:`RunInterrupted` there); if it has not stopped
  within :data:`GRACE_SECONDS`, it is interrupted where it is;
* anywhere else, :class:`RunInterrupted` is raised at once, the way Python
  raises ``KeyboardInterrupt``.

:class:`RunInterrupted` derives from ``BaseException`` so that code which
catches ``Exception`` (a claim check classifying errors, a worker pool) does
not swallow it.

What a run has done survives an interrupt through :func:`journal`: the trainer
adds each finished or interrupted training's records to the active journal
(:func:`record`), and the shell writes the journal when the run stops early.
Outside :func:`journal` nothing is kept. All of this is main-thread state:
Python runs signal handlers in the main thread only.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

#: Seconds a polling loop has, after the first signal, to reach its safe point.
GRACE_SECONDS = 0.8


class RunInterrupted(BaseException):
    """The run was stopped by a signal; ``signum`` names it, ``exit_status`` is ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self):
        self.signum: int | None = None  # the first signal received, if any
        self.polling = 0  # depth of polling regions
        self.deferred = 0  # depth of regions where signals only set the flag (cleanup after a stop)
        self.installed = False
        self.journal: list | None = None


_state = _State()


def requested() -> int | None:
    """The signal that asked the run to stop, or ``None``."""
    return _state.signum


def check() -> None:
    """Raise :class:`RunInterrupted` if a stop was requested (call it at a safe point)."""
    if _state.signum is not None and _state.deferred == 0:
        _disarm()
        raise RunInterrupted(_state.signum)


@contextmanager
def polling():
    """A region that calls :func:`check` often: a signal waits for its next safe point."""
    _state.polling += 1
    try:
        yield
    finally:
        _state.polling -= 1


@contextmanager
def deferred():
    """A region that must finish (writing what a stopped run has): signals only set the flag."""
    _state.deferred += 1
    try:
        yield
    finally:
        _state.deferred -= 1


def _disarm() -> None:
    if hasattr(signal, "setitimer") and _state.installed:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _on_signal(signum, frame):
    first = _state.signum is None
    if first:
        _state.signum = signum
    if _state.deferred:
        return
    if first and _state.polling and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)  # the fallback if no safe point comes
        return
    _disarm()
    raise RunInterrupted(_state.signum)


def _on_alarm(signum, frame):
    if _state.signum is not None and not _state.deferred:
        raise RunInterrupted(_state.signum)


@contextmanager
def handle_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted` for the duration (main thread only).

    Outside the main thread, or nested in an active handler, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in signums}
    if hasattr(signal, "SIGALRM"):
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _on_alarm)
    _state.installed, _state.signum = True, None
    try:
        yield
    finally:
        _disarm()
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.installed, _state.signum = False, None


@contextmanager
def journal():
    """Collect the records of the trainings run inside; yields the list of ``(label, result)``."""
    outer, entries = _state.journal, []
    _state.journal = entries
    try:
        yield entries
    finally:
        _state.journal = outer


def record(label: str, result) -> None:
    """Add a training's records (an object with ``steps`` and ``metrics``) to the active journal."""
    if _state.journal is not None:
        _state.journal.append((label, result))
