"""The benchmark (sim.bench): structure of the results, FLOP count, faithfulness of the timed step.

Speed goals are reported by ``bbp bench``, never asserted here.
"""

from __future__ import annotations

import gc
import json
import math

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest

from sim.bench import (
    CASES,
    BenchCase,
    _engine,
    format_bench,
    run_bench,
    step_flops,
    step_matmul_shapes,
)
from sim.data import Dataset
from sim.network import init_network
from sim.backend import column_major, is_column_major
from sim.nn import (
    activate,
    activation_derivative,
    forward,
    loss_and_error,
    loss_value,
    output_error,
    times_derivative,
)
from sim.rules import draw_feedback, get_rule, rule_updates, signal_updates, teaching_signals
from sim.train import Stepper, TrainState, train

TINY = BenchCase(4, 8, 2, 16, ratio_target=0.5, speedup_target=1.0, loop_members=2)
CASE_KEYS = {"E", "width", "depth", "batch", "rule", "steps_per_s", "gflops", "matmul_gflops", "ratio_to_matmul",
             "loop_member_steps_per_s", "ensemble_member_steps_per_s", "speedup_over_loop", "targets",
             "targets_pass", "flops_per_step", "loop_members_timed", "dtype", "threads", "one_thread_steps_per_s",
             "one_thread_speedup_over_loop"}


# --- FLOP count --------------------------------------------------------------------------------------

