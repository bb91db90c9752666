"""The ``bbp`` command line (sim.cli) and the verify report (theory.report)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
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
    assert set(data[0]) == DESIGN_KEYS
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
