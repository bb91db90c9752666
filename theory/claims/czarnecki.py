r"""Czarnecki et al. (2017), "Understanding synthetic gradients and DNIs": convergence along trajectories.

Setting (:mod:`sim.synthetic`): a deep *linear* network
:math:`\hat y = W_L\cdots W_1 x` with the mse loss, every hidden layer taught by a
label-conditioned linear module (cDNI), :math:`\mathrm{SG}_l(h_l, y) = A_l h_l +
C_l y + c_l`. The true gradient :math:`g_l = \partial L/\partial h_l` is itself of
that form (:func:`sim.synthetic.perfect_modules`), so every module error is a
parameter error :math:`\Delta_l`, and the update of the weights below the modules
is linear in it: :math:`g_{SG} = g + D(\Delta)`.

The paper's convergence result: if along the whole run the SG *epsilon-tracks*
the true gradient closely enough that the update error stays below a fraction of
the true gradient, :math:`|g_{SG,k} - g_k| \le \rho\,|g_k|` with :math:`\rho =
(1-\delta)/(1+\delta) < 1`, then :math:`\langle g_{SG}, g\rangle \ge (1-\rho)|g|^2`,
each small step is a descent step, and (Zoutendijk) training converges to a
solution of the original problem. For a deep linear net from a generic init that
is the least-squares fit. The check builds such a trajectory: at every step the
module is the perfect one plus a random parameter error rescaled so that the
update error is exactly :math:`\rho|g_k|`.
"""

from __future__ import annotations

import contextlib
import math
import zlib

import numpy as np

from sim import synthetic as sg
from sim.rules import rule_updates
from theory.claims import CheckResult, claim

#: Tracking levels rho of the instances (cycled), the step and the number of steps.
TRACKING_LEVELS = (0.2, 0.5, 0.8)
TRACKING_LR, TRACKING_STEPS = 0.1, 600
#: A run stops once |g| falls below this fraction of its first value; the tracking level is checked while
#: |g| is above RESOLVED |g_0| (below, rounding errors of size eps |W| dominate the difference g_SG - g).
CONVERGED, RESOLVED = 1e-12, 1e-6
#: The run must end this close to the least-squares loss (relative to the initial excess).
TRACKING_EXCESS = 1e-6


def _rng(seed: int, tag: str, instance: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode()), int(instance)]))


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


def _deep_linear_task(rng: np.random.Generator):
    """An independent task: widths, whitened inputs, noisy linear targets, and a generic init."""
    depth = int(rng.integers(2, 4))  # 2 or 3 weight layers: 1 or 2 hidden layers, each with its module
    n0, n_out = int(rng.integers(3, 7)), int(rng.integers(2, 5))
    sizes = [n0] + [int(rng.integers(max(n0, n_out), 9)) for _ in range(depth - 1)] + [n_out]
    n = 4 * n0
    q, _ = np.linalg.qr(rng.normal(size=(n, n0)))
    x = math.sqrt(n) * q  # whitened: X^T X / N = I
    y = x @ rng.normal(size=(n0, n_out)) / math.sqrt(n0) + 0.3 * rng.normal(size=(n, n_out))
    weights = [rng.normal(size=(1, b, a)) / math.sqrt(a) * 0.7 for a, b in zip(sizes[:-1], sizes[1:])]
    return sizes, x, y, weights


