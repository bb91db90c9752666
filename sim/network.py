r"""Ensembles of MLPs: ``E`` independent networks held in one set of arrays.

Weight ``W_l`` is ``(E, n_l, n_{l-1})``, bias ``b_l`` is ``(E, n_l)``. The
initialisations are the ones the theory needs:

``gaussian``
    :math:`W_{ij} \sim \mathcal N(0, s^2/n_{l-1})` with ``s`` the member's scale.
``uniform``
    Uniform on :math:`[-s\sqrt{3/n_{l-1}}, s\sqrt{3/n_{l-1}}]` (same variance).
``zero``
    All zeros.
``balanced``
    Small balanced ("decoupled") init for deep linear networks (Saxe et al.
    2013): :math:`W_l = s\, R_l R_{l-1}^T` with ``R_l`` random orthonormal frames of
    rank ``r = min(sizes)``, so :math:`W_{l+1}^T W_{l+1} = W_l W_l^T` and the
    end-to-end map is :math:`s^L R_L R_0^T`. Given ``frames=(U, V)`` (for example
    the teacher's singular vectors), ``R_L = U`` and ``R_0 = V``, and the network
    starts in the teacher's modes with strength :math:`s^L` each.

Biases start at zero. Every member draws from its own ``"init"`` seed stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .backend import check_memory, get_namespace, member_rngs, namespace, to_device, to_host
from .nn import check_activation

INITS = ("gaussian", "uniform", "zero", "balanced")


@dataclass(frozen=True)
class Network:
    """An ensemble of ``E`` MLPs with shared layer sizes and activation."""

    weights: tuple
    biases: tuple | None = None
    activation: str = "linear"

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.weights[0].shape[2], *(w.shape[1] for w in self.weights))

    @property
    def n_members(self) -> int:
        return self.weights[0].shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def member(self, m: int) -> Network:
        """The single-member ensemble ``E = 1`` holding member ``m``."""
        return self.members(slice(m, m + 1))

    def members(self, part: slice) -> Network:
        """The ensemble of the members ``part`` (views of this one's arrays where the backend has views)."""
        biases = None if self.biases is None else tuple(b[part, ...] for b in self.biases)
        return replace(self, weights=tuple(w[part, ...] for w in self.weights), biases=biases)

    def to_host(self) -> Network:
        biases = None if self.biases is None else tuple(to_host(b) for b in self.biases)
        return replace(self, weights=tuple(to_host(w) for w in self.weights), biases=biases)


def _member_values(value, n_members: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n_members, float(arr))
    if arr.shape != (n_members,):
        raise ValueError(f"{name} must be a number or one value per member ({n_members}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    return arr


def check_sizes(sizes) -> None:
    """Raise ``ValueError`` unless ``sizes`` lists at least two layer widths, each an integer >= 1 (not a bool)."""
    try:
        sizes = list(sizes)
    except TypeError:
        raise ValueError(f"sizes must list at least two positive layer widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least two positive layer widths, got {sizes!r}")
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
            raise ValueError(f"sizes must list at least two positive layer widths, each an integer >= 1: "
                             f"sizes[{i}] is {s!r} (sizes {sizes!r})")


def _orthonormal_frame(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, rank)))
    return q * np.sign(np.diag(r))


