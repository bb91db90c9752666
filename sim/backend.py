"""Array backends, dtypes and seeded host-side random draws.

The core of :mod:`sim` never imports numpy or CuPy directly for its numerics:
every core function takes the array namespace from its inputs with
:func:`namespace`, so the same code runs on numpy (CPU), CuPy (GPU) and
array-api-strict (the tests' proof that only the standard array API is used).

Random numbers are always drawn on the host with numpy, from
``numpy.random.SeedSequence`` children, and then moved to the device. A run is
therefore reproducible bit for bit across backends (up to the device's own
floating-point arithmetic).

Seed layout
-----------
A run has one integer ``seed``. Member ``m`` of an ensemble draws from the
child ``SeedSequence(seed).spawn(E)[m]``, and inside a member each component
(``"init"``, ``"feedback"``, ...) draws from that child's own child with the
component's fixed index in :data:`COMPONENTS`. Data shared by all members draw
from the root's component children, ``SeedSequence(seed, spawn_key=(c,))`` with
``c`` offset by :data:`SHARED_OFFSET` so that they never collide with members.
A member's draws therefore depend only on ``(seed, m, component)``, not on the
ensemble size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Sequence

import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_numpy_array

BACKENDS = ("numpy", "cupy")
DTYPES = ("float64", "float32")

#: Fixed indices of the random components of a member or of a run.
COMPONENTS = ("init", "feedback", "data", "batches", "synthetic_gradient", "noise", "extra", "feedback_batch")
#: Whether :func:`tune_allocator` took effect in this process.
ALLOCATOR_TUNED = False
#: Offset of the shared (not per-member) component streams of a run.
SHARED_OFFSET = 2**20


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")
    return value


def get_namespace(backend: str = "numpy"):
    """Return the array-API namespace of a backend name (``"numpy"`` or ``"cupy"``).

    Raises
    ------
    ValueError
        If the name is unknown, or CuPy (or a CUDA device) is not available.
    """
    _check_choice("backend", backend, BACKENDS)
    if backend == "numpy":
        import array_api_compat.numpy as xp

        return xp
    try:
        import cupy
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ValueError(
            "backend 'cupy' needs the package cupy: install the gpu extra "
            "(pip install 'beyond-backprop[gpu]')"
        ) from err
    try:  # pragma: no cover - needs a GPU
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # pragma: no cover - needs a GPU
        raise ValueError(f"backend 'cupy' needs a CUDA device; none usable: {err}") from err
    if n_devices < 1:  # pragma: no cover - needs a GPU
        raise ValueError("backend 'cupy' needs a CUDA device; none was found")
    import array_api_compat.cupy as xp  # pragma: no cover - needs a GPU

    return xp  # pragma: no cover - needs a GPU


def namespace(*arrays):
    """The array namespace shared by ``arrays`` (``None`` entries are ignored)."""
    return array_namespace(*[a for a in arrays if a is not None])


def get_dtype(xp, dtype: str = "float64"):
    """The floating dtype object of ``xp`` named ``dtype`` (``float64`` or ``float32``)."""
    _check_choice("dtype", dtype, DTYPES)
    return getattr(xp, dtype)


def to_device(array, xp, dtype: str | None = "float64"):
    """Move a host (numpy) array to the namespace ``xp``, optionally casting it."""
    host = np.asarray(array)
    if dtype is None:
        return xp.asarray(host)
    return xp.asarray(host.astype(_check_choice("dtype", dtype, DTYPES), copy=False))


def column_major(a):
    """A copy of ``a`` in which each matrix (the last two axes) is stored column by column.

    ``a`` keeps its shape and values; only the memory order changes, to the
    one the engine's matmuls read fastest: the forward product ``h @ W^T``
    then reads ``W^T`` contiguously (on numpy about 20% off a training step
    at width 32, see ``bbp bench``). Numpy and CuPy arrays get the new layout;
    on other namespaces, which do not expose memory order, it is a plain copy.
    """
    if is_numpy_array(a):
        module = np
    elif is_cupy_array(a):  # pragma: no cover - needs a GPU
        import cupy as module
    else:
        return namespace(a).asarray(a, copy=True)
    return module.swapaxes(module.array(module.swapaxes(a, -1, -2), order="C", copy=True), -1, -2)


def is_column_major(a) -> bool:
    """Whether each matrix of ``a`` is stored column by column (as :func:`column_major` makes it).

    Always ``False`` on namespaces that do not expose memory order.
    """
    if is_numpy_array(a) or is_cupy_array(a):
        return a.ndim >= 2 and a.swapaxes(-1, -2).flags.c_contiguous and not a.flags.c_contiguous
    return False


def to_host(array) -> np.ndarray:
    """Copy an array of any supported backend to a numpy array on the host."""
    if isinstance(array, np.ndarray | np.generic | float | int):
        return np.asarray(array)
    if is_cupy_array(array):  # pragma: no cover - needs a GPU
        return array.get()
    try:
        return np.asarray(array)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(array)


def tune_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system.

    Every step of the engine allocates and frees arrays of the same sizes.
    With glibc's defaults, arrays above a size threshold are mapped fresh from
    the kernel and unmapped on release, and each reuse pays page faults; this
    made the ensemble step up to 3-4x slower at width 32 (``bbp bench``). The
    fix raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB
    (``mallopt``), process-wide: ``bbp`` calls it at start-up, and
    :func:`sim.train.train` and :func:`sim.bench.run_bench` on their first
    call. The cost is that up to that much freed memory stays with the
    process. Setting the environment variable ``BBP_TUNE_ALLOCATOR=0`` keeps
    glibc's defaults. Returns whether the tuning is in effect (``False`` off
    glibc or when switched off); it is applied once per process.
    """
    global ALLOCATOR_TUNED
    if ALLOCATOR_TUNED or os.environ.get("BBP_TUNE_ALLOCATOR", "1").strip() == "0":
        return ALLOCATOR_TUNED
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ALLOCATOR_TUNED = mallopt(m_mmap_threshold, 1 << 30) == 1 and mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    return ALLOCATOR_TUNED


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_BLAS_FOUND: dict = {"modules": -1, "controller": None}


