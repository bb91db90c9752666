"""Belilovsky et al. 2019 progressive linear separability (theory.claims.belilovsky); generic tests: test_claims.py."""

from __future__ import annotations

import numpy as np

from sim import local as sim_local
from theory.claims import REGISTRY, load_claims, sabotage_of
from theory.claims.belilovsky import blocks_ascend, clusters_task, probe_accuracy

load_claims()


def test_probe_separates_separable_data_and_not_xor():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    separable = np.eye(2)[(x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)]
    assert probe_accuracy(x, separable) == 1.0
    xor = np.eye(2)[((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)]
    assert probe_accuracy(x, xor) < 0.75


def test_clusters_task_uses_every_class():
    x, y = clusters_task(np.random.default_rng(1))
    assert x.shape == (160, 3) and y.shape == (160, 3) and np.all(y.sum(axis=0) > 0)


def test_sabotage_is_undone_and_breaks_the_claim():
    c = REGISTRY["belilovsky.progressive_separability"]
    saved = sim_local.local_step
    with blocks_ascend():
        assert sim_local.local_step is not saved
    assert sim_local.local_step is saved
    assert c.check(5, 1).passed
    with sabotage_of(c):
        assert not c.check(5, 1).passed