def test_step_flops_against_a_hand_count():
    # sizes 3 -> 5 -> 4 -> 2, E = 2 members, batch 7; each product (m, k) @ (k, n) costs 2 m k n per member.
    e, b = 2, 7
    forward = 2 * e * b * (3 * 5 + 5 * 4 + 4 * 2)          # h_{l-1} W_l^T, three layers
    updates = 2 * e * b * (5 * 3 + 4 * 5 + 2 * 4)          # (h_{l-1}^T delta_l)^T, three layers
    fa_signals = 2 * e * b * (2 * 4 + 4 * 5)               # delta_3 B_3^T (2 -> 4), delta_2 B_2^T (4 -> 5)
    dfa_signals = 2 * e * b * (2 * 4 + 2 * 5)              # delta_L B_2^T (2 -> 4), delta_L B_1^T (2 -> 5)
    assert forward == updates == 1204
    assert step_flops("fa", (3, 5, 4, 2), e, b) == 1204 + 784 + 1204 == forward + fa_signals + updates
    assert step_flops("bp", (3, 5, 4, 2), e, b) == forward + fa_signals + updates
    assert step_flops("dfa", (3, 5, 4, 2), e, b) == forward + dfa_signals + updates == 2912
    assert step_flops("fa", (3, 2), e, b) == 2 * (2 * e * b * 3 * 2)  # one layer: no hidden signal
    assert len(step_matmul_shapes("fa", (3, 5, 4, 2), e, b)) == 3 + 2 + 3


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_matmul_shapes_are_the_ones_the_engine_multiplies(rule, monkeypatch):
    """Record every matmul of one training step and compare with step_matmul_shapes / step_flops."""
    sizes, n_members, batch = (6, 5, 4, 3), 3, 7
    net = init_network(sizes, n_members, seed=1, activation="tanh")
    feedback = draw_feedback(rule, sizes, n_members, seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    seen = []
    real = xp_numpy.matmul

    def recording(a, b, /, **kwargs):
        out = real(a, b, **kwargs)
        (m, k), n = a.shape[-2:], b.shape[-1]
        members = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        seen.append((members, m, k, n))
        return out

    monkeypatch.setattr(xp_numpy, "matmul", recording)
    stepper = Stepper(TrainState.start([column_major(w) for w in net.weights]), rule=rule, activation="tanh",
                      loss="mse", feedback=feedback, lr=np.full(n_members, 0.1))
    stepper(x, y, 0)
    assert sorted(seen) == sorted(step_matmul_shapes(rule, sizes, n_members, batch))
    assert sum(2 * e * m * k * n for e, m, k, n in seen) == step_flops(rule, sizes, n_members, batch)


# --- the timed step is the trainer's step -------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_the_timed_engine_gives_the_trainers_weights_bit_for_bit(rule, threads):
    sizes, n_members, steps = (5, 6, 4), 3, 6
    rng = np.random.default_rng(2)
    data = Dataset(rng.normal(size=(12, sizes[0])), rng.normal(size=(12, sizes[-1])), kind="regression")
    net = init_network(sizes, n_members, seed=3, activation="relu")
    feedback = draw_feedback(rule, sizes, n_members, seed=3)
    lr = 0.05
    result = train(net, data, rule=rule, steps=steps, lr=lr, feedback=feedback, record_every=steps + 1,
                   progress=False, threads=1)
    case = BenchCase(n_members, 5, 2, 12, rule=rule)  # only rule, activation and loss are read
    work = _engine(case, list(net.weights), feedback, data.x, data.y, xp_numpy, "float64", lr, threads)
    with work.context:
        for _ in range(steps):
            work.run()
    state = work.context.state
    for mine, theirs in zip(state.weights, result.network.weights):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(state.alive, np.ones(n_members, dtype=bool))


# --- the hot path's shortcuts are bit for bit the plain formulas ------------------------------------------

def _bits(a):
    a = np.asarray(a)
    return np.where(np.isnan(a), np.nan, a).tobytes()  # exact bits, any nan counts as one value


SPECIALS = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 1e-310, -1e-310])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_equals_maximum_with_zeros(dtype):
    a = np.concatenate([SPECIALS, np.random.default_rng(0).normal(size=50)]).astype(dtype).reshape(1, 59, 1)
    assert _bits(activate(a, "relu")) == _bits(np.maximum(a, np.zeros_like(a)))


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_loss_and_error_equal_the_separate_functions(loss):
    rng = np.random.default_rng(1)
    y_hat = rng.normal(size=(3, 8, 4)) * 5
    y = np.eye(4)[rng.integers(0, 4, size=(3, 8))] if loss == "ce" else rng.normal(size=(8, 4))
    value, error = loss_and_error(y_hat, y, loss)
    assert _bits(value) == _bits(loss_value(y_hat, y, loss))
    assert _bits(error) == _bits(output_error(y_hat, y, loss))


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_signals_and_updates_equal_the_plain_formulas(rule, activation):
    sizes, n_members, batch = (5, 7, 6, 4), 3, 9
    rng = np.random.default_rng(2)
    net = init_network(sizes, n_members, seed=2, activation=activation, scale=1.5)
    feedback = draw_feedback(rule, sizes, n_members, seed=3)
    x, y = rng.normal(size=(batch, 5)), rng.normal(size=(batch, 4))
    weights = list(net.weights)
    fwd = forward(weights, x, activation)
    error = output_error(fwd.output, y)
    signals = teaching_signals(get_rule(rule), weights, fwd, error, activation, feedback, targets=y)
    plain = [None] * 3
    plain[-1] = error
    for i in (1, 0):
        above = plain[-1] if rule == "dfa" else plain[i + 1]
        matrix = weights[i + 1] if rule == "bp" else np.swapaxes(feedback[i], -1, -2)
        plain[i] = np.matmul(above, matrix) * activation_derivative(fwd.preactivations[i], activation)
    for mine, theirs in zip(signals, plain):
        assert _bits(mine) == _bits(theirs)
    # the updates fold 1/B (and the scale) into the smaller operand: equal up to rounding
    scale = np.array([0.5, 1.0, 3.0])
    tol = 8 * np.finfo(np.float64).eps * batch
    for scaled in (False, True):
        got = signal_updates(signals, fwd.inputs, scale if scaled else None)
        for mine, delta, h in zip(got, plain, fwd.inputs):
            h = np.broadcast_to(h, delta.shape[:1] + h.shape[-2:])
            want = np.matmul(np.swapaxes(delta, -1, -2), h) / batch * (scale[:, None, None] if scaled else 1)
            np.testing.assert_allclose(mine, want, rtol=tol, atol=tol * np.max(np.abs(want)))


