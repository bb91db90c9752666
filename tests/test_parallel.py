"""The layer-parallel runtime (sim.parallel): same result as the sequential schedule, clean shutdown."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from sim import local, parallel
from sim.data import teacher_classification
from sim.data.tasks import Dataset
from sim.network import init_network
from sim.train import train

DATA = teacher_classification(256, seed=0, n_inputs=10, n_classes=4)
SIZES = [10, 12, 12, 9, 4]


def build(members=2, seed=1, **kwargs):
    return local.make_block_network(SIZES, members, seed=seed, activation="tanh", **kwargs)


def plan(steps=20, batch=16, **kwargs):
    return parallel.BatchPlan(DATA, batch, steps, seed=3, **kwargs)


def same_params(a, b):
    for pa, pb in zip(a.params, b.params):
        for x, y in zip(pa, pb):
            np.testing.assert_array_equal(x, y)
    for ha, hb in zip(a.head_params, b.head_params):
        for x, y in zip(ha or (), hb or ()):
            np.testing.assert_array_equal(x, y)


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("bbp-worker")]


def build_for(rule, **kwargs):
    net = build(**kwargs)
    if rule in ("sg", "cdni"):
        net = local.attach_synthetic_gradients(net, conditioned=rule == "cdni")
    return net


@pytest.mark.parametrize("rule", ["dgl", "overlap", "bp", "dfa", "greedy", "sg", "cdni"])
@pytest.mark.parametrize("pipelined", [True, False])
def test_any_number_of_workers_gives_the_sequential_schedule(rule, pipelined):
    runs = [parallel.train_blocks(build_for(rule), plan(), rule=rule, lr=0.1, workers=w, pipelined=pipelined,
                                  snapshot_every=5, timeout=20) for w in (1, 2, 4)]
    for other in runs[1:]:
        same_params(runs[0].network, other.network)
        for a, b in zip(runs[0].losses, other.losses):
            np.testing.assert_array_equal(a, b)
        assert other.delays == runs[0].delays
    assert runs[1].workers == 2 and runs[2].workers == 4
    assert not worker_threads()


def test_pipelined_dgl_is_dgl():
    """Zero staleness: the threaded pipeline gives exactly the textbook DGL loop."""
    net = build()
    batches = plan(30)
    res = parallel.train_blocks(net, batches, rule="dgl", lr=0.1, workers=4)
    for s in range(batches.steps):
        x, y = batches.host_batch(s)
        net = local.apply_updates(net, local.block_updates("dgl", net, x, y), 0.1)
    same_params(net, res.network)
    assert res.delays == (0, 0, 0, 0)


@pytest.mark.parametrize("rule", ["bp", "dfa", "overlap"])
def test_locked_runtime_is_the_synchronous_rule(rule):
    net = build()
    batches = plan(15)
    feedback = local.draw_block_feedback(net, seed=0)
    res = parallel.train_blocks(net, batches, rule=rule, lr=0.1, workers=2, pipelined=False, feedback=feedback)
    for s in range(batches.steps):
        x, y = batches.host_batch(s)
        net = local.apply_updates(net, local.block_updates(rule, net, x, y, feedback=feedback), 0.1)
    for pa, pb in zip(net.params, res.network.params):
        for a, b in zip(pa, pb):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_locked_bp_runtime_equals_the_trainer():
    net = build()
    res = parallel.train_blocks(net, plan(24, batch=32), rule="bp", lr=0.05, workers=3, pipelined=False)
    plain = init_network(SIZES, 2, seed=1, activation="tanh")
    ref = train(plain, DATA, rule="bp", steps=24, lr=0.05, batch_size=32, seed=3, progress=False)
    for a, b in zip(local.to_network(res.network).weights, ref.network.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", ["sg", "cdni"])
def test_locked_dni_runtime_equals_the_trainers_synthetic_gradients(rule):
    """Block-level DNI on one-layer blocks is sim.rules' sg / cdni with bootstrapped module targets."""
    res = parallel.train_blocks(build_for(rule), plan(24, batch=32), rule=rule, lr=0.05, head_lr=0.1, workers=2,
                                pipelined=False)
    plain = init_network(SIZES, 2, seed=1, activation="tanh")
    ref = train(plain, DATA, rule=rule, steps=24, lr=0.05, batch_size=32, seed=3,
                progress=False, module_settings={"target": "bootstrap", "lr": 0.1})
    for a, b in zip(local.to_network(res.network).weights, ref.network.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for j, layer in enumerate(ref.modules.params):
        np.testing.assert_allclose(res.network.head_params[j][0], layer["hidden"], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="synthetic-gradient modules"):
        parallel.train_blocks(build(), plan(2), rule=rule, lr=0.1)


def test_pipelined_bp_is_stale_but_learns():
    locked = parallel.train_blocks(build(), plan(60), rule="bp", lr=0.1, workers=2, pipelined=False)
    stale = parallel.train_blocks(build(), plan(60), rule="bp", lr=0.1, workers=2, pipelined=True)
    assert stale.delays == (3, 2, 1, 0)
    assert not np.array_equal(stale.network.params[0][0], locked.network.params[0][0])
    assert np.mean(stale.losses[-1][-10:]) < np.mean(stale.losses[-1][:10])


def test_async_dgl_with_one_slot_is_dgl():
    res = parallel.train_blocks(build(), plan(), rule="async-dgl", lr=0.1, workers=1, buffer_size=1)
    dgl = parallel.train_blocks(build(), plan(), rule="dgl", lr=0.1, workers=1)
    same_params(res.network, dgl.network)
    assert res.buffer_max == [0, 1, 1, 1]


def test_async_dgl_threads_respect_the_buffer():
    res = parallel.train_blocks(build(), plan(40), rule="async-dgl", lr=0.1, workers=4, buffer_size=3,
                                block_delays=[0.0, 0.002, 0.0, 0.004], snapshot_every=10)
    assert max(res.buffer_max) <= 3
    assert res.updates[0] == 40 and all(1 <= u <= 40 for u in res.updates)
    assert all(np.all(np.isfinite(loss)) for loss in res.losses)
    assert not worker_threads()


def test_async_dgl_sequential_speeds():
    res = parallel.train_blocks(build(), plan(12), rule="async-dgl", lr=0.1, workers=1, buffer_size=2,
                                speeds=[3, 1, 1, 1], reuse_cap=1)
    assert res.updates[0] == 12 and max(res.buffer_max) <= 2
    assert res.updates[1] < 12  # the fast block overwrote batches the slow one never saw
    assert parallel.async_ticks([2, 1], 2) == [0, 0, 1, 0, 0, 1]


@pytest.mark.parametrize("objective", ["infonce", "ntxent"])
def test_contrastive_objectives_run_in_parallel(objective):
    net = build(head_outputs=5)
    batches = plan(10, views="augment")
    one = parallel.train_blocks(net, batches, rule="dgl", lr=0.05, workers=1, objective=objective)
    two = parallel.train_blocks(net, batches, rule="dgl", lr=0.05, workers=2, objective=objective)
    same_params(one.network, two.network)
    assert np.all(np.isfinite(two.losses[0]))


def test_patch_network_in_parallel():
    from sim.data.hierarchical import digits

    data = digits(64, seed=0).to_dataset()
    net = local.make_patch_block_network((27, 27, 1), [4, 6, 8], 10, 1, patch_size=3, layers_per_block=[2, 1])
    batches = parallel.BatchPlan(data, 16, 8, seed=0)
    for rule in ("dgl", "bp"):
        one = parallel.train_blocks(net, batches, rule=rule, lr=0.05, workers=1)
        two = parallel.train_blocks(net, batches, rule=rule, lr=0.05, workers=2)
        same_params(one.network, two.network)


def test_snapshots():
    res = parallel.train_blocks(build(), plan(20), rule="bp", lr=0.1, workers=2, snapshot_every=5)
    assert res.n_snapshots() == 4
    assert [s.batches for s in res.snapshots[0]] == [5, 10, 15, 20]
    times = res.snapshot_seconds()
    assert np.all(np.diff(times) >= 0) and times[-1] <= res.seconds
    final = res.network_at(3)
    same_params(final.with_params(head_params=res.network.head_params), res.network)
    acc = parallel.evaluate(res.network, DATA.x, DATA.y)
    assert acc.shape == (2,)


# --- shutdown -------------------------------------------------------------------------------------------

class FailingBlock(local.DenseBlock):
    """A dense block whose forward raises on batch 3 (counted per call)."""

    def forward(self, params, h):
        count = getattr(self, "_calls", 0)
        object.__setattr__(self, "_calls", count + 1)
        if count == 3:
            raise ZeroDivisionError("block exploded")
        return super().forward(params, h)


class SlowBlock(local.DenseBlock):
    def forward(self, params, h):
        time.sleep(0.02)
        return super().forward(params, h)


def with_block(net, j, cls):
    blocks = list(net.blocks)
    b = blocks[j]
    blocks[j] = cls(b.sizes, b.activation, b.output)
    return local.BlockNetwork(tuple(blocks), net.params, net.heads, net.head_params, net.loss)


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("rule", ["dgl", "bp", "async-dgl"])
def test_a_failing_block_stops_every_worker(rule, workers):
    net = with_block(build(), 2, FailingBlock)
    start = time.perf_counter()
    with pytest.raises(parallel.BlockError, match="block exploded") as info:
        parallel.train_blocks(net, plan(50), rule=rule, lr=0.1, workers=workers, timeout=5)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.block == 2
    assert time.perf_counter() - start < 4
    assert not worker_threads()


def test_ctrl_c_in_the_calling_thread_stops_the_workers():
    net = with_block(build(), 1, SlowBlock)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            parallel.train_blocks(net, plan(2000), rule="dgl", lr=0.1, workers=4, timeout=5)
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 5
    time.sleep(0.1)
    assert not worker_threads()


class InterruptingBlock(local.DenseBlock):
    def forward(self, params, h):
        raise KeyboardInterrupt


def test_ctrl_c_inside_a_worker_is_reraised():
    net = with_block(build(), 3, InterruptingBlock)
    with pytest.raises(KeyboardInterrupt):
        parallel.train_blocks(net, plan(20), rule="dgl", lr=0.1, workers=2, timeout=5)
    assert not worker_threads()


class StuckBlock(local.DenseBlock):
    def forward(self, params, h):
        time.sleep(1.0)
        return super().forward(params, h)


def test_a_stuck_channel_times_out():
    net = with_block(build(), 0, StuckBlock)
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="stayed empty"):
        parallel.train_blocks(net, plan(5), rule="dgl", lr=0.1, workers=2, timeout=0.3)
    assert time.perf_counter() - start < 3
    assert not worker_threads()


