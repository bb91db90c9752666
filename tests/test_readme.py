"""Every ```python block of README.md runs, each in a fresh interpreter.

A block whose fence reads ```python skip is a template (for example the one
showing how to add a claim, with ``...`` in place of code) and is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[int, str, str]]:
    """``(line, info, code)`` of every ```python block of the README."""
    text = (ROOT / "README.md").read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def test_the_readme_has_python_blocks_and_marks_its_templates():
    blocks = python_blocks()
    assert len([b for b in blocks if b[1] != "skip"]) >= 2
    assert all(info in ("", "skip") for _, info, _ in blocks)
    for _, info, code in blocks:  # a block with "..." in place of code must say it is a template
        assert ("= ..." not in code and '"..."' not in code) or info == "skip"


@pytest.mark.parametrize("line,code", [(line, code) for line, info, code in python_blocks() if info != "skip"],
                         ids=lambda v: f"line-{v}" if isinstance(v, int) else "")
def test_readme_block_runs(line, code, tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"README block at line {line} failed:\n{done.stderr[-3000:]}"
