"""A metric of a sweep against a swept setting: the mean over seed replicates and a band of one std."""

from __future__ import annotations

import numpy as np


def plot_metric(table, x: str, y: str, *, hue: str | None = None, logx: bool | None = None,
                logy: bool = False, title: str | None = None):
    """A figure of ``y`` against ``x``, one line per value of ``hue``: mean over seeds, band of one std.

    Only rows with ``status == "complete"`` count; swept settings other than
    ``x`` and ``hue`` are pooled, and the title says so. ``logx`` defaults to a
    log axis when ``x`` is positive and spans a factor of 20 or more.
    A column may be named with its dotted parts in another order
    (``final_loss.dfa`` for ``dfa.final_loss``) when exactly one column has
    those parts (:func:`find_column`). Raises ``ValueError`` naming the
    columns when ``x``, ``y`` or ``hue`` is not one.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    from ..plots import new_figure

    x, y = find_column(table, x, "--x"), find_column(table, y, "--y")
    hue = None if hue is None else find_column(table, hue, "--hue")
    done = table[table["status"] == "complete"]
    if done.empty:
        raise ValueError("the sweep has no complete point yet")
    fig, (ax,) = new_figure(1, width=5.2, height=3.8)
    numeric = is_numeric_dtype(done[x]) and not is_bool_dtype(done[x])  # lists are JSON text: categories
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
    ax.set(xlabel=x, ylabel=y, title=title or f"{y}: mean, band of one std over seeds{pooled}")
    if hue is not None:
        ax.legend(fontsize=8)
    return fig


def plot_phase(table, x: str, y: str, metrics: list[str], *, labels: list[str] | None = None,
               title: str | None = None, cmap: str = "viridis"):
    """A phase diagram: the mean over seed replicates of each metric on the grid of settings ``x`` by ``y``.

    One panel per metric (``labels`` name them on their colour bars), cells
    coloured by the mean over the complete rows of that ``(x, y)`` cell and
    annotated with it; swept settings other than ``x`` and ``y`` are pooled.
    Metric names go through :func:`find_column`.
    """
    from ..plots import new_figure

    x, y = find_column(table, x, "x"), find_column(table, y, "y")
    metrics = [find_column(table, m, "metric") for m in metrics]
    labels = list(labels or metrics)
    if len(labels) != len(metrics):
        raise ValueError(f"labels must name every metric ({len(metrics)}), got {len(labels)}")
    done = table[table["status"] == "complete"]
    if done.empty:
        raise ValueError("the sweep has no complete point yet")
    xs, ys = sorted(done[x].unique(), key=_order), sorted(done[y].unique(), key=_order)
    fig, axes = new_figure(len(metrics), width=4.4, height=3.6)
    for ax, metric, label in zip(axes, metrics, labels):
        mean = done.groupby([y, x])[metric].mean().unstack(x).reindex(index=ys, columns=xs).to_numpy(float)
        image = ax.imshow(mean, origin="lower", aspect="auto", cmap=cmap)
        for (i, j), value in np.ndenumerate(mean):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white",
                        bbox=dict(facecolor="black", alpha=0.35, lw=0, pad=0.5))
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=30, fontsize=8)
        ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=8)
        ax.set(xlabel=x, ylabel=y, title=label)
        fig.colorbar(image, ax=ax, label="mean over seeds")
    if title:
        fig.suptitle(title)
    return fig


def find_column(table, name: str, flag: str = "column") -> str:
    """The column of ``table`` called ``name``, or the one column with the same dotted parts in another order.

    The table nests metrics as the experiment does (``dfa.final_loss``,
    ``bp.test_accuracy``); ``final_loss.dfa`` finds ``dfa.final_loss`` as
    long as no other column has the parts ``{final_loss, dfa}``. Raises
    ``ValueError`` naming the candidates when there are several, or the
    columns when there is none.
    """
    columns = [str(c) for c in table.columns]
    if name in columns:
        return name
    parts = sorted(str(name).split("."))
    matches = [c for c in columns if sorted(c.split(".")) == parts]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{flag} {name!r} is ambiguous: it matches the columns {', '.join(matches)}")
    raise ValueError(f"{flag} {name!r} is not a column of the sweep's table; columns: {', '.join(columns)}")


def _order(value):
    import json

    try:
        return (0, json.loads(value)) if isinstance(value, str) else (0, value)
    except ValueError:
        return (1, str(value))
