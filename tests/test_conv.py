"""Convolutional layers (sim.conv): BP is the gradient (finite differences), the adjoint, every rule's signal."""

from __future__ import annotations

import numpy as np
import pytest

from sim import nn
from sim.conv import (
    CONV_RULES,
    ConvNet,
    conv,
    conv_transpose,
    conv_updates,
    draw_conv_feedback,
    forward,
    init_convnet,
    train_convnet,
)

EPS = float(np.finfo(np.float64).eps)
GEOMETRY = dict(channels=[2, 3, 2], kernels=[(3, 2), (2, 2)], strides=[(2, 1), (1, 2)], paddings=[(1, 0), (1, 1)],
                dense=[4, 3], input_shape=(5, 4))


def small_net(n_members=2, activation="tanh", seed=0):
    return init_convnet(n_members=n_members, seed=seed, activation=activation, **GEOMETRY)


def batch(seed=0, n=3, loss="ce"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 5, 4))
    y = np.eye(3)[rng.integers(0, 3, n)] if loss == "ce" else rng.normal(size=(n, 3))
    return x, y


def naive_conv(x, kernel, stride, padding):
    """Direct loops: out[e, b, o, i, j] = sum_{c, a, d} xpad[e, b, c, i s + a, j s + d] K[e, o, c, a, d]."""
    (sh, sw), (ph, pw) = stride, padding
    xpad = np.pad(x, [(0, 0)] * 3 + [(ph, ph), (pw, pw)])
    n_members, n_out, _, kh, kw = kernel.shape
    oh, ow = (xpad.shape[3] - kh) // sh + 1, (xpad.shape[4] - kw) // sw + 1
    out = np.zeros((n_members, x.shape[1], n_out, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xpad[:, :, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, :, i, j] = np.einsum("ebcad,eocad->ebo", window, kernel)
    return out


@pytest.mark.parametrize("stride,padding", [((1, 1), (0, 0)), ((2, 1), (1, 0)), ((2, 3), (2, 1)), ((3, 3), (0, 0))])
def test_conv_equals_direct_loops_and_its_transpose_is_the_adjoint(stride, padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 2, 7, 6))
    kernel = rng.normal(size=(2, 4, 2, 3, 3))
    out = conv(x, kernel, stride, padding)
    np.testing.assert_allclose(out, naive_conv(x, kernel, stride, padding), rtol=1e-13, atol=1e-13)
    delta = rng.normal(size=out.shape)
    back = conv_transpose(delta, kernel, x.shape[-2:], stride, padding)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(out * delta), np.sum(x * back), rtol=1e-12)


