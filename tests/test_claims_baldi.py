"""Baldi et al. claims (theory.claims.baldi): deep FA chains and one hidden layer; generic tests: test_claims.py."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import REGISTRY, load_claims, sabotage_of
from theory.claims.baldi import chain_invariants, chain_limit, fa_equilibrium_map

load_claims()


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(3, 6))
def test_invariants_are_conserved_by_the_fa_chain_field(seed, depth):
    # the field a_l' = C_l (a_1 .. a_{l-1}) r, written out here: d kappa_l / dt = 2 a_l a_l' - 2 c_{l+1} a_{l+1}' = 0
    rng = np.random.default_rng(seed)
    a, c, r = rng.uniform(-2, 2, size=depth), rng.uniform(0.5, 2, size=depth - 1), rng.normal()
    below = np.concatenate([[1.0], np.cumprod(a)[:-1]])
    above = np.concatenate([np.cumprod(c[::-1])[::-1], [1.0]])
    velocity = above * below * r
    eps = 1e-7
    drift = (chain_invariants(a + eps * velocity, c) - chain_invariants(a - eps * velocity, c)) / (2 * eps)
    np.testing.assert_allclose(drift, 0.0, atol=1e-6)


def test_chain_limit_reaches_the_optimum_on_the_curve():
    rng = np.random.default_rng(3)
    a0, c = rng.uniform(0.05, 0.3, size=4), rng.uniform(0.5, 2, size=3)
    limit = chain_limit(a0, c, 1.7)
    assert abs(np.prod(limit) - 1.7) < 1e-12 and np.all(limit > a0)
    np.testing.assert_allclose(chain_invariants(limit, c), chain_invariants(a0, c), atol=1e-12)


def test_equilibrium_map_is_least_squares_without_bottleneck_and_rank_m_with_one():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 4))
    np.testing.assert_allclose(fa_equilibrium_map(s, rng.normal(size=(5, 4))), s, atol=1e-12)
    b = rng.normal(size=(2, 4))
    m = fa_equilibrium_map(s, b)
    assert np.linalg.matrix_rank(m) == 2
    # the FA equilibrium conditions: B R = 0 for R = S - M (and R is orthogonal to M's row space)
    np.testing.assert_allclose(b @ (s - m), 0.0, atol=1e-12)
    np.testing.assert_allclose((s - m) @ m.T, 0.0, atol=1e-12)
    # only B's row space matters: mixing the hidden units by an invertible matrix leaves the limit unchanged
    np.testing.assert_allclose(fa_equilibrium_map(s, rng.normal(size=(2, 2)) @ b), m, atol=1e-12)


def test_registered_and_sabotages():
    for cid in ("baldi.deep_chain", "baldi.shallow"):
        c = REGISTRY[cid]
        assert c.rules == ("fa",) and "Baldi" in c.source
        assert c.check(1, 2).passed
        with sabotage_of(c):
            assert not c.check(1, 2).passed
