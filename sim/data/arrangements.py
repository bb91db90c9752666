r"""A hierarchical-digits preset where only the arrangement of the strokes carries the label.

Why the digits preset does not need depth
-----------------------------------------
In :func:`sim.data.hierarchical.digits_grammar` a class is a seven-segment glyph:
a vertex of the hypercube of segment indicators, and every vertex of a hypercube
is linearly separable from the others. Each segment's indicator is, up to the
noise, a linear function of the pixels of its cells (ink is brighter than paper),
so a linear classifier on pixels separates the classes; we measure 0.94-0.98 at
100 images. No preset with that look (glyphs of ink on paper) can defeat a linear
model, so the depth-needing preset below keeps the reference's *low* levels
(its stroke symbols, their low-level symbols with synonyms, the distractor
marks and the 3 x 3 pixel glyphs) and changes what the label controls.

The arrangement preset
----------------------
Three column alphabets :math:`M_0, M_1, M_2` of three stroke symbols each. Class
:math:`y` has a base grid :math:`\sigma_y` whose column :math:`c` holds the symbols
of :math:`M_c` in a class-specific order; its variants are the three cyclic row
shifts of :math:`\sigma_y` (probability :math:`(1-\varepsilon)/3` each) and, with
probability :math:`\varepsilon` (``signature``), a *signature* grid drawn once from
all stroke symbols. Under the shifts every position :math:`(r, c)` holds a uniform
symbol of :math:`M_c` whatever the class, so

.. math:: P(\text{symbol at } (r, c) = a \mid y) = (1-\varepsilon)\,\tfrac{[a \in M_c]}3
          + \varepsilon\,[\text{signature}_y(r, c) = a],

and an additive model over (position, symbol), that is a linear model on the
one-hot symbols or on pixels, gets its evidence from the signatures only: its
accuracy is at most about :math:`\varepsilon + (1-\varepsilon)/K` (ours). The label is a
function of the arrangement (which order each column has, jointly), which a
classifier of the whole top patch reads exactly. The paper's assumption still
holds: the patch tables are distinct and the label statistics of the symbols
differ, by a margin :math:`O(\varepsilon)` that :func:`arrangement_margin` reports;
the layerwise algorithm's sample size grows as that margin shrinks.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from .grammar import Grammar, _probability, generate
from .grammar_analysis import distinct_patch_tables, statistics_separation
from .seven_segment import digits_grammar

#: The column alphabets (stroke symbols of the digits preset, by name).
COLUMNS = (("┌", "├", "└"), ("─", "blank", "│"), ("┐", "┤", "┘"))


def _row_shifts(grid: np.ndarray) -> list[np.ndarray]:
    return [np.roll(grid, -v, axis=0) for v in range(grid.shape[0])]


def arrangement_grammar(*, noise: float = 0.2, distractor: float = 0.02, variant_prob: float = 0.3,
                        signature: float = 0.3, n_classes: int = 10, seed: int = 0) -> Grammar:
    r"""The arrangement preset (see the module docstring): 27 x 27 images of ``n_classes`` classes.

    Parameters
    ----------
    noise, distractor, variant_prob : float
        As in :func:`sim.data.hierarchical.digits_grammar` (its lower levels are reused).
    signature : float
        :math:`\varepsilon`, the probability of a class's signature grid; in ``(0, 1)``.
        The label-statistics margin grows with it, and so does what a linear model can use.
    n_classes : int
        Number of classes, 2 to 20.
    seed : int
        Seed of the (fixed) choice of base orders and signature grids.
    """
    signature = _probability("signature", signature)
    if not 0 < signature < 1:
        raise ValueError(f"signature must be in (0, 1) (the label statistics need it), got {signature!r}")
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or not 2 <= n_classes <= 20:
        raise ValueError(f"n_classes must be an integer from 2 to 20, got {n_classes!r}")
    n_classes = int(n_classes)
    base = digits_grammar(noise=noise, distractor=distractor, variant_prob=variant_prob)
    index = {name: i for i, name in enumerate(base.names[1])}
    columns = [[index[a] for a in col] for col in COLUMNS]
    rng = np.random.default_rng(seed)
    orders = [np.asarray(p) for p in itertools.permutations(range(3))]
    candidates = [np.stack([np.asarray(columns[c])[o[c]] for c in range(3)], axis=1)
                  for o in itertools.product(orders, orders, orders)]
    rng.shuffle(candidates)
    bases, seen = [], set()
    for grid in candidates:  # base grids with disjoint row-shift orbits
        keys = {tuple(g.ravel()) for g in _row_shifts(grid)}
        if not keys & seen:
            bases.append(grid)
            seen |= keys
        if len(bases) == n_classes:
            break
    n_strokes = base.alphabet_sizes[1]
    signatures = []
    while len(signatures) < n_classes:
        grid = rng.integers(0, n_strokes, size=(3, 3))
        if tuple(grid.ravel()) not in seen:
            signatures.append(grid)
            seen.add(tuple(grid.ravel()))
    level0 = np.stack([np.stack([g.ravel() for g in _row_shifts(b)] + [s.ravel()])
                       for b, s in zip(bases, signatures)]).astype(np.int64)
    probs = np.tile([(1 - signature) / 3] * 3 + [signature], (n_classes, 1))
    names = (tuple(str(y) for y in range(n_classes)), *base.names[1:])
    return replace(base, expansions=(level0, base.expansions[1]), variant_probs=(probs, base.variant_probs[1]),
                   class_probs=np.full(n_classes, 1.0 / n_classes), names=names)


def arrangements(n_samples: int, *, seed: int = 0, dtype: str = "float64", **grammar_settings):
    """Draw ``n_samples`` images of the arrangement preset (:func:`arrangement_grammar`) with every latent level."""
    return generate(arrangement_grammar(**grammar_settings), n_samples, seed=seed, dtype=dtype)


def arrangement_margin(grammar: Grammar) -> dict:
    """The assumption's numbers: distinct tables, and the label-statistics margin of every level (1 .. d)."""
    return {"distinct_patch_tables": distinct_patch_tables(grammar),
            "label_statistics_margin": statistics_separation(grammar)}
