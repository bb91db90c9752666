"""Backends, dtypes and seeds (sim.backend), and the core on array-api-strict."""

from __future__ import annotations

import importlib.util

import array_api_strict as xps
import numpy as np
import pytest

from sim import backend, metrics, nn, rules
from sim.backend import (
    COMPONENTS,
    get_dtype,
    get_namespace,
    member_rngs,
    namespace,
    shared_rng,
    to_device,
    to_host,
)
from sim.data import linear_teacher, teacher_classification
from sim.network import init_network
from sim.train import train

EPS = float(np.finfo(np.float64).eps)
SIZES = (3, 5, 4, 2)


def rounding_tolerance(sizes, batch=1):
    return 16 * EPS * (sum(sizes) + batch)


# --- namespaces and dtypes ------------------------------------------------------------------------

def test_numpy_namespace_and_dtypes():
    xp = get_namespace("numpy")
    a = xp.asarray([1.0, 2.0])
    assert namespace(a) is xp
    assert namespace(None, a) is xp
    assert get_dtype(xp, "float64") == np.float64
    assert get_dtype(xp, "float32") == np.float32
    moved = to_device(np.arange(3), xp, "float32")
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved, np.arange(3))
    assert to_device(np.arange(3), xp, None).dtype == np.arange(3).dtype


def test_unknown_backend_and_dtype():
    with pytest.raises(ValueError, match="unknown backend 'jax'; allowed: numpy, cupy"):
        get_namespace("jax")
    xp = get_namespace("numpy")
    with pytest.raises(ValueError, match="unknown dtype 'float16'; allowed: float64, float32"):
        get_dtype(xp, "float16")
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        to_device(np.zeros(2), xp, "int8")
    with pytest.raises(ValueError, match="unknown random component 'weights'"):
        member_rngs(0, 2, "weights")
    with pytest.raises(ValueError, match="unknown random component 'weights'"):
        shared_rng(0, "weights")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_cupy_backend_without_cupy_names_the_gpu_extra():
    with pytest.raises(ValueError, match=r"install the gpu extra.*beyond-backprop\[gpu\]"):
        get_namespace("cupy")
    with pytest.raises(ValueError, match="gpu extra"):
        init_network(SIZES, 1, backend="cupy")


def test_to_host():
    np.testing.assert_array_equal(to_host(np.arange(3.0)), np.arange(3.0))
    assert isinstance(to_host(2.5), np.ndarray)
    strict = xps.asarray(np.arange(4.0))
    host = to_host(strict)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.arange(4.0))


# --- seeds ----------------------------------------------------------------------------------------

def test_member_streams_depend_only_on_seed_member_and_component():
    for component in COMPONENTS:
        two = [rng.normal(size=8) for rng in member_rngs(5, 2, component)]
        five = [rng.normal(size=8) for rng in member_rngs(5, 5, component)]
        for a, b in zip(two, five):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(two[0], two[1])
        other_seed = member_rngs(6, 1, component)[0].normal(size=8)
        assert not np.array_equal(two[0], other_seed)
    draws = {c: member_rngs(5, 1, c)[0].normal(size=8) for c in COMPONENTS}
    shared = {c: shared_rng(5, c).normal(size=8) for c in COMPONENTS}
    everything = list(draws.values()) + list(shared.values())
    for i, a in enumerate(everything):
        for b in everything[i + 1:]:
            assert not np.array_equal(a, b)
    np.testing.assert_array_equal(shared_rng(5, "data").normal(size=8), shared["data"])


@pytest.mark.parametrize("seed", [-1, 1.5, "1", None, True, np.float64(2.0)])
def test_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        member_rngs(seed, 2, "init")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        shared_rng(seed, "data")


def test_numpy_integer_seeds_are_accepted():
    a = member_rngs(np.int64(3), 1, "init")[0].normal(size=4)
    b = member_rngs(3, 1, "init")[0].normal(size=4)
    np.testing.assert_array_equal(a, b)


# --- the core on array-api-strict -----------------------------------------------------------------

