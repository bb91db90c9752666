"""Figures of the shell: curves of an ensemble as mean and spread (matplotlib, no pyplot state)."""

from __future__ import annotations

import warnings

import numpy as np

from .lazy import lazy_callable

Figure = lazy_callable("matplotlib.figure", "Figure")  # imported at the first figure (sim.lazy)


def new_figure(n_panels: int, *, width: float = 4.2, height: float = 3.4):
    """A figure with ``n_panels`` axes side by side (no global pyplot state)."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def mean_and_spread(ax, steps, values, *, label: str, color=None, log: bool = False, linestyle: str = "-",
                    clip: tuple[float, float] | None = None, marker: str | None = None):
    """Plot the member mean of ``values`` ``(T, E)`` and a band of one standard deviation.

    Non-finite entries (diverged members) are left out of the mean; with ``log``
    the mean and band are those of ``log10(values)``. ``clip = (lo, hi)`` clips the
    band to the valid range of a bounded quantity (:data:`ACCURACY_RANGE`,
    :data:`ANGLE_RANGE`, :data:`ARI_RANGE`); say so with :func:`band_note`.
    """
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v), v, np.nan)
    if log:
        v = np.log10(np.where(v > 0, v, np.nan))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step where every member diverged: nan, no warning
        mean, std = np.nanmean(v, axis=1), np.nanstd(v, axis=1)
    lo, hi = mean - std, mean + std
    if log:
        mean, lo, hi = 10 ** mean, 10 ** lo, 10 ** hi
        ax.set_yscale("log")
    if clip is not None:
        lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
    (line,) = ax.plot(steps, mean, label=label, color=color, linestyle=linestyle, marker=marker)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


# --- conventions every figure follows, and their check ---------------------------------------------

#: Valid range of a bounded quantity, found from the y label of its axes (lower case substring).
BOUNDED = {"accuracy": (0.0, 1.0), "rand index": (-0.5, 1.0), "ari": (-0.5, 1.0), "degrees": (0.0, 180.0)}

ACCURACY_RANGE = BOUNDED["accuracy"]
ANGLE_RANGE = BOUNDED["degrees"]
ARI_RANGE = BOUNDED["ari"]  # the adjusted Rand index is at least -1/2


def band_note(n_seeds: int | None = None, *, clipped: bool = True) -> str:
    """The sentence stating what a band means, for a title, a legend title or a caption."""
    over = f"over {n_seeds} seeds" if n_seeds is not None else "over seeds"
    return f"band: mean ± std {over}" + (", clipped to the valid range" if clipped else "")


def end_markers(ax, x, values, *, label: str, color=None, marker: str = "s"):
    """Mark the member mean of ``values`` ``(E,)`` at ``x`` with an error bar of one standard deviation.

    For a quantity measured once, at the end of training (a test accuracy beside the
    recorded training curve). Non-finite entries (diverged members) are left out.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return ax.errorbar([x], [v.mean()], yerr=[v.std()], fmt=marker, color=color, capsize=3, label=label)


def note_bands(fig, n_seeds: int | None = None, *, clipped: bool = True, title: str | None = None):
    """State what the figure's bands are, as its suptitle (after ``title`` when given)."""
    note = band_note(n_seeds, clipped=clipped)
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize="small" if not title else "medium")
    return fig


def legend_outside(ax, **kwargs):
    """A legend beside ``ax`` (right of it), for more entries than fit over the data."""
    kwargs.setdefault("fontsize", "small")
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _text_boxes(fig, renderer):
    """``(owner, kind, bbox)`` of every visible, non-empty text of ``fig`` (a legend counts as one box)."""
    boxes, seen = [], set()

    def add(owner, kind, artist):
        if artist is None or not artist.get_visible() or id(artist) in seen:
            return
        seen.add(id(artist))
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        bbox = artist.get_window_extent(renderer)
        if bbox.width > 0 and bbox.height > 0:
            boxes.append((owner, kind, bbox))

    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for loc in ("left", "center", "right"):
            add(i, "title", {"left": ax._left_title, "center": ax.title, "right": ax._right_title}[loc])
        if ax.axison:
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                add(i, f"{name}label", axis.label)
                for tick in axis._update_ticks():  # the ticks drawn (inside the view limits)
                    for label in (tick.label1, tick.label2):
                        add(i, f"{name}tick", label)
        for text in ax.texts:
            add(i, "text", text)
        add(i, "legend", ax.get_legend())
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        add("figure", name.strip("_"), getattr(fig, name, None))
    for text in fig.texts:
        add("figure", "text", text)
    for legend in fig.legends:
        add("figure", "legend", legend)
    return boxes


