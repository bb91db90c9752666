"""The DFA, Refinetti and symbolic claims (theory.claims.dfa): registry entries and the pieces they rest on.

Pass, fail-when-broken and hypothesis tests of every claim live in test_claims.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import rules as sim_rules
from theory import symbolic
from theory.claims import dfa as claims_dfa
from theory.claims import REGISTRY

IDS = sorted(cid for cid, c in REGISTRY.items() if c.check.__module__ == claims_dfa.__name__)


def test_the_module_registers_its_claims():
    assert set(IDS) == {"dfa.structure", "dfa.scalar_output_parallel", "dfa.trains_from_zero",
                        "dfa.nonlinear_alignment", "refinetti.align_then_memorise", "refinetti.large_init_concurrent",
                        "refinetti.output_width", "symbolic.vector_field",
                        "symbolic.conservation", "symbolic.drift_order", "symbolic.bp_saddle",
                        "symbolic.fa_chain_limit"}


@pytest.mark.parametrize("claim_id", IDS)
def test_claim_is_documented(claim_id):
    c = REGISTRY[claim_id]
    assert c.source and c.statement and c.conditions
    assert c.rules or c.sabotage is not None


# --- the pieces the claims rest on ----------------------------------------------------------------------

def test_structure_residuals_vanish_exactly_on_structured_weights():
    rng = np.random.default_rng(0)
    sizes = (5, 7, 6, 2)
    b = [rng.normal(size=(1, 7, 2)), rng.normal(size=(1, 6, 2))]
    structured = [b[0] @ rng.normal(size=(1, 2, 5)), b[1] @ rng.normal(size=(1, 2, 2)) @ np.swapaxes(b[0], 1, 2),
                  rng.normal(size=(1, 2, 2)) @ np.swapaxes(b[1], 1, 2)]
    res = claims_dfa.dfa_structure_residuals(structured, b)
    assert res.shape == (1, 3)
    np.testing.assert_array_less(res, 64 * np.finfo(float).eps)
    random = [rng.normal(size=(1, n, m)) for m, n in zip(sizes[:-1], sizes[1:])]
    assert np.all(claims_dfa.dfa_structure_residuals(random, b) > 0.1)
    zero = [np.zeros_like(w) for w in random]
    np.testing.assert_array_equal(claims_dfa.dfa_structure_residuals(zero, b), 0.0)


def test_alignment_and_loss_progress_on_synthetic_curves():
    steps = np.arange(0, 100, 10)
    angles = np.array([90, 30, 20, 20, 20, 20, 20, 20, 20, 20], dtype=float)[:, None]  # aligns at step 10
    loss = np.array([1.0, 0.98, 0.95, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0])[:, None]  # falls later
    progress = claims_dfa.alignment_and_loss_progress(steps, loss, angles)
    assert progress["align_step"][0] == 10
    assert progress["loss_step"][0] == 50
    np.testing.assert_allclose(progress["loss_progress_at_align"], [0.02])
    np.testing.assert_allclose(progress["min_angle"], [20.0])


def test_sabotages_restore_what_they_patch():
    before = dict(sim_rules.RULES)
    field, quantities = symbolic.linear_flow, symbolic.conserved_quantities
    for sabotage in (claims_dfa.unfixed_feedback, claims_dfa.dfa_without_direct_path,
                     claims_dfa.wrong_conserved_quantities, claims_dfa.negated_vector_field):
        with pytest.raises(RuntimeError):
            with sabotage():
                raise RuntimeError("inside")
    assert sim_rules.RULES == before
    assert symbolic.linear_flow is field and symbolic.conserved_quantities is quantities


def test_unfixed_feedback_changes_the_dfa_signal_at_every_call():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(1, 4, 3)), rng.normal(size=(1, 2, 4))]
    feedback = [rng.normal(size=(1, 4, 2))]
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    fixed = sim_rules.compute_updates("dfa", weights, x, y, feedback=feedback)[0]
    with claims_dfa.unfixed_feedback():
        first = sim_rules.compute_updates("dfa", weights, x, y, feedback=feedback)[0]
        second = sim_rules.compute_updates("dfa", weights, x, y, feedback=feedback)[0]
    assert not np.allclose(first, second) and not np.allclose(first, fixed)


def test_claims_details_feed_their_figures():
    from matplotlib.figure import Figure

    for claim_id in ("dfa.structure", "refinetti.align_then_memorise", "symbolic.fa_chain_limit"):
        c = REGISTRY[claim_id]
        result = c.check(0, 1)
        ax = Figure().subplots()
        c.plot(result, ax)
        assert ax.lines or ax.patches
