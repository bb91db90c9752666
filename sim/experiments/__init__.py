r"""The experiment registry behind ``bbp run``.

An experiment is a named function ``run(settings, context) -> ExperimentResult``
with default settings, ``--quick`` overrides, and a description. Register one
with :func:`experiment`; modules that define experiments are listed in
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

from ..backend import BACKENDS, DTYPES, get_namespace

#: Modules whose import registers experiments.
EXPERIMENT_MODULES: list[str] = ["sim.experiments.feedback_alignment", "sim.experiments.local_learning",
                                  "sim.experiments.synthetic"]


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


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    description: str
    defaults: dict
    quick: dict
    run: Callable[[dict, Context], ExperimentResult]
    default_seeds: int = 4


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, *, title: str, description: str, defaults: dict, quick: dict | None = None,
               default_seeds: int = 4):
    """Decorator registering ``run(settings, context)`` as the experiment ``name``."""
    quick = quick or {}
    unknown = set(quick) - set(defaults)
    if unknown:
        raise ValueError(f"quick settings {sorted(unknown)} of {name!r} are not among its defaults")

    def register(run):
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        REGISTRY[name] = Experiment(name, title, description, dict(defaults), dict(quick), run, default_seeds)
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
    """Mean and standard deviation of the finite entries (``None`` for both when there are none)."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(finite.mean()), "std": float(finite.std())}


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
            if not isinstance(value, list):
                raise ValueError
            return value
        if default is None:
            return json.loads(text)
        return text
    except (ValueError, json.JSONDecodeError):
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise ValueError(f"setting {key}={text!r} is not a valid {kind} (default {default!r})") from None


def resolve_settings(exp: Experiment, *, quick: bool = False, overrides: dict | None = None) -> dict:
    """Defaults, then the quick overrides, then ``overrides`` (strings are parsed)."""
    settings = dict(exp.defaults)
    if quick:
        settings.update(exp.quick)
    for key, value in (overrides or {}).items():
        if key not in exp.defaults:
            raise ValueError(f"unknown setting {key!r} for experiment {exp.name!r}; "
                             f"allowed: {', '.join(sorted(exp.defaults))}")
        settings[key] = parse_value(key, value, exp.defaults[key]) if isinstance(value, str) else value
    return settings


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
    return settings, exp.run(settings, context)
