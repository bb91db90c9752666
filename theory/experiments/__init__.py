"""Experiments that set theory beside simulation; importing this module registers them.

They live beside the theory because they use it (closed forms, ODEs, convex
solvers), and :mod:`sim` never imports :mod:`theory`.
"""

import importlib

THEORY_EXPERIMENT_MODULES = [
    "theory.experiments.linear",
    "theory.experiments.dfa",
    "theory.experiments.hierarchical",
    "theory.experiments.sample_complexity",
    "theory.experiments.synthetic",
    "theory.experiments.convex",
]

for _module in THEORY_EXPERIMENT_MODULES:
    importlib.import_module(_module)
