r"""Teacher tasks: linear teachers with a chosen spectrum, the Lillicrap task, a nonlinear teacher.

All draws come from the run's shared ``"data"`` seed stream
(:func:`sim.backend.shared_rng`), so every member of an ensemble sees the same
data and a task is reproducible from its seed alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backend import check_memory, shared_rng

#: The kinds of dataset: real targets (loss ``mse``) or one-hot targets (loss ``ce``).
KINDS = ("regression", "classification")


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` ``(N, n_0)`` and targets ``y`` ``(N, n_L)`` on the host.

    ``kind`` is ``"regression"`` (targets are real vectors, loss ``mse``) or
    ``"classification"`` (targets are one-hot, loss ``ce``). ``info`` holds
    the task's ground truth (teacher matrices, singular values, ...).
    """

    x: np.ndarray
    y: np.ndarray
    kind: str
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown dataset kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        for name in ("x", "y"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):  # a list is natural from Python: make it an array
                value = np.asarray(value, dtype=float)
                object.__setattr__(self, name, value)
            if getattr(value, "ndim", None) != 2:
                raise ValueError(f"{name} must be a 2-D array (samples, features), got shape "
                                 f"{getattr(value, 'shape', type(value).__name__)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if self.kind == "classification":
            y = np.asarray(self.y)
            one_hot = bool(np.all((y == 0) | (y == 1))) and bool(np.all(y.sum(axis=1) == 1))
            if not one_hot:
                raise ValueError("classification targets y must be one-hot (each row one 1, the rest 0); "
                                 "use kind='regression' for real-valued targets")

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.x.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y.shape[1]

    def split(self, n_first: int) -> tuple[Dataset, Dataset]:
        """The first ``n_first`` samples and the rest (for example train and test), same kind and info."""
        if isinstance(n_first, bool) or int(n_first) != n_first or not 0 < n_first < self.n_samples:
            raise ValueError(f"split needs 0 < n_first < {self.n_samples}, got {n_first!r}")
        n = int(n_first)
        return (Dataset(self.x[:n], self.y[:n], self.kind, self.info),
                Dataset(self.x[n:], self.y[n:], self.kind, self.info))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _random_orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, k)))
    return q * np.sign(np.diag(r))


def whitened_gaussian(rng: np.random.Generator, n_samples: int, n_inputs: int) -> np.ndarray:
    r"""Gaussian inputs transformed so that exactly :math:`X^T X / N = I` (needs ``N >= n``)."""
    x = rng.normal(size=(n_samples, n_inputs))
    x -= x.mean(axis=0)
    evals, evecs = np.linalg.eigh(x.T @ x / n_samples)
    return x @ evecs @ np.diag(evals ** -0.5) @ evecs.T


def linear_teacher(n_inputs: int, n_outputs: int, singular_values: Sequence[float], n_samples: int, *,
                   seed: int = 0, noise: float = 0.0) -> Dataset:
    r"""The Saxe et al. (2013) setting: whitened inputs and a linear teacher of chosen spectrum.

    The teacher is :math:`W^* = U \operatorname{diag}(s) V^T` with random
    orthonormal ``U`` ``(n_out, r)`` and ``V`` ``(n_in, r)``, ``r = len(s)``;
    inputs satisfy :math:`X^T X/N = I` exactly, so the input-output correlation
    :math:`\Sigma_{yx} = Y^T X / N` equals :math:`W^*` when ``noise = 0``.
    ``info`` holds ``teacher``, ``U``, ``V`` and ``singular_values``.
    """
    n_inputs, n_outputs, n_samples = (_positive_int(k, v) for k, v in
                                      (("n_inputs", n_inputs), ("n_outputs", n_outputs),
                                       ("n_samples", n_samples)))
    s = np.asarray(singular_values, dtype=float)
    if s.ndim != 1 or s.size < 1 or s.size > min(n_inputs, n_outputs) or np.any(s <= 0):
        raise ValueError(f"singular_values must be 1 to {min(n_inputs, n_outputs)} positive numbers, got {s}")
    if n_samples < n_inputs:
        raise ValueError(f"whitened inputs need n_samples >= n_inputs ({n_inputs}), got {n_samples}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    check_memory(8 * 3 * n_samples * (n_inputs + n_outputs), f"a linear-teacher dataset of {n_samples} samples")
    rng = shared_rng(seed, "data")
    u = _random_orthonormal(rng, n_outputs, s.size)
    v = _random_orthonormal(rng, n_inputs, s.size)
    teacher = u @ np.diag(s) @ v.T
    x = whitened_gaussian(rng, n_samples, n_inputs)
    y = x @ teacher.T + noise * rng.normal(size=(n_samples, n_outputs))
    return Dataset(x, y, "regression", {"teacher": teacher, "U": u, "V": v, "singular_values": s})


def lillicrap_linear(n_samples: int = 1000, *, seed: int = 0, n_inputs: int = 30, n_outputs: int = 10) -> Dataset:
    r"""The Lillicrap et al. (2016) linear task for the 30-20-10 network.

    Targets :math:`y = T x` for a fixed random :math:`T` with entries uniform on
    ``[-1, 1]`` and Gaussian inputs :math:`x \sim \mathcal N(0, I)`.
    ``info["teacher"]`` holds ``T``.
    """
    n_samples = _positive_int("n_samples", n_samples)
    check_memory(8 * 2 * n_samples * (n_inputs + n_outputs), f"the Lillicrap task with {n_samples} samples")
    rng = shared_rng(seed, "data")
    teacher = rng.uniform(-1.0, 1.0, size=(n_outputs, n_inputs))
    x = rng.normal(size=(n_samples, n_inputs))
    return Dataset(x, x @ teacher.T, "regression", {"teacher": teacher})


def teacher_classification(n_samples: int = 2000, *, seed: int = 0, n_inputs: int = 20, n_hidden: int = 30,
                           n_classes: int = 5, gain: float = 2.0) -> Dataset:
    r"""A nonlinear teacher classification task.

    A random one-hidden-layer tanh teacher
    :math:`z = A \tanh(g\, W x/\sqrt{n_{in}})` labels Gaussian inputs by
    :math:`\arg\max_k z_k`; targets are one-hot. ``gain`` sets how nonlinear the
    teacher is. ``info`` holds the teacher's ``W`` and ``A`` and the ``labels``.
    """
    n_samples, n_inputs, n_hidden = (_positive_int(k, v) for k, v in
                                     (("n_samples", n_samples), ("n_inputs", n_inputs), ("n_hidden", n_hidden)))
    n_classes = _positive_int("n_classes", n_classes)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    check_memory(8 * 2 * n_samples * (n_inputs + n_hidden + 2 * n_classes),
                 f"a teacher classification dataset of {n_samples} samples")
    rng = shared_rng(seed, "data")
    w = rng.normal(size=(n_hidden, n_inputs))
    a = rng.normal(size=(n_classes, n_hidden)) / np.sqrt(n_hidden)
    x = rng.normal(size=(n_samples, n_inputs))
    labels = np.argmax(np.tanh(gain * x @ w.T / np.sqrt(n_inputs)) @ a.T, axis=1)
    return Dataset(x, np.eye(n_classes)[labels], "classification", {"W": w, "A": a, "labels": labels})


TASKS = {
    "linear-teacher": linear_teacher,
    "lillicrap-linear": lillicrap_linear,
    "teacher-classification": teacher_classification,
}


def make_task(name: str, **settings) -> Dataset:
    """Build a registered task by name (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[name](**settings)
