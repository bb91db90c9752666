"""Jaderberg et al. bootstrapped synthetic gradients (theory.claims.jaderberg); generic tests: test_claims.py."""

from __future__ import annotations

from sim import rules as sim_rules
from theory.claims import jaderberg as jd
from theory.claims import REGISTRY, load_claims
from theory.claims.linear import _rng

load_claims()


def test_sabotage_makes_cdni_the_frozen_net_and_is_undone():
    before = dict(sim_rules.RULES)
    with jd.synthetic_signals_dropped():
        out = jd.sg_losses(_rng(0, "test", 0))
    assert out["cdni"] == out["frozen"]  # nothing reaches the hidden layers: the frozen run exactly
    assert sim_rules.RULES == before


def test_claim_details_and_plot():
    from sim.plots import new_figure

    c = REGISTRY["jaderberg.bootstrapped_sg"]
    result = c.check(3, 1)
    assert result.passed
    d = result.details
    assert d["cdni"][0] < d["dni"][0] and d["cdni"][0] < d["frozen"][0]
    fig, (ax,) = new_figure(1)
    c.plot(result, ax)
    assert ax.patches
