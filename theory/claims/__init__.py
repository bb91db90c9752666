r"""The claims registry: theorems and documented facts, checked on random instances.

A *claim* is a statement from one of the seed papers (or a derivation of ours,
marked ``source="ours"``), small enough for a computer to check. Each claim
has an id, its source, its statement, the conditions under which it holds, and
a *check*: a function ``check(seed, n_instances) -> CheckResult`` that draws
``n_instances`` random instances meeting the conditions from ``seed`` and
returns the worst violation found against a tolerance.

A check must be able to fail. Every claim names the learning rules it is about
(``rules``); the tests break those rules (:func:`sabotaged`) and require the
check to fail, so a check that cannot see its rule is caught. A claim not about
a rule gives its own ``sabotage``: a function returning a context manager under
which the claimed property is broken (a wrong formula, a wrong constant).

Add a claim by decorating its check::

    @claim("fa.conservation", source="Lillicrap et al. 2016; ours",
           statement="...", conditions="...", rules=("fa",))
    def _check(seed: int, n_instances: int) -> CheckResult:
        ...

Modules that define claims are listed in :data:`CLAIM_MODULES` and imported by
:func:`load_claims`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sim import rules as _rules

#: Modules whose import registers claims (in the order they are listed).
CLAIM_MODULES: list[str] = [
    "theory.claims.linear",
    "theory.claims.saxe_depth",
    "theory.claims.lillicrap",
    "theory.claims.baldi",
    "theory.claims.belilovsky",
    "theory.claims.belilovsky_cascade",
    "theory.claims.dfa",
    "theory.claims.refinetti",
    "theory.claims.refinetti_conditioning",
    "theory.claims.hierarchical",
    "theory.claims.synthetic",
    "theory.claims.czarnecki",
    "theory.claims.jaderberg",
    "theory.claims.jaderberg_unlocking",
    "theory.claims.local",
    "theory.claims.sign",
    "theory.claims.convex",
]

STATUSES = ("pass", "fail", "error")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``passed`` when the worst violation is within tolerance.

    ``details`` holds whatever the report's figure of the claim needs (arrays,
    curves); it is not written to the JSON. ``tasks`` is the number of
    independent tasks (data sets, teachers) the instances were drawn on and
    ``members`` the number of networks (or other trained systems) run on them;
    both default to ``instances`` (one task and one member per instance). A
    check that trains an ensemble of members on one shared task says so here.
    """

    instances: int
    max_violation: float
    tolerance: float
    details: dict = field(default_factory=dict)
    tasks: int | None = None
    members: int | None = None

    @property
    def passed(self) -> bool:
        return math.isfinite(self.max_violation) and self.max_violation <= self.tolerance


