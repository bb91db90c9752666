"""The schedule model (sim.schedule): closed forms of the epoch time of each rule on K workers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import local, schedule
from sim.schedule import BlockCost, assign_blocks, predict_epoch, speedup_curve

MAX_EXAMPLES = min(25, settings().max_examples)
UNIT = BlockCost(forward=1.0, backward=2.0, update=0.5, head=0.5)


def brute_force_partition(weights, workers):
    n = len(weights)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), workers - 1):
        bounds = (0, *cuts, n)
        best = min(best, max(sum(weights[a:b]) for a, b in zip(bounds[:-1], bounds[1:])))
    return best


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=7), st.integers(1, 7))
def test_property_assign_blocks_is_the_best_contiguous_split(weights, workers):
    workers = min(workers, len(weights))
    groups = assign_blocks(len(weights), workers, weights)
    assert [j for g in groups for j in g] == list(range(len(weights)))
    assert len(groups) == workers and all(groups)
    load = max(sum(weights[j] for j in g) for g in groups)
    assert load <= brute_force_partition(weights, workers) + 1e-9


def test_assign_blocks_errors():
    with pytest.raises(ValueError, match="at most the number of blocks"):
        assign_blocks(2, 3)
    with pytest.raises(ValueError, match="weights"):
        assign_blocks(2, 1, [1.0])
    with pytest.raises(ValueError, match="positive integer"):
        assign_blocks(0, 1)


@pytest.mark.parametrize("rule", schedule.MODEL_RULES)
def test_one_worker_is_the_sum_of_the_work(rule):
    costs = [UNIT, BlockCost(0.5, 1.0, 0.1, 0.2), BlockCost(2.0, 3.0, 0.0, 0.0)]
    pred = predict_epoch(rule, costs, workers=1, n_batches=10, comm=0.3)
    if rule == "greedy":  # one stage per block; earlier blocks only forward
        want = 10 * sum(sum(c.forward for c in costs[:s]) + costs[s].work("dgl") for s in range(3))
    else:
        want = 10 * sum(c.work(rule) for c in costs)
    assert pred.seconds == pytest.approx(want)


def test_pipelines_approach_k_times_faster():
    k, n = 4, 1000
    seq = predict_epoch("dgl", [UNIT] * k, workers=1, n_batches=n).seconds
    par = predict_epoch("dgl", [UNIT] * k, workers=k, n_batches=n).seconds
    assert par == pytest.approx((n - 1) * UNIT.work("dgl") + k * UNIT.work("dgl"))
    assert seq / par == pytest.approx(k, rel=0.01)
    for rule in ("dgl", "async-dgl", "overlap", "sg", "bp", "dfa"):
        assert predict_epoch(rule, [UNIT] * k, workers=k, n_batches=n).seconds < seq


def test_locked_rules_do_not_gain():
    k, n = 3, 50
    seq = predict_epoch("bp", [UNIT] * k, workers=1, n_batches=n).seconds
    locked = predict_epoch("bp", [UNIT] * k, workers=k, n_batches=n, pipelined=False, comm=0.1)
    assert locked.seconds == pytest.approx(seq + n * 2 * (k - 1) * 0.1)
    dfa = predict_epoch("dfa", [UNIT] * k, workers=k, n_batches=n, pipelined=False, comm=0.0)
    assert dfa.seconds == pytest.approx(n * (k * UNIT.forward + UNIT.backward + UNIT.update))
    overlap = predict_epoch("overlap", [UNIT] * k, workers=k, n_batches=n, pipelined=False).seconds
    assert predict_epoch("overlap", [UNIT] * k, workers=k, n_batches=n).seconds < overlap < seq * 1.2


def test_communication_slows_every_parallel_rule():
    for rule in ("bp", "dfa", "dgl", "async-dgl", "overlap", "sg"):
        fast = predict_epoch(rule, [UNIT] * 3, workers=3, n_batches=20, comm=0.0).seconds
        slow = predict_epoch(rule, [UNIT] * 3, workers=3, n_batches=20, comm=1.0).seconds
        assert slow > fast


def test_unbalanced_blocks_are_bounded_by_the_slowest_worker():
    costs = [BlockCost(1, 1), BlockCost(1, 1), BlockCost(4, 4)]
    pred = predict_epoch("dgl", costs, workers=2, n_batches=100)
    assert pred.groups == ((0, 1), (2,))
    assert pred.bottleneck == "worker 1"
    assert pred.seconds == pytest.approx(99 * 8 + 4 + 8)


def test_speedup_curve():
    curve = speedup_curve("dgl", UNIT, [1, 2, 4, 8], n_batches=1000)
    assert curve[0] == pytest.approx(UNIT.work("bp") / UNIT.work("dgl"))  # the head costs extra on one worker
    assert np.all(np.diff(curve) > 0)
    locked = speedup_curve("bp", UNIT, [1, 2, 4, 8], n_batches=1000, pipelined=False, comm=0.01)
    assert np.all(locked <= 1.0)


def test_measured_costs_are_positive():
    net = local.make_block_network([16, 16, 16, 4], 1, layers_per_block=[1, 2], seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 16)), np.eye(4)[rng.integers(0, 4, 8)]
    costs = schedule.measure_block_costs(net, x, y, repeats=3)
    assert len(costs) == 2
    assert all(c.forward > 0 and c.backward > 0 for c in costs)
    assert costs[0].head > 0 and costs[1].head == 0
    assert 0 < schedule.measure_message_cost(200) < 0.1


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-negative"):
        BlockCost(-1.0, 0.0)
    with pytest.raises(ValueError, match="unknown rule"):
        predict_epoch("hebb", [UNIT])
    with pytest.raises(ValueError, match="comm"):
        predict_epoch("dgl", [UNIT], comm=-1.0)
    with pytest.raises(ValueError, match="BlockCost"):
        predict_epoch("dgl", [])
    with pytest.raises(ValueError, match="n_batches"):
        predict_epoch("dgl", [UNIT], n_batches=0)
    with pytest.raises(ValueError, match="groups"):
        predict_epoch("dgl", [UNIT, UNIT], workers=2, groups=[[0, 1], []])


def test_parallel_ceiling_is_measured():
    out = schedule.measure_parallel_ceiling(32, 8, 3)
    assert out["workers"] == 2 and out["sequential"] > 0 and out["parallel"] > 0
    assert out["ceiling"] == pytest.approx(out["sequential"] / out["parallel"])
