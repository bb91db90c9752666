r"""The hierarchical generative model (Malach & Shalev-Shwartz 2018): grammars and generation.

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
then :func:`sim.data.grammar_analysis.invert` recovers every level and the label from a noise-free image.
The layerwise algorithm further needs distinct *label statistics*
(:func:`sim.data.grammar_analysis.label_statistics`): :math:`P(y \mid c)` for a symbol :math:`c` at a random
position must differ between the symbols of a level.

Every draw comes from numpy generators seeded from one integer
(:func:`sim.backend.shared_rng`): :func:`sim.data.random_grammars.random_grammar` uses the ``"extra"``
stream, :func:`generate` the ``"data"`` stream. Generation is vectorised over
images (a few table look-ups and reshapes per level), in fixed-size chunks.
"""

from __future__ import annotations

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
