"""Saxe et al. for deep linear networks (theory.claims.saxe_depth); generic tests: test_claims.py."""

from __future__ import annotations

import numpy as np

from theory.claims import saxe_depth as sd
from theory import closed_forms as cf
from theory.claims import REGISTRY, load_claims
from theory.claims.linear import _rng

load_claims()


def test_balanced_init_has_mode_strength_u0():
    depth, data, s, frames, u0 = sd._depth_instance(_rng(0, "test", 0))
    weights = sd.balanced_weights(depth, data, s, frames, u0)
    assert len(weights) == depth
    np.testing.assert_allclose(sd._strengths(weights, data), u0 * np.eye(s.size), atol=1e-15)
    # balanced: W_{l+1}^T W_{l+1} = W_l W_l^T for every hidden layer
    for lower, upper in zip(weights[:-1], weights[1:]):
        np.testing.assert_allclose(upper[0].T @ upper[0], lower[0] @ lower[0].T, atol=1e-14)


def test_depth_two_ode_is_saxes_logistic():
    times = np.linspace(0, 5, 11)
    np.testing.assert_allclose(cf.depth_mode_strength(times, 2.0, 1e-3, 2), cf.saxe_mode_strength(times, 2.0, 1e-3),
                               rtol=1e-8)


def test_plateau_time_scales_as_u0_to_the_minus_one_minus_two_over_depth():
    """Deeper nets wait longer on the plateau: t(u0) ~ u0^-(1 - 2/D) / (s (D - 2)) for small u0."""
    s, depth = 1.0, 4
    times = np.linspace(0, 400, 40001)
    for u0 in (1e-4, 1e-5):
        u = cf.depth_mode_strength(times, s, u0, depth)
        half = times[np.argmax(u >= s / 2)]
        predicted = u0 ** -(1 - 2 / depth) / (s * (depth - 2))
        np.testing.assert_allclose(half, predicted, rtol=0.15)


def test_details_and_plot():
    from sim.plots import new_figure

    c = REGISTRY["saxe.depth_modes"]
    result = c.check(1, 1)
    assert result.passed
    coarse, fine = result.details["errors"]
    assert 1.25 < coarse / fine < 2.75  # first order in the step
    fig, (ax,) = new_figure(1)
    c.plot(result, ax)
    assert ax.lines