def _blas_libraries():
    """The BLAS libraries loaded (``threadpoolctl``), found again only after new imports (a scan costs ~1 ms)."""
    if _BLAS_FOUND["modules"] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        _BLAS_FOUND["controller"] = ThreadpoolController().select(user_api="blas")
        _BLAS_FOUND["modules"] = len(sys.modules)
    return _BLAS_FOUND["controller"]


@functools.cache
def _load_scipy_blas() -> None:
    """Load scipy's BLAS: its wheels bundle their own OpenBLAS beside numpy's, and a limit covers only what is loaded."""
    try:
        import scipy.linalg  # noqa: F401  (about 0.2 s, once per process that enters blas_policy)
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass


#: Work of one matrix product (FLOPs, ``2 m k n``) from which the engine lets BLAS
#: use more than one thread (:func:`blas_policy`). Measured on the project's 2-core
#: machine (OpenBLAS): on a quiet machine two BLAS threads halve the time of a
#: product from about 4 MFLOP on, but with two other busy processes on the cores
#: they made products of 4-270 MFLOP 2-150x *slower* (a BLAS thread spins or waits
#: for a core at every product); from about 500 MFLOP on (12 ms on one core)
#: two threads were no slower under load and about 2x faster on a quiet machine.
BLAS_MIN_FLOPS = 5e8

#: The engine's own BLAS limits in effect, innermost last: ``(budget, limit)``.
_ENGINE_LIMITS: list[tuple[int, int]] = []


def _blas_limit_now() -> int:
    return min((lib.num_threads for lib in _blas_libraries().lib_controllers), default=cpu_count())


