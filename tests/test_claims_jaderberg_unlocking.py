"""Jaderberg et al. forward unlocking with synthetic inputs (theory.claims.jaderberg_unlocking).

The generic tests (test_claims.py) run the claim quick, under its sabotage and on hypothesis seeds.
"""

from __future__ import annotations

import numpy as np

from sim import synthetic_inputs as sim_inputs
from theory.claims import REGISTRY, load_claims, sabotage_of
from theory.claims import jaderberg_unlocking as ju
from theory.claims.linear import _rng

load_claims()
CLAIM = REGISTRY["jaderberg.forward_unlocking"]


def test_one_task_in_detail():
    run = ju.unlocking_runs(_rng(0, "test", 0))
    steps = ju.STEPS + 1
    assert run["bp"].shape == run["unlocked"].shape == run["input_error"].shape == (steps,)
    np.testing.assert_allclose(run["bp"][0], run["unlocked"][0], rtol=0)  # the same init
    np.testing.assert_allclose(run["input_error"][0], 1.0, rtol=4 * np.finfo(float).eps)  # zero-init module
    assert run["input_error"][-1] < ju.INPUT_ERROR_TOL
    assert run["unlocked"][-1] < ju.DROP_FACTOR * run["unlocked"][0]
    assert ju.violation(run) <= 1.0


def test_sabotage_breaks_the_claim_and_is_undone():
    saved = sim_inputs.regression_gradients
    assert CLAIM.check(4, 1).passed
    with sabotage_of(CLAIM):
        assert sim_inputs.regression_gradients is not saved
        broken = CLAIM.check(4, 1)
    assert sim_inputs.regression_gradients is saved
    assert not broken.passed
    assert broken.details["input_error"][0, -1] > 0.5  # the module never finds h


def test_violation_is_infinite_on_a_diverged_run():
    run = {"bp": np.array([1.0, 0.1]), "unlocked": np.array([1.0, np.nan]), "input_error": np.array([1.0, 0.0])}
    assert ju.violation(run) == np.inf


def test_plot():
    from sim.plots import new_figure

    result = CLAIM.check(1, 1)
    fig, (ax,) = new_figure(1)
    CLAIM.plot(result, ax)
    assert len(ax.lines) == 3
