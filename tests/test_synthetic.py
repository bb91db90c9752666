"""Synthetic gradients (sim.synthetic): the rules sg and cdni, module training, the unified view, the trainer hook."""

from __future__ import annotations

from dataclasses import replace

import array_api_strict as xps
import numpy as np
import pytest

from sim import synthetic as sg
from sim.backend import to_host
from sim.data import linear_teacher, teacher_classification
from sim.network import init_network
from sim.nn import ACTIVATIONS, LOSSES
from sim.rules import Locking, compute_updates, draw_feedback, get_rule, rule_updates
from sim.train import train

EPS = float(np.finfo(np.float64).eps)
SIZES = (4, 6, 5, 3)
#: The unified-view equalities are required to this accuracy (they hold bit for bit).
UNIFIED_TOL = 1e-12


def instance(seed, sizes=SIZES, n_members=2, batch=5, *, loss="mse", bias=False, scale=1.0):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, scale / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0.0, 0.5, size=(n_members, n)) for n in sizes[1:]] if bias else None
    x = rng.normal(size=(batch, sizes[0]))
    y = rng.normal(size=(batch, sizes[-1])) if loss == "mse" else np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    return weights, biases, x, y


def assert_same(got, want, tol):
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b)))))


# --- the unified view: fixed modules are DFA, FA and Kickback -------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_error_linear_module_is_dfa(activation, loss):
    weights, biases, x, y = instance(1, loss=loss, bias=True)
    feedback = draw_feedback("dfa", SIZES, 2, seed=1)
    dfa = rule_updates("dfa", weights, x, y, activation=activation, loss=loss, feedback=feedback, biases=biases)
    own = rule_updates("sg", weights, x, y, activation=activation, loss=loss, biases=biases,
                       modules=sg.dfa_modules(feedback))
    for a, b in zip(own.weights + own.biases, dfa.weights + dfa.biases):
        np.testing.assert_allclose(a, b, rtol=UNIFIED_TOL, atol=UNIFIED_TOL)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_module_bootstrapped_through_fixed_feedback_is_fa(activation, loss):
    weights, _, x, y = instance(2, loss=loss)
    feedback = draw_feedback("fa", SIZES, 2, seed=2)
    want = compute_updates("fa", weights, x, y, activation=activation, loss=loss, feedback=feedback)
    got = compute_updates("sg", weights, x, y, activation=activation, loss=loss, modules=sg.fa_modules(feedback))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=UNIFIED_TOL, atol=UNIFIED_TOL)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kickback_is_dfa_with_all_ones_feedback(activation, loss):
    weights, _, x, y = instance(3, loss=loss)
    ones = sg.kickback_feedback(SIZES, 2)
    assert all(np.all(b == 1.0) and b.shape == (2, n, SIZES[-1]) for b, n in zip(ones, SIZES[1:-1]))
    want = compute_updates("dfa", weights, x, y, activation=activation, loss=loss, feedback=ones)
    got = compute_updates("sg", weights, x, y, activation=activation, loss=loss,
                          modules=sg.kickback_modules(SIZES, 2))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=UNIFIED_TOL, atol=UNIFIED_TOL)
    # every hidden unit of a layer receives the same (summed) error, times its own f'
    if activation == "linear":
        upd = rule_updates("sg", weights, x, y, loss=loss, modules=sg.kickback_modules(SIZES, 2))
        np.testing.assert_allclose(upd.signals[0], np.broadcast_to(upd.signals[-1].sum(-1, keepdims=True),
                                                                   upd.signals[0].shape), rtol=0, atol=16 * EPS)


def test_shared_feedback_matrices_are_repeated_over_members():
    weights, _, x, y = instance(4, n_members=3)
    feedback = [b[0] for b in draw_feedback("dfa", SIZES, 1, seed=4)]
    got = compute_updates("sg", weights, x, y, modules=sg.dfa_modules(feedback, n_members=3))
    want = compute_updates("dfa", weights, x, y, feedback=feedback)
    assert_same(got, want, UNIFIED_TOL)


def test_locking():
    assert get_rule("sg").locking == Locking(forward=True, update=False, backward=False)
    assert get_rule("cdni").locking == Locking(forward=True, update=False, backward=False)
    assert sg.locking_of(sg.init_modules(SIZES, 1)) == get_rule("sg").locking
    assert sg.locking_of(sg.init_modules(SIZES, 1, inputs=("hidden", "label"))) == get_rule("cdni").locking
    assert sg.locking_of(sg.dfa_modules(draw_feedback("dfa", SIZES, 1, seed=0))) == get_rule("dfa").locking
    assert sg.locking_of(sg.fa_modules(draw_feedback("fa", SIZES, 1, seed=0))) == get_rule("fa").locking


