"""Sweeps (:mod:`sim.sweep`, ``bbp sweep``): Dask equals serial, resumable, failures recorded, bad specs refused.

Every sweep here is tiny (``fa-linear --quick`` with a few dozen steps); a
local Dask cluster starts in a few seconds, so the module runs in about two
minutes on two cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import rundir
from sim.cli import main
from sim.sweep import SweepSpec, load, load_curves, plan, run_sweep
from sim.sweep.point import point_dir, point_state
from sim.sweep.spec import split_values

#: A tiny study: 2 x 2 points of fa-linear, 2 seeds each, 40 steps.
GRID = {"lr": ["0.01", "0.03"], "hidden": ["8", "16"]}
FIXED = {"steps": "40", "record_every": "10", "n_samples": "200"}


def _sweep(out, **kw):
    args = dict(seeds=2, settings=FIXED, quick=True, out=out, progress=False)
    args.update(kw)
    return run_sweep("fa-linear", args.pop("grid", GRID), **args)


def _arrays(directory) -> dict:
    with np.load(Path(directory) / "arrays.npz") as data:
        return {k: data[k] for k in data.files}


def _assert_same_points(a, b, points):
    for p in points:
        x, y = _arrays(point_dir(a, p.key)), _arrays(point_dir(b, p.key))
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{p.key} {k}")


def _points(out):
    from sim.sweep import read_spec

    return plan(read_spec(out))


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "sweep"
    result = _sweep(out, serial=True)
    assert result.computed == 4 and not result.failed
    return out


# --- the spec ---------------------------------------------------------------------------------------

def test_values_split_at_commas_outside_brackets():
    assert split_values("0.01,0.02, 0.05") == ["0.01", "0.02", "0.05"]
    assert split_values("[32],[64, 64],[128]") == ["[32]", "[64, 64]", "[128]"]
    assert split_values("") == []


def test_points_are_named_by_their_settings_and_seeds():
    spec = SweepSpec("fa-linear", grid={"lr": ["0.01", "0.02"]}, settings=dict(FIXED), seeds=2, quick=True)
    a, b = plan(spec), plan(spec)
    assert [p.key for p in a] == [p.key for p in b] and len({p.key for p in a}) == 2
    other_seeds = plan(SweepSpec("fa-linear", grid={"lr": ["0.01", "0.02"]}, settings=dict(FIXED), seeds=3,
                                 quick=True))
    assert not {p.key for p in a} & {p.key for p in other_seeds}
    # 0.01 and 1e-2 are the same value, so the same point
    same = plan(SweepSpec("fa-linear", grid={"lr": ["1e-2"]}, settings=dict(FIXED), seeds=2, quick=True))
    assert same[0].key == a[0].key
    zipped = plan(SweepSpec("fa-linear", zip={"lr": ["0.01", "0.02"], "hidden": ["8", "16"]}, settings=dict(FIXED),
                            seeds=2, quick=True))
    assert [(p.values["lr"], p.values["hidden"]) for p in zipped] == [(0.01, 8), (0.02, 16)]


# --- engine: Dask equals serial equals bbp run --------------------------------------------------------

def test_a_local_cluster_sweep_equals_the_serial_sweep_and_bbp_run(serial_sweep, tmp_path):
    out = tmp_path / "dask"
    result = _sweep(out, workers=2)
    # the two learning rates of each width share one ensemble (sim.sweep.fold): 2 tasks of E = 4
    assert (result.points, result.tasks, result.computed, len(result.failed)) == (4, 2, 4, 0)
    points = _points(out)
    _assert_same_points(serial_sweep, out, points)
    # one point is bbp run with the same settings and seed
    p = points[-1]
    run_dir = tmp_path / "run"
    sets = [a for k, v in {**FIXED, "lr": str(p.values["lr"]), "hidden": str(p.values["hidden"])}.items()
            for a in ("--set", f"{k}={v}")]
    assert main(["run", "fa-linear", "--quick", "--seeds", "2", "--out", str(run_dir), *sets]) == 0
    single, point = _arrays(run_dir), _arrays(point_dir(out, p.key))
    for k in single:
        np.testing.assert_array_equal(single[k], point[k])
    assert rundir.read_status(point_dir(out, p.key))["status"] == "complete"
    assert not list(point_dir(out, p.key).glob("*.png"))  # figures are off in sweeps


def test_the_table_has_a_row_per_point_and_seed_from_the_members(serial_sweep):
    table = load(serial_sweep)
    assert len(table) == 4 * 2
    assert list(table.columns[:3]) == ["lr", "hidden", "seed"] and list(table.columns[-3:]) == \
        ["status", "seconds", "point"]
    assert (table["status"] == "complete").all()
    for p in _points(serial_sweep):
        metrics = json.loads((point_dir(serial_sweep, p.key) / "metrics.json").read_text())
        rows = table[table["point"] == p.key].sort_values("seed")
        np.testing.assert_array_equal(rows["fa.final_loss"].to_numpy(), metrics["fa"]["final_loss"]["members"])
    rebuilt = load(serial_sweep, rebuild=True)
    pd.testing.assert_frame_equal(rebuilt, table)
    curves = load_curves(serial_sweep)
    assert curves["fa_loss"].dims == ("point", "seed", "step")
    assert curves.sizes["point"] == 4 and curves.sizes["seed"] == 2
    assert "lr" in curves.coords


def test_sweep_plot_and_status(serial_sweep, tmp_path, capsys):
    fig = tmp_path / "fig.png"
    assert main(["sweep-plot", str(serial_sweep), "--x", "lr", "--y", "fa.final_loss", "--hue", "hidden",
                 "--out", str(fig)]) == 0
    assert fig.stat().st_size > 1000
    assert main(["sweep-plot", str(serial_sweep), "--x", "lr", "--y", "nope"]) == 2
    assert "columns:" in capsys.readouterr().err
    assert main(["sweep-status", str(serial_sweep)]) == 0
    assert "4 done, 0 failed, 0 running, 0 interrupted, 0 missing" in capsys.readouterr().out


# --- a real cluster ----------------------------------------------------------------------------------

def _dask(*args, **kw):
    return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def test_a_sweep_on_a_dask_scheduler_and_two_workers(serial_sweep, tmp_path):
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                   "--scheduler-file", str(scheduler_file), env=env)]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists():
            assert time.time() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.append(_dask("worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                               env=env, cwd=Path(__file__).resolve().parents[1]))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "cluster"
        assert main(["sweep", "fa-linear", "--grid", "lr=0.01,0.03", "--grid", "hidden=8,16", "--seeds", "2",
                     "--quick", *[a for k, v in FIXED.items() for a in ("--set", f"{k}={v}")],
                     "--scheduler", address, "--out", str(out)]) == 0
        points = _points(out)
        assert all(point_state(point_dir(out, p.key)) == "complete" for p in points)
        hosts = {rundir.read_status(point_dir(out, p.key))["pid"] for p in points}
        assert os.getpid() not in hosts  # computed by the workers
        _assert_same_points(serial_sweep, out, points)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- resuming ----------------------------------------------------------------------------------------

def test_only_unfinished_points_are_computed_again(serial_sweep, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(serial_sweep, out)
    a, b, c, d = [point_dir(out, p.key) for p in _points(out)]
    status = rundir.read_status(a)
    rundir.write_json(a / "status.json", {**status, "status": "running"})  # its process died: lock free
    rundir.write_json(b / "status.json", {**rundir.read_status(b), "status": "interrupted"})
    (c / "arrays.npz").unlink()
    before = {f.name: f.stat().st_mtime_ns for f in d.iterdir()}
    assert [point_state(x) for x in (a, b, c, d)] == ["interrupted", "interrupted", "missing", "complete"]
    result = _sweep(out, serial=True)
    assert (result.skipped, result.computed, result.tasks) == (1, 3, 2)  # a and c (one width) fold into one task
    assert {f.name: f.stat().st_mtime_ns for f in d.iterdir()} == before
    _assert_same_points(serial_sweep, out, _points(out))
    assert _sweep(out, serial=True).tasks == 0


def _start_sweep(out, *extra):
    args = ["sweep", "fa-linear", "--grid", "lr=0.01,0.02,0.03", "--grid", "hidden=8,16", "--seeds", "2",
            "--quick", "--set", "steps=600", "--set", "record_every=20", "--set", "n_samples=200",
            "--out", str(out), *extra]
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, args


def _n_complete(out) -> int:
    return sum(1 for d in (Path(out) / "points").glob("*") if point_state(d) == "complete") \
        if (Path(out) / "points").exists() else 0


def test_sigint_keeps_finished_points_and_the_same_command_computes_the_rest(tmp_path):
    out = tmp_path / "stopped"
    proc, args = _start_sweep(out, "--serial", "--no-fold")  # one task per point: stop between points
    deadline = time.time() + 90
    while _n_complete(out) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    states = [point_state(d) for d in (out / "points").iterdir()]
    done = states.count("complete")
    assert 2 <= done < 6 and "running" not in states
    assert set(states) <= {"complete", "interrupted", "missing"}  # missing: stopped before its status
    assert (out / "results.parquet").exists()
    result = _sweep(out, grid={"lr": ["0.01", "0.02", "0.03"], "hidden": ["8", "16"]},
                    settings={"steps": "600", "record_every": "20", "n_samples": "200"}, serial=True, fold=False)
    assert (result.skipped, result.computed, result.tasks) == (done, 6 - done, 6 - done)


def test_a_worker_killed_mid_sweep_leaves_no_half_written_point(tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "killed"
    grid = {"lr": ["0.01", "0.02", "0.03"], "hidden": ["8", "16"]}
    fixed = {"steps": "1500", "record_every": "50", "n_samples": "200"}
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for d in (out / "points").glob("*") if (out / "points").exists() else []:
                status = rundir.read_status(d)
                if status and status["status"] == "running" and status["pid"] != os.getpid():
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.append(d.name)
                    return
            time.sleep(0.01)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = _sweep(out, grid=grid, settings=fixed, client=client)
        thread.join()
    assert killed, "no point was seen running"
    assert (result.computed, len(result.failed)) == (6, 0)
    points = _points(out)
    assert sorted(d.name for d in (out / "points").iterdir()) == sorted(p.key for p in points)
    for p in points:
        assert point_state(point_dir(out, p.key)) == "complete"
        assert _arrays(point_dir(out, p.key))  # whole
    assert len(load(out)) == 6 * 2


# --- failures and bad specs --------------------------------------------------------------------------

def test_a_failing_point_is_recorded_and_the_others_complete(tmp_path, capsys):
    out = tmp_path / "failing"
    # a hidden layer of 10^9 units fails the memory estimate when the point runs
    code = main(["sweep", "fa-linear", "--grid", "hidden=8,1000000000,16", "--seeds", "2", "--quick", "--set",
                 "steps=40", "--set", "n_samples=200", "--serial", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 of 3 points failed" in err
    states = {p.values["hidden"]: point_state(point_dir(out, p.key)) for p in _points(out)}
    assert states == {8: "complete", 1000000000: "failed", 16: "complete"}
    failed = rundir.read_status(point_dir(out, _points(out)[1].key))
    assert "memory" in failed["error"] and "Traceback" in failed["traceback"]
    table = load(out)
    assert set(table["status"]) == {"complete", "failed"}
    # the failed point is not computed again unless asked
    assert main(["sweep", "fa-linear", "--grid", "hidden=8,1000000000,16", "--seeds", "2", "--quick", "--set",
                 "steps=40", "--set", "n_samples=200", "--serial", "--out", str(out)]) == 1
    assert "0 computed in 0 tasks" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--grid", "nope=1,2"], "unknown setting 'nope'"),
    (["--grid", "lr="], "--grid lr has no values"),
    (["--zip", "lr=0.01,0.02", "--zip", "hidden=8,16,32"], "same number of values"),
    (["--grid", "steps=10,abc"], "steps='abc'"),
    (["--grid", "lr=0.01,-1"], "lr=-1.0"),
    (["--set", "bogus=1"], "unknown setting 'bogus'"),
    (["--grid", "lr=0.01,0.01"], "same point"),
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
])
def test_bad_specs_end_with_a_message_and_exit_2_before_any_compute(args, message, tmp_path, capsys):
    out = tmp_path / "bad"
    start = time.perf_counter()
    assert main(["sweep", "fa-linear", "--quick", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()
    assert time.perf_counter() - start < 15


def test_another_sweep_in_the_same_directory_is_refused(serial_sweep, capsys):
    assert main(["sweep", "fa-linear", "--grid", "lr=0.5", "--quick", "--serial", "--out", str(serial_sweep)]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_a_spec_file_is_the_same_sweep_as_the_command(serial_sweep, tmp_path, capsys):
    import shutil

    out = tmp_path / "from-spec"
    shutil.copytree(serial_sweep, out)
    spec = tmp_path / "study.toml"
    spec.write_text('experiment = "fa-linear"\nseeds = 2\nquick = true\n'
                    '[settings]\nsteps = 40\nrecord_every = 10\nn_samples = 200\n'
                    '[grid]\nlr = [0.01, 0.03]\nhidden = [8, 16]\n')
    assert main(["sweep", "--spec", str(spec), "--serial", "--out", str(out)]) == 0
    assert re.search(r"4 already complete, 0 computed", capsys.readouterr().out)