def blas_threads() -> int:
    """The threads BLAS may use as set from outside the engine (:func:`cpu_count` if no BLAS is found).

    It follows ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` and any
    ``threadpoolctl`` limit in effect, as set by whoever runs several
    processes or threads at once (``make test``, Dask workers, the
    layer-parallel runtime), but not the engine's own limit of
    :func:`blas_policy`: inside it this is the budget the policy started from
    (the smallest limit when no policy is in effect). The trainer's member
    threads (:func:`sim.train.member_threads`) never exceed it.
    """
    now = _blas_limit_now()
    if _ENGINE_LIMITS and now == _ENGINE_LIMITS[-1][1]:
        return _ENGINE_LIMITS[-1][0]
    return now


@contextlib.contextmanager
def blas_policy(flops_per_product: float | None = None):
    """The engine's BLAS threading, process-wide, inside the block (also a decorator); yields the BLAS threads.

    One BLAS thread, unless the work's matrix products are large: with
    ``flops_per_product`` (``2 m k n`` of its largest single product, one
    member's) at least :data:`BLAS_MIN_FLOPS`, BLAS may use the budget,
    ``min(cpu_count(), blas_threads())``. Small products gain little from
    BLAS threads on a quiet machine and lose many times over when the cores
    are shared (see :data:`BLAS_MIN_FLOPS`); where the engine runs its own
    threads (member threads, block workers) they are single-threaded anyway.
    It never raises the threads above a limit set from outside
    (``OPENBLAS_NUM_THREADS``, a caller's ``threadpoolctl`` limit), and nested
    policies see the same budget, so an experiment runs under one thread and
    a ``train`` inside it with large products may use the budget. Used by
    ``bbp run`` / ``verify`` / ``bench`` (:func:`sim.experiments.run_experiment`,
    :func:`theory.claims.verify`, :func:`sim.bench.run_bench`), :func:`sim.train.train`
    and the layerwise runtime.
    """
    budget = max(1, min(cpu_count(), blas_threads()))
    threads = budget if flops_per_product is not None and flops_per_product >= BLAS_MIN_FLOPS else 1
    with _engine_limit(budget, threads):
        yield threads


def blas_limit(threads: int):
    """BLAS limited to ``threads`` inside the block, which is also the budget of any :func:`blas_policy` in it.

    For code that runs its own worker threads (the layer-parallel runtime,
    :func:`sim.parallel.blas_limit`): work nested in a worker sees ``threads``
    as what it may use.
    """
    return _engine_limit(int(threads), int(threads))


@contextlib.contextmanager
def _engine_limit(budget: int, threads: int):
    _load_scipy_blas()  # so that the limit covers it, although the engine imports scipy lazily (sim.lazy)
    if not _blas_libraries().lib_controllers:
        yield threads
        return
    entry = (budget, threads)
    _ENGINE_LIMITS.append(entry)
    try:
        with _blas_libraries().limit(limits=threads, user_api="blas"):
            yield threads
    finally:
        _ENGINE_LIMITS.remove(entry)  # equal entries are interchangeable


def member_rngs(seed: int, n_members: int, component: str) -> list[np.random.Generator]:
    """One numpy Generator per ensemble member for a random ``component``.

    Member ``m`` uses ``SeedSequence(seed).spawn(E)[m]``'s child number
    ``COMPONENTS.index(component)``; see the module docstring.
    """
    _check_choice("random component", component, COMPONENTS)
    check_seed(seed)
    c = COMPONENTS.index(component)
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(m, c))) for m in range(n_members)]


def shared_rng(seed: int, component: str) -> np.random.Generator:
    """A numpy Generator for a ``component`` shared by all members of a run."""
    _check_choice("random component", component, COMPONENTS)
    check_seed(seed)
    c = COMPONENTS.index(component)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SHARED_OFFSET + c,)))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now: ``MemAvailable`` of ``/proc/meminfo``, else ``sysconf``.

    ``None`` where the system does not say.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_memory(nbytes: float, what: str) -> None:
    """Refuse, before allocating, work that needs more memory than is available.

    ``nbytes`` is a (generous) estimate of what ``what`` will allocate; raises
    ``ValueError`` with the estimate and the memory available when it does not
    fit. Does nothing where the available memory is unknown.
    """
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(f"{what} needs about {_gib(nbytes)} of memory, but only {_gib(available)} is available; "
                         f"use fewer members (seeds), narrower layers or fewer samples")


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
