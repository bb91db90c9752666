"""Hierarchical generative model (sim.data.hierarchical): shapes, latents, determinism, inversion, digits preset."""

from __future__ import annotations

import time

import numpy as np
import pytest
from matplotlib.figure import Figure

from sim.data.hierarchical import (
    Grammar,
    digits,
    digits_grammar,
    distinct_patch_tables,
    generate,
    invert,
    label_statistics,
    patches_of,
    plot_class_samples,
    plot_generation_levels,
    random_grammar,
    render,
    statistics_separation,
    symbol_counts,
)


@pytest.fixture(scope="module")
def grammar():
    return random_grammar(3, depth=2, patch_size=2, alphabet_sizes=(3, 5, 6), variants=3, noise=0.1,
                          distractor=0.1, n_distractors=1)


def test_shapes_and_latent_levels(grammar):
    sample = generate(grammar, 50, seed=1)
    assert sample.images.shape == (50, 8, 8)
    assert [lat.shape for lat in sample.latents] == [(50,), (50, 2, 2), (50, 4, 4)]
    for level, lat in enumerate(sample.latents):
        assert lat.min() >= 0 and lat.max() < grammar.alphabet_sizes[level]
    # every level-(i+1) patch is a variant of its level-i parent (distractors read as background)
    for i in range(grammar.depth):
        parents = sample.latents[i].reshape(50, -1)
        children = sample.latents[i + 1]
        if i == grammar.depth - 1:
            children = np.where(np.isin(children, grammar.distractor_symbols), grammar.background, children)
        kids = patches_of(children, 2).reshape(50, parents.shape[1], 4)
        table, probs = np.asarray(grammar.expansions[i]), np.asarray(grammar.variant_probs[i])
        for n in range(50):
            for p in range(parents.shape[1]):
                ok = [np.array_equal(kids[n, p], table[parents[n, p], v]) for v in range(table.shape[1])
                      if probs[parents[n, p], v] > 0]
                assert any(ok)


def test_pixels_are_the_glyphs_of_the_bottom_level_plus_noise(grammar):
    sample = generate(grammar, 30, seed=2)
    bottom = sample.latents[-1]
    reference = np.zeros((30, 8, 8))  # an independent loop implementation of the rendering
    for n in range(30):
        for r in range(4):
            for c in range(4):
                glyph = np.asarray(grammar.pixels)[bottom[n, r, c]].reshape(2, 2)
                reference[n, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = glyph
    np.testing.assert_array_equal(render(grammar, bottom), reference)
    residual = sample.images - reference
    assert 0.05 < residual.std() < 0.15  # noise 0.1


def test_deterministic_from_the_seed(grammar):
    a, b, c = (generate(grammar, 40, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.images, b.images)
    for x, y in zip(a.latents, b.latents):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, c.images)
    g1, g2 = random_grammar(9), random_grammar(9)
    for e1, e2 in zip(g1.expansions, g2.expansions):
        np.testing.assert_array_equal(e1, e2)


def test_vectorised_generation_speed_sanity():
    start = time.perf_counter()
    sample = digits(20000, seed=0, dtype="float32")
    seconds = time.perf_counter() - start
    assert sample.images.shape == (20000, 27, 27) and sample.images.dtype == np.float32
    print(f"20000 digits in {seconds:.2f} s ({20000 / seconds:.0f} images/s)")


def test_class_frequencies_follow_class_probs():
    sample = digits(5000, seed=3)
    freq = np.bincount(sample.labels, minlength=10) / 5000
    np.testing.assert_allclose(freq, 0.1, atol=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_exact_inversion_without_noise_is_perfect(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    g = random_grammar(seed, depth=depth, patch_size=2 if depth == 3 else 3,
                       alphabet_sizes=[3] + [int(rng.integers(3, 7)) for _ in range(depth)], variants=2,
                       distractor=0.1, n_distractors=1)
    assert distinct_patch_tables(g)
    sample = generate(g, 200, seed=seed)
    for recovered, truth in zip(invert(sample.images, g), sample.latents):
        np.testing.assert_array_equal(recovered, truth)


def test_exact_inversion_of_noise_free_digits():
    g = digits_grammar(noise=0.0, distractor=0.05)
    sample = generate(g, 500, seed=0)
    for recovered, truth in zip(invert(sample.images, g), sample.latents):
        np.testing.assert_array_equal(recovered, truth)


def test_digits_preset():
    g = digits_grammar()
    assert g.alphabet_sizes == (10, 13, 17) and g.image_size == 27 and g.patch_size == 3
    assert distinct_patch_tables(g)
    assert min(statistics_separation(g)) > 0.05
    assert len(g.names[1]) == 13 and "blank" in g.names[1] and "┌" in g.names[1]
    clean = generate(digits_grammar(noise=0.0, distractor=0.0, variant_prob=0.0), 100, seed=0)
    eight = clean.images[clean.labels == 8][0]
    # an 8 is two stacked boxes: rows 4, 13 and 22 (centres of the stroke rows) are lit from column 4 to 22
    for row in (4, 13, 22):
        np.testing.assert_array_equal(eight[row, 4:23], 1.0)


def test_label_statistics_and_twins():
    g = random_grammar(1, depth=1, alphabet_sizes=(4, 6), variants=2, twins=(1, 2))
    stats = label_statistics(g)[0]
    np.testing.assert_allclose(np.nansum(stats, axis=1)[np.isfinite(stats).all(axis=1)], 1.0)
    np.testing.assert_allclose(stats[1], stats[2])
    assert distinct_patch_tables(g)
    counts = symbol_counts(g)
    np.testing.assert_allclose(counts[1].sum(axis=1), 4.0)  # 2 x 2 symbols per image


def test_min_separation_is_met():
    g = random_grammar(0, depth=2, alphabet_sizes=(5, 5, 5), variants=2, min_separation=0.1)
    assert min(statistics_separation(g)) >= 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(alphabet_sizes=(3, 5)), "alphabet_sizes"),
    (dict(patch_size=1), "patch_size"),
    (dict(distractor=1.5, n_distractors=1), "distractor"),
    (dict(distractor=0.1), "n_distractors"),
    (dict(depth=1, patch_size=2, alphabet_sizes=(20, 2), variants=3), "distinct patches"),
    (dict(twins=(1, 1)), "twins"),
])
def test_bad_random_grammar_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_grammar(0, **kwargs)


def test_bad_grammar_and_generation_arguments(grammar):
    with pytest.raises(ValueError, match="n_samples"):
        generate(grammar, 0)
    with pytest.raises(ValueError, match="dtype"):
        generate(grammar, 3, dtype="int8")
    with pytest.raises(ValueError, match="labels"):
        generate(grammar, 3, labels=np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="variant_probs"):
        Grammar(2, (np.zeros((2, 1, 4), dtype=int),), (np.full((2, 1), 0.5),), np.eye(4), np.full(2, 0.5))
    with pytest.raises(ValueError, match="images must have shape"):
        invert(np.zeros((2, 5, 5)), grammar)


def test_figures():
    sample = digits(200, seed=0)
    fig = plot_class_samples(sample, 3)
    assert isinstance(fig, Figure) and len(fig.axes) == 30
    fig = plot_generation_levels(sample, 1)
    assert isinstance(fig, Figure) and len(fig.axes) >= 3
    with pytest.raises(ValueError, match="index"):
        plot_generation_levels(sample, 1000)
