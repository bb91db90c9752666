"""Folding: the points a sweep can compute as one ensemble, before anything is distributed.

Vectorise first, distribute second. Seed replicates are always one ensemble:
a point with ``--seeds 8`` is one task of ``E = 8``, never 8 tasks. An
experiment may declare settings it can vary per ensemble member
(``per_member`` in :func:`sim.experiments.experiment`, e.g. ``lr`` and
``init_scale`` of ``fa-linear``); points that differ only in those are folded
into one task: 6 learning rates x 8 seeds is one task of ``E = 48``.
:func:`fold_tasks` groups the points to compute into :class:`Task` s, and
:func:`run_folded` computes a folded task (the experiment's ``fold``) and
writes each point's run directory, the same numbers as the point computed
alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

#: The most ensemble members in one folded task (a larger group is cut into several tasks).
MAX_MEMBERS = 512


@dataclass(frozen=True)
class Task:
    """What one worker computes in one call: ``points`` (one, or several folded into one ensemble)."""

    points: tuple
    fold: dict | None = None  # {"per_member": [...]}: the points share one ensemble; None: each on its own

    @property
    def key(self) -> str:
        if len(self.points) == 1:
            return self.points[0].key
        return hashlib.sha256("-".join(p.key for p in self.points).encode()).hexdigest()[:16]

    @property
    def members(self) -> int:
        """The ensemble size of the task's largest computation (all points when folded)."""
        return sum(p.seeds for p in self.points) if self.fold else max(p.seeds for p in self.points)


def _per_member(experiment: str) -> tuple:
    from ..experiments import get_experiment
    from .point import _load_experiments

    _load_experiments()
    return get_experiment(experiment).per_member


def fold_tasks(points, *, fold: bool = True, max_members: int = MAX_MEMBERS) -> list[Task]:
    """The tasks that compute ``points``, in the order of their first point.

    With ``fold``, points that differ only in settings their experiment
    varies per member (same experiment, seed, seeds, backend, dtype and every
    other setting) become one task of up to ``max_members`` members;
    otherwise, and for a point alone in its group, one task per point (its
    seeds one ensemble).
    """
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ValueError(f"max_members must be an integer >= 1, got {max_members!r}")
    if not fold:
        return [Task((p,)) for p in points]
    from .spec import canonical_json

    groups: dict[str, list] = {}
    per_member = {}
    for p in points:
        if p.experiment not in per_member:
            per_member[p.experiment] = _per_member(p.experiment)
        varied = per_member[p.experiment]
        fixed = {k: v for k, v in p.settings.items() if k not in varied}
        name = canonical_json({"experiment": p.experiment, "settings": fixed, "seed": p.seed, "seeds": p.seeds,
                               "backend": p.backend, "dtype": p.dtype, "quick": p.quick})
        groups.setdefault(name, []).append(p)
    tasks = []
    for group in groups.values():
        per_task = max(1, max_members // group[0].seeds)
        for i in range(0, len(group), per_task):
            chunk = tuple(group[i:i + per_task])
            varied = list(per_member[chunk[0].experiment])
            tasks.append(Task(chunk, {"per_member": varied} if len(chunk) > 1 else None))
    return tasks


def run_folded(out, points, fold: dict, *, figures: bool = False, argv=None) -> list[dict]:
    """Compute ``points`` (one folded task) as one ensemble; one outcome per point, as :func:`compute_point`'s.

    Every point to compute is claimed first (its run directory ``running``,
    locked); complete points are skipped and points another process holds
    are ``busy``. The experiment's ``fold`` then runs once for the rest, and
    each point's directory is written from its own result: the same files as
    the point computed alone, with ``sweep.fold`` (the task's points and
    members) in its ``config.toml`` and the task's compute time shared
    equally in its ``seconds``. An error of the experiment fails every point
    of the task, each with the error and its traceback.
    """
    from .. import rundir
    from ..experiments import run_experiment_folded
    from .point import _load_experiments, fill_point, point_dir, point_state

    _load_experiments()
    outcomes, claimed = {}, []
    with contextlib.ExitStack() as stack:
        for p in points:
            directory = point_dir(out, p.key)
            outcome = {"point": p.key, "status": None, "seconds": None, "error": None}
            if point_state(directory) == "complete":
                outcomes[p.key] = {**outcome, "status": "complete", "skipped": True}
                continue
            try:
                run = rundir.RunDirectory.create(directory, overwrite=True, argv=argv or ["bbp", "sweep"])
            except rundir.OutputPathError as err:
                outcomes[p.key] = {**outcome, "status": "busy", "error": str(err)}
                continue
            stack.enter_context(run)
            claimed.append((p, run))
        if claimed:
            first = claimed[0][0]
            start = time.perf_counter()
            try:
                with rundir.logging_to(claimed[0][1].path / rundir.LOG_FILE):
                    results = run_experiment_folded(first.experiment, [p.settings for p, _ in claimed],
                                                    context=first.context())
                error = None
            except Exception as err:  # noqa: BLE001 - recorded in every point below, with its traceback
                results, error = None, err
            shared = (time.perf_counter() - start) / len(claimed)
            info = {"fold": {"points": len(claimed), "members": sum(p.seeds for p, _ in claimed),
                             "per_member": list(fold.get("per_member", []))}}
            for i, (p, run) in enumerate(claimed):
                def compute(i=i):
                    if error is not None:
                        raise error
                    return results[i]

                outcomes[p.key] = fill_point(run, p, compute, figures=figures, config=info, shared_seconds=shared)
    return [outcomes[p.key] for p in points]
