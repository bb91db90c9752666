"""The sign-symmetry, Kolen-Pollack and DRTP claims: registry entries and the custom sabotage (generic tests: test_claims.py)."""

from __future__ import annotations

import numpy as np

import theory.claims.sign as claims_sign
from theory.claims import REGISTRY, load_claims, sabotaged

load_claims()
SIGN = [c for c in REGISTRY.values() if c.check.__module__ == claims_sign.__name__]


def test_registered_claims():
    assert {c.id for c in SIGN} == {"kp.decay", "sign.usf_alignment", "drtp.identity"}
    for c in SIGN:
        assert c.source and c.statement and c.conditions and c.rules
        assert 1 <= c.quick_instances <= c.instances
    assert REGISTRY["kp.decay"].sabotage is not None


def test_default_sabotage_cannot_break_the_kp_decay():
    """Why kp.decay carries its own sabotage: B - W^T decays whatever the hidden signals are."""
    c = REGISTRY["kp.decay"]
    with sabotaged("kp"):
        assert c.check(0, 1).passed
    with claims_sign.kp_feedback_without_decay():
        assert not c.check(0, 1).passed
    assert c.check(0, 1).passed  # restored


def test_usf_starts_near_the_angle_of_sign_to_a_gaussian():
    curves = REGISTRY["sign.usf_alignment"].check(1, 1).details["curves"][0]
    # arccos(sqrt(2 / pi)) = 37.0 degrees for the signs of a Gaussian matrix; FA's random B starts near 90
    assert abs(curves["usf"][0] - np.degrees(np.arccos(np.sqrt(2 / np.pi)))) < 8
    assert curves["fa"][0] > 75


def test_claim_plots_draw():
    from sim.plots import new_figure

    for c in SIGN:
        fig, (ax,) = new_figure(1)
        c.plot(c.check(0, 1), ax)
        assert ax.lines or ax.collections
