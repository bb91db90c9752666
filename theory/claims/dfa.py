r"""Claims about direct feedback alignment (DFA), and the symbolic derivations of :mod:`theory.symbolic`.

Registered on import (see :mod:`theory.claims`). Every simulation runs on the
engine (:func:`sim.rules.compute_updates` / :func:`sim.train.train`). Where a
statement is about tasks, the instances are drawn on independent tasks (a few
ensemble members share each task, one batched computation per task) and the
check reports ``tasks`` and ``members`` separately (:class:`theory.claims.CheckResult`).

The maths behind the linear-network claims (``W_l`` is ``(n_l, n_{l-1})``, the
DFA feedback ``B_l`` is ``(n_l, n_L)``, ``E = mean_b e_b x_b^T``): DFA updates
:math:`\Delta W_1 = B_1 E`, :math:`\Delta W_l = B_l E H_{l-1}^T` and
:math:`\Delta W_L = E H_{L-1}^T` with :math:`H_l = W_l \cdots W_1`. If
:math:`W_1 = B_1 M`, :math:`W_l = B_l C_l B_{l-1}^T`, :math:`W_L = C_L B_{L-1}^T`,
then :math:`H_{l-1}^T = (\cdot) B_{l-1}^T` and every update has the same form,
so the set of such weights is invariant under DFA with any data, batch and step
(zero weights are in it). With a scalar output (``n_L = 1``) the ``C_l`` are
numbers and the BP signal of hidden layer ``l`` is
:math:`(W_L \cdots W_{l+1})^T e = \kappa_l B_l e` with
:math:`\kappa_l = \prod_{k>l} C_k \prod_{l<k<L} \lVert B_k\rVert^2`: exactly
parallel to DFA's :math:`B_l e`, with angle 0 when :math:`\kappa_l > 0` and 180
when :math:`\kappa_l < 0`. From zero init, under the flow, ``M`` is a row
vector with :math:`C_2 = \lVert M\rVert^2/2` and every :math:`C_l` a
non-decreasing function of :math:`C_2` that is 0 at 0 (the conservation law of
:mod:`theory.symbolic`), so :math:`\kappa_l > 0` and the angle is 0 as soon as
the BP signal is nonzero.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import replace
from unittest.mock import patch

import numpy as np

from sim import rules as sim_rules
from sim.backend import to_host
from sim.data import linear_teacher, teacher_classification
from sim.lazy import lazy_module
from sim.metrics import angle
from sim.network import init_network, network_from_weights
from sim.rules import compute_updates, draw_feedback, feedback_shapes, rule_updates
from sim.train import train
from theory import symbolic
from theory.claims import CheckResult, claim
from theory.symbolic import sp  # sympy, imported at the first use (sim.lazy)

XP = lazy_module("array_api_compat.numpy")  # get_namespace("numpy"), imported at the first use (sim.lazy)
EPS = float(np.finfo(np.float64).eps)

LINESTYLES = ("-", "--", "-.", ":")  # with ten colours: twenty distinct curves in a figure


# --- shared helpers ------------------------------------------------------------------------------------

def _rng(seed: int, tag: str, instance: int = 0) -> np.random.Generator:
    """The random stream of one instance of one claim."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode()), int(instance)]))


def _seed(seed: int, tag: str) -> int:
    """A run seed for the engine's own streams, derived from the claim's seed and tag."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode())]).generate_state(1)[0])


def _host(arrays) -> list:
    return [np.array(to_host(a), dtype=float) for a in arrays]


def _dev(arrays) -> list:
    return [XP.asarray(np.asarray(a, dtype=float)) for a in arrays]


def _angle_resolution(n_entries: int) -> float:
    r"""Smallest angle (degrees) that ``arccos`` of a float64 cosine can resolve near 0 or 180.

    The cosine of two arrays of ``n`` entries carries a rounding error of at most
    about :math:`n\varepsilon` (the sums of the dot product and the norms), and
    :math:`\arccos(1-\delta) \approx \sqrt{2\delta}`.
    """
    return math.degrees(math.sqrt(2.0 * n_entries * EPS))


def _random_angle_spread(n_entries: int) -> float:
    r"""Standard deviation (degrees) of the angle between two independent random arrays of ``n`` entries.

    Their cosine is about :math:`\mathcal N(0, 1/n)`, so the angle is
    :math:`90 \pm \mathrm{degrees}(1/\sqrt n)`.
    """
    return math.degrees(1.0 / math.sqrt(n_entries))


@contextlib.contextmanager
def _patched_rule(name: str, hidden_signal):
    saved = sim_rules.RULES[name]
    sim_rules.RULES[name] = replace(saved, hidden_signal=hidden_signal)
    try:
        yield
    finally:
        sim_rules.RULES[name] = saved


def unfixed_feedback():
    """Sabotage: DFA draws a *fresh* random feedback matrix at every use (same shape and scale).

    Without a fixed feedback there is nothing for the forward weights to align
    with, so every alignment claim must fail under it.
    """
    original = sim_rules.RULES["dfa"].hidden_signal
    rng = np.random.default_rng(20211)

    def hidden_signal(i, ctx):
        host = np.array(to_host(ctx.feedback[i]), dtype=float)
        fresh = rng.normal(size=host.shape) * math.sqrt(float(np.mean(host ** 2)))
        xp = sim_rules.namespace(ctx.feedback[i])
        feedback = list(ctx.feedback)
        feedback[i] = xp.asarray(fresh, dtype=ctx.feedback[i].dtype)
        return original(i, replace(ctx, feedback=feedback))

    return _patched_rule("dfa", hidden_signal)


def dfa_without_direct_path():
    """Sabotage: DFA's hidden signal replaced by the back-propagated one (no direct feedback path)."""
    backprop = sim_rules.RULES["bp"].hidden_signal

    def hidden_signal(*args, **kwargs):
        return backprop(*args, **kwargs)

    return _patched_rule("dfa", hidden_signal)


def _descend(rule: str, weights, x, y, *, lr: float, steps: int, feedback=None, record_every: int = 1,
             batch_size: int | None = None, rng: np.random.Generator | None = None):
    """Gradient descent with the engine's ``rule``; the host weights every ``record_every`` steps.

    The inputs are validated once by :func:`sim.rules.compute_updates`; the steps
    use :func:`sim.rules.rule_updates` without re-validation (the same numbers).
    ``weights`` are host arrays ``(E, n_l, n_{l-1})``; with ``batch_size`` each
    step uses a random minibatch drawn from ``rng``. Returns ``(steps, snapshots)``;
    raises ``FloatingPointError`` if the weights become non-finite.
    """
    weights = _dev(weights)
    x_dev, y_dev = XP.asarray(x), XP.asarray(y)
    fb = None if feedback is None else _dev(feedback)
    recorded, snapshots = [0], [_host(weights)]
    n = x.shape[-2]
    compute_updates(rule, weights, x_dev, y_dev, feedback=fb)  # the public entry point validates the inputs once
    for k in range(steps):
        if batch_size is None:
            xb, yb = x_dev, y_dev
        else:
            idx = XP.asarray(rng.choice(n, size=batch_size, replace=False))
            xb, yb = XP.take(x_dev, idx, axis=-2), XP.take(y_dev, idx, axis=-2)
        updates = rule_updates(rule, weights, xb, yb, feedback=fb, validate=False).weights
        weights = [w - lr * d for w, d in zip(weights, updates)]
        if (k + 1) % record_every == 0 or k + 1 == steps:
            recorded.append(k + 1)
            snapshots.append(_host(weights))
            if not all(np.all(np.isfinite(w)) for w in snapshots[-1]):
                raise FloatingPointError(f"{rule} gradient descent diverged before step {k + 1}")
    return np.asarray(recorded), snapshots