# --- perfect and zero-initialised modules (Jaderberg et al. 2016) ----------------------------------------

@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("sizes, activation", [((4, 6, 5, 3), "linear"), ((3, 5, 4, 6, 2), "linear"),
                                               ((4, 7, 3), "tanh"), ((4, 7, 3), "relu")])
def test_perfect_modules_give_bp(sizes, activation, bias):
    weights, biases, x, y = instance(5, sizes, bias=bias)
    modules = sg.perfect_modules(weights, activation, biases=biases)
    own = rule_updates("cdni", weights, x, y, activation=activation, biases=biases, modules=modules)
    bp = rule_updates("bp", weights, x, y, activation=activation, biases=biases)
    tol = 64 * EPS * sum(sizes)
    assert_same(own.weights + (own.biases or []), bp.weights + (bp.biases or []), tol)
    # and the module's prediction is the true gradient itself
    ctx = _context(own, weights, y, modules)
    assert_same(sg.true_gradients(weights, own, activation), [modules.signal(i, ctx) for i in range(len(sizes) - 2)],
                tol)


def _context(upd, weights, y, modules):
    from sim.rules import SignalContext

    return SignalContext(upd.signals, weights, None, upd.forward, y, modules)


@pytest.mark.parametrize("kind", sg.KINDS)
@pytest.mark.parametrize("rule, inputs", [("sg", ("hidden",)), ("cdni", ("hidden", "label"))])
def test_zero_initialised_modules_give_a_zero_first_update(rule, inputs, kind):
    weights, biases, x, y = instance(6, bias=True)
    modules = sg.init_modules(SIZES, 2, seed=6, kind=kind, inputs=inputs)
    own = rule_updates(rule, weights, x, y, activation="tanh", biases=biases, modules=modules)
    bp = rule_updates("bp", weights, x, y, activation="tanh", biases=biases)
    for dw, db in zip(own.weights[:-1], own.biases[:-1]):
        assert np.all(dw == 0.0) and np.all(db == 0.0)
    np.testing.assert_array_equal(own.weights[-1], bp.weights[-1])
    if kind == "mlp":  # the first layer of an MLP module is random, its output layer zero
        first = modules.params[0][f"in_{inputs[0]}"]
        assert np.all(np.std(first, axis=(1, 2)) > 0.1)
        assert np.all(modules.params[0]["out"] == 0.0)


def test_perfect_modules_errors():
    weights, _, _, _ = instance(0)
    with pytest.raises(ValueError, match="only for the mse loss"):
        sg.perfect_modules(weights, "linear", loss="ce")
    with pytest.raises(ValueError, match="need a linear network above every hidden layer"):
        sg.perfect_modules(weights, "tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        sg.perfect_modules(weights, "gelu")


# --- module training --------------------------------------------------------------------------------

def _module_loss(modules, upd, weights, y, activation, i):
    targets = sg.module_targets(modules, upd, weights=weights, activation=activation)
    s = modules.signal(i, _context(upd, weights, y, modules))
    d = s - targets[i]
    return np.sum(d * d, axis=(-2, -1)) / (2 * d.shape[-2])


@pytest.mark.parametrize("target", ["true", "bootstrap"])
@pytest.mark.parametrize("kind, inputs", [("linear", ("hidden",)), ("linear", ("hidden", "label", "error", "above")),
                                          ("mlp", ("hidden", "label"))])
def test_module_gradients_equal_finite_differences(kind, inputs, target):
    weights, _, x, y = instance(7)
    modules = sg.init_modules(SIZES, 2, seed=7, kind=kind, inputs=inputs, target=target, hidden_units=5)
    rng = np.random.default_rng(7)  # random (non-zero) parameters
    modules = replace(modules, params=tuple({k: rng.normal(0, 0.3, size=v.shape) for k, v in p.items()}
                                             for p in modules.params))
    upd = rule_updates("sg", weights, x, y, activation="tanh", modules=modules)
    grads, losses = sg.module_gradients(modules, upd, weights=weights, targets=y, activation="tanh")
    step = EPS ** (1 / 3)
    for i, layer in enumerate(grads):
        np.testing.assert_allclose(losses[:, i], _module_loss(modules, upd, weights, y, "tanh", i), rtol=1e-13)
        for name, g in layer.items():
            fd = np.zeros_like(g)
            for pos in np.ndindex(g.shape[1:]):
                values = []
                for sign in (1, -1):
                    p = [dict(q) for q in modules.params]
                    p[i][name] = p[i][name].copy()
                    p[i][name][(slice(None), *pos)] += sign * step
                    # the signals the targets are built from stay those of the unperturbed modules
                    values.append(_module_loss(replace(modules, params=tuple(p)), upd, weights, y, "tanh", i))
                fd[(slice(None), *pos)] = (values[0] - values[1]) / (2 * step)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=f"module {i}, {name}")