def _overlap(a, b, tolerance: float = 1.0) -> bool:
    """Whether two display boxes overlap by more than ``tolerance`` pixels both ways."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def _is_reference_line(line) -> bool:
    """An unlabelled straight horizontal or vertical line (``axhline``, ``axvline``, a grid line)."""
    if not line.get_label().startswith("_"):
        return False
    x, y = (np.asarray(v, dtype=float) for v in line.get_data())
    return x.size > 0 and (np.ptp(x) == 0 or np.ptp(y) == 0)


def _style(artist):
    """What tells a legend entry apart: colour, line style and marker."""
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        return (to_rgba(artist.get_color()), artist.get_linestyle(), artist.get_marker())
    try:
        face = artist.get_facecolor()
        face = tuple(np.atleast_2d(face)[0]) if len(np.atleast_2d(face)) else None
    except (AttributeError, TypeError, ValueError):
        face = None
    try:
        edge = artist.get_edgecolor()
        edge = tuple(np.atleast_2d(edge)[0]) if len(np.atleast_2d(edge)) else None
    except (AttributeError, TypeError, ValueError):
        edge = None
    hatch = artist.get_hatch() if hasattr(artist, "get_hatch") else None
    return (face, edge, hatch, type(artist).__name__)


def _colours(artist) -> set:
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        return {tuple(np.round(to_rgb(artist.get_color()), 6))}
    out = set()
    for getter in ("get_facecolor", "get_edgecolor"):
        try:
            values = np.atleast_2d(getattr(artist, getter)())
        except (AttributeError, TypeError, ValueError):
            continue
        out |= {tuple(np.round(v[:3], 6)) for v in values if len(v) >= 3 and (len(v) < 4 or v[3] > 0)}
    return out


def _has_data(artist) -> bool:
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D

    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        x, y = (np.asarray(v, dtype=float) for v in artist.get_data())
        return bool(np.isfinite(x).any() and np.isfinite(y).any())
    if isinstance(artist, Collection):
        return bool(len(artist.get_paths()) or len(artist.get_offsets()))
    return True


def _cut_off(ax) -> int:
    """How many finite points of the lines of ``ax`` fall outside its y limits (beyond 1% of the span): data
    a fixed ``ylim`` silently cuts off. Reference lines (``axhline``) are drawn in axes coordinates and do not
    count."""
    lo, hi = sorted(ax.get_ylim())
    slack = 0.01 * (hi - lo)
    count = 0
    for line in ax.lines:
        if line.get_visible() and line.get_transform() is ax.transData and len(line.get_xydata()):
            y = np.asarray(line.get_xydata(), dtype=float)[:, 1]
            y = y[np.isfinite(y)]
            count += int(np.sum((y < lo - slack) | (y > hi + slack)))
    return count


def figure_problems(fig, *, name: str = "figure") -> list[str]:
    """What breaks the figure conventions of the project in ``fig``; empty when it follows them.

    The conventions, checked on the drawn figure:

    * every visible axes has a title, or the figure a suptitle; an axes with visible axis
      lines has labelled x and y axes (a colour bar one label);
    * every line, collection and patch with data is named in a legend (of its axes or of
      the figure), by its own label, by the label of the container it belongs to (error
      bars, bars), or by a named artist of the same colour in the same axes (one series
      drawn in pieces: per-seed trajectories, end markers, its band). Unlabelled straight
      horizontal or vertical lines are reference lines and need no entry;
    * entries of one legend look different (colour, line style, marker);
    * a figure with unlabelled filled bands says what they are (a text containing "band");
    * bands of bounded quantities stay in their range (:data:`BOUNDED`, from the y label);
    * no line of a bounded quantity is cut off by its y limits (linear axes; points beyond 1% of the span);
    * no two texts overlap (titles, axis and tick labels, annotations, legends), no text
      of one axes lies over another axes, axes do not overlap, and a legend inside its
      axes covers at most 5% of the data points.
    """
    from matplotlib.collections import FillBetweenPolyCollection, PolyCollection
    from matplotlib.legend import Legend

    problems = []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    suptitle = getattr(fig, "_suptitle", None)
    has_suptitle = suptitle is not None and suptitle.get_text().strip() != ""
    texts_of_figure = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")
                                                                and isinstance(a.get_text(), str)))
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for legend in legends:
        styles = {}
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if handle is None:
                continue
            style = _style(handle)
            if style in styles and styles[style] != text.get_text():
                problems.append(f"{name}: legend entries {styles[style]!r} and {text.get_text()!r} look the same")
            styles.setdefault(style, text.get_text())
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"{name}, axes {i} ({ax.get_title() or ax.get_title(loc='left') or 'untitled'})"
        titled = any(ax.get_title(loc=loc).strip() for loc in ("left", "center", "right"))
        is_colorbar = getattr(ax, "_colorbar", None) is not None
        if not (titled or has_suptitle or is_colorbar or not (ax.axison or ax.images)):
            problems.append(f"{where}: no title (and no suptitle)")
        if ax.axison and not ax.images:
            xlabel, ylabel = ax.get_xlabel().strip(), ax.get_ylabel().strip()
            if is_colorbar and not (xlabel or ylabel):
                problems.append(f"{where}: colour bar without a label")
            elif not is_colorbar and not (xlabel and ylabel):
                problems.append(f"{where}: unlabelled {'x' if not xlabel else 'y'} axis")
        named = set()
        for legend in [ax.get_legend(), *fig.legends]:
            if legend is not None:
                named |= {t.get_text() for t in legend.get_texts()}
        covered = set()
        for container in ax.containers:
            if container.get_label() in named:
                covered |= {id(a) for a in container.get_children()}
        # a colour bar's own artists are its scale, named by its label
        artists = [] if is_colorbar else [a for a in [*ax.lines, *ax.collections, *ax.patches] if _has_data(a)]
        named_colours = set()
        for a in artists:
            if a.get_label() in named or id(a) in covered:
                named_colours |= _colours(a)
        for a in artists:
            if a.get_label() in named or id(a) in covered:
                continue
            if hasattr(a, "get_data") and _is_reference_line(a):
                continue
            if _colours(a) and _colours(a) <= named_colours:
                continue
            kind = type(a).__name__
            problems.append(f"{where}: a {kind} ({a.get_label()!r}) is not named in a legend")
        if any(isinstance(a, FillBetweenPolyCollection) and not a.get_label() in named for a in artists) \
                and "band" not in texts_of_figure:
            problems.append(f"{where}: filled bands without a note saying what they are")
        bounds = next((r for key, r in BOUNDED.items() if key in ax.get_ylabel().lower()), None)
        if bounds is not None:
            cut = _cut_off(ax) if ax.get_yscale() == "linear" else 0
            if cut:
                problems.append(f"{where}: {cut} points of the lines lie outside the y limits (the valid range of "
                                f"{ax.get_ylabel()!r} is {bounds})")
            for a in artists:
                if isinstance(a, FillBetweenPolyCollection):
                    y = np.concatenate([p.vertices[:, 1] for p in a.get_paths()] or [np.zeros(0)])
                    y = y[np.isfinite(y)]
                    if y.size and (y.min() < bounds[0] - 1e-9 or y.max() > bounds[1] + 1e-9):
                        problems.append(f"{where}: a band spans [{y.min():.3g}, {y.max():.3g}], outside the valid "
                                        f"range {bounds} of {ax.get_ylabel()!r}")
        lines = [a for a in ax.lines if a.get_label() in named and len(a.get_xydata()) > 1]
        for j, first in enumerate(lines):
            for second in lines[j + 1:]:
                p, q = (a.get_transform().transform(a.get_xydata()) for a in (first, second))
                same_style = (first.get_linestyle(), first.get_marker()) == (second.get_linestyle(), second.get_marker())
                if same_style and p.shape == q.shape and np.all(np.abs(p - q) < 2.0):
                    problems.append(f"{where}: {first.get_label()!r} and {second.get_label()!r} are drawn on top "
                                    "of each other (one is invisible)")
        legend = ax.get_legend()
        if legend is not None and isinstance(legend, Legend):
            box, axbox = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            if _overlap(box, axbox):
                points = []
                for a in artists:
                    if hasattr(a, "get_xydata") and not _is_reference_line(a):
                        points.append(a.get_transform().transform(a.get_xydata()))
                    elif hasattr(a, "get_offsets") and len(a.get_offsets()) and not isinstance(a, PolyCollection):
                        points.append(a.get_offset_transform().transform(a.get_offsets()))
                if points:
                    p = np.concatenate(points)
                    p = p[np.isfinite(p).all(axis=1)]
                    inside = ((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0) & (p[:, 1] < box.y1))
                    if p.size and inside.mean() > 0.05:
                        problems.append(f"{where}: the legend covers {inside.mean():.0%} of the data points")
    for patch in fig.patches:
        labels = {t.get_text() for lg in legends for t in lg.get_texts()}
        if patch.get_label() not in labels:
            problems.append(f"{name}: a figure-level {type(patch).__name__} is not named in a legend")
    boxes = _text_boxes(fig, renderer)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (oa, ka, ba), (ob, kb, bb) = boxes[a], boxes[b]
            if _overlap(ba, bb):
                problems.append(f"{name}: {ka} of axes {oa} overlaps {kb} of axes {ob}")
    areas = [(i, ax.get_window_extent(renderer)) for i, ax in enumerate(fig.axes) if ax.get_visible()]
    for owner, kind, box in boxes:
        for i, area in areas:
            if owner != i and _overlap(box, area, tolerance=2.0):
                problems.append(f"{name}: {kind} of axes {owner} lies over axes {i}")
    for a in range(len(areas)):
        for b in range(a + 1, len(areas)):
            if _overlap(areas[a][1], areas[b][1]):
                problems.append(f"{name}: axes {areas[a][0]} and {areas[b][0]} overlap")
    return problems
