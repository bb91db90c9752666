r"""The hierarchical digits preset (:func:`digits_grammar`): seven-segment digits via stroke and low-level symbols."""

from __future__ import annotations

import numpy as np

from .grammar import Grammar, HierarchicalSample, _probability, generate

_N, _E, _S, _W = 1, 2, 4, 8
#: Seven-segment digits on a 3 x 3 grid of stroke nodes: segment -> node pairs.
_SEGMENTS = {"a": (((0, 0), (0, 1)), ((0, 1), (0, 2))), "b": (((0, 2), (1, 2)),), "c": (((1, 2), (2, 2)),),
             "d": (((2, 0), (2, 1)), ((2, 1), (2, 2))), "e": (((1, 0), (2, 0)),), "f": (((0, 0), (1, 0)),),
             "g": (((1, 0), (1, 1)), ((1, 1), (1, 2)))}
#: Each digit's variants (segments, probability); the first is the usual glyph.
DIGIT_VARIANTS = {0: (("abcdef", 1.0),), 1: (("bc", 1.0),), 2: (("abged", 1.0),), 3: (("abgcd", 1.0),),
                  4: (("fgbc", 1.0),), 5: (("afgcd", 1.0),), 6: (("afgedc", 0.7), ("fgedc", 0.3)),
                  7: (("abc", 0.7), ("abcf", 0.3)), 8: (("abcdefg", 1.0),), 9: (("abcdfg", 0.7), ("abcfg", 0.3))}
_ARM_NAMES = {0: "blank", _E | _W: "─", _N | _S: "│", _E | _S: "┌", _S | _W: "┐", _N | _E: "└", _N | _W: "┘",
              _N | _E | _S: "├", _N | _S | _W: "┤", _E | _S | _W: "┬", _N | _E | _W: "┴", _E: "╶", _W: "╴",
              _N: "╵", _S: "╷"}
_CORNERS = (_E | _S, _S | _W, _N | _E, _N | _W)


def _arm_grid(segments: str) -> np.ndarray:
    grid = np.zeros((3, 3), dtype=np.int64)
    for seg in segments:
        for (r1, c1), (r2, c2) in _SEGMENTS[seg]:
            if r1 == r2:
                grid[r1, c1] |= _E
                grid[r2, c2] |= _W
            else:
                grid[r1, c1] |= _S
                grid[r2, c2] |= _N
    return grid


def _arm_glyph(arms: int) -> np.ndarray:
    glyph = np.zeros((3, 3))
    if arms:
        glyph[1, 1] = 1
    for bit, (r, c) in ((_N, (0, 1)), (_E, (1, 2)), (_S, (2, 1)), (_W, (1, 0))):
        if arms & bit:
            glyph[r, c] = 1
    return glyph


