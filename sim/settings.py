r"""Declared types and ranges of experiment settings, and one message format for a bad value.

Every experiment declares a validator per setting (``schema=`` of
:func:`sim.experiments.experiment`); :func:`sim.experiments.resolve_settings`
checks the final settings with :func:`validate_settings`. A validator is a
small object: calling it on a value returns the value in its canonical form
(``int`` for integers, ``float`` for reals, lists for lists) or raises
:class:`Invalid`; :attr:`Validator.allowed` says in words what is allowed.

A bad value ends with one message that names the setting, the value and what
is allowed, for example::

    setting hidden=[64.7, 64]: element 0 must be an integer >= 1, got 64.7
    (allowed: a list of 1 to 8 integers >= 1)

Booleans are not integers or reals here, and ``nan`` and ``inf`` are never
allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Invalid", "Validator", "integer", "real", "boolean", "choice", "list_of", "matrix", "text",
           "validate_setting", "validate_settings", "setting_error"]


class Invalid(Exception):
    """Why a value is not allowed: ``reason`` (``"must be ..., got ..."``) at ``path`` (element indices)."""

    def __init__(self, reason: str, path: tuple = ()):
        super().__init__(reason)
        self.reason, self.path = reason, path


@dataclass(frozen=True)
class Validator:
    """A declared type and range: ``allowed`` in words, ``check(value) -> canonical value`` (raises :class:`Invalid`)."""

    allowed: str
    check: Callable = field(repr=False)
    plural: str = ""  # the words for several of them, in "a list of 1 to 8 integers >= 1"

    def __call__(self, value):
        return self.check(value)


def _show(value) -> str:
    return repr(value)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}" if isinstance(lo, float) else f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}" if isinstance(hi, float) else f"{'<' if hi_open else '<='} {hi}")
    return " and ".join(parts)


def integer(lo: int | None = None, hi: int | None = None) -> Validator:
    """An integer (not a bool, not a float) in ``[lo, hi]`` (either bound may be ``None``)."""
    bounds = _bounds(lo, hi, False, False)
    allowed = f"an integer {bounds}".rstrip()
    plural = f"integers {bounds}".rstrip()

    def check(value):
        if not _is_integer(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Invalid(f"must be {allowed}, got {_show(value)}")
        return int(value)

    return Validator(allowed, check, plural)


def real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
         nonzero: bool = False) -> Validator:
    """A finite real number (an int is accepted and made a float; not a bool) in the given range (``!= 0``)."""
    bounds = _bounds(lo, hi, lo_open, hi_open) or ("!= 0" if nonzero else "")
    allowed = f"a finite number {bounds}".rstrip()
    plural = f"finite numbers {bounds}".rstrip()

    def check(value):
        ok = _is_real(value) and math.isfinite(value)
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if ok and nonzero:
            ok = value != 0
        if not ok:
            raise Invalid(f"must be {allowed}, got {_show(value)}")
        return float(value)

    return Validator(allowed, check, plural)


def boolean() -> Validator:
    """``True`` or ``False``."""
    def check(value):
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, got {_show(value)}")
        return value

    return Validator("true or false", check, "true/false values")


def text() -> Validator:
    """Any string."""
    def check(value):
        if not isinstance(value, str):
            raise Invalid(f"must be a string, got {_show(value)}")
        return value

    return Validator("a string", check, "strings")


def choice(*options) -> Validator:
    """One of ``options`` (compared with ``==``; a bool never matches a number)."""
    names = ", ".join(str(o) for o in options)
    allowed = f"one of {names}"

    def check(value):
        for option in options:
            if type(value) is type(option) and value == option:
                return value
        raise Invalid(f"must be {allowed}, got {_show(value)}")

    return Validator(allowed, check, f"names from {names}")


def list_of(item: Validator, *, min_len: int = 1, max_len: int | None = None, distinct: bool = False,
            min_distinct: int | None = None) -> Validator:
    """A list (or tuple) of ``min_len`` to ``max_len`` elements, each allowed by ``item``.

    ``distinct`` forbids repeated elements; ``min_distinct`` asks for at least
    that many different ones (for example the step sizes of a slope fit).
    """
    if max_len is None:
        count = f"{min_len} or more"
    elif max_len == min_len:
        count = f"{min_len}"
    else:
        count = f"{min_len} to {max_len}"
    allowed = f"a list of {count} {item.plural or item.allowed}"
    if distinct:
        allowed += ", all different"
    elif min_distinct:
        allowed += f", at least {min_distinct} different"

    def check(value):
        if not isinstance(value, list | tuple):
            raise Invalid(f"must be a list, got {_show(value)}")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            raise Invalid(f"must have {count} elements, got {len(value)}")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except Invalid as bad:
                raise Invalid(bad.reason, (i, *bad.path)) from None
        keys = [repr(v) for v in out]
        if distinct and len(set(keys)) < len(keys):
            repeated = next(v for k, v in zip(keys, out) if keys.count(k) > 1)
            raise Invalid(f"must not repeat an element, got {_show(repeated)} twice")
        if min_distinct and len(set(keys)) < min_distinct:
            raise Invalid(f"must hold at least {min_distinct} different values, got {len(set(keys))}")
        return out

    return Validator(allowed, check, f"lists of {count} {item.plural or item.allowed}")


def matrix(item: Validator, *, max_rows: int | None = None, max_cols: int | None = None) -> Validator:
    """A non-empty rectangular list of lists (rows), each element allowed by ``item``."""
    rows = list_of(list_of(item, max_len=max_cols), max_len=max_rows)
    allowed = f"a rectangular list of rows of {item.plural or item.allowed} (a matrix)"

    def check(value):
        out = rows(value)
        widths = {len(r) for r in out}
        if len(widths) > 1:
            raise Invalid(f"must have rows of one length, got lengths {[len(r) for r in out]}")
        return out

    return Validator(allowed, check, "matrices")


def _where(path: tuple) -> str:
    return "element " + "".join(f"[{i}]" for i in path) + " " if len(path) > 1 else \
        (f"element {path[0]} " if path else "")


def setting_error(key: str, value, reason: str, allowed: str | None = None) -> ValueError:
    """The ``ValueError`` for setting ``key``: ``setting KEY=VALUE: REASON (allowed: ALLOWED)``."""
    tail = f" (allowed: {allowed})" if allowed else ""
    return ValueError(f"setting {key}={_show(value)}: {reason}{tail}")


def validate_setting(key: str, value, validator: Validator):
    """``value`` in its canonical form, or a ``ValueError`` naming the setting, the value and what is allowed."""
    try:
        return validator(value)
    except Invalid as bad:
        raise setting_error(key, value, _where(bad.path) + bad.reason, validator.allowed) from None


def validate_settings(settings: dict, schema: dict[str, Validator], checks: Sequence[Callable] = ()) -> dict:
    """Every setting through its validator, then the cross-setting ``checks`` (each ``check(settings)``)."""
    unknown = set(settings) - set(schema)
    if unknown:
        raise ValueError(f"settings {sorted(unknown)} have no declared type")
    out = {key: validate_setting(key, value, schema[key]) for key, value in settings.items()}
    for check in checks:
        check(out)
    return out
