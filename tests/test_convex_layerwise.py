"""Convex greedy layerwise training (theory.convex.layerwise), the convex experiments and ``bbp bench --convex``."""

from __future__ import annotations

import numpy as np
import pytest

import theory.experiments  # noqa: F401  (registers the experiments)
from sim.experiments import Context, run_experiment
from theory.convex import layerwise
from theory.convex import bench as convex_bench


def xor_data(seed=0, n=24):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, np.eye(2)[(X[:, 0] * X[:, 1] > 0).astype(int)]


def test_convex_greedy_reports_blocks_risks_bounds_and_certificates():
    X, Y = xor_data()
    result = layerwise.convex_greedy(X, Y, 0.05, 3, arrangements=12)
    assert len(result.blocks) == 3 and len(result.bounds) == 2 == len(result.bound_violations)
    assert max(result.bound_violations) <= 1e-6  # Prop. 3.1 with weight decay
    inputs = 2
    for block, risk in zip(result.blocks, result.risks):
        assert all(c.holds for c in block.certificates)
        assert block.U.shape[1] == inputs + 1  # the block below's features and a bias column
        inputs = block.U.shape[0]
        assert risk >= 0
    # the risk reported is the block head's risk on the training data
    pred = result.predict(X)
    np.testing.assert_allclose(np.sum((pred - Y) ** 2) / (2 * len(Y)), result.risks[-1], rtol=1e-10)
    # each block's objective is the sum of its class programs, each attained by its recovered network
    first = result.blocks[0]
    fit = 0.5 * np.sum((first.predict(X) - Y) ** 2)
    reg = 0.5 * 0.05 * (np.sum(first.U ** 2) + sum(np.sum(a ** 2) for a in first.heads))
    np.testing.assert_allclose(fit + reg, result.objectives[0], rtol=1e-6)


def test_convex_greedy_with_vector_heads_shares_the_hidden_layer_and_obeys_prop31():
    from theory.convex.vector import vector_objective

    X, Y = xor_data()
    result = layerwise.convex_greedy(X, Y, 0.05, 2, arrangements=12, head="vector")
    assert len(result.blocks) == 2 and max(result.bound_violations) <= 1e-6  # identity offered to the refit
    first = result.blocks[0]
    assert len(first.objectives) == 1 and all(len(c) == first.U.shape[0] for c in first.columns)
    A = np.stack(first.heads, axis=1)
    np.testing.assert_allclose(vector_objective(first.U, A, layerwise.with_bias(X), Y, 0.05), first.objectives[0],
                               rtol=1e-12)
    cert = first.certificates[0]
    assert cert.lower_bound <= cert.primal  # the gated bound over the sampled patterns
    pred = result.predict(X)
    np.testing.assert_allclose(np.sum((pred - Y) ** 2) / (2 * len(Y)), result.risks[-1], rtol=1e-10)


def test_convex_greedy_bad_input():
    X, Y = xor_data()
    with pytest.raises(ValueError, match="n_blocks"):
        layerwise.convex_greedy(X, Y, 0.1, 0)
    with pytest.raises(ValueError, match="head must be"):
        layerwise.convex_greedy(X, Y, 0.1, 1, head="shared")
    with pytest.raises(ValueError, match="Y must be"):
        layerwise.one_vs_all(X, Y[:-1], 0.1)


@pytest.mark.parametrize("name, overrides", [
    ("convex-vs-gd", {"widths": [1, 8], "runs": 3, "steps": 200}),
    ("convex-layerwise", {"n_test": 100, "sgd_epochs": 2, "arrangements": 8}),
    ("convex-layerwise", {"n_test": 100, "sgd_epochs": 2, "arrangements": 8, "head": "vector"}),
])
def test_convex_experiments_run_quick(name, overrides):
    _, result = run_experiment(name, context=Context(quick=True, n_seeds=1, progress=False), overrides=overrides)
    assert result.figures and result.summary
    if name == "convex-vs-gd":
        assert result.metrics["min_relative_gap"] >= -1e-6  # no GD run below the convex optimum
        assert max(result.metrics["certificate_relative_gap"]) <= 1e-6
    else:
        assert np.max(result.metrics["prop31_bound_violation"]) <= 1e-6
        assert set(result.metrics["sgd"]) == {"greedy", "dgl", "bp"}


def test_convex_experiment_settings_are_validated():
    with pytest.raises(ValueError, match="task"):
        run_experiment("convex-layerwise", context=Context(quick=True, n_seeds=1, progress=False),
                       overrides={"task": "mnist"})


def test_convex_bench_runs_and_formats(monkeypatch):
    tiny = {"n": 60, "d": 4, "patterns": 10, "ns": (30, 60), "pattern_counts": (5, 10), "ensemble": 3,
            "ensemble_n": 30}
    monkeypatch.setattr(convex_bench, "QUICK", tiny)
    results = convex_bench.run_convex_bench(quick=True, progress=False)
    main = results["main"]
    assert main["fista_status"] == "converged" and main["fista_certified_gap"] <= 1e-6
    assert main["gap_to_clarabel"] <= 1e-6  # to the target relative gap of the issue
    assert results["ensemble"]["max_relative_difference"] <= 1e-5
    assert "speedup" in convex_bench.format_convex_bench(results)