def _instance(loss, seed=0, n_members=2, batch=5, bias=False):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 1 / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(SIZES[:-1], SIZES[1:])]
    biases = [rng.normal(size=(n_members, n)) for n in SIZES[1:]] if bias else None
    x = rng.normal(size=(batch, SIZES[0]))
    y = rng.normal(size=(batch, SIZES[-1])) if loss == "mse" else np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], batch)]
    return weights, biases, x, y


def _strict(arrays):
    return None if arrays is None else [xps.asarray(a) for a in arrays]


def _assert_same(strict_arrays, numpy_arrays, tol):
    for s, n in zip(strict_arrays, numpy_arrays):
        assert isinstance(s, type(xps.asarray(0.0)))
        host = to_host(s)
        np.testing.assert_allclose(host, n, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(n), initial=0.0))))


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
@pytest.mark.parametrize("loss", nn.LOSSES)
def test_compute_updates_on_array_api_strict(rule, activation, loss):
    weights, biases, x, y = _instance(loss, bias=True)
    feedback = rules.draw_feedback(rule, SIZES, 2, seed=1)
    want = rules.rule_updates(rule, weights, x, y, activation=activation, loss=loss, feedback=feedback,
                              biases=biases)
    strict_feedback = rules.draw_feedback(rule, SIZES, 2, seed=1, xp=xps)
    got = rules.rule_updates(rule, _strict(weights), xps.asarray(x), xps.asarray(y), activation=activation,
                             loss=loss, feedback=strict_feedback, biases=_strict(biases))
    tol = rounding_tolerance(SIZES, 5)
    _assert_same(got.weights, want.weights, tol)
    _assert_same(got.biases, want.biases, tol)
    _assert_same([got.loss], [want.loss], tol)
    plain = rules.compute_updates(rule, _strict(weights), xps.asarray(x), xps.asarray(y), activation=activation,
                                  loss=loss, feedback=_strict(feedback))
    _assert_same(plain, rules.compute_updates(rule, weights, x, y, activation=activation, loss=loss,
                                              feedback=feedback), tol)


def test_validation_on_array_api_strict():
    weights, _, x, y = _instance("mse")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains non-finite"):
        rules.compute_updates("bp", _strict(weights), xps.asarray(bad), xps.asarray(y))
    with pytest.raises(ValueError, match="needs feedback"):
        rules.compute_updates("fa", _strict(weights), xps.asarray(x), xps.asarray(y))


def test_metrics_on_array_api_strict():
    weights, _, x, y = _instance("ce")
    fa_fb = rules.draw_feedback("fa", SIZES, 2, seed=2)
    dfa_fb = rules.draw_feedback("dfa", SIZES, 2, seed=2)
    other = [w + 0.1 for w in weights]
    tol = rounding_tolerance(SIZES)
    pairs = [
        (metrics.angle(xps.asarray(weights[0]), xps.asarray(other[0])), metrics.angle(weights[0], other[0])),
        (metrics.layer_angles(_strict(weights), _strict(other)), metrics.layer_angles(weights, other)),
        (metrics.fa_weight_alignment(_strict(weights), _strict(fa_fb)), metrics.fa_weight_alignment(weights, fa_fb)),
        (metrics.dfa_weight_alignment(_strict(weights), _strict(dfa_fb)),
         metrics.dfa_weight_alignment(weights, dfa_fb)),
        (metrics.weight_norms(_strict(weights)), metrics.weight_norms(weights)),
        (nn.accuracy(nn.predict(_strict(weights), xps.asarray(x)), xps.asarray(y)),
         nn.accuracy(nn.predict(weights, x), y)),
    ]
    for got, want in pairs:
        _assert_same([got], [want], tol)
    zero = metrics.angle(xps.zeros((2, 3), dtype=xps.float64), xps.ones((2, 3), dtype=xps.float64))
    assert np.all(np.isnan(to_host(zero)))