# --- settings --------------------------------------------------------------------------------------------

def test_feedback_delays():
    assert parallel.feedback_delays("dgl", 3) == (0, 0, 0)
    assert parallel.feedback_delays("overlap", 3) == (1, 1, 0)
    assert parallel.feedback_delays("bp", 3) == (2, 1, 0)
    assert parallel.feedback_delays("dfa", 3) == (2, 1, 0)
    assert parallel.feedback_delays("bp", 3, pipelined=False) == (0, 0, 0)
    assert parallel.feedback_delays("sg", 3) == (1, 1, 0)


def test_batch_plan():
    a, b = plan(40), plan(40)
    np.testing.assert_array_equal(a.order, b.order)
    assert a.order.shape == (40, 16) and a.batches_per_epoch == 16
    first_epoch = np.sort(a.order[:16].ravel())
    np.testing.assert_array_equal(first_epoch, np.arange(256))
    x, y = plan(2, views="augment").host_batch(1)
    assert x.shape == (32, 10) and y.shape == (32, 4)
    np.testing.assert_array_equal(y[:16], y[16:])
    with pytest.raises(ValueError, match="exceeds"):
        parallel.BatchPlan(DATA, 1000, 3)
    with pytest.raises(ValueError, match="steps"):
        parallel.BatchPlan(DATA, 10, 0)
    with pytest.raises(ValueError, match="views"):
        parallel.BatchPlan(DATA, 10, 2, views="rotate")