# --- dfa.structure -------------------------------------------------------------------------------------

STRUCTURE_SIZES = (7, 12, 10, 9, 3)  # hidden widths above n_L: the structure is a real constraint
STRUCTURE_STEPS = 200
STRUCTURE_LR = 0.03
STRUCTURE_BATCH = 16


def dfa_structure_residuals(weights, feedback) -> np.ndarray:
    r"""Relative distance of each layer from the DFA structure, ``(E, L)``.

    With :math:`P_l = B_l B_l^+` the projector on the columns of ``B_l``:
    :math:`\lVert W_1 - P_1 W_1\rVert`, :math:`\lVert W_l - P_l W_l P_{l-1}\rVert`,
    :math:`\lVert W_L - W_L P_{L-1}\rVert`, each over :math:`\lVert W_l\rVert`
    (0 where ``W_l = 0``). Zero exactly when :math:`W_1 = B_1 M`,
    :math:`W_l = B_l C_l B_{l-1}^T`, :math:`W_L = C_L B_{L-1}^T`.
    """
    proj = [b @ np.linalg.pinv(b) for b in feedback]
    n_layers = len(weights)
    out = []
    for l, w in enumerate(weights):
        if l == 0:
            structured = proj[0] @ w
        elif l == n_layers - 1:
            structured = w @ proj[-1]
        else:
            structured = proj[l] @ w @ proj[l - 1]
        num = np.linalg.norm(w - structured, axis=(1, 2))
        den = np.linalg.norm(w, axis=(1, 2))
        out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0))
    return np.stack(out, axis=-1)


def _plot_structure(result: CheckResult, ax):
    d = result.details
    ax.semilogy(d["steps"], np.maximum(d["residual"], 1e-18), label="worst layer, worst instance")
    if "residual_random" in d:
        ax.semilogy(d["steps"], np.maximum(d["residual_random"], 1e-18), ls="--",
                    label="same norm, random direction")
    ax.axhline(result.tolerance, color="grey", ls=":", label="tolerance")
    ax.set(xlabel="DFA step", ylabel="relative distance from structure", title="dfa.structure")
    ax.legend(fontsize=7)


