"""MNIST-1D (sim.data.mnist1d) from the mnist1d package, offline, and the experiment mnist1d-rules."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sim.data import mnist1d, standardize
from sim.data.mnist1d import CANONICAL, PUBLISHED_BASELINES
from sim.experiments import Context, run_experiment


def test_canonical_split_is_the_package_default():
    train, test = mnist1d()
    assert (train.n_samples, test.n_samples) == (CANONICAL["n_train"], CANONICAL["n_test"]) == (4000, 1000)
    assert train.x.shape[1] == test.x.shape[1] == 40 and train.y.shape[1] == 10
    assert train.kind == "classification"
    np.testing.assert_array_equal(train.y.argmax(1), train.info["labels"])
    # the package centres and scales the whole dataset to unit variance (one scalar each)
    full = np.concatenate([train.x, test.x])
    np.testing.assert_allclose([full.mean(), full.std()], [0.0, 1.0], atol=1e-12)
    counts = np.bincount(np.concatenate([train.info["labels"], test.info["labels"]]), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 500))  # 5,000 samples, as many per class
    assert PUBLISHED_BASELINES["MLP"] == 68.0 and PUBLISHED_BASELINES["logistic regression"] == 32.0


def test_reproducible_and_global_generators_untouched():
    np.random.seed(123)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    a, _ = mnist1d(200, 100, seed=3)
    np.testing.assert_array_equal(np.random.get_state()[1], before_np)
    assert random.getstate() == before_py
    b, _ = mnist1d(200, 100, seed=3)
    c, _ = mnist1d(200, 100, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_overrides_reach_the_generator():
    train, test = mnist1d(60, 40, seed=0, final_seq_length=20)
    assert train.x.shape == (60, 20) and test.x.shape == (40, 20)
    assert train.info["args"]["final_seq_length"] == 20


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_train=0), "n_train must be an integer >= 1, got 0"),
    (dict(n_train=2.5), "n_train must be an integer >= 1, got 2.5"),
    (dict(n_train=95, n_test=10), "multiple of 10"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(noise=1.0), "unknown MNIST-1D argument.*noise.*allowed:.*shear_scale"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(n_train=60, n_test=40)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mnist1d(**args)


def test_standardize_fits_on_the_training_split_only():
    train, test = mnist1d(200, 100, seed=1)
    s_train, s_test = standardize(train, test)
    np.testing.assert_allclose(s_train.x.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(s_train.x.std(0), 1.0, rtol=1e-12)
    mean, std = s_train.info["standardize"]
    np.testing.assert_allclose(s_test.x, (test.x - train.x.mean(0)) / train.x.std(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s_test.y, test.y)
    assert not np.allclose(s_test.x.mean(0), 0.0, atol=1e-3)  # the test split's own statistics are not used
    with pytest.raises(ValueError, match="cannot standardise a dataset of 20 features with statistics of 40"):
        standardize(train, mnist1d(60, 40, final_seq_length=20)[1])


def test_experiment_learns_and_reports_every_rule():
    rules = ["bp", "usf", "kp", "drtp"]
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": rules, "lrs": [0.3, 0.03, 0.3, 0.03], "steps": 150,
                                          "record_every": 50, "n_train": 1000, "n_test": 500})
    for name in [*rules, "logistic"]:
        acc = result.metrics[name]["test_accuracy"]
        assert acc["mean"] is not None and len(acc["members"]) == 2
    assert result.metrics["bp"]["test_accuracy"]["mean"] > 0.25  # chance is 0.1
    assert len(result.metrics["kp"]["final_signal_angle_deg_per_layer"]) == 2
    assert result.arrays["bp_test_accuracy"].shape == (4, 2)
    assert "published" in result.summary


def test_experiment_settings_are_checked():
    with pytest.raises(ValueError, match=r"setting lrs=\[0.1\]: needs one step size per rule"):
        run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=1, progress=False),
                       overrides={"rules": ["bp", "fa"], "lrs": [0.1]})


def test_experiment_cnn_part():
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["bp"], "lrs": [0.3], "steps": 20, "record_every": 10,
                                          "n_train": 400, "n_test": 200, "cnn_rules": ["bp", "usf"],
                                          "cnn_lrs": [0.1, 0.01], "cnn_steps": 30})
    assert set(result.metrics["cnn"]) == {"bp", "usf"}
    assert result.arrays["cnn_bp_test_accuracy"].shape == (4, 2)
    assert "mnist1d_cnn" in result.figures and "CNN bp" in result.summary
    # per-layer alignment (3 convolutions and the read-out): BP's own update is at 0 degrees, usf's a real angle
    assert "mnist1d_cnn_alignment" in result.figures
    bp_angles = result.arrays["cnn_bp_gradient_angle"]
    assert bp_angles.shape == (4, 2, 4)
    np.testing.assert_allclose(bp_angles, 0.0, atol=1e-5)  # acos of a rounded 1: at most ~1e-6 degrees in float64
    usf = result.metrics["cnn"]["usf"]["final_gradient_angle_deg_per_layer"]
    assert len(usf) == 4 and all(0 < layer["mean"] < 180 for layer in usf[:3])
    np.testing.assert_allclose(usf[3]["mean"], 0.0, atol=1e-5)  # the read-out's update needs no feedback
    with pytest.raises(ValueError, match=r"setting cnn_lrs=\[\]: needs one step size per CNN rule"):
        run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=1, progress=False),
                       overrides={"cnn_rules": ["bp"]})


def test_experiment_cnn_with_adam_biases_and_pytorch_init():
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["bp"], "lrs": [0.3], "steps": 10, "record_every": 20, "n_train": 400,
                                          "n_test": 200, "cnn_rules": ["bp"], "cnn_lrs": [0.01], "cnn_steps": 60,
                                          "cnn_optimizer": "adam", "cnn_bias": True, "cnn_init": "uniform"})
    entry = result.metrics["cnn"]["bp"]
    assert entry["optimizer"] == "adam" and entry["lr"] == 0.01
    acc = result.arrays["cnn_bp_test_accuracy"]
    assert acc.shape == (4, 2) and np.all(acc[-1] > acc[0] + 0.1)  # Adam learns within 60 steps


def test_experiment_cnn_with_trained_modules():
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["bp"], "lrs": [0.3], "steps": 10, "record_every": 20, "n_train": 400,
                                          "n_test": 200, "cnn_rules": ["sg", "cdni", "dgl"],
                                          "cnn_lrs": [0.003, 0.003, 0.003], "cnn_steps": 100, "cnn_optimizer": "adam",
                                          "cnn_bias": True, "cnn_init": "uniform"})
    assert set(result.metrics["cnn"]) == {"sg", "cdni", "dgl"}
    for name in ("sg", "cdni", "dgl"):
        acc, angles = result.arrays[f"cnn_{name}_test_accuracy"], result.arrays[f"cnn_{name}_gradient_angle"]
        assert acc.shape == (6, 2) and angles.shape == (6, 2, 4) and not result.diverged
        assert np.all(acc[-1] > 0.25), (name, acc[-1])  # chance is 0.1
        np.testing.assert_allclose(angles[..., 3], 0.0, atol=1e-5)  # the read-out learns from the loss, as BP
        assert np.all((angles[-1, :, :3] > 0) & (angles[-1, :, :3] < 180))


def test_experiment_with_adam():
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["bp", "kp"], "optimizer": "adam", "adam_lr": 3e-3, "steps": 150,
                                          "record_every": 50, "n_train": 1000, "n_test": 500})
    assert result.metrics["bp"]["test_accuracy"]["mean"] > 0.25  # chance is 0.1; lrs (10 of them) are unused
    assert result.metrics["logistic"]["test_accuracy"]["mean"] > 0.2
    assert "trained by Adam (step 0.003)" in result.summary
    with pytest.raises(ValueError, match="optimizer"):
        run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=1, progress=False),
                       overrides={"optimizer": "rmsprop"})


def test_experiment_with_dgl():
    _, result = run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=2, progress=False),
                               overrides={"rules": ["dgl"], "lrs": [0.1], "steps": 100, "record_every": 50,
                                          "n_train": 1000, "n_test": 500})
    acc = result.metrics["dgl"]["test_accuracy"]
    assert acc["mean"] > 0.15 and len(acc["members"]) == 2  # chance is 0.1
    assert list(result.arrays["dgl_steps"]) == [50, 100] and result.arrays["dgl_test_accuracy"].shape == (2, 2)
    with pytest.raises(ValueError, match="rule dgl trains by SGD only"):
        run_experiment("mnist1d-rules", context=Context(quick=True, n_seeds=1, progress=False),
                       overrides={"rules": ["dgl"], "lrs": [0.1], "optimizer": "adam"})
