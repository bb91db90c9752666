"""Claims of local and layer-parallel learning (theory.claims_local): pass, fail sabotaged, hold on random seeds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import get_claims, load_claims, run_claim, sabotage_of

load_claims()
CLAIMS = [c for c in get_claims() if c.id.startswith("local.")]
IDS = [c.id for c in CLAIMS]


def test_the_local_claims_are_registered():
    assert IDS == ["local.gradient-isolation", "local.cpc-bound", "local.ntxent-values", "local.dgl-moving-input",
                   "local.delayed-ogd-regret", "local.async-buffer"]
    for c in CLAIMS:
        assert c.sabotage is not None and c.source and c.statement and c.conditions


@pytest.mark.parametrize("claim", CLAIMS, ids=IDS)
def test_claim_passes_quick(claim):
    outcome = run_claim(claim, quick=True)
    assert outcome.status == "pass", outcome
    assert outcome.instances == claim.quick_instances


@pytest.mark.parametrize("claim", CLAIMS, ids=IDS)
def test_claim_fails_when_sabotaged(claim):
    with sabotage_of(claim):
        outcome = run_claim(claim, quick=True)
    assert outcome.status == "fail", outcome
    assert claim.check(0, 1).passed  # the sabotage is undone


@pytest.mark.parametrize("claim", CLAIMS, ids=IDS)
def test_claim_holds_on_random_seeds(claim):
    @settings(max_examples=claim.hypothesis_examples, deadline=None)
    @given(st.integers(0, 2**31 - 1))
    def check(seed):
        result = claim.check(seed, 1)
        assert result.passed, (claim.id, seed, result.max_violation, result.tolerance)

    check()
