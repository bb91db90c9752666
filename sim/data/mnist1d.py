r"""MNIST-1D (Greydanus 2020) as a task, generated offline by the ``mnist1d`` package.

The package builds the dataset from ten hand-made 1-D templates (one per
digit): each sample is a template padded, sheared, scaled, translated, with
correlated and i.i.d. noise added, and resampled to 40 points; the whole
dataset is then centred and scaled to unit variance (one scalar each). Its
default arguments (5,000 samples, 4,000 for training and 1,000 for testing,
seed 42) give the canonical dataset of the paper, whose published test
accuracies are :data:`PUBLISHED_BASELINES`.

:func:`mnist1d` calls the package's own generator (it never downloads: the
package's ``get_dataset`` would fetch a pickle from the network, this does
not) and returns :class:`Dataset` pairs with one-hot targets. The package
seeds numpy's and Python's global generators; their states are restored
afterwards, so calling it does not disturb other random draws.
"""

from __future__ import annotations

import random

import numpy as np

from .tasks import Dataset

#: The package's default dataset: 4,000 training and 1,000 test samples of 40 points, seed 42.
CANONICAL = {"n_train": 4000, "n_test": 1000, "seed": 42}
N_CLASSES = 10
N_POINTS = 40

#: Test accuracies the package's authors published for the canonical dataset (Greydanus 2020, and the
#: ``mnist1d`` README), in percent.
PUBLISHED_BASELINES = {"logistic regression": 32.0, "MLP": 68.0, "CNN": 94.0, "GRU": 91.0, "human": 96.0}


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def mnist1d(n_train: int = CANONICAL["n_train"], n_test: int = CANONICAL["n_test"], *,
            seed: int = CANONICAL["seed"], **overrides) -> tuple[Dataset, Dataset]:
    """MNIST-1D training and test sets from the ``mnist1d`` package's generator.

    Parameters
    ----------
    n_train, n_test : int
        Sizes of the two splits; ``n_train + n_test`` must be a multiple of 10
        (the package draws the same number of samples per class). The default,
        4,000 and 1,000 with ``seed=42``, is the package's canonical dataset.
    seed : int
        The package's seed (it seeds numpy's global generator; its state is
        restored afterwards).
    **overrides
        Other arguments of the package's generator (``mnist1d.data.get_dataset_args``:
        ``template_len``, ``padding``, ``scale_coeff``, ``max_translation``,
        ``corr_noise_scale``, ``iid_noise_scale``, ``shear_scale``,
        ``shuffle_seq``, ``final_seq_length``).

    Returns
    -------
    (Dataset, Dataset)
        ``x`` ``(N, final_seq_length)`` (40 points by default), ``y`` one-hot
        ``(N, 10)``, kind ``classification``; ``info`` holds the integer
        ``labels`` and the generator's arguments.

    Raises
    ------
    ValueError
        Bad sizes, an unknown generator argument, or the package missing.
    """
    n_train, n_test = _check_count("n_train", n_train, 1), _check_count("n_test", n_test, 1)
    seed = _check_count("seed", seed, 0)
    total = n_train + n_test
    if total % N_CLASSES:
        raise ValueError(f"n_train + n_test must be a multiple of {N_CLASSES} (the package draws as many samples "
                         f"per class), got {n_train} + {n_test} = {total}")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # a dependency of the project, but say what to do if it is missing
        raise ValueError("MNIST-1D needs the package mnist1d: pip install mnist1d") from err
    args = get_dataset_args(as_dict=True)
    unknown = sorted(set(overrides) - (set(args) - {"num_samples", "train_split", "seed", "url"}))
    if unknown:
        allowed = sorted(set(args) - {"num_samples", "train_split", "seed", "url"})
        raise ValueError(f"unknown MNIST-1D argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    args.update(overrides, num_samples=total, train_split=n_train / total, seed=seed)

    class Args:  # the generator reads attributes
        pass

    view = Args()
    view.__dict__.update(args)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(view)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float64)
    labels = np.concatenate([raw["y"], raw["y_test"]]).astype(np.int64)
    y = np.eye(N_CLASSES)[labels]
    info = {"args": {k: v for k, v in args.items() if k != "url"}}
    train = Dataset(x[:n_train], y[:n_train], "classification", {**info, "labels": labels[:n_train]})
    test = Dataset(x[n_train:], y[n_train:], "classification", {**info, "labels": labels[n_train:]})
    return train, test


def standardize(train: Dataset, *others: Dataset) -> tuple[Dataset, ...]:
    r"""Standardise every feature with the mean and standard deviation of the training split only.

    :math:`x \mapsto (x - \mu) / \sigma` with :math:`\mu, \sigma` per feature
    over ``train`` (a feature with :math:`\sigma = 0` is only centred); the
    same map is applied to ``others``. Returns the new datasets, ``train``
    first; ``info`` gains ``standardize = (mean, std)``.
    """
    mean = train.x.mean(axis=0)
    std = train.x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    out = []
    for data in (train, *others):
        if data.x.shape[1] != mean.shape[0]:
            raise ValueError(f"cannot standardise a dataset of {data.x.shape[1]} features with statistics of "
                             f"{mean.shape[0]}")
        out.append(Dataset((data.x - mean) / std, data.y, data.kind, {**data.info, "standardize": (mean, std)}))
    return tuple(out)
