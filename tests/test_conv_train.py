"""Training convolutional ensembles (sim.conv.train_convnet): biases, Adam, divergence, alignment, interrupts."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from sim import conv as conv_module
from sim import interrupt, nn
from sim.conv import ConvNet, conv_updates, draw_conv_feedback, forward, init_convnet, train_convnet
from sim.divergence import divergence_message

EPS = float(np.finfo(np.float64).eps)
#: acos of a cosine rounded to 1: at most sqrt(2 eps) radians, in degrees (an angle "exactly 0" in float64)
ZERO_ANGLE = float(np.degrees(np.sqrt(2 * EPS))) * 4
GEOMETRY = dict(channels=[1, 3, 2], kernels=[(1, 3), (1, 2)], strides=[(1, 2), (1, 1)], paddings=[(0, 1), (0, 0)],
                dense=[2], input_shape=(1, 10))


def task(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 1, 10))
    labels = (x[:, 0, 0, :5].sum(1) > x[:, 0, 0, 5:].sum(1)).astype(int)
    return x, np.eye(2)[labels]


def small(n_members=2, activation="relu", seed=0, **kwargs):
    return init_convnet(n_members=n_members, seed=seed, activation=activation, **GEOMETRY, **kwargs)


def test_bias_updates_are_the_gradient():
    net = small(activation="tanh", bias=True, init="uniform")
    assert [b.shape for b in net.biases] == [(2, 3), (2, 2), (2, 2)]
    assert all(np.any(b != 0) for b in net.biases)  # PyTorch's init draws the biases too
    x, y = task(5)
    updates, _ = conv_updates("bp", net, x, y)
    assert len(updates) == 2 * len(net.weights)
    step = EPS ** (1 / 3)
    for i, b in enumerate(net.biases):
        fd = np.zeros_like(b)
        for j in range(b.shape[1]):
            values = []
            for sign in (1, -1):
                moved = [v.copy() for v in net.biases]
                moved[i][:, j] += sign * step
                values.append(nn.loss_value(forward(ConvNet(net.weights, net.geometry, "tanh", tuple(moved)), x)[0],
                                            y, "ce"))
            fd[:, j] = (values[0] - values[1]) / (2 * step)
        np.testing.assert_allclose(updates[len(net.weights) + i], fd, rtol=0, atol=1e-8)


def test_init_keeps_its_weights_without_biases_and_rejects_unknown_inits():
    plain, with_bias = small(init="uniform"), small(init="normal", bias=True)
    for a, b in zip(small().weights, with_bias.weights):  # the normal init draws no biases: same weights
        np.testing.assert_array_equal(a, b)
    bound = 1 / np.sqrt(3)  # fan_in of the first kernel: 1 channel x 1 x 3
    assert np.all(np.abs(plain.weights[0]) <= bound)
    with pytest.raises(ValueError, match="init must be 'normal' or 'uniform'"):
        small(init="xavier")


def test_angles_bp_zero_fa_in_range_and_training_learns():
    x, y = task()
    net = small()
    _, bp, _ = train_convnet(net, x, y, rule="bp", steps=40, lr=0.1, batch_size=20, record_every=20)
    assert bp["gradient_angle"].shape == (3, 2, 3) and bp["diverged"] == []
    np.testing.assert_allclose(bp["gradient_angle"], 0.0, atol=ZERO_ANGLE)
    feedback = draw_conv_feedback("fa", net, (1, 10), seed=3)
    _, fa, _ = train_convnet(net, x, y, rule="fa", steps=40, lr=0.1, batch_size=20, record_every=20, feedback=feedback)
    hidden = fa["gradient_angle"][:, :, :-1]
    assert np.all(np.isfinite(hidden)) and np.all((hidden > 0) & (hidden <= 180))
    np.testing.assert_allclose(fa["gradient_angle"][:, :, -1], 0.0, atol=ZERO_ANGLE)  # the read-out is BP's
    assert np.all(bp["accuracy"][-1] > bp["accuracy"][0])


def test_first_adam_step_is_lr_times_the_normalised_update():
    x, y = task(20)
    net = small(bias=True, init="uniform")
    lr, eps = 0.01, 1e-8
    trained, record, _ = train_convnet(net, x, y, rule="bp", steps=1, lr=lr, batch_size=20, optimizer="adam", eps=eps)
    grads, _ = conv_updates("bp", net, x, y)  # the whole set: the batch, in another order
    before = [*net.weights, *net.biases]
    after = [*trained.weights, *trained.biases]
    for p0, p1, g in zip(before, after, grads):
        # m_hat = g, v_hat = g^2 at t = 1; the batch mean in another order differs by a few ulps of g
        np.testing.assert_allclose(p0 - p1, lr * g / (np.abs(g) + eps), rtol=1e-6, atol=lr * 1e-6)
    assert record["steps"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        train_convnet(net, x, y, rule="bp", steps=1, lr=lr, batch_size=20, optimizer="rmsprop")


def _replay_until_exceeded(net, x, y, lr, steps, factor):
    """Plain SGD on the whole set (batch = N, in the trainer's order is irrelevant for the mean up to rounding)."""
    weights, first = list(net.weights), None
    with np.errstate(all="ignore"):
        for step in range(steps):
            updates, losses = conv_updates("bp", ConvNet(tuple(weights), net.geometry, net.activation), x, y, loss="mse")
            first = losses if first is None else first
            if not np.all(losses < factor * first):
                return step
            weights = [w - lr * u for w, u in zip(weights, updates)]
    return None


def test_a_diverging_run_is_detected_with_its_step_and_frozen():
    x, y = task(20)
    net = small(n_members=1, activation="linear")
    lr, steps = 3.0, 40
    step = _replay_until_exceeded(net, x, y, lr, steps, 1e3)
    assert step is not None, "the instance must diverge within the run for this test to mean anything"
    trained, record, _ = train_convnet(net, x, y, rule="bp", steps=steps, lr=lr, batch_size=20, loss="mse",
                                       record_every=1)
    (d,) = record["diverged"]
    assert d.member == 0 and d.step == step
    assert divergence_message("CNN bp", d) == f"CNN bp member 0: loss exceeded 1e+03 x its initial value at step {d.step}"
    assert np.all(np.isfinite(record["loss"][record["steps"] < d.step]))
    assert np.all(np.isnan(record["loss"][record["steps"] >= d.step]))
    assert np.all(np.isnan(record["gradient_angle"][record["steps"] >= d.step]))
    assert all(np.all(np.isfinite(w)) for w in trained.weights)  # frozen before the blow-up
    # no loss bound: the member runs until its loss or weights are non-finite
    _, unbounded, _ = train_convnet(net, x, y, rule="bp", steps=400, lr=lr, batch_size=20, loss="mse",
                                    record_every=50, divergence_factor=np.inf)
    (d,) = unbounded["diverged"]
    assert "non-finite" in d.reason and d.step > step
    with pytest.raises(ValueError, match="divergence_factor must be a number greater than 1"):
        train_convnet(net, x, y, rule="bp", steps=1, lr=lr, batch_size=20, divergence_factor=0.5)


def test_a_signal_stops_between_steps_and_keeps_the_records(monkeypatch):
    x, y = task(20)
    net = small()
    calls = []
    real = conv_module.conv_updates

    def counting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(conv_module, "conv_updates", counting)
    with interrupt.handle_signals(), interrupt.journal() as kept:
        with pytest.raises(interrupt.RunInterrupted):
            train_convnet(net, x, y, rule="bp", steps=50, lr=0.1, batch_size=10, record_every=2)
    assert len(calls) == 6  # the step under way finished; no other began
    (label, partial), = kept
    assert label == "cnn bp" and partial.steps.tolist() == [0, 2]
    assert partial.metrics["accuracy"].shape == (2, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="hebb"), "unknown rule 'hebb' for convolutional networks"),
    (dict(rule="brsf"), "rule 'brsf' needs feedback"),
    (dict(steps=-1), "steps must be an integer >= 0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(lr=-0.1), "lr must be a non-negative finite number"),
    (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
])
def test_bad_settings_are_named(kwargs, match):
    x, y = task(10)
    settings = dict(rule="bp", steps=1, lr=0.1, batch_size=5) | kwargs
    with pytest.raises(ValueError, match=match):
        train_convnet(small(), x, y, **settings)


def test_kolen_pollack_with_adam_keeps_the_exact_decay():
    """B and W move by the same Adam step, and decay alike: B - W shrinks by (1 - lr wd) per step exactly."""
    x, y = task(40)
    net = small(bias=True, init="uniform")
    feedback = draw_conv_feedback("kp", net, (1, 10), seed=4)
    lr, decay, steps = 0.01, 0.5, 30
    trained, _, last = train_convnet(net, x, y, rule="kp", steps=steps, lr=lr, batch_size=10, feedback=feedback,
                                     weight_decay=decay, optimizer="adam", record_every=10)
    for b0, w0, b1, w1 in zip(feedback, net.weights[1:], last, trained.weights[1:]):
        gap = b0 - w0
        np.testing.assert_allclose(b1 - w1, (1 - lr * decay) ** steps * gap, rtol=0,
                                   atol=100 * steps * EPS * float(np.max(np.abs(np.concatenate([b0.ravel(), w0.ravel()])))))
    assert np.linalg.norm(trained.weights[1] - net.weights[1]) > 1e-3 * np.linalg.norm(net.weights[1])  # they moved
