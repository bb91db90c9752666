"""The clustering step (sim.clustering): silhouette, the gap statistic, the estimated cluster count, the random control."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clustering import (
    adjusted_rand_index,
    estimate_n_clusters,
    gap_statistic,
    random_clustering,
    reference_draws,
    silhouette,
    within_dispersion,
)


def test_silhouette_of_a_hand_example():
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    # a = 1 for every point; b = 10 or 9 ... : s = 1 - 1/b
    b = np.array([10.5, 9.5, 9.5, 10.5])
    np.testing.assert_allclose(silhouette(points, [0, 0, 1, 1]), np.mean(1 - 1 / b))
    assert silhouette(points, [0, 0, 0, 0]) == -1.0


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), k=st.integers(2, 7))
def test_the_estimated_count_is_the_true_one_on_separated_blobs(seed, k):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, 3))
    centres += 20.0 * np.eye(k, 3) * np.arange(1, k + 1)[:, None]  # keep every pair of blobs far apart
    points = np.concatenate([c + rng.normal(scale=0.3, size=(60, 3)) for c in centres])
    estimate, scores = estimate_n_clusters(points, range(2, 10), seed=seed)
    assert estimate == k, scores


def test_random_clustering_recovers_nothing():
    truth = np.repeat(np.arange(5), 200)
    _, labels = random_clustering(np.zeros((1000, 2)), 5, seed=0)
    assert abs(adjusted_rand_index(truth, labels)) < 0.02
    with pytest.raises(ValueError, match="n_clusters must be a positive integer, got 0"):
        random_clustering(np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match="candidates must be cluster counts from 2"):
        estimate_n_clusters(np.zeros((3, 2)), [1, 2])


def _simplex_blobs(seed: int, k: int) -> np.ndarray:
    """k Gaussian blobs (sd 0.5, 30-90 points each) at the vertices of a randomly rotated simplex of edge 14."""
    rng = np.random.default_rng(seed)
    dim = max(k, 2)
    rotation = np.linalg.qr(rng.normal(size=(dim + 2, dim + 2)))[0][:dim]
    centres = 10.0 * np.eye(k, dim) @ rotation + rng.normal(scale=5.0, size=dim + 2)
    return np.concatenate([c + rng.normal(scale=0.5, size=(int(rng.integers(30, 90)), dim + 2)) for c in centres])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), k=st.integers(2, 7))
def test_the_gap_statistic_recovers_the_count_of_separated_blobs(seed, k):
    estimate, scores = gap_statistic(_simplex_blobs(seed, k), range(2, 10), seed=seed)
    assert estimate == k, scores
    assert set(scores["gap"]) == set(range(2, k + 2))  # the scan stops at the estimate


def test_the_gap_statistic_sees_one_blob_and_follows_its_rule():
    points = _simplex_blobs(3, 1)
    estimate, scores = gap_statistic(points, range(1, 6), seed=0)
    assert estimate == 1 and scores["gap"][1] >= scores["gap"][2] - scores["s"][2]
    # the rule, on a scan of every candidate: the first k with Gap(k) >= Gap(k+1) - s(k+1)
    estimate, scores = gap_statistic(_simplex_blobs(4, 4), range(2, 9), seed=1)
    gap, s = scores["gap"], scores["s"]
    assert all(gap[k] < gap[k + 1] - s[k + 1] for k in range(2, estimate))
    assert gap[estimate] >= gap[estimate + 1] - s[estimate + 1]


def test_within_dispersion_and_the_reference_box():
    points = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 1.0], [10.0, 3.0]])
    assert within_dispersion(points, [0, 0, 1, 1]) == 4.0  # (1 + 1) + (1 + 1)
    assert within_dispersion(points, [0, 1, 2, 3]) == 0.0
    rng = np.random.default_rng(0)
    line = rng.normal(size=(200, 1)) * np.array([[3.0, 4.0]]) + 1.0  # on a line through (1, 1)
    for reference in ("pca", "box"):
        refs = reference_draws(line, 4, reference=reference, seed=0)
        assert refs.shape == (4, 200, 2)
        assert np.all(refs.min(axis=1) >= line.min(axis=0) - 1e-9)
        assert np.all(refs.max(axis=1) <= line.max(axis=0) + 1e-9)
    on_line = reference_draws(line, 2, reference="pca", seed=0) - 1.0  # principal axes: the draws stay on the line
    np.testing.assert_allclose(on_line[..., 0] * 4.0, on_line[..., 1] * 3.0, atol=1e-6)
    with pytest.raises(ValueError, match="reference must be 'pca' or 'box'"):
        reference_draws(line, 2, reference="sphere")
    with pytest.raises(ValueError, match="candidates must be cluster counts from 1"):
        gap_statistic(line, [0, 2])
