"""The active-set Newton method of the cone-constrained ReLU program (theory.convex.active_set).

Checked against Clarabel (an interior-point solver of the same program, through cvxpy), against its own
certificate, and against sabotage that the certificate must expose. Speed is reported by
``bbp bench --convex``, never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from theory.convex import active_set as act
from theory.convex import relu, two_layer_relu
from theory.convex.active_set import _nnls, active_set_relu
from theory.convex.augmented import al_relu
from theory.convex.bench import problem
from theory.convex.relu import cone_violation, convex_objective, nonconvex_objective, solve_cvxpy

EPS = np.finfo(np.float64).eps
#: Clarabel stops at relative gaps of 1e-9 (relu.CLARABEL_OPTIONS) and its point is feasible to 1e-9: on 300
#: random programs the two values agreed to 4.9e-9 at worst. The precise check is the certified gap (<= 1e-9).
ORACLE = 1e-7


def oracle(X, y, beta, mask):
    """Clarabel's optimal value; where it reports "optimal_inaccurate" the comparisons below still hold
    (checked on the draws that gave it)."""
    v, w, status, _ = solve_cvxpy(X, y, beta, mask)
    assert status in ("optimal", "optimal_inaccurate")
    return convex_objective(X, y, beta, mask, v, w)


def random_program(seed):
    """A well-conditioned random program from a seed: Gaussian data, XOR-like or Gaussian targets, sampled
    patterns, and a weight decay between 0.1% and 50% of the value above which the optimum is zero."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15, 21)))
    n, d = int(rng.integers(10, 60)), int(rng.integers(2, 7))
    X = rng.normal(size=(n, d))
    y = np.sign(X[:, 0] * X[:, 1]) + 0.1 * rng.normal(size=n) if seed % 2 else rng.normal(size=n)
    mask, _ = relu.arr.sample_arrangements(X, int(rng.integers(4, 24)), seed=seed)
    top = float(np.max(np.linalg.norm(X.T @ (mask * y[:, None]), axis=0)))
    return X, y, mask, top * float(rng.choice([1e-3, 0.01, 0.1, 0.5]))


def assert_certified_optimum(res, X, y, beta, mask, reference):
    assert res.status == "kkt"
    value = convex_objective(X, y, beta, mask, res.V, res.W)
    np.testing.assert_allclose(res.objective, value, rtol=1e3 * EPS)
    np.testing.assert_allclose(value, reference, rtol=ORACLE)
    assert res.lower_bound <= reference + ORACLE * max(1.0, abs(reference))  # weak duality
    assert res.relative_gap <= 1e-9
    assert res.violation == cone_violation(X, mask, res.V, res.W) <= 1e3 * EPS  # every iterate is feasible


@pytest.mark.parametrize("seed, n, d, gates", [(0, 50, 5, 16), (1, 80, 6, 24), (2, 30, 3, 12), (4, 120, 8, 30)])
def test_matches_clarabel_with_a_certificate(seed, n, d, gates):
    X, y, mask, beta = problem(n, d, gates, seed=seed)
    assert_certified_optimum(active_set_relu(X, y, beta, mask), X, y, beta, mask, oracle(X, y, beta, mask))


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10**6))
def test_random_programs_agree_with_clarabel(seed):
    X, y, mask, beta = random_program(seed)
    assert_certified_optimum(active_set_relu(X, y, beta, mask), X, y, beta, mask, oracle(X, y, beta, mask))


def test_exact_arrangements_global_optimum_and_recovered_network():
    rng = np.random.default_rng(4)
    X = np.c_[rng.normal(size=(25, 2)), np.ones(25)]  # with a bias column
    y = np.sign(X[:, 0] * X[:, 1])
    oracle_sol = two_layer_relu(X, y, 0.2, solver="cvxpy")
    sol = two_layer_relu(X, y, 0.2, solver="active-set")
    assert sol.solver == "active-set" and sol.exact and sol.certificate.holds
    np.testing.assert_allclose(sol.objective, oracle_sol.objective, rtol=ORACLE)
    U, alpha = sol.network()  # pruned to independent columns, then the recovery map
    assert U.shape[0] == alpha.shape[0] <= 25
    np.testing.assert_allclose(nonconvex_objective(U, alpha, X, y, 0.2), sol.objective, rtol=1e-10)


def test_rank_deficient_data_is_solved_in_the_row_space():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 2)) @ rng.normal(size=(2, 6))  # rank 2 in R^6
    y = np.sign(X[:, 0])
    ref = two_layer_relu(X, y, 0.1, arrangements=12, solver="cvxpy")
    sol = two_layer_relu(X, y, 0.1, arrangements=12, solver="active-set")
    np.testing.assert_allclose(sol.objective, ref.objective, rtol=ORACLE)
    assert sol.certificate.holds


