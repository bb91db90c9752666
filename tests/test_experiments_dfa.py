"""The ``dfa-alignment`` experiment (theory.experiments.dfa): runs quick, records what it promises."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import theory.experiments.dfa  # noqa: F401  (registers the experiment)
from sim.experiments import REGISTRY, Context, run_experiment

FAST = {"widths": [8, 16], "steps": 120, "record_every": 20, "n_train": 200}


@pytest.fixture(scope="module")
def quick_run():
    return run_experiment("dfa-alignment", context=Context(quick=True, n_seeds=2), overrides=FAST)


def test_registered_with_quick_settings():
    exp = REGISTRY["dfa-alignment"]
    assert exp.quick["steps"] < exp.defaults["steps"]
    assert set(exp.quick) <= set(exp.defaults)


def test_metrics_arrays_and_figure(quick_run):
    settings, result = quick_run
    assert settings["widths"] == [8, 16] and settings["steps"] == 120
    assert result.metrics["widths"] == [8, 16]
    depth = settings["depth"]
    for width in (8, 16):
        m = result.metrics[f"width_{width}"]
        assert m["final_loss"]["mean"] < m["initial_loss"]["mean"]  # DFA trains
        angles = [a["mean"] for a in m["final_signal_angle_deg_per_layer"]]
        assert len(angles) == depth and all(a < 90 for a in angles)  # every hidden layer aligned
        assert 0.0 <= m["top_layer_most_aligned_fraction"] <= 1.0
        steps = result.arrays[f"w{width}_steps"]
        assert steps[0] == 0 and steps[-1] == 120
        assert result.arrays[f"w{width}_signal_angle"].shape == (len(steps), 2, depth)
        assert result.arrays[f"w{width}_loss"].shape == (len(steps), 2)
        assert result.arrays[f"w{width}_weight_alignment"].shape == (len(steps), 2, depth)
    np.testing.assert_array_equal(result.arrays["widths"], [8, 16])
    assert result.arrays["final_signal_angle"].shape == (2, depth)
    assert isinstance(result.figures["dfa_alignment"], Figure)
    assert "width 8" in result.summary and not result.diverged


def test_reproducible_from_its_seed(quick_run):
    _, again = run_experiment("dfa-alignment", context=Context(quick=True, n_seeds=2), overrides=FAST)
    np.testing.assert_array_equal(again.arrays["w8_loss"], quick_run[1].arrays["w8_loss"])


@pytest.mark.parametrize("override", [{"widths": "[]"}, {"widths": "[0, 4]"}, {"depth": "0"},
                                      {"activation": "sigmoid"}, {"no_such_setting": "1"}])
def test_bad_settings_raise(override):
    with pytest.raises(ValueError):
        run_experiment("dfa-alignment", context=Context(quick=True, n_seeds=1), overrides={**FAST, **override})
