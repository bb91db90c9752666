"""Every notebook in notebooks/ is a jupytext percent notebook that executes *as a notebook* at its small size.

Each one is converted in memory by jupytext (no ``.ipynb`` is written next to it) and run
cell by cell by nbclient on a ``python3`` kernel of this interpreter, with
``BBP_NOTEBOOK_SMALL=1``: what a user gets from ``jupytext --execute`` or Jupyter, and
the only execution of each notebook in the suite. Its outputs must carry no warning on
stderr (``IProgress not found`` when ipywidgets is missing, a ``RuntimeWarning``, ...).
"""

import os
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.py"))
TIMEOUT = 300  # seconds per cell


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


def _stderr_and_errors(notebook) -> list[str]:
    """The text of every stderr stream and error output of the executed ``notebook``."""
    found = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                found.append(f"{out.get('ename')}: {out.get('evalue')}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_as_a_notebook(path, tmp_path, monkeypatch):
    notebook = jupytext.read(path)
    kinds = {cell.cell_type for cell in notebook.cells}
    assert kinds == {"code", "markdown"}, f"{path.name} should mix code and markdown cells, has {kinds}"
    # the kernel inherits this environment: small size, one BLAS thread (the suite runs in parallel)
    monkeypatch.setenv("BBP_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=TIMEOUT,
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed as a notebook:\n{str(err)[-4000:]}")
    assert not list(tmp_path.glob("*.ipynb")), "executing a notebook must not write .ipynb files"
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code_cells), f"{path.name}: a code cell did not run"
    stderr = _stderr_and_errors(notebook)
    assert not any("IProgress not found" in text for text in stderr), \
        f"{path.name}: tqdm found no ipywidgets (install the notebooks extra)"
    assert not any("Warning" in text for text in stderr), f"{path.name} warned:\n" + "\n".join(stderr)[-3000:]
    assert not stderr, f"{path.name} wrote to stderr:\n" + "\n".join(stderr)[-3000:]
