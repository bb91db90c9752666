r"""What a grammar implies: expected symbol counts, label statistics, distinct tables, exact inversion.

These are the quantities the theory of the layerwise algorithm is stated in
(Malach & Shalev-Shwartz 2018): a level is learnable from its patches when its
patch tables are distinct and its symbols' label statistics differ.
"""

from __future__ import annotations

import numpy as np

from .grammar import Grammar

def symbol_counts(grammar: Grammar) -> list[np.ndarray]:
    r"""Expected counts of every symbol of every level given the label.

    ``counts[i][y, c]`` is :math:`E[\#\{\text{positions of level } i \text{ holding } c\} \mid y]`,
    computed from the transfer matrices
    :math:`T_i[c, c'] = \sum_v p_i(v \mid c)\, \#\{c' \text{ in patch } (c, v)\}`:
    ``counts[0] = I`` and ``counts[i+1] = counts[i] @ T_i`` (distractors excluded).
    """
    counts = [np.eye(grammar.n_classes)]
    sizes = grammar.alphabet_sizes
    for i, (e, p) in enumerate(zip(grammar.expansions, grammar.variant_probs)):
        e, p = np.asarray(e), np.asarray(p, dtype=float)
        transfer = np.zeros((sizes[i], sizes[i + 1]))
        for c in range(sizes[i]):
            for v in range(e.shape[1]):
                np.add.at(transfer[c], e[c, v], p[c, v])
        counts.append(counts[-1] @ transfer)
    return counts


def label_statistics(grammar: Grammar) -> list[np.ndarray]:
    r"""Label statistics :math:`P(y \mid c)` of every symbol of levels ``1 .. d``.

    ``stats[i - 1][c]`` is the distribution of the label given that a uniformly
    chosen position of level ``i`` holds ``c``:
    :math:`P(y \mid c) \propto \pi_y\, E[\#c \mid y]`. Symbols that never occur get
    a row of NaN. This is what the layerwise algorithm's per-patch classifier
    estimates, and what it clusters.
    """
    pi = np.asarray(grammar.class_probs, dtype=float)
    stats = []
    for counts in symbol_counts(grammar)[1:]:
        joint = pi[:, None] * counts
        total = joint.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(total > 0, joint / total, np.nan).T)
    return stats


def statistics_separation(grammar: Grammar) -> list[float]:
    """Per level ``1 .. d``: the smallest Euclidean distance between the label statistics of two occurring symbols."""
    out = []
    for st in label_statistics(grammar):
        st = st[np.all(np.isfinite(st), axis=1)]
        if len(st) < 2:
            out.append(np.inf)
            continue
        dist = np.linalg.norm(st[:, None, :] - st[None, :, :], axis=-1)
        out.append(float(dist[np.triu_indices(len(st), 1)].min()))
    return out


def _patch_keys(patches: np.ndarray, base: int) -> np.ndarray:
    width = patches.shape[-1]
    if float(base) ** width >= 2.0 ** 62:
        raise ValueError(f"patches of {width} symbols from an alphabet of {base} are too many to index "
                         f"(base**width must stay below 2**62)")
    weights = base ** np.arange(width, dtype=np.int64)
    return patches.astype(np.int64) @ weights


def distinct_patch_tables(grammar: Grammar) -> bool:
    """Whether every level's patches of positive probability have one parent, and the pixel patches differ."""
    sizes = grammar.alphabet_sizes
    for i, (e, p) in enumerate(zip(grammar.expansions, grammar.variant_probs)):
        e, p = np.asarray(e), np.asarray(p)
        keys, parents = _patch_keys(e, sizes[i + 1]), np.broadcast_to(np.arange(sizes[i])[:, None], p.shape)
        live = p > 0
        table = {}
        for key, parent in zip(keys[live].tolist(), parents[live].tolist()):
            if table.setdefault(key, parent) != parent:
                return False
    return len(np.unique(np.asarray(grammar.pixels), axis=0)) == sizes[-1]


def patches_of(grid: np.ndarray, s: int) -> np.ndarray:
    """``(N, m*s, m*s)`` grid -> its ``(N, m, m, s*s)`` non-overlapping ``s x s`` patches (row-major)."""
    n, side = grid.shape[:2]
    m = side // s
    return grid.reshape(n, m, s, m, s).transpose(0, 1, 3, 2, 4).reshape(n, m, m, s * s)


def invert(images: np.ndarray, grammar: Grammar) -> tuple:
    r"""Exact layerwise inversion of noise-free images through the grammar's tables.

    Each pixel patch is read as its nearest bottom symbol (Euclidean), then, level
    by level upwards, each :math:`s \times s` patch of symbols is looked up in the
    table of the level above (distractor symbols read as ``background``); a patch
    not in the table gives ``-1``. With distinct patch tables and no noise this
    recovers every level exactly (:func:`distinct_patch_tables`).

    Returns
    -------
    tuple of int arrays
        ``(labels (N,), level 1 (N, s, s), ..., level d (N, s^d, s^d))`` like
        :attr:`HierarchicalSample.latents`.
    """
    images = np.asarray(images, dtype=float)
    side, s = grammar.image_size, grammar.patch_size
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise ValueError(f"images must have shape (N, {side}, {side}), got {images.shape}")
    pixels = np.asarray(grammar.pixels, dtype=float)
    patches = patches_of(images, s)
    dist = (np.sum(patches ** 2, axis=-1)[..., None] - 2 * patches @ pixels.T + np.sum(pixels ** 2, axis=1))
    grid = np.argmin(dist, axis=-1)
    latents = [grid]
    sizes = grammar.alphabet_sizes
    for i in range(grammar.depth - 1, -1, -1):
        children = latents[0]
        if i == grammar.depth - 1 and grammar.distractor_symbols:
            children = np.where(np.isin(children, grammar.distractor_symbols), grammar.background, children)
        e, p = np.asarray(grammar.expansions[i]), np.asarray(grammar.variant_probs[i])
        live = p > 0
        keys = _patch_keys(e, sizes[i + 1])[live]
        parents = np.broadcast_to(np.arange(sizes[i])[:, None], p.shape)[live]
        order = np.argsort(keys, kind="stable")
        keys, parents = keys[order], parents[order]
        query = _patch_keys(patches_of(children, s), sizes[i + 1])
        pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
        found = keys[pos] == query
        latents.insert(0, np.where(found, parents[pos], -1))
    latents[0] = latents[0].reshape(-1)
    return tuple(latents)
