"""Imports deferred to first use, so that ``bbp list``, ``bbp --help`` and a mistyped name answer at once.

The modules that register experiments and claims are imported to list them;
the heavy libraries they use (matplotlib, scipy, sympy, cvxpy) are not needed
for that. Such a module writes, at its import line,

``sp = lazy_module("sympy")``
    instead of ``import sympy as sp``: the name stands for the module and
    imports it at the first attribute read (``sp.Matrix``);
``solve_ivp = lazy_callable("scipy.integrate", "solve_ivp")``
    instead of ``from scipy.integrate import solve_ivp``: a function that
    imports the module at its first call (for functions and classes that are
    only called, never used with ``isinstance``).

After the first use, a read costs a dictionary look-up (``sys.modules``).
``tests/test_lazy.py`` checks that ``bbp --help``, ``bbp list`` and ``bbp run`` of an unknown name import
none of these libraries.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for the module ``name``; imports it at the first attribute read."""

    __slots__ = ("_lazy_name",)

    def __init__(self, name: str):
        self._lazy_name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._lazy_name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


def lazy_module(name: str) -> LazyModule:
    """A stand-in for ``import name``, imported at the first attribute read."""
    return LazyModule(name)


def lazy_callable(module: str, name: str):
    """A stand-in for ``from module import name`` (a function or class that is called), imported at the first call."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{name}``, imported at the first call."
    return call
