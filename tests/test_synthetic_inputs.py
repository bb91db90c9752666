"""Synthetic inputs and forward-unlocked training of a split network (sim.synthetic_inputs)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import synthetic_inputs as si
from sim.network import init_network

EPS = float(np.finfo(np.float64).eps)
N0, NK, NH, NOUT, B, E = 5, 4, 6, 3, 9, 2


def instance(seed: int):
    rng = np.random.default_rng(seed)
    lower = init_network([N0, NK], E, seed=seed).weights
    upper = init_network([NK, NH, NOUT], E, seed=seed + 1, activation="tanh").weights
    x, y = rng.normal(size=(B, N0)), rng.normal(size=(B, NOUT))
    module = si.init_synthetic_inputs(N0, NK, E, lr=0.1)
    module = replace(module, weight=rng.normal(0, 0.5, size=module.weight.shape),
                     bias=rng.normal(0, 0.5, size=module.bias.shape))
    return list(lower), list(upper), x, y, module


def _fd(f, arrays, index, step=EPS ** (1 / 3)):
    """Central differences of ``f(arrays) -> (E,)`` with respect to ``arrays[index]``, member by member."""
    a = arrays[index]
    out = np.zeros_like(a)
    for pos in np.ndindex(a.shape[1:]):
        values = []
        for sign in (1, -1):
            moved = list(arrays)
            moved[index] = a.copy()
            moved[index][(slice(None), *pos)] += sign * step
            values.append(f(moved))
        out[(slice(None), *pos)] = (values[0] - values[1]) / (2 * step)
    return out


def _assert_regression_gradient(seed: int):
    _, _, x, _, module = instance(seed)
    h = np.random.default_rng(seed + 7).normal(size=(E, B, NK))
    d_weight, d_bias = si.regression_gradients(module, x, h)

    def loss(params):
        return si.regression_loss(replace(module, weight=params[0], bias=params[1]), x, h)

    params = [module.weight, module.bias]
    scale = float(np.max(np.abs(d_weight))) + 1.0
    np.testing.assert_allclose(d_weight, _fd(loss, params, 0), rtol=0, atol=1e-7 * scale)
    np.testing.assert_allclose(d_bias, _fd(loss, params, 1), rtol=0, atol=1e-7 * scale)


def test_regression_gradient_equals_finite_differences():
    _assert_regression_gradient(0)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_regression_gradient_equals_finite_differences_on_drawn_instances(seed):
    _assert_regression_gradient(seed)


def test_regression_loss_and_prediction_by_hand():
    _, _, x, _, module = instance(3)
    h = np.random.default_rng(3).normal(size=(E, B, NK))
    pred = np.stack([x @ module.weight[m].T + module.bias[m] for m in range(E)])
    np.testing.assert_allclose(si.predict_input(module, x), pred, rtol=16 * EPS, atol=16 * EPS)
    expected = np.sum((pred - h) ** 2, axis=(1, 2)) / (2 * B)
    np.testing.assert_allclose(si.regression_loss(module, x, h), expected, rtol=64 * EPS)
    np.testing.assert_allclose(si.relative_error(module, x, h), 2 * B * expected / np.sum(h * h, axis=(1, 2)),
                               rtol=64 * EPS)


def test_split_bp_step_is_the_gradient_of_the_whole_network():
    lower, upper, x, y, _ = instance(1)
    step = si.split_bp_step(lower, upper, x, y)
    weights = lower + upper

    def loss(ws):
        return si.split_loss(ws[:1], ws[1:], x, y)

    for i, grad in enumerate(step.lower + step.upper):
        np.testing.assert_allclose(grad, _fd(loss, weights, i), rtol=0, atol=1e-7 * (np.max(np.abs(grad)) + 1))
    np.testing.assert_allclose(step.loss, loss(weights), rtol=16 * EPS)


def test_a_perfect_module_makes_the_unlocked_step_bp_and_stays_put():
    lower, upper, x, y, module = instance(2)
    perfect = replace(module, weight=lower[0].copy(), bias=np.zeros_like(module.bias))  # I(x) = W_1 x = h exactly
    unlocked = si.forward_unlocked_step(lower, upper, perfect, x, y)
    bp = si.split_bp_step(lower, upper, x, y)
    for a, b in zip(unlocked.lower + unlocked.upper, bp.lower + bp.upper):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(unlocked.input_error, 0.0, atol=EPS)
    np.testing.assert_allclose(unlocked.module.weight, perfect.weight, rtol=0, atol=16 * EPS)


def test_the_upper_part_does_not_read_the_lower_part():
    """Forward unlocking: the upper part's updates depend on the module and the data only."""
    lower, upper, x, y, module = instance(4)
    other = [w + 1.0 for w in lower]
    a = si.forward_unlocked_step(lower, upper, module, x, y)
    b = si.forward_unlocked_step(other, upper, module, x, y)
    for u, v in zip(a.upper, b.upper):
        np.testing.assert_array_equal(u, v)
    # a one-layer linear lower part's update mean_b g_b x_b^T needs only g (from I(x)) and x; the module's
    # regression target h is what the lower part changes
    np.testing.assert_array_equal(a.lower[0], b.lower[0])
    assert np.max(np.abs(a.module.weight - b.module.weight)) > 1e-3