@pytest.mark.parametrize("batch", [3, 12], ids=["batch-below-width", "batch-above-width"])
def test_update_scale_multiplies_each_members_updates(batch):
    """Both branches of signal_updates (scaled signal or scaled product) give scale * the plain mean."""
    sizes, n_members = (6, 5, 4), 3
    rng = np.random.default_rng(batch)
    net = init_network(sizes, n_members, seed=batch, activation="tanh", bias=True)
    x, y = rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    kwargs = dict(activation="tanh", biases=list(net.biases))
    plain = rule_updates("bp", list(net.weights), x, y, **kwargs)
    scale = np.array([0.0, 0.25, 2.0])
    scaled = rule_updates("bp", list(net.weights), x, y, scale=scale, **kwargs)
    tol = 8 * np.finfo(np.float64).eps * batch
    for mine, base in zip(scaled.weights + scaled.biases, plain.weights + plain.biases):
        want = base * scale.reshape((-1,) + (1,) * (base.ndim - 1))
        np.testing.assert_allclose(mine, want, rtol=tol, atol=tol * np.max(np.abs(want)))
    for mine, base in zip(scaled.signals, plain.signals):  # the signals are not scaled
        assert _bits(mine) == _bits(base)


@pytest.mark.parametrize("scale", [0.5, np.ones(2), np.ones((3, 1)), np.array([1.0, np.nan, 1.0])],
                         ids=["scalar", "wrong-length", "wrong-shape", "nan"])
def test_update_scale_must_be_one_finite_factor_per_member(scale):
    net = init_network((3, 4, 2), 3, seed=0)
    x, y = np.ones((5, 3)), np.zeros((5, 2))
    with pytest.raises(ValueError, match="scale must be a finite array of shape"):
        rule_updates("bp", list(net.weights), x, y, scale=scale)


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
def test_derivative_from_the_output_is_the_derivative_at_the_preactivation(activation):
    rng = np.random.default_rng(3)
    a = np.concatenate([SPECIALS, rng.normal(size=41) * 3]).reshape(1, 10, 5)
    signal = rng.normal(size=a.shape)
    want = signal * activation_derivative(a, activation)
    with np.errstate(invalid="ignore"):
        got = times_derivative(signal.copy(), activate(a, activation), activation)
    assert _bits(got) == _bits(want)
    if activation != "linear":  # a signal of fewer dimensions broadcasts (linear returns it as is)
        with np.errstate(invalid="ignore"):
            shared = times_derivative(signal[0, 0].copy(), activate(a, activation), activation)
        assert _bits(shared) == _bits(signal[0, 0] * activation_derivative(a, activation))


def test_column_major_keeps_the_values_and_stores_each_matrix_by_columns():
    a = np.random.default_rng(0).normal(size=(3, 4, 5))
    b = column_major(a)
    np.testing.assert_array_equal(b, a)
    assert b.shape == a.shape and not np.shares_memory(a, b)
    assert np.swapaxes(b, -1, -2).flags.c_contiguous
    b[0, 0, 0] = 7.0
    assert a[0, 0, 0] != 7.0
    c = column_major(b)  # already column-major: still a new array (the trainer updates its copies in place)
    assert not np.shares_memory(b, c)
    np.testing.assert_array_equal(c, b)
    assert is_column_major(b) and is_column_major(c) and not is_column_major(a)


@pytest.mark.parametrize("batch", [3, 12], ids=["batch-below-width", "batch-above-width"])
def test_updates_are_stored_like_their_weights(batch):
    """Column-major weights get column-major updates (one read order for the SGD step), others row-major."""
    sizes, n_members = (6, 5, 4), 2
    rng = np.random.default_rng(4)
    net = init_network(sizes, n_members, seed=4, activation="relu")
    x, y = rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    rows = rule_updates("bp", list(net.weights), x, y, activation="relu", scale=np.array([0.5, 2.0]))
    cols = rule_updates("bp", [column_major(w) for w in net.weights], x, y, activation="relu",
                        scale=np.array([0.5, 2.0]))
    tol = 8 * np.finfo(np.float64).eps * batch
    for r, c in zip(rows.weights, cols.weights):
        assert r.flags.c_contiguous and is_column_major(c)
        np.testing.assert_allclose(c, r, rtol=tol, atol=tol * np.max(np.abs(r)))


