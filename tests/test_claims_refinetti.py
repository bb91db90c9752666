"""Refinetti et al. claims (theory.claims.refinetti); generic tests in test_claims.py, strictness in
test_claims_strict.py."""

from __future__ import annotations

import numpy as np

from theory.claims import refinetti as rf
from theory.claims import REGISTRY, load_claims

load_claims()


def test_the_module_registers_its_claims():
    ids = {c.id for c in REGISTRY.values() if c.check.__module__ == rf.__name__}
    assert ids == {"refinetti.degeneracy_breaking", "refinetti.bottom_to_top"}


def test_half_alignment_steps():
    steps = np.arange(5)
    # two layers: the first reaches its minimum 30 degrees at step 1, the second its minimum 50 at step 3
    angles = np.array([[90, 90], [30, 90], [30, 80], [30, 50], [30, 50]], dtype=float)[:, None, :]
    np.testing.assert_array_equal(rf.half_alignment_steps(angles, steps), [[1, 3]])


def test_bottom_to_top_details_and_plot():
    from sim.plots import new_figure

    c = REGISTRY["refinetti.bottom_to_top"]
    result = c.check(0, 1)
    assert result.passed and result.tasks == 1 and result.members == rf.B2T_MEMBERS
    times = result.details["half_steps"]
    assert np.all(times[:, 0] <= times[:, -1])
    fig, (ax,) = new_figure(1)
    c.plot(result, ax)
    assert ax.lines
