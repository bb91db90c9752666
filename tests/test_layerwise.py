"""The layerwise algorithm and its baselines (sim.layerwise): ARI, k-means, recovery, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from sim.data.hierarchical import generate, random_grammar
from sim.layerwise import (
    TrainSettings,
    accuracy_of,
    adjusted_rand_index,
    compare_on_sample_sizes,
    contingency_table,
    end_to_end_logits,
    fit_end_to_end,
    fit_greedy,
    fit_layerwise,
    greedy_logits,
    kmeans,
    layerwise_codes,
    layerwise_logits,
    level_recovery,
)


def test_ari_hand_computed_case():
    # contingency [[2, 0, 0], [0, 1, 1]]: index = C(2,2) = 1, rows: C(2,2)+C(2,2) = 2, cols: C(2,2) = 1,
    # n = 4 -> C(4,2) = 6, expected = 2 * 1 / 6 = 1/3, max = (2 + 1) / 2 = 3/2,
    # ARI = (1 - 1/3) / (3/2 - 1/3) = (2/3) / (7/6) = 4/7
    np.testing.assert_array_equal(contingency_table([0, 0, 1, 1], [0, 0, 1, 2]), [[2, 0, 0], [0, 1, 1]])
    np.testing.assert_allclose(adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]), 4 / 7, rtol=1e-15)
    # another by hand: [[1, 1], [0, 2]] (a = 0 0 1 1 ... ): index = 1, rows 1 + 1 = 2, cols 0 + 3 = 3,
    # n = 4: expected = 6 / 6 = 1, max = 5/2 -> ARI = 0 / 1.5 = 0
    np.testing.assert_allclose(adjusted_rand_index([0, 0, 1, 1], [5, 7, 7, 7]), 0.0, atol=1e-15)


def test_ari_properties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 2000)
    perm = rng.permutation(5)
    np.testing.assert_allclose(adjusted_rand_index(a, perm[a] + 10), 1.0)
    assert abs(adjusted_rand_index(a, rng.integers(0, 5, 2000))) < 0.02
    assert adjusted_rand_index([1, 1, 1], [2, 2, 2]) == 1.0
    with pytest.raises(ValueError, match="same number"):
        adjusted_rand_index([0, 1], [0])


@pytest.mark.parametrize("oversample", [1, 3])
def test_kmeans_separates_clusters(oversample):
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [5, 0], [0, 5]])
    truth = np.repeat([0, 1, 2], [900, 60, 40])  # very unequal sizes
    points = centres[truth] + rng.normal(0, 0.5, size=(1000, 2))
    clustering, labels = kmeans(points, 3, seed=0, oversample=oversample)
    assert clustering.n_clusters == 3 and len(clustering.centroids) == 3 * oversample
    assert adjusted_rand_index(truth, labels) > 0.97
    np.testing.assert_array_equal(clustering.assign(points), labels)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(points, 0)


@pytest.fixture(scope="module")
def easy():
    g = random_grammar(2, depth=1, patch_size=2, alphabet_sizes=(4, 5), variants=2, noise=0.1, min_separation=0.15)
    return g, generate(g, 1200, seed=0), generate(g, 400, seed=1)


def test_layerwise_recovers_an_easy_grammar(easy):
    g, train, test = easy
    model = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, n_members=2, seed=0,
                          settings=TrainSettings(steps=300, lr=0.5))
    codes = layerwise_codes(model, test.images)
    assert codes[0].shape == (2, 400, 2, 2)
    assert np.all(level_recovery(codes[0], test.latents[1]) > 0.9)
    assert np.all(accuracy_of(layerwise_logits(model, test.images, codes=codes), test.labels) > 0.9)


def test_layerwise_with_shuffled_labels_recovers_nothing(easy):
    g, train, test = easy
    model = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, seed=0,
                          settings=TrainSettings(steps=300, lr=0.5), label_noise=True)
    assert level_recovery(layerwise_codes(model, test.images)[0], test.latents[1])[0] < 0.5


def test_baselines_learn(easy):
    g, train, test = easy
    settings = TrainSettings(steps=200, lr=0.05, hidden=8)
    images = np.stack([train.images[:600], train.images[600:]])  # one training sample per member
    labels = np.stack([train.labels[:600], train.labels[600:]])
    net = fit_end_to_end(images, labels, depth=1, n_classes=4, patch_size=2, n_members=2, settings=settings)
    assert np.all(accuracy_of(end_to_end_logits(net, test.images), test.labels) > 0.8)
    model = fit_greedy(images, labels, depth=1, n_classes=4, patch_size=2, n_members=2, settings=settings)
    assert np.all(accuracy_of(greedy_logits(model, test.images), test.labels) > 0.8)


def test_compare_on_sample_sizes_shapes(easy):
    g = easy[0]
    result = compare_on_sample_sizes(g, [40, 80], n_members=2, settings=TrainSettings(steps=30, hidden=8),
                                     n_test=100)
    assert result.recovery.shape == (2, 1, 2)
    assert all(result.accuracy[m].shape == (2, 2) for m in result.methods)
    with pytest.raises(ValueError, match="method"):
        compare_on_sample_sizes(g, [40], methods=("sgd",))


def test_settings_and_input_validation(easy):
    with pytest.raises(ValueError, match="embedding"):
        TrainSettings(embedding="pixels")
    with pytest.raises(ValueError, match="oversample"):
        TrainSettings(oversample=0)
    assert TrainSettings(embedding=("hidden", "label")).level_embedding(1) == "label"
    g, train, _ = easy
    with pytest.raises(ValueError, match="labels"):
        fit_layerwise(train.images, train.labels + 10, (5,), n_classes=4, patch_size=2)
    with pytest.raises(ValueError, match="members"):
        fit_layerwise(train.images[None].repeat(3, 0), train.labels, (5,), n_classes=4, patch_size=2, n_members=2)


def test_the_gap_statistic_finds_the_alphabet_size_of_an_easy_grammar(easy):
    """``cluster_count="gap"`` (Tibshirani et al. 2001) recovers the 5 bottom symbols from either embedding."""
    g, train, _ = easy
    for embedding in ("label", "input"):
        model = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, n_members=2, seed=1,
                              settings=TrainSettings(steps=300, lr=0.5, embedding=embedding, kmeans_restarts=3,
                                                     cluster_count="gap", max_clusters=8))
        assert model.cluster_counts == ((5, 5),), embedding


def test_the_options_of_issue_13(easy):
    """The two-layer top, the estimated cluster count (reported against the truth) and the broken clustering."""
    g, train, test = easy
    base = TrainSettings(steps=300, lr=0.5, embedding="input", kmeans_restarts=3, top_width=16)
    estimated = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, n_members=2, seed=1,
                              settings=TrainSettings(**{**base.__dict__, "cluster_count": "silhouette",
                                                        "max_clusters": 8, "top": "mlp"}))
    counts = np.asarray(estimated.cluster_counts[0])
    assert counts.shape == (2,) and np.all((2 <= counts) & (counts <= 8))
    assert estimated.top_weights is None and estimated.top_model is not None
    assert layerwise_logits(estimated, test.images).shape == (2, test.n_samples, 4)
    good = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, seed=1, settings=base)
    broken = fit_layerwise(train.images, train.labels, (5,), n_classes=4, patch_size=2, seed=1,
                           settings=TrainSettings(**{**base.__dict__, "clustering": "random"}))
    truth = test.latents[1]
    assert level_recovery(layerwise_codes(good, test.images)[0], truth)[0] > 0.5
    assert abs(level_recovery(layerwise_codes(broken, test.images)[0], truth)[0]) < 0.05
    for bad, match in (({"top": "svm"}, "unknown top 'svm'"), ({"clustering": "dbscan"}, "unknown clustering"),
                       ({"cluster_count": "elbow"}, "unknown cluster_count 'elbow'"), ({"max_clusters": 1}, "max_clusters")):
        with pytest.raises(ValueError, match=match):
            TrainSettings(**bad)


def test_compare_runs_the_baselines(easy):
    from sim.baselines import BaselineSettings

    result = compare_on_sample_sizes(easy[0], [40], n_members=2, n_test=60, methods=("linear", "mlp"),
                                     settings={"linear": BaselineSettings(), "mlp": BaselineSettings(steps=20)})
    assert set(result.accuracy) == {"linear", "mlp"} and result.accuracy["mlp"].shape == (1, 2)
    with pytest.raises(ValueError, match="a 5 x 5 kernel does not fit a map of side 4"):
        compare_on_sample_sizes(easy[0], [40], n_members=1, n_test=20, methods=("cnn",))
