"""A metric of a sweep against a swept setting: the mean over seed replicates and a band of one std."""

from __future__ import annotations

import numpy as np


def plot_metric(table, x: str, y: str, *, hue: str | None = None, logx: bool | None = None,
                logy: bool = False, title: str | None = None):
    """A figure of ``y`` against ``x``, one line per value of ``hue``: mean over seeds, band of one std.

    Only rows with ``status == "complete"`` count; swept settings other than
    ``x`` and ``hue`` are pooled, and the title says so. ``logx`` defaults to a
    log axis when ``x`` is positive and spans a factor of 20 or more.
    Raises ``ValueError`` naming the columns when ``x``, ``y`` or ``hue`` is not one.
    """
    from ..plots import new_figure

    for flag, column in (("--x", x), ("--y", y), ("--hue", hue)):
        if column is not None and column not in table.columns:
            raise ValueError(f"{flag} {column!r} is not a column of the sweep's table; columns: "
                             f"{', '.join(map(str, table.columns))}")
    done = table[table["status"] == "complete"]
    if done.empty:
        raise ValueError("the sweep has no complete point yet")
    fig, (ax,) = new_figure(1, width=5.2, height=3.8)
    numeric = np.issubdtype(done[x].dtype, np.number)
    categories = sorted(done[x].unique(), key=_order) if not numeric else None
    groups = done.groupby(hue, sort=True) if hue is not None else [(None, done)]
    for i, (value, rows) in enumerate(groups):
        stats = rows.groupby(x, sort=True)[y].agg(["mean", "std", "count"])
        if not numeric:
            stats = stats.reindex([c for c in categories if c in stats.index])
        positions = stats.index.to_numpy(float) if numeric else np.array([categories.index(c) for c in stats.index])
        mean, std = stats["mean"].to_numpy(float), np.nan_to_num(stats["std"].to_numpy(float))
        label = f"{hue} = {value}" if hue is not None else None
        ax.plot(positions, mean, marker="o", color=f"C{i % 10}", label=label)
        ax.fill_between(positions, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2, lw=0)
    if numeric:
        values = done[x].to_numpy(float)
        if logx is None:
            logx = bool(np.all(values > 0) and values.max() >= 20 * values.min())
        if logx:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    if logy:
        ax.set_yscale("log")
    swept = [c for c in table.columns[: list(table.columns).index("seed")] if c not in (x, hue)]
    pooled = f"; pooled over {', '.join(swept)}" if swept else ""
    ax.set(xlabel=x, ylabel=y, title=title or f"{y}: mean and std over seeds{pooled}")
    if hue is not None:
        ax.legend(fontsize=8)
    return fig


def _order(value):
    import json

    try:
        return (0, json.loads(value)) if isinstance(value, str) else (0, value)
    except ValueError:
        return (1, str(value))