def test_train_on_array_api_strict_equals_numpy():
    data = linear_teacher(3, 2, [2.0, 1.0], 12, seed=0)
    kwargs = dict(rule="fa", steps=6, lr=[0.05, 0.1], momentum=0.5, batch_size=4, seed=3)
    net = init_network(SIZES, 2, seed=0, activation="tanh", bias=True)
    want = train(net, data, feedback=rules.draw_feedback("fa", SIZES, 2, seed=0), **kwargs)
    strict_net = init_network(SIZES, 2, seed=0, activation="tanh", bias=True, xp=xps)
    got = train(strict_net, data, feedback=rules.draw_feedback("fa", SIZES, 2, seed=0, xp=xps), **kwargs)
    tol = 8 * 6 * rounding_tolerance(SIZES, 4)
    _assert_same(got.network.weights + got.network.biases, want.network.weights + want.network.biases, tol)
    np.testing.assert_array_equal(got.steps, want.steps)
    for name, values in want.metrics.items():
        np.testing.assert_allclose(got.metrics[name], values, rtol=tol, atol=tol)


def test_classification_train_on_array_api_strict_records_accuracy():
    data = teacher_classification(30, seed=1, n_inputs=3, n_hidden=4, n_classes=2)
    net = init_network((3, 4, 2), 2, seed=1, activation="relu", xp=xps)
    result = train(net, data, rule="dfa", steps=3, lr=0.1, feedback=rules.draw_feedback("dfa", (3, 4, 2), 2, seed=1,
                                                                                        xp=xps))
    acc = result.metric("accuracy")
    assert acc.shape == (4, 2)
    assert np.all((acc >= 0) & (acc <= 1))


def test_member_threads_refuse_other_backends_than_numpy():
    data = linear_teacher(3, 2, [2.0, 1.0], 12, seed=0)
    net = init_network(SIZES, 2, seed=0, xp=xps)
    with pytest.raises(ValueError, match="member threads need numpy arrays"):
        train(net, data, rule="bp", steps=1, lr=0.1, threads=2)
    assert train(net, data, rule="bp", steps=1, lr=0.1).network.n_members == 2  # the default: one thread


# --- the allocator --------------------------------------------------------------------------------

_FAULTS = """
import json, resource, numpy as np
from sim import backend
from sim.bench import BenchCase, _case_arrays, _engine
from sim.data import linear_teacher
from sim.network import init_network
from sim.train import train
train(init_network((3, 4, 2), 1, seed=0), linear_teacher(3, 2, [1.0], 8, seed=0), rule="bp", steps=1, lr=0.1)
xp = backend.get_namespace("numpy")
case = BenchCase(256, 32, 3, 16)  # activations of 1 MiB, updates of 2 MiB
weights, feedback, x, y = _case_arrays(case, xp, "float64", 0)
work = _engine(case, weights, feedback, x, y, xp, "float64", 1e-3, 1)
for _ in range(5):
    work.run()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    work.run()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps(dict(tuned=backend.ALLOCATOR_TUNED, faults_per_step=faults)))
"""


def _page_faults_per_step(tune: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, BBP_TUNE_ALLOCATOR=tune)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="the tuning is for glibc's malloc")
def test_the_trainer_tunes_the_allocator_so_that_a_step_makes_no_page_faults():
    tuned = _page_faults_per_step("1")
    assert tuned["tuned"] is True
    assert tuned["faults_per_step"] < 16  # a step allocates about 18 MiB of temporaries: 4600 pages
    default = _page_faults_per_step("0")  # switched off: glibc's defaults, which the test must tell apart
    assert default["tuned"] is False
    if default["faults_per_step"] < 100:
        pytest.skip(f"glibc's defaults made no page faults here ({default['faults_per_step']} per step)")
    assert default["faults_per_step"] > 100 * max(tuned["faults_per_step"], 1)