def test_bad_runtime_settings():
    net = build()
    with pytest.raises(ValueError, match="workers"):
        parallel.train_blocks(net, plan(), rule="dgl", lr=0.1, workers=5)
    with pytest.raises(ValueError, match="workers"):
        parallel.train_blocks(net, plan(), rule="dgl", lr=0.1, workers=0)
    with pytest.raises(ValueError, match="lr"):
        parallel.train_blocks(net, plan(), rule="dgl", lr=-1.0)
    with pytest.raises(ValueError, match="two views"):
        parallel.train_blocks(net, plan(), rule="dgl", lr=0.1, objective="ntxent")
    with pytest.raises(ValueError, match="contiguous"):
        parallel.train_blocks(net, plan(), rule="dgl", lr=0.1, groups=[[0, 2], [1, 3]])
    with pytest.raises(ValueError, match="unknown block rule"):
        parallel.train_blocks(net, plan(), rule="sgd", lr=0.1)
    with pytest.raises(ValueError, match="BatchPlan"):
        parallel.train_blocks(net, DATA, rule="dgl", lr=0.1)
    with pytest.raises(ValueError, match="blas_threads"):
        with parallel.blas_limit(0):
            pass
    with pytest.raises(ValueError, match="block_delays"):
        parallel.train_blocks(net, plan(), rule="async-dgl", lr=0.1, block_delays=[0.1])


def test_member_learning_rates():
    res = parallel.train_blocks(build(), plan(5), rule="dgl", lr=np.array([0.1, 0.0]), workers=2)
    start = build()
    np.testing.assert_array_equal(res.network.params[0][0][1], start.params[0][0][1])
    assert not np.array_equal(res.network.params[0][0][0], start.params[0][0][0])


def test_dataset_type_is_respected():
    data = Dataset(np.ones((8, 10)), np.eye(4)[[0, 1, 2, 3] * 2], "classification")
    res = parallel.train_blocks(build(), parallel.BatchPlan(data, 4, 4), rule="dgl", lr=0.1)
    assert res.updates == [4, 4, 4, 4]


def test_trace_shows_the_pipeline():
    res = parallel.train_blocks(build(), plan(6), rule="bp", lr=0.1, workers=2, trace=True)
    assert len(res.trace) == 4 * 6 + 3 * 6  # a forward per block and batch, a backward below the top
    starts = [t[3] for t in res.trace]
    assert starts == sorted(starts)
    assert all(0 <= t[3] <= t[4] <= res.seconds for t in res.trace)
    assert {(t[0], t[1]) for t in res.trace} == {(j, "forward") for j in range(4)} | {(j, "backward")
                                                                                     for j in range(3)}
    assert parallel.train_blocks(build(), plan(2), rule="dgl", lr=0.1).trace == []
