r"""Divergence: when a member of an ensemble has diverged, and how it is reported (pure helpers, host side).

A member *diverges* when its loss becomes non-finite, when its loss exceeds
``divergence_factor`` times its initial loss (default :data:`DIVERGENCE_FACTOR`,
``1e3``; no bound where the initial loss is zero), or when its weights become
non-finite. Every training loop (:func:`sim.train.train`,
:func:`sim.parallel.train_blocks`, :func:`sim.patch.train_patch_network` and
the layerwise fits of :mod:`sim.layerwise`) then freezes the member, reports a
:class:`Divergence` (member, step, reason) and makes the member's metrics
``nan`` from that step on. One format for every report:
``"{label} member {m}: {reason} at step {step}"`` (:func:`divergence_message`),
with the reason ``"loss became non-finite"``, ``"weights became non-finite"`` or
``"loss exceeded 1e+03 x its initial value"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A member whose loss exceeds this many times its initial loss has diverged (the default of ``divergence_factor``).
DIVERGENCE_FACTOR = 1e3

#: The reasons a member diverges, by code (as :class:`sim.train.TrainState` stores them).
LOSS_NON_FINITE, WEIGHTS_NON_FINITE, LOSS_EXCEEDED = 1, 2, 3


def divergence_reason(code: int, factor: float = DIVERGENCE_FACTOR) -> str:
    """The words of a divergence reason code: ``"loss became non-finite"``, ``"weights became non-finite"``
    or ``"loss exceeded 1e+03 x its initial value"``."""
    if code == LOSS_EXCEEDED:
        return f"loss exceeded {factor:.0e} x its initial value"
    return "weights became non-finite" if code == WEIGHTS_NON_FINITE else "loss became non-finite"


def check_divergence_factor(factor) -> float:
    """``factor`` as a float, or ``ValueError`` unless it is a number greater than 1 (``inf``: no loss bound)."""
    try:
        value = float(factor)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(factor, bool) or not value > 1:
        raise ValueError(f"divergence_factor must be a number greater than 1 (inf: no bound), got {factor!r}")
    return value


@dataclass(frozen=True)
class Divergence:
    """Where and why a member stopped: ``step`` is the step at which it was found to diverge.

    ``reason`` is one of the words of :func:`divergence_reason`; ``str(d)`` is
    ``"member {member}: {reason} at step {step}"``, and :func:`divergence_message`
    prefixes the rule or setting.
    """

    member: int
    step: int
    reason: str

    def __str__(self) -> str:
        return f"member {self.member}: {self.reason} at step {self.step}"


def divergence_message(label, divergence: Divergence) -> str:
    """The one format of a divergence report: ``"{label} member {m}: {reason} at step {step}"``."""
    return f"{label} {divergence}"


def mask_diverged(metrics: dict, steps, diverged) -> dict:
    """``metrics`` (arrays ``(T, E, ...)``) with ``nan`` for each diverged member from its step on (a copy)."""
    if not diverged:
        return dict(metrics)
    steps = np.asarray(steps)
    out = {}
    for name, values in metrics.items():
        values = np.array(values, dtype=np.result_type(np.asarray(values).dtype, np.float16))
        for d in diverged:
            values[steps >= d.step, d.member, ...] = np.nan
        out[name] = values
    return out


def collect_divergences(first_bad, reasons, factor: float = DIVERGENCE_FACTOR) -> list[Divergence]:
    """The divergences of the members from per-part records (host arrays ``(P, E)`` or ``(E,)``).

    ``first_bad[p, m]`` is the step at which part ``p`` (a block, a level)
    found member ``m`` diverged (``-1``: never) and ``reasons[p, m]`` the code
    why; a member's divergence is its earliest, a loss reason winning a tie
    (a neighbour of the part that diverged sees it as non-finite weights).
    """
    first_bad = np.atleast_2d(np.asarray(first_bad))
    reasons = np.atleast_2d(np.asarray(reasons))
    out = []
    for m in range(first_bad.shape[1]):
        found = [(int(first_bad[p, m]), int(reasons[p, m]) == WEIGHTS_NON_FINITE, int(reasons[p, m]))
                 for p in range(first_bad.shape[0]) if first_bad[p, m] >= 0]
        if found:
            step, _, code = min(found)
            out.append(Divergence(m, step, divergence_reason(code, factor)))
    return out
