"""Adam in the trainer (sim.optim, train(..., optimizer="adam")) against Adam written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from sim.data import linear_teacher, teacher_classification
from sim.network import init_network
from sim.rules import draw_feedback, rule_updates
from sim.train import train

SIZES = (4, 6, 5, 3)


def hand_adam(weights, biases, x, y, *, rule, steps, lrs, betas, eps, weight_decay=0.0, feedback=None,
              activation="tanh", loss="mse"):
    """Full-batch Adam (Kingma & Ba 2015, Algorithm 1) per member, decoupled weight decay on the weights."""
    b1, b2 = betas
    n_weights = len(weights)
    params = [p.copy() for p in weights] + [b.copy() for b in (biases or [])]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    losses = []
    for t in range(1, steps + 1):
        upd = rule_updates(rule, params[:n_weights], x, y, activation=activation, loss=loss, feedback=feedback,
                           biases=params[n_weights:] or None)
        losses.append(upd.loss)
        grads = upd.weights + (upd.biases or [])
        new = []
        for i, (p, g) in enumerate(zip(params, grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g ** 2
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p = p.copy()
            for e, lr in enumerate(lrs):
                p[e] -= lr * m_hat[e] / (np.sqrt(v_hat[e]) + eps)
                if i < n_weights and weight_decay:
                    p[e] -= lr * weight_decay * params[i][e]
            new.append(p)
        params = new
    return params[:n_weights], params[n_weights:] or None, losses


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("betas, eps, weight_decay", [((0.9, 0.999), 1e-8, 0.0), ((0.5, 0.9), 1e-3, 0.01)])
def test_adam_equals_hand_written_adam(bias, betas, eps, weight_decay):
    steps, lrs = 15, [0.01, 0.003]
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 0.5], 16, seed=3)
    net = init_network(SIZES, 2, seed=5, activation="tanh", bias=bias)
    result = train(net, data, rule="bp", steps=steps, lr=lrs, optimizer="adam", betas=betas, eps=eps,
                   weight_decay=weight_decay, record_every=1)
    weights, biases, losses = hand_adam(list(net.weights), None if net.biases is None else list(net.biases),
                                        data.x, data.y, rule="bp", steps=steps, lrs=lrs, betas=betas, eps=eps,
                                        weight_decay=weight_decay)
    got = list(result.network.weights) + list(result.network.biases or [])
    for a, b in zip(got, weights + (biases or [])):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.metric("loss")[:-1], np.stack(losses), rtol=1e-10)
    assert np.all(result.metric("loss")[-1] < result.metric("loss")[0])


def test_adam_with_a_feedback_rule_minibatches_and_threads():
    data = teacher_classification(64, seed=1, n_inputs=8, n_hidden=7, n_classes=4)
    sizes = (data.n_inputs, 12, 10, data.n_outputs)
    net = init_network(sizes, 4, seed=2, activation="tanh", bias=True)
    feedback = draw_feedback("fa", sizes, 4, seed=3)
    kwargs = dict(rule="fa", steps=12, lr=[1e-3, 3e-3, 1e-2, 3e-2], batch_size=16, seed=1, record_every=4,
                  optimizer="adam", feedback=feedback)
    one = train(net, data, threads=1, **kwargs)
    two = train(net, data, threads=2, **kwargs)
    assert one.metric("accuracy").shape[1] == 4
    for a, b in zip(one.network.weights + one.network.biases, two.network.weights + two.network.biases):
        np.testing.assert_array_equal(a, b)  # member threads change nothing, bit for bit
    # each member alone gives the same numbers as in the ensemble
    alone = train(net.members(slice(2, 3)), data, **{**kwargs, "lr": 1e-2, "feedback": [b[2:3] for b in feedback]})
    for a, b in zip(alone.network.weights, one.network.weights):
        np.testing.assert_allclose(a[0], b[2], rtol=1e-12, atol=1e-14)


def test_adam_kolen_pollack_feedback_follows_the_adam_step():
    """With Adam, B moves by the transpose of W's Adam step and both decay alike: B - W^T shrinks by (1 - lr wd)^t."""
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 0.5], 16, seed=3)
    net = init_network(SIZES, 2, seed=5, activation="tanh")
    feedback = draw_feedback("kp", SIZES, 2, seed=7)
    lr, wd, steps = 0.01, 0.1, 10
    res = train(net, data, rule="kp", steps=steps, lr=lr, optimizer="adam", weight_decay=wd, feedback=feedback)
    for b0, w0, b, w in zip(feedback, net.weights[1:], res.feedback, res.network.weights[1:]):
        expected = (1 - lr * wd) ** steps * (b0 - np.swapaxes(w0, 1, 2))
        np.testing.assert_allclose(b - np.swapaxes(w, 1, 2), expected, rtol=1e-9, atol=1e-12)


def test_default_optimizer_is_sgd_and_adam_differs():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 0.5], 16, seed=3)
    net = init_network(SIZES, 1, seed=5, activation="tanh")
    sgd = train(net, data, rule="bp", steps=5, lr=0.01)
    explicit = train(net, data, rule="bp", steps=5, lr=0.01, optimizer="sgd")
    adam = train(net, data, rule="bp", steps=5, lr=0.01, optimizer="adam")
    for a, b in zip(sgd.network.weights, explicit.network.weights):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(adam.network.weights[0], sgd.network.weights[0])


@pytest.mark.parametrize("bad", [
    dict(optimizer="rmsprop"), dict(optimizer="Adam"), dict(optimizer="adam", momentum=0.9),
    dict(optimizer="adam", betas=(1.0, 0.999)), dict(optimizer="adam", betas=(0.9, -0.1)),
    dict(optimizer="adam", betas=(0.9,)), dict(optimizer="adam", betas="ab"), dict(optimizer="adam", betas=0.9),
    dict(optimizer="adam", betas=(0.9, np.nan)), dict(optimizer="adam", betas=(True, 0.9)),
    dict(optimizer="adam", eps=0.0), dict(optimizer="adam", eps=-1e-8), dict(optimizer="adam", eps=np.inf),
    dict(optimizer="adam", eps="1e-8"), dict(optimizer="adam", eps=True),
])
def test_bad_optimizer_settings_raise(bad):
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 0.5], 8, seed=3)
    net = init_network(SIZES, 1, seed=5, activation="tanh")
    with pytest.raises(ValueError):
        train(net, data, rule="bp", steps=2, lr=0.01, **bad)
