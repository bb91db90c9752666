r"""The experiment registry behind ``bbp run``.

An experiment is a named function ``run(settings, context) -> ExperimentResult``
with default settings, ``--quick`` overrides, and a description. Register one
with :func:`experiment`, declaring every setting's type and range in its
``schema`` (validators of :mod:`sim.settings`); modules that define experiments are listed in
:data:`EXPERIMENT_MODULES` and imported by :func:`load_experiments` (the CLI also
loads :mod:`theory.experiments`, since experiments comparing theory with
simulation live beside the theory).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..backend import BACKENDS, DTYPES, blas_policy, get_namespace
from ..settings import Validator, validate_settings

#: Modules whose import registers experiments.
EXPERIMENT_MODULES: list[str] = ["sim.experiments.feedback_alignment", "sim.experiments.local_learning",
                                  "sim.experiments.synthetic", "sim.experiments.mnist1d_rules",
                                  "sim.experiments.real_data"]


@dataclass(frozen=True)
class Context:
    """How an experiment runs: base ``seed``, number of seed replicates, backend, dtype."""

    seed: int = 0
    n_seeds: int = 4
    backend: str = "numpy"
    dtype: str = "float64"
    quick: bool = False
    progress: bool | None = None

    @property
    def xp(self):
        return get_namespace(self.backend)


@dataclass
class ExperimentResult:
    """What an experiment returns: JSON metrics, arrays, figures and a one-paragraph summary."""

    metrics: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # name -> matplotlib Figure
    summary: str = ""
    diverged: list = field(default_factory=list)  # strings naming member, step and reason
    all_diverged: bool = False  # every member of every ensemble the experiment trained diverged


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    description: str
    defaults: dict
    quick: dict
    run: Callable[[dict, Context], ExperimentResult]
    default_seeds: int = 4
    schema: dict = field(default_factory=dict)  # setting -> sim.settings.Validator
    checks: tuple = ()  # check(settings) -> None, raising ValueError: constraints between settings
    per_member: tuple = ()  # settings the experiment can vary per ensemble member (a sweep folds them)
    fold: Callable | None = None  # fold(settings_list, context) -> one ExperimentResult per settings


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, *, title: str, description: str, defaults: dict, schema: dict[str, Validator],
               quick: dict | None = None, default_seeds: int = 4, checks: Callable | tuple = (),
               per_member: tuple = (), fold: Callable | None = None):
    """Decorator registering ``run(settings, context)`` as the experiment ``name``.

    ``schema`` declares, for every key of ``defaults``, its type and range (a
    validator of :mod:`sim.settings`); ``checks`` are functions
    ``check(settings)`` raising ``ValueError`` (:func:`sim.settings.setting_error`)
    for constraints between settings. The defaults, and the defaults with the
    quick values, must pass both.

    ``per_member`` names the settings the experiment can vary per ensemble
    member (a learning rate, an initial scale); ``fold(settings_list, context)``
    then runs several settings that differ only in those as one ensemble of
    ``len(settings_list) * context.n_seeds`` members and returns one
    :class:`ExperimentResult` per settings, each the same as ``run(settings,
    context)``'s. A sweep folds such points into one task (:mod:`sim.sweep.fold`).
    """
    quick = quick or {}
    per_member = tuple(per_member)
    if set(per_member) - set(defaults):
        raise ValueError(f"per_member settings {sorted(set(per_member) - set(defaults))} of {name!r} are not "
                         f"among its settings")
    if per_member and not callable(fold):
        raise ValueError(f"experiment {name!r} declares per_member settings {list(per_member)} but no fold function")
    unknown = set(quick) - set(defaults)
    if unknown:
        raise ValueError(f"quick settings {sorted(unknown)} of {name!r} are not among its defaults")
    missing, extra = set(defaults) - set(schema), set(schema) - set(defaults)
    if missing or extra:
        raise ValueError(f"the schema of {name!r} must declare exactly its settings: "
                         f"missing {sorted(missing)}, not settings {sorted(extra)}")
    checks = (checks,) if callable(checks) else tuple(checks)
    validate_settings(dict(defaults), schema, checks)
    validate_settings({**defaults, **quick}, schema, checks)

    def register(run):
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        REGISTRY[name] = Experiment(name, title, description, dict(defaults), dict(quick), run, default_seeds,
                                    dict(schema), checks, per_member, fold if per_member else None)
        return run

    return register


def load_experiments(extra_modules=()) -> dict[str, Experiment]:
    for module in [*EXPERIMENT_MODULES, *extra_modules]:
        importlib.import_module(module)
    return REGISTRY


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (the modules of :data:`EXPERIMENT_MODULES` are loaded first)."""
    load_experiments()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def summary_stats(values) -> dict:
    """Mean and standard deviation of the finite entries, and every value (``members``).

    ``mean`` and ``std`` are ``None`` when no entry is finite; in ``members``
    a non-finite value (a diverged member) is ``None``.
    """
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    members = [float(x) if np.isfinite(x) else None for x in v.ravel()]
    if finite.size == 0:
        return {"mean": None, "std": None, "members": members}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "members": members}


