"""Experiments that set theory beside simulation; importing this module registers them.

They live beside the theory because they use it (closed forms, ODEs, convex
solvers), and :mod:`sim` never imports :mod:`theory`.
"""

import importlib

THEORY_EXPERIMENT_MODULES = [
    "theory.experiments_linear",
    "theory.experiments_dfa",
    "theory.experiments_hierarchical",
    "theory.experiments_sample_complexity",
    "theory.experiments_synthetic",
    "theory.experiments_convex",
]

for _module in THEORY_EXPERIMENT_MODULES:
    importlib.import_module(_module)
