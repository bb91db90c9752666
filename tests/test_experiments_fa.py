"""The experiments ``fa-linear`` and ``dfa-nonlinear`` (quick settings) say what the papers report."""

import numpy as np
import pytest

from sim.experiments import Context, run_experiment

QUICK = Context(quick=True, n_seeds=2)


@pytest.fixture(scope="module")
def fa_linear():
    return run_experiment("fa-linear", context=QUICK)


@pytest.fixture(scope="module")
def dfa_nonlinear():
    return run_experiment("dfa-nonlinear", context=QUICK)


def test_fa_linear_learns_and_aligns(fa_linear):
    settings, result = fa_linear
    m = result.metrics
    for rule in ("bp", "fa", "dfa"):
        assert m[rule]["final_loss"]["mean"] < 1e-3 * m[rule]["initial_loss"]["mean"]
    assert m["fa"]["final_signal_angle_deg"]["mean"] < 60  # FA's hidden signal aligns with BP's
    assert m["bp"]["final_signal_angle_deg"]["mean"] > m["fa"]["final_signal_angle_deg"]["mean"] + 20
    # with one hidden layer DFA and FA are the same rule with the same feedback draw
    np.testing.assert_allclose(result.arrays["dfa_loss"], result.arrays["fa_loss"], rtol=1e-12, atol=0)
    assert result.arrays["fa_loss"].shape == (len(result.arrays["fa_steps"]), QUICK.n_seeds)
    assert set(result.figures) == {"fa_linear"} and not result.diverged


def test_dfa_nonlinear_beats_chance_and_aligns(dfa_nonlinear):
    settings, result = dfa_nonlinear
    chance = 1 / settings["n_classes"]
    for rule in ("bp", "fa", "dfa"):
        assert result.metrics[rule]["test_accuracy"]["mean"] > 2 * chance
    angles = result.arrays["dfa_signal_angle"][-1]  # (E, L-1) at the end
    assert np.all(angles < 90)
    assert result.arrays["dfa_weight_alignment"].shape[-1] == len(settings["hidden"])
    assert set(result.figures) == {"dfa_nonlinear"} and not result.diverged


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="unknown setting 'nope'.*allowed"):
        run_experiment("fa-linear", context=QUICK, overrides={"nope": "1"})
