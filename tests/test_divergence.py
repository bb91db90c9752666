"""Divergence is always seen and always reported (issue 11, part 3): the trainer, the block runtime,
layerwise training and the experiments."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sim import local, parallel
from sim.data import teacher_classification
from sim.divergence import DIVERGENCE_FACTOR, Divergence, divergence_message
from sim.experiments import Context, run_experiment, summary_stats
from sim.layerwise import TrainSettings, fit_greedy
from sim.metrics import angle, fa_weight_alignment
from sim.network import init_network
from sim.patch import init_patch_network, train_patch_network
from sim.rules import draw_feedback
from sim.train import train

EXCEEDED = f"loss exceeded {DIVERGENCE_FACTOR:.0e} x its initial value"


@pytest.fixture(scope="module")
def task():
    return teacher_classification(256, seed=0, n_inputs=10, n_hidden=20, n_classes=4)


# --- the trainer ------------------------------------------------------------------------------------

def test_per_member_learning_rates_under_cross_entropy_report_the_runaway_member(task):
    net = init_network([10, 20, 4], 4, seed=0, activation="tanh")
    feedback = draw_feedback("dfa", net.sizes, 4, seed=1)
    res = train(net, task, rule="dfa", steps=200, lr=[0.1, 1e4, 0.1, 1e300], feedback=feedback)
    by_member = {d.member: d for d in res.diverged}
    assert sorted(by_member) == [1, 3]  # lr=1e4 runs away (loss ~6e3 x its initial value), lr=1e300 at once
    assert by_member[3].reason == EXCEEDED and by_member[1].reason == EXCEEDED
    assert by_member[3].step >= 1
    loss = res.metric("loss")
    assert np.all(np.isfinite(loss[:, [0, 2]]))
    assert np.all(np.isnan(loss[res.steps >= by_member[3].step, 3]))
    assert np.isnan(loss[-1, 3])
    for name in ("weight_alignment", "gradient_angle", "signal_angle", "accuracy", "weight_norm"):
        values = res.metric(name)
        assert np.all(np.isnan(values[-1, 3])), name
        assert np.all(np.isfinite(values[-1, [0, 2]])), name
    # the frozen member keeps finite weights: it stopped at the step it was caught
    assert all(np.all(np.isfinite(w[3])) for w in res.network.weights)


def test_divergence_factor_is_a_setting(task):
    net = init_network([10, 20, 4], 2, seed=0, activation="tanh")
    feedback = draw_feedback("dfa", net.sizes, 2, seed=1)
    loose = train(net, task, rule="dfa", steps=100, lr=[0.1, 1e4], feedback=feedback, divergence_factor=1e6)
    assert [d.member for d in loose.diverged] == []
    tight = train(net, task, rule="dfa", steps=100, lr=[0.1, 1e4], feedback=feedback, divergence_factor=10.0)
    assert [d.member for d in tight.diverged] == [1]
    assert tight.diverged[0].reason == "loss exceeded 1e+01 x its initial value"
    with pytest.raises(ValueError, match="divergence_factor"):
        train(net, task, rule="dfa", steps=1, lr=0.1, feedback=feedback, divergence_factor=0.5)


def test_a_diverged_fa_member_reports_nan_weight_alignment_not_90(task):
    net = init_network([10, 20, 20, 4], 2, seed=0, activation="tanh")
    feedback = draw_feedback("fa", net.sizes, 2, seed=1)
    res = train(net, task, rule="fa", steps=50, lr=[0.05, 1e300], feedback=feedback, record_every=1)
    assert [d.member for d in res.diverged] == [1]
    alignment = res.metric("weight_alignment")
    assert np.all(np.isnan(alignment[res.steps >= res.diverged[0].step, 1]))
    assert np.all(np.isfinite(alignment[:, 0]))
    # the metric itself never turns non-finite weights into a plausible angle
    weights = [np.asarray(w).copy() for w in net.weights]
    weights[1][0, 0, 0] = np.inf
    weights[2][0] *= 1e200
    with np.errstate(all="ignore"):
        out = np.asarray(fa_weight_alignment(weights, feedback))
    assert np.all(np.isnan(out[0]))
    assert np.all(np.isfinite(out[1]))
    with np.errstate(all="ignore"):
        assert np.isnan(angle(np.full((1, 3), np.inf), np.ones((1, 3))))[0]


def test_the_message_format():
    d = Divergence(2, 17, EXCEEDED)
    assert divergence_message("dfa", d) == f"dfa member 2: {EXCEEDED} at step 17"


def test_summary_stats_of_nothing_finite_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert summary_stats([np.nan, np.nan]) == {"mean": None, "std": None} or \
            summary_stats([np.nan, np.nan])["mean"] is None


# --- experiments ------------------------------------------------------------------------------------

def test_an_experiment_where_every_member_diverges_says_so():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice", no overflow warnings
        _, result = run_experiment("sg-linear", context=Context(quick=True, n_seeds=2),
                                   overrides={"singular_values": "[100]", "lr": "1"})
    assert result.all_diverged
    assert result.summary.startswith("every member diverged: ")
    assert len(result.diverged) == 2 * 3
    for message in result.diverged:
        assert " member " in message and " at step " in message
    for fig in result.figures.values():
        notes = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any("every member diverged" in n for n in notes)
    # a healthy run is not marked
    _, healthy = run_experiment("sg-linear", context=Context(quick=True, n_seeds=1),
                                overrides={"steps": 40, "record_every": 10})
    assert not healthy.all_diverged and not healthy.summary.startswith("every member diverged")


# --- the block runtime ------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["bp", "dgl", "sg"])
def test_block_runtime_freezes_and_reports_a_diverging_member(task, rule):
    net = local.make_block_network([10, 16, 16, 4], 3, seed=0)
    if rule == "sg":
        net = local.attach_synthetic_gradients(net)
    lr = np.array([0.05, 1e5, 0.05])
    runs = [parallel.train_blocks(net, parallel.BatchPlan(task, 32, 30, seed=0), rule=rule, lr=lr,
                                  workers=w, snapshot_every=10) for w in (1, 3)]
    for res in runs:
        assert [d.member for d in res.diverged] == [1]
        assert res.diverged[0].reason in (EXCEEDED, "loss became non-finite", "weights became non-finite")
        acc = res.accuracy(task.x, task.y)
        assert np.isnan(acc[1]) and np.all(np.isfinite(acc[[0, 2]]))
        assert np.isnan(res.accuracy(task.x, task.y, snapshot=res.n_snapshots() - 1)[1])
        for losses in res.losses:
            if losses.size:
                assert np.isnan(losses[-1, 1]) and np.all(np.isfinite(losses[:, [0, 2]]))
        for params in res.network.params:
            assert all(np.all(np.isfinite(p)) for p in params)
    # the schedule stays deterministic: any assignment of blocks to workers gives the same weights
    for a, b in zip(runs[0].network.params, runs[1].network.params):
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    assert runs[0].diverged == runs[1].diverged


# --- layerwise training -----------------------------------------------------------------------------

def _images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    images = rng.normal(size=(n, 8, 8)) + labels[:, None, None]
    return images, labels


def test_patch_training_freezes_and_reports_a_diverging_member():
    images, labels = _images()
    net = init_patch_network((8, 8, 1), [4], 3, 2, patch_size=2, seed=0, kind="flatten")
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, losses = train_patch_network(net, images[..., None], np.eye(3)[labels], steps=40, lr=1e6,
                                          batch_size=16, momentum=0.0, divergences=found, record_every=1)
    assert {d.member for d in found} == {0, 1}
    assert np.all(np.isnan(losses[-1]))
    assert all(np.all(np.isfinite(p)) for p in out.parameters)


def test_greedy_layerwise_reports_divergence():
    images, labels = _images()
    found = []
    fit_greedy(images, labels, depth=2, n_classes=3, patch_size=2, n_members=2, seed=0, divergences=found,
               settings=TrainSettings(hidden=4, steps=20, batch_size=16, lr=1e6, momentum=0.0))
    assert {d.member for d in found} == {0, 1}
    assert all(d.reason in (EXCEEDED, "loss became non-finite", "weights became non-finite") for d in found)
    quiet = []
    fit_greedy(images, labels, depth=2, n_classes=3, patch_size=2, n_members=2, seed=0, divergences=quiet,
               settings=TrainSettings(hidden=4, steps=20, batch_size=16, lr=0.01))
    assert quiet == []