def test_targets():
    weights, _, x, y = instance(8, loss="ce")
    modules = sg.init_modules(SIZES, 2, inputs=("hidden", "label"))
    own = rule_updates("cdni", weights, x, y, activation="relu", loss="ce", modules=modules)
    bp = rule_updates("bp", weights, x, y, activation="relu", loss="ce")
    true = sg.true_gradients(weights, own, "relu")
    boot = sg.bootstrap_targets(weights, own.signals)
    tol = 16 * EPS * sum(SIZES)
    for i, t in enumerate(true):  # the true target is BP's hidden signal before f'
        assert_same([t * (bp.forward.preactivations[i] > 0)], [bp.signals[i]], tol)
    # only the top hidden layer's bootstrapped target sees the loss: it is the true gradient there
    assert_same([boot[-1]], [true[-1]], tol)
    # below, it is built from the module's own (here zero) signal
    assert np.all(boot[0] == 0.0) and np.linalg.norm(true[0]) > 0


def test_update_schedule_mask_and_fixed_modules():
    weights, _, x, y = instance(9)
    modules = sg.init_modules(SIZES, 2, inputs=("hidden", "label"), every=3, lr=[0.1, 0.2])
    upd = rule_updates("cdni", weights, x, y, modules=modules)
    kwargs = dict(weights=weights, targets=y, activation="linear")
    assert sg.update_modules(modules, upd, step=1, **kwargs) is modules
    moved = sg.update_modules(modules, upd, step=3, **kwargs)
    grads, _ = sg.module_gradients(modules, upd, **kwargs)
    for params, g in zip(moved.params, grads):
        for name in params:
            np.testing.assert_allclose(params[name], -np.array([0.1, 0.2]).reshape((2,) + (1,) * (g[name].ndim - 1))
                                       * g[name], rtol=1e-15, atol=0)
    frozen = sg.update_modules(modules, upd, step=0, alive=np.array([True, False]), **kwargs)
    assert np.any(frozen.params[0]["hidden"][0] != 0) and np.all(frozen.params[0]["hidden"][1] == 0)
    fixed = sg.dfa_modules(draw_feedback("dfa", SIZES, 2, seed=0))
    assert sg.update_modules(fixed, upd, step=0, **kwargs) is fixed


def test_cdni_module_learns_the_true_gradient_of_a_linear_network():
    # with the weights fixed, full-batch regression drives a cDNI module to the exact gradient (linear net, mse)
    weights, _, x, y = instance(10, sizes=(3, 4, 2), n_members=1, batch=40)
    modules = sg.init_modules((3, 4, 2), 1, inputs=("hidden", "label"), lr=0.3)
    for step in range(3000):
        upd = rule_updates("cdni", weights, x, y, modules=modules, validate=False)
        modules = sg.update_modules(modules, upd, weights=weights, targets=y, activation="linear", step=step)
    bp = compute_updates("bp", weights, x, y)
    got = compute_updates("cdni", weights, x, y, modules=modules)
    assert_same(got, bp, 1e-8)


