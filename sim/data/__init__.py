"""Seeded data generators. Every task returns a :class:`Dataset` of host arrays."""

from .tasks import TASKS, Dataset, lillicrap_linear, linear_teacher, make_task, teacher_classification

__all__ = ["TASKS", "Dataset", "lillicrap_linear", "linear_teacher", "make_task", "teacher_classification"]
from .hierarchical import (  # noqa: E402  (hierarchical digits, issue 5)
    Grammar,
    HierarchicalSample,
    digits,
    digits_grammar,
    generate,
    invert,
    random_grammar,
)

__all__ += ["Grammar", "HierarchicalSample", "digits", "digits_grammar", "generate", "invert", "random_grammar"]
from .mnist1d import mnist1d, standardize  # noqa: E402  (MNIST-1D, issue 16; the package is imported on call)

__all__ += ["mnist1d", "standardize"]
from .real import DATASETS, DataMissing, fetch, load  # noqa: E402  (MNIST, Fashion-MNIST, CIFAR-10 files)

__all__ += ["DATASETS", "DataMissing", "fetch", "load"]