@claim(
    "dfa.structure",
    source="ours (the alignment matrices of Refinetti et al. 2021)",
    statement="Linear DFA from zero init keeps W1 = B1 M, W_l = B_l C_l B_{l-1}^T, W_L = C_L B_{L-1}^T exactly "
              "(relative residual of the projection ~ eps), for any data, minibatch and step size.",
    conditions="Linear network 7-12-10-9-3 (hidden widths > n_L, so the structure constrains W), all weights "
               "zero at start, Gaussian DFA feedback, random (unwhitened) data and targets, SGD with minibatches "
               "of 16, lr 0.03, 200 steps. Tolerance: (steps + 1) * n_max * eps, the rounding that the updates "
               "accumulate outside the structured subspace.",
    rules=("dfa",),
    instances=12,
    quick_instances=4,
    plot=_plot_structure,
)
def check_structure(seed: int, n_instances: int) -> CheckResult:
    sizes = STRUCTURE_SIZES
    rng = _rng(seed, "dfa.structure")
    feedback = draw_feedback("dfa", sizes, n_instances, seed=_seed(seed, "dfa.structure"))
    feedback = _host(feedback)
    x = rng.normal(size=(n_instances, 32, sizes[0]))
    y = rng.normal(size=(n_instances, 32, sizes[-1]))
    weights = [np.zeros((n_instances, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    steps, snaps = _descend("dfa", weights, x, y, lr=STRUCTURE_LR, steps=STRUCTURE_STEPS, feedback=feedback,
                            record_every=10, batch_size=STRUCTURE_BATCH, rng=rng)
    residual = np.stack([dfa_structure_residuals(w, feedback) for w in snaps])  # (T, E, L)
    final = snaps[-1]
    moved = all(np.all(np.linalg.norm(w, axis=(1, 2)) > 0) for w in final)
    # the same check on random matrices of the final norms: what "unstructured" looks like
    random_w = [rng.normal(size=w.shape) for w in final]
    violation = float(residual.max()) if moved else math.inf
    tolerance = (STRUCTURE_STEPS + 1) * max(sizes) * EPS
    return CheckResult(n_instances, violation, tolerance, {
        "steps": steps, "residual": residual.max(axis=(1, 2)),
        "residual_random": np.full(len(steps), dfa_structure_residuals(random_w, feedback).min()),
        "per_layer_final": residual[-1].max(axis=0)})


# --- dfa.scalar_output_parallel ----------------------------------------------------------------------

PARALLEL_SIZES = (6, 9, 7, 1)
PARALLEL_STEPS = 200
PARALLEL_LR = 0.05
PARALLEL_BATCH = 32


def _structured_weights(rng, sizes, feedback_member, scale=0.5):
    """Random weights of the DFA structure with scalar output, and the signs of their coefficients.

    ``W1 = B1 m^T``, ``W_l = c_l B_l B_{l-1}^T / n_l``, ``W_L = c_L B_{L-1}^T`` with
    Gaussian ``m`` and ``c_l``. Returns ``(weights, c)``.
    """
    b = feedback_member
    weights = [b[0] @ rng.normal(0.0, scale / math.sqrt(sizes[0]), size=(1, sizes[0]))]
    coefficients = rng.normal(0.0, scale, size=len(sizes) - 2)
    for l in range(1, len(sizes) - 2):
        weights.append(coefficients[l - 1] * b[l] @ b[l - 1].T / sizes[l])
    weights.append(coefficients[-1] * b[-1].T)
    return weights, coefficients


def _signal_angles(weights, x, y, feedback) -> np.ndarray:
    """Angles between the DFA and BP hidden signals of the engine, ``(E, L-1)`` degrees."""
    w, fb = _dev(weights), _dev(feedback)
    x_dev, y_dev = XP.asarray(x), XP.asarray(y)
    bp = rule_updates("bp", w, x_dev, y_dev).signals[:-1]
    dfa = rule_updates("dfa", w, x_dev, y_dev, feedback=fb).signals[:-1]
    return np.stack([np.array(to_host(angle(a, b))) for a, b in zip(dfa, bp)], axis=-1)


def _plot_parallel(result: CheckResult, ax):
    d = result.details
    floor = result.tolerance * 1e-3
    ax.semilogy(d["steps"], np.maximum(d["zero_init"], floor), label="from zero init: angle")
    ax.axhline(max(d["structured"], floor), color="C1", ls="--",
               label="random structured weights: |angle - predicted 0/180|")
    ax.axhline(result.tolerance, color="grey", ls=":", label="arccos resolution")
    ax.set(xlabel="DFA step", ylabel="degrees (worst hidden layer)", title="dfa.scalar_output_parallel")
    ax.legend(fontsize=7)


@claim(
    "dfa.scalar_output_parallel",
    source="ours",
    statement="Linear DFA with a scalar output: whenever the weights have the DFA structure (so at every step "
              "from zero init), the BP and DFA hidden signals are exactly parallel: angle 0 when "
              "prod_{k>l} C_k > 0 and 180 when it is < 0. From zero init the coefficients stay positive, so the "
              "angle is exactly 0 (never 180) once the BP signal is nonzero (from step L-1 on).",
    conditions="Linear 6-9-7-1 network. Zero init: full-batch GD (lr 0.05, 200 steps) on 32 random inputs and "
               "targets, angle checked every 5 steps. Structured weights: 5 random draws per instance of "
               "W1 = B1 m^T, W_l = c_l B_l B_{l-1}^T, W_L = c_L B_{L-1}^T with Gaussian m, c (either sign; "
               "training from a negative c can blow up, so these are checked where drawn, the structure being "
               "kept by DFA, see dfa.structure). Tolerance: the arccos resolution sqrt(2 n eps) of an angle "
               "between arrays of n = batch * width entries. Rests on the signals of both rules.",
    rules=("dfa", "bp"),
    instances=10,
    quick_instances=4,
    plot=_plot_parallel,
)
def check_scalar_output_parallel(seed: int, n_instances: int) -> CheckResult:
    sizes = PARALLEL_SIZES
    rng = _rng(seed, "dfa.scalar_output_parallel")
    feedback = _host(draw_feedback("dfa", sizes, n_instances, seed=_seed(seed, "dfa.parallel")))
    x = rng.normal(size=(PARALLEL_BATCH, sizes[0]))
    y = rng.normal(size=(n_instances, PARALLEL_BATCH, 1))
    # from zero init, along the trajectory
    weights = [np.zeros((n_instances, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    steps, snaps = _descend("dfa", weights, x, y, lr=PARALLEL_LR, steps=PARALLEL_STEPS, feedback=feedback,
                            record_every=5)
    zero_trace = []
    for snap in snaps:
        angles = _signal_angles(snap, x, y, feedback)
        zero_trace.append(float(np.nanmax(angles)) if np.any(np.isfinite(angles)) else 0.0)
    nonzero_at_end = bool(np.all(np.isfinite(angles)))
    zero_trace = np.asarray(zero_trace)
    # random structured weights of either sign
    structured = 0.0
    for _ in range(5):
        draws = [_structured_weights(rng, sizes, [f[m] for f in feedback]) for m in range(n_instances)]
        weights = [np.stack([d[0][l] for d in draws]) for l in range(len(sizes) - 1)]
        coefficients = np.stack([d[1] for d in draws])  # (E, L-1): c_2 .. c_L
        angles = _signal_angles(weights, x, y, feedback)
        # layer l (0-based i) has kappa of the sign of prod_{k > i} c
        signs = np.stack([np.prod(coefficients[:, i:], axis=1) for i in range(len(sizes) - 2)], axis=-1)
        predicted = np.where(signs > 0, 0.0, 180.0)
        structured = max(structured, float(np.max(np.abs(angles - predicted))))
    violation = max(float(zero_trace.max()), structured) if nonzero_at_end else math.inf
    tolerance = _angle_resolution(PARALLEL_BATCH * max(sizes[1:-1]))
    return CheckResult(n_instances, violation, tolerance,
                       {"steps": steps, "zero_init": zero_trace, "structured": structured})


# --- dfa.trains_from_zero ----------------------------------------------------------------------------

ZERO_SIZES = (10, 24, 24, 4)
ZERO_STEPS = 300
ZERO_LR = 0.1
ZERO_LOSS_RATIO = 0.5


def _plot_trains_from_zero(result: CheckResult, ax):
    d = result.details
    for name, style in (("dfa", "-"), ("bp", "--")):
        loss = d[f"{name}_loss"]
        ax.plot(d["steps"], loss.mean(axis=1), style, label=name.upper())
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss (mse)", title="dfa.trains_from_zero: hidden weights start at 0")
    ax.legend(fontsize=7)


@claim(
    "dfa.trains_from_zero",
    source="Nokland 2016",
    statement="DFA trains a tanh network whose hidden weights are all zero (loss at least halved in 300 steps, "
              "every hidden layer moves), where BP does not move at all (zero hidden weights are a critical "
              "point of the loss when there are two or more hidden layers).",
    conditions="each instance an independent task (its own teacher, init and feedback); tanh 10-24-24-4 network, "
               "W1 = W2 = 0, output weights Gaussian; regression on a linear teacher (singular values 3, 2, 1, "
               "0.5), full-batch GD lr 0.1 for 300 steps with DFA and with BP from the "
               "same init. Violation: DFA's final/initial loss, +inf if BP moved any weight or a DFA hidden "
               "layer stayed 0; tolerance 0.5.",
    rules=("dfa",),
    instances=12,
    quick_instances=4,
    sabotage=dfa_without_direct_path,
    plot=_plot_trains_from_zero,
)
def check_trains_from_zero(seed: int, n_instances: int) -> CheckResult:
    sizes = ZERO_SIZES
    dfa_loss, bp_loss, bp_moved, hidden_norms = [], [], 0.0, []
    for i in range(n_instances):  # each instance its own task (teacher), init and feedback
        data = linear_teacher(sizes[0], sizes[-1], [3.0, 2.0, 1.0, 0.5], 100, seed=_seed(seed, f"zero.data/{i}"))
        run_seed = _seed(seed, f"dfa.trains_from_zero/{i}")
        results = {}
        for name in ("dfa", "bp"):
            net = init_network(sizes, 1, seed=run_seed, activation="tanh", xp=XP)
            weights = [XP.zeros_like(w) for w in net.weights[:-1]] + [net.weights[-1]]
            net = network_from_weights(weights, activation="tanh")
            fb = draw_feedback("dfa", sizes, 1, seed=run_seed, xp=XP)
            res = train(net, data, rule=name, steps=ZERO_STEPS, lr=ZERO_LR, feedback=fb, probe="dfa",
                        record_every=10, progress=False)
            results[name] = (res, weights)
        dfa_res, _ = results["dfa"]
        bp_res, bp_init = results["bp"]
        bp_moved = max(bp_moved, *(float(np.max(np.abs(to_host(w1) - to_host(w0))))
                                   for w1, w0 in zip(bp_res.network.weights, bp_init)))
        hidden_norms.append([float(np.linalg.norm(to_host(w))) for w in dfa_res.network.weights[:-1]])
        dfa_loss.append(dfa_res.metric("loss"))
        bp_loss.append(bp_res.metric("loss"))
    loss, bp_curves = np.concatenate(dfa_loss, axis=1), np.concatenate(bp_loss, axis=1)
    ratio = loss[-1] / loss[0]
    violation = float(ratio.max()) if (bp_moved == 0.0 and np.all(np.asarray(hidden_norms) > 0)) else math.inf
    return CheckResult(n_instances, violation, ZERO_LOSS_RATIO, {
        "steps": dfa_res.steps, "dfa_loss": loss, "bp_loss": bp_curves, "bp_moved": bp_moved})


# --- dfa.nonlinear_alignment -------------------------------------------------------------------------

NONLINEAR_SIZES = (20, 32, 32, 32, 5)
NONLINEAR_STEPS = 800
NONLINEAR_LR = 0.2
NONLINEAR_MAX_ANGLE = 80.0
#: Members (init, feedback) per independent task.
NONLINEAR_MEMBERS = 2


def _plot_nonlinear(result: CheckResult, ax):
    d = result.details
    angles = d["angles"]  # (T, E, L-1)
    for layer in range(angles.shape[-1]):
        ax.plot(d["steps"], angles[..., layer].mean(axis=1), label=f"hidden layer {layer + 1}")
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.axhline(NONLINEAR_MAX_ANGLE, color="grey", lw=0.8, ls=":", label="80 degrees")
    ax.set(xlabel="step", ylabel="angle DFA vs BP signal (degrees)", title="dfa.nonlinear_alignment", ylim=(0, 120))
    ax.legend(fontsize=7)


@claim(
    "dfa.nonlinear_alignment",
    source="Nokland 2016; Launay et al. 2020",
    statement="After training a tanh network with DFA, every hidden layer's DFA signal is within 80 degrees of "
              "BP's and the layer next to the output is the most aligned (in our runs the angle even grows "
              "monotonically with the distance from the output: about 47, 42 and 30 degrees from input to output).",
    conditions="independent tasks with 2 members each; tanh 20-32-32-32-5 network, Gaussian init (scale 1), "
               "softmax cross-entropy on a nonlinear teacher classification task (400 samples), full-batch GD "
               "lr 0.2, 800 steps. With mse on the "
               "same kind of task we saw the middle layer end more aligned than the top one, so the ordering "
               "is stated for cross-entropy only. Violation per member: max(worst angle - 80, top-layer angle - "
               "best other layer), degrees; tolerance 0.",
    rules=("dfa",),
    instances=10,
    quick_instances=4,
    hypothesis_examples=3,
    sabotage=unfixed_feedback,
    plot=_plot_nonlinear,
)
def check_nonlinear_alignment(seed: int, n_instances: int) -> CheckResult:
    sizes = NONLINEAR_SIZES
    n_tasks = math.ceil(n_instances / NONLINEAR_MEMBERS)
    angles, accuracy = [], []
    for task in range(n_tasks):  # independent tasks, NONLINEAR_MEMBERS members (init, feedback) on each
        members = min(NONLINEAR_MEMBERS, n_instances - task * NONLINEAR_MEMBERS)
        run_seed = _seed(seed, f"dfa.nonlinear_alignment/{task}")
        data = teacher_classification(400, seed=run_seed, n_inputs=sizes[0], n_classes=sizes[-1])
        net = init_network(sizes, members, seed=run_seed, activation="tanh", xp=XP)
        fb = draw_feedback("dfa", sizes, members, seed=run_seed, xp=XP)
        res = train(net, data, rule="dfa", steps=NONLINEAR_STEPS, lr=NONLINEAR_LR, feedback=fb, record_every=40,
                    progress=False)
        angles.append(res.metric("signal_angle"))  # (T, E, L-1)
        accuracy.append(res.metric("accuracy")[-1])
    angles = np.concatenate(angles, axis=1)
    final = angles[-1]
    worst = final.max(axis=1) - NONLINEAR_MAX_ANGLE
    ordering = final[:, -1] - final[:, :-1].min(axis=1)
    violation = np.maximum(worst, ordering)
    violation = float(np.max(np.where(np.isfinite(violation), violation, math.inf)))
    return CheckResult(n_instances, violation, 0.0, tasks=n_tasks, members=n_instances, details={
        "steps": res.steps, "angles": angles, "final_mean": final.mean(axis=0),
        "accuracy": np.concatenate(accuracy)})


# --- refinetti.align_then_memorise --------------------------------------------------------------------

MEMORISE_SIZES = (10, 32, 4)
MEMORISE_STEPS = 400
MEMORISE_INIT = 0.01
MEMORISE_LARGE = 1.0
MEMORISE_ALIGNED = 45.0
#: Members (init, feedback) per independent task.
MEMORISE_MEMBERS = 2


def alignment_and_loss_progress(steps, loss, angles):
    r"""When the alignment and the loss make half their progress, per member.

    Alignment progress is :math:`(90 - \theta(t)) / (90 - \min_t \theta)`, loss
    progress :math:`(L_0 - L(t)) / (L_0 - L_T)`.

    Returns
    -------
    dict
        ``align_step``, ``loss_step`` (first recorded steps of half progress),
        ``loss_progress_at_align`` (the loss progress when the alignment is half
        done) and ``min_angle``, each ``(E,)``.
    """
    loss, angles = np.asarray(loss, dtype=float), np.asarray(angles, dtype=float)
    gain = 90.0 - np.nanmin(angles, axis=0)
    align_idx = np.argmax(angles <= (90.0 - 0.5 * gain)[None, :], axis=0)
    drop = loss[0] - loss[-1]
    loss_idx = np.argmax(loss <= (loss[0] - 0.5 * drop)[None, :], axis=0)
    members = np.arange(loss.shape[1])
    at_align = (loss[0] - loss[align_idx, members]) / np.where(drop > 0, drop, np.nan)
    return {"align_step": np.asarray(steps)[align_idx], "loss_step": np.asarray(steps)[loss_idx],
            "loss_progress_at_align": at_align, "min_angle": np.nanmin(angles, axis=0)}


def _memorise_run(seed: int, n_instances: int, scale: float, tag: str):
    """DFA from an init of ``scale`` on independent teacher tasks (2 members each); curves and half-times.

    Member ``m`` of the result is member ``m % 2`` of task ``m // 2``; ``tasks`` counts the tasks.
    """
    sizes = MEMORISE_SIZES
    n_tasks = math.ceil(n_instances / MEMORISE_MEMBERS)
    losses, angles = [], []
    for task in range(n_tasks):
        members = min(MEMORISE_MEMBERS, n_instances - task * MEMORISE_MEMBERS)
        run_seed = _seed(seed, f"{tag}/{task}")
        data = teacher_classification(200, seed=run_seed, n_inputs=sizes[0], n_classes=sizes[-1])
        net = init_network(sizes, members, seed=run_seed, scale=scale, activation="tanh", xp=XP)
        fb = draw_feedback("dfa", sizes, members, seed=run_seed, xp=XP)
        res = train(net, data, rule="dfa", steps=MEMORISE_STEPS, lr=0.1, feedback=fb, record_every=2,
                    progress=False)
        losses.append(res.metric("loss"))
        angles.append(res.metric("signal_angle")[..., 0])
    loss, angles = np.concatenate(losses, axis=1), np.concatenate(angles, axis=1)
    return {"steps": res.steps, "loss": loss, "angles": angles, "tasks": n_tasks,
            **alignment_and_loss_progress(res.steps, loss, angles)}


def _plot_memorise(result: CheckResult, ax):
    d = result.details
    steps = np.maximum(d["steps"], 0.5)
    align = (90.0 - d["angles"]) / (90.0 - np.nanmin(d["angles"], axis=0))
    loss = (d["loss"][0] - d["loss"]) / (d["loss"][0] - d["loss"][-1])
    ax.plot(steps, align.mean(axis=1), label="alignment progress (90 - angle)")
    ax.plot(steps, loss.mean(axis=1), label="loss progress")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set(xlabel="step", ylabel="fraction of final progress (member mean)", title=f"init scale {d['scale']:g}")
    ax.legend(fontsize=7)


@claim(
    "refinetti.align_then_memorise",
    source="Refinetti et al. 2021",
    statement="From a small init (scale 0.01) DFA first aligns, then memorises: when the DFA signal has made half "
              "of its eventual alignment (angle to BP well below 45 degrees), the loss has made less than half of "
              "its decrease (under 2% in our runs). It needs the small init: see "
              "refinetti.large_init_concurrent.",
    conditions="independent tasks with 2 members each; tanh 10-32-4 network, Gaussian init of scale 0.01, "
               "softmax cross-entropy on a nonlinear teacher classification task (200 samples), full-batch GD "
               "lr 0.1 for 400 steps, recorded every "
               "2 steps. Violation per member: the loss progress at the alignment half-time (1 if the angle "
               "never falls below 45 degrees); tolerance 0.5, i.e. the alignment half-time comes first.",
    rules=("dfa",),
    instances=10,
    quick_instances=4,
    sabotage=unfixed_feedback,
    plot=_plot_memorise,
)
def check_align_then_memorise(seed: int, n_instances: int) -> CheckResult:
    run = _memorise_run(seed, n_instances, MEMORISE_INIT, "refinetti.align_then_memorise")
    violation = np.where(run["min_angle"] < MEMORISE_ALIGNED, run["loss_progress_at_align"], 1.0)
    violation = float(np.max(np.where(np.isfinite(violation), violation, math.inf)))
    return CheckResult(n_instances, violation, 0.5, {"scale": MEMORISE_INIT, **run}, tasks=run["tasks"],
                       members=n_instances)


@claim(
    "refinetti.large_init_concurrent",
    source="Refinetti et al. 2021 (what happens outside its small-init setting)",
    statement="The align-then-memorise order does NOT hold from a standard init (scale 1): alignment and loss "
              "progress together, and when the DFA signal has made half of its alignment the loss has already "
              "made a large part of its decrease (at least a quarter; 55-85% in our runs, against under 2% "
              "from scale 0.01).",
    conditions="As refinetti.align_then_memorise but with Gaussian init of scale 1. Violation per member: 0.25 "
               "minus the loss progress at the alignment half-time (+1 if the angle never falls below 60 "
               "degrees, i.e. no alignment to time); tolerance 0.",
    rules=("dfa",),
    instances=10,
    quick_instances=4,
    sabotage=unfixed_feedback,
    plot=_plot_memorise,
)
def check_large_init_concurrent(seed: int, n_instances: int) -> CheckResult:
    run = _memorise_run(seed, n_instances, MEMORISE_LARGE, "refinetti.large_init_concurrent")
    violation = np.where(run["min_angle"] < 60.0, 0.25 - run["loss_progress_at_align"], 1.0)
    violation = float(np.max(np.where(np.isfinite(violation), violation, math.inf)))
    return CheckResult(n_instances, violation, 0.0, {"scale": MEMORISE_LARGE, **run}, tasks=run["tasks"],
                       members=n_instances)


# refinetti.degeneracy_breaking lives in theory.claims.refinetti (checked against its closed-form optimum).


# --- refinetti.output_width --------------------------------------------------------------------------

WIDTH_INPUTS = 16
WIDTH_HIDDEN = 32
WIDTH_OUTPUTS = (2, 8, 32)
WIDTH_MEMBERS = 4
WIDTH_STEPS = 600


def _plot_width(result: CheckResult, ax):
    d = result.details
    ratio = np.asarray(WIDTH_OUTPUTS) / WIDTH_HIDDEN
    for i, row in enumerate(d["angles"]):
        ax.plot(ratio, row, "o-", color="C0", alpha=0.5, label="one instance" if i == 0 else None)
    ax.plot([1 / WIDTH_HIDDEN], [0.0], "s", color="C1", label="n_L = 1: exactly 0 (scalar output)")
    ax.set_xscale("log")
    ax.set(xlabel="output width / hidden width", ylabel="angle W2 vs B^T at convergence (degrees)",
           title="refinetti.output_width")
    ax.legend(fontsize=7)


@claim(
    "refinetti.output_width",
    source="Refinetti et al. 2021",
    statement="In a linear DFA network trained to convergence, the weight alignment falls (the angle between W2 "
              "and B^T grows) as the output width grows relative to the hidden width: about 8 (well below 45), "
              "20 and 51 degrees for n_L/n_1 = 1/16, 1/4, 1 (exactly 0 for a scalar output).",
    conditions="Linear 16-32-n_L networks, n_L in (2, 8, 32), zero init, whitened inputs (64 samples) and an "
               "isotropic teacher (all singular values 1, so only the widths differ), full-batch GD lr 0.1 for "
               "600 steps; per instance the mean over 4 feedback draws. Violation: the largest decrease of the "
               "mean angle from one width to the next, or the excess of the narrowest output's angle over 45 "
               "(degrees); tolerance 0.",
    rules=("dfa",),
    instances=8,
    quick_instances=3,
    hypothesis_examples=3,
    sabotage=unfixed_feedback,
    plot=_plot_width,
)
def check_output_width(seed: int, n_instances: int) -> CheckResult:
    angles = np.zeros((n_instances, len(WIDTH_OUTPUTS)))
    losses = np.zeros_like(angles)
    for i in range(n_instances):
        for j, n_out in enumerate(WIDTH_OUTPUTS):
            run_seed = _seed(seed, f"refinetti.output_width/{i}/{n_out}")
            sizes = (WIDTH_INPUTS, WIDTH_HIDDEN, n_out)
            data = linear_teacher(WIDTH_INPUTS, n_out, np.ones(min(WIDTH_INPUTS, n_out)), 64, seed=run_seed)
            net = init_network(sizes, WIDTH_MEMBERS, seed=run_seed, init="zero", xp=XP)
            fb = draw_feedback("dfa", sizes, WIDTH_MEMBERS, seed=run_seed, xp=XP)
            res = train(net, data, rule="dfa", steps=WIDTH_STEPS, lr=0.1, feedback=fb, record_every=WIDTH_STEPS,
                        progress=False)
            angles[i, j] = float(np.mean(res.metric("weight_alignment")[-1, :, 0]))
            losses[i, j] = float(np.max(res.metric("loss")[-1]))
    decrease = np.concatenate([angles[:, :-1] - angles[:, 1:], angles[:, :1] - 45.0], axis=1)
    violation = float(np.max(np.where(np.isfinite(decrease), decrease, math.inf)))
    return CheckResult(n_instances, violation, 0.0, {"angles": angles, "final_loss": losses},
                       tasks=angles.size, members=angles.size * WIDTH_MEMBERS)


# --- symbolic.* ---------------------------------------------------------------------------------------

SYMBOLIC_SIZES = ((1, 1, 1), (2, 2, 2), (1, 1, 1, 1), (2, 2, 2, 2))
FIELD_SIZES = SYMBOLIC_SIZES + ((3, 4, 2, 2),)
FIELD_SAMPLES = 16


def _feedback_for(rule, sizes, rng):
    return [rng.normal(size=s) for s in feedback_shapes(rule, sizes)]


def _random_problem(rule, sizes, rng, scale=0.7):
    weights = [rng.normal(0.0, scale, size=(b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    feedback = _feedback_for(rule, sizes, rng)
    target = rng.normal(size=(sizes[-1], sizes[0]))
    return weights, feedback, target


def _engine_field(rule, weights, feedback, target, rng):
    """:math:`-\\Delta W` of the engine's rule on whitened data with :math:`\\Sigma_{yx}` = ``target``."""
    x, y = symbolic.whitened_data(target, FIELD_SAMPLES, rng)
    updates = compute_updates(rule, _dev([w[None] for w in weights]), XP.asarray(x), XP.asarray(y),
                              feedback=_dev([b[None] for b in feedback]) if feedback else None)
    return [-np.array(to_host(u))[0] for u in updates]


@claim(
    "symbolic.vector_field",
    source="ours",
    statement="The sympy-derived gradient-flow fields of BP, FA and DFA (dW_l/dt = -D_l H_{l-1}^T with D_L = "
              "W_L..W_1 - S and D_l = W_{l+1}^T D_{l+1}, B_{l+1} D_{l+1}, B_l D_L) equal the engine's updates "
              "on whitened data for scalar, 2x2 and rectangular networks of depth 2 and 3.",
    conditions="Random Gaussian weights, feedback and target S; 16 whitened inputs (X^T X/N = I exactly) with "
               "Y = X S^T, so Sigma_yx = S. Violation: the largest relative difference. Tolerance: "
               "4 (L+1)(n_max + N) eps, the rounding of the engine's batch means and matrix products.",
    rules=("bp", "fa", "dfa"),
    instances=10,
    quick_instances=3,
    hypothesis_examples=3,
)
def check_vector_field(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance = 0.0, 0.0
    errors = []
    for i in range(n_instances):
        rng = _rng(seed, "symbolic.vector_field", i)
        for rule in symbolic.RULE_NAMES:
            for sizes in FIELD_SIZES:
                flow = symbolic.linear_flow(rule, sizes)
                weights, feedback, target = _random_problem(rule, sizes, rng)
                derived = symbolic.numeric_field(flow)(weights, feedback, target)
                engine = _engine_field(rule, weights, feedback, target, rng)
                scale = max(float(np.max(np.abs(e))) for e in engine)
                err = max(float(np.max(np.abs(d - e))) for d, e in zip(derived, engine)) / scale
                errors.append(err)
                worst = max(worst, err)
                tolerance = max(tolerance, 4 * len(sizes) * (max(sizes) + FIELD_SAMPLES) * EPS)
    return CheckResult(n_instances, worst, tolerance, {"errors": np.asarray(errors)})


def wrong_conserved_quantities():
    """Sabotage: the conserved quantities with the sign of their second term flipped (Q -> 2 W W^T - Q)."""
    original = symbolic.conserved_quantities

    def wrong(flow):
        out = {}
        for l, (name, q) in enumerate(original(flow).items()):
            w = sp.Matrix(flow.weights[l])
            out[name] = (2 * w * w.T - q).applyfunc(sp.expand)
        return out

    return patch.object(symbolic, "conserved_quantities", wrong)


def negated_vector_field():
    """Sabotage: the derived vector field with the wrong sign (gradient ascent)."""
    original = symbolic.linear_flow

    def wrong(rule, sizes):
        return symbolic.negated(original(rule, sizes))

    return patch.object(symbolic, "linear_flow", wrong)



_SYMBOLIC_CACHE: dict = {}


def _symbolically_conserved(flow, quantities) -> bool:
    """Whether every quantity's time derivative along ``flow`` simplifies to 0 (memoised)."""
    key = (flow.rule, flow.sizes, tuple(sp.ImmutableMatrix(q) for q in quantities.values()),
           tuple(sp.ImmutableMatrix(f) for f in flow.field))
    if key not in _SYMBOLIC_CACHE:
        _SYMBOLIC_CACHE[key] = all(symbolic.is_zero(symbolic.time_derivative(q, flow)) for q in quantities.values())
    return _SYMBOLIC_CACHE[key]


def _quantity_scale(flow, weights, feedback, target):
    """Size of the terms of the conserved quantities: ``sum_l ||W_l||^2 + ||W_{l+1}|| (1 + ||feedback||)``."""
    norms = [np.linalg.norm(w) for w in weights]
    fb = max([np.linalg.norm(b) for b in feedback] + [1.0])
    return sum(n ** 2 for n in norms) + fb * sum(norms)


CONSERVATION_RTOL = 1e-10
CONSERVATION_TIME = 2.0


def _plot_conservation(result: CheckResult, ax):
    d = result.details
    for i, (label, drift) in enumerate(d["drift"].items()):  # colour and line style: a distinct look per entry
        ax.semilogy(d["times"], np.maximum(drift, 1e-18), label=label, color=f"C{i % 10}", ls=LINESTYLES[i % 4])
    ax.axhline(result.tolerance, color="grey", ls=":", label="tolerance")
    ax.set(xlabel="t (gradient-flow time)", ylabel="relative drift of Q (RK45)", title="symbolic.conservation")
    ax.legend(fontsize=6, ncol=2)


@claim(
    "symbolic.conservation",
    source="Saxe et al. 2013, Du et al. 2018 (BP); ours (FA and DFA laws)",
    statement="Conserved under gradient flow, checked symbolically (d/dt simplifies to 0) and along RK45 "
              "trajectories: BP W_l W_l^T - W_{l+1}^T W_{l+1}; FA W_l W_l^T - B_{l+1} W_{l+1} - (.)^T, scalar "
              "chain a1^2 - 2 c a2; DFA (ours) W_l W_l^T - A_l W_{l+1} - (.)^T with A_l = B_l B_{l+1}^+, B_L = I "
              "(scalar chain b_{l+1} a_l^2 - 2 b_l a_{l+1}).",
    conditions="Scalar and 2x2 networks of depth 2 and 3 (feedback square, so A_l is exact); random Gaussian "
               "weights (scale 0.7), feedback and target; RK45 with rtol 1e-10 to t = 2. Violation: the largest "
               "drift relative to the size of the terms (+inf if a derivative does not simplify to 0); "
               "tolerance 1e3 rtol (the global error of O(10^2) controlled steps).",
    rules=("bp", "fa", "dfa"),
    instances=8,
    quick_instances=3,
    hypothesis_examples=3,
    sabotage=wrong_conserved_quantities,
    plot=_plot_conservation,
)
def check_conservation(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    times, drift_curves = None, {}
    for rule in symbolic.RULE_NAMES:
        for sizes in SYMBOLIC_SIZES:
            flow = symbolic.linear_flow(rule, sizes)
            quantities = symbolic.conserved_quantities(flow)
            if not _symbolically_conserved(flow, quantities):
                worst = math.inf
            numeric = [symbolic.numeric_quantity(q, flow) for q in quantities.values()]
            label = f"{rule} {'x'.join(map(str, sizes))}"
            for i in range(n_instances):
                rng = _rng(seed, f"symbolic.conservation/{label}", i)
                weights, feedback, target = _random_problem(rule, sizes, rng)
                t, path = symbolic.integrate_flow(flow, weights, feedback, target, CONSERVATION_TIME,
                                                  n_points=21, rtol=CONSERVATION_RTOL, atol=1e-12)
                q0 = [q(weights, feedback, target) for q in numeric]
                drift = np.array([max(np.linalg.norm(q(w, feedback, target) - v) for q, v in zip(numeric, q0))
                                  / _quantity_scale(flow, w, feedback, target) for w in path])
                worst = max(worst, float(drift.max()))
                if i == 0:
                    times, drift_curves[label] = t, drift
    return CheckResult(n_instances, worst, 1e3 * CONSERVATION_RTOL, {"times": times, "drift": drift_curves})


DRIFT_LRS = (0.01, 0.005, 0.0025)
DRIFT_SCALE = 0.5
#: Largest eta * rate allowed (rate: spectral norm of the flow's Jacobian at the start).
DRIFT_STIFFNESS = 0.05
DRIFT_TIME = 0.5


def _plot_drift(result: CheckResult, ax):
    d = result.details
    for i, (label, drift) in enumerate(d["drift"].items()):  # colour and line style: a distinct look per entry
        ax.loglog(DRIFT_LRS, drift, marker="osD^v<>"[i % 7], label=label, color=f"C{i % 10}", ls=LINESTYLES[i % 4])
    lrs = np.asarray(DRIFT_LRS)
    ax.loglog(lrs, lrs * 1e-1, "k:", label="slope 1")
    ax.set(xlabel="step size eta", ylabel="drift of Q at t = 0.5", title="symbolic.drift_order: O(eta)")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.02, 1.0))


@claim(
    "symbolic.drift_order",
    source="ours",
    statement="Under gradient descent with the engine's rules the conserved quantities of symbolic.conservation "
              "drift by O(eta) at fixed time t = eta k (each step changes them by exactly eta^2 times a product "
              "of updates): the log-log slope of the drift against eta is 1.",
    conditions="Scalar and 2x2 networks of depth 2 and 3 under BP, FA and DFA, random Gaussian weights "
               "(scale 0.5), feedback and target, whitened inputs; eta in (0.01, 0.005, 0.0025) to t = 0.5; "
               "instances with eta * rate > 0.05 at the start (rate: spectral norm of the Jacobian) are drawn "
               "again. Violation: |slope - 1|; tolerance 0.1 (the next order changes the slope by about "
               "eta * rate).",
    rules=("bp", "fa", "dfa"),
    instances=6,
    quick_instances=2,
    hypothesis_examples=3,
    sabotage=wrong_conserved_quantities,
    plot=_plot_drift,
)
def check_drift_order(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    curves = {}
    for rule in symbolic.RULE_NAMES:
        for sizes in SYMBOLIC_SIZES:
            flow = symbolic.linear_flow(rule, sizes)
            numeric = [symbolic.numeric_quantity(q, flow) for q in symbolic.conserved_quantities(flow).values()]
            jacobian = symbolic.numeric_quantity(symbolic.jacobian(flow), flow)
            label = f"{rule} {'x'.join(map(str, sizes))}"
            problems = []
            rng = _rng(seed, f"symbolic.drift_order/{label}")
            while len(problems) < n_instances:
                problem = _random_problem(rule, sizes, rng, scale=DRIFT_SCALE)
                if max(DRIFT_LRS) * np.linalg.norm(jacobian(*problem), 2) <= DRIFT_STIFFNESS:
                    problems.append(problem)
            # all instances as one ensemble: shared whitened x, per-member targets y = x S^T
            x, _ = symbolic.whitened_data(problems[0][2], FIELD_SAMPLES, rng)
            y = np.stack([x @ p[2].T for p in problems])
            weights0 = [np.stack([p[0][l] for p in problems]) for l in range(len(sizes) - 1)]
            feedback = [np.stack([p[1][l] for p in problems]) for l in range(len(problems[0][1]))] or None
            drifts = np.zeros((len(DRIFT_LRS), n_instances))
            for j, lr in enumerate(DRIFT_LRS):
                steps = int(round(DRIFT_TIME / lr))
                _, snaps = _descend(rule, weights0, x, y, lr=lr, steps=steps, feedback=feedback, record_every=steps)
                for m, (w0, fb, target) in enumerate(problems):
                    final = [w[m] for w in snaps[-1]]
                    drifts[j, m] = max(np.linalg.norm(q(final, fb, target) - q(w0, fb, target)) for q in numeric)
            slopes = np.polyfit(np.log(DRIFT_LRS), np.log(np.maximum(drifts, 1e-300)), 1)[0]
            worst = max(worst, float(np.max(np.abs(slopes - 1.0))))
            curves[label] = drifts[:, 0]
    return CheckResult(n_instances, float(worst), 0.1, {"drift": curves})


FD_STEP = EPS ** (1 / 3)


def _engine_jacobian(rule, weights, feedback, target, rng) -> np.ndarray:
    """Central-difference Jacobian of the engine's flow :math:`-\\Delta W` in the state order of a flow."""
    state = symbolic.state_vector(weights)
    shapes = [w.shape for w in weights]
    x, y = symbolic.whitened_data(target, FIELD_SAMPLES, rng)

    def field(v):
        ws, start = [], 0
        for shp in shapes:
            size = int(np.prod(shp))
            ws.append(v[start:start + size].reshape(shp))
            start += size
        updates = compute_updates(rule, _dev([w[None] for w in ws]), XP.asarray(x), XP.asarray(y),
                                  feedback=_dev([b[None] for b in feedback]) if feedback else None)
        return -np.concatenate([np.array(to_host(u))[0].ravel() for u in updates])

    jac = np.zeros((state.size, state.size))
    for j in range(state.size):
        h = FD_STEP * max(1.0, abs(state[j]))
        plus, minus = state.copy(), state.copy()
        plus[j] += h
        minus[j] -= h
        jac[:, j] = (field(plus) - field(minus)) / (2 * h)
    return jac


def _same(expr, expected) -> bool:
    return symbolic.is_zero(sp.sympify(expr) - sp.sympify(expected))


def _plot_saddle(result: CheckResult, ax):
    d = result.details
    s = d["s"]
    a = np.linspace(-2.5, 2.5, 400)
    with np.errstate(divide="ignore", invalid="ignore"):
        ax.plot(a, np.where(np.abs(a) > 0.15, s / a, np.nan), color="C2", label="optima a1 a2 = s (attracting)")
    for i, path in enumerate(d["paths"]):
        ax.plot(path[:, 0], path[:, 1], color="C0", lw=0.8, label="BP flow from a start (dot)" if i == 0 else None)
        ax.plot(path[0, 0], path[0, 1], ".", color="C0")
    ax.plot([0], [0], "x", color="C3", ms=8, label="saddle: eigenvalues +s, -s")
    ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), xlabel="a1", ylabel="a2", title=f"BP scalar chain, s = {s:g}")
    ax.legend(fontsize=7)


@claim(
    "symbolic.bp_saddle",
    source="Saxe et al. 2013; Baldi & Hornik 1989",
    statement="BP flow of the scalar chain y = a2 a1 x: the fixed points are the origin and the hyperbola "
              "a1 a2 = s; the origin is a saddle (eigenvalues +s, -s, so BP from exactly 0 never moves), the "
              "hyperbola a normally attracting manifold of optima (eigenvalues 0 and -(a1^2 + a2^2)). For 2x2 "
              "the origin has eigenvalues +-sigma_i(S), each twice, and the optima W2 W1 = S have 4 zero and 4 "
              "negative eigenvalues.",
    conditions="Fixed points by sympy.solve, eigenvalues symbolic; numerically, central-difference Jacobians "
               "of the engine's BP update (step eps^(1/3)) at random points of the hyperbola, at the origin and "
               "at random 2x2 optima W1 = G, W2 = S G^-1, against the symbolic Jacobian. Violation: largest "
               "relative difference (+inf if a symbolic fact fails or an eigenvalue count is wrong); tolerance "
               "1e3 eps^(2/3), the central-difference error.",
    rules=("bp",),
    instances=10,
    quick_instances=3,
    sabotage=negated_vector_field,
    plot=_plot_saddle,
)
def check_bp_saddle(seed: int, n_instances: int) -> CheckResult:
    flow = symbolic.linear_flow("bp", (1, 1, 1))
    a1, a2 = flow.state
    s = flow.target[0, 0]
    worst = 0.0
    points = symbolic.fixed_points(flow)
    hyperbola = [p for p in points if a1 in p and _same(p[a1] - s / a2, 0) and a2 not in p]
    origin = [p for p in points if p.get(a1) == 0 and p.get(a2) == 0]
    if len(points) != 2 or len(hyperbola) != 1 or len(origin) != 1:
        worst = math.inf
    eig0 = symbolic.eigenvalues_at(flow, {a1: 0, a2: 0})
    if set(sp.sympify(k) for k in eig0) != {s, -s}:
        worst = math.inf
    eig_h = symbolic.eigenvalues_at(flow, {a1: s / a2})
    if not (len(eig_h) == 2 and any(_same(k, 0) for k in eig_h)
            and any(_same(k, -(a2 ** 2 + s ** 2 / a2 ** 2)) for k in eig_h)):
        worst = math.inf
    jac = symbolic.numeric_quantity(symbolic.jacobian(flow), flow)
    flow2 = symbolic.linear_flow("bp", (2, 2, 2))
    jac2 = symbolic.numeric_quantity(symbolic.jacobian(flow2), flow2)
    tolerance = 1e3 * EPS ** (2 / 3)
    for i in range(n_instances):
        rng = _rng(seed, "symbolic.bp_saddle", i)
        sv = float(rng.choice([-1, 1]) * rng.uniform(0.5, 2.0))
        b = float(rng.choice([-1, 1]) * rng.uniform(0.4, 2.0))
        for point in ([np.array([[sv / b]]), np.array([[b]])], [np.zeros((1, 1)), np.zeros((1, 1))]):
            engine = _engine_jacobian("bp", point, [], np.array([[sv]]), rng)
            derived = jac(point, [], np.array([[sv]]))
            worst = max(worst, float(np.max(np.abs(engine - derived))) / max(1.0, float(np.max(np.abs(derived)))))
        # 2x2: the origin and a random optimum
        target = rng.normal(size=(2, 2))
        sigma = np.linalg.svd(target, compute_uv=False)
        zero = [np.zeros((2, 2)), np.zeros((2, 2))]
        engine0 = _engine_jacobian("bp", zero, [], target, rng)
        eig = np.sort(np.linalg.eigvals(engine0).real)
        expected = np.sort(np.concatenate([sigma, sigma, -sigma, -sigma]))
        worst = max(worst, float(np.max(np.abs(eig - expected))) / float(sigma.max()))
        g = rng.normal(size=(2, 2)) + 2 * np.eye(2)
        optimum = [g, target @ np.linalg.inv(g)]
        engine_opt = _engine_jacobian("bp", optimum, [], target, rng)
        derived = jac2(optimum, [], target)
        scale = max(1.0, float(np.max(np.abs(derived))))
        worst = max(worst, float(np.max(np.abs(engine_opt - derived))) / scale)
        eig_opt = np.linalg.eigvals(derived).real
        n_zero = int(np.sum(np.abs(eig_opt) <= 1e-9 * scale))
        if n_zero != 4 or np.sum(eig_opt < -1e-9 * scale) != 4:
            worst = math.inf
    # trajectories of the derived flow for the figure (s = 1); a wrong field may blow up: no figure then
    paths = []
    if math.isfinite(worst) and worst <= tolerance:
        for start in ([0.05, 0.02], [-0.03, 0.05], [2.0, -1.5], [-2.0, 0.3], [0.2, 2.2], [-1.5, -2.2]):
            _, path = symbolic.integrate_flow(flow, [np.array([[start[0]]]), np.array([[start[1]]])], [],
                                              np.array([[1.0]]), 12.0, n_points=200, rtol=1e-8, atol=1e-10)
            paths.append(np.array([[w[0][0, 0], w[1][0, 0]] for w in path]))
    return CheckResult(n_instances, worst, tolerance, {"s": 1.0, "paths": paths})


FA_LIMIT_RTOL = 1e-10
#: Instances whose path passes closer than this to a fold (a near-double root of the cubic) are drawn again.
FA_LIMIT_MIN_RATE = 0.05


def fa_chain_bottleneck(a1: float, limit: float, q: float) -> float:
    r"""The slowest contraction rate of the scalar FA chain on its way from ``a1`` to ``limit``.

    On the parabola of :math:`q = a_1^2 - 2 c a_2`,
    :math:`\dot a_1 = -p(a_1)/2 = -(a_1 - r)\,Q(a_1)/2` with ``r`` the limit and
    :math:`Q(a) = a^2 + r a + r^2 - q`; returns :math:`\min |Q|` over the segment
    between ``a1`` and ``r`` (``Q(r) = p'(r)``, twice the transverse eigenvalue).
    Small values mean a near-double root (a fold) that slows the flow down.
    """
    points = [a1, limit]
    vertex = -limit / 2.0
    if min(a1, limit) <= vertex <= max(a1, limit):
        points.append(vertex)
    return float(min(abs(a * a + limit * a + limit * limit - q) for a in points))


def _fa_field_rhs(c, s):
    """The engine's FA flow of an ensemble of scalar chains, as a ``solve_ivp`` right-hand side."""
    n = c.size
    x = XP.asarray(np.ones((n, 1, 1)))
    y = XP.asarray(s.reshape(n, 1, 1))
    fb = [XP.asarray(c.reshape(n, 1, 1))]

    def rhs(_t, v):
        weights = [XP.asarray(v[:n].reshape(n, 1, 1)), XP.asarray(v[n:].reshape(n, 1, 1))]
        updates = compute_updates("fa", weights, x, y, feedback=fb)
        return -np.concatenate([np.array(to_host(u)).ravel() for u in updates])

    return rhs


def _plot_fa_limit(result: CheckResult, ax):
    d = result.details
    aligned = d["aligned"]
    ax.plot(d["predicted"][aligned], d["simulated"][aligned], "o", label="limit with c a2 > 0 (aligned)")
    ax.plot(d["predicted"][~aligned], d["simulated"][~aligned], "s", label="limit with c a2 < 0 (anti-aligned)")
    lim = float(np.max(np.abs(d["predicted"]))) * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8, label="simulated = predicted")
    ax.set(xlabel="a1 limit predicted from a1^2 - 2 c a2", ylabel="a1 limit of the engine's FA flow",
           title="symbolic.fa_chain_limit")
    ax.legend(fontsize=7)


@claim(
    "symbolic.fa_chain_limit",
    source="ours (cf. Baldi et al. 2018)",
    statement="FA flow of the scalar chain: the origin is not a fixed point, the fixed points are the hyperbola "
              "a1 a2 = s with transverse eigenvalue -(a1^2 + c a2); the conserved a1^2 - 2 c a2 = q puts the "
              "flow on a parabola where a1' = -(a1^3 - q a1 - 2 c s)/2, so its limit is the cubic's stable root "
              "next to a1(0). That predicts the engine's limit exactly, anti-aligned ones (c a2 < 0) included.",
    conditions="Fixed points by sympy.solve and eigenvalues symbolic; numerically, random a1(0), a2(0) ~ N(0, "
               "1.5^2), c and s of random sign and size in [0.5, 2], away from a fold (the contraction rate |Q| "
               "of a1' = -(a1 - r) Q(a1) / 2 stays >= 0.05 on the way to the limit r); the engine's FA update "
               "integrated by RK45 (rtol 1e-10) until |a1 - r| < 1e-13 by that rate. Violation: relative error "
               "of the limit (+inf if a symbolic fact fails); tolerance 1e4 rtol (the global error of O(10^3) "
               "controlled RK45 steps).",
    rules=("fa",),
    instances=40,
    quick_instances=12,
    sabotage=wrong_conserved_quantities,
    plot=_plot_fa_limit,
)
def check_fa_chain_limit(seed: int, n_instances: int) -> CheckResult:
    from scipy.integrate import solve_ivp

    flow = symbolic.linear_flow("fa", (1, 1, 1))
    a1, a2 = flow.state
    c, s = flow.parameters
    worst = 0.0
    points = symbolic.fixed_points(flow)
    if len(points) != 1 or a1 not in points[0] or not _same(points[0][a1] - s / a2, 0):
        worst = math.inf
    eig = symbolic.eigenvalues_at(flow, {a1: s / a2})
    if not (any(_same(k, 0) for k in eig) and any(_same(k, -(s ** 2 / a2 ** 2 + c * a2)) for k in eig)):
        worst = math.inf
    rng = _rng(seed, "symbolic.fa_chain_limit")
    rows = []
    while len(rows) < n_instances:
        a, b = rng.normal(0.0, 1.5, size=2)
        cv, sv = rng.choice([-1, 1], size=2) * rng.uniform(0.5, 2.0, size=2)
        la1, la2 = symbolic.scalar_fa_limit(a, b, cv, sv)
        rate = fa_chain_bottleneck(a, la1, symbolic.conserved_scalar_fa(a, b, cv))
        if rate < FA_LIMIT_MIN_RATE:
            continue
        rows.append((a, b, cv, sv, la1, la2, rate))
    rows = np.array(rows)
    a0, b0, cv, sv, p1, p2, rate = rows.T
    # |a1 - limit| <= |a1(0) - limit| exp(-rate t / 2): run until that is below 1e-13
    t_final = float(np.max(2.0 * np.log(np.maximum(np.abs(a0 - p1), 1e-13) / 1e-13) / rate)) + 1.0
    rhs = _fa_field_rhs(cv, sv)
    sol = solve_ivp(rhs, (0.0, t_final), np.concatenate([a0, b0]), rtol=FA_LIMIT_RTOL, atol=1e-12, method="RK45")
    n = len(a0)
    sim1, sim2 = sol.y[:n, -1], sol.y[n:, -1]
    err = np.maximum(np.abs(sim1 - p1) / (1 + np.abs(p1)), np.abs(sim2 - p2) / (1 + np.abs(p2)))
    worst = max(worst, float(np.max(err)))
    tolerance = 1e4 * FA_LIMIT_RTOL
    return CheckResult(n_instances, worst, tolerance, {"predicted": p1, "simulated": sim1, "aligned": cv * p2 > 0})
