"""Patch networks (sim.patch): the reshape-matmul convolution equals a loop, exact gradients, training."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

from sim.patch import (
    READOUTS,
    extract_patches,
    fold_patches,
    init_patch_network,
    patch_accuracy,
    patch_conv,
    patch_gradients,
    patch_logits,
    patch_loss,
    train_patch_network,
)

EPS = float(np.finfo(np.float64).eps)
FD_STEP = EPS ** (1 / 3)


def loop_conv(w, x, s):
    """An independent loop implementation: a[e, n, i, j, k] = sum_{r,q,c} W[e, k, (r*s+q)*C+c] x[n, i*s+r, j*s+q, c]."""
    e_n, k_n, _ = w.shape
    n_n, h, wd, c_n = x.shape
    out = np.zeros((e_n, n_n, h // s, wd // s, k_n))
    for e in range(e_n):
        for n in range(n_n):
            for i in range(h // s):
                for j in range(wd // s):
                    for k in range(k_n):
                        total = 0.0
                        for r in range(s):
                            for q in range(s):
                                for c in range(c_n):
                                    total += w[e, k, (r * s + q) * c_n + c] * x[n, i * s + r, j * s + q, c]
                        out[e, n, i, j, k] = total
    return out


@pytest.mark.parametrize("s, channels", [(2, 1), (3, 2)])
def test_patch_conv_equals_a_loop(s, channels):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3, s * s * channels))
    x = rng.normal(size=(4, 2 * s, 3 * s, channels))
    bias = rng.normal(size=(2, 3))
    expected = loop_conv(w, x, s)
    np.testing.assert_allclose(patch_conv(w, x, s), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(patch_conv(w, x, s, bias), expected + bias[:, None, None, None, :], atol=1e-12)
    per_member = np.stack([x, 2 * x])  # (E, N, H, W, C): each member its own input
    out = patch_conv(w, per_member, s)
    np.testing.assert_allclose(out[1], 2 * expected[1], atol=1e-12)


def test_extract_and_fold_are_inverse_and_adjoint():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6, 9, 4))
    p = extract_patches(x, 3)
    assert p.shape == (2, 3, 2, 3, 36)
    np.testing.assert_array_equal(fold_patches(p, 3, 4), x)
    q = rng.normal(size=p.shape)
    np.testing.assert_allclose(np.sum(p * q), np.sum(x * fold_patches(q, 3, 4)), rtol=1e-12)


@pytest.mark.parametrize("kind", READOUTS)
@pytest.mark.parametrize("shared", [True, False])
def test_gradients_match_finite_differences(kind, shared):
    rng = np.random.default_rng(2)
    net = init_patch_network((4, 4, 2), [3, 2], 3, 2, patch_size=2, seed=1, kind=kind)
    net = net.with_parameters([p + 0.3 * rng.normal(size=p.shape) for p in net.parameters])
    x = rng.normal(size=(5, 4, 4, 2) if shared else (2, 5, 4, 4, 2))
    y = np.eye(3)[rng.integers(0, 3, size=x.shape[:-3])]
    _, grads = patch_gradients(net, x, y)
    params = list(net.parameters)
    for i, p in enumerate(params):
        numeric = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[i][index] += FD_STEP
            minus[i][index] -= FD_STEP
            diff = patch_loss(net.with_parameters(plus), x, y) - patch_loss(net.with_parameters(minus), x, y)
            numeric[index] = diff[index[0]] / (2 * FD_STEP)
        np.testing.assert_allclose(grads[i], numeric, atol=1e-7, rtol=1e-6)


def test_frozen_layers_get_no_gradient():
    net = init_patch_network((4, 4, 1), [3, 2], 2, 1, patch_size=2, seed=0)
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 1))
    _, grads = patch_gradients(net, x, np.eye(2)[[0, 1, 0]], trainable=[False, True])
    assert grads[0] is None and grads[2] is None and grads[1] is not None


def test_runs_on_array_api_strict():
    net = init_patch_network((4, 4, 1), [3], 2, 2, patch_size=2, seed=0, kind="patch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 4, 4, 1)), np.eye(2)[rng.integers(0, 2, 5)]
    loss, grads = patch_gradients(net, x, y)
    strict = net.with_parameters([xps.asarray(p) for p in net.parameters])
    loss_s, grads_s = patch_gradients(strict, xps.asarray(x), xps.asarray(y))
    np.testing.assert_allclose(np.asarray(loss_s), loss, rtol=1e-12)
    for g, gs in zip(grads, grads_s):
        np.testing.assert_allclose(np.asarray(gs), g, rtol=1e-10, atol=1e-14)


def test_training_learns_a_patch_task():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    x = rng.normal(0, 0.3, size=(400, 4, 4, 1))
    x[labels == 1, :2, :2, 0] += 1.0  # class 1 lights the top-left patch
    y = np.eye(2)[labels]
    net = init_patch_network((4, 4, 1), [8], 2, 3, patch_size=2, seed=0)
    before = patch_loss(net, x, y)
    net, losses = train_patch_network(net, x, y, steps=150, lr=0.05, batch_size=32, seed=0)
    assert losses.shape[1] == 3
    assert np.all(patch_loss(net, x, y) < 0.5 * before)
    assert np.all(patch_accuracy(net, x, labels) > 0.95)
    assert patch_logits(net, x).shape == (3, 400, 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiples"):
        init_patch_network((5, 4, 1), [3], 2, patch_size=2)
    with pytest.raises(ValueError, match="readout"):
        init_patch_network((4, 4, 1), [3], 2, patch_size=2, kind="avg")
    with pytest.raises(ValueError, match="multiples"):
        extract_patches(np.zeros((1, 5, 4, 1)), 2)
    with pytest.raises(ValueError, match="kernel expects"):
        patch_conv(np.zeros((1, 3, 5)), np.zeros((2, 4, 4, 1)), 2)
    net = init_patch_network((4, 4, 1), [3], 2, patch_size=2)
    with pytest.raises(ValueError, match="steps"):
        train_patch_network(net, np.zeros((2, 4, 4, 1)), np.eye(2), steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        train_patch_network(net, np.zeros((2, 4, 4, 1)), np.eye(2), steps=1, lr=0.1, optimizer="lbfgs")