def least_squares_loss(x: np.ndarray, y: np.ndarray) -> float:
    r"""The least loss any linear map reaches, :math:`\min_W \frac1{2N}|XW^T - Y|^2` (numpy ``lstsq``)."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.sum((x @ coef - y) ** 2) / (2 * x.shape[0]))


def _tracked_run(rng: np.random.Generator, rho: float, weights, x, y, *, steps: int, lr: float):
    """GD where every step uses the engine's cDNI update with modules that track the gradient at level ``rho``.

    Returns the losses, the true-gradient norms, the realised tracking levels
    :math:`|g_{SG}-g|/|g|` and the cosines :math:`\\langle g_{SG}, g\\rangle/|g|^2`.
    """
    losses, norms, realised, inner = [], [], [], []
    w = [np.array(a) for a in weights]
    for _ in range(steps):
        bp = rule_updates("bp", w, x, y)
        g = _flat(bp.weights)
        losses.append(float(bp.loss[0]))
        norms.append(float(np.linalg.norm(g)))
        if norms[-1] <= CONVERGED * norms[0]:  # at the rounding level: converged, the run stops here
            break
        perfect = sg.perfect_modules(w)
        delta = [{k: rng.normal(size=np.shape(v)) for k, v in p.items()} for p in perfect.params]
        probe = sg.SyntheticGradients(tuple({k: np.asarray(v) + d[k] for k, v in p.items()}
                                            for p, d in zip(perfect.params, delta)), "linear", ("hidden", "label"),
                                      "fixed", np.zeros(1), 1)
        direction = _flat(rule_updates("cdni", w, x, y, modules=probe).weights) - g
        scale = rho * norms[-1] / max(float(np.linalg.norm(direction)), 1e-300)
        modules = sg.SyntheticGradients(tuple({k: np.asarray(v) + scale * d[k] for k, v in p.items()}
                                              for p, d in zip(perfect.params, delta)), "linear",
                                        ("hidden", "label"), "fixed", np.zeros(1), 1)
        own = rule_updates("cdni", w, x, y, modules=modules)
        g_sg = _flat(own.weights)
        realised.append(float(np.linalg.norm(g_sg - g)) / max(norms[-1], 1e-300))
        inner.append(float(g_sg @ g) / max(norms[-1] ** 2, 1e-300))
        w = [a - lr * np.asarray(d) for a, d in zip(w, own.weights)]
    if len(losses) == len(norms):  # it ran all its steps: the final loss
        losses.append(float(rule_updates("bp", w, x, y).loss[0]))
    return np.array(losses), np.array(norms), np.array(realised), np.array(inner)


def _plot_tracking(result: CheckResult, ax):
    for i, (excess, rho) in enumerate(zip(result.details["excess_curves"], result.details["rho"])):
        ax.semilogy(np.maximum(excess, 1e-18), color=f"C{i % 10}", lw=1, label=f"rho = {rho:.1f}" if i < 3 else None)
    ax.axhline(TRACKING_EXCESS, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="step", ylabel="(L - L_ls) / (L_0 - L_ls)", title="SG that epsilon-tracks the gradient converges")
    ax.legend(fontsize=7)


@claim("sg.epsilon_tracking", source="Czarnecki et al. 2017 (Understanding synthetic gradients and DNIs: "
                                     "convergence of learning with SG that epsilon-tracks the true gradient)",
       statement="If along the whole run the synthetic gradients track the true ones, |g_SG - g| <= rho |g| at every "
                 "step with rho < 1, SG training of a deep linear network descends at every step and converges to "
                 "the solution of the original problem (the least-squares fit)",
       conditions="each instance an independent task: linear nets with 1-2 hidden layers (widths >= the input and "
                  "output widths, 3-8), whitened inputs (4 n0 samples), noisy linear targets, init std "
                  "0.7/sqrt(fan-in); every hidden layer taught by the engine's cDNI rule with the perfect module plus "
                  "a random parameter error rescaled at each step so that |g_SG - g| = rho |g|, rho = 0.2, 0.5, 0.8; "
                  "GD eta = 0.1 for up to 600 steps (stopped once |g| < 1e-12 |g_0|). Violation = max(relative "
                  "excess loss at the end / 1e-6, any loss increase / (1e-9 L), |realised rho - rho| / 1e-6 while "
                  "|g| > 1e-6 |g_0|, shortfall of <g_SG, g>/|g|^2 below 1 - rho / 1e-9); tolerance 1",
       rules=("cdni",), instances=9, quick_instances=3, hypothesis_examples=3, plot=_plot_tracking)
def check_epsilon_tracking(seed: int, n_instances: int) -> CheckResult:
    worst, curves, rhos = 0.0, [], []
    for i in range(n_instances):
        rng = _rng(seed, "sg.epsilon_tracking", i)
        sizes, x, y, weights = _deep_linear_task(rng)
        rho = TRACKING_LEVELS[i % len(TRACKING_LEVELS)]
        losses, norms, realised, inner = _tracked_run(rng, rho, weights, x, y, steps=TRACKING_STEPS,
                                                      lr=TRACKING_LR)
        best = least_squares_loss(x, y)
        resolved = realised[norms[: len(realised)] > RESOLVED * norms[0]]
        excess = (losses - best) / (losses[0] - best)
        rise = float(np.max(np.diff(losses) / losses[:-1]))
        terms = [excess[-1] / TRACKING_EXCESS, max(0.0, rise) / 1e-9,
                 float(np.max(np.abs(resolved - rho))) / 1e-6, max(0.0, 1.0 - rho - float(np.min(inner))) / 1e-9]
        values = [t if math.isfinite(t) else math.inf for t in terms]
        worst = max(worst, *values)
        curves.append(excess)
        rhos.append(rho)
    return CheckResult(n_instances, worst, 1.0, {"excess_curves": curves, "rho": rhos})


# --- deep linear networks trained through learned cDNI modules ------------------------------------------

#: Widths and schedule of the learned-module runs: full-batch GD, the modules regress the true gradient.
LEARNED_STEPS, LEARNED_LR, LEARNED_EXCESS = 400, 0.15, 1e-2


def _learned_task(rng: np.random.Generator):
    """An independent task for a 2-hidden-layer linear net with a bottleneck r < min(n0, nL): whitened inputs."""
    n0, n_out = int(rng.integers(5, 8)), int(rng.integers(4, 6))
    rank = int(rng.integers(2, 4))
    n = 4 * n0
    q, _ = np.linalg.qr(rng.normal(size=(n, n0)))
    x = math.sqrt(n) * q
    y = x @ rng.normal(size=(n0, n_out)) / math.sqrt(n0) + 0.3 * rng.normal(size=(n, n_out))
    return [n0, rank, rank, n_out], x, y


def reduced_rank_loss(x: np.ndarray, y: np.ndarray, rank: int) -> float:
    r"""The least loss of a rank-``rank`` linear map for whitened inputs (:math:`X^TX = N I`).

    With :math:`C = X^TY/N` the least-squares coefficients,
    :math:`\frac1{2N}|Y - XC'|^2 = L_{ls} + \tfrac12|C - C'|_F^2`, so the optimum truncates the SVD of
    :math:`C` (Eckart-Young): :math:`L_r = L_{ls} + \tfrac12\sum_{i > r}\sigma_i(C)^2`.
    """
    coef = x.T @ y / x.shape[0]
    s = np.linalg.svd(coef, compute_uv=False)
    return least_squares_loss(x, y) + 0.5 * float(np.sum(s[rank:] ** 2))


def learned_module_run(rng: np.random.Generator, *, steps: int = LEARNED_STEPS, lr: float = LEARNED_LR):
    """Train one deep linear net on its own task with ``cdni`` and jointly learned modules; relative excess loss.

    Returns the excess :math:`(L_t - L_{ls})/(L_0 - L_{ls})` at the recorded steps (every ``steps // 8``).
    """
    from sim.data.tasks import Dataset
    from sim.network import init_network
    from sim.train import train

    sizes, x, y = _learned_task(rng)
    data = Dataset(x, y, "regression")
    net = init_network(sizes, 1, seed=int(rng.integers(2**31)), scale=1.0)
    run = train(net, data, rule="cdni", steps=steps, lr=lr, record_every=steps // 8, progress=False,
                module_settings={"target": "true", "lr": lr})
    loss = run.metric("loss")[:, 0]
    best = reduced_rank_loss(x, y, sizes[1])
    return (loss - best) / (loss[0] - best)


@contextlib.contextmanager
def synthetic_signals_zeroed():
    """Sabotage: the ``cdni`` rule sends nothing to the hidden layers, which then never learn.

    The default sabotage (mixing the signal's units) still descends on these small bottleneck nets, and
    often reaches the optimum; with the hidden layers frozen the top layer alone cannot.
    """
    from dataclasses import replace

    from sim import rules as sim_rules

    saved = sim_rules.RULES["cdni"]
    original = saved.hidden_signal
    sim_rules.RULES["cdni"] = replace(saved, hidden_signal=lambda i, ctx: 0.0 * original(i, ctx))
    try:
        yield
    finally:
        sim_rules.RULES["cdni"] = saved


def _plot_learned(result: CheckResult, ax):
    for i, curve in enumerate(result.details["excess_curves"]):
        ax.semilogy(np.linspace(0, LEARNED_STEPS, len(curve)), np.maximum(curve, 1e-18), "o-", ms=3,
                    label="one task" if i == 0 else None, color="C0", alpha=0.6)
    ax.axhline(LEARNED_EXCESS, color="grey", ls="--", lw=0.8, label="tolerance")
    ax.set(xlabel="step", ylabel="(L - L_r) / (L_0 - L_r)", title="deep linear net through learned cDNI modules")
    ax.legend(fontsize=7)


@claim("sg.deep_linear_converges",
       source="Czarnecki et al. 2017 (Understanding synthetic gradients and DNIs: convergence of SG learning "
              "for deep linear models)",
       statement="A deep linear network whose hidden layers learn only through label-conditioned linear synthetic "
                 "gradient modules (cDNI), trained jointly with it, converges to the solution of the original "
                 "problem: through a bottleneck, the best reduced-rank fit (which the top layer alone cannot reach)",
       conditions="each instance an independent task: linear n0-r-r-nL nets (n0 5..7, nL 4..5, bottleneck r 2..3), "
                  "whitened inputs (4 n0 samples), noisy linear targets, Gaussian init of scale 1; the engine's cdni "
                  "rule with zero-init linear modules regressing the true gradient, module lr = net lr = 0.15, "
                  "full-batch GD for 400 steps; violation = the relative excess loss over the rank-r optimum "
                  "(Eckart-Young on the least-squares coefficients) at the end, "
                  "tolerance 1e-2",
       rules=("cdni",), instances=6, quick_instances=2, hypothesis_examples=2, sabotage=synthetic_signals_zeroed,
       plot=_plot_learned)
def check_deep_linear_converges(seed: int, n_instances: int) -> CheckResult:
    curves = [learned_module_run(_rng(seed, "sg.deep_linear_converges", i)) for i in range(n_instances)]
    finals = [float(c[-1]) for c in curves]
    worst = max(f if math.isfinite(f) else math.inf for f in finals)
    return CheckResult(n_instances, worst, LEARNED_EXCESS, {"excess_curves": curves})


# --- representations learned through synthetic gradients --------------------------------------------------

#: tanh 10-24-24-4 nets, 128 samples of a teacher classification task, softmax cross-entropy.
REP_SIZES, REP_SAMPLES, REP_STEPS, REP_LR = (10, 24, 24, 4), 128, 800, 0.3
#: cDNI must reach this training accuracy, and its layers' mean linear CKA with BP's stay below this.
REP_ACCURACY, REP_MAX_CKA = 0.95, 0.97


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    r"""Linear centred kernel alignment of two representations ``(N, p)`` and ``(N, q)`` of the same N inputs.

    .. math:: \mathrm{CKA}(A, B) = \frac{|\bar A^T \bar B|_F^2}{|\bar A^T\bar A|_F\,|\bar B^T\bar B|_F},

    :math:`\bar A` the column-centred :math:`A` (Kornblith et al. 2019): 1 for representations equal up to
    a rotation and a scale, smaller the more they differ.
    """
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return float(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def _hidden_codes(weights, x: np.ndarray) -> list:
    codes, h = [], x
    for w in weights[:-1]:
        h = np.tanh(h @ np.asarray(w)[0].T)
        codes.append(h)
    return codes


def representation_run(rng: np.random.Generator) -> dict:
    """BP and bootstrapped cDNI from the same init on one task: per-layer CKA and the training accuracies."""
    from sim.data import teacher_classification
    from sim.network import init_network
    from sim.train import train

    task_seed, init_seed = (int(v) for v in rng.integers(2 ** 31, size=2))
    data = teacher_classification(REP_SAMPLES, seed=task_seed, n_inputs=REP_SIZES[0], n_classes=REP_SIZES[-1])
    net = init_network(REP_SIZES, 1, seed=init_seed, scale=1.0, activation="tanh")
    out = {}
    for rule, settings in (("bp", None), ("cdni", {"target": "bootstrap", "lr": 0.05})):
        res = train(net, data, rule=rule, steps=REP_STEPS, lr=REP_LR, loss="ce", record_every=REP_STEPS,
                    progress=False, module_settings=settings)
        out[rule] = (_hidden_codes(res.network.weights, data.x), float(res.metric("accuracy")[-1, 0]))
    cka = [linear_cka(a, b) for a, b in zip(out["cdni"][0], out["bp"][0])]
    return {"cka": cka, "bp_accuracy": out["bp"][1], "cdni_accuracy": out["cdni"][1]}


@contextlib.contextmanager
def exact_synthetic_gradients():
    """Sabotage: the ``cdni`` rule sends BP's exact hidden signal (perfect synthetic gradients)."""
    from dataclasses import replace

    from sim import rules as sim_rules

    saved = sim_rules.RULES["cdni"]
    sim_rules.RULES["cdni"] = replace(saved, hidden_signal=sim_rules.RULES["bp"].hidden_signal)
    try:
        yield
    finally:
        sim_rules.RULES["cdni"] = saved


def _plot_representations(result: CheckResult, ax):
    cka = np.asarray(result.details["cka"])  # (tasks, layers)
    for i, row in enumerate(cka):
        ax.plot(np.arange(1, cka.shape[1] + 1), row, "o-", color="C0", alpha=0.6,
                label="one task" if i == 0 else "_nolegend_")
    ax.axhline(REP_MAX_CKA, color="grey", ls="--", lw=0.8, label="claim: mean CKA below this")
    ax.axhline(1.0, color="k", lw=0.5, label="identical representations")
    ax.set(xlabel="hidden layer", ylabel="linear CKA, cDNI vs BP (same init)", ylim=(0.5, 1.02),
           title="SG-trained layers learn other representations")
    ax.legend(fontsize=7)


@claim("sg.representations_differ",
       source="Czarnecki et al. 2017 (Understanding synthetic gradients and DNIs: SG leads to drastically "
              "different layer-wise representations); measured here",
       statement="A network trained through bootstrapped cDNI reaches the training accuracy of BP from the same "
                 "init, but its hidden layers end at different representations (mean linear CKA with BP's below "
                 "0.97; exact synthetic gradients give 1). In these small nets the difference is moderate (CKA "
                 "about 0.9-0.96), not the drastic one the paper reports for larger networks (registered as found)",
       conditions="each instance an independent task: tanh 10-24-24-4 nets, 128 samples of a random teacher "
                  "classification task, softmax cross-entropy, full-batch GD lr 0.3 for 800 steps from the same "
                  "Gaussian init; zero-init linear cDNI modules with bootstrapped targets (lr 0.05). Violation = "
                  "max(mean CKA / 0.97, 0.95 / cDNI training accuracy); tolerance 1",
       rules=("cdni",), instances=6, quick_instances=2, hypothesis_examples=3, sabotage=exact_synthetic_gradients,
       plot=_plot_representations)
def check_representations_differ(seed: int, n_instances: int) -> CheckResult:
    runs = [representation_run(_rng(seed, "sg.representations_differ", i)) for i in range(n_instances)]
    worst = 0.0
    for r in runs:
        v = max(float(np.mean(r["cka"])) / REP_MAX_CKA, REP_ACCURACY / max(r["cdni_accuracy"], 1e-12))
        worst = max(worst, v if math.isfinite(v) else math.inf)
    return CheckResult(n_instances, worst, 1.0, {"cka": np.array([r["cka"] for r in runs]),
                                                 "cdni_accuracy": np.array([r["cdni_accuracy"] for r in runs])})
