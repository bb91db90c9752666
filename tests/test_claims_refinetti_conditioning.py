"""The alignment matrix's conditioning (theory.claims.refinetti_conditioning); generic tests: test_claims.py."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import REGISTRY, load_claims
from theory.claims.refinetti_conditioning import alignment_matrix_limit, readout_alignment

load_claims()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4))
def test_limit_is_a_fixed_point_of_the_mode_flow(seed, n):
    # with M = U diag(m) V^T, C = U diag(c) U^T, c = m^2/2: E = S - C M vanishes at C_inf and m = cbrt(2 s)
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(n, n)))[0]
    v = np.linalg.qr(rng.normal(size=(n + 2, n)))[0]
    s = rng.uniform(0.3, 3.0, size=n)
    c = alignment_matrix_limit(s, u)
    m = (u * np.cbrt(2 * s)) @ v.T
    np.testing.assert_allclose(c @ m, (u * s) @ v.T, atol=1e-12)
    np.testing.assert_allclose(c, m @ m.T / 2, atol=1e-12)  # the conserved c_i - m_i^2/2 = 0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 6))
def test_alignment_bound_by_the_condition_number(seed, n):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    lam = rng.uniform(0.01, 10.0, size=n)
    c = (q * lam) @ q.T
    kappa = lam.max() / lam.min()
    assert readout_alignment(c) >= 2 * math.sqrt(kappa) / (1 + kappa) - 1e-12
    assert abs(readout_alignment(q @ q.T) - 1.0) < 1e-12  # a perfectly conditioned C aligns perfectly


def test_registered():
    c = REGISTRY["refinetti.alignment_conditioning"]
    assert c.rules == ("dfa",) and "ours" in c.source and "Refinetti" in c.source
    result = c.check(3, 2)
    assert result.passed and np.all(result.details["cos"] < 1.0)
