"""The claims registry (theory.claims) as a machine: registration, running, JSON, sabotage."""

from __future__ import annotations

import contextlib
import json
import math

import pytest

from sim import rules as sim_rules
from theory import claims
from theory.claims import CheckResult, Claim, Outcome, claim, get_claims, load_claims, run_claim, verify

#: The JSON keys of ``bbp verify --json`` (DESIGN.md, "The public contract").
DESIGN_KEYS = {"id", "source", "statement", "status", "instances", "max_violation", "tolerance", "seconds"}

ALL = load_claims()


@pytest.fixture
def scratch_registry():
    """Remove whatever a test registers, whatever happens."""
    before = dict(claims.REGISTRY)
    yield claims.REGISTRY
    claims.REGISTRY.clear()
    claims.REGISTRY.update(before)


def _claim(check, **kwargs) -> Claim:
    fields = dict(id="test.scratch", source="test", statement="a scratch claim", conditions="", check=check,
                  rules=("bp",))
    fields.update(kwargs)
    return Claim(**fields)


# --- every registered claim ---------------------------------------------------------------------------

def test_there_are_claims_from_every_module():
    modules = {c.check.__module__ for c in ALL.values()}
    assert set(claims.CLAIM_MODULES) <= modules


@pytest.mark.parametrize("claim_id", list(ALL))
def test_every_claim_is_complete(claim_id):
    c = ALL[claim_id]
    assert c.id == claim_id and claim_id.strip() == claim_id and " " not in claim_id
    assert c.source.strip(), "a claim names its source (a paper, or 'ours')"
    assert c.statement.strip(), "a claim states what it claims"
    assert c.rules or c.sabotage is not None, "a claim must be breakable: rules or its own sabotage"
    for name in c.rules:
        assert name in sim_rules.RULES
    assert c.quick_instances >= 1 and c.instances >= c.quick_instances and c.hypothesis_examples >= 1
    assert callable(c.check) and (c.plot is None or callable(c.plot))


@pytest.mark.parametrize("claim_id", list(ALL))
def test_every_sabotage_is_a_context_manager_that_restores_the_rules(claim_id):
    before = dict(sim_rules.RULES)
    manager = claims.sabotage_of(ALL[claim_id])
    assert isinstance(manager, contextlib.AbstractContextManager)
    with manager:
        pass
    assert sim_rules.RULES == before


# --- running ------------------------------------------------------------------------------------------

def test_a_crashing_check_is_an_error_not_a_crash():
    def check(seed, n):
        raise ZeroDivisionError("boom")

    outcome = run_claim(_claim(check), quick=True)
    assert outcome.status == "error"
    assert "ZeroDivisionError" in outcome.message and "boom" in outcome.message
    assert math.isnan(outcome.max_violation) and outcome.result is None
    assert outcome.to_json()["max_violation"] is None


def test_pass_and_fail_and_instance_counts():
    seen = []

    def check(seed, n):
        seen.append((seed, n))
        return CheckResult(n, 0.5, 1.0 if seed == 0 else 0.1)

    c = _claim(check, instances=7, quick_instances=2)
    assert run_claim(c, quick=True).status == "pass"
    assert run_claim(c, quick=False, seed=3).status == "fail"
    assert seen == [(0, 2), (3, 7)]


@pytest.mark.parametrize("violation, passed", [(0.0, True), (1.0, True), (1.0 + 1e-12, False),
                                               (math.nan, False), (math.inf, False), (-math.inf, False)])
def test_check_result_passes_only_on_a_finite_violation_within_tolerance(violation, passed):
    assert CheckResult(1, violation, 1.0).passed is passed


def test_outcome_json_has_exactly_the_design_keys():
    c = _claim(lambda seed, n: CheckResult(n, 0.25, 1.0, {"curve": [1, 2]}))
    data = run_claim(c, quick=True).to_json()
    assert set(data) == DESIGN_KEYS | {"tasks", "members"}  # the design's keys, and only these two added
    assert data["tasks"] == data["members"] == 5  # by default one task and one member per instance
    assert data["status"] == "pass" and data["instances"] == 5 and data["max_violation"] == 0.25
    json.dumps(data, allow_nan=False)  # valid strict JSON, details left out
    failed = Outcome("x", "s", "t", "fail", 1, math.inf, 1.0, 0.1).to_json()
    assert set(failed) == DESIGN_KEYS and failed["max_violation"] is None


def test_an_error_outcome_adds_only_its_message():
    data = run_claim(_claim(lambda seed, n: 1 / 0), quick=True).to_json()
    assert set(data) - DESIGN_KEYS == {"message"} and DESIGN_KEYS <= set(data)  # no counts without a result
    assert data["status"] == "error"


def test_unknown_claim_ids_raise_value_error():
    with pytest.raises(ValueError, match="no.such.claim"):
        get_claims(["no.such.claim"])
    with pytest.raises(ValueError):
        verify(["dfa.structure", "no.such.claim"])


def test_get_claims_keeps_the_requested_order():
    ids = ["symbolic.fa_chain_limit", "dfa.structure"]
    assert [c.id for c in get_claims(ids)] == ids
    assert [c.id for c in get_claims()] == list(claims.REGISTRY)


def test_duplicate_registration_raises(scratch_registry):
    existing = next(iter(scratch_registry))
    with pytest.raises(ValueError, match="twice"):
        claim(existing, source="test", statement="again", rules=("bp",))(lambda seed, n: CheckResult(n, 0, 0))

    def check(seed, n):
        return CheckResult(n, 0.0, 0.0)

    claim("test.once", source="test", statement="first", rules=("bp",))(check)
    with pytest.raises(ValueError):
        claim("test.once", source="test", statement="second", rules=("bp",))(check)
    assert scratch_registry["test.once"].statement == "first"


def test_registration_rejects_unknown_rules(scratch_registry):
    with pytest.raises(ValueError):
        claim("test.bad_rule", source="test", statement="s", rules=("no-such-rule",))(lambda s, n: None)
    assert "test.bad_rule" not in scratch_registry


def test_verify_reports_progress_in_order(scratch_registry):
    for name in ("test.a", "test.b"):
        claim(name, source="test", statement=name, rules=("bp",))(lambda seed, n: CheckResult(n, 0.0, 1.0))
    seen = []
    outcomes = verify(["test.b", "test.a"], quick=True, progress=lambda o: seen.append(o.id))
    assert seen == ["test.b", "test.a"] == [o.id for o in outcomes]


def test_sabotage_of_needs_rules_or_a_sabotage():
    with pytest.raises(ValueError):
        claims.sabotage_of(_claim(lambda s, n: None, rules=()))


def test_sabotaged_breaks_the_named_rules_and_restores_them_after_an_error():
    import numpy as np

    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(1, 4, 3)), rng.normal(size=(1, 2, 4))]
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    honest = sim_rules.compute_updates("bp", weights, x, y)[0]
    with pytest.raises(KeyError):
        with claims.sabotaged("bp"):
            broken = sim_rules.compute_updates("bp", weights, x, y)[0]
            assert not np.allclose(broken, honest)
            raise KeyError("leave")
    np.testing.assert_array_equal(sim_rules.compute_updates("bp", weights, x, y)[0], honest)
