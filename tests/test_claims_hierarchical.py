"""Claims on hierarchical data are registered; the hierarchical experiments run quick.

Pass, fail-under-sabotage and hypothesis tests of every claim live in test_claims.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import theory.claims.hierarchical  # noqa: F401  (registers the claims)
import theory.experiments.hierarchical  # noqa: F401  (registers the experiments)
from sim.experiments import Context, run_experiment
from theory.claims import REGISTRY

IDS = [cid for cid, c in REGISTRY.items() if c.check.__module__ == "theory.claims.hierarchical"]


def _openblas():
    """numpy's bundled OpenBLAS (ctypes handle) when it exposes its thread setter, else None."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    try:
        lib = ctypes.CDLL(libs[0]) if libs else None
    except OSError:
        return None
    ok = lib is not None and hasattr(lib, "scipy_openblas_set_num_threads64_")
    return lib if ok and hasattr(lib, "scipy_openblas_get_num_threads64_") else None


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Run this module's many small matmuls on one OpenBLAS thread, then restore the count.

    The patch networks here are small: extra BLAS threads only synchronise, and on a
    shared machine they spin (the module takes about 3x longer with two threads
    on two busy cores). A no-op when numpy's OpenBLAS does not expose its setter.
    """
    lib = _openblas()
    if lib is None:
        yield
        return
    saved = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(1)
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads64_(saved)


def test_the_claims_of_issues_5_and_13_are_registered():
    assert set(IDS) == {"hier.exact-inversion", "hier.layerwise-recovery", "hier.twins-merge",
                        "hier.convex-optimal", "hier.arrangement-gap", "hier.rate-sufficient", "hier.rate-band"}
    # each draws a figure for bbp verify --report from its check's details (tests/test_figures.py checks them)
    assert all(REGISTRY[cid].plot is not None for cid in IDS)


def test_rate_sufficient_fails_when_the_layerwise_algorithm_gets_shuffled_labels():
    """The second sabotage of the layerwise algorithm itself: the label embedding then carries no statistics."""
    from theory.claims.hierarchical import _check_rate_sufficient, _sabotage

    with _sabotage("shuffle_labels"):
        result = _check_rate_sufficient(5, 1)
    assert result.max_violation > 0.5  # ARI near 0 instead of >= 0.9


def test_rate_band_fails_when_the_layerwise_algorithm_gets_shuffled_labels():
    """The second sabotage of the layerwise algorithm itself: recovery never sets in on the ladder (up to 2 n*)."""
    from theory.claims.hierarchical import BAND_LADDER, _check_rate_band, _sabotage

    with _sabotage("shuffle_labels"):
        result = _check_rate_band(5, 1)
    assert result.max_violation > 0.5 and result.details["onset_over_n_star"] == [float("inf")]
    assert len(result.details["ari_bottom"][0]) == len(BAND_LADDER)  # the whole ladder was climbed


def test_the_onset_of_recovery_on_the_ladder():
    from theory.claims.hierarchical import band_onset

    assert band_onset([0.25, 0.5, 1, 2], [0.3, 0.95, 0.85, 0.99]) == 0.5  # the first crossing, not the last
    assert band_onset([0.25, 0.5], [0.3, 0.5]) == float("inf")


def test_arrangement_gap_fails_when_the_layerwise_algorithm_gets_shuffled_labels():
    """The second sabotage of the layerwise algorithm itself (the registered one is the broken clustering)."""
    from theory.claims.hierarchical import _check_arrangement_gap, _sabotage

    with _sabotage("shuffle_labels"):
        result = _check_arrangement_gap(3, 1)
    assert result.max_violation > result.tolerance
    assert result.details["layerwise"][0] < 0.3  # chance is 0.1; the linear bound still holds
    assert result.details["linear"][0] <= 0.6


def test_hier_digits_samples_quick():
    settings_, result = run_experiment("hier-digits-samples", context=Context(quick=True, n_seeds=2))
    assert set(result.figures) == {"digits_samples", "digits_levels"}
    assert result.metrics["distinct_patch_tables"] and result.metrics["alphabet_sizes"] == [10, 13, 17]
    assert result.metrics["generation"]["images"] == settings_["speed_samples"]


def test_hier_layerwise_quick():
    small = {"sample_sizes": [50, 200], "n_test": 150, "baseline_steps": 60, "steps": 60}
    settings_, result = run_experiment("hier-layerwise", context=Context(quick=True, n_seeds=2), overrides=small)
    assert set(result.metrics["presets"]) == {"arrangements", "digits"}
    for name, entry in result.metrics["presets"].items():
        acc = entry["accuracy"]
        assert set(acc) == {"layerwise", "end-to-end", "greedy", "linear", "random-features", "mlp", "cnn"}
        for m in acc:
            assert len(acc[m]["mean"]) == len(settings_["sample_sizes"])
        assert set(entry["recovery_ari"]) == {"level_1", "level_2"}
        assert entry["distinct_patch_tables"] and entry["label_statistics_margin"]["level_1"] > 0
        assert np.asarray(result.arrays[f"{name}_recovery_ari"]).shape == (len(settings_["sample_sizes"]), 2, 2)
    digits = result.metrics["presets"]["digits"]["accuracy"]
    for m in ("end-to-end", "linear"):
        assert digits[m]["mean"][-1] > 0.5  # far above chance (0.1) at the largest quick sample size on the easy preset
