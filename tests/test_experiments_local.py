"""The ``layer-parallel`` experiment: ``bbp run layer-parallel --quick`` writes its run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.cli import main
from sim.experiments import Context, load_experiments, run_experiment
from sim.experiments.local_learning import calibrate
from sim.schedule import BlockCost


def test_layer_parallel_quick_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "layer-parallel", "--quick", "--seeds", "1", "--out", str(out)]) == 0
    for name in ("config.toml", "metrics.json", "arrays.npz", "accuracy_vs_time.png", "speedups.png",
                 "schedule_model.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["networks"]) == {"mlp", "patch"}
    for network in metrics["networks"].values():
        assert set(network["rules"]) == {"bp", "dgl", "async-dgl", "overlap", "dfa", "sg", "cdni"}
        assert set(network["rules"]["bp"]) == {"sequential", "parallel", "parallel (locked)"}
        for modes in network["rules"].values():
            for entry in modes.values():
                assert entry["epoch_seconds"] > 0
                assert 0.0 <= entry["final_test_accuracy"] <= 1.0
                assert entry["epoch_speedup_over_sequential_bp"] > 0
        assert network["rules"]["bp"]["sequential"]["epoch_speedup_over_sequential_bp"] == pytest.approx(1.0)
        assert network["rules"]["dgl"]["parallel"]["workers"] == 2
        assert max(network["rules"]["async-dgl"]["parallel"]["buffer_max"]) <= 2
    thr = metrics["throughput"]
    assert set(thr["runs"]) == {"dgl", "bp (locked)", "bp (pipelined)"}
    assert thr["runs"]["dgl"]["throughput_ratio"] > 0 and thr["model"]["dgl_predicted_ratio"] > 0
    assert thr["machine_ceiling"]["before"] > 0 and thr["dgl_fraction_of_ceiling"] > 0
    assert {r["mode"] for r in metrics["schedule_model"]} == {"sequential", "parallel", "parallel (locked)"}
    assert all(r["predicted_epoch_seconds"] > 0 for r in metrics["schedule_model"])
    curves = metrics["extrapolation"]["curves"]
    assert "SG (DNI)" in curves and len(curves["DGL"]["workers"]) == 8
    check = metrics["schedule_check_simulated_costs"]
    assert {r["blocks"] for r in check} == {2, 4} and all(r["predicted_speedup"] > 0 for r in check)
    arrays = np.load(out / "arrays.npz")
    assert "mlp_dgl_parallel_accuracy" in arrays and "model_speedup_dgl_pipelined" in arrays
    assert "2-block DGL" in capsys.readouterr().out


def test_layer_parallel_is_registered():
    exp = load_experiments()["layer-parallel"]
    assert exp.default_seeds == 2 and exp.quick["epochs"] < exp.defaults["epochs"]


def test_bad_settings():
    with pytest.raises(ValueError, match=r"setting rules=\['sgd'\]: element 0 must be one of .*overlap, sg, cdni"):
        run_experiment("layer-parallel", context=Context(quick=True, n_seeds=1), overrides={"rules": '["sgd"]'})
    with pytest.raises(ValueError, match=r"setting networks=\['cnn'\]: element 0 must be one of mlp, patch"):
        run_experiment("layer-parallel", context=Context(quick=True, n_seeds=1), overrides={"networks": '["cnn"]'})
    with pytest.raises(ValueError, match="setting target_fraction=0.0"):
        run_experiment("layer-parallel", context=Context(quick=True, n_seeds=1), overrides={"target_fraction": "0"})


def test_calibrate_keeps_proportions():
    costs = [BlockCost(1.0, 2.0, 0.5, 0.5), BlockCost(2.0, 2.0, 0.0, 0.0)]
    out = calibrate(costs, "dgl", [8.0, 2.0])
    assert out[0].work("dgl") == pytest.approx(8.0) and out[1].work("dgl") == pytest.approx(2.0)
    assert out[0].backward / out[0].forward == pytest.approx(2.0)
