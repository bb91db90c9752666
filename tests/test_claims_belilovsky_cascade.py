"""Belilovsky et al. Prop. 3.2, risk form (theory.claims.belilovsky_cascade).

The generic tests (test_claims.py) run the claim quick, under its sabotage and on hypothesis seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import REGISTRY, load_claims, sabotage_of
from theory.claims import belilovsky_cascade as bc

load_claims()
CLAIM = REGISTRY["belilovsky.near_optimality"]
EPS = float(np.finfo(np.float64).eps)


def _problem(seed: int, n=30, d=6, c=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, c)), rng


def test_reduced_rank_optimum_is_the_eckart_young_value_and_attained():
    F, Y, _ = _problem(0)
    for k in (1, 2, 4, 6):
        W, C, risk = bc.reduced_rank_optimum(F, Y, k)
        assert W.shape == (k, 6) and C.shape == (4, k)
        np.testing.assert_allclose(bc.block_risk(F, Y, W, C), risk, rtol=1e3 * EPS)
    full = np.linalg.lstsq(F, Y, rcond=None)[0]
    np.testing.assert_allclose(bc.reduced_rank_optimum(F, Y, 4)[2], bc.block_risk(F, Y, np.eye(6), full.T),
                               rtol=1e3 * EPS)  # k >= c: ordinary least squares


def test_no_descent_run_beats_the_optimum():
    F, Y, rng = _problem(1)
    _, _, optimum = bc.reduced_rank_optimum(F, Y, 2)
    W, C = 0.1 * rng.normal(size=(2, 6)), 0.1 * rng.normal(size=(4, 2))
    for _ in range(4000):
        r = (F @ W.T @ C.T - Y) / F.shape[0]
        W, C = W - 0.1 * (F.T @ r @ C).T, C - 0.1 * (r.T @ F @ W.T)
    reached = bc.block_risk(F, Y, W, C)
    assert reached >= optimum - 1e3 * EPS * optimum
    np.testing.assert_allclose(reached, optimum, rtol=1e-6)  # and GD gets there


def test_inexact_step_misses_by_exactly_epsilon():
    F, Y, rng = _problem(2)
    for epsilon in (1e-6, 0.01, 0.3):
        W, C, optimum, risk = bc.inexact_step(F, Y, 3, epsilon, rng)
        np.testing.assert_allclose(risk - optimum, epsilon, rtol=1e-9, atol=1e3 * EPS * optimum)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), blocks=st.integers(1, 5))
def test_the_cascade_bound_holds_on_drawn_tasks(seed, blocks):
    run = bc.greedy_cascade(np.random.default_rng(seed), blocks)
    assert run["risks"].shape == (blocks,)
    assert bc.violation(run) <= bc.TOLERANCE
    # later optima never exceed the risk reached one block below (Prop. 3.1's identity argument)
    tol = 1e3 * EPS * run["optima"][0]
    assert np.all(run["optima"][1:] <= run["risks"][:-1] + tol)


def test_sabotage_breaks_the_claim_and_is_undone():
    saved = bc.pass_up
    assert CLAIM.check(2, 2).passed
    with sabotage_of(CLAIM):
        assert bc.pass_up is not saved
        broken = CLAIM.check(2, 2)
    assert bc.pass_up is saved
    assert not broken.passed and broken.max_violation > 0.1


def test_bad_input_raises_value_error():
    F, Y, _ = _problem(3)
    with pytest.raises(ValueError, match="F and Y must be"):
        bc.reduced_rank_optimum(F[:5], Y, 2)
    with pytest.raises(ValueError, match="k .the block's width. must be a positive integer"):
        bc.reduced_rank_optimum(F, Y, 0)


def test_plot():
    from sim.plots import new_figure

    result = CLAIM.check(0, 2)
    fig, (ax,) = new_figure(1)
    CLAIM.plot(result, ax)
    assert len(ax.lines) == 4


def test_violation_is_infinite_on_a_non_finite_run():
    run = bc.greedy_cascade(np.random.default_rng(0), 2)
    run["risks"] = np.array([run["risks"][0], np.nan])
    assert bc.violation(run) == np.inf