# --- the trainer ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["sg", "cdni"])
def test_trainer_records_module_metrics_and_returns_modules(rule):
    data = teacher_classification(40, seed=1, n_inputs=SIZES[0], n_hidden=6, n_classes=SIZES[-1])
    net = init_network(SIZES, 2, seed=1, activation="tanh")
    result = train(net, data, rule=rule, steps=6, lr=0.1, record_every=2,
                   module_settings=dict(lr=0.05, kind="mlp", target="bootstrap"))
    n_rec = len(result.steps)
    for name in ("sg_error", "sg_angle", "signal_angle"):
        assert result.metric(name).shape == (n_rec, 2, len(SIZES) - 2)
    # zero-initialised modules: the synthetic gradient is 0, its relative error 1 and the angle undefined
    np.testing.assert_array_equal(result.metric("sg_error")[0], 1.0)
    assert np.all(np.isnan(result.metric("sg_angle")[0]))
    assert np.all(result.metric("sg_error")[-1] < 1.0)
    assert isinstance(result.modules, sg.SyntheticGradients) and result.modules.kind == "mlp"
    assert result.modules.target == "bootstrap"
    # the modules the trainer creates are those of init_modules with the run's seed
    again = train(net, data, rule=rule, steps=6, lr=0.1, record_every=2, seed=0,
                  modules=sg.init_modules(SIZES, 2, seed=0, lr=0.05, kind="mlp", target="bootstrap",
                                          inputs=result.modules.inputs))
    assert_same(again.network.weights, result.network.weights, 0.0)
    assert ("label" in result.modules.inputs) == (rule == "cdni")
    # the first step left the hidden layers where they were (zero-initialised modules)
    one = train(net, data, rule=rule, steps=1, lr=0.1, module_settings=dict(lr=0.05))
    for a, b in zip(one.network.weights[:-1], net.weights[:-1]):
        np.testing.assert_array_equal(a, b)


def test_trainer_steps_equal_a_hand_written_loop():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0], 16, seed=2, noise=0.1)
    net = init_network(SIZES, 2, seed=2, scale=0.7, activation="tanh")
    steps, lr = 12, 0.05
    result = train(net, data, rule="cdni", steps=steps, lr=lr, module_settings=dict(lr=0.1, target="bootstrap"))
    weights = list(net.weights)
    modules = sg.init_modules(SIZES, 2, seed=0, inputs=("hidden", "label"), lr=0.1, target="bootstrap")
    for step in range(steps):
        upd = rule_updates("cdni", weights, data.x, data.y, activation="tanh", modules=modules)
        modules = sg.update_modules(modules, upd, weights=weights, targets=data.y, activation="tanh", step=step)
        weights = [w - lr * dw for w, dw in zip(weights, upd.weights)]
    tol = 16 * EPS * (sum(SIZES) + 16) * steps
    assert_same(result.network.weights, weights, tol)
    for got, want in zip(result.modules.params, modules.params):
        assert_same([got[k] for k in sorted(got)], [want[k] for k in sorted(want)], tol)


def test_ensemble_of_sg_runs_equals_separate_members():
    data = linear_teacher(SIZES[0], SIZES[-1], [2.0, 1.0, 0.5], 24, seed=3, noise=0.1)
    net = init_network(SIZES, 3, seed=3, scale=[0.5, 1.0, 1.5], activation="relu")
    kwargs = dict(rule="sg", steps=10, batch_size=8, seed=1, record_every=5)
    modules = sg.init_modules(SIZES, 3, seed=1, lr=[0.1, 0.2, 0.3], kind="mlp")
    full = train(net, data, lr=[0.02, 0.05, 0.1], modules=modules, **kwargs)
    tol = 16 * EPS * (sum(SIZES) + 8) * 10
    for m in range(3):
        one = train(net.member(m), data, lr=[[0.02, 0.05, 0.1][m]], modules=modules.member(m), **kwargs)
        assert_same([w[0] for w in one.network.weights], [w[m] for w in full.network.weights], tol)
        np.testing.assert_allclose(one.metric("sg_error")[:, 0], full.metric("sg_error")[:, m], rtol=tol, atol=tol)


def test_cdni_trains_a_deep_linear_network_close_to_bp_and_dni_stalls():
    data = linear_teacher(6, 4, [2.0, 1.5, 1.0], 64, seed=4)
    net = init_network((6, 8, 8, 4), 2, seed=4, scale=0.5)
    kwargs = dict(steps=600, lr=0.05, record_every=600)
    bp = train(net, data, rule="bp", **kwargs).metric("loss")
    cdni = train(net, data, rule="cdni", module_settings=dict(lr=0.05), **kwargs).metric("loss")
    dni = train(net, data, rule="sg", module_settings=dict(lr=0.05), **kwargs).metric("loss")
    assert np.all(bp[-1] < 1e-3 * bp[0])
    assert np.all(cdni[-1] < 1e-2 * cdni[0])
    assert np.all(dni[-1] > 10 * cdni[-1])


