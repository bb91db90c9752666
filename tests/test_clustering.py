"""The clustering step (sim.clustering): silhouette, the estimated cluster count, the random control."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clustering import adjusted_rand_index, estimate_n_clusters, random_clustering, silhouette


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
