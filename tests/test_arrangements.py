"""The depth-needing arrangements preset (sim.data.arrangements): what its construction promises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.data.arrangements import arrangement_grammar, arrangement_margin, arrangements


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), signature=st.floats(0.05, 0.6))
def test_positions_carry_no_label_information_beyond_the_signatures(seed, signature):
    """P(symbol at (r, c) | y) = (1 - eps) [a in M_c] / 3 + eps [signature_y(r, c) = a], the same base for every y."""
    g = arrangement_grammar(seed=seed, signature=signature)
    table, probs = np.asarray(g.expansions[0]), np.asarray(g.variant_probs[0])
    k1 = g.alphabet_sizes[1]
    onehot = np.eye(k1)[table]  # (classes, variants, 9 positions, symbols)
    shifts = np.einsum("yv,yvpa->ypa", probs[:, :3], onehot[:, :3])
    np.testing.assert_allclose(shifts, np.broadcast_to(shifts[0], shifts.shape), atol=1e-12)
    assert arrangement_margin(g)["distinct_patch_tables"]
    assert min(arrangement_margin(g)["label_statistics_margin"]) > 0


def test_the_margin_grows_with_the_signature_probability():
    small = arrangement_margin(arrangement_grammar(signature=0.1))["label_statistics_margin"]
    large = arrangement_margin(arrangement_grammar(signature=0.3))["label_statistics_margin"]
    assert all(a < b for a, b in zip(small, large))


def test_samples_and_bad_settings():
    sample = arrangements(50, seed=1, noise=0.0)
    assert sample.images.shape == (50, 27, 27) and sample.grammar.n_classes == 10
    with pytest.raises(ValueError, match=r"signature must be in \(0, 1\).*got 0.0"):
        arrangement_grammar(signature=0.0)
    with pytest.raises(ValueError, match="n_classes must be an integer from 2 to 20, got 30"):
        arrangement_grammar(n_classes=30)