# --- run_bench / format_bench ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_results():
    return run_bench(quick=True, cases=[TINY, BenchCase(3, 6, 3, 5, rule="dfa", activation="tanh", loss="ce")],
                     repeats=2, seconds=0.005, progress=False)


def test_run_bench_structure(tiny_results):
    res = tiny_results
    json.loads(json.dumps(res))  # JSON-serialisable as is
    assert res["schema"] == "bbp-bench/1"
    assert res["quick"] is True and res["backend"] == "numpy" and res["dtype"] == "float64"
    assert res["environment"]["numpy"] == np.__version__
    assert isinstance(res["environment"]["blas"], dict)
    assert set(res["method"]) >= {"engine", "flops", "matmul", "loop", "timer"}
    assert len(res["cases"]) == 2
    first = res["cases"][0]
    assert CASE_KEYS <= set(first)
    assert (first["E"], first["width"], first["depth"], first["batch"], first["rule"]) == (4, 8, 2, 16, "fa")
    assert first["flops_per_step"] == step_flops("fa", (8, 8, 8), 4, 16)
    assert first["loop_members_timed"] == 2
    assert set(first["targets"]) == {"ratio_to_matmul", "speedup_over_loop"}
    for target in first["targets"].values():
        assert isinstance(target["pass"], bool)
    assert first["targets_pass"] == all(t["pass"] for t in first["targets"].values())
    assert res["cases"][1]["targets"] == {} and res["cases"][1]["targets_pass"] is True
    assert res["targets_pass"] == all(c["targets_pass"] for c in res["cases"])
    assert gc.isenabled()


def test_run_bench_figures_are_positive_and_consistent(tiny_results):
    for case in tiny_results["cases"]:
        for key in ("steps_per_s", "gflops", "matmul_gflops", "ratio_to_matmul", "loop_member_steps_per_s",
                    "ensemble_member_steps_per_s", "speedup_over_loop", "speedup_at_matmul_speed"):
            assert math.isfinite(case[key]) and case[key] > 0, key
        np.testing.assert_allclose(case["gflops"], case["flops_per_step"] * case["steps_per_s"] / 1e9, rtol=1e-12)
        np.testing.assert_allclose(case["ratio_to_matmul"], case["gflops"] / case["matmul_gflops"], rtol=1e-12)
        np.testing.assert_allclose(case["ensemble_member_steps_per_s"], case["E"] * case["steps_per_s"],
                                   rtol=1e-12)
        np.testing.assert_allclose(case["speedup_over_loop"],
                                   case["ensemble_member_steps_per_s"] / case["loop_member_steps_per_s"],
                                   rtol=1e-12)
        assert len(case["samples_seconds"]["engine"]) == case["repeats"] == 2


def test_run_bench_times_the_trainers_default_threads(tiny_results, monkeypatch):
    import sim.bench as bench_module

    for case in tiny_results["cases"]:  # tiny steps: one thread, as train() would use
        assert case["threads"] == 1 and set(case["samples_seconds"]) == {"engine", "matmul", "loop"}
        assert case["one_thread_steps_per_s"] == case["steps_per_s"]
    monkeypatch.setattr(bench_module, "member_threads", lambda *args: 2)
    res = run_bench(quick=True, cases=[TINY], repeats=2, seconds=0.005, progress=False)
    case = res["cases"][0]
    assert case["threads"] == 2
    samples = case["samples_seconds"]
    assert set(samples) == {"engine", "engine_one_thread", "matmul", "matmul_threads", "loop"}
    assert case["matmul_seconds"] == min(min(samples["matmul"]), min(samples["matmul_threads"]))
    np.testing.assert_allclose(case["one_thread_steps_per_s"], 1 / min(samples["engine_one_thread"]), rtol=1e-12)
    np.testing.assert_allclose(case["one_thread_speedup_over_loop"] / case["speedup_over_loop"],
                               case["one_thread_steps_per_s"] / case["steps_per_s"], rtol=1e-12)
    assert "on one thread" in format_bench(res)


