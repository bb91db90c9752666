"""Progress of long loops: a tqdm bar on a terminal or in a notebook, occasional plain lines elsewhere.

When stderr is not a terminal (a log file, a pipe, a batch job) a redrawn bar
would fill it with carriage returns; :class:`PlainProgress` prints one line
every :data:`PLAIN_INTERVAL` seconds and one at the end instead.
"""

from __future__ import annotations

import sys
import time

#: Seconds between two plain progress lines.
PLAIN_INTERVAL = 10.0


class PlainProgress:
    """The part of tqdm's interface the loops use, printing ``desc: n/total unit (p%), t s`` now and then."""

    def __init__(self, *, total: int, desc: str, unit: str = "it", disable: bool = False,
                 interval: float = PLAIN_INTERVAL, file=None):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.interval, self.file, self.n = interval, file, 0
        self._start = self._last = time.perf_counter()

    def _line(self, now: float) -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {now - self._start:.1f} s",
              file=self.file or sys.stderr, flush=True)
        self._last = now

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable:
            now = time.perf_counter()
            if now - self._last >= self.interval:
                self._line(now)

    def close(self) -> None:
        if not self.disable and self.n:
            self._line(time.perf_counter())
            self.disable = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and shell.get_ipython() is not None and "ipykernel" in sys.modules
    except AttributeError:
        return False


def progress_bar(*, total: int, desc: str, unit: str = "it", disable: bool = False):
    """A progress bar fit for where stderr goes: tqdm on a terminal or in a notebook, plain lines elsewhere."""
    if _in_notebook():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=disable)
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=stream)
    return PlainProgress(total=total, desc=desc, unit=unit, disable=disable)
