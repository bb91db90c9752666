"""Run directories, output-path checks, the log, plain progress lines and stopping on a signal (the shell's
building blocks; the ``bbp`` commands that use them are tested in test_cli.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from sim import interrupt, rundir
from sim.progress import PlainProgress, progress_bar


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_default_directories_are_unique_even_within_one_second(tmp_path):
    runs = [rundir.RunDirectory.create(None, name="fa-linear", root=tmp_path) for _ in range(20)]
    paths = {r.path for r in runs}
    assert len(paths) == 20 and all(p.parent == tmp_path and p.name.startswith("fa-linear-") for p in paths)
    for r in runs:
        assert rundir.read_status(r.path)["status"] == "running"
        r.close()


def test_a_locked_directory_is_refused(tmp_path):
    with rundir.RunDirectory.create(tmp_path / "run") as first:
        assert rundir.is_locked(first.path)
        with pytest.raises(rundir.OutputPathError, match="in use by another run"):
            rundir.RunDirectory.create(tmp_path / "run", overwrite=True)
    assert not rundir.is_locked(tmp_path / "run")


def test_a_non_empty_directory_needs_overwrite_which_removes_everything(tmp_path):
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "dfa_nonlinear.png").write_bytes(b"stale")
    (out / "sub" / "x").write_text("stale")
    with pytest.raises(rundir.OutputPathError, match="not empty.*--overwrite"):
        rundir.RunDirectory.create(out)
    assert (out / "dfa_nonlinear.png").exists()
    with rundir.RunDirectory.create(out, overwrite=True) as run:
        assert sorted(p.name for p in run.path.iterdir()) == [".lock", "status.json"]


@pytest.mark.parametrize("make, expect", [
    (lambda p: (p.write_text("x"), p)[1], "is a file"),
    (lambda p: (p.write_text("x"), p / "sub")[1], "is not a directory"),
])
def test_bad_directories_name_the_path_and_the_reason(tmp_path, make, expect):
    path = make(tmp_path / "target")
    with pytest.raises(rundir.OutputPathError, match=expect) as err:
        rundir.RunDirectory.create(path)
    assert str(path) in str(err.value)


def test_output_file_checks(tmp_path):
    assert rundir.check_output_file(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    with pytest.raises(rundir.OutputPathError, match="is a directory"):
        rundir.check_output_file(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(rundir.OutputPathError, match="not a directory"):
        rundir.check_output_file(tmp_path / "f" / "out.json")
    with pytest.raises(rundir.OutputPathError, match="cannot write"):
        rundir.check_output_file("/proc/bbp-no-such/out.json")  # unwritable even for root


def test_files_honour_the_umask(tmp_path, umask022):
    rundir.write_json(tmp_path / "a.json", {"x": 1})
    rundir.write_arrays(tmp_path / "a.npz", {"x": [1.0]})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.npz").stat().st_mode) == 0o644
    os.umask(0o027)
    rundir.write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640


def test_status_records_provenance_and_end(tmp_path):
    with rundir.RunDirectory.create(tmp_path / "run", argv=["bbp", "run", "x", "--set", "a=b c"]) as run:
        running = rundir.read_status(run.path)
        run.set_status("failed", error="ValueError: boom")
    done = rundir.read_status(tmp_path / "run")
    assert running["status"] == "running" and running["ended"] is None
    assert done["status"] == "failed" and done["error"] == "ValueError: boom"
    assert done["command"] == "bbp run x --set 'a=b c'" and done["pid"] == os.getpid() and done["host"]
    assert done["ended"] >= done["started"] and done["seconds"] >= 0
    git = done["git"]
    if (Path(rundir.__file__).resolve().parents[1] / ".git").exists():
        assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)
    with pytest.raises(ValueError, match="unknown run status"):
        run.set_status("done")


def test_the_log_keeps_lines_without_carriage_returns(tmp_path, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    with rundir.logging_to(tmp_path / "log.txt"):
        print("summary line")
        import sys

        sys.stderr.write("\rbar 10%\rbar 50%\rbar 100%\n")
        sys.stderr.write("\rdangling 3%")
    text = (tmp_path / "log.txt").read_text()
    assert text == "summary line\nbar 100%\ndangling 3%\n"
    assert "\r" in err.getvalue() and out.getvalue() == "summary line\n"


def test_plain_progress_prints_occasional_lines():
    buf = io.StringIO()
    with PlainProgress(total=10, desc="train fa", unit="step", interval=0.0, file=buf) as bar:
        for _ in range(10):
            bar.update(1)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("train fa: 1/10 step (10%)") and lines[-1].startswith("train fa: 10/10 step (100%)")
    assert "\r" not in buf.getvalue()
    quiet = io.StringIO()
    with PlainProgress(total=10, desc="x", interval=3600.0, file=quiet) as bar:
        bar.update(5)
    assert quiet.getvalue().count("\n") == 1  # only the closing line


def test_progress_bar_is_plain_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar(total=5, desc="x"), PlainProgress)


# --- stopping on a signal ----------------------------------------------------------------------------

def test_a_signal_outside_a_polling_region_interrupts_at_once():
    with interrupt.handle_signals():
        with pytest.raises(interrupt.RunInterrupted) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert stop.value.exit_status == 143 and stop.value.signal_name == "SIGTERM"
    assert interrupt.requested() is None  # reset once the handler is gone


def test_a_polling_loop_stops_at_its_safe_point():
    done = 0
    with interrupt.handle_signals(), pytest.raises(interrupt.RunInterrupted) as stop:
        with interrupt.polling():
            for step in range(1000):
                interrupt.check()
                if step == 3:
                    os.kill(os.getpid(), signal.SIGINT)
                done += 1  # a whole step
    assert done == 4 and stop.value.exit_status == 130


def test_a_polling_loop_that_never_checks_is_stopped_after_the_grace_time():
    start = time.perf_counter()
    with interrupt.handle_signals(), pytest.raises(interrupt.RunInterrupted):
        with interrupt.polling():
            os.kill(os.getpid(), signal.SIGINT)
            while time.perf_counter() - start < 10:
                pass
    assert time.perf_counter() - start < 5 * interrupt.GRACE_SECONDS


def test_deferred_regions_finish_and_the_journal_keeps_records():
    with interrupt.handle_signals(), interrupt.journal() as kept:
        interrupt.record("fa", "result")
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            interrupt.check()  # no raise while deferred
        assert interrupt.requested() == signal.SIGINT
    assert kept == [("fa", "result")]
    interrupt.record("outside", None)  # no journal: nothing kept, no error


def test_run_interrupted_is_not_an_exception():
    assert not issubclass(interrupt.RunInterrupted, Exception)
    assert json.dumps(str(interrupt.RunInterrupted(signal.SIGINT))) == '"SIGINT"'
