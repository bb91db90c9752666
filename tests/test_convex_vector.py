"""The vector-output two-layer ReLU problem (theory.convex.vector): the certified sandwich of its global optimum."""

from __future__ import annotations

import numpy as np
import pytest

from theory.convex import gated_relu, two_layer_relu
from theory.convex.nonconvex import gradient_descent_vector
from theory.convex.vector import (
    dual_lower_bound,
    gated_objective,
    one_vs_all_network,
    relu_dual_norm,
    relu_lower_bound,
    two_layer_relu_vector,
    vector_objective,
)

EPS = np.finfo(float).eps
TOL = 1e-6  # Clarabel's relative tolerance


def data(seed=0, n=7, k=2):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(size=(n, 2)), np.ones(n)], rng.normal(size=(n, k))


@pytest.fixture(scope="module")
def solved():
    X, Y = data(1)
    return X, Y, 0.2, two_layer_relu_vector(X, Y, 0.2, solver="cvxpy", one_vs_all=True)


def test_the_sandwich_is_certified_and_closes(solved):
    X, Y, beta, sol = solved
    assert sol.exact and sol.solver == "cvxpy" and sol.seconds > 0
    # the network's objective is the reported upper bound
    U, A = sol.network()
    assert U.shape == (sol.width, 3) and A.shape == (sol.width, 2)
    np.testing.assert_allclose(vector_objective(U, A, X, Y, beta), sol.upper_bound, rtol=100 * EPS)
    # gated relaxation <= ReLU lower bound <= upper bound, and column generation closes the gap
    gated = sol.extra["gated_lower_bound"]
    assert gated <= sol.gated_objective * (1 + TOL) and gated <= sol.lower_bound
    assert sol.lower_bound <= sol.upper_bound and sol.relative_gap <= 1e-4
    # the vector network shares neurons: at most the one-vs-all optimum (separate hidden layers per class)
    assert sol.upper_bound <= sol.extra["one_vs_all_objective"] * (1 + 1e-9)


def test_no_gradient_descent_run_beats_the_lower_bound(solved):
    X, Y, beta, sol = solved
    for width in (1, 4, 16):
        _, _, values = gradient_descent_vector(X, Y, beta, width, runs=8, steps=1500, seed=width)
        assert np.all(values >= sol.lower_bound * (1 - 1e3 * EPS))


def test_k_equal_one_is_the_scalar_program():
    X, Y = data(2, k=1)
    sol = two_layer_relu_vector(X, Y, 0.3, solver="cvxpy", refine_rounds=0, polish_steps=0)
    gated = gated_relu(X, Y[:, 0], 0.3, solver="cvxpy")
    np.testing.assert_allclose(sol.gated_objective, gated.objective, rtol=TOL)
    scalar = two_layer_relu(X, Y[:, 0], 0.3, solver="cvxpy")  # the exact scalar optimum, inside the sandwich
    assert sol.lower_bound <= scalar.objective * (1 + TOL) <= sol.upper_bound * (1 + 2 * TOL)
    refined = two_layer_relu_vector(X, Y, 0.3, solver="cvxpy", tolerance=1e-6)
    np.testing.assert_allclose(refined.upper_bound, scalar.objective, rtol=1e-5)
    np.testing.assert_allclose(refined.lower_bound, scalar.objective, rtol=1e-5)


def test_one_vs_all_is_a_vector_network_of_block_form():
    X, Y = data(3, k=3)
    U, A, objectives = one_vs_all_network(X, Y, 0.2)
    assert np.all(np.count_nonzero(A, axis=1) == 1)  # every neuron feeds one output
    np.testing.assert_allclose(vector_objective(U, A, X, Y, 0.2), np.sum(objectives), rtol=TOL)


def test_proximal_solver_matches_clarabel_on_the_gated_program():
    X, Y = data(4, n=9, k=3)
    a = two_layer_relu_vector(X, Y, 0.1, arrangements=10, solver="cvxpy", polish_steps=0)
    b = two_layer_relu_vector(X, Y, 0.1, arrangements=10, solver="proximal", polish_steps=0)
    assert not a.exact and b.status == "converged" and a.extra["refine_rounds"] == 0
    np.testing.assert_allclose(b.gated_objective, a.gated_objective, rtol=1e-6)
    assert b.lower_bound <= a.gated_objective * (1 + TOL)
    np.testing.assert_allclose(gated_objective(X, Y, 0.1, b.mask, b.V), b.gated_objective, rtol=100 * EPS)


def test_dual_norms_and_bounds():
    X, Y = data(5)
    sol = two_layer_relu_vector(X, Y, 0.2, solver="cvxpy", refine_rounds=0)
    lam = Y - np.maximum(X @ sol.U.T, 0) @ sol.A
    s = relu_dual_norm(X, lam, sol.mask)
    # s is a maximum over unit directions: random directions never exceed it
    u = np.random.default_rng(0).normal(size=(20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    sampled = np.max(np.linalg.norm(np.maximum(u @ X.T, 0) @ lam, axis=1))
    assert sampled <= s * (1 + 1e3 * EPS) and sampled >= 0.9 * s
    # the ReLU dual norm is at most the gated one, so its bound is at least the gated bound
    assert relu_lower_bound(X, Y, 0.2, lam, sol.mask) >= dual_lower_bound(X, Y, 0.2, sol.mask, lam) - 1e3 * EPS


@pytest.mark.parametrize("args, match", [
    ((np.ones(5), np.ones((5, 2)), 0.1), "X must be"),
    ((np.ones((5, 2)), np.ones(5), 0.1), "Y must be"),
    ((np.ones((5, 2)), np.ones((4, 2)), 0.1), "Y must be"),
    ((np.ones((5, 2)), np.ones((5, 2)), 0.0), "beta must be"),
    ((np.ones((5, 2)), np.full((5, 2), np.nan), 0.1), "Y must be"),
])
def test_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        two_layer_relu_vector(*args)


def test_bad_options_raise():
    X, Y = data(6)
    with pytest.raises(ValueError, match="solver must be"):
        two_layer_relu_vector(X, Y, 0.1, solver="newton")
    with pytest.raises(ValueError, match="polish_steps"):
        two_layer_relu_vector(X, Y, 0.1, polish_steps=-1)
    with pytest.raises(ValueError, match="refine_rounds"):
        two_layer_relu_vector(X, Y, 0.1, refine_rounds=1.5)
    with pytest.raises(ValueError, match="extra_directions"):
        two_layer_relu_vector(X, Y, 0.1, arrangements=4, extra_directions=np.ones((2, 5)))
    with pytest.raises(ValueError, match="arrangements"):
        two_layer_relu_vector(X, Y, 0.1, arrangements="all")
    with pytest.raises(ValueError, match="Y must be"):
        gradient_descent_vector(X, Y[:, 0], 0.1, 3)
