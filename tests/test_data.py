"""Teacher tasks (sim.data): exact whitening, the teacher's correlation, one-hot targets, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from sim.data import TASKS, Dataset, lillicrap_linear, linear_teacher, make_task, teacher_classification

EPS = float(np.finfo(np.float64).eps)


def test_linear_teacher_inputs_are_whitened_and_correlation_is_the_teacher():
    n_in, n_out, n = 6, 4, 50
    s = np.array([3.0, 2.0, 0.5])
    data = linear_teacher(n_in, n_out, s, n, seed=3)
    assert isinstance(data, Dataset) and data.kind == "regression"
    assert (data.n_samples, data.n_inputs, data.n_outputs) == (n, n_in, n_out)
    x, y = data.x, data.y
    # whitening is exact up to rounding of an O(n * n_in) computation
    tol = 16 * EPS * (n + n_in)
    np.testing.assert_allclose(x.T @ x / n, np.eye(n_in), rtol=0, atol=tol)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=tol)
    teacher = data.info["teacher"]
    np.testing.assert_allclose(y.T @ x / n, teacher, rtol=0, atol=tol * s.max())
    # the teacher is U diag(s) V^T with orthonormal frames, so its singular values are s
    u, v = data.info["U"], data.info["V"]
    np.testing.assert_allclose(u.T @ u, np.eye(s.size), rtol=0, atol=tol)
    np.testing.assert_allclose(v.T @ v, np.eye(s.size), rtol=0, atol=tol)
    np.testing.assert_allclose(u @ np.diag(s) @ v.T, teacher, rtol=0, atol=tol * s.max())
    sv = np.linalg.svd(teacher, compute_uv=False)
    np.testing.assert_allclose(sv[:s.size], np.sort(s)[::-1], rtol=tol)
    np.testing.assert_allclose(sv[s.size:], 0.0, atol=tol * s.max())
    np.testing.assert_array_equal(data.info["singular_values"], s)


def test_linear_teacher_noise():
    n_in, n_out, n, noise = 5, 3, 4000, 0.1
    clean = linear_teacher(n_in, n_out, [1.0, 0.5], n, seed=1)
    noisy = linear_teacher(n_in, n_out, [1.0, 0.5], n, seed=1, noise=noise)
    np.testing.assert_array_equal(clean.x, noisy.x)
    np.testing.assert_array_equal(clean.info["teacher"], noisy.info["teacher"])
    residual = noisy.y - noisy.x @ noisy.info["teacher"].T
    # the residual is the noise: std `noise`, within 6 standard errors of n * n_out draws
    np.testing.assert_allclose(residual.std(), noise, rtol=6 * np.sqrt(2.0 / (n * n_out)))


def test_tasks_are_reproducible_from_their_seed():
    builders = [
        lambda seed: linear_teacher(4, 3, [1.0], 10, seed=seed),
        lambda seed: lillicrap_linear(20, seed=seed),
        lambda seed: teacher_classification(20, seed=seed),
    ]
    for build in builders:
        a, b, c = build(4), build(4), build(5)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.array_equal(a.x, c.x)


def test_lillicrap_linear():
    data = lillicrap_linear(200, seed=2)
    assert data.x.shape == (200, 30) and data.y.shape == (200, 10) and data.kind == "regression"
    t = data.info["teacher"]
    assert t.shape == (10, 30)
    assert np.all(np.abs(t) <= 1.0)
    np.testing.assert_allclose(data.y, data.x @ t.T, rtol=0, atol=0)
    small = lillicrap_linear(10, seed=2, n_inputs=4, n_outputs=2)
    assert small.x.shape == (10, 4) and small.y.shape == (10, 2)


def test_teacher_classification_targets_are_one_hot_labels_of_the_teacher():
    n, n_in, n_hidden, n_classes, gain = 500, 7, 9, 4, 2.0
    data = teacher_classification(n, seed=6, n_inputs=n_in, n_hidden=n_hidden, n_classes=n_classes, gain=gain)
    assert data.kind == "classification"
    y = data.y
    assert y.shape == (n, n_classes)
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(axis=1), np.ones(n))
    labels = np.argmax(y, axis=1)
    np.testing.assert_array_equal(labels, data.info["labels"])
    w, a = data.info["W"], data.info["A"]
    recomputed = np.argmax(np.tanh(gain * data.x @ w.T / np.sqrt(n_in)) @ a.T, axis=1)
    np.testing.assert_array_equal(labels, recomputed)
    # with this many samples every class occurs
    assert len(np.unique(labels)) == n_classes


def test_make_task():
    assert set(TASKS) == {"linear-teacher", "lillicrap-linear", "teacher-classification"}
    a = make_task("linear-teacher", n_inputs=3, n_outputs=2, singular_values=[1.0], n_samples=5, seed=1)
    b = linear_teacher(3, 2, [1.0], 5, seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    c = make_task("teacher-classification", n_samples=10, seed=2)
    np.testing.assert_array_equal(c.y, teacher_classification(10, seed=2).y)
    with pytest.raises(ValueError, match="unknown task 'mnist'.*linear-teacher"):
        make_task("mnist")


def test_task_errors():
    with pytest.raises(ValueError, match="whitened inputs need n_samples >= n_inputs"):
        linear_teacher(5, 2, [1.0], 4)
    with pytest.raises(ValueError, match="singular_values must be 1 to 2 positive numbers"):
        linear_teacher(5, 2, [1.0, 1.0, 1.0], 10)
    with pytest.raises(ValueError, match="singular_values must be 1 to 2 positive numbers"):
        linear_teacher(5, 2, [1.0, -1.0], 10)
    with pytest.raises(ValueError, match="singular_values must be"):
        linear_teacher(5, 2, [], 10)
    with pytest.raises(ValueError, match="noise must be non-negative"):
        linear_teacher(5, 2, [1.0], 10, noise=-0.1)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_inputs must be a positive integer"):
            linear_teacher(bad, 2, [1.0], 10)
        with pytest.raises(ValueError, match="n_samples must be a positive integer"):
            lillicrap_linear(bad)
        with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
            teacher_classification(10, n_hidden=bad)
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        teacher_classification(10, n_classes=1)
    for seed in (-1, 0.5, "7", None):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            linear_teacher(3, 2, [1.0], 5, seed=seed)
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            lillicrap_linear(5, seed=seed)
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            teacher_classification(5, seed=seed)


def test_split_keeps_order_kind_and_info():
    full = teacher_classification(50, seed=1)
    first, rest = full.split(20)
    np.testing.assert_array_equal(np.concatenate([first.x, rest.x]), full.x)
    np.testing.assert_array_equal(np.concatenate([first.y, rest.y]), full.y)
    assert (first.n_samples, rest.n_samples) == (20, 30)
    assert first.kind == rest.kind == "classification" and first.info is full.info
    for bad in (0, 50, 2.5, True):
        with pytest.raises(ValueError, match="split needs"):
            full.split(bad)


def test_dataset_kind_and_one_hot_targets_are_checked():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="unknown dataset kind 'other'; allowed: regression, classification"):
        Dataset(x, np.zeros((3, 1)), "other")
    with pytest.raises(ValueError, match="classification targets y must be one-hot"):
        Dataset(x, np.full((3, 2), 0.5), "classification")
    with pytest.raises(ValueError, match="x has 3 samples but y has 2"):
        Dataset(x, np.eye(2), "classification")
    data = Dataset([[1.0, 2.0]], [[0.0, 1.0]], "classification")  # lists become arrays
    assert data.x.shape == (1, 2) and data.n_outputs == 2
