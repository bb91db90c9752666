"""The augmented Lagrangian solver of the cone-constrained ReLU program (theory.convex.augmented).

Speed is reported by ``bbp bench --convex``, never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

from theory.convex import two_layer_relu
from theory.convex.augmented import al_relu
from theory.convex.bench import problem
from theory.convex.relu import cone_violation, convex_objective, gated_relu, nonconvex_objective, solve_cvxpy

EPS = np.finfo(np.float64).eps
TOL = 1e-6  # the solver's relative tolerance (certified gap and violation)


def instance(seed, n=50, d=5, gates=16):
    """The bench's problem at a small size: ``(X, y, mask, beta)``."""
    return problem(n, d, gates, seed=seed)


@pytest.mark.parametrize("seed, n, d, gates", [(0, 50, 5, 16), (1, 40, 4, 12), (0, 30, 3, 12)])
def test_matches_clarabel_and_is_feasible(seed, n, d, gates):
    X, y, mask, beta = instance(seed, n, d, gates)
    v, w, _, _ = solve_cvxpy(X, y, beta, mask)
    reference = convex_objective(X, y, beta, mask, v, w)
    res = al_relu(X, y, beta, mask, tol=TOL)
    assert res.status == "converged"
    value = convex_objective(X, y, beta, mask, res.V, res.W)
    np.testing.assert_allclose(float(res.objective), value, rtol=1e3 * EPS)
    # certified: the bound lies below Clarabel's optimum and within TOL of the point's value; the point is
    # feasible to TOL, so its value may lie below the optimum by the violation times the multipliers
    assert float(res.lower_bound) <= reference * (1 + 1e3 * EPS)
    assert (value - float(res.lower_bound)) / value <= TOL
    np.testing.assert_allclose(value, reference, rtol=10 * TOL)
    assert cone_violation(X, mask, res.V, res.W) <= TOL
    np.testing.assert_allclose(float(res.violation), cone_violation(X, mask, res.V, res.W), rtol=1e-3, atol=1e-12)
    assert np.all(np.asarray(res.multipliers) >= 0) and res.multipliers.shape == (n, 2 * mask.shape[1])


def test_two_layer_relu_with_the_al_solver():
    X, y, mask, beta = instance(0)
    oracle = two_layer_relu(X, y, beta, arrangements=16, seed=0, solver="cvxpy")
    sol = two_layer_relu(X, y, beta, arrangements=16, seed=0, solver="al")
    np.testing.assert_array_equal(sol.mask, mask)
    assert sol.solver == "al" and sol.relaxation == "relu" and sol.certificate.holds
    assert sol.extra["iterations"] > 0 and sol.seconds > 0
    assert sol.certificate.lower_bound <= oracle.objective * (1 + 1e3 * EPS)
    np.testing.assert_allclose(sol.objective, oracle.objective, rtol=10 * TOL)
    U, alpha = sol.network()
    assert U.shape[1] == 5 and U.shape[0] == alpha.shape[0] >= 1
    # the recovered network's loss is the convex objective up to the (relative) violation left
    np.testing.assert_allclose(nonconvex_objective(U, alpha, X, y, beta), sol.objective, rtol=10 * TOL)
    with pytest.raises(ValueError, match="ReLU program"):
        gated_relu(X, y, beta, arrangements=16, solver="al")


def _ensemble(seeds, n=30, d=3, gates=12):
    members = [instance(s, n, d, gates) for s in seeds]
    width = min(m[2].shape[1] for m in members)
    X = np.stack([m[0] for m in members])
    y = np.stack([m[1] for m in members])
    mask = np.stack([m[2][:, :width] for m in members])
    return X, y, mask, float(np.mean([m[3] for m in members]))


def test_batched_equals_one_call_per_member():
    X, y, mask, beta = _ensemble((0, 1, 2))
    batched = al_relu(X, y, beta, mask, tol=1e-5)
    assert batched.V.shape == (3, mask.shape[2], 3) and batched.objective.shape == (3,)
    assert len(set(batched.member_iterations)) > 1  # members leave the batch at different times
    for e in range(3):
        single = al_relu(X[e], y[e], beta, mask[e], tol=1e-5)
        assert batched.member_iterations[e] == single.iterations
        np.testing.assert_allclose(float(batched.objective[e]), float(single.objective), rtol=1e3 * EPS)
        np.testing.assert_allclose(np.asarray(batched.V[e]), np.asarray(single.V), rtol=1e-9, atol=1e-12)


