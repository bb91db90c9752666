"""The sample-complexity study (theory.experiments.sample_complexity): the fit, the rate, a quick run."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.data.hierarchical import random_grammar, statistics_separation
from sim.experiments import Context, run_experiment
from theory.experiments.sample_complexity import critical_sample_size, power_law_exponent


@settings(max_examples=20, deadline=None)
@given(alpha=st.floats(0.1, 3.0), c=st.floats(0.1, 10.0))
def test_the_exponent_of_an_exact_power_law(alpha, c):
    sizes = np.array([100, 200, 400, 800])
    errors = np.minimum(c * sizes ** -alpha, 0.99)
    keep = errors > 1e-3
    if keep.sum() >= 2 and np.all(errors[keep] < 0.99):
        np.testing.assert_allclose(power_law_exponent(sizes, errors), alpha, rtol=1e-8)
    assert np.isnan(power_law_exponent([100, 200], [0.5, 0.0]))  # one point above the floor: no fit


def test_the_critical_size_scales_as_one_over_the_margin_squared():
    g = random_grammar(0, alphabet_sizes=(5, 4, 4), min_separation=0.15, max_tries=500)
    n_star = critical_sample_size(g)
    assert len(n_star) == 2 and all(np.isfinite(n_star)) and min(n_star) > 0
    margins = statistics_separation(g)
    # n* * margin^2 depends on the grammar only through K, P and p_min
    assert n_star[0] * margins[0] ** 2 > 0


def test_quick_run_reports_exponents_per_seed():
    settings_, result = run_experiment("hier-sample-complexity", context=Context(quick=True, n_seeds=2),
                                       overrides={"steps": 60})
    assert set(result.metrics["exponent"]) == {"level_1", "level_2"}
    stat = result.metrics["ari"]["level_1"][f"n_{settings_['sample_sizes'][-1]}"]
    assert len(stat["members"]) == 2  # one row per grammar in a sweep's table
    assert result.arrays["ari"].shape == (len(settings_["sample_sizes"]), 2, 2)
