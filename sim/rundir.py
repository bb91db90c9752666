"""Run directories: every file written atomically (temporary file, then rename).

A run directory holds ``config.toml`` (every setting, the seed, backend, dtype
and package versions), ``metrics.json``, ``arrays.npz`` and PNG figures.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import tomli_w

VERSIONED_PACKAGES = ("beyond-backprop", "numpy", "scipy", "sympy", "cvxpy", "array-api-compat", "matplotlib",
                      "cupy-cuda12x")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(value):
    """Convert numpy values and arrays to JSON; non-finite numbers become ``null``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def _tomlable(value):
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_tomlable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_toml(path: Path, data: dict) -> None:
    write_text(path, tomli_w.dumps(_tomlable(data)))


def write_arrays(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_figure(path: Path, figure) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