def test_the_module_learns_a_fixed_linear_map():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, N0))
    A = rng.normal(size=(NK, N0))
    h = np.broadcast_to((x @ A.T + 0.5)[None], (E, 64, NK))
    module = si.init_synthetic_inputs(N0, NK, E, lr=[0.3, 0.0])
    np.testing.assert_allclose(si.relative_error(module, x, h), 1.0, rtol=16 * EPS)  # zero init: error exactly 1
    for _ in range(300):
        module = si.update_synthetic_inputs(module, x, h)
    err = si.relative_error(module, x, h)
    assert err[0] < 1e-10
    np.testing.assert_allclose(err[1], 1.0, rtol=16 * EPS)  # lr 0: never trained
    np.testing.assert_allclose(module.weight[0], A, rtol=0, atol=1e-5)


def test_train_split_curves_and_bp_reference():
    lower, upper, x, y, _ = instance(6)
    module = si.init_synthetic_inputs(N0, NK, E, lr=0.3)
    run = si.train_split(lower, upper, x, y, steps=5, lr=0.1, module=module)
    assert run.loss.shape == (6, E) and run.input_error.shape == (6, E)
    np.testing.assert_allclose(run.loss[0], si.split_loss(lower, upper, x, y), rtol=16 * EPS)
    bp = si.train_split(lower, upper, x, y, steps=5, lr=0.1)
    assert bp.input_error is None and bp.module is None and np.all(bp.loss[-1] < bp.loss[0])


def test_bad_input_raises_value_error():
    lower, upper, x, y, module = instance(0)
    with pytest.raises(ValueError, match="n_outputs must be a positive integer"):
        si.init_synthetic_inputs(3, 0)
    for lr in (-1.0, np.nan, [0.1, 0.2, 0.3], "fast"):
        with pytest.raises(ValueError, match=r"lr must be a non-negative finite number or one per member \(2\)"):
            si.init_synthetic_inputs(3, 2, 2, lr=lr)
    with pytest.raises(ValueError, match="lower part's output width 4 must be the upper part's input width 5"):
        si.split_bp_step(lower, [np.zeros((E, NH, 5)), upper[1]], x, y)
    with pytest.raises(ValueError, match="module must map 5 inputs to 4 outputs"):
        si.forward_unlocked_step(lower, upper, si.init_synthetic_inputs(N0, 3, E), x, y)
    with pytest.raises(ValueError, match=r"x must be \(B, 5\) and y \(B, 3\)"):
        si.split_bp_step(lower, upper, x[:, :2], y)
    with pytest.raises(ValueError, match="unknown activation"):
        si.split_bp_step(lower, upper, x, y, upper_activation="sigmoid")
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        si.train_split(lower, upper, x, y, steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="lr must be a non-negative finite number"):
        si.train_split(lower, upper, x, y, steps=1, lr=np.inf)


def test_core_runs_on_array_api_strict():
    import array_api_strict as xps

    from sim.backend import to_host

    lower, upper, x, y, module = instance(8)
    strict = lambda arrays: [xps.asarray(a) for a in arrays]  # noqa: E731
    s_module = replace(si.init_synthetic_inputs(N0, NK, E, lr=0.1, xp=xps), weight=xps.asarray(module.weight),
                       bias=xps.asarray(module.bias))
    got = si.forward_unlocked_step(strict(lower), strict(upper), s_module, xps.asarray(x), xps.asarray(y))
    want = si.forward_unlocked_step(lower, upper, module, x, y)
    tol = 64 * EPS * (N0 + NK + NH + NOUT)
    for a, b in zip(got.lower + got.upper, want.lower + want.upper):
        np.testing.assert_allclose(to_host(a), b, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_host(got.module.weight), want.module.weight, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_host(got.input_error), want.input_error, rtol=tol)
