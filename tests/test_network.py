"""Ensembles of MLPs (sim.network) and the forward pass and losses (sim.nn)."""

from __future__ import annotations

import numpy as np
import pytest

from sim import nn
from sim.network import INITS, Network, init_network, network_from_weights

EPS = float(np.finfo(np.float64).eps)
SIZES = (4, 6, 5, 3)


def rounding_tolerance(sizes, batch=1):
    return 16 * EPS * (sum(sizes) + batch)


# --- initialisation -------------------------------------------------------------------------------

@pytest.mark.parametrize("init", INITS)
def test_init_shapes_and_dtypes(init):
    for dtype, np_dtype in (("float64", np.float64), ("float32", np.float32)):
        net = init_network(SIZES, 3, seed=1, init=init, dtype=dtype, bias=True, activation="tanh")
        assert net.sizes == SIZES
        assert net.n_members == 3
        assert net.n_layers == len(SIZES) - 1
        assert net.activation == "tanh"
        assert [w.shape for w in net.weights] == [(3, b, a) for a, b in zip(SIZES[:-1], SIZES[1:])]
        assert [b.shape for b in net.biases] == [(3, n) for n in SIZES[1:]]
        assert all(w.dtype == np_dtype for w in net.weights + net.biases)
        assert all(np.all(b == 0) for b in net.biases)
    assert init_network(SIZES, 2, seed=1, init=init).biases is None


@pytest.mark.parametrize("init", ["gaussian", "uniform", "balanced"])
def test_member_draws_do_not_depend_on_ensemble_size(init):
    two = init_network(SIZES, 2, seed=7, init=init)
    five = init_network(SIZES, 5, seed=7, init=init)
    other = init_network(SIZES, 2, seed=8, init=init)
    for a, b, c in zip(two.weights, five.weights, other.weights):
        np.testing.assert_array_equal(a, b[:2])
        assert not np.array_equal(a, c)  # different seeds differ
        assert not np.array_equal(a[0], a[1])  # different members differ
    # member m of a run is reproducible on its own
    again = init_network(SIZES, 5, seed=7, init=init)
    for a, b in zip(five.weights, again.weights):
        np.testing.assert_array_equal(a, b)


def test_per_member_scale_multiplies_the_same_draw():
    scales = [0.5, 1.0, 3.0]
    unit = init_network(SIZES, 3, seed=2, scale=1.0)
    scaled = init_network(SIZES, 3, seed=2, scale=scales)
    for a, b in zip(unit.weights, scaled.weights):
        for m, s in enumerate(scales):
            np.testing.assert_allclose(b[m], s * a[m], rtol=EPS, atol=0)


@pytest.mark.parametrize("init", ["gaussian", "uniform"])
def test_init_variance(init):
    n_in, n_out, scale = 400, 300, 1.5
    net = init_network((n_in, n_out), 2, seed=3, init=init, scale=scale)
    w = net.weights[0]
    std, n = scale / np.sqrt(n_in), n_in * n_out
    # sample mean and std of n i.i.d. draws, 6 standard errors
    np.testing.assert_allclose(w.mean(axis=(1, 2)), 0.0, atol=6 * std / np.sqrt(n))
    np.testing.assert_allclose(w.std(axis=(1, 2)), std, rtol=6 * np.sqrt(2.0 / n))
    if init == "uniform":
        assert np.max(np.abs(w)) <= std * np.sqrt(3.0)


def test_zero_init():
    net = init_network(SIZES, 2, seed=0, init="zero")
    assert all(np.all(w == 0) for w in net.weights)


def test_balanced_init_is_balanced():
    sizes, scale = (5, 4, 6, 3), 0.3
    net = init_network(sizes, 2, seed=4, init="balanced", scale=scale)
    rank = min(sizes)
    tol = rounding_tolerance(sizes)
    for lower, upper in zip(net.weights[:-1], net.weights[1:]):
        gram_up = np.swapaxes(upper, -1, -2) @ upper
        gram_down = lower @ np.swapaxes(lower, -1, -2)
        np.testing.assert_allclose(gram_up, gram_down, rtol=0, atol=tol * scale**2)
    # each layer is s times a product of orthonormal frames: singular values s (rank r), then 0
    for w in net.weights:
        sv = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(sv[:, :rank], scale, rtol=tol)
        np.testing.assert_allclose(sv[:, rank:], 0.0, atol=tol * scale)


