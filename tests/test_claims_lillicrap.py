"""Lillicrap et al. supplementary claims (theory.claims.lillicrap); generic tests: test_claims.py."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import REGISTRY, load_claims
from theory.claims.lillicrap import gauss_newton_hidden_step

load_claims()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), n1=st.integers(1, 6), n2=st.integers(1, 6))
def test_gauss_newton_step_solves_the_normal_equations(seed, n1, n2):
    rng = np.random.default_rng(seed)
    w2, e = rng.normal(size=(n2, n1)), rng.normal(size=(5, n2))
    step = gauss_newton_hidden_step(w2, e)
    # least squares: the residual is orthogonal to the range of W2; least norm: the step lies in the row space
    np.testing.assert_allclose(w2.T @ (w2 @ step.T - e.T), 0.0, atol=1e-10)
    row_space = np.linalg.svd(w2)[2][: np.linalg.matrix_rank(w2)]
    np.testing.assert_allclose(step.T, row_space.T @ row_space @ step.T, atol=1e-10)


def test_gauss_newton_differs_from_bp_unless_w2_has_orthonormal_rows():
    rng = np.random.default_rng(0)
    w2, e = rng.normal(size=(3, 5)), rng.normal(size=(4, 3))
    assert not np.allclose(gauss_newton_hidden_step(w2, e), e @ w2)
    q = np.linalg.qr(rng.normal(size=(5, 3)))[0].T  # orthonormal rows: W^+ = W^T
    np.testing.assert_allclose(gauss_newton_hidden_step(q, e), e @ q, atol=1e-12)


def test_registered():
    c = REGISTRY["lillicrap.gauss_newton"]
    assert c.rules == ("fa",) and "Lillicrap" in c.source
    assert c.check(0, 3).passed


def test_equilibrium_reaches_least_squares_and_not_with_unfixed_feedback():
    from theory.claims.linear import _rng, feedback_not_fixed
    from theory.claims.lillicrap import fa_end_to_end

    assert fa_end_to_end(_rng(1, "test", 0)) < 1e-6
    with feedback_not_fixed():
        assert fa_end_to_end(_rng(1, "test", 0)) > 1e-4
    c = REGISTRY["lillicrap.equilibrium"]
    assert c.sabotage is not None and c.check(2, 2).passed
