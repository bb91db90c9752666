"""The linear-theory experiments run quickly and their metrics say what the theory says."""

from __future__ import annotations

import numpy as np
import pytest

import theory.experiments.linear  # noqa: F401  (registers the experiments)
from sim.experiments import Context, get_experiment, run_experiment

QUICK = Context(quick=True, n_seeds=2)


@pytest.fixture(scope="module")
def saxe_modes():
    return run_experiment("saxe-modes", context=QUICK)


@pytest.fixture(scope="module")
def fa_conservation():
    return run_experiment("fa-conservation", context=QUICK)


@pytest.fixture(scope="module")
def scalar_chain():
    return run_experiment("scalar-chain", context=QUICK)


def test_registered():
    for name in ("saxe-modes", "fa-conservation", "scalar-chain"):
        exp = get_experiment(name)
        assert exp.description and exp.title
        assert set(exp.quick) <= set(exp.defaults)


def test_saxe_modes_match_the_closed_forms(saxe_modes):
    settings, result = saxe_modes
    m = result.metrics
    lr = settings["lr"]
    s = np.asarray(settings["singular_values"])
    assert not result.diverged
    # GD differs from the flow by O(lr): a few per cent of s at lr = 0.02 (BP's lag ~ lr s^2 ln(s/u0)/8)
    bound = lr * s.max() * np.log(s.max() / settings["u0"]) / 4
    assert m["bp"]["max_relative_error"] <= bound
    assert m["fa"]["max_relative_error"] <= bound
    for name in ("bp", "fa"):
        simulated = np.asarray(m[name]["half_time_simulated"])
        theory = np.asarray(m[name]["half_time_theory"])
        reached = theory < settings["horizon"] * 0.8
        np.testing.assert_allclose(simulated[reached], theory[reached], atol=10 * lr)
        # larger singular values are learnt first, by both rules
        assert np.all(np.diff(simulated[reached]) > 0)
    # FA has no plateau: from zero it reaches half strength before BP from its small init does
    assert np.all(np.asarray(m["fa"]["half_time_simulated"]) < np.asarray(m["bp"]["half_time_simulated"]))
    assert result.arrays["bp_strength"].shape == (settings["n_points"] + 1, 2, s.size)
    assert set(result.figures) == {"saxe_modes"}


def test_fa_conservation_drift_is_first_order(fa_conservation):
    settings, result = fa_conservation
    for name in ("fa", "bp"):
        assert 0.9 <= result.metrics[name]["slope_min"] <= result.metrics[name]["slope_max"] <= 1.1
        drift = np.asarray(result.metrics[name]["relative_drift"])
        assert np.all(np.diff(drift) < 0)  # lrs are listed from the largest
    assert result.arrays["fa_relative_drift"].shape == (len(settings["lrs"]), 2)


def test_scalar_chain_basins(scalar_chain):
    settings, result = scalar_chain
    m = result.metrics
    assert m["fraction_converged"] == 1.0
    assert m["max_product_error"] < 1e-3
    # both basins exist on the grid, and the simulation lands where the conserved quantity predicts
    assert 0.05 < m["fraction_anti_aligned"] < 0.95
    assert m["basin_agreement"] >= 0.99
    assert abs(m["fraction_anti_aligned"] - m["fraction_anti_aligned_predicted"]) <= 0.02
    anti = result.arrays["simulated_anti"]
    start = result.arrays["start"]
    # anti-aligned ends come only from large starts: a1^2 - 2 c a2 at least the fold value 3 (|c alpha|/beta)^(2/3)
    # (equal only at the fold point itself, an equilibrium on the grid)
    kappa = start[:, 0] ** 2 - 2 * m["c"] * start[:, 1]
    fold = 3 * (abs(m["c"] * m["alpha"]) / m["beta"]) ** (2 / 3)
    assert np.all(kappa[anti] >= fold * (1 - 1e-12))
    assert np.mean(kappa[anti] > fold) > 0.95