def test_train_fixed_readout_is_linear_regression_through_a_cdni_module():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 3))
    x -= x.mean(axis=0)
    y = x @ rng.normal(size=(3, 1)) + 0.5 * rng.normal(size=(40, 1))
    y -= y.mean(axis=0)
    w_ls = np.linalg.lstsq(x, y, rcond=None)[0].T
    modules = sg.init_modules((3, 1, 1), 2, inputs=("hidden", "label"), lr=0.1)
    w0 = rng.normal(size=(2, 1, 3))
    run = sg.train_fixed_readout([w0, np.ones((2, 1, 1))], x, y, modules, lr=0.1, steps=3000, record_every=1000)
    np.testing.assert_array_equal(run.steps, [0, 1000, 2000, 3000])
    assert run.loss.shape == (4, 2) and run.first_weights.shape == (4, 2, 1, 3)
    np.testing.assert_array_equal(run.first_weights[0], w0)
    np.testing.assert_array_equal(run.weights[-1], np.ones((2, 1, 1)))  # the readout stays fixed
    np.testing.assert_allclose(run.weights[0], np.broadcast_to(w_ls, (2, 1, 3)), rtol=1e-8)
    # (a, b, c) -> (1, -1, 0): the module predicts p - y, the gradient of (p - y)^2 / 2
    np.testing.assert_allclose(run.module["hidden"][-1], 1.0, rtol=1e-8)
    np.testing.assert_allclose(run.module["label"][-1], -1.0, rtol=1e-8)
    np.testing.assert_allclose(run.module["bias"][-1], 0.0, atol=1e-8)


# --- array-api-strict --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sg.KINDS)
def test_core_runs_on_array_api_strict(kind):
    weights, biases, x, y = instance(11, bias=True)
    modules = sg.init_modules(SIZES, 2, seed=11, kind=kind, inputs=("hidden", "label"), lr=0.1)
    rng = np.random.default_rng(11)
    modules = replace(modules, params=tuple({k: rng.normal(0, 0.3, size=v.shape) for k, v in p.items()}
                                             for p in modules.params))
    strict = lambda arrays: [xps.asarray(a) for a in arrays]  # noqa: E731
    s_modules = sg.init_modules(SIZES, 2, seed=11, kind=kind, inputs=("hidden", "label"), lr=0.1, xp=xps)
    s_modules = replace(s_modules, params=tuple({k: xps.asarray(v) for k, v in p.items()} for p in modules.params))
    kwargs = dict(activation="tanh")
    want = rule_updates("cdni", weights, x, y, biases=biases, modules=modules, **kwargs)
    got = rule_updates("cdni", strict(weights), xps.asarray(x), xps.asarray(y), biases=strict(biases),
                       modules=s_modules, **kwargs)
    tol = 64 * EPS * sum(SIZES)
    assert_same([to_host(a) for a in got.weights], want.weights, tol)
    new = sg.update_modules(s_modules, got, weights=strict(weights), targets=xps.asarray(y), step=0, **kwargs)
    ref = sg.update_modules(modules, want, weights=weights, targets=y, step=0, **kwargs)
    for a, b in zip(new.params, ref.params):
        assert_same([to_host(a[k]) for k in sorted(a)], [b[k] for k in sorted(b)], tol)
    own, bp = got, rule_updates("bp", strict(weights), xps.asarray(x), xps.asarray(y), biases=strict(biases), **kwargs)
    obs = sg.observe_modules(s_modules, own, bp, weights=strict(weights), targets=xps.asarray(y))
    assert to_host(obs["sg_error"]).shape == (2, len(SIZES) - 2)
    fb = strict(draw_feedback("dfa", SIZES, 2, seed=1))
    got = compute_updates("sg", strict(weights), xps.asarray(x), xps.asarray(y), modules=sg.dfa_modules(fb))
    want = compute_updates("dfa", weights, x, y, feedback=[to_host(b) for b in fb])
    assert_same([to_host(a) for a in got], want, UNIFIED_TOL)


# --- error paths ------------------------------------------------------------------------------------