# --- GPU ------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_compute_updates_on_cupy_equals_numpy(rule):  # pragma: no cover - needs a GPU
    xp = get_namespace("cupy")
    weights, biases, x, y = _instance("ce", bias=True)
    feedback = rules.draw_feedback(rule, SIZES, 2, seed=1)
    want = rules.rule_updates(rule, weights, x, y, activation="tanh", loss="ce", feedback=feedback, biases=biases)
    dev = [backend.to_device(w, xp) for w in weights]
    got = rules.rule_updates(rule, dev, backend.to_device(x, xp), backend.to_device(y, xp), activation="tanh",
                             loss="ce", feedback=rules.draw_feedback(rule, SIZES, 2, seed=1, xp=xp),
                             biases=[backend.to_device(b, xp) for b in biases])
    tol = rounding_tolerance(SIZES, 5)
    for g, w in zip(got.weights + got.biases, want.weights + want.biases):
        np.testing.assert_allclose(to_host(g), w, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_training_on_cupy_equals_numpy(rule):  # pragma: no cover - needs a GPU
    """The trainer's device path: column-major copies, scaled updates, the where-based SGD step, observers."""
    xp = get_namespace("cupy")
    data = teacher_classification(40, seed=2, n_inputs=SIZES[0], n_hidden=6, n_classes=SIZES[-1])
    steps, kwargs = 12, dict(rule=rule, lr=[0.05, 0.1], momentum=0.5, batch_size=8, seed=3, record_every=4)
    host_net = init_network(SIZES, 2, seed=2, activation="relu", bias=True)
    dev_net = init_network(SIZES, 2, seed=2, activation="relu", bias=True, xp=xp)
    want = train(host_net, data, steps=steps, feedback=rules.draw_feedback(rule, SIZES, 2, seed=2), **kwargs)
    got = train(dev_net, data, steps=steps, feedback=rules.draw_feedback(rule, SIZES, 2, seed=2, xp=xp), **kwargs)
    assert all(backend.is_column_major(w) for w in got.network.weights)
    tol = rounding_tolerance(SIZES, 8) * steps
    for g, w in zip(got.network.weights + got.network.biases, want.network.weights + want.network.biases):
        np.testing.assert_allclose(to_host(g), w, rtol=tol, atol=tol)
    for name, values in want.metrics.items():
        np.testing.assert_allclose(got.metrics[name], values, rtol=tol, atol=tol * 100, err_msg=name)


# --- the engine's BLAS threading (blas_policy) ------------------------------------------------------------

def _blas_now() -> int:
    from threadpoolctl import threadpool_info

    return min((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=0)


def test_blas_policy_gives_small_products_one_thread_and_large_ones_the_budget():
    from threadpoolctl import threadpool_limits

    if _blas_now() == 0:
        pytest.skip("no BLAS library that threadpoolctl controls")
    with threadpool_limits(limits=2, user_api="blas"):  # a budget of two, whatever the environment says
        budget = min(2, backend.cpu_count())
        with backend.blas_policy() as threads:
            assert threads == 1 and _blas_now() == 1
            assert backend.blas_threads() == budget  # the engine's own limit does not count
            with backend.blas_policy(backend.BLAS_MIN_FLOPS) as big:  # nested: the same budget
                assert big == budget and _blas_now() == budget
            assert _blas_now() == 1
            with backend.blas_limit(1):  # a runtime's workers: the budget inside is one
                assert backend.blas_threads() == 1
                with backend.blas_policy(backend.BLAS_MIN_FLOPS) as inner:
                    assert inner == 1
        assert _blas_now() == 2 and backend.blas_threads() == 2
        with backend.blas_policy(backend.BLAS_MIN_FLOPS - 1) as threads:
            assert threads == 1


def test_blas_policy_never_exceeds_a_limit_set_from_outside():
    from threadpoolctl import threadpool_limits

    if _blas_now() == 0:
        pytest.skip("no BLAS library that threadpoolctl controls")
    with threadpool_limits(limits=1, user_api="blas"):  # OPENBLAS_NUM_THREADS=1, a Dask worker
        with backend.blas_policy(1e12) as threads:
            assert threads == 1 and backend.blas_threads() == 1


def test_blas_policy_is_a_decorator_and_train_runs_under_it(monkeypatch):
    seen = []

    @backend.blas_policy()
    def work():
        seen.append(_blas_now())

    work()
    work()
    assert seen in ([1, 1], [0, 0])
    import sim.train as train_module

    entered = []
    real = train_module.blas_policy

    def spy(flops=None):
        entered.append(flops)
        return real(flops)

    monkeypatch.setattr(train_module, "blas_policy", spy)
    net = init_network((3, 5, 2), 2, seed=0)
    train(net, linear_teacher(3, 2, [2.0, 1.0], 20, seed=0), rule="bp", steps=2, lr=0.1, batch_size=4)
    assert entered == [2 * 20 * 5 * 3]  # the largest product: the observation set (20 samples) through 3 -> 5
