"""The synthetic-gradient experiments run quickly and their metrics show what the theory says."""

from __future__ import annotations

import numpy as np
import pytest

import theory.experiments.synthetic  # noqa: F401  (registers sg-dynamics)
from sim.experiments import Context, get_experiment, load_experiments, run_experiment
from sim.experiments.synthetic import time_to_target

load_experiments()
QUICK = Context(quick=True, n_seeds=2)
NAMES = ("sg-linear", "sg-regression", "sg-nonlinear", "sg-dynamics")


@pytest.fixture(scope="module")
def sg_linear():
    return run_experiment("sg-linear", context=QUICK)


@pytest.fixture(scope="module")
def sg_regression():
    return run_experiment("sg-regression", context=Context(quick=True, n_seeds=4))


@pytest.fixture(scope="module")
def sg_nonlinear():
    return run_experiment("sg-nonlinear", context=QUICK)


@pytest.fixture(scope="module")
def sg_dynamics():
    return run_experiment("sg-dynamics", context=QUICK)


def test_registered():
    for name in NAMES:
        exp = get_experiment(name)
        assert exp.title and exp.description
        assert set(exp.quick) <= set(exp.defaults)


def test_time_to_target():
    steps = np.array([0, 10, 20, 30])
    loss = np.array([[5.0, 5.0], [2.0, 4.0], [0.5, 3.0], [0.1, 2.5]])
    np.testing.assert_array_equal(time_to_target(steps, loss, 1.0), [20.0, np.nan])


def test_sg_linear_cdni_follows_bp_and_dni_stalls(sg_linear):
    settings, result = sg_linear
    m = result.metrics
    assert not result.diverged
    assert m["bp"]["time_to_target"]["fraction_reached"] == 1.0
    assert m["cdni"]["time_to_target"]["fraction_reached"] == 1.0
    assert m["sg"]["time_to_target"]["fraction_reached"] == 0.0
    # cDNI lags BP a little, DNI by orders of magnitude
    bp_time, cdni_time = m["bp"]["time_to_target"]["mean"], m["cdni"]["time_to_target"]["mean"]
    assert bp_time <= cdni_time <= 3 * bp_time
    assert m["sg"]["final_loss"]["mean"] > 100 * m["cdni"]["final_loss"]["mean"]
    assert result.arrays["cdni_sg_error"].shape[1:] == (2, len(settings["hidden"]))
    assert set(result.figures) == {"sg_linear"}


def test_sg_regression_stall_and_convergence(sg_regression):
    settings, result = sg_regression
    m = result.metrics
    assert m["sg"]["ellipse_residual"]["mean"] < 1e-6  # DNI ends on w'Sigma(w - w_LS) = 0 ...
    assert m["sg"]["distance_to_w_ls"]["mean"] > 0.1  # ... away from the solution
    assert m["cdni"]["distance_to_w_ls"]["mean"] < 1e-6
    module = m["cdni"]["module_final"]
    np.testing.assert_allclose([module["hidden"]["mean"], module["label"]["mean"], module["bias"]["mean"]],
                               [1.0, -1.0, 0.0], atol=1e-6)
    two = m["two_layer"]
    widths, optimum = np.asarray(two["widths"]), np.asarray(two["optimum"])
    bp = np.array([v["mean"] for v in two["bp"]])
    cdni = np.array([v["mean"] for v in two["cdni"]])
    dni = np.array([v["mean"] for v in two["sg"]])
    np.testing.assert_allclose(bp, optimum, atol=1e-6)
    np.testing.assert_allclose(cdni, optimum, atol=1e-3)
    bottleneck = widths < len(settings["net_singular_values"])
    assert np.all(dni[bottleneck] > optimum[bottleneck] + 0.1)  # DNI stalls in a bottleneck
    assert dni[-1] < 0.1 * dni[0]  # a wide hidden layer lets the top layer compensate
    assert result.arrays["sg_w"].shape[1:] == (4, 2)


def test_sg_nonlinear_ordering(sg_nonlinear):
    settings, result = sg_nonlinear
    m = result.metrics
    assert not result.diverged
    assert set(m) == set(settings["rules"])
    for name in settings["rules"]:
        assert 0.2 < m[name]["test_accuracy"]["mean"] <= 1.0
    # the papers' ordering in training loss: cDNI close behind BP, DNI last
    assert m["bp"]["final_loss"]["mean"] <= m["cdni"]["final_loss"]["mean"] < m["sg"]["final_loss"]["mean"]
    assert m["cdni"]["time_to_target"]["fraction_reached"] == 1.0
    assert m["bp"]["time_to_target"]["mean"] <= m["cdni"]["time_to_target"]["mean"]
    # cDNI's hidden signals point much closer to BP's than DNI's
    cdni_angle = np.mean([a["mean"] for a in m["cdni"]["final_signal_angle_deg_per_layer"]])
    dni_angle = np.mean([a["mean"] for a in m["sg"]["final_signal_angle_deg_per_layer"]])
    assert cdni_angle < 60 < dni_angle
    assert result.arrays["sg_sg_error"].shape[1:] == (2, len(settings["hidden"]))


def test_sg_dynamics_theory_beside_simulation(sg_dynamics):
    settings, result = sg_dynamics
    m = result.metrics
    assert 0.8 < m["cdni"]["error_slope_in_lr"] < 1.2  # Euler: first order in the step
    assert max(m["cdni"]["ode_final_loss"]) < 1e-3 * m["cdni"]["ode_initial_loss"]
    verdicts = {(f["family"], f["point"].get("a")): f["verdict"] for f in m["scalar_fixed_points"]["sg"]}
    assert verdicts[("{c: 0, w1: 0}", 0.5)] == "attracting-marginal"
    assert verdicts[("{c: 0, w1: 0}", -0.5)] == "unstable"
    assert all(f["verdict"] == "unstable" for f in m["scalar_fixed_points"]["cdni"] if f["point"]["w1"] == 0)
    fast = m["scalar_sg_from_wrong_sign"][str(settings["scalar_betas"][-1])]
    assert abs(fast["final_w1"]) < 1e-3 and fast["final_loss"] > 0.49  # the stall on w1 = 0
    assert set(result.figures) == {"sg_dynamics"}