def test_missing_and_mismatched_modules():
    weights, _, x, y = instance(12)
    with pytest.raises(ValueError, match="rule 'sg' needs its synthetic-gradient modules: pass modules="):
        compute_updates("sg", weights, x, y)
    with pytest.raises(ValueError, match="rule 'cdni' needs modules of type sim.synthetic.SyntheticGradients"):
        compute_updates("cdni", weights, x, y, modules=[np.ones(3)])
    with pytest.raises(ValueError, match="rule 'cdni' needs modules reading label; these read hidden"):
        compute_updates("cdni", weights, x, y, modules=sg.init_modules(SIZES, 2))
    with pytest.raises(ValueError, match="modules for 1 hidden layers, the network has 2"):
        compute_updates("sg", weights, x, y, modules=sg.init_modules((4, 6, 3), 2))
    with pytest.raises(ValueError, match=r"parameter 'hidden' of module 1 must have shape \(2, 6, 6\)"):
        compute_updates("sg", weights, x, y, modules=sg.init_modules((4, 6, 5, 3), 3))
    bad = sg.init_modules(SIZES, 2)
    params = [dict(p) for p in bad.params]
    params[1]["bias"] = np.full((2, 5), np.nan)
    with pytest.raises(ValueError, match="parameter 'bias' of module 2 contains non-finite"):
        compute_updates("sg", weights, x, y, modules=replace(bad, params=tuple(params)))
    params[1] = {"hidden": params[1]["hidden"]}
    with pytest.raises(ValueError, match="module 2 must hold the parameters"):
        compute_updates("sg", weights, x, y, modules=replace(bad, params=tuple(params)))
    with pytest.raises(ValueError, match="the synthetic-gradient rules need their modules"):
        rule_updates("sg", weights, x, y, validate=False)


def test_bad_module_settings():
    with pytest.raises(ValueError, match="unknown module kind 'rnn'; allowed: linear, mlp"):
        sg.init_modules(SIZES, kind="rnn")
    with pytest.raises(ValueError, match="module inputs must be distinct names among hidden, label, error, above"):
        sg.init_modules(SIZES, inputs=("hidden", "logits"))
    with pytest.raises(ValueError, match="module inputs must be distinct"):
        sg.init_modules(SIZES, inputs=())
    with pytest.raises(ValueError, match="unknown module target 'oracle'; allowed: true, bootstrap, fixed"):
        sg.init_modules(SIZES, target="oracle")
    for lr in (-0.1, np.nan, [0.1, 0.2], "fast"):
        with pytest.raises(ValueError, match=r"module lr must be a non-negative finite number or one per member \(1\)"):
            sg.init_modules(SIZES, lr=lr)
    for every in (0, 1.5, True):
        with pytest.raises(ValueError, match="every must be a positive integer"):
            sg.init_modules(SIZES, every=every)
    with pytest.raises(ValueError, match="hidden_units must be a positive integer"):
        sg.init_modules(SIZES, kind="mlp", hidden_units=0)
    with pytest.raises(ValueError, match="init_scale must be a non-negative finite number"):
        sg.init_modules(SIZES, init_scale=np.inf)
    with pytest.raises(ValueError, match="sizes must list at least two positive layer widths"):
        sg.init_modules((3,))
    with pytest.raises(ValueError, match="unknown module target 'fixed'; allowed: true, bootstrap"):
        weights, _, x, y = instance(0)
        fixed = sg.dfa_modules(draw_feedback("dfa", SIZES, 2, seed=0))
        sg.module_targets(fixed, rule_updates("sg", weights, x, y, modules=fixed), weights=weights,
                          activation="linear")


def test_bad_trainer_settings():
    data = linear_teacher(SIZES[0], SIZES[-1], [1.0], 10, seed=0)
    net = init_network(SIZES, 2, seed=0)
    with pytest.raises(ValueError, match="module_settings apply only when rule 'bp' creates trained modules"):
        train(net, data, rule="bp", steps=1, lr=0.1, module_settings=dict(lr=0.1))
    with pytest.raises(ValueError, match="not together with modules="):
        train(net, data, rule="sg", steps=1, lr=0.1, modules=sg.init_modules(SIZES, 2), module_settings={})
    with pytest.raises(ValueError, match=r"unknown synthetic-gradient settings \['speed'\]"):
        train(net, data, rule="sg", steps=1, lr=0.1, module_settings=dict(speed=2))
    with pytest.raises(ValueError, match="probe 'cdni' needs trained modules, which rule 'bp' does not train"):
        train(net, data, rule="bp", steps=1, lr=0.1, probe="cdni")
    with pytest.raises(ValueError, match="rule 'cdni' needs modules reading label"):
        train(net, data, rule="cdni", steps=1, lr=0.1, modules=sg.init_modules(SIZES, 2))
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        weights, _, x, y = instance(0, sizes=(3, 2, 2))
        sg.train_fixed_readout(weights, x, y, sg.init_modules((3, 2, 2), 2, inputs=("hidden", "label")), steps=-1)
