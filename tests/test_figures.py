"""Every figure the project draws follows its conventions (:func:`sim.plots.figure_problems`).

Each registered experiment runs at its quick size with two seeds (smaller still where
it is slow) and every claim with a figure runs its quick check, as ``bbp run --quick``
and ``bbp verify --quick --report`` do; their figures are then drawn and checked: a
title, labelled axes, every series named in a legend and legends that tell them apart,
the meaning of bands stated, bands of bounded quantities in range, nothing overlapping.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from sim.cli import _experiments
from sim.experiments import Context, run_experiment
from sim.plots import band_note, figure_problems, mean_and_spread, new_figure

EXPERIMENTS = sorted(_experiments())

#: Settings on top of the quick ones, for the experiments that are slow even then.
SMALLER = {
    "layer-parallel": {"epochs": 1, "n_train": 512, "n_test": 256, "throughput_batches": 4},
    "hier-layerwise": {"sample_sizes": [30, 60], "n_test": 150, "steps": 40, "baseline_steps": 30, "mlp_width": 16,
                       "random_features": 64, "compare_embeddings": ["label"], "presets": ["arrangements"]},
    "dfa-nonlinear": {"steps": 400},
    "convex-layerwise": {"n_train": 40, "n_test": 100, "sgd_epochs": 2, "arrangements": 8},
    "sg-nonlinear": {"steps": 400},
    "sg-regression": {"steps": 600, "net_steps": 600, "widths": [1, 2, 8]},
    "dfa-alignment": {"steps": 200},
    "hier-digits-samples": {"speed_samples": 2000},
    "mnist1d-rules": {"steps": 40, "record_every": 20, "n_train": 990, "n_test": 500, "cnn_rules": ["bp", "kp"],
                      "cnn_lrs": [0.1, 0.1], "cnn_steps": 40},
    "real-rules": {"dataset": "mnist1d", "steps": 40, "record_every": 20, "n_train": 500, "n_test": 300},
}


def _smaller(name: str) -> dict:
    exp = _experiments()[name]
    return {k: v for k, v in SMALLER.get(name, {}).items() if k in exp.defaults}


def test_every_experiment_is_covered():
    assert EXPERIMENTS and set(SMALLER) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_figures_follow_the_conventions(name):
    _, result = run_experiment(name, context=Context(quick=True, n_seeds=2, progress=False), overrides=_smaller(name))
    assert result.figures, f"{name} draws no figure"
    problems = [p for fig_name, fig in result.figures.items() for p in figure_problems(fig, name=fig_name)]
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def report_outcomes():
    from theory.claims import REGISTRY, load_claims, verify

    load_claims()
    ids = [cid for cid, c in REGISTRY.items() if c.plot is not None]
    return verify(ids, quick=True)


def test_the_hierarchical_and_local_claims_are_among_the_report_figures(report_outcomes):
    drawn = {o.id for o in report_outcomes}
    from theory.claims import REGISTRY

    wanted = {cid for cid in REGISTRY if cid.startswith(("hier.", "local."))}
    assert len(wanted) >= 13 and wanted <= drawn


def test_report_figures_follow_the_conventions(report_outcomes, tmp_path):
    from theory.claims import REGISTRY
    from theory.report import draw_figure

    problems = []
    for outcome in report_outcomes:
        assert outcome.result is not None, f"{outcome.id}: {outcome.message}"
        fig = draw_figure(REGISTRY[outcome.id], outcome)
        problems += figure_problems(fig, name=outcome.id)
    assert not problems, "\n".join(problems)


# --- the check itself catches what it should ---------------------------------------------------------

def _good():
    fig, (ax,) = new_figure(1)
    steps = np.arange(10)
    mean_and_spread(ax, steps, np.linspace(0.2, 0.9, 20).reshape(10, 2), label="BP", clip=(0, 1))
    ax.set(xlabel="step", ylabel="test accuracy", title=f"accuracy ({band_note(2)})")
    ax.legend()
    return fig, ax


def _crowd_the_legend(ax):
    """A legend of many entries in the middle of the data."""
    ax.plot(np.arange(10), np.linspace(0.2, 0.9, 10), "o", color="C0", label="BP (points)")
    for i in range(12):
        ax.plot([], [], label=f"series {i}")
    ax.legend(loc="center")


def test_a_figure_that_follows_the_conventions_passes():
    fig, _ = _good()
    assert figure_problems(fig) == []


@pytest.mark.parametrize("breakage, message", [
    (lambda fig, ax: ax.set_title(""), "no title"),
    (lambda fig, ax: ax.set_xlabel(""), "unlabelled x axis"),
    (lambda fig, ax: ax.plot([0, 9], [0.1, 0.5], color="C5"), "not named in a legend"),
    (lambda fig, ax: (ax.plot([0, 9], [0.1, 0.5], color="C0", label="FA"), ax.legend()), "look the same"),
    (lambda fig, ax: ax.fill_between([0, 9], [-0.2, -0.1], [1.1, 1.2], color="C0"), "outside the valid range"),
    (lambda fig, ax: ax.text(0, 1.0, "a note", transform=ax.transAxes, va="bottom", fontsize=20), "overlaps"),
    (lambda fig, ax: ax.set_xticks(np.linspace(0, 9, 60)), "xtick of axes 0 overlaps xtick"),
    (lambda fig, ax: ax.set_title("accuracy"), "bands without a note"),
    (lambda fig, ax: _crowd_the_legend(ax), "the legend covers"),
    (lambda fig, ax: ax.set_ylim(0.5, 1.0), "outside the y limits"),
])
def test_the_check_catches(breakage, message):
    fig, ax = _good()
    breakage(fig, ax)
    problems = figure_problems(fig)
    assert any(message in p for p in problems), problems


def test_overlapping_axes_are_caught():
    fig = Figure(figsize=(4, 3))
    for k in range(2):
        ax = fig.add_axes((0.1 + 0.2 * k, 0.1 + 0.1 * k, 0.6, 0.6))
        ax.plot([0, 1], [0, 1], label="x")
        ax.set(xlabel="a", ylabel="b", title=f"panel {k}")
        ax.legend()
    assert any("overlap" in p for p in figure_problems(fig))
