"""The convex program of two-layer ReLU networks (theory.convex.relu, .arrangements, .first_order, .nonconvex).

Pass, fail-under-sabotage and hypothesis tests of the convex.* claims are the generic ones of test_claims.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from theory.claims import REGISTRY, load_claims
from theory.convex import (
    arrangement_count,
    cone_decompose,
    exact_arrangements,
    gated_relu,
    nonconvex_objective,
    relu_dual,
    sample_arrangements,
    two_layer_relu,
)
from theory.convex.first_order import fista_gated, gated_objective_and_bound
from theory.convex.nonconvex import gradient_descent
from theory.convex.relu import certify_point, solve_cvxpy

TOL = 1e-6  # the solvers' relative tolerance


def data(seed=0, n=9):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(size=(n, 2)), np.ones(n)], rng.normal(size=n)


def test_convex_claims_are_registered():
    load_claims()
    ids = {cid for cid, c in REGISTRY.items() if c.check.__module__ == "theory.claims.convex"}
    assert ids == {"convex.global-optimum", "convex.strong-duality", "convex.arrangement-count",
                   "convex.gated-lower-bound", "convex.greedy-bound", "convex.width-suffices",
                   "convex.vector-sandwich"}
    for cid in ids:
        assert REGISTRY[cid].sabotage is not None and REGISTRY[cid].conditions


@pytest.mark.parametrize("n, d", [(1, 1), (7, 1), (9, 2), (6, 3), (3, 4), (8, 4)])
def test_exact_enumeration_matches_the_count_formula(n, d):
    X = np.random.default_rng(n * 10 + d).normal(size=(n, d))
    mask, gates = exact_arrangements(X, include_zero=True)
    assert mask.shape == (n, arrangement_count(n, min(n, d))) and gates.shape == (d, mask.shape[1])
    np.testing.assert_array_equal(mask, (X @ gates >= 0).astype(float))  # every gate realises its pattern
    assert len({m.tobytes() for m in mask.T}) == mask.shape[1]  # distinct


def test_sampled_patterns_are_distinct_nonzero_and_start_with_all_ones():
    X = np.abs(np.random.default_rng(1).normal(size=(20, 4)))  # non-negative features: all-ones is realisable
    mask, gates = sample_arrangements(X, 50, seed=3)
    assert mask.shape[1] <= 50 and np.all(mask.sum(axis=0) > 0)
    np.testing.assert_array_equal(mask[:, 0], np.ones(20))
    np.testing.assert_array_equal(mask, (X @ gates >= 0).astype(float))


def test_optimum_is_certified_attained_and_never_beaten_by_gradient_descent():
    X, y = data(2)
    beta = 0.2
    sol = two_layer_relu(X, y, beta, solver="cvxpy")
    assert sol.exact and sol.solver == "cvxpy" and sol.certificate.holds and sol.seconds > 0
    assert sol.certificate.lower_bound <= sol.objective + TOL
    U, alpha = sol.network()
    assert U.shape == (sol.width, 3) and alpha.shape == (sol.width,)
    np.testing.assert_allclose(nonconvex_objective(U, alpha, X, y, beta), sol.objective, rtol=TOL)
    for m in (1, sol.width, 3 * sol.width):
        _, _, values = gradient_descent(X, y, beta, m, runs=4, steps=400, seed=m)
        assert np.all(values >= sol.objective * (1 - TOL))
    dual, lam = relu_dual(X, y, beta, sol.mask)
    np.testing.assert_allclose(dual, sol.objective, rtol=TOL)
    U_pred = np.maximum(X @ U.T, 0) @ alpha
    np.testing.assert_allclose(lam, y - U_pred, atol=1e-4)  # the optimal dual point is the residual


def test_a_wrong_point_is_not_certified():
    X, y = data(3)
    sol = two_layer_relu(X, y, 0.2, solver="cvxpy")
    cert = certify_point(X, y, 0.2, sol.mask, 1.2 * sol.V, sol.W)
    assert not cert.holds and cert.gap > 1e-4
    infeasible = certify_point(X, y, 0.2, sol.mask, sol.V - sol.W, np.zeros_like(sol.W))
    assert infeasible.constraint_violation > 1e-3 and not infeasible.holds


def test_gated_relaxation_bounds_and_decomposes():
    X, y = data(4)
    gated = gated_relu(X, y, 0.3, arrangements=12, solver="cvxpy")
    relu = two_layer_relu(X, y, 0.3, arrangements=12, solver="cvxpy")
    assert gated.relaxation == "gated" and not gated.exact and "sampled" in gated.arrangements
    assert gated.objective <= relu.objective * (1 + TOL)
    with pytest.raises(ValueError, match="gated"):
        gated.network()
    split = cone_decompose(X, gated, y=y)
    assert split.certificate.constraint_violation <= TOL
    assert split.objective >= relu.objective * (1 - TOL)
    U, alpha = split.network()
    np.testing.assert_allclose(nonconvex_objective(U, alpha, X, y, 0.3), split.objective, rtol=1e-6)


def test_first_order_solver_matches_clarabel_on_the_gated_program():
    X, y = data(5, n=30)
    mask, _ = sample_arrangements(X, 20, seed=1)
    u, _, _, _ = solve_cvxpy(X, y, 0.1, mask, gated=True)
    reference = certify_point(X, y, 0.1, mask, u, gated=True).primal
    res = fista_gated(X, y, 0.1, mask, tol=1e-8)
    assert res.status == "converged"
    np.testing.assert_allclose(float(res.objective), reference, rtol=1e-7)
    assert float(res.lower_bound) <= reference * (1 + 1e-9)
    sol = two_layer_relu(X, y, 0.1, arrangements=20, solver="fista", seed=1)
    assert sol.solver == "fista" and sol.certificate.constraint_violation <= TOL
    assert sol.certificate.lower_bound <= sol.objective


def test_batched_first_order_solver_equals_one_call_per_member():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3, 25, 4))
    y = rng.normal(size=(3, 25))
    mask = (X @ rng.normal(size=(3, 4, 10)) >= 0).astype(float)
    batched = fista_gated(X, y, 0.2, mask, tol=1e-9)
    for e in range(3):
        single = fista_gated(X[e], y[e], 0.2, mask[e], tol=1e-9)
        np.testing.assert_allclose(float(batched.objective[e]), float(single.objective), rtol=1e-8)


def test_first_order_solver_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    mask = (X @ rng.normal(size=(3, 6)) >= 0).astype(float)
    ref = fista_gated(X, y, 0.2, mask, tol=1e-8)
    out = fista_gated(xps.asarray(X), xps.asarray(y), 0.2, xps.asarray(mask), tol=1e-8)
    assert out.status == "converged"
    np.testing.assert_allclose(float(out.objective), float(ref.objective), rtol=1e-9)
    primal, dual = gated_objective_and_bound(xps.asarray(X)[None, ...], xps.asarray(y)[None, ...], 0.2,
                                             xps.asarray(mask)[None, ...], out.U[None, ...])
    assert float(dual[0]) <= float(primal[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), "beta"), (dict(beta=float("nan")), "beta"), (dict(arrangements="all"), "arrangements"),
    (dict(arrangements=0), "arrangements"), (dict(solver="newton"), "solver"),
])
def test_bad_input_raises_value_error(kwargs, match):
    X, y = data(8)
    args = dict(beta=0.1)
    args.update(kwargs)
    beta = args.pop("beta")
    with pytest.raises(ValueError, match=match):
        two_layer_relu(X, y, beta, **args)


def test_bad_shapes_and_degenerate_data():
    X, y = data(9)
    with pytest.raises(ValueError, match="y must be"):
        two_layer_relu(X, y[:-1], 0.1)
    with pytest.raises(ValueError, match="general position"):
        exact_arrangements(np.r_[X, 2 * X[:1]])  # two rows on one line through the origin
    with pytest.raises(ValueError, match="n_patterns"):
        sample_arrangements(X, 0)
    with pytest.raises(ValueError, match="width"):
        gradient_descent(X, y, 0.1, 0)


def test_pruning_keeps_the_objective_and_bounds_the_width():
    X, y = data(10, n=9)
    sol = two_layer_relu(X, y, 0.1)
    U_all, alpha_all = sol.network(prune=False)
    U, alpha = sol.network()
    assert len(alpha) <= len(y) and len(alpha) <= len(alpha_all)  # m* <= n (Pilanci & Ergen)
    for u, a in ((U_all, alpha_all), (U, alpha)):
        np.testing.assert_allclose(nonconvex_objective(u, a, X, y, 0.1), sol.objective, rtol=TOL)
    columns = np.maximum(X @ U.T, 0.0) * alpha
    assert np.linalg.matrix_rank(columns) == len(alpha)  # the kept neurons' outputs are independent


def test_bench_flag_of_the_cli():
    from sim.cli import build_parser

    args = build_parser().parse_args(["bench", "--convex", "--quick"])
    assert args.convex and args.quick


def test_program_is_compiled_once_and_resolved_for_new_targets():
    from theory.convex.relu import ReluProgram, two_layer_relu_columns

    X, y = data(11)
    mask, _ = sample_arrangements(X, 10, seed=2)
    program = ReluProgram(X, mask)
    assert program.problem.is_dpp()
    first = program.solve(y, 0.2)
    second = program.solve(-y, 0.1)
    assert program.n_solves == 2
    from theory.convex.relu import convex_objective

    fresh = solve_cvxpy(X, -y, 0.1, mask)
    np.testing.assert_allclose(convex_objective(X, -y, 0.1, mask, *second[:2]),
                               convex_objective(X, -y, 0.1, mask, *fresh[:2]), rtol=1e-8)
    np.testing.assert_allclose(second[0], fresh[0], atol=1e-4)  # the minimiser, to the solver's accuracy
    assert not np.allclose(first[0], second[0])
    Y = np.c_[y, -y]
    columns = two_layer_relu_columns(X, Y, 0.2, arrangements=10, seed=2)
    for c, sol in enumerate(columns):
        assert sol.certificate.holds
        np.testing.assert_allclose(sol.objective, two_layer_relu(X, Y[:, c], 0.2, arrangements=10, seed=2).objective,
                                   rtol=TOL)


def test_batched_solver_with_members_leaving_early_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(3, 25, 4)), rng.normal(size=(3, 25))
    y[1] *= 2  # this member needs more iterations: the others leave the batch first
    mask = (X @ rng.normal(size=(3, 4, 10)) >= 0).astype(float)
    ref = fista_gated(X, y, 0.2, mask, tol=1e-4, check_every=5)
    out = fista_gated(xps.asarray(X), xps.asarray(y), 0.2, xps.asarray(mask), tol=1e-4, check_every=5)
    assert out.member_iterations == ref.member_iterations and len(set(ref.member_iterations)) > 1
    np.testing.assert_allclose(np.asarray(out.objective), np.asarray(ref.objective), rtol=1e-12)
