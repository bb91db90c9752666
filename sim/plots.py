"""Figures of the shell: curves of an ensemble as mean and spread (matplotlib, no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def new_figure(n_panels: int, *, width: float = 4.2, height: float = 3.4):
    """A figure with ``n_panels`` axes side by side (no global pyplot state)."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def mean_and_spread(ax, steps, values, *, label: str, color=None, log: bool = False, linestyle: str = "-"):
    """Plot the member mean of ``values`` ``(T, E)`` and a band of one standard deviation.

    Non-finite entries (diverged members) are left out of the mean; with ``log``
    the mean and band are those of ``log10(values)``.
    """
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v), v, np.nan)
    if log:
        v = np.log10(np.where(v > 0, v, np.nan))
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(v, axis=1), np.nanstd(v, axis=1)
    lo, hi = mean - std, mean + std
    if log:
        mean, lo, hi = 10 ** mean, 10 ** lo, 10 ** hi
        ax.set_yscale("log")
    (line,) = ax.plot(steps, mean, label=label, color=color, linestyle=linestyle)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line
