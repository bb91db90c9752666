r"""Hierarchically generated images (Malach & Shalev-Shwartz 2018) and the digits preset.

The generative model
--------------------
A grammar of depth :math:`d` and patch size :math:`s` has alphabets
:math:`C_0, C_1, \dots, C_d` with :math:`C_0` the labels. An image is drawn level
by level:

1. level 0: a label :math:`y \sim \pi` (``class_probs``);
2. level :math:`i \to i+1` (:math:`0 \le i < d`): every symbol :math:`c \in C_i` of the
   :math:`s^i \times s^i` grid of level :math:`i` is replaced by an :math:`s \times s`
   patch of symbols of :math:`C_{i+1}`: the patch ``expansions[i][c, v]`` of a
   variant :math:`v \sim p_i(\cdot \mid c)` (``variant_probs[i][c]``), drawn
   independently at every position, giving the :math:`s^{i+1} \times s^{i+1}` grid
   of level :math:`i+1`;
3. distractors: every position of level :math:`d` that holds the ``background``
   symbol is replaced, with probability ``distractor``, by a symbol drawn
   uniformly from ``distractor_symbols`` (symbols the grammar never produces);
4. pixels: every symbol :math:`c \in C_d` is drawn as its :math:`s \times s` pixel
   patch ``pixels[c]``, and Gaussian noise :math:`\mathcal N(0, \sigma^2)` is added
   to every pixel (``noise`` is :math:`\sigma`).

Images are :math:`s^{d+1} \times s^{d+1}`; every latent level is returned with
them (:class:`HierarchicalSample`), so that the recovery of each level by a
learning algorithm can be measured.

The model is *well defined* (exactly invertible) when its patch tables are
distinct: no :math:`s \times s` patch of :math:`C_{i+1}` symbols is a variant of
two symbols of :math:`C_i`, and the pixel patches of :math:`C_d` are distinct;
then :func:`invert` recovers every level and the label from a noise-free image.
The layerwise algorithm further needs distinct *label statistics*
(:func:`label_statistics`): :math:`P(y \mid c)` for a symbol :math:`c` at a random
position must differ between the symbols of a level.

Every draw comes from numpy generators seeded from one integer
(:func:`sim.backend.shared_rng`): :func:`random_grammar` uses the ``"extra"``
stream, :func:`generate` the ``"data"`` stream. Generation is vectorised over
images (a few table look-ups and reshapes per level), in fixed-size chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..backend import check_memory, shared_rng
from .tasks import Dataset

#: Images generated per vectorised chunk (fixed, so that a seed gives the same images).
CHUNK = 16384


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not np.isfinite(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Grammar:
    r"""A hierarchical generative model (see the module docstring).

    Attributes
    ----------
    patch_size : int
        :math:`s`, the side of every patch.
    expansions : tuple of int arrays
        ``expansions[i]`` has shape ``(|C_i|, V_i, s*s)``: the patch (row-major) of
        :math:`C_{i+1}` symbols of each variant of each symbol of :math:`C_i`.
    variant_probs : tuple of float arrays
        ``variant_probs[i]`` has shape ``(|C_i|, V_i)``, rows summing to one; a
        zero entry pads a symbol with fewer variants.
    pixels : float array
        ``(|C_d|, s*s)``: the pixel patch (row-major) of every bottom symbol.
    class_probs : float array
        ``(|C_0|,)``: the label distribution :math:`\pi`.
    noise : float
        Standard deviation :math:`\sigma` of the Gaussian pixel noise.
    distractor : float
        Probability that a ``background`` symbol of level :math:`d` becomes a distractor.
    background : int or None
        The bottom symbol distractors replace (required when ``distractor > 0``).
    distractor_symbols : tuple of int
        The bottom symbols drawn as distractors.
    names : tuple of tuple of str, optional
        Names of the symbols of each level (for figures).
    """

    patch_size: int
    expansions: tuple
    variant_probs: tuple
    pixels: np.ndarray
    class_probs: np.ndarray
    noise: float = 0.0
    distractor: float = 0.0
    background: int | None = None
    distractor_symbols: tuple = ()
    names: tuple | None = field(default=None, compare=False)

    def __post_init__(self):
        validate_grammar(self)

    @property
    def depth(self) -> int:
        """:math:`d`, the number of symbol-expansion steps below the label."""
        return len(self.expansions)

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        """:math:`(|C_0|, |C_1|, \\dots, |C_d|)`."""
        return tuple(int(e.shape[0]) for e in self.expansions) + (int(self.pixels.shape[0]),)

    @property
    def n_classes(self) -> int:
        return self.alphabet_sizes[0]

    @property
    def image_size(self) -> int:
        """The side :math:`s^{d+1}` of an image."""
        return self.patch_size ** (self.depth + 1)

    def grid_size(self, level: int) -> int:
        """The side :math:`s^i` of the symbol grid of level ``i`` (level 0 is one label)."""
        return self.patch_size ** level


def validate_grammar(g: Grammar) -> None:
    """Raise ``ValueError`` saying what is wrong with a :class:`Grammar`, if anything."""
    s = _positive_int("patch_size", g.patch_size)
    if len(g.expansions) < 1 or len(g.expansions) != len(g.variant_probs):
        raise ValueError(f"a grammar needs one variant_probs per expansion and depth >= 1, got "
                         f"{len(g.expansions)} expansions and {len(g.variant_probs)} variant_probs")
    pixels = np.asarray(g.pixels)
    if pixels.ndim != 2 or pixels.shape[1] != s * s or not np.all(np.isfinite(pixels)):
        raise ValueError(f"pixels must be a finite (n_symbols, {s * s}) array, got shape {pixels.shape}")
    sizes = [int(np.asarray(e).shape[0]) for e in g.expansions] + [pixels.shape[0]]
    for i, (e, p) in enumerate(zip(g.expansions, g.variant_probs)):
        e, p = np.asarray(e), np.asarray(p)
        if e.ndim != 3 or e.shape[2] != s * s or not np.issubdtype(e.dtype, np.integer):
            raise ValueError(f"expansions[{i}] must be an integer (n_symbols, n_variants, {s * s}) array, "
                             f"got {e.dtype} {e.shape}")
        if e.size and (e.min() < 0 or e.max() >= sizes[i + 1]):
            raise ValueError(f"expansions[{i}] must hold symbols of level {i + 1} in [0, {sizes[i + 1]}), "
                             f"got values in [{e.min()}, {e.max()}]")
        if p.shape != e.shape[:2] or np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0):
            raise ValueError(f"variant_probs[{i}] must be non-negative with shape {e.shape[:2]} and rows "
                             f"summing to 1, got shape {p.shape}")
    pi = np.asarray(g.class_probs)
    if pi.shape != (sizes[0],) or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0):
        raise ValueError(f"class_probs must be {sizes[0]} non-negative numbers summing to 1, got {pi}")
    if not np.isfinite(g.noise) or g.noise < 0:
        raise ValueError(f"noise must be a finite non-negative standard deviation, got {g.noise!r}")
    _probability("distractor", g.distractor)
    if g.distractor > 0:
        if g.background is None or not g.distractor_symbols:
            raise ValueError("distractor > 0 needs a background symbol and at least one distractor symbol")
    for c in ([] if g.background is None else [g.background]) + list(g.distractor_symbols):
        if not 0 <= int(c) < sizes[-1]:
            raise ValueError(f"background and distractor symbols must be bottom symbols in [0, {sizes[-1]}), "
                             f"got {c}")


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HierarchicalSample:
    """Images with every latent level.

    Attributes
    ----------
    images : float array
        ``(N, s^{d+1}, s^{d+1})``.
    latents : tuple of int arrays
        ``latents[0]`` is the label ``(N,)``; ``latents[i]`` is the ``(N, s^i, s^i)``
        grid of level-``i`` symbols, ``i = 1 .. d`` (level ``d`` includes distractors).
    grammar : Grammar
        The model the images were drawn from.
    """

    images: np.ndarray
    latents: tuple
    grammar: Grammar

    @property
    def labels(self) -> np.ndarray:
        return self.latents[0]

    @property
    def n_samples(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index) -> HierarchicalSample:
        """The samples ``index`` (a slice or integer array) of every array."""
        return replace(self, images=self.images[index], latents=tuple(lat[index] for lat in self.latents))

    def to_dataset(self) -> Dataset:
        """A classification :class:`~sim.data.Dataset`: flattened images and one-hot labels."""
        y = np.eye(self.grammar.n_classes)[self.labels]
        return Dataset(self.images.reshape(self.n_samples, -1), y, "classification",
                       {"latents": self.latents, "grammar": self.grammar})


def _variant_cdf(probs: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.asarray(probs, dtype=float), axis=1)
    return cdf / cdf[:, -1:]  # exact 1.0 on (and after) the last positive variant


def _draw_variants(rng: np.random.Generator, cdf: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one variant per symbol: ``v = #{j < V-1 : u >= F_j(c)}``."""
    u = rng.random(symbols.shape)
    thresholds = cdf[symbols][..., :-1]
    return np.sum(u[..., None] >= thresholds, axis=-1)


