"""The linear-network claims: registry entries, their caches and custom sabotages (generic tests: test_claims.py)."""

from __future__ import annotations

import math

import numpy as np

import theory.claims.linear as claims_linear
from theory.claims import REGISTRY, load_claims, sabotage_of

load_claims()
LINEAR = [c for c in REGISTRY.values() if c.check.__module__ == claims_linear.__name__]
IDS = [c.id for c in LINEAR]

#: Claims whose rule has a width-1 hidden layer or whose result survives another fixed feedback.
CUSTOM_SABOTAGE = {"lillicrap.learns", "lillicrap.alignment", "lillicrap.ewbe_positive", "lillicrap.pseudoinverse",
                   "scalar_chain.converges", "scalar_chain.anti_aligned"}


def test_registered_claims():
    expected = {"saxe.closed_form", "saxe.gd_error_linear", "saxe.half_times", "saxe.decoupled", "fa.mode_dynamics",
                "bp.balancedness", "fa.conservation", "fa.zero_init_psd", "fa.hidden_within_90",
                "fa.moves_from_zero", *CUSTOM_SABOTAGE}
    assert expected == set(IDS)
    for c in LINEAR:
        assert c.source and c.statement and c.conditions
        assert c.rules, f"{c.id} names no rule"
        assert (c.sabotage is not None) == (c.id in CUSTOM_SABOTAGE)
        assert 1 <= c.quick_instances <= c.instances
        assert 1 <= c.hypothesis_examples <= 5


def test_checks_are_reproducible():
    c = REGISTRY["fa.conservation"]
    first, second = c.check(3, 2), c.check(3, 2)
    assert first.max_violation == second.max_violation


def test_lillicrap_cache_is_not_reused_under_sabotage():
    c = REGISTRY["lillicrap.learns"]
    clean = c.check(5, 2)
    with sabotage_of(c):
        broken = c.check(5, 2)
    again = c.check(5, 2)
    assert clean.passed and not broken.passed and again.passed
    np.testing.assert_array_equal(clean.details["fa_relative_loss"], again.details["fa_relative_loss"])


def test_default_sabotage_cannot_break_the_scalar_chain():
    """Why the scalar-chain claims carry their own sabotage: rolling a width-1 signal changes nothing."""
    from theory.claims import sabotaged

    c = REGISTRY["scalar_chain.converges"]
    with sabotaged("fa"):
        assert c.check(0, 1).passed
    with claims_linear.feedback_sign_flipped():
        assert not c.check(0, 1).passed


def test_hidden_within_90_records_angles_below_90():
    result = REGISTRY["fa.hidden_within_90"].check(1, 2)
    assert result.passed
    assert result.details["largest_angle_deg"] < 90


def test_lillicrap_details():
    result = REGISTRY["lillicrap.alignment"].check(2, 3)
    assert result.details["fa_final_deg"] < 60
    assert abs(result.details["control_deg"] - 90) < 4 * math.degrees(1 / math.sqrt(200 * 3))
    ewbe = REGISTRY["lillicrap.ewbe_positive"].check(2, 3)
    assert np.all(ewbe.details["trace"] > 0)
    pinv = REGISTRY["lillicrap.pseudoinverse"].check(2, 3)
    assert np.all(pinv.details["angle_to_pinv"] < pinv.details["angle_to_transpose"])


def test_claim_plots_draw():
    from sim.plots import new_figure

    for claim_id in ("saxe.closed_form", "fa.mode_dynamics", "scalar_chain.anti_aligned", "lillicrap.alignment"):
        c = REGISTRY[claim_id]
        fig, (ax,) = new_figure(1)
        c.plot(c.check(0, 1), ax)
        assert ax.lines or ax.collections
