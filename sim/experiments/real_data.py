"""Experiment ``real-rules``: the rules of ``mnist1d-rules`` on MNIST, Fashion-MNIST or CIFAR-10 files.

The data come from ``bbp data fetch NAME`` (:mod:`sim.data.real`); without
them the run stops before any work with the message saying how to fetch them
(``bbp`` exits with status 2). ``dataset=mnist1d`` runs the same comparison
on the generated MNIST-1D (no files needed).

The network is the one of Nøkland (2016), Table 1, MNIST "1x800 tanh" (one
hidden layer of 800 tanh units), whose BP / FA / DFA test errors it targets;
here it is trained by plain SGD for a few epochs, without the paper's
schedule, so expect its ordering of the rules rather than its exact errors.
``arch=lenet`` trains biotorch's LeNet instead (:func:`sim.conv_arch.lenet`,
Sanfiz & Akrout 2021; ReLU, stride-2 convolutions in place of its max pooling)
with the rules of :data:`sim.conv.CONV_RULES` and :data:`sim.conv.LOCAL_RULES`, by ``cnn_optimizer``.
"""

from __future__ import annotations

from ..conv import CONV_RULES, LOCAL_RULES
from ..conv_arch import lenet, to_images
from ..divergence import divergence_message
from ..data.real import load
from ..data.mnist1d import standardize
from ..settings import boolean, choice, integer, list_of, real
from . import Context, ExperimentResult, experiment, report_all_diverged
from .mnist1d_rules import RULE_NAMES, report_cnn, report_rules, train_cnn, train_rule

DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist1d")
RULES = ("bp", "fa", "dfa", "usf", "frsf", "brsf", "kp", "drtp")
LRS = (0.1, 0.05, 0.05, 0.005, 0.1, 0.1, 0.1, 0.01)
POSITIVE_INT, POSITIVE = integer(1), real(0, lo_open=True)


def _check(settings: dict) -> None:
    from ..settings import setting_error

    if len(settings["lrs"]) != len(settings["rules"]):
        raise setting_error("lrs", settings["lrs"], f"needs one step size per rule ({len(settings['rules'])} rules), "
                                                    f"got {len(settings['lrs'])}", "a list as long as rules")
    if settings["arch"] == "lenet":
        if settings["dataset"] == "mnist1d":
            raise setting_error("arch", "lenet", "LeNet takes images (mnist, fashion-mnist, cifar10), not mnist1d",
                                "mlp for mnist1d")
        others = [r for r in settings["rules"] if r not in CONV_RULES + LOCAL_RULES]
        if others:  # every rule has a convolutional form today; this guards a rule added to the MLP side only
            raise setting_error("rules", settings["rules"], f"arch=lenet trains the rules of sim.conv only, not "
                                                            f"{', '.join(others)}", ", ".join(CONV_RULES + LOCAL_RULES))


@experiment(
    "real-rules",
    title="The rules on real data: MNIST, Fashion-MNIST or CIFAR-10 (fetched files)",
    description="BP, FA, DFA, the sign-symmetry rules, Kolen-Pollack and DRTP train Nøkland (2016)'s 1x800 tanh "
                "MLP on a fetched dataset (bbp data fetch NAME; dataset=mnist1d needs none), inputs standardised "
                "with the training split's statistics: test accuracy over time and at the end (mean ± std over "
                "seeds), and the alignment of the hidden signals with BP's. arch=lenet trains biotorch's LeNet "
                "(ReLU; stride-2 convolutions in place of max pooling; biases, PyTorch's uniform init) with the "
                "rules of sim.conv instead, by cnn_optimizer (sgd or adam) with the steps lrs, and reports the "
                "angle of each layer's update to BP's (hidden and activation unused).",
    defaults={"dataset": "mnist", "n_train": 60000, "n_test": 10000, "standardize": True, "hidden": [800],
              "activation": "tanh", "steps": 12000, "batch_size": 100, "record_every": 500, "rules": list(RULES),
              "lrs": list(LRS), "sg_lr": 0.01, "kp_weight_decay": 1e-3, "arch": "mlp", "cnn_optimizer": "sgd"},
    schema={"dataset": choice(*DATASETS), "n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "standardize": boolean(),
            "hidden": list_of(POSITIVE_INT, max_len=8), "activation": choice("tanh", "relu", "linear"),
            "steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "record_every": POSITIVE_INT,
            "rules": list_of(choice(*RULE_NAMES), max_len=len(RULE_NAMES), distinct=True),
            "lrs": list_of(POSITIVE, max_len=len(RULE_NAMES)), "sg_lr": POSITIVE, "kp_weight_decay": real(0),
            "arch": choice("mlp", "lenet"), "cnn_optimizer": choice("sgd", "adam")},
    quick={"n_train": 2000, "n_test": 1000, "steps": 300, "record_every": 100},
    default_seeds=4,
    checks=(_check,),
)
def real_rules(settings: dict, ctx: Context) -> ExperimentResult:
    data, test = load(settings["dataset"], n_train=settings["n_train"], n_test=settings["n_test"])
    if settings["standardize"]:
        data, test = standardize(data, test)
    if settings["arch"] == "lenet":
        return _real_lenet(data, test, settings, ctx)
    results, diverged = {}, []
    for name, lr in zip(settings["rules"], settings["lrs"]):
        results[name] = train_rule(name, lr, data, test, settings, ctx)
        diverged += [divergence_message(name, d) for d in results[name].diverged]
    result = report_rules(ctx, settings, data, test, results, None, diverged, baselines={},
                          title=f"{settings['dataset']} ({data.n_samples} / {test.n_samples})", figure_prefix="real")
    result.metrics["dataset"] = settings["dataset"]
    return result


def _real_lenet(data, test, settings: dict, ctx: Context) -> ExperimentResult:
    """biotorch's LeNet (:func:`sim.conv_arch.lenet`) with each rule, on the images of ``data``; tested on ``test``."""
    shape = data.info["image_shape"]
    x, x_test = to_images(data.x, shape), to_images(test.x, shape)
    records = {}
    for name, lr in zip(settings["rules"], settings["lrs"]):
        net = lenet(shape, data.n_outputs, ctx.n_seeds, seed=ctx.seed, xp=ctx.xp, dtype=ctx.dtype)
        records[name] = train_cnn(name, lr, net, x, data.y, x_test, test.y, settings, ctx, steps=settings["steps"])
    title = f"{settings['dataset']} ({data.n_samples} / {test.n_samples})"
    result = ExperimentResult({}, {}, {}, f"{title}, LeNet", [])
    report_cnn(result, records, dict(zip(settings["rules"], settings["lrs"])), settings, ctx, title=title,
               figure_prefix="real", layer_names=["conv 1", "conv 2", "conv 3", "dense 1", "read-out"])
    result.metrics["dataset"], result.metrics["arch"] = settings["dataset"], "lenet"
    every = bool(records) and all(len({d.member for d in r["diverged"]}) == ctx.n_seeds for r in records.values())
    return report_all_diverged(result, every)
