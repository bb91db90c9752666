"""Angles and alignments (sim.metrics), in degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.metrics import (
    angle,
    dfa_weight_alignment,
    fa_weight_alignment,
    gauss_newton_signals,
    layer_angles,
    weight_norms,
)
from sim.nn import forward, output_error

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


# --- the Gauss-Newton reference signals (Meulemans et al. 2020) ------------------------------------

def reference_gauss_newton(weights, x, y, activation):
    """delta^GN_l = (J_l^+ e) * f'(a_l) per member and sample, by explicit Jacobians and np.linalg.pinv."""
    derivative = {"linear": lambda a: np.ones_like(a), "tanh": lambda a: 1 - np.tanh(a) ** 2,
                  "relu": lambda a: (a > 0).astype(float)}[activation]
    act = {"linear": lambda a: a, "tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}[activation]
    n_members, n_layers = weights[0].shape[0], len(weights)
    out = [np.zeros((n_members, x.shape[-2], w.shape[1])) for w in weights[:-1]]
    for m in range(n_members):
        for b in range(x.shape[-2]):
            h, pre = x[b], []
            for i, w in enumerate(weights):
                a = w[m] @ h
                pre.append(a)
                h = act(a) if i < n_layers - 1 else a
            e = h - y[b]
            for layer in range(1, n_layers):  # hidden layer l = layer: J = W_L D_{L-1} W_{L-1} ... D_{l+1} W_{l+1}
                jac = weights[-1][m]
                for k in range(n_layers - 1, layer, -1):
                    jac = jac @ np.diag(derivative(pre[k - 1])) @ weights[k - 1][m]
                out[layer - 1][m, b] = (np.linalg.pinv(jac) @ e) * derivative(pre[layer - 1])
    return out


@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
@pytest.mark.parametrize("sizes", [(5, 7, 3), (5, 7, 6, 3), (4, 3, 6, 5, 4)], ids=["L2", "L3", "L4-wide-top"])
def test_gauss_newton_signals_match_per_sample_pseudo_inverses(rng, activation, sizes):
    n_members, batch = 2, 6
    weights = _weights(rng, sizes, n_members)
    x, y = rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    fwd = forward(weights, x, activation)
    got = gauss_newton_signals(weights, fwd, output_error(fwd.output, y), activation)
    want = reference_gauss_newton(weights, x, y, activation)
    assert [g.shape for g in got] == [(n_members, batch, n) for n in sizes[1:-1]]
    for g, w in zip(got, want):
        # pinv of a product of a few O(1) Gaussian matrices: ~1e-12 relative (1e3 eps times the width)
        scale = np.max(np.abs(w))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e3 * EPS * scale * max(sizes))


def test_gauss_newton_signal_solves_the_output_equation(rng):
    """J_l delta^GN_l = e for a full-row-rank linear Jacobian (n_L <= n_l), and it is the minimum-norm solution."""
    sizes = (6, 8, 5, 3)
    weights = _weights(rng, sizes, 3)
    x, y = rng.normal(size=(10, sizes[0])), rng.normal(size=(10, sizes[-1]))
    fwd = forward(weights, x)
    e = output_error(fwd.output, y)
    got = gauss_newton_signals(weights, fwd, e)
    for layer, delta in enumerate(got, start=1):
        jac = weights[-1]
        for k in range(len(weights) - 1, layer, -1):
            jac = jac @ weights[k - 1]
        tol = 1e3 * EPS * np.max(np.abs(e))
        np.testing.assert_allclose(delta @ np.swapaxes(jac, -1, -2), e, rtol=0, atol=tol)
        # minimum norm: no component in the null space of J, i.e. delta lies in the row space of J
        projector = np.linalg.pinv(jac) @ jac
        np.testing.assert_allclose(delta @ np.swapaxes(projector, -1, -2), delta, rtol=0, atol=tol)


def test_gauss_newton_signals_of_a_non_finite_member_are_nan(rng):
    sizes = (4, 5, 6, 3)
    weights = _weights(rng, sizes, 3)
    weights[1][1, 0, 0] = np.nan
    x, y = rng.normal(size=(7, sizes[0])), rng.normal(size=(7, sizes[-1]))
    for activation in ("linear", "tanh"):
        fwd = forward(weights, x, activation)
        got = gauss_newton_signals(weights, fwd, output_error(fwd.output, y), activation)
        assert np.all(np.isnan(got[0][1]))
        assert np.all(np.isfinite(got[0][[0, 2]])) and np.all(np.isfinite(got[1][[0, 2]]))