def test_balanced_init_with_frames():
    sizes, scale = (5, 4, 6, 3), 0.5
    rng = np.random.default_rng(0)
    rank = min(sizes)
    u, _ = np.linalg.qr(rng.normal(size=(sizes[-1], rank)))
    v, _ = np.linalg.qr(rng.normal(size=(sizes[0], rank)))
    net = init_network(sizes, 2, seed=5, init="balanced", scale=scale, frames=(u, v))
    end_to_end = net.weights[-1]
    for w in reversed(net.weights[:-1]):
        end_to_end = end_to_end @ w
    want = scale ** len(net.weights) * u @ v.T
    for m in range(2):
        np.testing.assert_allclose(end_to_end[m], want, rtol=0, atol=rounding_tolerance(sizes) * np.max(np.abs(want)))
    with pytest.raises(ValueError, match="frames must be U"):
        init_network(sizes, 1, seed=5, init="balanced", frames=(u[:, :2], v))


def test_member_view():
    net = init_network(SIZES, 3, seed=9, bias=True, activation="relu")
    for m in range(3):
        one = net.member(m)
        assert isinstance(one, Network)
        assert one.n_members == 1 and one.sizes == net.sizes and one.activation == "relu"
        for a, b in zip(one.weights + one.biases, net.weights + net.biases):
            np.testing.assert_array_equal(a[0], b[m])
    assert init_network(SIZES, 2, seed=0).member(1).biases is None


def test_network_from_weights_and_to_host():
    net = init_network(SIZES, 2, seed=1, bias=True)
    wrapped = network_from_weights(net.weights, net.biases, activation="tanh")
    assert wrapped.sizes == SIZES and wrapped.activation == "tanh"
    host = wrapped.to_host()
    for a, b in zip(host.weights + host.biases, net.weights + net.biases):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_init_errors():
    with pytest.raises(ValueError, match="unknown init 'orthogonal'.*gaussian"):
        init_network(SIZES, 1, init="orthogonal")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        init_network(SIZES, 1, activation="gelu")
    with pytest.raises(ValueError, match="unknown backend 'torch'.*numpy"):
        init_network(SIZES, 1, backend="torch")
    with pytest.raises(ValueError, match="unknown dtype 'float16'.*float64"):
        init_network(SIZES, 1, dtype="float16")
    with pytest.raises(ValueError, match="sizes must list at least two positive"):
        init_network((3,), 1)
    with pytest.raises(ValueError, match="sizes must list at least two positive"):
        init_network((3, 0, 2), 1)
    with pytest.raises(ValueError, match="n_members must be at least 1"):
        init_network(SIZES, 0)
    with pytest.raises(ValueError, match=r"scale must be a number or one value per member \(3\)"):
        init_network(SIZES, 3, scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="scale must be finite and non-negative"):
        init_network(SIZES, 2, scale=[1.0, -1.0])
    with pytest.raises(ValueError, match="scale must be finite and non-negative"):
        init_network(SIZES, 2, scale=np.nan)
    for seed in (-1, 2.5, "3", None, True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            init_network(SIZES, 2, seed=seed)


def test_network_from_weights_errors():
    net = init_network(SIZES, 2, seed=0)
    w1, w2, w3 = net.weights
    with pytest.raises(ValueError, match="at least one layer"):
        network_from_weights([])
    with pytest.raises(ValueError, match=r"W_2 must have shape \(E, n_out, n_in\)"):
        network_from_weights([w1, w2[0], w3])
    with pytest.raises(ValueError, match="W_3 expects 5 inputs but W_2 has 4 outputs"):
        network_from_weights([w1, np.ones((2, 4, 6)), w3])
    with pytest.raises(ValueError, match="W_2 has 3 members, W_1 has 2"):
        network_from_weights([w1, np.ones((3, 5, 6)), np.ones((3, 3, 5))])
    with pytest.raises(ValueError, match="unknown activation"):
        network_from_weights(net.weights, activation="swish")


# --- forward pass and losses ----------------------------------------------------------------------

def _instance(seed=0, n_members=2, batch=5, sizes=SIZES):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 1 / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=(n_members, n)) for n in sizes[1:]]
    x = rng.normal(size=(n_members, batch, sizes[0]))
    return weights, biases, x, rng