def init_network(sizes: Sequence[int], n_members: int = 1, *, seed: int = 0, init: str = "gaussian",
                 scale=1.0, activation: str = "linear", bias: bool = False, frames=None,
                 backend: str = "numpy", dtype: str = "float64", xp=None) -> Network:
    """Initialise an ensemble of ``n_members`` MLPs with layer ``sizes``.

    Parameters
    ----------
    sizes : sequence of int
        ``(n_0, n_1, ..., n_L)``, at least two entries, all positive.
    n_members : int
        Ensemble size ``E``.
    seed : int
        The run's seed; member ``m`` uses its own ``"init"`` stream.
    init : {"gaussian", "uniform", "zero", "balanced"}
        See the module docstring.
    scale : float or sequence of float
        One scale for all members or one per member.
    activation : {"linear", "relu", "tanh"}
        Hidden activation.
    bias : bool
        Whether the layers have biases (initialised to zero).
    frames : tuple (U, V), optional
        For ``balanced``: output frame ``U`` ``(n_L, r)`` and input frame ``V``
        ``(n_0, r)`` with orthonormal columns.
    backend, dtype, xp
        Where the arrays live (``xp`` overrides ``backend``).
    """
    check_sizes(sizes)
    sizes = [int(s) for s in sizes]
    if isinstance(n_members, bool) or not isinstance(n_members, int | np.integer) or n_members < 1:
        raise ValueError(f"n_members must be at least 1 and an integer, got {n_members!r}")
    n_members = int(n_members)
    # the host arrays (float64), their device copies, and in training a private copy, the updates, momentum
    # and feedback of the same sizes: about six times the weights
    n_weights = n_members * sum(a * b for a, b in zip(sizes[1:], sizes[:-1]))
    check_memory(6 * 8 * n_weights, f"an ensemble of {n_members} networks of sizes {sizes} "
                                    f"({n_weights:,} weights)")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    check_activation(activation)
    scales = _member_values(scale, n_members, "scale")
    xp = get_namespace(backend) if xp is None else xp
    rngs = member_rngs(seed, n_members, "init")
    pairs = list(zip(sizes[1:], sizes[:-1]))
    host = [np.zeros((n_members, n_out, n_in)) for n_out, n_in in pairs]
    if init == "balanced":
        rank = min(sizes)
        if frames is not None:
            u, v = (np.asarray(f, dtype=float) for f in frames)
            if u.shape != (sizes[-1], rank) or v.shape != (sizes[0], rank):
                raise ValueError(f"frames must be U {(sizes[-1], rank)} and V {(sizes[0], rank)}, "
                                 f"got {u.shape} and {v.shape}")
        for m, rng in enumerate(rngs):
            rs = [_orthonormal_frame(rng, n, rank) for n in sizes]
            if frames is not None:
                rs[0], rs[-1] = v, u
            for i, arr in enumerate(host):
                arr[m] = scales[m] * rs[i + 1] @ rs[i].T
    elif init != "zero":
        for m, rng in enumerate(rngs):
            for arr, (n_out, n_in) in zip(host, pairs):
                std = scales[m] / np.sqrt(n_in)
                if init == "gaussian":
                    arr[m] = rng.normal(0.0, std, size=(n_out, n_in))
                else:
                    arr[m] = rng.uniform(-std * np.sqrt(3), std * np.sqrt(3), size=(n_out, n_in))
    weights = tuple(to_device(a, xp, dtype) for a in host)
    biases = tuple(xp.zeros((n_members, n), dtype=weights[0].dtype) for n in sizes[1:]) if bias else None
    return Network(weights, biases, activation)


def network_from_weights(weights, biases=None, activation: str = "linear") -> Network:
    """Wrap given weight arrays ``(E, n_l, n_{l-1})`` (and biases) as a :class:`Network`."""
    check_activation(activation)
    weights = tuple(weights)
    if not weights:
        raise ValueError("weights must hold at least one layer")
    xp = namespace(*weights)
    for i, w in enumerate(weights):
        if w.ndim != 3:
            raise ValueError(f"weight W_{i + 1} must have shape (E, n_out, n_in), got {tuple(w.shape)}")
        if i and w.shape[2] != weights[i - 1].shape[1]:
            raise ValueError(f"weight W_{i + 1} expects {w.shape[2]} inputs but W_{i} has "
                             f"{weights[i - 1].shape[1]} outputs")
        if w.shape[0] != weights[0].shape[0]:
            raise ValueError(f"weight W_{i + 1} has {w.shape[0]} members, W_1 has {weights[0].shape[0]}")
    if biases is not None:
        biases = tuple(xp.asarray(b) for b in biases)
    return Network(weights, biases, activation)
