"""Angles and alignments (sim.metrics), in degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.metrics import angle, dfa_weight_alignment, fa_weight_alignment, layer_angles, weight_norms

EPS = float(np.finfo(np.float64).eps)


def angle_tolerance(n, *, at_zero):
    """Degrees of error of arccos(<a,b>/(|a||b|)) when the cosine is off by ~n eps.

    Near 0 or 180 degrees arccos(1 - d) ~ sqrt(2 d), so an O(n eps) error in the
    cosine becomes O(sqrt(n eps)) radians; elsewhere the error stays O(n eps).
    """
    d = 8 * n * EPS
    return math.degrees(math.sqrt(2 * d) if at_zero else d)


def reference_angle(a, b):
    """Per-member angle in degrees by plain numpy on flattened members."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    cos = np.einsum("ei,ei->e", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def test_angle_of_a_vector_with_itself_its_negative_and_an_orthogonal_vector(rng):
    a = rng.normal(size=(3, 4, 5))
    n = a[0].size
    np.testing.assert_allclose(angle(a, a), 0.0, atol=angle_tolerance(n, at_zero=True))
    np.testing.assert_allclose(angle(a, 2.5 * a), 0.0, atol=angle_tolerance(n, at_zero=True))
    np.testing.assert_allclose(angle(a, -a), 180.0, atol=angle_tolerance(n, at_zero=True))
    c = rng.normal(size=a.shape)
    # Gram-Schmidt: remove from c its component along a, per member
    coef = np.sum(a * c, axis=(1, 2), keepdims=True) / np.sum(a * a, axis=(1, 2), keepdims=True)
    orthogonal = c - coef * a
    np.testing.assert_allclose(angle(a, orthogonal), 90.0, atol=angle_tolerance(n, at_zero=False))
    assert angle(a, a).shape == (3,)


def test_angle_matches_reference_and_is_symmetric(rng):
    a, b = rng.normal(size=(4, 6, 2)), rng.normal(size=(4, 6, 2))
    n = a[0].size
    np.testing.assert_allclose(angle(a, b), reference_angle(a, b), rtol=0, atol=angle_tolerance(n, at_zero=False))
    np.testing.assert_allclose(angle(a, b), angle(b, a), rtol=0, atol=angle_tolerance(n, at_zero=False))
    got = angle(a, b)
    assert np.all((got >= 0) & (got <= 180))


def test_angle_broadcasts_a_shared_array(rng):
    a, shared = rng.normal(size=(3, 4, 5)), rng.normal(size=(4, 5))
    want = reference_angle(a, np.broadcast_to(shared, a.shape).copy())
    tol = angle_tolerance(a[0].size, at_zero=False)
    np.testing.assert_allclose(angle(a, shared), want, rtol=0, atol=tol)
    np.testing.assert_allclose(angle(shared, a), want, rtol=0, atol=tol)


def test_angle_with_a_zero_vector_is_nan(rng):
    a = rng.normal(size=(3, 5))
    zero = np.zeros_like(a)
    assert np.all(np.isnan(angle(a, zero)))
    assert np.all(np.isnan(angle(zero, a)))
    assert np.all(np.isnan(angle(zero, zero)))
    # only the member whose vector is zero is undefined
    mixed = a.copy()
    mixed[1] = 0.0
    got = angle(a, mixed)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], 0.0, atol=angle_tolerance(5, at_zero=True))


def test_layer_angles_shape_and_values(rng):
    first = [rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 3))]
    second = [rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 3))]
    got = layer_angles(first, second)
    assert got.shape == (2, 2)
    for i, (a, b) in enumerate(zip(first, second)):
        np.testing.assert_allclose(got[:, i], reference_angle(a, b), rtol=0, atol=angle_tolerance(15, at_zero=False))


def _weights(rng, sizes, n_members):
    return [rng.normal(size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]


def test_fa_weight_alignment_is_zero_for_transposed_weights(rng):
    sizes = (3, 5, 4, 6, 2)
    weights = _weights(rng, sizes, 3)
    feedback = [np.swapaxes(w, -1, -2).copy() for w in weights[1:]]
    got = fa_weight_alignment(weights, feedback)
    assert got.shape == (3, len(sizes) - 2)
    np.testing.assert_allclose(got, 0.0, atol=angle_tolerance(max(sizes) ** 2, at_zero=True))
    # random feedback: the angle of each layer is the angle between W_{l+1}^T and B_{l+1}
    random_fb = [rng.normal(size=(3, w.shape[2], w.shape[1])) for w in weights[1:]]
    got = fa_weight_alignment(weights, random_fb)
    for i, (w, b) in enumerate(zip(weights[1:], random_fb)):
        want = reference_angle(np.swapaxes(w, -1, -2), b)
        np.testing.assert_allclose(got[:, i], want, rtol=0, atol=angle_tolerance(w[0].size, at_zero=False))


@pytest.mark.parametrize("sizes", [(3, 5, 2), (3, 5, 4, 2), (3, 5, 4, 6, 2)])
def test_dfa_weight_alignment_is_zero_when_weights_are_feedback_products(rng, sizes):
    n_members = 2
    n_layers = len(sizes) - 1
    # B_l: (n_l, n_L) for the hidden layers l = 1 .. L-1
    feedback = [rng.normal(size=(n_members, sizes[i], sizes[-1])) for i in range(1, n_layers)]
    weights = [rng.normal(size=(n_members, sizes[1], sizes[0]))]  # W_1 is not compared
    for layer in range(2, n_layers):  # W_l = B_l B_{l-1}^T
        weights.append(feedback[layer - 1] @ np.swapaxes(feedback[layer - 2], -1, -2))
    weights.append(np.swapaxes(feedback[-1], -1, -2).copy())  # W_L = B_{L-1}^T
    got = dfa_weight_alignment(weights, feedback)
    assert got.shape == (n_members, n_layers - 1)
    np.testing.assert_allclose(got, 0.0, atol=angle_tolerance(max(sizes) ** 2, at_zero=True))
    # a mis-aligned top layer shows up in the last column only
    flipped = weights[:-1] + [-weights[-1]]
    got = dfa_weight_alignment(flipped, feedback)
    np.testing.assert_allclose(got[:, -1], 180.0, atol=angle_tolerance(max(sizes) ** 2, at_zero=True))
    np.testing.assert_allclose(got[:, :-1], 0.0, atol=angle_tolerance(max(sizes) ** 2, at_zero=True))


def test_weight_norms(rng):
    weights = _weights(rng, (3, 5, 2), 4)
    got = weight_norms(weights)
    assert got.shape == (4, 2)
    want = np.stack([[np.sqrt(np.sum(w[m] ** 2)) for w in weights] for m in range(4)])
    np.testing.assert_allclose(got, want, rtol=16 * EPS)
