"""convex.width-suffices: gradient descent at width 8 m* against the convex optimum (theory.claims.convex)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import load_claims, sabotage_of

CLAIM = load_claims()["convex.width-suffices"]


@settings(max_examples=2, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_best_gradient_descent_run_is_near_the_optimum(seed):
    result = CLAIM.check(seed, 1)
    assert result.passed, (seed, result.details)
    assert result.details["best_relative_gap"][0] >= -1e-6  # and never below the global optimum
    assert result.tasks == 1 and result.members == 16


def test_training_only_the_output_layer_falls_far_short():
    with sabotage_of(CLAIM):
        result = CLAIM.check(0, 1)
    assert not result.passed and result.max_violation > 10 * result.tolerance  # random features: far from p*