@dataclass(frozen=True)
class Claim:
    """A registered claim; see the module docstring."""

    id: str
    source: str
    statement: str
    conditions: str
    check: Callable[[int, int], CheckResult]
    rules: tuple[str, ...] = ()
    instances: int = 20
    quick_instances: int = 5
    hypothesis_examples: int = 5
    sabotage: Callable[[], contextlib.AbstractContextManager] | None = None
    plot: Callable | None = None  # plot(result: CheckResult, ax) draws the report's figure


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_claim` reports for one claim (the JSON of ``bbp verify``)."""

    id: str
    source: str
    statement: str
    status: str
    instances: int
    max_violation: float
    tolerance: float
    seconds: float
    message: str = ""
    result: CheckResult | None = None
    tasks: int | None = None
    members: int | None = None

    def to_json(self) -> dict:
        """The design's keys, plus ``tasks`` and ``members`` when known and ``message`` on an error."""
        violation = self.max_violation if math.isfinite(self.max_violation) else None
        counts = {k: v for k, v in (("tasks", self.tasks), ("members", self.members)) if v is not None}
        return {"id": self.id, "source": self.source, "statement": self.statement, "status": self.status,
                "instances": self.instances, "max_violation": violation, "tolerance": self.tolerance,
                "seconds": round(self.seconds, 4), **counts, **({"message": self.message} if self.message else {})}


REGISTRY: dict[str, Claim] = {}


def claim(id: str, *, source: str, statement: str, conditions: str = "", rules: Iterable[str] = (),
          instances: int = 20, quick_instances: int = 5, hypothesis_examples: int = 5,
          sabotage=None, plot=None):
    """Decorator registering ``check`` as the claim ``id``."""

    def register(check):
        if id in REGISTRY:
            raise ValueError(f"claim {id!r} is registered twice")
        for name in rules:
            _rules.get_rule(name)
        REGISTRY[id] = Claim(id, source, statement, conditions, check, tuple(rules), instances,
                             quick_instances, hypothesis_examples, sabotage, plot)
        return check

    return register


def load_claims() -> dict[str, Claim]:
    """Import every claim module and return the registry."""
    for module in CLAIM_MODULES:
        importlib.import_module(module)
    return REGISTRY


def get_claims(ids: Iterable[str] | None = None) -> list[Claim]:
    """The claims with the given ids (all when ``None``, else in the order given, each once)."""
    registry = load_claims()
    if ids is None:
        return list(registry.values())
    ids = list(dict.fromkeys(ids))  # a repeated id runs once; the first mention keeps its place
    unknown = [i for i in ids if i not in registry]
    if unknown:
        raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    return [registry[i] for i in ids]


def run_claim(c: Claim, *, quick: bool = False, seed: int = 0) -> Outcome:
    """Run one claim's check and classify it as ``pass``, ``fail`` or ``error``."""
    n = c.quick_instances if quick else c.instances
    start = time.perf_counter()
    try:
        result = c.check(seed, n)
    except Exception as err:  # a check that crashes is reported, never hidden
        return Outcome(c.id, c.source, c.statement, "error", n, math.nan, math.nan,
                       time.perf_counter() - start, f"{type(err).__name__}: {err}")
    status = "pass" if result.passed else "fail"
    tasks = result.instances if result.tasks is None else int(result.tasks)
    members = result.instances if result.members is None else int(result.members)
    return Outcome(c.id, c.source, c.statement, status, result.instances, float(result.max_violation),
                   float(result.tolerance), time.perf_counter() - start, result=result, tasks=tasks, members=members)


def verify(ids: Iterable[str] | None = None, *, quick: bool = False, seed: int = 0,
           progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the checks of the given claims (all by default)."""
    from sim.backend import blas_policy

    outcomes = []
    for c in get_claims(ids):
        with blas_policy():  # one BLAS thread unless the work inside asks for more (see sim.backend)
            outcome = run_claim(c, quick=quick, seed=seed)
        if progress is not None:
            progress(outcome)
        outcomes.append(outcome)
    return outcomes


@contextlib.contextmanager
def sabotaged(*rule_names: str, factor: float = 0.5):
    """Temporarily break rules: their hidden signals are scaled by ``factor`` and mixed.

    Under this context the hidden teaching signal ``delta`` of each named rule
    becomes ``factor * delta`` plus ``(1 - factor)`` times the same signal with
    its units rolled by one place, which is wrong in both size and direction.
    Only for tests of the claims (a check must fail on a broken rule).
    """
    from dataclasses import replace

    saved = {name: _rules.RULES[name] for name in rule_names}

    def broken(original):
        def hidden_signal(i, ctx):
            signal = original(i, ctx)
            xp = _rules.namespace(signal)
            return factor * signal + (1 - factor) * xp.roll(signal, 1, axis=-1)

        return hidden_signal

    try:
        for name, rule in saved.items():
            _rules.RULES[name] = replace(rule, hidden_signal=broken(rule.hidden_signal))
        yield
    finally:
        _rules.RULES.update(saved)


def sabotage_of(c: Claim):
    """The context manager that breaks what claim ``c`` is about."""
    if c.sabotage is not None:
        return c.sabotage()
    if c.rules:
        return sabotaged(*c.rules)
    raise ValueError(f"claim {c.id!r} names no rule and no sabotage; its check could not be shown to fail")
