r"""Figures of hierarchical samples: classes side by side, one image level by level (like the reference figure)."""

from __future__ import annotations

import numpy as np

from .grammar import Grammar, HierarchicalSample, _positive_int, _tile, render

def render_level(grammar: Grammar, grid: np.ndarray, level: int) -> np.ndarray:
    """Draw a level-``level`` symbol grid ``(N, m, m)`` as pixels, each symbol by its most likely variants, no noise."""
    grid = np.asarray(grid)
    for i in range(level, grammar.depth):
        best = np.argmax(np.asarray(grammar.variant_probs[i]), axis=1)
        patches = np.asarray(grammar.expansions[i])[grid, best[grid]]
        grid = _tile(patches, grammar.patch_size)
    return render(grammar, grid)


def plot_class_samples(sample: HierarchicalSample, n_per_class: int = 5, *, figure=None):
    """A grid of ``n_per_class`` images (rows) of every class (columns), like the reference's right panel."""
    from matplotlib.figure import Figure

    n_per_class = _positive_int("n_per_class", n_per_class)
    k = sample.grammar.n_classes
    fig = Figure(figsize=(1.0 * k, 1.05 * n_per_class + 0.3), layout="constrained") if figure is None else figure
    axes = fig.subplots(n_per_class, k, squeeze=False)
    for y in range(k):
        idx = np.flatnonzero(sample.labels == y)[:n_per_class]
        for r in range(n_per_class):
            ax = axes[r, y]
            if r < len(idx):
                ax.imshow(sample.images[idx[r]], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"y={y}", fontsize=10)
    fig.suptitle(f"hierarchical digits: {n_per_class} samples of each class y", fontsize="small")
    return fig


def plot_generation_levels(sample: HierarchicalSample, index: int = 0, *, cell=None, figure=None):
    """One image generated level by level, like the reference's left panel.

    Panels side by side: level 1 (each symbol drawn by its usual expansion, with
    the grid of level-1 cells), ..., level ``d`` (the drawn bottom symbols, noise
    free, with their grid), and the noisy pixels. An orange box marks one level-1
    cell (``cell = (row, col)``; default: the last one, from the bottom right, that
    holds ink) on every panel, and a red box the bottom-level cell at its centre;
    outside the orange box the symbol panels are dimmed. A legend under the panels
    names the boxes and the suptitle says what the panels show.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    g = sample.grammar
    d, s, side = g.depth, g.patch_size, g.image_size
    if not 0 <= index < sample.n_samples:
        raise ValueError(f"index must be in [0, {sample.n_samples}), got {index}")
    panels = [render_level(g, sample.latents[i][index:index + 1], i)[0] for i in range(1, d + 1)]
    panels.append(sample.images[index])
    cells = [side // s ** i for i in range(1, d + 1)] + [1]  # side of a cell of each panel, in pixels
    big = cells[0]
    if cell is None:
        order = [(r, c) for r in range(s - 1, -1, -1) for c in range(s - 1, -1, -1)]
        inked = [(r, c) for r, c in order if np.any(panels[0][r * big:(r + 1) * big, c * big:(c + 1) * big] != 0)]
        cell = inked[0] if inked else order[0]
    r1, c1 = (int(v) for v in cell)
    if not (0 <= r1 < s and 0 <= c1 < s):
        raise ValueError(f"cell must be a (row, col) of the {s} x {s} level-1 grid, got {cell!r}")
    outer = (r1 * big, c1 * big, big)  # row, col, side in pixels
    inner = (r1 * big + (big - s) // 2, c1 * big + (big - s) // 2, s)
    n = len(panels)
    fig = Figure(figsize=(2.3 * n, 3.1), layout="constrained") if figure is None else figure
    axes = fig.subplots(1, n, squeeze=False)[0]
    lo, hi = 0.0, 1.0
    box_labels = {"orange": "orange: one level-1 cell", "red": "red: the bottom-level cell at its centre"}
    for k, (ax, img, cs) in enumerate(zip(axes, panels, cells)):
        shown = np.asarray(img, dtype=float).copy()
        if k < n - 1:  # the symbol panels are dimmed outside the orange cell
            mask = np.ones_like(shown, dtype=bool)
            mask[outer[0]:outer[0] + big, outer[1]:outer[1] + big] = False
            shown[mask] *= 0.5
        ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for t in range(0, side + 1, cs):
            ax.axhline(t - 0.5, color="0.7", lw=0.5 if cs == 1 else 0.8)
            ax.axvline(t - 0.5, color="0.7", lw=0.5 if cs == 1 else 0.8)
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(side - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"level {k + 1}" if k < n - 1 else "pixels (with noise)", fontsize=9)
        boxes = [(outer, "orange", 2.5)] + ([(inner, "red", 2.0)] if k >= 1 else [])
        for (r, c, size), colour, lw in boxes:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), size, size, fill=False, ec=colour, lw=lw,
                                   label=box_labels[colour]))
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=c, lw=2, label=label) for c, label in box_labels.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"one digit (class y = {int(sample.labels[index])}) generated level by level; each panel draws "
                 "its level's symbols by their usual expansion,\ndimmed outside the orange cell; grey lines: the "
                 "grid of the level's cells", fontsize="small")
    return fig
