"""The ``bbp`` command line (sim.cli) and the verify report (theory.report)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from theory.claims import CheckResult, Outcome, sabotaged

DESIGN_KEYS = {"id", "source", "statement", "status", "instances", "max_violation", "tolerance", "seconds"}
ROOT = Path(__file__).resolve().parents[1]
#: A claim of ours that is fast, has a figure and breaks under ``sabotaged("dfa")``.
FAST_CLAIM = "dfa.structure"


def test_list_shows_experiments_and_claims(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fa-linear" in out and "dfa-alignment" in out
    assert FAST_CLAIM in out and "symbolic.conservation" in out and "refinetti.output_width" in out


@pytest.fixture(scope="module")
def fa_linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fa"
    code = main(["run", "fa-linear", "--quick", "--seeds", "2", "--out", str(out)])
    return code, out


def test_run_writes_the_run_directory(fa_linear_run):
    code, out = fa_linear_run
    assert code == 0
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["experiment"] == "fa-linear" and config["seed"] == 0 and config["seeds"] == 2
    assert config["backend"] == "numpy" and config["dtype"] == "float64" and config["quick"] is True
    assert config["settings"]["steps"] == 800 and "hidden" in config["settings"]
    assert "numpy" in config["versions"] and "python" in config["versions"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "fa-linear" and "fa" in metrics
    with np.load(out / "arrays.npz") as arrays:
        assert arrays["fa_loss"].shape[1] == 2
    assert (out / "fa_linear.png").stat().st_size > 1000
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_run_unknown_experiment_exits_2(capsys, tmp_path):
    assert main(["run", "no-such-experiment", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no-such-experiment" in err and "fa-linear" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("setting", ["no_such_key=1", "steps=many", "lr=nan", "steps"])
def test_run_bad_set_exits_2(setting, capsys, tmp_path):
    assert main(["run", "fa-linear", "--quick", "--seeds", "1", "--set", setting, "--out", str(tmp_path / "x")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_verify_one_claim_writes_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["verify", "--claim", FAST_CLAIM, "--quick", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 1
    assert set(data[0]) == DESIGN_KEYS | {"tasks", "members"}  # the design's keys, plus the two counts
    assert data[0]["id"] == FAST_CLAIM and data[0]["status"] == "pass"
    assert data[0]["max_violation"] <= data[0]["tolerance"]
    out = capsys.readouterr().out
    assert FAST_CLAIM in out and "PASS" in out and "1 of 1 claims pass" in out


def test_verify_unknown_claim_exits_2(capsys):
    assert main(["verify", "--claim", "nonexistent"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_verify_fails_with_exit_1_when_a_rule_is_broken(tmp_path, capsys):
    path = tmp_path / "broken.json"
    with sabotaged("dfa"):
        assert main(["verify", "--claim", FAST_CLAIM, "--quick", "--json", str(path)]) == 1
    assert json.loads(path.read_text())[0]["status"] == "fail"
    assert "FAIL" in capsys.readouterr().out


def test_verify_report(tmp_path):
    directory = tmp_path / "report"
    assert main(["verify", "--claim", FAST_CLAIM, "--claim", "symbolic.fa_chain_limit", "--quick",
                 "--report", str(directory)]) == 0
    text = (directory / "report.md").read_text()
    assert "| id | source | statement | instances | worst violation | tolerance | verdict | seconds |" in text
    assert f"`{FAST_CLAIM}`" in text and "PASS" in text
    for name in ("dfa_structure.png", "symbolic_fa_chain_limit.png"):
        assert (directory / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text


def test_verify_as_a_subprocess(tmp_path):
    path = tmp_path / "sub.json"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "verify", "--claim", FAST_CLAIM, "--quick", "--json",
                           str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(path.read_text())[0]["status"] == "pass"


# --- the report on its own ---------------------------------------------------------------------------

def test_report_escapes_cells_and_survives_missing_results_and_broken_plots(tmp_path, monkeypatch):
    from theory import claims, report

    def bad_plot(result, ax):
        raise RuntimeError("no figure today")

    monkeypatch.setitem(claims.REGISTRY, "test.bad_plot",
                        claims.Claim("test.bad_plot", "test", "s", "c", lambda s, n: None, ("bp",), plot=bad_plot))
    outcomes = [
        Outcome("test.pipes", "paper | 2020", "a | b", "pass", 3, 0.5, 1.0, 0.2),
        Outcome("test.error", "x", "y", "error", 5, math.nan, math.nan, 0.1, "ValueError: nope"),
        Outcome("test.bad_plot", "x", "y", "fail", 1, math.inf, 1.0, 0.1, result=CheckResult(1, math.inf, 1.0)),
    ]
    path = report.write_report(outcomes, tmp_path / "r")
    text = path.read_text()
    assert path == tmp_path / "r" / "report.md"
    assert "paper \\| 2020" in text and "a \\| b" in text
    assert "**ERROR**" in text and "ValueError: nope" in text and "**FAIL**" in text
    assert "1 of 3 claims pass" in text and "inf" in text and "n/a" in text
    assert "no figure today" in text
    assert not (tmp_path / "r" / "figures" / "test_bad_plot.png").exists()


def test_report_figure_names_are_safe():
    from theory.report import figure_name

    assert figure_name("refinetti.align_then_memorise") == "refinetti_align_then_memorise.png"
    assert figure_name("a/b c") == "a_b_c.png"


# --- run directories: never mixed, never lost, never unreadable ----------------------------------------

def _status(directory) -> dict:
    return json.loads((Path(directory) / "status.json").read_text())


def _no_compute(monkeypatch):
    """Make any experiment, claim or bench computation fail the test: the command must stop before it."""
    def boom(*args, **kwargs):
        raise AssertionError("computed before checking the output paths")

    monkeypatch.setattr("sim.experiments.run_experiment", boom)
    monkeypatch.setattr("theory.claims.run_claim", boom)
    monkeypatch.setattr("sim.bench.run_bench", boom)


def test_run_directory_records_status_log_and_provenance(fa_linear_run):
    code, out = fa_linear_run
    status = _status(out)
    assert status["status"] == "complete" and status["error"] is None
    assert status["argv"][:3] == ["bbp", "run", "fa-linear"] and status["command"].startswith("bbp run fa-linear")
    assert status["host"] and status["started"] <= status["ended"] and status["seconds"] > 0
    log = (out / "log.txt").read_text()
    assert "fa-linear: bp: final loss" in log and f"wrote {out}/" in log and "\r" not in log


def test_metrics_keep_every_members_final_values(fa_linear_run):
    _, out = fa_linear_run
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["fa"]["final_loss"]
    assert len(final["members"]) == 2
    np.testing.assert_allclose(np.mean(final["members"]), final["mean"], rtol=1e-12)
    with np.load(out / "arrays.npz") as arrays:
        np.testing.assert_allclose(final["members"], arrays["fa_loss"][-1], rtol=1e-12)


def test_default_run_directories_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["run", "scalar-chain", "--quick", "--seeds", "1", "--set", "grid=3"]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(_status(r)["status"] == "complete" for r in runs)


def test_a_reused_out_stops_and_overwrite_leaves_no_stale_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "dfa_nonlinear.png").write_bytes(b"stale figure")
    args = ["run", "scalar-chain", "--quick", "--seeds", "1", "--set", "grid=3", "--out", str(out)]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err and (out / "dfa_nonlinear.png").exists()
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "dfa_nonlinear.png").exists() and _status(out)["status"] == "complete"


def test_two_runs_into_one_out_at_once_never_mix(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "fa-linear", "--quick", "--seeds", "1",
                               "--seed", str(seed), "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another run" in loser or "not empty" in loser
    winner_seed = (1, 2)[[code for code, _ in results].index(0)]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["seed"] == winner_seed and _status(out)["status"] == "complete"
    assert f"--seed {winner_seed}" in _status(out)["command"]


def test_files_honour_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert main(["run", "scalar-chain", "--quick", "--seeds", "1", "--set", "grid=3", "--out",
                     str(tmp_path / "r")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r").iterdir()}
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("command", [
    ["run", "fa-linear", "--out", "{file}"],
    ["run", "fa-linear", "--out", "{file}/sub"],
    ["run", "fa-linear", "--out", "/proc/bbp-test/out"],
    ["verify", "--json", "{dir}"],
    ["verify", "--json", "/proc/bbp-test/x.json"],
    ["verify", "--report", "{file}"],
    ["bench", "--json", "{dir}"],
    ["bench", "--json", "{file}/x.json"],
])
def test_bad_output_paths_end_before_any_compute(command, tmp_path, monkeypatch, capsys):
    _no_compute(monkeypatch)
    (tmp_path / "afile").write_text("x")
    args = [a.format(file=tmp_path / "afile", dir=tmp_path) for a in command]
    start = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    assert args[-1] in err and "Traceback" not in err


def test_rerun_reproduces_a_directory(fa_linear_run, tmp_path, capsys):
    _, out = fa_linear_run
    again = tmp_path / "again"
    assert main(["rerun", str(out), "--out", str(again)]) == 0
    first, second = tomllib.loads((out / "config.toml").read_text()), tomllib.loads((again / "config.toml").read_text())
    assert first["settings"] == second["settings"] and first["seed"] == second["seed"]
    with np.load(out / "arrays.npz") as a, np.load(again / "arrays.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    assert main(["run", "--config", str(out / "config.toml"), "--seeds", "1", "--out", str(tmp_path / "one")]) == 0
    assert tomllib.loads((tmp_path / "one" / "config.toml").read_text())["seeds"] == 1
    assert main(["run", "--config", str(tmp_path / "nothing")]) == 2
    assert "cannot read the run configuration" in capsys.readouterr().err


# --- stopping: SIGINT and SIGTERM ---------------------------------------------------------------------

def _start(args, tmp_path):
    env = {**__import__("os").environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sim.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout=120.0):
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_keeps_the_records_so_far(signum, code, tmp_path):
    out = tmp_path / "run"
    proc = _start(["run", "dfa-nonlinear", "--seeds", "2", "--out", str(out)], tmp_path)
    _wait_for(lambda: (out / "config.toml").exists())
    time.sleep(2.5)  # well into the training of the first rule
    proc.send_signal(signum)
    start = time.perf_counter()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.perf_counter() - start < 3.0  # stops within a second, plus writing what it has
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("bbp run: interrupted")]
    status = _status(out)
    assert status["status"] == "interrupted" and signal.Signals(signum).name in status["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["partial"]
    with np.load(out / "arrays.npz") as arrays:
        loss = arrays[next(k for k in arrays.files if k.endswith("_loss"))]
    assert loss.ndim == 2 and loss.shape[0] >= 1 and loss.shape[1] == 2
    assert (out / "config.toml").exists()


def test_a_signal_while_writing_marks_the_directory_interrupted(tmp_path, monkeypatch, capsys):
    from sim import interrupt, rundir

    def stopped(*args, **kwargs):
        raise interrupt.RunInterrupted(signal.SIGINT)

    monkeypatch.setattr(rundir, "write_figure", stopped)
    out = tmp_path / "r"
    assert main(["run", "scalar-chain", "--quick", "--seeds", "1", "--set", "grid=3", "--out", str(out)]) == 130
    assert _status(out)["status"] == "interrupted"
    assert "interrupted by SIGINT" in capsys.readouterr().err


def test_verify_interrupted_keeps_the_finished_outcomes(tmp_path, monkeypatch, capsys):
    from sim import interrupt
    from theory import claims

    real, calls = claims.run_claim, []

    def second_one_stops(c, **kwargs):
        calls.append(c.id)
        if len(calls) == 2:
            raise interrupt.RunInterrupted(signal.SIGINT)
        return real(c, **kwargs)

    monkeypatch.setattr(claims, "run_claim", second_one_stops)
    path = tmp_path / "v.json"
    assert main(["verify", "--quick", "--claim", FAST_CLAIM, "--claim", "symbolic.fa_chain_limit",
                 "--json", str(path)]) == 130
    assert [o["id"] for o in json.loads(path.read_text())] == [FAST_CLAIM]
    err = capsys.readouterr().err
    assert "interrupted by SIGINT after 1 of 2 claims" in err and "Traceback" not in err


def test_bench_and_verify_stop_on_a_real_signal(tmp_path):
    for args in (["bench"], ["verify"]):
        proc = _start(args, tmp_path)
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr


def test_a_run_where_every_member_diverged_exits_3_and_is_marked_failed(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "sg-linear", "--quick", "--seeds", "2", "--set", "singular_values=[100]", "--set", "lr=1",
                 "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "every member diverged" in captured.out and "every member diverged" in captured.err
    status = _status(out)
    assert status["status"] == "failed" and status["error"].startswith("every member diverged")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all_diverged"] is True and metrics["diverged"]