def digits_grammar(*, noise: float = 0.2, distractor: float = 0.02, variant_prob: float = 0.3,
                   digit_variants: bool = True) -> Grammar:
    r"""The hierarchical digits of Malach & Shalev-Shwartz (2018): 27 x 27 images of ten classes.

    * level 0: the digit :math:`y \in \{0..9\}`;
    * level 1, :math:`C_1` (stroke symbols): a digit is a seven-segment glyph on a
      3 x 3 grid of stroke nodes; each node's symbol is the set of its arms
      (N, E, S, W), for example the corners ┌ ┐ └ ┘, the bars ─ │, the junctions
      ├ ┤, the ends ╶ ╴ ╵ ╷, and blank. Digits 6, 7, 9 have a second variant
      (an extra or a missing segment, probability 0.3);
    * level 2, :math:`C_2` (low-level symbols): each stroke symbol becomes a
      3 x 3 grid of low-level symbols: its centre piece in the middle, a segment
      (─ or │) on each arm, blanks elsewhere. Variants (probability
      ``variant_prob``): bars get a slanted middle /, corners a
      ring ○ as centre;
    * distractors: each blank low-level position becomes a small mark (+ or x)
      with probability ``distractor``;
    * pixels: each low-level symbol is a 3 x 3 binary glyph; Gaussian noise
      :math:`\sigma` = ``noise``.

    The patch tables are distinct and the label statistics of the stroke symbols
    distinct (two distractor marks share theirs, so the layerwise algorithm
    merges them: the predicted failure mode).
    """
    _probability("variant_prob", variant_prob)
    digit_rows = {y: (v if digit_variants else v[:1]) for y, v in DIGIT_VARIANTS.items()}
    arm_grids = {y: [(_arm_grid(seg), p) for seg, p in rows] for y, rows in digit_rows.items()}
    strokes = sorted({int(a) for rows in arm_grids.values() for g, _ in rows for a in g.ravel()})
    stroke_index = {a: i for i, a in enumerate(strokes)}
    # low-level alphabet: blank, the two segments, the two slants, the ring, the other centre pieces, distractors
    centre_pieces = [a for a in strokes if a not in (0, _E | _W, _N | _S)]
    low_names = ["blank", "─", "│", "/", "○"] + [f"·{_ARM_NAMES[a]}" for a in centre_pieces] + ["+", "x"]
    low_glyphs = [np.zeros((3, 3)), _arm_glyph(_E | _W), _arm_glyph(_N | _S), np.fliplr(np.eye(3)),
                  1.0 - np.pad([[1.0]], 1)]
    low_glyphs += [_arm_glyph(a) for a in centre_pieces]
    low_glyphs += [_arm_glyph(_N | _E | _S | _W), np.eye(3) + np.fliplr(np.eye(3)) - np.pad([[1.0]], 1)]
    low = {name: i for i, name in enumerate(low_names)}

    def centre_of(arms: int) -> int:
        return {0: low["blank"], _E | _W: low["─"], _N | _S: low["│"]}.get(arms, low.get(f"·{_ARM_NAMES[arms]}"))

    def stroke_patch(arms: int, centre: int) -> np.ndarray:
        patch = np.full((3, 3), low["blank"], dtype=np.int64)
        patch[1, 1] = centre
        for bit, (r, c), seg in ((_N, (0, 1), "│"), (_E, (1, 2), "─"), (_S, (2, 1), "│"), (_W, (1, 0), "─")):
            if arms & bit:
                patch[r, c] = low[seg]
        return patch.ravel()

    stroke_rows = []
    for arms in strokes:
        rows = [(stroke_patch(arms, centre_of(arms)), 1.0)]
        alternative = {_E | _W: low["/"], _N | _S: low["/"]}.get(arms, low["○"] if arms in _CORNERS else None)
        if alternative is not None and variant_prob > 0:
            rows = [(rows[0][0], 1.0 - variant_prob), (stroke_patch(arms, alternative), variant_prob)]
        stroke_rows.append(rows)
    n_var = max(len(r) for r in stroke_rows)
    level1 = np.zeros((len(strokes), n_var, 9), dtype=np.int64)
    level1_p = np.zeros((len(strokes), n_var))
    for i, rows in enumerate(stroke_rows):
        for v, (patch, p) in enumerate(rows):
            level1[i, v], level1_p[i, v] = patch, p
    n_digit_var = max(len(r) for r in arm_grids.values())
    level0 = np.zeros((10, n_digit_var, 9), dtype=np.int64)
    level0_p = np.zeros((10, n_digit_var))
    for y, rows in arm_grids.items():
        for v, (grid, p) in enumerate(rows):
            level0[y, v] = [stroke_index[int(a)] for a in grid.ravel()]
            level0_p[y, v] = p
    names = (tuple(str(y) for y in range(10)), tuple(_ARM_NAMES[a] for a in strokes), tuple(low_names))
    return Grammar(3, (level0, level1), (level0_p, level1_p), np.asarray([g.ravel() for g in low_glyphs]),
                   np.full(10, 0.1), noise=float(noise), distractor=_probability("distractor", distractor),
                   background=low["blank"], distractor_symbols=(low["+"], low["x"]), names=names)


def digits(n_samples: int, *, seed: int = 0, noise: float = 0.2, distractor: float = 0.02,
           dtype: str = "float64", **grammar_settings) -> HierarchicalSample:
    """Draw ``n_samples`` hierarchical digits (:func:`digits_grammar`) with every latent level."""
    grammar = digits_grammar(noise=noise, distractor=distractor, **grammar_settings)
    return generate(grammar, n_samples, seed=seed, dtype=dtype)