def test_kernel_equal_stride_is_a_patch_layer():
    """kernel = stride, no padding: each output position sees its own disjoint patch (the patch networks)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 2, 1, 6, 6))
    kernel = rng.normal(size=(1, 3, 1, 3, 3))
    out = conv(x, kernel, 3, 0)
    blocks = x.reshape(1, 2, 1, 2, 3, 2, 3).transpose(0, 1, 3, 5, 2, 4, 6).reshape(1, 2, 2, 2, 9)
    np.testing.assert_allclose(out, np.einsum("ebijk,eok->eboij", blocks, kernel.reshape(1, 3, 9)), rtol=1e-13)


def loss_of(net, x, y, loss):
    y_hat = forward(net, x)[0]
    return nn.loss_value(y_hat, y, loss)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_bp_equals_finite_differences(activation, loss):
    net = small_net(activation=activation)
    x, y = batch(loss=loss)
    updates, _ = conv_updates("bp", net, x, y, loss=loss)
    step = EPS ** (1 / 3)
    for i, w in enumerate(net.weights):
        fd = np.zeros_like(w)
        for pos in np.ndindex(w.shape[1:]):
            plus, minus = [v.copy() for v in net.weights], [v.copy() for v in net.weights]
            plus[i][(slice(None), *pos)] += step
            minus[i][(slice(None), *pos)] -= step
            fd[(slice(None), *pos)] = (loss_of(ConvNet(tuple(plus), net.geometry, activation), x, y, loss)
                                       - loss_of(ConvNet(tuple(minus), net.geometry, activation), x, y, loss)) / (2 * step)
        scale = max(1.0, float(np.max(np.abs(fd))))
        np.testing.assert_allclose(updates[i], fd, rtol=0, atol=1e-8 * scale)


def test_layerwise_rules_with_the_forward_weights_are_bp():
    net = small_net()
    x, y = batch(3)
    bp, _ = conv_updates("bp", net, x, y)
    for rule, feedback in (("fa", list(net.weights[1:])), ("kp", list(net.weights[1:])),
                           ("frsf", [np.abs(w) for w in net.weights[1:]])):
        got, _ = conv_updates(rule, net, x, y, feedback=feedback)
        for a, b in zip(got, bp):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_usf_uses_the_signs_of_the_kernels():
    net = small_net()
    x, y = batch(4)
    signs = [np.sign(w) for w in net.weights[1:]]
    usf, _ = conv_updates("usf", net, x, y)
    fa, _ = conv_updates("fa", net, x, y, feedback=signs)
    for a, b in zip(usf, fa):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # and differs from BP below the top
    bp, _ = conv_updates("bp", net, x, y)
    assert np.linalg.norm(usf[0] - bp[0]) > 1e-3 * np.linalg.norm(bp[0])


@pytest.mark.parametrize("rule", ["dfa", "drtp"])
def test_direct_rules_project_the_error_or_the_targets(rule):
    net = small_net(activation="linear")
    x, y = batch(5)
    feedback = draw_conv_feedback(rule, net, (5, 4), seed=5)
    got, _ = conv_updates(rule, net, x, y, feedback=feedback)
    y_hat, inputs, outputs, _ = forward(net, x)
    error = nn.output_error(y_hat, y, "ce")
    source = error if rule == "dfa" else -np.broadcast_to(y, error.shape)
    delta0 = np.einsum("ebk,eik->ebi", source, feedback[0]).reshape(outputs[0].shape)  # linear: f' = 1
    rows = delta0.transpose(0, 1, 3, 4, 2).reshape(2, -1, delta0.shape[2])
    expected = np.einsum("epo,epk->eok", rows, inputs[0]).reshape(net.weights[0].shape) / 3
    np.testing.assert_allclose(got[0], expected, rtol=1e-12, atol=1e-15)
    if rule == "drtp":  # update-unlocked: the layers above do not matter
        other = ConvNet((net.weights[0], 2 * net.weights[1], -net.weights[2], net.weights[3]), net.geometry, "linear")
        moved, _ = conv_updates(rule, other, x, y, feedback=feedback)
        np.testing.assert_array_equal(moved[0], got[0])


@pytest.mark.parametrize("rule", CONV_RULES)
def test_ensemble_equals_separate_members(rule):
    net = small_net(n_members=3)
    x, y = batch(6)
    feedback = draw_conv_feedback(rule, net, (5, 4), seed=6)
    full, _ = conv_updates(rule, net, x, y, feedback=feedback)
    for m in range(3):
        one = ConvNet(tuple(w[m:m + 1] for w in net.weights), net.geometry, net.activation)
        got, _ = conv_updates(rule, one, x, y, feedback=None if feedback is None else [b[m:m + 1] for b in feedback])
        for a, b in zip(got, full):
            np.testing.assert_allclose(a[0], b[m], rtol=1e-12, atol=1e-14)


def test_unknown_rule_and_missing_feedback():
    net = small_net()
    x, y = batch()
    with pytest.raises(ValueError, match="unknown rule 'hebb' for convolutional networks; allowed: bp, fa"):
        conv_updates("hebb", net, x, y)
    with pytest.raises(ValueError, match="rule 'fa' needs feedback"):
        conv_updates("fa", net, x, y)
    with pytest.raises(ValueError, match="kernel 9 does not fit an input of 5"):
        init_convnet([1, 2], [9], [1], [0], [3], (5, 5))


@pytest.mark.parametrize("rule", ["bp", "kp", "brsf", "drtp"])
def test_training_a_1d_cnn_learns(rule):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 1, 1, 12))
    labels = (x[:, 0, 0, :6].sum(1) > x[:, 0, 0, 6:].sum(1)).astype(int)
    y = np.eye(2)[labels]
    net = init_convnet([1, 4], [(1, 3)], [(1, 2)], [(0, 1)], [2], (1, 12), 2, seed=7)
    feedback = draw_conv_feedback(rule, net, (1, 12), seed=7)
    trained, record, last = train_convnet(net, x, y, rule=rule, steps=150, lr=0.1 if rule != "drtp" else 0.02,
                                          batch_size=20, feedback=feedback, weight_decay=0.01, record_every=50)
    assert record["accuracy"].shape == (4, 2)
    assert np.all(record["accuracy"][-1] > 0.75)
    if rule == "kp":  # B - W decays exactly by (1 - lr wd) per step
        gap0 = feedback[0] - net.weights[1]
        np.testing.assert_allclose(last[0] - trained.weights[1], (1 - 0.1 * 0.01) ** 150 * gap0, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("rule", ["bp", "usf", "dfa"])
def test_conv_updates_on_array_api_strict(rule):
    import array_api_strict as xps

    net = small_net()
    x, y = batch(8)
    feedback = draw_conv_feedback(rule, net, (5, 4), seed=8)
    strict = ConvNet(tuple(xps.asarray(w) for w in net.weights), net.geometry, net.activation)
    got, _ = conv_updates(rule, strict, xps.asarray(x), xps.asarray(y),
                          feedback=None if feedback is None else [xps.asarray(b) for b in feedback])
    expected, _ = conv_updates(rule, net, x, y, feedback=feedback)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-15)