def test_auto_picks_the_active_set_above_clarabels_size(monkeypatch):
    X, y, mask, beta = problem(40, 4, 10, seed=1)
    monkeypatch.setattr(relu, "CVXPY_MAX_SIZE", 0)
    sol = two_layer_relu(X, y, beta, arrangements=10, seed=1)
    assert sol.solver == "active-set"


def test_zero_is_optimal_for_zero_targets_and_large_beta():
    X, y, mask, beta = problem(30, 4, 10, seed=2)
    res = active_set_relu(X, np.zeros_like(y), beta, mask)
    assert res.status == "kkt" and res.active == 0 and res.objective == 0.0 and res.lower_bound == 0.0
    top = float(np.max(np.linalg.norm(X.T @ (mask * y[:, None]), axis=0)))
    res = active_set_relu(X, y, 1.01 * top, mask)  # above every block's dual norm: nothing enters
    assert res.active == 0 and res.counts["entered"] == 0
    np.testing.assert_allclose(res.lower_bound, res.objective, rtol=1e-12)


def test_warm_starts_reach_the_same_optimum():
    X, y, mask, beta = problem(60, 5, 16, seed=3)
    reference = oracle(X, y, beta, mask)
    al = al_relu(X, y, beta, mask, tol=1e-3)
    res = active_set_relu(X, y, beta, mask, np.asarray(al.V), np.asarray(al.W), multipliers=np.asarray(al.multipliers))
    assert_certified_optimum(res, X, y, beta, mask, reference)
    cold = active_set_relu(X, y, beta, mask)
    again = active_set_relu(X, y, beta, mask, cold.V, cold.W)  # from the optimum: no pivot left to make
    assert_certified_optimum(again, X, y, beta, mask, reference)
    assert again.counts["blocked"] == again.counts["released"] == again.counts["entered"] == 0


def test_the_certificate_exposes_a_stopped_or_sabotaged_solve(monkeypatch):
    X, y, mask, beta = problem(60, 5, 16, seed=0)
    reference = oracle(X, y, beta, mask)
    stopped = active_set_relu(X, y, beta, mask, max_steps=3)
    assert stopped.status == "max_steps"
    assert stopped.lower_bound <= reference + ORACLE * reference <= stopped.objective
    assert stopped.relative_gap > 1e-3
    # pricing that never lets a block in: the point is not optimal, and its certificate says so
    monkeypatch.setattr(act, "_price", lambda prog, j, gj, mu: (float(np.linalg.norm(gj)), None))
    blind = active_set_relu(X, y, beta, mask)
    assert blind.status == "kkt" and blind.objective > reference * (1 + 1e-3)
    assert blind.relative_gap > 1e-3


def test_nnls_matches_scipy_cold_and_warm():
    rng = np.random.default_rng(6)
    for trial in range(20):
        X = rng.normal(size=(300, 8))
        G = np.sign(X @ rng.normal(size=8))[:, None] * X  # the rows of an arrangement cell's cone
        g = rng.normal(size=8) if trial % 4 else -G[:3].T @ rng.random(3)  # inside the polar: projection zero
        ref = G.T @ nnls(G.T, g)[0]
        cold = _nnls(G.T, g)
        assert np.all(cold >= 0)
        np.testing.assert_allclose(G.T @ cold, ref, atol=1e-9 * max(1.0, np.linalg.norm(g)))
        g2 = g + 0.05 * rng.normal(size=8)
        warm = _nnls(G.T, g2, np.flatnonzero(cold > 0))
        np.testing.assert_allclose(G.T @ warm, G.T @ nnls(G.T, g2)[0], atol=1e-9 * max(1.0, np.linalg.norm(g2)))


def test_bad_input_is_refused():
    X, y, mask, beta = problem(20, 3, 6, seed=0)
    p, d = mask.shape[1], X.shape[1]
    cases = [((X, y[:-1], beta, mask), {}, "y \\(n,\\)"),
             ((X, y, 0.0, mask), {}, "beta"),
             ((X, y, float("nan"), mask), {}, "beta"),
             ((np.where(X > 1, np.inf, X), y, beta, mask), {}, "finite"),
             ((X, y, beta, 2 * mask), {}, "0/1"),
             ((X, y, beta, mask, np.ones((p + 1, d))), {}, "V must be"),
             ((X, y, beta, mask), {"multipliers": -np.ones((20, 2 * p))}, ">= 0")]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            active_set_relu(*args, **kwargs)
    with pytest.raises(ValueError, match="ReLU program"):
        relu.gated_relu(X, y, beta, arrangements=6, solver="active-set")
