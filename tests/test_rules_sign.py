"""Sign symmetry (usf, brsf, frsf), Kolen-Pollack (kp) and DRTP: their defining formulas, computed here directly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.backend import member_rngs
from sim.data import Dataset, lillicrap_linear
from sim.network import init_network
from sim.rules import RULES, compute_updates, draw_feedback, get_rule, rule_updates
from sim.rules_feedback import draw_magnitudes
from sim.train import Stepper, TrainState, train

EPS = float(np.finfo(np.float64).eps)
NEW_RULES = ("usf", "brsf", "frsf", "kp", "drtp")
SIZES = (4, 6, 5, 3)
ACTIVATIONS = ("linear", "relu", "tanh")


def instance(seed, sizes=SIZES, n_members=2, batch=5, loss="mse"):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 1.0 / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    x = rng.normal(size=(n_members, batch, sizes[0]))
    if loss == "mse":
        y = rng.normal(size=(n_members, batch, sizes[-1]))
    else:
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=(n_members, batch))]
    return weights, x, y


def reference(weights, x, y, activation, loss, backward):
    """Plain einsum forward pass; ``backward(i, deltas, error, y)`` gives layer i's signal before f'."""
    h, inputs, pre = x, [], []
    for w in weights:
        inputs.append(h)
        a = np.einsum("ebj,eij->ebi", h, w)
        pre.append(a)
        h = {"linear": a, "relu": np.maximum(a, 0.0), "tanh": np.tanh(a)}[activation]
    if loss == "mse":
        error = pre[-1] - y
    else:
        z = np.exp(pre[-1] - pre[-1].max(axis=-1, keepdims=True))
        error = z / z.sum(axis=-1, keepdims=True) - y
    deriv = {"linear": np.ones_like, "relu": lambda a: (a > 0) * 1.0, "tanh": lambda a: 1 - np.tanh(a) ** 2}
    deltas = [None] * len(weights)
    deltas[-1] = error
    for i in range(len(weights) - 2, -1, -1):
        deltas[i] = backward(i, deltas, error, y) * deriv[activation](pre[i])
    return [np.einsum("ebi,ebj->eij", d, hh) / x.shape[-2] for d, hh in zip(deltas, inputs)]


def through(matrices):
    """Signal ``B_{l+1} delta_{l+1}`` with the given ``B`` list (each (E, n_l, n_{l+1}))."""
    return lambda i, deltas, error, y: np.einsum("ejk,ebk->ebj", matrices[i], deltas[i + 1])


def tolerance(sizes=SIZES, batch=5):
    return 64 * EPS * (sum(sizes) + batch)


def assert_updates(actual, expected):
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=tolerance(), atol=tolerance() * float(np.max(np.abs(b))))


# --- the defining formulas -------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_usf_feeds_back_through_the_signs_of_the_weights(activation, loss):
    weights, x, y = instance(1, loss=loss)
    b = [np.sign(np.swapaxes(w, 1, 2)) for w in weights[1:]]  # B_{l+1} = sign(W_{l+1}^T), all magnitudes one
    assert all(np.all(np.abs(m) == 1) for m in b)
    expected = reference(weights, x, y, activation, loss, through(b))
    assert_updates(compute_updates("usf", weights, x, y, activation=activation, loss=loss), expected)


@pytest.mark.parametrize("rule", ["frsf", "brsf"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_sign_rules_feed_back_magnitudes_times_signs(rule, activation):
    weights, x, y = instance(2)
    magnitudes = draw_feedback(rule, SIZES, 2, seed=2)
    b = [np.abs(r) * np.sign(np.swapaxes(w, 1, 2)) for r, w in zip(magnitudes, weights[1:])]
    # sign-concordant: every entry of B has the sign of the matching forward weight
    for m, w in zip(b, weights[1:]):
        np.testing.assert_array_equal(np.sign(m), np.sign(np.swapaxes(w, 1, 2)))
    expected = reference(weights, x, y, activation, "mse", through(b))
    assert_updates(compute_updates(rule, weights, x, y, activation=activation, feedback=magnitudes), expected)


def test_frsf_with_magnitudes_of_the_weights_is_bp():
    weights, x, y = instance(3, loss="ce")
    magnitudes = [np.abs(np.swapaxes(w, 1, 2)) for w in weights[1:]]  # |W^T| * sign(W^T) = W^T
    assert_updates(compute_updates("frsf", weights, x, y, activation="tanh", loss="ce", feedback=magnitudes),
                   compute_updates("bp", weights, x, y, activation="tanh", loss="ce"))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kp_is_fa_with_its_current_feedback_and_bp_when_symmetric(activation):
    weights, x, y = instance(4)
    feedback = draw_feedback("kp", SIZES, 2, seed=4)
    expected = reference(weights, x, y, activation, "mse", through(feedback))
    assert_updates(compute_updates("kp", weights, x, y, activation=activation, feedback=feedback), expected)
    symmetric = [np.swapaxes(w, 1, 2).copy() for w in weights[1:]]
    assert_updates(compute_updates("kp", weights, x, y, activation=activation, feedback=symmetric),
                   compute_updates("bp", weights, x, y, activation=activation))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_drtp_projects_the_targets_not_the_error(activation):
    weights, x, y = instance(5, loss="ce")
    feedback = draw_feedback("drtp", SIZES, 2, seed=5)  # B_l: (n_l, n_L)
    expected = reference(weights, x, y, activation, "ce",
                         lambda i, deltas, error, yy: -np.einsum("ejk,ebk->ebj", feedback[i], yy))
    own = compute_updates("drtp", weights, x, y, activation=activation, loss="ce", feedback=feedback)
    assert_updates(own, expected)
    # update-unlocked: the hidden updates do not depend on the layers above nor on the output
    other = [w if i == 0 else 3.0 * np.roll(w, 1, axis=-1) for i, w in enumerate(weights)]
    moved = compute_updates("drtp", other, x, y, activation=activation, loss="ce", feedback=feedback)
    np.testing.assert_array_equal(moved[0], own[0])
    # the output layer's update is BP's
    bp = compute_updates("bp", weights, x, y, activation=activation, loss="ce")
    np.testing.assert_allclose(own[-1], bp[-1], rtol=tolerance(), atol=0)


def test_locking_and_feedback_kinds():
    assert get_rule("drtp").locking.update is False and get_rule("drtp").locking.backward is False
    for name in ("usf", "brsf", "frsf", "kp"):
        assert get_rule(name).locking.backward and get_rule(name).locking.update
    assert get_rule("usf").feedback is None
    assert get_rule("drtp").feedback == "direct"
    assert all(get_rule(n).feedback == "layerwise" for n in ("brsf", "frsf", "kp"))
    assert get_rule("brsf").redraws_feedback and get_rule("kp").learns_feedback
    assert set(NEW_RULES) <= set(RULES)
    assert draw_feedback("usf", SIZES, 2, seed=0) is None


@pytest.mark.parametrize("rule", NEW_RULES)
def test_ensemble_equals_separate_members(rule):
    weights, x, y = instance(6, n_members=3)
    feedback = draw_feedback(rule, SIZES, 3, seed=6)
    full = compute_updates(rule, weights, x, y, activation="tanh", feedback=feedback)
    for m in range(3):
        fb = None if feedback is None else [b[m:m + 1] for b in feedback]
        one = compute_updates(rule, [w[m:m + 1] for w in weights], x[m:m + 1], y[m:m + 1], activation="tanh",
                              feedback=fb)
        for a, b in zip(one, full):
            np.testing.assert_allclose(a[0], b[m], rtol=tolerance(), atol=tolerance() * float(np.max(np.abs(b[m]))))


@pytest.mark.parametrize("rule", ["frsf", "kp", "drtp"])
def test_missing_feedback_is_an_error(rule):
    weights, x, y = instance(7)
    with pytest.raises(ValueError, match="needs feedback matrices"):
        compute_updates(rule, weights, x, y)


# --- in the trainer ---------------------------------------------------------------------------------

def test_brsf_redraws_magnitudes_every_step_from_the_member_streams():
    net = init_network(SIZES, 2, seed=8, activation="tanh")
    weights, x, y = instance(8)
    x, y = x[0], y[0]
    state = TrainState.start([w.copy() for w in net.weights])
    lr = np.full(2, 0.1)
    stepper = Stepper(state, rule="brsf", activation="tanh", loss="mse", lr=lr,
                      feedback=draw_feedback("brsf", SIZES, 2, seed=8), feedback_seed=8)
    before = [w.copy() for w in net.weights]
    stepper(x, y, 0)
    first = stepper.feedback
    rngs = member_rngs(8, 2, "feedback_batch")
    expected = draw_magnitudes(rngs, SIZES, np, "float64")
    for a, b in zip(first, expected):
        np.testing.assert_array_equal(a, b)
    dw = compute_updates("frsf", before, x, y, activation="tanh", feedback=first)
    for w0, w1, d in zip(before, stepper.state.weights, dw):
        np.testing.assert_allclose(w1, w0 - 0.1 * d, rtol=tolerance(), atol=tolerance())
    stepper(x, y, 1)
    assert not any(np.array_equal(a, b) for a, b in zip(first, stepper.feedback))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lr=st.floats(0.002, 0.02), weight_decay=st.floats(0.5, 5.0),
       steps=st.integers(1, 30), activation=st.sampled_from(ACTIVATIONS))
def test_kp_feedback_minus_transposed_weights_decays_geometrically(seed, lr, weight_decay, steps, activation):
    data = lillicrap_linear(40, seed=seed)
    net = init_network([30, 8, 6, 10], 2, seed=seed, activation=activation, scale=0.5)
    feedback = draw_feedback("kp", net.sizes, 2, seed=seed)
    gap0 = [b - np.swapaxes(w, 1, 2) for b, w in zip(feedback, net.weights[1:])]
    res = train(net, data, rule="kp", steps=steps, lr=lr, batch_size=10, feedback=feedback, seed=seed,
                weight_decay=weight_decay, progress=False)
    assert not res.diverged
    factor = (1 - lr * weight_decay) ** steps
    for b, w, g0 in zip(res.feedback, res.network.weights[1:], gap0):
        gap = b - np.swapaxes(w, 1, 2)
        # each step rounds B and W once: the error grows by ~eps * |B| per step
        atol = 8 * EPS * steps * max(float(np.max(np.abs(b))), float(np.max(np.abs(w))))
        np.testing.assert_allclose(gap, factor * g0, rtol=8 * EPS * steps, atol=atol)


def test_weight_decay_adds_lambda_w_to_every_weight_step():
    data = lillicrap_linear(20, seed=9)
    net = init_network([30, 8, 10], 2, seed=9, scale=0.5)
    res = train(net, data, rule="bp", steps=1, lr=0.1, weight_decay=0.5, progress=False)
    dw = compute_updates("bp", net.weights, data.x, data.y)
    for w0, w1, d in zip(net.weights, res.network.weights, dw):
        np.testing.assert_allclose(w1, w0 - 0.1 * (d + 0.5 * w0), rtol=tolerance(), atol=tolerance())


@pytest.mark.parametrize("value", [-0.1, float("nan"), "0.1", True])
def test_bad_weight_decay_is_named(value):
    data = lillicrap_linear(20, seed=0)
    net = init_network([30, 8, 10], 1, seed=0)
    with pytest.raises(ValueError, match="weight_decay must be a non-negative finite number"):
        train(net, data, rule="bp", steps=1, lr=0.1, weight_decay=value)


@pytest.mark.parametrize("rule", NEW_RULES)
def test_every_new_rule_trains_with_the_same_metrics(rule):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(200, 8))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    data = Dataset(x, np.eye(3)[labels], "classification")
    net = init_network([8, 16, 16, 3], 2, seed=10, activation="tanh")
    feedback = draw_feedback(rule, net.sizes, 2, seed=10)
    res = train(net, data, rule=rule, steps=150, lr=0.05 if rule == "usf" else 0.2, batch_size=20,
                feedback=feedback, progress=False)
    assert not res.diverged
    assert {"loss", "accuracy", "gradient_angle", "signal_angle", "weight_norm"} <= set(res.metrics)
    if rule != "drtp":
        assert "weight_alignment" in res.metrics
        assert np.all(res.metric("weight_alignment")[-1] < 90)
    assert np.all(res.metric("accuracy")[-1] > res.metric("accuracy")[0])
    assert np.all(res.metric("signal_angle") <= 180)


def test_rule_updates_signals_of_drtp_are_target_projections():
    weights, x, y = instance(11, loss="ce")
    feedback = draw_feedback("drtp", SIZES, 2, seed=11)
    upd = rule_updates("drtp", weights, x, y, activation="linear", loss="ce", feedback=feedback)
    np.testing.assert_allclose(upd.signals[0], -np.einsum("ejk,ebk->ebj", feedback[0], y), rtol=tolerance(), atol=0)


# --- the standard array API, and random instances ---------------------------------------------------

@pytest.mark.parametrize("rule", NEW_RULES)
def test_new_rules_on_array_api_strict(rule):
    import array_api_strict as xps

    weights, x, y = instance(12, loss="ce")
    feedback = draw_feedback(rule, SIZES, 2, seed=12)
    strict = [xps.asarray(w) for w in weights]
    strict_feedback = None if feedback is None else [xps.asarray(b) for b in feedback]
    got = compute_updates(rule, strict, xps.asarray(x), xps.asarray(y), activation="tanh", loss="ce",
                          feedback=strict_feedback)
    expected = compute_updates(rule, weights, x, y, activation="tanh", loss="ce", feedback=feedback)
    assert_updates([np.asarray(g) for g in got], expected)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sizes=st.lists(st.integers(1, 6), min_size=3, max_size=5),
       activation=st.sampled_from(ACTIVATIONS), loss=st.sampled_from(["mse", "ce"]),
       rule=st.sampled_from(["usf", "frsf", "kp", "drtp"]))
def test_property_new_rules_match_their_formulas(seed, sizes, activation, loss, rule):
    weights, x, y = instance(seed, sizes=tuple(sizes), n_members=2, batch=3, loss=loss)
    feedback = draw_feedback(rule, sizes, 2, seed=seed)
    if rule == "usf":
        backward = through([np.sign(np.swapaxes(w, 1, 2)) for w in weights[1:]])
    elif rule == "frsf":
        backward = through([np.abs(r) * np.sign(np.swapaxes(w, 1, 2)) for r, w in zip(feedback, weights[1:])])
    elif rule == "kp":
        backward = through(feedback)
    else:
        def backward(i, deltas, error, yy):
            return -np.einsum("ejk,ebk->ebj", feedback[i], yy)
    expected = reference(weights, x, y, activation, loss, backward)
    got = compute_updates(rule, weights, x, y, activation=activation, loss=loss, feedback=feedback)
    for a, b in zip(got, expected):
        tol = tolerance(tuple(sizes), 3)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b)))))
