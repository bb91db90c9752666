r"""Hierarchically generated images (Malach & Shalev-Shwartz 2018) and the digits preset.

One import point for the hierarchical study; the code lives in one module per idea:

* :mod:`sim.data.grammar`: the generative model (:class:`Grammar`, its
  validation) and generation (:func:`generate`, :class:`HierarchicalSample`,
  :func:`expand_level`, :func:`render`); the model is described there;
* :mod:`sim.data.grammar_analysis`: what a grammar implies (expected symbol
  counts, label statistics and their separation, distinct patch tables) and the
  exact inversion of noise-free images (:func:`invert`);
* :mod:`sim.data.random_grammars`: random grammars for the theory
  (:func:`random_grammar`);
* :mod:`sim.data.seven_segment`: the digits preset (:func:`digits_grammar`,
  :func:`digits`);
* :mod:`sim.data.hierarchical_figures`: the figures (:func:`plot_class_samples`,
  :func:`plot_generation_levels`, :func:`render_level`).

Every name importable from this module before the split still is.
"""

from __future__ import annotations

from .grammar import (  # noqa: F401  (private helpers re-exported for modules that used them from here)
    CHUNK,
    Grammar,
    HierarchicalSample,
    _positive_int,
    _probability,
    expand_level,
    generate,
    render,
    validate_grammar,
)
from .grammar_analysis import (
    distinct_patch_tables,
    invert,
    label_statistics,
    patches_of,
    statistics_separation,
    symbol_counts,
)
from .hierarchical_figures import plot_class_samples, plot_generation_levels, render_level
from .random_grammars import random_grammar
from .seven_segment import DIGIT_VARIANTS, digits, digits_grammar

__all__ = ["CHUNK", "DIGIT_VARIANTS", "Grammar", "HierarchicalSample", "digits", "digits_grammar",
           "distinct_patch_tables", "expand_level", "generate", "invert", "label_statistics", "patches_of",
           "plot_class_samples", "plot_generation_levels", "random_grammar", "render", "render_level",
           "statistics_separation", "symbol_counts", "validate_grammar"]
