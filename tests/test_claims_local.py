"""Claims of local and layer-parallel learning (theory.claims.local) are registered and documented.

That each passes, fails when sabotaged and holds on hypothesis seeds is tested for every claim in test_claims.py.
"""

from __future__ import annotations

from theory.claims import get_claims, load_claims

load_claims()
CLAIMS = [c for c in get_claims() if c.id.startswith("local.")]
IDS = [c.id for c in CLAIMS]


def test_the_local_claims_are_registered():
    assert IDS == ["local.gradient-isolation", "local.cpc-bound", "local.ntxent-values", "local.dgl-moving-input",
                   "local.delayed-ogd-regret", "local.async-buffer"]
    for c in CLAIMS:
        assert c.sabotage is not None and c.source and c.statement and c.conditions
        assert c.plot is not None, f"{c.id} draws no figure for bbp verify --report (tests/test_figures.py checks them)"
