"""Shared test configuration.

* Figures render off-screen (matplotlib backend ``Agg``).
* Hypothesis profiles: ``dev`` (the default) and ``ci`` (fewer examples), the
  latter loaded when the environment variable ``CI`` is set. Property tests cap
  their own ``max_examples`` at the active profile's value, so ``CI=1`` makes
  them cheaper.
* Tests marked ``gpu`` are skipped unless CuPy and a CUDA device are usable.
"""

from __future__ import annotations

import os

os.environ["MPLBACKEND"] = "Agg"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=10, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _gpu_available():
        skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def eps64() -> float:
    """Machine epsilon of float64."""
    return float(np.finfo(np.float64).eps)