def every_member_diverged(runs) -> bool:
    """Whether every member of every run diverged (``runs``: results with ``diverged`` and ``network.n_members``).

    ``False`` when there are no runs.
    """
    runs = list(runs)
    return bool(runs) and all(len({d.member for d in r.diverged}) == r.network.n_members for r in runs)


def report_all_diverged(result: ExperimentResult, all_diverged: bool) -> ExperimentResult:
    """Set ``result.all_diverged``; if true, say so in its summary and as a visible note on every figure's axes.

    The summary then starts with ``"every member diverged: "`` and the
    divergence messages (:func:`sim.train.divergence_message`).
    """
    result.all_diverged = bool(all_diverged)
    if not result.all_diverged:
        return result
    listed = "; ".join(result.diverged[:8]) + (f"; and {len(result.diverged) - 8} more"
                                                 if len(result.diverged) > 8 else "")
    sentence = f"every member diverged: {listed or 'no member trained to the end'}"
    result.summary = f"{sentence}. {result.summary}" if result.summary else sentence
    for fig in result.figures.values():
        for ax in fig.axes:
            ax.text(0.5, 0.5, "every member diverged\n(see the summary)", transform=ax.transAxes, ha="center",
                    va="center", color="C3", fontsize="large", fontweight="bold",
                    bbox=dict(facecolor="white", edgecolor="C3", alpha=0.9))
    return result


def parse_value(key: str, text: str, default):
    """Parse ``text`` for setting ``key`` as the type of its default value."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not np.isfinite(value):
                raise ValueError
            return value
        if isinstance(default, list | tuple):
            value = json.loads(text)
            if not isinstance(value, list | int | float) or isinstance(value, bool):
                raise ValueError
            return value  # a number stays one: the setting's validator says whether one value is allowed
        if default is None:
            return json.loads(text)
        return text
    except (ValueError, json.JSONDecodeError):
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise ValueError(f"setting {key}={text!r} is not a valid {kind} (default {default!r})") from None


def resolve_settings(exp: Experiment, *, quick: bool = False, overrides: dict | None = None) -> dict:
    """Defaults, then the quick overrides, then ``overrides`` (strings are parsed); all validated.

    Every final setting must pass its declared validator (``exp.schema``) and
    the experiment's ``checks``; otherwise a ``ValueError`` names the setting,
    the value and what is allowed (see :mod:`sim.settings`).
    """
    settings = dict(exp.defaults)
    if quick:
        settings.update(exp.quick)
    for key, value in (overrides or {}).items():
        if key not in exp.defaults:
            raise ValueError(f"unknown setting {key!r} for experiment {exp.name!r}; "
                             f"allowed: {', '.join(sorted(exp.defaults))}")
        settings[key] = parse_value(key, value, exp.defaults[key]) if isinstance(value, str) else value
    return validate_settings(settings, exp.schema, exp.checks)


def run_experiment(name: str, *, context: Context | None = None, overrides: dict | None = None) -> tuple[dict, ExperimentResult]:
    """Resolve the settings of ``name`` and run it; returns ``(settings, result)``."""
    exp = get_experiment(name)
    context = Context() if context is None else context
    if context.backend not in BACKENDS:
        raise ValueError(f"unknown backend {context.backend!r}; allowed: {', '.join(BACKENDS)}")
    if context.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {context.dtype!r}; allowed: {', '.join(DTYPES)}")
    if context.n_seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {context.n_seeds}")
    settings = resolve_settings(exp, quick=context.quick, overrides=overrides)
    try:
        with blas_policy():  # one BLAS thread unless the work inside asks for more (see sim.backend)
            return settings, exp.run(settings, context)
    except MemoryError as err:  # a safety net: the big allocations are estimated before they are made
        raise ValueError(f"experiment {name!r} ran out of memory ({err or 'MemoryError'}); "
                         f"use fewer seeds or smaller settings") from None


def run_experiment_folded(name: str, overrides_list: list[dict], *, context: Context | None = None) -> list:
    """Run several settings of ``name`` as one ensemble (its ``fold``); one :class:`ExperimentResult` each.

    The settings (each resolved like :func:`run_experiment`'s) may differ only
    in the experiment's ``per_member`` settings; otherwise, or when the
    experiment declares none, ``ValueError`` names the difference.
    """
    exp = get_experiment(name)
    context = Context() if context is None else context
    if exp.fold is None:
        raise ValueError(f"experiment {name!r} declares no per_member settings: it cannot fold settings")
    if not overrides_list:
        raise ValueError("run_experiment_folded needs at least one settings, got none")
    settings_list = [resolve_settings(exp, quick=context.quick, overrides=o) for o in overrides_list]
    for settings in settings_list[1:]:
        differ = sorted(k for k in settings if settings[k] != settings_list[0][k] and k not in exp.per_member)
        if differ:
            raise ValueError(f"folded settings of {name!r} may differ only in {', '.join(exp.per_member)}; "
                             f"they differ in {', '.join(differ)}")
    try:
        with blas_policy():
            return exp.fold(settings_list, context)
    except MemoryError as err:
        raise ValueError(f"experiment {name!r} ran out of memory ({err or 'MemoryError'}); "
                         f"fold fewer points or use smaller settings") from None
