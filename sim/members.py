r"""Several ensembles as one: blocks of members joined along the ensemble axis, and split back.

A sweep folds points that differ only in settings the trainer varies per
member (a learning rate, an initial scale) into one ensemble: point
:math:`p` of :math:`P`, with :math:`S` seed replicates each, holds the
members :math:`pS, \dots, pS + S - 1` of an ensemble of :math:`E = PS`.
A member's random draws depend on ``(seed, m, component)`` (see
:mod:`sim.backend`), so each point's block is drawn on its own, with member
indices :math:`0 .. S-1`, and the blocks are joined (:func:`join_networks`,
:func:`join_members`); after training, :func:`select_members` gives the
:class:`sim.train.TrainResult` of one block, its members numbered from 0
again, as if that block had been trained alone. The trainer treats members
independently (the minibatches are shared, every update and record is per
member), so the numbers of a block are those of the block trained alone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .backend import namespace
from .network import Network


def join_members(blocks: list):
    """The arrays of ``blocks`` (each ``(E_p, ...)``) joined along the ensemble axis: ``(sum E_p, ...)``."""
    if not blocks:
        raise ValueError("join_members needs at least one block, got none")
    if len(blocks) == 1:
        return blocks[0]
    xp = namespace(*blocks)
    return xp.concat(list(blocks), axis=0)


def join_networks(networks: list[Network]) -> Network:
    """One ensemble holding the members of ``networks`` in order (same sizes and activation)."""
    if not networks:
        raise ValueError("join_networks needs at least one network, got none")
    first = networks[0]
    for net in networks[1:]:
        if net.sizes != first.sizes or net.activation != first.activation:
            raise ValueError(f"cannot join networks of sizes {first.sizes} ({first.activation}) and "
                             f"{net.sizes} ({net.activation})")
        if (net.biases is None) != (first.biases is None):
            raise ValueError("cannot join networks with and without biases")
    weights = tuple(join_members([n.weights[i] for n in networks]) for i in range(first.n_layers))
    biases = None if first.biases is None else \
        tuple(join_members([n.biases[i] for n in networks]) for i in range(first.n_layers))
    return replace(first, weights=weights, biases=biases)


def join_modules(modules: list):
    """The trained modules of several blocks (:class:`sim.synthetic.SyntheticGradients`) as one ensemble's.

    Every block's modules must have the same kind, inputs, target and
    ``every``; their parameters and per-member learning rates are joined.
    """
    if not modules:
        raise ValueError("join_modules needs at least one block, got none")
    first = modules[0]
    for m in modules[1:]:
        if (m.kind, m.inputs, m.target, m.every) != (first.kind, first.inputs, first.target, first.every):
            raise ValueError("cannot join synthetic-gradient modules of different kinds, inputs, targets or every")
    params = tuple({k: join_members([m.params[i][k] for m in modules]) for k in first.params[i]}
                   for i in range(first.n_layers))
    lr = None if first.lr is None else join_members([m.lr for m in modules])
    return replace(first, params=params, lr=lr)


def _module_members(modules, part: slice):
    params = tuple({k: v[part, ...] for k, v in p.items()} for p in modules.params)
    return replace(modules, params=params, lr=None if modules.lr is None else modules.lr[part])


def repeat_members(arrays: list | None, times: int) -> list | None:
    """Each array of ``arrays`` (e.g. feedback matrices, ``(S, ...)``) repeated ``times`` along the ensemble axis."""
    if arrays is None:
        return None
    return [join_members([a] * times) for a in arrays]


def select_members(result, part: slice):
    """The :class:`sim.train.TrainResult` of the members ``part`` of ``result``, numbered from 0.

    The network, every metric (axis 1, the member axis of ``(T, E, ...)``),
    the feedback, the trained modules (synthetic gradients) and the
    divergences are restricted to ``part``.
    """
    start, stop, step = part.indices(result.network.n_members)
    if step != 1 or stop <= start:
        raise ValueError(f"select_members takes a non-empty contiguous slice, got {part}")
    diverged = [replace(d, member=d.member - start) for d in result.diverged if start <= d.member < stop]
    return replace(result, network=result.network.members(slice(start, stop)),
                   metrics={k: v[:, start:stop] for k, v in result.metrics.items()}, diverged=diverged,
                   feedback=None if result.feedback is None else [f[start:stop] for f in result.feedback],
                   modules=None if result.modules is None else _module_members(result.modules, slice(start, stop)))


def train_folded(run, networks: list[Network], lrs: list, feedback, modules=None) -> list:
    """Train the blocks ``networks`` (``S`` members each, block ``p`` with learning rate ``lrs[p]``) as one ensemble.

    ``run(network, lr, feedback, modules)`` trains one ensemble and returns its
    :class:`sim.train.TrainResult`; ``feedback`` is one block's (repeated for
    the joint ensemble), ``modules`` the joined modules of every block (or
    ``None``). Returns one result per block, as if trained alone. A block
    whose every member diverged is trained again alone: alone, training stops
    when every member has diverged, so its records are shorter than the joint run's.
    """
    if len(networks) == 1:
        return [run(networks[0], lrs[0], feedback, None)]
    n_seeds, n_blocks = networks[0].n_members, len(networks)
    joint = run(join_networks(networks), np.repeat(np.asarray(lrs, dtype=float), n_seeds),
                repeat_members(feedback, n_blocks), modules)
    parts = [select_members(joint, slice(p * n_seeds, (p + 1) * n_seeds)) for p in range(n_blocks)]
    return [run(networks[p], lrs[p], feedback, None) if len({d.member for d in res.diverged}) == n_seeds else res
            for p, res in enumerate(parts)]
