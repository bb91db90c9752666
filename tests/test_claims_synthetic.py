"""The synthetic-gradient claims: registry entries and custom sabotages (generic tests: test_claims.py)."""

from __future__ import annotations

import numpy as np

import theory.claims.synthetic as claims_synthetic
from theory.claims import REGISTRY, load_claims, sabotaged

load_claims()
SYNTHETIC = [c for c in REGISTRY.values() if c.check.__module__ == claims_synthetic.__name__]
IDS = [c.id for c in SYNTHETIC]

#: The stall is a statement about what the module reads, not about a rule's signal.
CUSTOM_SABOTAGE = {"sg.dni_stall"}


def test_registered_claims():
    assert set(IDS) == {"sg.perfect_and_zero_init", "sg.linear_critical_points", "sg.cdni_regression",
                        "sg.dni_stall", "sg.unified_view"}
    for c in SYNTHETIC:
        assert c.source and c.statement and c.conditions
        assert (c.sabotage is not None) == (c.id in CUSTOM_SABOTAGE)
        assert c.rules or c.sabotage is not None
        assert 1 <= c.quick_instances <= c.instances
        assert 1 <= c.hypothesis_examples <= 5
    assert "ours" in REGISTRY["sg.dni_stall"].source
    assert "ours" in REGISTRY["sg.linear_critical_points"].source


def test_default_sabotage_cannot_break_the_stall():
    """Why sg.dni_stall carries its own sabotage: a zero (or width-1) signal is unchanged by the default one."""
    c = REGISTRY["sg.dni_stall"]
    with sabotaged("sg"):
        assert c.check(0, 1).passed
    with claims_synthetic.dni_reads_label():
        assert not c.check(0, 1).passed


def test_checks_are_reproducible():
    c = REGISTRY["sg.unified_view"]
    assert c.check(3, 3).max_violation == c.check(3, 3).max_violation


def test_details():
    critical = REGISTRY["sg.linear_critical_points"].check(1, 3)
    # without the label the least-squares module cannot represent the gradient of noisy targets
    assert min(critical.details["dni_relative_residual"]) > 1e-3
    stall = REGISTRY["sg.dni_stall"].check(2, 2)
    assert min(stall.details["stall_distance"]) > 0.05


def test_claim_plots_draw():
    from sim.plots import new_figure

    for c in SYNTHETIC:
        if c.plot is None:
            continue
        fig, (ax,) = new_figure(1)
        c.plot(c.check(0, 1), ax)
        assert ax.lines or ax.collections