@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
def test_forward_matches_per_sample_loop(activation):
    weights, biases, x, _ = _instance()
    f = {"linear": lambda a: a, "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh}[activation]
    fwd = nn.forward(weights, x, activation, biases)
    tol = rounding_tolerance(SIZES)
    for m in range(x.shape[0]):
        for b in range(x.shape[1]):
            h = x[m, b]
            for i, (w, bias) in enumerate(zip(weights, biases)):
                np.testing.assert_allclose(fwd.inputs[i][m, b], h, rtol=tol, atol=tol)
                a = w[m] @ h + bias[m]
                np.testing.assert_allclose(fwd.preactivations[i][m, b], a, rtol=tol, atol=tol)
                h = f(a) if i < len(weights) - 1 else a  # the output layer is linear
            np.testing.assert_allclose(fwd.output[m, b], h, rtol=tol, atol=tol)
    np.testing.assert_array_equal(nn.predict(weights, x, activation, biases), fwd.output)


def test_activations_and_derivatives():
    a = np.linspace(-3.0, 3.0, 13)[None, :]  # contains 0
    np.testing.assert_array_equal(nn.activate(a, "linear"), a)
    np.testing.assert_array_equal(nn.activate(a, "relu"), np.where(a > 0, a, 0.0))
    np.testing.assert_allclose(nn.activate(a, "tanh"), np.tanh(a), rtol=EPS)
    np.testing.assert_array_equal(nn.activation_derivative(a, "linear"), np.ones_like(a))
    np.testing.assert_array_equal(nn.activation_derivative(a, "relu"), (a > 0).astype(float))  # relu'(0) = 0
    # 1 - tanh^2 cancels near saturation: its error is absolute, a few eps
    np.testing.assert_allclose(nn.activation_derivative(a, "tanh"), 1 / np.cosh(a) ** 2, rtol=0, atol=4 * EPS)


def test_mse_loss_and_error():
    _, _, _, rng = _instance()
    y_hat, y = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    want = np.array([sum(np.sum((y_hat[m, b] - y[m, b]) ** 2) for b in range(5)) / (2 * 5) for m in range(3)])
    np.testing.assert_allclose(nn.loss_value(y_hat, y, "mse"), want, rtol=16 * EPS)
    np.testing.assert_array_equal(nn.output_error(y_hat, y, "mse"), y_hat - y)
    # targets shared by all members broadcast
    np.testing.assert_allclose(nn.loss_value(y_hat, y[0], "mse"), nn.loss_value(y_hat, np.broadcast_to(y[0], y.shape),
                                                                              "mse"), rtol=EPS)


def test_ce_loss_and_error():
    _, _, _, rng = _instance()
    y_hat = rng.normal(size=(3, 5, 4))
    y = np.eye(4)[rng.integers(0, 4, size=(3, 5))]
    log_p = y_hat - np.log(np.sum(np.exp(y_hat), axis=-1, keepdims=True))
    want = -np.sum(y * log_p, axis=(1, 2)) / 5
    np.testing.assert_allclose(nn.loss_value(y_hat, y, "ce"), want, rtol=64 * EPS)
    np.testing.assert_allclose(nn.output_error(y_hat, y, "ce"), np.exp(log_p) - y, rtol=0, atol=64 * EPS)
    # stable for huge logits: shifting all logits of a sample changes nothing
    shifted = y_hat + 1e3
    np.testing.assert_allclose(nn.loss_value(shifted, y, "ce"), want, rtol=0, atol=1e3 * 64 * EPS)
    assert np.all(np.isfinite(nn.output_error(shifted, y, "ce")))


def test_accuracy():
    _, _, _, rng = _instance()
    y_hat = rng.normal(size=(2, 50, 3))
    labels = rng.integers(0, 3, size=50)
    y = np.eye(3)[labels]
    want = np.array([np.mean(np.argmax(y_hat[m], axis=1) == labels) for m in range(2)])
    np.testing.assert_allclose(nn.accuracy(y_hat, y), want, rtol=EPS)


def test_matmul_flops():
    sizes, n_members, batch = (7, 5, 3), 4, 6
    count = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        count += n_members * batch * n_out * n_in * 2  # one multiply and one add per term
    assert nn.matmul_flops(sizes, n_members, batch) == count


@pytest.mark.parametrize("sizes", [[30, 2.9, 10], [30, True, 10], [30, 20.0, 10], [30, "20", 10], [30], [30, 0, 10]])
def test_init_network_sizes_must_be_integers_of_at_least_one(sizes):
    with pytest.raises(ValueError, match="sizes"):
        init_network(sizes)
