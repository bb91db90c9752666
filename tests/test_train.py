"""The trainer (sim.train): ensembles equal separate runs, heavy-ball momentum, divergence, observers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.data import Dataset, linear_teacher, teacher_classification
from sim.metrics import fa_weight_alignment, weight_norms
from sim.network import init_network
from sim.nn import loss_value, predict
from sim.rules import draw_feedback, rule_updates
import sim.stepper as stepper_module
from sim.train import MemberThreads, TrainResult, member_threads, train

EPS = float(np.finfo(np.float64).eps)
SIZES = (4, 6, 5, 3)


def run_tolerance(sizes, steps, batch):
    """Relative tolerance after ``steps`` updates that each round differently: grows linearly in steps."""
    return 16 * EPS * (sum(sizes) + batch) * max(1, steps)


def hand_heavy_ball(weights, biases, x, y, *, rule, steps, lrs, momentum, activation, loss, feedback=None):
    """Full-batch heavy ball written out: v <- mu v + dW, W <- W - lr v (per-member lr)."""
    params = [p.copy() for p in weights] + [b.copy() for b in (biases or [])]
    velocity = [np.zeros_like(p) for p in params]
    n_weights = len(weights)
    losses = []
    lr = np.asarray(lrs, dtype=float)
    for _ in range(steps):
        upd = rule_updates(rule, params[:n_weights], x, y, activation=activation, loss=loss, feedback=feedback,
                           biases=params[n_weights:] or None)
        losses.append(upd.loss)
        grads = upd.weights + (upd.biases or [])
        velocity = [momentum * v + g for v, g in zip(velocity, grads)]
        params = [p - lr.reshape((-1,) + (1,) * (p.ndim - 1)) * v for p, v in zip(params, velocity)]
    return params[:n_weights], params[n_weights:] or None, losses


# --- ensembles are independent runs ---------------------------------------------------------------

@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("batch_size", [None, 8], ids=["full-batch", "minibatch"])
def test_ensemble_train_equals_separate_single_member_runs(rule, batch_size):
    n_members, steps = 3, 15
    lrs = [0.02, 0.05, 0.1]
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0, 0.5], 24, seed=1)
    net = init_network(SIZES, n_members, seed=4, activation="tanh", bias=True, scale=[0.8, 1.0, 1.2])
    feedback = draw_feedback(rule, SIZES, n_members, seed=4)
    kwargs = dict(rule=rule, steps=steps, momentum=0.3, batch_size=batch_size, seed=2, record_every=5)
    full = train(net, data, lr=lrs, feedback=feedback, **kwargs)
    assert full.diverged == []
    tol = run_tolerance(SIZES, steps, 24)
    for m in range(n_members):
        fb = None if feedback is None else [b[m:m + 1] for b in feedback]
        one = train(net.member(m), data, lr=[lrs[m]], feedback=fb, **kwargs)
        np.testing.assert_array_equal(one.steps, full.steps)
        for a, b in zip(one.network.weights + one.network.biases, full.network.weights + full.network.biases):
            np.testing.assert_allclose(a[0], b[m], rtol=tol, atol=tol * float(np.max(np.abs(b[m]))))
        for name, values in full.metrics.items():
            np.testing.assert_allclose(one.metrics[name][:, 0], values[:, m], rtol=tol, atol=tol)


def test_a_scalar_lr_is_the_same_lr_for_every_member():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 10, seed=0)
    net = init_network(SIZES, 2, seed=0)
    a = train(net, data, rule="bp", steps=5, lr=0.1)
    b = train(net, data, rule="bp", steps=5, lr=[0.1, 0.1])
    for u, v in zip(a.network.weights, b.network.weights):
        np.testing.assert_array_equal(u, v)


# --- the step is heavy-ball SGD -------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_momentum_equals_hand_written_heavy_ball(momentum, bias):
    steps, lrs = 20, [0.01, 0.03]
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 0.5], 16, seed=3)
    net = init_network(SIZES, 2, seed=5, activation="tanh", bias=bias)
    result = train(net, data, rule="bp", steps=steps, lr=lrs, momentum=momentum, record_every=1)
    weights, biases, losses = hand_heavy_ball(list(net.weights), None if net.biases is None else list(net.biases),
                                              data.x, data.y, rule="bp", steps=steps, lrs=lrs, momentum=momentum,
                                              activation="tanh", loss="mse")
    tol = run_tolerance(SIZES, steps, 16)
    got = list(result.network.weights) + list(result.network.biases or [])
    for a, b in zip(got, weights + (biases or [])):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))
    # losses recorded at steps 0..steps-1 are the losses before each update
    np.testing.assert_allclose(result.metric("loss")[:-1], np.stack(losses), rtol=tol)
    final = loss_value(predict(weights, data.x, "tanh", biases), data.y, "mse")
    np.testing.assert_allclose(result.metric("loss")[-1], final, rtol=tol)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_feedback_rules_train_the_hidden_layers_and_reduce_the_loss(rule):
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0, 0.5], 40, seed=2)
    net = init_network(SIZES, 2, seed=6, scale=0.5)
    feedback = draw_feedback(rule, SIZES, 2, seed=6)
    result = train(net, data, rule=rule, steps=200, lr=0.05, feedback=feedback)
    for w0, w in zip(net.weights[:-1], result.network.weights[:-1]):
        change = np.linalg.norm(w - w0, axis=(1, 2))
        assert np.all(change > 1e-2 * np.linalg.norm(w0, axis=(1, 2)))
    loss = result.metric("loss")
    assert np.all(loss[-1] < 0.5 * loss[0])


def test_each_minibatch_epoch_visits_every_sample_once():
    # one linear layer from zero on one-hot inputs: sample j only moves column j of W, by
    # (lr / b) (y_j - W_j) each time it is in a batch, whatever the order of the batches
    n, n_out, batch, lr = 6, 3, 2, 0.3
    targets = np.random.default_rng(0).normal(size=(n, n_out))
    data = Dataset(np.eye(n), targets, "regression")
    net = init_network((n, n_out), 1, seed=0, init="zero")
    c = lr / batch
    for epochs in (1, 2, 3):
        result = train(net, data, rule="bp", steps=epochs * n // batch, lr=lr, batch_size=batch, seed=4)
        want = (1 - (1 - c) ** epochs) * targets.T  # column j after `epochs` visits
        np.testing.assert_allclose(result.network.weights[0][0], want, rtol=16 * EPS * epochs, atol=0)


def test_minibatch_order_follows_the_seed():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0, 0.5], 24, seed=0)
    net = init_network(SIZES, 1, seed=0, activation="tanh")
    runs = [train(net, data, rule="bp", steps=5, lr=0.1, batch_size=4, seed=s).network.weights[0] for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.linalg.norm(runs[0] - runs[2]) > 1e-6 * np.linalg.norm(runs[0])


# --- divergence -----------------------------------------------------------------------------------

def _first_non_finite_step(weights, x, y, lr, steps):
    """Plain gradient descent on one member until its loss is non-finite: (step, weights then)."""
    with np.errstate(all="ignore"):
        for step in range(steps):
            upd = rule_updates("bp", weights, x, y, validate=False, scale=np.full(1, lr))  # the trainer's step
            if not np.all(np.isfinite(upd.loss)):
                return step, weights
            weights = [w - s for w, s in zip(weights, upd.weights)]
    return None, weights


def test_diverging_members_are_stopped_and_reported():
    steps, lrs = 80, [0.05, 40.0, 0.1]
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0], 20, seed=0)
    net = init_network(SIZES, 3, seed=1)
    # no loss bound: this checks the non-finite path (tests/test_divergence.py checks the bound)
    result = train(net, data, rule="bp", steps=steps, lr=lrs, record_every=1, divergence_factor=np.inf)
    step, frozen = _first_non_finite_step(list(net.member(1).weights), data.x, data.y, lrs[1], steps)
    assert step is not None, "the instance must diverge within the run for this test to mean anything"
    assert [d.member for d in result.diverged] == [1]
    assert result.diverged[0].step == step
    assert "non-finite" in result.diverged[0].reason
    # the diverged member keeps the weights it had when its loss became non-finite (the replay runs one
    # member, the trainer three in one batched product, which BLAS may round differently by an ulp or two)
    for a, b in zip(result.network.weights, frozen):
        np.testing.assert_allclose(a[1], b[0], rtol=run_tolerance(SIZES, step, 20), atol=0)
    # the others train normally: their loss decreases and matches their own runs
    loss = result.metric("loss")
    assert np.all(np.isfinite(loss[:, [0, 2]]))
    assert np.all(loss[-1, [0, 2]] < 0.5 * loss[0, [0, 2]])
    tol = run_tolerance(SIZES, steps, 20)
    for m in (0, 2):
        alone = train(net.member(m), data, rule="bp", steps=steps, lr=[lrs[m]], record_every=1)
        for a, b in zip(alone.network.weights, result.network.weights):
            np.testing.assert_allclose(a[0], b[m], rtol=tol, atol=tol * float(np.max(np.abs(b[m]))))


def test_a_run_where_every_member_diverges_stops_early():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0], 20, seed=0)
    net = init_network(SIZES, 2, seed=1)
    result = train(net, data, rule="bp", steps=500, lr=[40.0, 60.0], record_every=1, divergence_factor=np.inf)
    assert [d.member for d in result.diverged] == [0, 1]
    for m, d in enumerate(result.diverged):
        step, _ = _first_non_finite_step(list(net.member(m).weights), data.x, data.y, [40.0, 60.0][m], 500)
        assert d.step == step
    assert result.steps[-1] < 500


def test_float32_run_stays_float32_and_tracks_float64():
    steps = 10
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0, 0.5], 16, seed=8)
    runs = {dtype: train(init_network(SIZES, 2, seed=8, activation="tanh", dtype=dtype), data, rule="bp",
                         steps=steps, lr=0.05)
            for dtype in ("float32", "float64")}
    eps32 = float(np.finfo(np.float32).eps)
    tol = 16 * eps32 * (sum(SIZES) + 16) * steps
    for a, b in zip(runs["float32"].network.weights, runs["float64"].network.weights):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


# --- recording and observers ----------------------------------------------------------------------

@pytest.mark.parametrize("steps, record_every", [(10, 3), (9, 3), (7, 1), (5, 10)])
def test_recorded_steps(steps, record_every):
    data = linear_teacher(3, 2, [1.0], 8, seed=0)
    net = init_network((3, 4, 2), 2, seed=0)
    result = train(net, data, rule="bp", steps=steps, lr=0.01, record_every=record_every)
    want = sorted(set(range(0, steps, record_every)) | {steps})
    np.testing.assert_array_equal(result.steps, want)
    for name, values in result.metrics.items():
        assert values.shape[:2] == (len(want), 2), name


def test_zero_steps_leave_the_network_unchanged():
    data = linear_teacher(3, 2, [1.0], 8, seed=0)
    net = init_network((3, 4, 2), 2, seed=0)
    result = train(net, data, rule="bp", steps=0, lr=0.1)
    np.testing.assert_array_equal(result.steps, [0])
    for a, b in zip(result.network.weights, net.weights):
        np.testing.assert_array_equal(a, b)


def test_training_never_changes_the_networks_it_was_given():
    """The trainer updates private copies in place; a result trained on again must stay as it was."""
    data = linear_teacher(3, 2, [1.0], 8, seed=0)
    net = init_network((3, 4, 2), 2, seed=0)
    before = [np.array(w) for w in net.weights]
    first = train(net, data, rule="bp", steps=3, lr=0.1)
    after_first = [np.array(w) for w in first.network.weights]
    second = train(first.network, data, rule="bp", steps=3, lr=0.1)  # its weights are column-major already
    for w, want in zip(net.weights, before):
        np.testing.assert_array_equal(w, want)
    for w, want in zip(first.network.weights, after_first):
        np.testing.assert_array_equal(w, want)
    assert not any(np.array_equal(a, b) for a, b in zip(second.network.weights, after_first))


def test_observers_of_fa():
    data = teacher_classification(60, seed=3, n_inputs=SIZES[0], n_hidden=7, n_classes=SIZES[-1])
    net = init_network(SIZES, 2, seed=3, activation="relu")
    feedback = draw_feedback("fa", SIZES, 2, seed=3)
    result = train(net, data, rule="fa", steps=4, lr=0.1, feedback=feedback, record_every=2)
    assert isinstance(result, TrainResult)
    assert result.feedback is feedback
    n_rec, n_layers = len(result.steps), len(SIZES) - 1
    assert result.metric("loss").shape == (n_rec, 2)
    assert result.metric("accuracy").shape == (n_rec, 2)
    assert result.metric("gradient_angle").shape == (n_rec, 2, n_layers)
    assert result.metric("signal_angle").shape == (n_rec, 2, n_layers - 1)
    assert result.metric("weight_alignment").shape == (n_rec, 2, n_layers - 1)
    assert result.metric("weight_norm").shape == (n_rec, 2, n_layers)
    tol = 16 * EPS * sum(SIZES) * 60
    # the default loss of classification data is cross-entropy
    np.testing.assert_allclose(result.metric("loss")[0], loss_value(predict(net.weights, data.x, "relu"), data.y, "ce"),
                               rtol=tol)
    np.testing.assert_allclose(result.metric("weight_alignment")[0], fa_weight_alignment(net.weights, feedback),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(result.metric("weight_norm")[0], weight_norms(net.weights), rtol=tol)
    # the top layer's update is BP's for every rule
    np.testing.assert_allclose(result.metric("gradient_angle")[..., -1], 0.0, atol=np.degrees(np.sqrt(tol)))
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        result.metric("speed")


def test_gradient_angle_is_zero_for_bp_and_for_fa_with_transposed_feedback():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0, 0.5], 12, seed=4)
    net = init_network(SIZES, 2, seed=4, activation="tanh")
    atol = np.degrees(np.sqrt(16 * EPS * sum(SIZES) * 12))
    bp = train(net, data, rule="bp", steps=3, lr=0.05, record_every=1)
    np.testing.assert_allclose(bp.metric("gradient_angle"), 0.0, atol=atol)
    np.testing.assert_allclose(bp.metric("signal_angle"), 0.0, atol=atol)
    assert "weight_alignment" not in bp.metrics
    mirrored = [np.swapaxes(w, -1, -2).copy() for w in net.weights[1:]]
    fa = train(net, data, rule="fa", steps=0, lr=0.05, feedback=mirrored)
    np.testing.assert_allclose(fa.metric("gradient_angle"), 0.0, atol=atol)
    np.testing.assert_allclose(fa.metric("weight_alignment"), 0.0, atol=atol)


def test_probe_reports_feedback_alignment_of_a_bp_run():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 12, seed=5)
    net = init_network(SIZES, 2, seed=5)
    feedback = draw_feedback("dfa", SIZES, 2, seed=5)
    result = train(net, data, rule="bp", steps=2, lr=0.05, feedback=feedback, probe="dfa", record_every=1)
    assert result.metric("weight_alignment").shape == (3, 2, len(SIZES) - 2)
    # a random probe's signals are not BP's
    assert np.all(result.metric("signal_angle")[0] > 1.0)


def test_observe_on_another_dataset():
    train_data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 12, seed=6)
    test_data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 30, seed=7)
    net = init_network(SIZES, 2, seed=6)
    result = train(net, train_data, rule="bp", steps=3, lr=0.05, observe_on=test_data, record_every=1)
    want = loss_value(predict(result.network.weights, test_data.x), test_data.y, "mse")
    np.testing.assert_allclose(result.metric("loss")[-1], want, rtol=16 * EPS * sum(SIZES) * 30)


# --- member threads: the same numbers, bit for bit ------------------------------------------------------

def _assert_same_run(a: TrainResult, b: TrainResult):
    for u, v in zip(a.network.weights + (a.network.biases or ()), b.network.weights + (b.network.biases or ())):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.steps, b.steps)
    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    assert a.diverged == b.diverged


@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_member_threads_give_the_one_thread_run_bit_for_bit(rule, threads):
    n_members = 5
    data = teacher_classification(30, seed=3, n_inputs=SIZES[0], n_hidden=7, n_classes=SIZES[-1])
    net = init_network(SIZES, n_members, seed=6, activation="relu", bias=True)
    feedback = draw_feedback(rule, SIZES, n_members, seed=6)
    kwargs = dict(rule=rule, steps=12, lr=[0.05, 0.1, 0.2, 0.3, 0.4], momentum=0.5, batch_size=8, seed=1,
                  feedback=feedback, record_every=4)
    one = train(net, data, threads=1, **kwargs)
    split = train(net, data, threads=threads, **kwargs)  # 7 > E: capped at E, one member per thread
    _assert_same_run(one, split)
    for u, w in zip(split.network.weights, net.weights):  # it trained
        assert np.max(np.abs(u - w)) > 0


def test_member_threads_stop_a_diverging_member_like_one_thread():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0], 20, seed=0)
    net = init_network(SIZES, 4, seed=1)
    kwargs = dict(rule="bp", steps=60, lr=[0.05, 0.1, 40.0, 0.1], record_every=1)
    one, split = train(net, data, threads=1, **kwargs), train(net, data, threads=2, **kwargs)
    assert [d.member for d in split.diverged] == [2]
    _assert_same_run(one, split)


def test_feedback_shared_by_all_members_is_not_split():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0], 20, seed=0)
    net = init_network(SIZES, 4, seed=2, activation="tanh")
    shared = [b[0] for b in draw_feedback("fa", SIZES, 1, seed=2)]  # (rows, cols): one for every member
    kwargs = dict(rule="fa", steps=10, lr=0.05, feedback=shared, record_every=5)
    _assert_same_run(train(net, data, threads=1, **kwargs), train(net, data, threads=2, **kwargs))


def test_member_threads_measure_probes_and_other_observation_sets_like_one_thread():
    data = teacher_classification(40, seed=4, n_inputs=SIZES[0], n_hidden=7, n_classes=SIZES[-1])
    held_out = teacher_classification(25, seed=5, n_inputs=SIZES[0], n_hidden=7, n_classes=SIZES[-1])
    net = init_network(SIZES, 3, seed=7, activation="tanh")
    kwargs = dict(rule="bp", steps=8, lr=0.1, probe="dfa", feedback=draw_feedback("dfa", SIZES, 3, seed=7),
                  observe_on=held_out, record_every=2)
    one, split = train(net, data, threads=1, **kwargs), train(net, data, threads=2, **kwargs)
    assert {"accuracy", "signal_angle", "weight_alignment"} <= set(split.metrics)
    _assert_same_run(one, split)


def test_default_threads_split_only_a_step_with_enough_work(monkeypatch):
    monkeypatch.setattr(stepper_module, "cpu_count", lambda: 4)
    monkeypatch.setattr(stepper_module, "blas_threads", lambda: 4)
    big = (32, 32, 32, 32)  # E = 256, batch 16: 67 MFLOP per step of FA
    assert member_threads(np, "fa", big, 256, 16) == 4
    assert member_threads(np, "fa", big, 1024, 16) == 4  # at most one thread per CPU
    assert member_threads(np, "fa", big, 128, 16) == 2  # 34 MFLOP: 16 or more per thread
    assert member_threads(np, "fa", big, 64, 16) == 1  # 17 MFLOP: the hand-off would cost more than it saves
    assert member_threads(np, "fa", (8, 4096, 8), 1, 4096) == 1  # one member cannot be split
    assert member_threads(np, "cdni", big, 1024, 16) == 1  # trained modules run on one thread
    import array_api_strict

    assert member_threads(array_api_strict, "fa", big, 1024, 16) == 1  # numpy only
    monkeypatch.setattr(stepper_module, "blas_threads", lambda: 1)  # a worker told to keep to one thread
    assert member_threads(np, "fa", big, 1024, 16) == 1
    monkeypatch.setattr(stepper_module, "blas_threads", lambda: 4)
    monkeypatch.setattr(stepper_module, "cpu_count", lambda: 1)
    assert member_threads(np, "fa", big, 1024, 16) == 1


def test_blas_threads_follow_a_limit_in_effect():
    from threadpoolctl import threadpool_limits

    from sim.backend import blas_threads

    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads() == 1
    assert blas_threads() >= 1


def test_member_threads_cover_every_member_once_and_raise_what_a_thread_raised():
    members = MemberThreads(10, 3)
    assert [(p.start, p.stop) for p in members.parts] == [(0, 3), (3, 7), (7, 10)]
    assert MemberThreads(2, 8).threads == 2
    with pytest.raises(RuntimeError, match="must be open"):
        members.run(lambda part: None)
    seen = []

    def work(part):
        seen.append((part.start, part.stop))
        if part.start == 7:
            raise ValueError("member 7 failed")

    with members, pytest.raises(ValueError, match="member 7 failed"):
        members.run(work)
    assert sorted(seen) == [(0, 3), (3, 7), (7, 10)]


# --- error paths ----------------------------------------------------------------------------------

@pytest.fixture
def setting():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 10, seed=0)
    return init_network(SIZES, 2, seed=0), data


def test_invalid_train_settings(setting):
    net, data = setting
    for steps in (-1, 1.5, True, np.nan, np.inf, "3"):
        with pytest.raises(ValueError, match="steps must be a non-negative integer"):
            train(net, data, rule="bp", steps=steps, lr=0.1)
    for lr in (-0.1, np.nan, np.inf, [0.1], [0.1, 0.1, 0.1], [[0.1, 0.1]]):
        with pytest.raises(ValueError, match=r"lr must be a non-negative finite number or one per member \(2\)"):
            train(net, data, rule="bp", steps=1, lr=lr)
    for momentum in (1.0, -0.1, np.nan, "0.5"):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
            train(net, data, rule="bp", steps=1, lr=0.1, momentum=momentum)
    for batch_size in (0, -2, 1.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
            train(net, data, rule="bp", steps=1, lr=0.1, batch_size=batch_size)
    for record_every in (0, 2.5, np.inf):
        with pytest.raises(ValueError, match="record_every must be a positive integer"):
            train(net, data, rule="bp", steps=1, lr=0.1, record_every=record_every)
    for threads in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer or None"):
            train(net, data, rule="bp", steps=1, lr=0.1, threads=threads)
    with pytest.raises(ValueError, match="trained modules runs on one thread"):
        train(net, data, rule="sg", steps=1, lr=0.1, threads=2)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        train(net, data, rule="bp", steps=1, lr=0.1, dtype="float16")
    for seed in (-1, 0.5, "1"):
        for batch_size in (None, 4):
            with pytest.raises(ValueError, match="seed must be a non-negative integer"):
                train(net, data, rule="bp", steps=1, lr=0.1, batch_size=batch_size, seed=seed)


def test_invalid_names_and_shapes(setting):
    net, data = setting
    with pytest.raises(ValueError, match="unknown rule 'sgd'"):
        train(net, data, rule="sgd", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        train(net, data, rule="bp", steps=1, lr=0.1, loss="hinge")
    with pytest.raises(ValueError, match="rule 'fa' needs feedback matrices"):
        train(net, data, rule="fa", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="rule 'dfa' needs 2 feedback matrices"):
        train(net, data, rule="dfa", steps=1, lr=0.1, feedback=draw_feedback("dfa", SIZES, 2, seed=0)[:1])
    wrong_width = linear_teacher(SIZES[0] + 1, SIZES[-1], [1.0], 10, seed=0)
    with pytest.raises(ValueError, match=f"x has {SIZES[0] + 1} features, the network expects {SIZES[0]}"):
        train(net, wrong_width, rule="bp", steps=1, lr=0.1)
    with pytest.raises(ValueError, match=f"x has {SIZES[0] + 1} features"):
        train(net, data, rule="bp", steps=1, lr=0.1, observe_on=wrong_width)
    with pytest.raises(ValueError, match=f"x has {SIZES[0] + 1} features"):
        train(net, wrong_width, rule="bp", steps=1, lr=0.1, observe_on=data)


@pytest.mark.parametrize("observe_elsewhere", [False, True], ids=["observe-on-train", "observe-on-other"])
@pytest.mark.parametrize("where", ["x", "y"])
def test_non_finite_training_data(setting, where, observe_elsewhere):
    net, data = setting
    x, y = data.x.copy(), data.y.copy()
    (x if where == "x" else y)[7, 1] = np.nan  # not the first sample
    broken = Dataset(x, y, data.kind)
    observe_on = data if observe_elsewhere else None
    with pytest.raises(ValueError, match=f"{where} contains non-finite"):
        train(net, broken, rule="bp", steps=1, lr=0.1, observe_on=observe_on)


def test_non_finite_weights_and_feedback(setting):
    net, data = setting
    feedback = draw_feedback("fa", SIZES, 2, seed=0)
    feedback[0] = feedback[0].copy()
    feedback[0][1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="feedback matrix 1 contains non-finite"):
        train(net, data, rule="fa", steps=1, lr=0.1, feedback=feedback)
    weights = [w.copy() for w in net.weights]
    weights[2][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="W_3 contains non-finite"):
        train(replace(net, weights=tuple(weights)), data, rule="bp", steps=1, lr=0.1)


# --- the Gauss-Newton reference angle (gauss_newton=True) -------------------------------------------

def _angle_atol(n):
    """Degrees of error of an angle near 0 whose cosine is off by ~n eps (arccos(1 - d) ~ sqrt(2 d))."""
    return np.degrees(np.sqrt(2 * 16 * n * EPS))


@pytest.mark.parametrize("sizes", [(6, 5, 3), (6, 4, 3, 5)], ids=["one-hidden", "two-hidden"])
def test_fa_with_pseudo_inverse_feedback_gives_gauss_newton_signals(sizes):
    """Lillicrap et al. 2016 (supplementary): FA with B = W^+ in a linear network makes Gauss-Newton updates.

    With two hidden layers the product of pseudo-inverses is the pseudo-inverse of the product
    when W_2 has full row rank and W_3 full column rank (sizes 4 -> 3 -> 5), so B_l = W_l^+ is
    Gauss-Newton for every hidden layer there, while BP's W^T is not.
    """
    n_members, n_samples = 3, 40
    data = linear_teacher(sizes[0], sizes[-1], [1.5, 1.0, 0.5], n_samples, seed=8)
    net = init_network(sizes, n_members, seed=8)
    pinv_feedback = [np.linalg.pinv(w) for w in net.weights[1:]]  # B_{l+1} = W_{l+1}^+, (E, n_l, n_{l+1})
    fa = train(net, data, rule="fa", steps=0, lr=0.05, feedback=pinv_feedback, gauss_newton=True)
    got = fa.metric("gn_signal_angle")
    assert got.shape == (1, n_members, len(sizes) - 2)
    np.testing.assert_allclose(got, 0.0, atol=_angle_atol(sum(sizes) * n_samples))
    # BP's signal W^T e is not the Gauss-Newton one for these non-orthogonal weights; FA's is not BP's
    bp = train(net, data, rule="bp", steps=0, lr=0.05, gauss_newton=True)
    assert np.all(bp.metric("gn_signal_angle") > 1.0)
    np.testing.assert_allclose(fa.metric("signal_angle"), bp.metric("gn_signal_angle"),
                               rtol=0, atol=_angle_atol(sum(sizes) * n_samples))


def test_gauss_newton_angle_is_opt_in_and_recorded_for_nonlinear_networks():
    data = teacher_classification(30, seed=9, n_inputs=SIZES[0], n_hidden=5, n_classes=SIZES[-1])
    net = init_network(SIZES, 2, seed=9, activation="tanh")
    feedback = draw_feedback("fa", SIZES, 2, seed=9)
    plain = train(net, data, rule="fa", steps=4, lr=0.1, feedback=feedback, record_every=2)
    assert "gn_signal_angle" not in plain.metrics
    with_gn = train(net, data, rule="fa", steps=4, lr=0.1, feedback=feedback, record_every=2, gauss_newton=True)
    got = with_gn.metric("gn_signal_angle")
    assert got.shape == (len(with_gn.steps), 2, len(SIZES) - 2)
    assert np.all((got >= 0) & (got <= 180))
    # the other metrics do not change
    for name, values in plain.metrics.items():
        np.testing.assert_array_equal(with_gn.metrics[name], values)
    with pytest.raises(ValueError, match="gauss_newton must be True or False"):
        train(net, data, rule="fa", steps=1, lr=0.1, feedback=feedback, gauss_newton="yes")
