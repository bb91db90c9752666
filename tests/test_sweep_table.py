"""The sweep's table and figures (:mod:`sim.sweep.table`, :mod:`sim.sweep.plot`) on made-up tables: seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.plots import figure_problems


def test_a_column_may_be_named_with_its_parts_in_another_order_when_unambiguous():
    from sim.sweep.plot import find_column

    table = pd.DataFrame(columns=["lr", "seed", "dfa.final_loss", "bp.test_accuracy", "x.y.z", "z.y.x"])
    assert find_column(table, "final_loss.dfa", "--y") == "dfa.final_loss"
    assert find_column(table, "dfa.final_loss", "--y") == "dfa.final_loss"
    assert find_column(table, "test_accuracy.bp") == "bp.test_accuracy"
    assert find_column(table, "z.y.x") == "z.y.x"  # an exact name wins
    with pytest.raises(ValueError, match="--y 'y.x.z' is ambiguous: it matches the columns x.y.z, z.y.x"):
        find_column(table, "y.x.z", "--y")
    with pytest.raises(ValueError, match="--y 'final_loss.fa' is not a column of the sweep's table; columns: lr"):
        find_column(table, "final_loss.fa", "--y")


def test_statistics_of_lists_flatten_to_one_column_per_element():
    from sim.sweep.table import flatten_metrics

    per_seed, per_point = flatten_metrics({"acc": {"mean": [0.5, 0.75], "std": [0.0, 0.25]},
                                           "loss": {"mean": 1.0, "std": 0.5, "members": [0.5, 1.5]}}, 2)
    assert per_seed == {"loss": [0.5, 1.5]}
    assert per_point == {"acc.mean.0": 0.5, "acc.mean.1": 0.75, "acc.std.0": 0.0, "acc.std.1": 0.25}


def _phase_table() -> pd.DataFrame:
    rows = []
    for width in ("[8,8]", "[16,16]"):
        for scale in (0.5, 2.0):
            for seed in range(3):
                angle = 30 * scale + seed + (5 if width == "[16,16]" else 0)
                rows.append({"hidden": width, "init_scale": scale, "seed": seed, "dfa.angle": angle,
                             "dfa.test_accuracy": 0.5 + 0.01 * seed, "status": "complete", "seconds": 1.0,
                             "point": f"{width}-{scale}"})
    rows.append({**rows[0], "dfa.angle": 1e6, "status": "failed"})  # not complete: left out
    return pd.DataFrame(rows)


def test_a_phase_diagram_shows_the_mean_over_seeds_of_each_cell():
    from sim.sweep.plot import plot_phase

    fig = plot_phase(_phase_table(), "init_scale", "hidden", ["angle.dfa", "dfa.test_accuracy"],
                     labels=["DFA angle (degrees)", "DFA test accuracy"], title="made up")
    assert figure_problems(fig) == []
    image = fig.axes[0].images[0].get_array()
    # rows: hidden in order [8,8], [16,16]; columns: init_scale 0.5, 2.0; mean of seeds 0, 1, 2 adds 1
    np.testing.assert_allclose(image, [[16.0, 61.0], [21.0, 66.0]], rtol=1e-12)
    with pytest.raises(ValueError, match="labels must name every metric"):
        plot_phase(_phase_table(), "init_scale", "hidden", ["dfa.angle"], labels=["a", "b"])


def test_curves_of_points_with_different_layer_counts_align_padded_with_nan(tmp_path):
    from sim.sweep import run_sweep

    result = run_sweep("sg-nonlinear", {"hidden": ["[4]", "[4,4]"]}, seeds=1, quick=True, serial=True,
                       progress=False, out=tmp_path / "s",
                       settings={"steps": "10", "record_every": "5", "n_train": "40", "n_test": "20",
                                 "rules": '["bp", "sg"]'})
    assert result.computed == 2
    from sim.sweep import load_curves

    curves = load_curves(tmp_path / "s")
    angle = curves["bp_signal_angle"]
    assert angle.dims == ("point", "seed", "step", "bp_signal_angle_dim2") and angle.sizes["bp_signal_angle_dim2"] == 2
    one_layer = angle.sel(point=[p for p, h in zip(curves.point.values, curves.hidden.values) if h == "[4]"][0])
    assert np.isnan(one_layer.isel(bp_signal_angle_dim2=1)).all()
    assert np.isfinite(one_layer.isel(bp_signal_angle_dim2=0, step=slice(1, None))).all()


def test_a_metric_against_a_list_setting_is_drawn_by_category():
    from sim.sweep.plot import plot_metric

    table = _phase_table().astype({"hidden": "string"})  # lists are JSON text in the table (pandas strings)
    fig = plot_metric(table, "hidden", "angle.dfa", hue="init_scale")
    assert figure_problems(fig) == []
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[8,8]", "[16,16]"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [16.0, 21.0], rtol=1e-12)  # init_scale 0.5, mean of seeds
