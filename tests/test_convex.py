"""Convex top classifier (theory.convex): cvxpy and L-BFGS agree, certificates, SGD never beats the optimum."""

from __future__ import annotations

import numpy as np
import pytest

from theory.convex import (
    LOSSES,
    TopClassifierProblem,
    certify,
    dual_objective,
    objective,
    sgd_top_classifier,
    solve_cvxpy,
    solve_lbfgs,
    solve_top_classifier,
    top_classifier,
)

EPS = float(np.finfo(np.float64).eps)


def instance(seed=0, e=2, n=40, f=6, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(e, n, f))
    y = np.eye(k)[rng.integers(0, k, size=(e, n))]
    return x, y


@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_matches_finite_differences(loss):
    x, y = instance(1, e=1)
    w = np.random.default_rng(2).normal(size=(1, 6, 3))
    _, grad = objective(w, x, y, 0.1, loss)
    h = EPS ** (1 / 3)
    numeric = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[idx] = h
        numeric[idx] = (objective(w + d, x, y, 0.1, loss)[0] - objective(w - d, x, y, 0.1, loss)[0])[0] / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
def test_weak_duality_at_any_point(loss):
    x, y = instance(3)
    w = np.random.default_rng(4).normal(size=(2, 6, 3))
    assert np.all(dual_objective(w, x, y, 0.1, loss) <= objective(w, x, y, 0.1, loss)[0] + 1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_cvxpy_and_lbfgs_reach_the_same_certified_optimum(loss):
    x, y = instance(5)
    exact = solve_cvxpy(x, y, 0.05, loss)
    fast = solve_lbfgs(x, y, 0.05, loss)
    assert exact.certified and fast.certified
    for c in exact.certificates:
        assert c.status == "optimal" and 0 <= c.duality_gap < 1e-6 and c.kkt_residual < 1e-3
    np.testing.assert_allclose(exact.objective, fast.objective, rtol=1e-7)
    np.testing.assert_allclose(exact.weights, fast.weights, atol=1e-4)
    runs = sgd_top_classifier(x, y, 0.05, loss, runs=2, steps=600, seed=0)
    sgd_values = objective(runs, x, y, 0.05, loss)[0]
    assert np.all(sgd_values >= exact.objective - 1e-7)


def test_problem_is_compiled_once_and_resolved_with_new_data():
    x, y = instance(6)
    problem = TopClassifierProblem(40, 6, 3)
    w0, c0 = problem.solve(x[0], y[0], 0.05)
    w1, c1 = problem.solve(x[1], y[1], 0.01)
    assert problem.n_solves == 2 and problem.problem.is_dpp()
    np.testing.assert_allclose(c1.primal, solve_lbfgs(x[1], y[1], 0.01).objective[0], rtol=1e-7)
    assert not np.allclose(w0, w1)
    with pytest.raises(ValueError, match="compiled for"):
        problem.solve(x[0][:10], y[0][:10], 0.05)


def test_auto_method_and_layerwise_adapter():
    x, y = instance(7)
    assert solve_top_classifier(x, y, 0.05).method == "cvxpy"
    big_x, big_y = instance(8, e=1, n=3000, f=30, k=5)
    assert solve_top_classifier(big_x, big_y, 0.05).method == "lbfgs"
    fit = top_classifier(0.05, method="lbfgs")
    assert fit(x, y).shape == (2, 6, 3)


def test_certificate_detects_a_wrong_solution():
    x, y = instance(9)
    sol = solve_lbfgs(x, y, 0.05)
    bad = certify(sol.weights + 0.1, x, y, 0.05)
    assert not any(c.holds for c in bad)
    assert all(c.duality_gap >= c.primal - s for c, s in zip(bad, sol.objective))


def test_bad_input():
    x, y = instance(0)
    with pytest.raises(ValueError, match="l2"):
        solve_lbfgs(x, y, 0.0)
    with pytest.raises(ValueError, match="one-hot"):
        solve_lbfgs(x, y * 2, 0.1)
    with pytest.raises(ValueError, match="loss"):
        objective(np.zeros((2, 6, 3)), x, y, 0.1, "hinge")
    with pytest.raises(ValueError, match="method"):
        solve_top_classifier(x, y, 0.1, method="newton")
