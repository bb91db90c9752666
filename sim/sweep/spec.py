"""A sweep's specification and its points: what to run, checked before anything runs.

A :class:`SweepSpec` names an experiment, fixed settings, grid axes (their
product) and zip axes (varied together, one combined axis), the number of seed
replicates and how to run (backend, dtype, quick settings). :func:`plan` turns
it into :class:`Point` s: every combination of the axes, resolved and
validated like ``bbp run --set`` (:func:`sim.experiments.resolve_settings`), so
a bad value, an unknown setting, an empty axis or zip axes of different
lengths end with a ``ValueError`` before any compute.

A point is named by :func:`point_key`: a digest of the experiment, every
resolved setting, the base seed, the number of seeds, backend and dtype. The
same point in any sweep has the same name, and so the same directory
``OUT/points/<key>/``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field

#: Settings of a sweep that are not experiment settings (a spec file's top-level keys).
SPEC_KEYS = ("experiment", "seeds", "seed", "quick", "backend", "dtype", "figures", "out", "settings", "grid", "zip")


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas outside brackets and quotes: ``[32,64],[128]`` is two values."""
    values, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values if any(values) else []


def parse_axes(pairs: list[str], flag: str) -> dict[str, list[str]]:
    """``["lr=0.01,0.02", ...]`` as ``{"lr": ["0.01", "0.02"]}``; the values are parsed later, per setting."""
    axes = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=V1,V2,..., got {pair!r}")
        if key in axes:
            raise ValueError(f"{flag} {key} is given twice")
        axes[key] = split_values(values)
    return axes


def canonical_json(value) -> str:
    """JSON with sorted keys and no spaces: the form that digests are taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def point_key(experiment: str, settings: dict, *, seed: int, seeds: int, backend: str, dtype: str) -> str:
    """The stable name of a point: 16 hex digits of the SHA-256 of its canonical JSON."""
    payload = {"experiment": experiment, "settings": settings, "seed": seed, "seeds": seeds, "backend": backend,
               "dtype": dtype}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def column_value(value):
    """A swept value as a table cell: numbers and strings as they are, lists as their JSON text."""
    return canonical_json(value) if isinstance(value, list | tuple | dict) else value


@dataclass
class SweepSpec:
    """What a sweep runs: experiment, fixed ``settings``, ``grid`` axes (product) and ``zip`` axes (together).

    Axis values may be strings (parsed like ``--set``) or values (validated).
    """

    experiment: str
    grid: dict = field(default_factory=dict)
    zip: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seeds: int | None = None
    seed: int = 0
    quick: bool = False
    backend: str = "numpy"
    dtype: str = "float64"
    figures: bool = False

    @property
    def swept(self) -> list[str]:
        """The swept settings, grid axes first."""
        return [*self.grid, *self.zip]

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "the sweep spec") -> SweepSpec:
        unknown = set(data) - set(SPEC_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(SPEC_KEYS)}")
        if "experiment" not in data:
            raise ValueError(f"{where}: no experiment")
        for key in ("settings", "grid", "zip"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{where}: [{key}] must be a table of settings")
        for key in ("grid", "zip"):
            for name, values in data.get(key, {}).items():
                if not isinstance(values, list):
                    raise ValueError(f"{where}: {key}.{name} must be a list of values, got {values!r}")
        return cls(**{k: v for k, v in data.items() if k != "out"})


@dataclass(frozen=True)
class Point:
    """One setting combination of a sweep, all its seed replicates: one run directory."""

    key: str
    experiment: str
    values: dict  # swept setting -> canonical value
    settings: dict  # every resolved setting
    seed: int
    seeds: int
    backend: str
    dtype: str
    quick: bool

    def context(self, *, members: int | None = None):
        from ..experiments import Context

        return Context(seed=self.seed, n_seeds=members or self.seeds, backend=self.backend, dtype=self.dtype,
                       quick=self.quick, progress=False)

    def config(self, started: str) -> dict:
        """The ``config.toml`` of the point's run directory: that of ``bbp run``, plus where it sits in the sweep."""
        return {"experiment": self.experiment, "seed": self.seed, "seeds": self.seeds, "backend": self.backend,
                "dtype": self.dtype, "quick": self.quick, "settings": self.settings, "started": started,
                "versions": _package_versions(), "sweep": {"point": self.key, "values": self.values}}


@functools.cache
def _package_versions() -> dict:
    """The package versions, looked up once per process (a worker computes many points)."""
    from ..rundir import package_versions

    return package_versions()


def _check_seeds(seeds, seed) -> None:
    for name, value, low in (("seeds", seeds, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{'--' + name} must be an integer >= {low}, got {value!r}")


def plan(spec: SweepSpec) -> list[Point]:
    """Every point of ``spec``, resolved and validated, in grid order (the last axis varies fastest).

    Raises ``ValueError`` naming the problem: an unknown experiment or setting,
    an empty axis, zip axes of different lengths, a setting both fixed and
    swept, a bad value (with the point it occurs in), two axis values that
    give the same point.
    """
    from ..backend import BACKENDS, DTYPES
    from ..experiments import get_experiment, resolve_settings

    exp = get_experiment(spec.experiment)
    seeds = exp.default_seeds if spec.seeds is None else spec.seeds
    _check_seeds(seeds, spec.seed)
    if spec.backend not in BACKENDS:
        raise ValueError(f"unknown backend {spec.backend!r}; allowed: {', '.join(BACKENDS)}")
    if spec.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {spec.dtype!r}; allowed: {', '.join(DTYPES)}")
    for flag, axes in (("--grid", spec.grid), ("--zip", spec.zip)):
        for key, values in axes.items():
            if key not in exp.defaults:
                raise ValueError(f"unknown setting {key!r} in {flag} for experiment {exp.name!r}; "
                                 f"allowed: {', '.join(sorted(exp.defaults))}")
            if not values:
                raise ValueError(f"{flag} {key} has no values")
    both = set(spec.grid) & set(spec.zip)
    if both:
        raise ValueError(f"settings {sorted(both)} are both --grid and --zip axes")
    fixed_and_swept = set(spec.settings) & set(spec.swept)
    if fixed_and_swept:
        raise ValueError(f"settings {sorted(fixed_and_swept)} are both fixed (--set) and swept")
    lengths = {key: len(values) for key, values in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"--zip axes must have the same number of values, got "
                         f"{', '.join(f'{k}: {n}' for k, n in lengths.items())}")
    resolve_settings(exp, quick=spec.quick, overrides=spec.settings)  # the fixed part alone, for a clear message

    axes = [[{key: value} for value in values] for key, values in spec.grid.items()]
    if spec.zip:
        n = next(iter(lengths.values()))
        axes.append([{key: values[i] for key, values in spec.zip.items()} for i in range(n)])
    points, seen = [], {}
    for combination in itertools.product(*axes):
        overrides = {k: v for part in combination for k, v in part.items()}
        try:
            settings = resolve_settings(exp, quick=spec.quick, overrides={**spec.settings, **overrides})
        except ValueError as err:
            raise ValueError(f"{err} (sweep point {_describe(overrides)})") from None
        key = point_key(exp.name, settings, seed=spec.seed, seeds=seeds, backend=spec.backend, dtype=spec.dtype)
        if key in seen:
            raise ValueError(f"sweep points {_describe(seen[key])} and {_describe(overrides)} are the same point "
                             f"(an axis repeats a value)")
        seen[key] = overrides
        points.append(Point(key, exp.name, {k: settings[k] for k in spec.swept}, settings, spec.seed, seeds,
                            spec.backend, spec.dtype, spec.quick))
    return points


def _describe(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(no swept settings)"