def test_format_bench_table(tiny_results):
    text = format_bench(tiny_results)
    for word in ("GFLOP/s", "ratio to matmul", "speedup over loop", "numpy", "float64"):
        assert word in text
    assert "loop timed over 2 of 4 members" in text
    assert ">= 0.5" in text and ">= 1" in text


def test_run_bench_float32_and_progress(capsys):
    res = run_bench(quick=True, dtype="float32", cases=[BenchCase(2, 4, 2, 3)], repeats=1, seconds=0.001)
    assert res["dtype"] == "float32" and res["cases"][0]["dtype"] == "float32"
    assert "[bench]" in capsys.readouterr().err


def test_default_cases_and_targets():
    assert [(c.n_members, c.width, c.depth, c.rule) for c in CASES] == [(256, 32, 3, "fa"), (256, 32, 3, "fa"),
                                                                         (16, 512, 3, "fa")]
    assert CASES[0].speedup_target == 10.0 and CASES[2].ratio_target == 0.5


@pytest.mark.parametrize("kwargs", [dict(backend="tpu"), dict(dtype="float16"), dict(cases=[]),
                                    dict(cases=[BenchCase(0, 4, 2, 3)]), dict(cases=[BenchCase(2, 4, 2, 3, rule="xx")]),
                                    dict(cases=[(2, 4, 2, 3)])])
def test_run_bench_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        run_bench(quick=True, progress=False, repeats=1, seconds=0.001, **kwargs)


@pytest.mark.gpu
def test_run_bench_on_cupy():  # pragma: no cover - needs a GPU
    res = run_bench(quick=True, backend="cupy", cases=[TINY], repeats=1, seconds=0.01, progress=False)
    assert res["backend"] == "cupy" and res["cases"][0]["gflops"] > 0


# --- the load case (sim.bench_load) ------------------------------------------------------------------------

LOAD_KEYS = {"experiment", "quick", "overrides", "seeds", "busy", "repeats", "default_seconds", "one_thread_seconds",
             "default_process_seconds", "one_thread_process_seconds", "default_blas_threads", "ratio", "target",
             "seconds"}


def test_the_load_case_runs_and_reports_its_keys(monkeypatch):
    import sim.bench_load as bench_load
    from sim.bench_load import LOAD_CASES, LoadCase, format_load

    tiny = LoadCase(overrides={"steps": "2", "n_train": "40", "n_test": "20", "rules": '["bp"]'}, busy=1, repeats=1)
    started = []
    real_start = bench_load.start_busy

    def start_busy(n, limit_s=900.0):
        started.extend(real_start(n, limit_s))
        return started[-n:] if n else []

    monkeypatch.setattr(bench_load, "start_busy", start_busy)
    res = run_bench(quick=True, cases=[TINY], repeats=1, seconds=0.001, progress=False, load=tiny)
    json.loads(json.dumps(res))
    load = res["load"]
    assert LOAD_KEYS <= set(load) and load["experiment"] == "sg-nonlinear" and load["busy"] == 1
    assert len(load["default_seconds"]) == len(load["one_thread_seconds"]) == 1
    assert all(s > 0 for s in load["default_seconds"] + load["one_thread_seconds"])
    np.testing.assert_allclose(load["ratio"], load["default_seconds"][0] / load["one_thread_seconds"][0])
    assert load["target"] == {"max": 1.3, "pass": bool(load["ratio"] <= 1.3)}
    assert res["targets_pass"] == (res["cases"][0]["targets_pass"] and load["target"]["pass"])
    assert "under load" in format_bench(res) and "ratio" in format_load(load)
    assert len(started) == 1 and all(p.poll() is not None for p in started)  # the busy process was stopped
    assert LOAD_CASES[False].experiment == "sg-nonlinear" and LOAD_CASES[False].busy == 2


def test_the_load_case_is_off_for_explicit_cases(tiny_results):
    assert tiny_results["load"] is None
    with pytest.raises(ValueError):
        run_bench(quick=True, cases=[TINY], progress=False, load="yes")
