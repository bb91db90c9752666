"""The shallow and generic baselines (sim.baselines): exact gradients, im2col adjointness, fitting, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.baselines import (
    BASELINES,
    BaselineSettings,
    _cnn_backward,
    _cnn_forward,
    _init,
    _log_softmax,
    _mlp_backward,
    _mlp_forward,
    baseline_logits,
    col2im,
    fit_baseline,
    im2col,
)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), kernel=st.integers(1, 4), stride=st.integers(1, 3), side=st.integers(4, 9),
       channels=st.integers(1, 3))
def test_col2im_is_the_adjoint_of_im2col(seed, kernel, stride, side, channels):
    """<im2col(x), c> = <x, col2im(c)> for random x and c: the input gradient of a convolution is exact."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, side, side, channels))
    cols = im2col(x, kernel, stride)
    c = rng.normal(size=cols.shape)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * col2im(c, x.shape, kernel, stride)), rtol=1e-10)


@pytest.mark.parametrize("method", ["mlp", "cnn"])
def test_gradients_match_finite_differences(method):
    rng = np.random.default_rng(0)
    params = _init(method, (13, 13), 3, 2, BaselineSettings(width=5, channels=(3, 4)), seed=1)
    forward, backward = {"mlp": (_mlp_forward, _mlp_backward), "cnn": (_cnn_forward, _cnn_backward)}[method]
    x = rng.normal(size=(2, 4, 13 * 13) if method == "mlp" else (2, 4, 13, 13))
    y = np.eye(3)[rng.integers(0, 3, size=(2, 4))]

    def loss(p):
        return -np.sum(y * _log_softmax(forward(p, x)[0]))

    z, cache = forward(params, x)
    grads = backward(params, cache, np.exp(_log_softmax(z)) - y)
    for name, value in params.items():
        idx = tuple(int(rng.integers(0, d)) for d in value.shape)
        up = {k: v.copy() for k, v in params.items()}
        down = {k: v.copy() for k, v in params.items()}
        up[name][idx] += 1e-6
        down[name][idx] -= 1e-6
        np.testing.assert_allclose((loss(up) - loss(down)) / 2e-6, grads[name][idx], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_learns_a_pixel_rule(method):
    """Class = which half of the image is bright (plus noise): every baseline learns it well above chance."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(2, 200))
    images = rng.normal(scale=0.3, size=(2, 200, 13, 13))
    images[..., :6, :] += (labels == 0)[..., None, None]
    images[..., 7:, :] += (labels == 1)[..., None, None]
    model = fit_baseline(method, images, labels, n_classes=2, seed=0,
                         settings=BaselineSettings(steps=150, features=128, width=16, channels=(4, 4)))
    logits = baseline_logits(model, images[0])
    assert logits.shape == (2, 200, 2)
    assert np.mean(np.argmax(logits, axis=-1) == labels[0]) > 0.9


def test_bad_input_is_refused():
    images, labels = np.zeros((1, 4, 13, 13)), np.zeros((1, 4), dtype=int)
    with pytest.raises(ValueError, match="unknown baseline 'svm'"):
        fit_baseline("svm", images, labels, n_classes=2)
    with pytest.raises(ValueError, match=r"images must be \(E, N, H, W\)"):
        fit_baseline("linear", images[0], labels, n_classes=2)
    with pytest.raises(ValueError, match="labels must be integers in"):
        fit_baseline("linear", images, labels + 5, n_classes=2)
    with pytest.raises(ValueError, match="width must be a positive integer, got 0"):
        BaselineSettings(width=0)
    with pytest.raises(ValueError, match="channels must be two positive integers"):
        BaselineSettings(channels=(4,))
