"""The sample-complexity study (theory.experiments.sample_complexity): the fit, the rate, a quick run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.data.hierarchical import random_grammar, statistics_separation
from sim.experiments import Context, run_experiment
from sim.plots import figure_problems
from theory.experiments.sample_complexity import critical_sample_size, power_law_exponent, separation_floor


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


def test_separation_floor_shrinks_fourfold_per_level_below_depth_two():
    for depth, expected in ((1, 0.1), (2, 0.1), (3, 0.025), (4, 0.00625)):
        np.testing.assert_allclose(separation_floor(0.1, depth), expected, rtol=4 * np.finfo(float).eps)


def test_depth_noise_and_symbols_take_one_value_or_a_list():
    from sim.experiments import get_experiment, resolve_settings

    exp = get_experiment("hier-sample-complexity")
    settings_ = resolve_settings(exp, overrides={"depth": 3, "noise": [0.1, 0.3], "symbols": 5})
    assert settings_["depth"] == [3] and settings_["noise"] == [0.1, 0.3] and settings_["symbols"] == [5]
    parsed = resolve_settings(exp, overrides={"depth": "2", "noise": "[0.1, 0.3]"})  # as --set / --grid give them
    assert parsed["depth"] == [2] and parsed["noise"] == [0.1, 0.3]
    for bad in ({"depth": 5}, {"depth": [2, 2]}, {"noise": -0.1}, {"symbols": [2]}):
        with pytest.raises(ValueError, match="setting"):
            resolve_settings(exp, overrides=bad)


def test_quick_run_reports_exponents_per_level_and_depth():
    settings_, result = run_experiment("hier-sample-complexity", context=Context(quick=True, n_seeds=2),
                                       overrides={"steps": 60, "depth": [2, 3]})
    points = result.metrics["points"]
    assert [p["depth"] for p in points] == [2, 3]
    n_last = settings_["sample_sizes"][-1]
    for i, p in enumerate(points):
        levels = {f"level_{lv + 1}" for lv in range(p["depth"])}
        assert set(p["exponent"]) == levels and set(p["ari"]) == levels and set(p["critical_n"]) == levels
        assert len(p["ari"]["level_1"][f"n_{n_last}"]["members"]) == 2  # one row per grammar in a sweep's table
        assert result.arrays[f"point_{i}_ari"].shape == (len(settings_["sample_sizes"]), p["depth"], 2)
        ari = result.arrays[f"point_{i}_ari"]
        assert np.all((ari >= -0.5) & (ari <= 1.0))
        # the grammars of each depth meet that depth's floor at every level
        assert min(m["mean"] for m in p["margin"].values()) >= separation_floor(settings_["min_separation"], p["depth"])
    assert len(result.figures) == 2
    for name, fig in result.figures.items():
        assert figure_problems(fig, name=name) == []
    np.testing.assert_allclose(result.arrays["points"], [[2, 0.1, 4], [3, 0.1, 4]])