def test_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    X, y, mask, beta = instance(0, 20, 3, 6)
    ref = al_relu(X, y, beta, mask, max_iter=120)  # the same iterations on both namespaces, not to convergence
    out = al_relu(xps.asarray(X), xps.asarray(y), beta, xps.asarray(mask), max_iter=120)
    assert out.iterations == ref.iterations == 120 and out.status == ref.status == "max_iter"
    np.testing.assert_allclose(float(out.objective), float(ref.objective), rtol=1e3 * EPS)
    np.testing.assert_allclose(float(out.lower_bound), float(ref.lower_bound), rtol=1e3 * EPS)


def test_warm_start_and_target_stop():
    X, y, mask, beta = instance(0)
    cold = al_relu(X, y, beta, mask, tol=TOL)
    warm = al_relu(X, y, beta, mask, tol=TOL, multipliers=cold.multipliers)
    assert warm.status == "converged"
    np.testing.assert_allclose(float(warm.objective), float(cold.objective), rtol=10 * TOL)
    loose = al_relu(X, y, beta, mask, tol=1e-3, target=float(cold.objective))
    assert loose.status == "converged" and loose.iterations < cold.iterations
    assert abs(float(loose.objective) - float(cold.objective)) <= 1e-3 * float(cold.objective)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), "beta"), (dict(beta=float("inf")), "beta"), (dict(tol=0.0), "tol"), (dict(tol=1.5), "tol"),
    (dict(feasibility_tol=-1.0), "feasibility_tol"), (dict(rho=-2.0), "rho"), (dict(shrink=0.0), "shrink"),
    (dict(max_iter=0), "max_iter"), (dict(inner_iterations=2.5), "inner_iterations"),
    (dict(multipliers=-np.ones((30, 24))), "multipliers"),
])
def test_bad_settings_raise_value_error(kwargs, match):
    X, y, mask, _ = instance(0, 30, 3, 12)
    args = dict(beta=0.1)
    args.update(kwargs)
    beta = args.pop("beta")
    with pytest.raises(ValueError, match=match):
        al_relu(X, y, beta, mask, **args)


def test_bad_shapes_raise_value_error():
    X, y, mask, _ = instance(0, 30, 3, 12)
    with pytest.raises(ValueError, match="share n"):
        al_relu(X, y[:-1], 0.1, mask)
    with pytest.raises(ValueError, match="member axes"):
        al_relu(np.stack([X, X]), np.stack([y, y, y]), 0.1, mask[None])
    with pytest.raises(ValueError, match=r"\(E, n, d\)"):
        al_relu(X[None, None], y, 0.1, mask)


def test_relu_bench_runs_and_formats():
    from theory.convex import bench

    tiny = {"n": 50, "d": 5, "patterns": 16, "ns": (40,), "pattern_counts": (10,), "ensemble": 2, "ensemble_n": 20,
            "ensemble_patterns": 6}
    results = bench.run_relu_bench(tiny)
    main = results["main"]
    assert main["al_status"] == "converged" and main["al_certified_gap"] <= bench.GAP
    assert main["al_violation"] <= bench.FEASIBILITY and abs(main["gap_to_clarabel"]) <= 10 * bench.GAP
    assert main["active_set_status"] == "kkt" and main["active_set_certified_gap"] <= 1e-9
    assert abs(main["active_set_gap_to_clarabel"]) <= 1e-8 and main["active_set_violation"] <= 1e3 * EPS
    assert [s["n"] for s in results["scaling"]["n"]] == [40, 50]
    assert [s["patterns"] for s in results["scaling"]["patterns"]] == [10, 16]
    assert all(s["status"] == "kkt" for s in results["scaling"]["n"] + results["scaling"]["patterns"])
    assert results["ensemble"]["max_relative_difference"] <= 1e3 * EPS
    assert abs(results["ensemble"]["al_vs_active_set_max_relative_gap"]) <= 10 * bench.GAP  # AL: feasible to 1e-7
    text = bench.format_relu_bench(results)
    assert "augmented Lagrangian" in text and "active-set Newton" in text and "speedup" in text
    assert "ReLU program" in bench.format_convex_bench({**_gated_stub(), "relu": results})


def _gated_stub():
    scaling = {"n": [{"n": 1, "seconds": 1.0}], "patterns": [{"patterns": 1, "seconds": 1.0}]}
    main = {"n": 1, "d": 1, "patterns": 1, "clarabel_seconds": 1.0, "clarabel_status": "optimal",
            "fista_seconds": 1.0, "fista_iterations": 1, "fista_certified_gap": 0.0, "gap_to_clarabel": 0.0,
            "speedup": 1.0}
    ensemble = {"members": 1, "n": 1, "patterns": 1, "batched_seconds": 1.0, "loop_seconds": 1.0, "speedup": 1.0}
    return {"main": main, "scaling": scaling, "ensemble": ensemble}
