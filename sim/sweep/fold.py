"""Folding: the points a sweep can compute as one ensemble, before anything is distributed.

Vectorise first, distribute second. Seed replicates are always one ensemble:
a point with ``--seeds 8`` is one task of ``E = 8``, never 8 tasks.
:func:`fold_tasks` groups the points to compute into :class:`Task` s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """What one worker computes in one call: ``points`` (one, or several folded into one ensemble)."""

    points: tuple
    fold: dict | None = None  # how the points share one ensemble; None: each point on its own

    @property
    def key(self) -> str:
        if len(self.points) == 1:
            return self.points[0].key
        return hashlib.sha256("-".join(p.key for p in self.points).encode()).hexdigest()[:16]

    @property
    def members(self) -> int:
        return sum(p.seeds for p in self.points)


def fold_tasks(points, *, fold: bool = True) -> list[Task]:
    """The tasks that compute ``points``: one per point (each point's seeds are one ensemble)."""
    return [Task((p,)) for p in points]


def run_folded(out, points, fold: dict, *, figures: bool = False, argv=None) -> list[dict]:
    raise NotImplementedError("folding settings other than seeds is not available yet")
