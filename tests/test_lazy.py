"""Deferred imports (sim.lazy) and what the quick commands import: ``bbp --help``, ``bbp list``, a mistyped name.

The check is on the modules imported (deterministic), not on a clock: the heavy
libraries are what made these commands take 1.3-2 s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sim.lazy import lazy_callable, lazy_module

HEAVY = ("matplotlib", "scipy", "sympy", "cvxpy", "mpmath")

_PROBE = """
import contextlib, io, json, sys
import sim.cli
code = None
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    try:
        code = sim.cli.main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY,)


def _bbp(*argv):
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("--help",), ("list",), ("run", "no-such-experiment")])
def test_quick_commands_import_no_heavy_library(argv):
    res = _bbp(*argv)
    assert res["heavy"] == [], f"bbp {' '.join(argv)} imported {res['heavy']}: import them where they are used"
    if argv == ("list",):
        assert res["code"] == 0 and "sg-nonlinear" in res["out"] and "hier-layerwise" in res["out"]
    if argv[0] == "run":
        assert res["code"] == 2 and "no-such-experiment" in res["err"]


def test_lazy_module_imports_at_the_first_attribute():
    json_module = lazy_module("json")
    assert json_module.dumps([1]) == "[1]" and "json" in repr(json_module)
    missing = lazy_module("no_such_module_for_bbp")  # nothing happens until it is used
    with pytest.raises(ModuleNotFoundError):
        missing.anything


def test_lazy_callable_calls_the_real_function():
    dumps = lazy_callable("json", "dumps")
    assert dumps.__name__ == "dumps" and dumps({"a": 1}, sort_keys=True) == '{"a": 1}'