def _tile(patches: np.ndarray, s: int) -> np.ndarray:
    """``(N, m, m, s*s)`` patches -> the ``(N, m*s, m*s)`` grid they tile."""
    n, m = patches.shape[:2]
    return patches.reshape(n, m, m, s, s).transpose(0, 1, 3, 2, 4).reshape(n, m * s, m * s)


def _upsample_index(m: int, s: int):
    """Index maps of an ``(m*s, m*s)`` grid: the cell ``(Y//s, X//s)`` and the offset ``(Y%s)*s + X%s``."""
    coord = np.arange(m * s)
    return (coord // s)[:, None], (coord // s)[None, :], (coord % s)[:, None] * s + (coord % s)[None, :]


def expand_level(grammar: Grammar, level: int, symbols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace every symbol of a level-``level`` grid ``(N, m, m)`` by a random variant's patch.

    One gather: ``out[n, Y, X] = expansions[level][c, v, (Y%s)*s + X%s]`` with
    ``c = symbols[n, Y//s, X//s]`` and ``v`` its drawn variant.
    """
    s = grammar.patch_size
    variants = _draw_variants(rng, _variant_cdf(grammar.variant_probs[level]), symbols)
    rows, cols, offset = _upsample_index(symbols.shape[1], s)
    table = np.asarray(grammar.expansions[level]).astype(_symbol_dtype(grammar.alphabet_sizes[level + 1]))
    return table[symbols[:, rows, cols], variants[:, rows, cols], offset]


def render(grammar: Grammar, bottom: np.ndarray, dtype: str = "float64") -> np.ndarray:
    """Draw a grid of bottom symbols ``(N, m, m)`` as noise-free pixels ``(N, m*s, m*s)``."""
    rows, cols, offset = _upsample_index(bottom.shape[1], grammar.patch_size)
    return np.asarray(grammar.pixels, dtype=dtype)[bottom[:, rows, cols], offset]


def _symbol_dtype(n: int):
    return np.int16 if n < 2 ** 15 else np.int32


def generate(grammar: Grammar, n_samples: int, *, seed: int = 0, dtype: str = "float64",
             labels=None) -> HierarchicalSample:
    r"""Draw ``n_samples`` images and all their latent levels from ``grammar``.

    Parameters
    ----------
    grammar : Grammar
        The generative model.
    n_samples : int
        Number of images :math:`N`.
    seed : int
        Seed of the run's ``"data"`` stream.
    dtype : {"float64", "float32"}
        Pixel dtype (float32 halves memory and time for large :math:`N`).
    labels : int array, optional
        Use these labels ``(N,)`` instead of drawing them from ``class_probs``.

    Returns
    -------
    HierarchicalSample
        Images ``(N, s^{d+1}, s^{d+1})`` and latents (see :class:`HierarchicalSample`).

    Notes
    -----
    Vectorised: each level is one variant draw (inverse CDF on a gathered table)
    and one table look-up plus reshape for all images of a chunk of
    :data:`CHUNK` images; 100 000 images of the 27 x 27 digits take about a second.
    """
    n_samples = _positive_int("n_samples", n_samples)
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n_samples,) or not np.issubdtype(labels.dtype, np.integer) or \
                labels.min() < 0 or labels.max() >= grammar.n_classes:
            raise ValueError(f"labels must be {n_samples} integers in [0, {grammar.n_classes}), got {labels!r}")
    check_memory(8 * 3 * n_samples * grammar.image_size ** 2, f"{n_samples} hierarchical images")
    rng = shared_rng(seed, "data")
    s, d = grammar.patch_size, grammar.depth
    side = grammar.image_size
    images = np.empty((n_samples, side, side), dtype=dtype)
    latents = [np.empty((n_samples,), dtype=np.int64)]
    latents += [np.empty((n_samples, s ** i, s ** i), dtype=_symbol_dtype(grammar.alphabet_sizes[i]))
                for i in range(1, d + 1)]
    pi_cdf = _variant_cdf(np.asarray(grammar.class_probs)[None, :])
    distractors = np.asarray(grammar.distractor_symbols, dtype=np.int64)
    for start in range(0, n_samples, CHUNK):
        stop = min(start + CHUNK, n_samples)
        n = stop - start
        if labels is None:
            y = _draw_variants(rng, pi_cdf, np.zeros(n, dtype=np.int64))
        else:
            y = labels[start:stop]
        latents[0][start:stop] = y
        grid = y.reshape(n, 1, 1)
        for i in range(d):
            grid = expand_level(grammar, i, grid, rng)
            if i == d - 1 and grammar.distractor > 0:
                hit = (grid == grammar.background) & (rng.random(grid.shape) < grammar.distractor)
                grid[hit] = distractors[rng.integers(0, distractors.size, size=int(hit.sum()))]
            latents[i + 1][start:stop] = grid
        out = images[start:stop]
        if grammar.noise > 0:
            rng.standard_normal(dtype=dtype, out=out)
            out *= grammar.noise
            out += render(grammar, grid, dtype)
        else:
            out[...] = render(grammar, grid, dtype)
    return HierarchicalSample(images, tuple(latents), grammar)


# --------------------------------------------------------------------------------------------
# statistics and exact inversion
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# random grammars (for the theory)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# the digits preset
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def render_level(grammar: Grammar, grid: np.ndarray, level: int) -> np.ndarray:
    """Draw a level-``level`` symbol grid ``(N, m, m)`` as pixels, each symbol by its most likely variants, no noise."""
    grid = np.asarray(grid)
    for i in range(level, grammar.depth):
        best = np.argmax(np.asarray(grammar.variant_probs[i]), axis=1)
        patches = np.asarray(grammar.expansions[i])[grid, best[grid]]
        grid = _tile(patches, grammar.patch_size)
    return render(grammar, grid)


def plot_class_samples(sample: HierarchicalSample, n_per_class: int = 5, *, figure=None):
    """A grid of ``n_per_class`` images (rows) of every class (columns), like the reference's right panel."""
    from matplotlib.figure import Figure

    n_per_class = _positive_int("n_per_class", n_per_class)
    k = sample.grammar.n_classes
    fig = Figure(figsize=(1.0 * k, 1.05 * n_per_class + 0.3), layout="constrained") if figure is None else figure
    axes = fig.subplots(n_per_class, k, squeeze=False)
    for y in range(k):
        idx = np.flatnonzero(sample.labels == y)[:n_per_class]
        for r in range(n_per_class):
            ax = axes[r, y]
            if r < len(idx):
                ax.imshow(sample.images[idx[r]], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"y={y}", fontsize=10)
    fig.suptitle(f"hierarchical digits: {n_per_class} samples of each class y", fontsize="small")
    return fig


def plot_generation_levels(sample: HierarchicalSample, index: int = 0, *, cell=None, figure=None):
    """One image generated level by level, like the reference's left panel.

    Panels side by side: level 1 (each symbol drawn by its usual expansion, with
    the grid of level-1 cells), ..., level ``d`` (the drawn bottom symbols, noise
    free, with their grid), and the noisy pixels. An orange box marks one level-1
    cell (``cell = (row, col)``; default: the last one, from the bottom right, that
    holds ink) on every panel, and a red box the bottom-level cell at its centre;
    outside the orange box the symbol panels are dimmed. A legend under the panels
    names the boxes and the suptitle says what the panels show.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    g = sample.grammar
    d, s, side = g.depth, g.patch_size, g.image_size
    if not 0 <= index < sample.n_samples:
        raise ValueError(f"index must be in [0, {sample.n_samples}), got {index}")
    panels = [render_level(g, sample.latents[i][index:index + 1], i)[0] for i in range(1, d + 1)]
    panels.append(sample.images[index])
    cells = [side // s ** i for i in range(1, d + 1)] + [1]  # side of a cell of each panel, in pixels
    big = cells[0]
    if cell is None:
        order = [(r, c) for r in range(s - 1, -1, -1) for c in range(s - 1, -1, -1)]
        inked = [(r, c) for r, c in order if np.any(panels[0][r * big:(r + 1) * big, c * big:(c + 1) * big] != 0)]
        cell = inked[0] if inked else order[0]
    r1, c1 = (int(v) for v in cell)
    if not (0 <= r1 < s and 0 <= c1 < s):
        raise ValueError(f"cell must be a (row, col) of the {s} x {s} level-1 grid, got {cell!r}")
    outer = (r1 * big, c1 * big, big)  # row, col, side in pixels
    inner = (r1 * big + (big - s) // 2, c1 * big + (big - s) // 2, s)
    n = len(panels)
    fig = Figure(figsize=(2.3 * n, 3.1), layout="constrained") if figure is None else figure
    axes = fig.subplots(1, n, squeeze=False)[0]
    lo, hi = 0.0, 1.0
    box_labels = {"orange": "orange: one level-1 cell", "red": "red: the bottom-level cell at its centre"}
    for k, (ax, img, cs) in enumerate(zip(axes, panels, cells)):
        shown = np.asarray(img, dtype=float).copy()
        if k < n - 1:  # the symbol panels are dimmed outside the orange cell
            mask = np.ones_like(shown, dtype=bool)
            mask[outer[0]:outer[0] + big, outer[1]:outer[1] + big] = False
            shown[mask] *= 0.5
        ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for t in range(0, side + 1, cs):
            ax.axhline(t - 0.5, color="0.7", lw=0.5 if cs == 1 else 0.8)
            ax.axvline(t - 0.5, color="0.7", lw=0.5 if cs == 1 else 0.8)
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(side - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"level {k + 1}" if k < n - 1 else "pixels (with noise)", fontsize=9)
        boxes = [(outer, "orange", 2.5)] + ([(inner, "red", 2.0)] if k >= 1 else [])
        for (r, c, size), colour, lw in boxes:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), size, size, fill=False, ec=colour, lw=lw,
                                   label=box_labels[colour]))
    handles = [Rectangle((0, 0), 1, 1, fill=False, ec=c, lw=2, label=label) for c, label in box_labels.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"one digit (class y = {int(sample.labels[index])}) generated level by level; each panel draws "
                 "its level's symbols by their usual expansion,\ndimmed outside the orange cell; grey lines: the "
                 "grid of the level's cells", fontsize="small")
    return fig
