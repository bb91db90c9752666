"""Folding (:mod:`sim.sweep.fold`, :mod:`sim.members`): points that differ only in per-member settings are one
ensemble, and give the same numbers as each point computed alone.

Tiny runs (``fa-linear --quick`` with 40 steps, ``dfa-nonlinear`` with 60): the module takes a few seconds.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sim.experiments import Context, experiment, run_experiment, run_experiment_folded
from sim.members import join_networks, select_members
from sim.network import init_network
from sim.sweep import SweepSpec, plan, run_sweep
from sim.sweep.fold import fold_tasks
from sim.sweep.point import point_dir

FIXED = {"steps": "40", "record_every": "10", "n_samples": "200"}
#: 3 learning rates (the last one diverges: every member of BP, FA and DFA) x 2 initial scales x 2 widths
GRID = {"lr": ["0.01", "0.04", "40"], "init_scale": ["0.5", "1.0"], "hidden": ["8", "12"]}


def _arrays(directory) -> dict:
    with np.load(Path(directory) / "arrays.npz") as data:
        return {k: data[k] for k in data.files}


def _metrics(directory) -> dict:
    metrics = json.loads((Path(directory) / "metrics.json").read_text())
    metrics.pop("seconds")
    return metrics


def test_a_learning_rate_by_seed_sweep_is_one_task_and_other_axes_are_not_folded():
    spec = SweepSpec("fa-linear", grid={"lr": [str(0.01 * (i + 1)) for i in range(6)]}, seeds=8, quick=True)
    points = plan(spec)
    (task,) = fold_tasks(points)
    assert task.members == 48 and len(task.points) == 6 and task.fold == {"per_member": ["lr", "init_scale"]}
    assert [len(t.points) for t in fold_tasks(points, fold=False)] == [1] * 6
    assert [t.members for t in fold_tasks(points, max_members=16)] == [16, 16, 16]
    by_width = plan(SweepSpec("fa-linear", grid={"hidden": ["8", "16"], "lr": ["0.01", "0.02", "0.03"]}, seeds=2,
                              quick=True))
    tasks = fold_tasks(by_width)
    assert [sorted(p.values["hidden"] for p in t.points) for t in tasks] == [[8, 8, 8], [16, 16, 16]]
    # an experiment that declares no per-member settings: one task per point (its seeds one ensemble)
    other = plan(SweepSpec("sg-regression", grid={"lr": ["0.01", "0.02"]}, seeds=3, quick=True))
    assert [(len(t.points), t.fold, t.members) for t in fold_tasks(other)] == [(1, None, 3)] * 2
    with pytest.raises(ValueError, match="max_members must be an integer >= 1, got 0"):
        fold_tasks(points, max_members=0)


def test_a_folded_sweep_gives_the_same_numbers_as_the_unfolded_one(tmp_path):
    common = dict(seeds=2, settings=FIXED, quick=True, serial=True, progress=False)
    folded = run_sweep("fa-linear", GRID, out=tmp_path / "folded", **common)
    unfolded = run_sweep("fa-linear", GRID, out=tmp_path / "unfolded", fold=False, **common)
    assert (folded.points, folded.tasks, folded.folded, folded.largest_task) == (12, 2, 2, 12)
    assert (unfolded.tasks, unfolded.folded) == (12, 0)
    assert "2 tasks (2 folded, the largest E = 12)" in folded.summary()
    # the diverging learning rate fails its points in both, with the same messages
    assert len(folded.failed) == len(unfolded.failed) == 4
    for p in plan(SweepSpec("fa-linear", grid=GRID, settings=FIXED, seeds=2, quick=True)):
        a, b = point_dir(tmp_path / "folded", p.key), point_dir(tmp_path / "unfolded", p.key)
        assert _metrics(a) == _metrics(b), p.values
        x, y = _arrays(a), _arrays(b)
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{p.values} {k}")
        fold = tomllib.loads((a / "config.toml").read_text())["sweep"]["fold"]
        assert fold == {"points": 6, "members": 12, "per_member": ["lr", "init_scale"]}
        assert "fold" not in tomllib.loads((b / "config.toml").read_text())["sweep"]
    ta, tb = folded.table.drop(columns="seconds"), unfolded.table.drop(columns="seconds")
    assert ta.equals(tb)


def test_dfa_nonlinear_folded_equals_each_settings_alone():
    ctx = Context(seed=5, n_seeds=2, quick=True, progress=False)
    base = {"steps": 60, "record_every": 20, "n_train": 200, "n_test": 100, "hidden": [8, 8]}
    overrides = [{**base, "lr": 0.05, "init_scale": 0.5}, {**base, "lr": 0.2, "init_scale": 2.0}]
    folded = run_experiment_folded("dfa-nonlinear", overrides, context=ctx)
    for got, o in zip(folded, overrides):
        want = run_experiment("dfa-nonlinear", context=ctx, overrides=o)[1]
        assert got.metrics == want.metrics and got.diverged == want.diverged and got.summary == want.summary
        for k in want.arrays:
            np.testing.assert_array_equal(got.arrays[k], want.arrays[k], err_msg=k)


def test_folding_refuses_settings_that_differ_elsewhere_and_undeclared_experiments():
    ctx = Context(seed=0, n_seeds=1, quick=True, progress=False)
    with pytest.raises(ValueError, match="may differ only in lr, init_scale; they differ in hidden"):
        run_experiment_folded("fa-linear", [{"hidden": 8}, {"hidden": 9}], context=ctx)
    with pytest.raises(ValueError, match="declares no per_member settings"):
        run_experiment_folded("sg-regression", [{}], context=ctx)
    with pytest.raises(ValueError, match="no fold function"):
        experiment("fold-test-bad", title="t", description="d", defaults={"a": 1.0}, schema={},
                   per_member=("a",))
    with pytest.raises(ValueError, match=r"per_member settings \['b'\]"):
        experiment("fold-test-bad", title="t", description="d", defaults={"a": 1.0}, schema={},
                   per_member=("b",), fold=lambda s, c: [])


def test_joined_networks_split_back_into_their_blocks():
    from sim.data import lillicrap_linear
    from sim.train import train

    data = lillicrap_linear(64, seed=1)
    sizes = [data.n_inputs, 5, data.n_outputs]
    nets = [init_network(sizes, 2, seed=1, scale=s) for s in (0.5, 1.5)]
    joined = join_networks(nets)
    assert joined.n_members == 4
    np.testing.assert_array_equal(joined.weights[0][2:], nets[1].weights[0])
    both = train(joined, data, rule="bp", steps=15, lr=np.array([0.01, 0.01, 0.05, 0.05]), batch_size=16, seed=1,
                 record_every=5, progress=False)
    alone = train(nets[1], data, rule="bp", steps=15, lr=0.05, batch_size=16, seed=1, record_every=5, progress=False)
    part = select_members(both, slice(2, 4))
    for k in alone.metrics:
        np.testing.assert_array_equal(part.metrics[k], alone.metrics[k], err_msg=k)
    for w, v in zip(part.network.weights, alone.network.weights):
        np.testing.assert_array_equal(w, v)
    with pytest.raises(ValueError, match="non-empty contiguous slice"):
        select_members(both, slice(3, 3))
    with pytest.raises(ValueError, match="cannot join networks of sizes"):
        join_networks([nets[0], init_network([data.n_inputs, 6, data.n_outputs], 1)])



@pytest.mark.parametrize("name, base", [
    ("sg-nonlinear", {"n_train": 150, "n_test": 60, "hidden": [6, 6], "target_loss": 1.5}),
    ("sg-linear", {"n_samples": 64}),
])
def test_synthetic_gradients_folded_with_their_modules_equal_each_settings_alone(name, base):
    ctx = Context(seed=2, n_seeds=2, quick=True, progress=False)
    base = {**base, "steps": 40, "record_every": 20, "rules": ["sg", "cdni"]}
    overrides = [{**base, "lr": 0.05, "init_scale": 0.5}, {**base, "lr": 0.02, "init_scale": 1.5}]
    folded = run_experiment_folded(name, overrides, context=ctx)
    for got, o in zip(folded, overrides):
        want = run_experiment(name, context=ctx, overrides=o)[1]
        assert got.metrics == want.metrics and got.diverged == want.diverged and got.summary == want.summary
        for k in want.arrays:
            np.testing.assert_array_equal(got.arrays[k], want.arrays[k], err_msg=k)
