"""Experiment ``real-rules``: the rules of ``mnist1d-rules`` on MNIST, Fashion-MNIST or CIFAR-10 files.

The data come from ``bbp data fetch NAME`` (:mod:`sim.data.real`); without
them the run stops before any work with the message saying how to fetch them
(``bbp`` exits with status 2). ``dataset=mnist1d`` runs the same comparison
on the generated MNIST-1D (no files needed).

The network is the one of Nøkland (2016), Table 1, MNIST "1x800 tanh" (one
hidden layer of 800 tanh units), whose BP / FA / DFA test errors it targets;
here it is trained by plain SGD for a few epochs, without the paper's
schedule, so expect its ordering of the rules rather than its exact errors.
"""

from __future__ import annotations

from ..divergence import divergence_message
from ..data.real import load
from ..data.mnist1d import standardize
from ..settings import boolean, choice, integer, list_of, real
from . import Context, ExperimentResult, experiment
from .mnist1d_rules import RULE_NAMES, report_rules, train_rule

DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist1d")
RULES = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "kp", "drtp")
LRS = (0.1, 0.05, 0.05, 0.005, 0.1, 0.1, 0.1, 0.01)
POSITIVE_INT, POSITIVE = integer(1), real(0, lo_open=True)


def _check(settings: dict) -> None:
    from ..settings import setting_error

    if len(settings["lrs"]) != len(settings["rules"]):
        raise setting_error("lrs", settings["lrs"], f"needs one step size per rule ({len(settings['rules'])} rules), "
                                                    f"got {len(settings['lrs'])}", "a list as long as rules")


@experiment(
    "real-rules",
    title="The rules on real data: MNIST, Fashion-MNIST or CIFAR-10 (fetched files)",
    description="BP, FA, DFA, the sign-symmetry rules, Kolen-Pollack and DRTP train Nøkland (2016)'s 1x800 tanh "
                "MLP on a fetched dataset (bbp data fetch NAME; dataset=mnist1d needs none), inputs standardised "
                "with the training split's statistics: test accuracy over time and at the end (mean ± std over "
                "seeds), and the alignment of the hidden signals with BP's.",
    defaults={"dataset": "mnist", "n_train": 60000, "n_test": 10000, "standardize": True, "hidden": [800],
              "activation": "tanh", "steps": 12000, "batch_size": 100, "record_every": 500, "rules": list(RULES),
              "lrs": list(LRS), "sg_lr": 0.01, "kp_weight_decay": 1e-3},
    schema={"dataset": choice(*DATASETS), "n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "standardize": boolean(),
            "hidden": list_of(POSITIVE_INT, max_len=8), "activation": choice("tanh", "relu", "linear"),
            "steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "record_every": POSITIVE_INT,
            "rules": list_of(choice(*RULE_NAMES), max_len=len(RULE_NAMES), distinct=True),
            "lrs": list_of(POSITIVE, max_len=len(RULE_NAMES)), "sg_lr": POSITIVE, "kp_weight_decay": real(0)},
    quick={"n_train": 2000, "n_test": 1000, "steps": 300, "record_every": 100},
    default_seeds=4,
    checks=(_check,),
)
def real_rules(settings: dict, ctx: Context) -> ExperimentResult:
    data, test = load(settings["dataset"], n_train=settings["n_train"], n_test=settings["n_test"])
    if settings["standardize"]:
        data, test = standardize(data, test)
    results, diverged = {}, []
    for name, lr in zip(settings["rules"], settings["lrs"]):
        results[name] = train_rule(name, lr, data, test, settings, ctx)
        diverged += [divergence_message(name, d) for d in results[name].diverged]
    result = report_rules(ctx, settings, data, test, results, None, diverged, baselines={},
                          title=f"{settings['dataset']} ({data.n_samples} / {test.n_samples})", figure_prefix="real")
    result.metrics["dataset"] = settings["dataset"]
    return result
