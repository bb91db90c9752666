"""Every notebook in notebooks/ is a jupytext percent notebook that runs with its small-size switch."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    notebook = jupytext.read(path)
    kinds = {cell.cell_type for cell in notebook.cells}
    assert kinds == {"code", "markdown"}, f"{path.name} should mix code and markdown cells, has {kinds}"
    code = "\n\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    script = tmp_path / f"{path.stem}.py"
    script.write_text(code)
    env = {**os.environ, "BBP_NOTEBOOK_SMALL": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
