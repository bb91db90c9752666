r"""Random grammars with distinct patch tables, for the theory (:func:`random_grammar`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..backend import shared_rng
from .grammar import Grammar, _positive_int, _probability
from .grammar_analysis import statistics_separation

def _distinct_rows(rng: np.random.Generator, n_rows: int, width: int, alphabet: np.ndarray, name: str,
                   forbidden=()) -> np.ndarray:
    total = float(len(alphabet)) ** width
    if n_rows + len(forbidden) > total:
        raise ValueError(f"{name}: cannot draw {n_rows} distinct patches of {width} symbols from an alphabet "
                         f"of {len(alphabet)} (only {int(total)} exist); use fewer variants or larger alphabets")
    seen = {tuple(r) for r in forbidden}
    rows = []
    while len(rows) < n_rows:
        row = tuple(int(v) for v in alphabet[rng.integers(0, len(alphabet), size=width)])
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return np.asarray(rows, dtype=np.int64).reshape(n_rows, width)


def random_grammar(seed: int = 0, *, depth: int = 2, patch_size: int = 2, alphabet_sizes: Sequence[int] = (3, 5, 5),
                   variants: int = 2, noise: float = 0.0, distractor: float = 0.0, n_distractors: int = 0,
                   twins: tuple[int, int] | None = None, min_separation: float = 0.0,
                   max_tries: int = 200) -> Grammar:
    r"""A random grammar with distinct patch tables, drawn from ``seed``.

    Parameters
    ----------
    seed : int
        Seed of the ``"extra"`` stream.
    depth : int
        :math:`d >= 1`; images are :math:`s^{d+1}` pixels wide.
    patch_size : int
        :math:`s >= 2`.
    alphabet_sizes : sequence of int
        :math:`(|C_0|, \dots, |C_d|)`, ``depth + 1`` entries; :math:`|C_0| \ge 2` classes.
    variants : int
        Variants per symbol; each symbol's variant probabilities are Dirichlet(2).
    noise : float
        Pixel noise :math:`\sigma`.
    distractor, n_distractors : float, int
        Probability that a background position (bottom symbol 0, drawn blank)
        becomes one of the last ``n_distractors`` bottom symbols, which the grammar
        itself never uses.
    twins : (a, b), optional
        Make bottom symbols ``a`` and ``b`` *twins* with identical label statistics:
        ``b`` is first removed from the last table, then every occurrence of ``a``
        there becomes ``a`` or ``b`` with probability 1/2 each, independently (each
        variant is split into all its ``a``/``b`` versions). Every patch stays
        distinct, but no statistic of the label can tell ``a`` from ``b``.
    min_separation : float
        Redraw until every level's label statistics are pairwise at least this far
        apart (:func:`statistics_separation`; twins excepted).
    max_tries : int
        Give up (``ValueError``) after this many draws.

    Notes
    -----
    Patches are drawn uniformly without repetition over all symbols and variants
    of a level, so the tables are distinct (:func:`distinct_patch_tables`), and
    redrawn until every (non-distractor) symbol of every level occurs in some
    patch; pixel patches are distinct random binary patterns (the background one
    is blank).
    """
    depth = _positive_int("depth", depth)
    s = _positive_int("patch_size", patch_size, 2)
    variants = _positive_int("variants", variants)
    sizes = [int(v) for v in alphabet_sizes]
    if len(sizes) != depth + 1 or sizes[0] < 2 or min(sizes) < 1:
        raise ValueError(f"alphabet_sizes must list depth + 1 = {depth + 1} sizes with at least 2 classes, "
                         f"got {list(alphabet_sizes)}")
    n_distractors = _positive_int("n_distractors", n_distractors, 0)
    distractor = _probability("distractor", distractor)
    if distractor > 0 and n_distractors < 1:
        raise ValueError("distractor > 0 needs n_distractors >= 1")
    if n_distractors >= sizes[-1] - 1:
        raise ValueError(f"n_distractors must leave at least two non-distractor bottom symbols, got "
                         f"{n_distractors} of {sizes[-1]}")
    if 2 ** (s * s) < sizes[-1]:
        raise ValueError(f"{sizes[-1]} bottom symbols need distinct {s}x{s} binary patches; only {2 ** (s * s)} exist")
    used = np.arange(sizes[-1] - n_distractors)
    if twins is not None:
        a, b = (int(t) for t in twins)
        if a == b or not (0 <= a < len(used) and 0 <= b < len(used)):
            raise ValueError(f"twins must be two different non-distractor bottom symbols in [0, {len(used)}), "
                             f"got {twins!r}")
    rng = shared_rng(seed, "extra")
    for _ in range(_positive_int("max_tries", max_tries)):
        expansions, probs = [], []
        for i in range(depth):
            alphabet = np.arange(sizes[i + 1]) if i < depth - 1 else used
            if twins is not None and i == depth - 1:
                alphabet = alphabet[alphabet != twins[1]]
            rows = _distinct_rows(rng, sizes[i] * variants, s * s, alphabet, f"level {i}")
            expansions.append(rows.reshape(sizes[i], variants, s * s))
            probs.append(rng.dirichlet(np.full(variants, 2.0), size=sizes[i]))
        covered = all(np.isin(np.arange(sizes[i + 1]) if i < depth - 1 else used, e).all()
                      for i, e in enumerate(expansions)) if twins is None else \
            all(np.isin(np.arange(sizes[i + 1]) if i < depth - 1 else used[used != twins[1]], e).all()
                for i, e in enumerate(expansions))
        if not covered:  # every symbol must occur
            continue
        if twins is not None:
            expansions[-1], probs[-1] = _split_twins(expansions[-1], probs[-1], *twins)
        patterns = _distinct_rows(rng, sizes[-1] - 1, s * s, np.arange(2), "pixels",
                                  forbidden=[(0,) * (s * s)])
        pixels = np.concatenate([np.zeros((1, s * s)), patterns]).astype(float)
        grammar = Grammar(s, tuple(expansions), tuple(probs), pixels, np.full(sizes[0], 1.0 / sizes[0]),
                          noise=float(noise), distractor=distractor,
                          background=0 if n_distractors else None,
                          distractor_symbols=tuple(range(sizes[-1] - n_distractors, sizes[-1])))
        if min_separation <= 0:
            return grammar
        seps = statistics_separation(grammar if twins is None else _merge_twins(grammar, *twins))
        if min(seps) >= min_separation:
            return grammar
    raise ValueError(f"no grammar using every symbol with label statistics separated by {min_separation} in "
                     f"{max_tries} draws; lower min_separation or change the alphabet sizes")


def _split_twins(expansion: np.ndarray, probs: np.ndarray, a: int, b: int):
    n, n_var, width = expansion.shape
    rows, row_probs = [[] for _ in range(n)], [[] for _ in range(n)]
    for c in range(n):
        for v in range(n_var):
            where = np.flatnonzero(expansion[c, v] == a)
            for mask in range(2 ** len(where)):
                patch = expansion[c, v].copy()
                patch[where[[(mask >> k) & 1 == 1 for k in range(len(where))]]] = b
                rows[c].append(patch)
                row_probs[c].append(probs[c, v] / 2 ** len(where))
    n_max = max(len(r) for r in rows)
    out = np.zeros((n, n_max, width), dtype=np.int64)
    out_p = np.zeros((n, n_max))
    for c in range(n):
        out[c, :len(rows[c])] = rows[c]
        out_p[c, :len(rows[c])] = row_probs[c]
    return out, out_p


def _merge_twins(grammar: Grammar, a: int, b: int) -> Grammar:
    """The grammar seen by a label statistic when bottom symbol ``b`` is read as ``a`` (``b`` never occurs)."""
    last = np.where(np.asarray(grammar.expansions[-1]) == b, a, grammar.expansions[-1])
    return replace(grammar, expansions=(*grammar.expansions[:-1], last))
