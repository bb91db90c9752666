r"""Claims about synthetic gradients (Jaderberg et al. 2016; Czarnecki et al. 2017; ours).

Setting and notation (:mod:`sim.synthetic`): the synthetic gradient
:math:`\mathrm{SG}_l` of hidden layer ``l`` stands in for the true per-sample
gradient :math:`g_l = \partial\ell/\partial h_l` (BP's hidden signal before
:math:`f'`); the rule ``sg`` (DNI) reads :math:`h_l`, ``cdni`` also the label
:math:`y`; modules are trained by regression on :math:`g_l`. Losses are ``mse``,
:math:`\ell = \frac12\lVert \hat y - y\rVert^2`, so for a prediction ``p`` the
true gradient is :math:`p - y`.

Every check goes through the engine's rules (:func:`sim.rules.rule_updates`),
so breaking the rule breaks the check; the checks whose rule acts on width-1
signals, or whose statement is about the module's inputs, carry their own
sabotage.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from sim import synthetic as sg
from sim.data.tasks import whitened_gaussian
from sim.rules import compute_updates, draw_feedback, rule_updates

from . import CheckResult, claim

EPS = float(np.finfo(np.float64).eps)

#: What the DNI modules of ``sg.dni_stall`` read (the sabotage lets them read the label).
DNI_INPUTS: tuple = ("hidden",)


def _rng(seed: int, j: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, j]))


def _relative(a, b) -> float:
    """``max|a - b| / max(max|b|, tiny)`` over a list of arrays."""
    num = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)), initial=0.0)) for u, v in zip(a, b))
    den = max(float(np.max(np.abs(np.asarray(v)), initial=0.0)) for v in b)
    return num / max(den, np.finfo(float).tiny)


def _random_net(rng, sizes, n_members, *, bias):
    weights = [rng.normal(0.0, 1.0 / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0.0, 0.5, size=(n_members, n)) for n in sizes[1:]] if bias else None
    return weights, biases


def _plot_violations(result: CheckResult, ax):
    values = np.asarray(result.details.get("violations", []), dtype=float)
    ax.semilogy(np.arange(1, values.size + 1), np.maximum(values, 1e-18), "o", label="violation of an instance")
    ax.axhline(result.tolerance, color="grey", ls="--", lw=0.8, label="tolerance")
    ax.set(xlabel="instance", ylabel="violation")
    ax.legend()


# --- Jaderberg et al. 2016 -------------------------------------------------------------------------

@claim("sg.perfect_and_zero_init", source="Jaderberg et al. 2016",
       statement="A synthetic gradient equal to the true gradient dL/dh_l gives exactly BP's update, and "
                 "zero-initialised modules (output layer zero) give an exactly zero first update of every hidden "
                 "layer while the output layer gets BP's",
       conditions="mse; deep linear nets (1-3 hidden layers) and one-hidden-layer relu/tanh nets, widths 2-6, "
                  "biases half the time, E = 2, B = 5; the perfect module is the cDNI module A = P^T P, C = -P^T, "
                  "c = P^T q of sim.synthetic.perfect_modules; violation = max(relative difference to BP, "
                  "largest zero-init hidden update) against 1e6 eps",
       rules=("cdni",), instances=20, quick_instances=6, hypothesis_examples=5, plot=_plot_violations)
def check_perfect_and_zero_init(seed: int, n_instances: int) -> CheckResult:
    violations = []
    for j in range(n_instances):
        rng = _rng(seed, j)
        if j % 2 == 0:
            activation, depth = "linear", int(rng.integers(2, 5))
        else:
            activation, depth = ("relu", "tanh")[int(rng.integers(0, 2))], 2
        sizes = [int(n) for n in rng.integers(2, 7, size=depth + 1)]
        bias = bool(rng.integers(0, 2))
        weights, biases = _random_net(rng, sizes, 2, bias=bias)
        x, y = rng.normal(size=(5, sizes[0])), rng.normal(size=(5, sizes[-1]))
        kwargs = dict(activation=activation, biases=biases)
        bp = rule_updates("bp", weights, x, y, **kwargs)
        perfect = rule_updates("cdni", weights, x, y, modules=sg.perfect_modules(weights, activation, biases=biases),
                               **kwargs)
        worst = _relative(perfect.weights + (perfect.biases or []), bp.weights + (bp.biases or []))
        scale = max(float(np.max(np.abs(w))) for w in bp.weights)
        for rule, inputs in (("sg", ("hidden",)), ("cdni", ("hidden", "label"))):
            for kind in sg.KINDS:
                modules = sg.init_modules(sizes, 2, seed=seed + j, kind=kind, inputs=inputs)
                zero = rule_updates(rule, weights, x, y, modules=modules, **kwargs)
                hidden = max((float(np.max(np.abs(w))) for w in zero.weights[:-1]), default=0.0)
                top = float(np.max(np.abs(zero.weights[-1] - bp.weights[-1])))
                worst = max(worst, (hidden + top) / scale)
        violations.append(worst)
    return CheckResult(n_instances, max(violations), 1e6 * EPS, {"violations": violations},
                       members=2 * n_instances)  # each instance a task with E = 2 networks


# --- Czarnecki et al. 2017: critical points --------------------------------------------------------

def _least_squares_modules(weights, upd, y, activation, *, label: bool):
    """Linear modules fitted by least squares to the true gradient on the batch, and their relative residual."""
    true = sg.true_gradients(weights, upd, activation)
    params, residual = [], 0.0
    y_members = np.broadcast_to(y, (weights[0].shape[0], *y.shape[-2:]))
    for i, g in enumerate(true):
        h = upd.forward.inputs[i + 1]
        layer = {"hidden": np.zeros((h.shape[0], g.shape[-1], h.shape[-1])),
                 "bias": np.zeros((h.shape[0], g.shape[-1]))}
        if label:
            layer["label"] = np.zeros((h.shape[0], g.shape[-1], y.shape[-1]))
        for m in range(h.shape[0]):
            feats = [h[m]] + ([y_members[m]] if label else []) + [np.ones((h.shape[1], 1))]
            design = np.concatenate(feats, axis=1)
            coef = np.linalg.lstsq(design, g[m], rcond=None)[0].T  # (n, features)
            n_h = h.shape[-1]
            layer["hidden"][m] = coef[:, :n_h]
            if label:
                layer["label"][m] = coef[:, n_h:n_h + y.shape[-1]]
            layer["bias"][m] = coef[:, -1]
            fit = design @ coef.T
            residual = max(residual, float(np.linalg.norm(fit - g[m]) / max(np.linalg.norm(g[m]), 1e-300)))
        params.append(layer)
    inputs = ("hidden", "label") if label else ("hidden",)
    modules = sg.SyntheticGradients(tuple(params), "linear", inputs, "fixed", np.zeros(weights[0].shape[0]), 1)
    return modules, residual


@claim("sg.linear_critical_points", source="Czarnecki et al. 2017; ours in this form",
       statement="With the mse loss and a linear network above hidden layer l the true gradient "
                 "g_l = P^T(P h_l + q - y) is linear in (h_l, y): a label-conditioned linear module fitted by least "
                 "squares represents it with zero residual, so wherever the modules sit at their least-squares "
                 "optimum the cDNI update equals BP's gradient, and the joint fixed points are exactly the critical "
                 "points of L (critical points preserved); a module without the label leaves a residual",
       conditions="deep linear nets with 1-3 hidden layers of width 2-6, random weights, N = 40 samples of non-white "
                  "Gaussian inputs and targets T x + noise (noise 0.5); least squares on [h, y, 1] per member; "
                  "violation = max(relative difference of the cDNI update to BP, relative LS residual) against 1e-8",
       rules=("cdni",), instances=12, quick_instances=4, hypothesis_examples=4, plot=_plot_violations)
def check_linear_critical_points(seed: int, n_instances: int) -> CheckResult:
    violations, dni_residuals = [], []
    for j in range(n_instances):
        rng = _rng(seed, j)
        depth = int(rng.integers(2, 5))
        sizes = [int(n) for n in rng.integers(2, 7, size=depth + 1)]
        weights, _ = _random_net(rng, sizes, 2, bias=False)
        mix = rng.normal(size=(sizes[0], sizes[0]))
        x = rng.normal(size=(40, sizes[0])) @ mix
        y = x @ rng.normal(size=(sizes[0], sizes[-1])) / np.sqrt(sizes[0]) + 0.5 * rng.normal(size=(40, sizes[-1]))
        bp = rule_updates("bp", weights, x, y)
        fitted, residual = _least_squares_modules(weights, bp, y, "linear", label=True)
        cdni = compute_updates("cdni", weights, x, y, modules=fitted)
        violations.append(max(_relative(cdni, bp.weights), residual))
        dni_residuals.append(_least_squares_modules(weights, bp, y, "linear", label=False)[1])
    return CheckResult(n_instances, max(violations), 1e-8,
                       {"violations": violations, "dni_relative_residual": dni_residuals},
                       members=2 * n_instances)  # each instance a task with E = 2 networks


# --- Czarnecki et al. 2017: linear regression through a module -------------------------------------

def _regression_problem(rng, n_inputs, n_outputs, n_samples, noise):
    """Zero-mean data, noisy targets and their least-squares solution ``W_LS`` ``(k, n)``.

    The teacher has singular values in ``[0.8, 1.2]``, so that the outputs are not
    nearly collinear (the module's features ``(p, y)`` stay well conditioned).
    """
    x = rng.normal(size=(n_samples, n_inputs))
    x -= x.mean(axis=0)
    u = np.linalg.qr(rng.normal(size=(n_outputs, n_outputs)))[0]
    v = np.linalg.qr(rng.normal(size=(n_inputs, n_outputs)))[0]
    teacher = u @ np.diag(rng.uniform(0.8, 1.2, size=n_outputs)) @ v.T
    y = x @ teacher.T + noise * rng.normal(size=(n_samples, n_outputs))
    y -= y.mean(axis=0)
    return x, y, np.linalg.lstsq(x, y, rcond=None)[0].T


def _readout(w1, k):
    return [w1, np.broadcast_to(np.eye(k), (w1.shape[0], k, k)).copy()]


REGRESSION_WIDTHS = (2, 1, 3)


@claim("sg.cdni_regression", source="Czarnecki et al. 2017",
       statement="Linear regression p = W x trained only through a cDNI module s = A p + B y + c (trained on the "
                 "true gradient p - y) converges to the least-squares solution, with (A, B, c) -> (I, -I, 0); for "
                 "one output (a, b, c) -> (1, -1, 0)",
       conditions="zero-mean Gaussian inputs (n = 4, N = 64), teacher singular values in [0.8, 1.2], noisy targets "
                  "(noise 0.7; without noise p and y are collinear at the solution and only A + B -> 0), k = 2, 1, 3 "
                  "outputs in turn, random W(0), zero module, full batch, lr = 0.2 for W and the module, 1500 steps; "
                  "violation = max(relative distance to W_LS, max|A - I|, max|B + I|, max|c|) against 1e-6",
       rules=("cdni",), instances=6, quick_instances=3, hypothesis_examples=2, plot=_plot_violations)
def check_cdni_regression(seed: int, n_instances: int) -> CheckResult:
    violations = []
    for j in range(n_instances):
        rng = _rng(seed, j)
        k = REGRESSION_WIDTHS[j % len(REGRESSION_WIDTHS)]
        x, y, w_ls = _regression_problem(rng, 4, k, 64, 0.7)
        modules = sg.init_modules((4, k, k), 1, inputs=("hidden", "label"), lr=0.2)
        w0 = rng.normal(0.0, 0.5, size=(1, k, 4))
        run = sg.train_fixed_readout(_readout(w0, k), x, y, modules, rule="cdni", lr=0.2, steps=1500,
                                     record_every=1500)
        p = run.modules.params[0]
        eye = np.eye(k)
        violations.append(max(_relative([run.weights[0][0]], [w_ls]), float(np.max(np.abs(p["hidden"][0] - eye))),
                              float(np.max(np.abs(p["label"][0] + eye))), float(np.max(np.abs(p["bias"])))))
    return CheckResult(n_instances, max(violations), 1e-6, {"violations": violations})


# --- ours: DNI without the label can stall ---------------------------------------------------------

@contextlib.contextmanager
def dni_reads_label():
    """Sabotage of ``sg.dni_stall``: the DNI modules read the label (they become cDNI)."""
    global DNI_INPUTS
    saved = DNI_INPUTS
    DNI_INPUTS = ("hidden", "label")
    try:
        yield
    finally:
        DNI_INPUTS = saved


def _dni_modules(sizes, n_members, lr=0.2):
    return sg.init_modules(sizes, n_members, inputs=DNI_INPUTS, lr=lr)


def _module_gradient_size(modules, upd, weights, y):
    grads, _ = sg.module_gradients(modules, upd, weights=weights, targets=y, activation="linear")
    return max(float(np.max(np.abs(g))) for layer in grads for g in layer.values())


def _ellipse_point(rng, sigma, w_ls):
    r"""A point of :math:`w^T\Sigma(w - w_{LS}) = 0` Sigma-orthogonal to w_LS.

    Its loss exceeds the minimum by :math:`\lVert w_{LS}\rVert_\Sigma^2/4`.
    """
    evals, evecs = np.linalg.eigh(sigma)
    half = evecs @ np.diag(evals ** -0.5) @ evecs.T  # Sigma^{-1/2}
    v = half @ rng.normal(size=w_ls.size)
    v -= (v @ sigma @ w_ls) / (w_ls @ sigma @ w_ls) * w_ls  # Sigma-orthogonal to w_LS
    v /= np.sqrt(v @ sigma @ v)
    return w_ls / 2 + 0.5 * np.sqrt(w_ls @ sigma @ w_ls) * v


@claim("sg.dni_stall", source="ours (following Czarnecki et al. 2017)",
       statement="Without the label (s = a p + c) every w with w^T Sigma (w - w_LS) = 0, together with a = c = 0, is a "
                 "joint fixed point of regression through a DNI module, so DNI stalls away from the solution when "
                 "the SG-trained layer is the predictor; in a two-layer linear net whose top layer learns from the "
                 "loss, every W1 with W2 at its optimum and A = c = 0 is a joint fixed point: the loss stalls at "
                 "min_W2 L(W1, W2), above the optimum for a bottleneck and at the optimum when the hidden layer is "
                 "wide enough (rank W1 = n_0) for the upper layer to compensate",
       conditions="(a) exact: zero-mean data, n = 3-5, N = 64, noisy targets, w on the ellipse, one engine step: "
                  "update and module gradient vanish to rounding while the loss gap is ||w_LS||_Sigma^2/4; "
                  "(b) simulated: DNI from a random w(0) with w(0)^T Sigma w_LS > 0, 2000 full-batch steps (lr 0.2, "
                  "module lr 0.2), ends within 1e-4 (relative) of the ellipse at distance > 0.05 ||w_LS||_Sigma "
                  "from w_LS; (c) exact: "
                  "two-layer nets [4, h, 3] with h = 2 (bottleneck) and h = 6 (wide), W2 the least-squares optimum: "
                  "fixed point to rounding, loss at the global optimum iff wide; violation = max of the normalised "
                  "residuals against 1e-6",
       sabotage=dni_reads_label, instances=8, quick_instances=3, hypothesis_examples=2, plot=_plot_violations)
def check_dni_stall(seed: int, n_instances: int) -> CheckResult:
    violations, gaps = [], []
    for j in range(n_instances):
        rng = _rng(seed, j)
        n = int(rng.integers(3, 6))
        x, y, w_ls = _regression_problem(rng, n, 1, 64, 0.7)
        w_ls = w_ls[0]
        sigma = x.T @ x / x.shape[0]
        norm2 = float(w_ls @ sigma @ w_ls)
        scale = float(np.mean(y * y))
        # (a) every point of the ellipse is a joint fixed point
        w = _ellipse_point(rng, sigma, w_ls)
        weights = _readout(w[None, None, :], 1)
        modules = _dni_modules((n, 1, 1), 1)
        upd = rule_updates("sg", weights, x, y, modules=modules)
        part_a = max(float(np.max(np.abs(upd.weights[0]))), _module_gradient_size(modules, upd, weights, y)) / scale
        gap = 0.5 * float((w - w_ls) @ sigma @ (w - w_ls))
        part_a = max(part_a, abs(gap - norm2 / 4) / norm2)
        # (b) the simulation stalls there
        w0 = rng.normal(size=n) / np.sqrt(n)
        if w0 @ sigma @ w_ls < 0:
            w0 = -w0
        run = sg.train_fixed_readout(_readout(w0[None, None, :], 1), x, y, _dni_modules((n, 1, 1), 1), rule="sg",
                                     lr=0.2, steps=2000, record_every=2000)
        w_end = run.weights[0][0, 0]
        on_ellipse = abs(float(w_end @ sigma @ (w_end - w_ls))) / norm2
        distance = math.sqrt(float((w_end - w_ls) @ sigma @ (w_end - w_ls)) / norm2)
        part_b = max(0.0, on_ellipse - 1e-4) + max(0.0, 0.05 - distance)
        gaps.append(distance)
        # (c) two-layer nets: any W1 with W2 at its optimum is a fixed point; wide layers compensate
        xw = whitened_gaussian(rng, 64, 4)
        teacher = rng.normal(size=(3, 4))
        yw = xw @ teacher.T
        part_c = 0.0
        for hidden in (2, 6):
            w1 = rng.normal(size=(1, hidden, 4)) / 2
            h = xw @ w1[0].T
            w2 = np.linalg.lstsq(h, yw, rcond=None)[0].T[None]
            net = [w1, w2]
            mods = _dni_modules((4, hidden, 3), 1)
            upd = rule_updates("sg", net, xw, yw, modules=mods)
            size = max(float(np.max(np.abs(u))) for u in upd.weights)
            size = max(size, _module_gradient_size(mods, upd, net, yw))
            loss = float(upd.loss[0])
            optimum = 0.5 * float(np.sum(np.sort(np.linalg.svd(teacher, compute_uv=False))[::-1][hidden:] ** 2))
            yscale = float(np.mean(np.sum(yw * yw, axis=1)))
            part_c = max(part_c, size / yscale)
            if hidden >= 4:  # wide: the stall is the global optimum (zero loss)
                part_c = max(part_c, loss / yscale)
            else:  # bottleneck: generically above the rank-constrained optimum
                part_c = max(part_c, max(0.0, 1e-3 - (loss - optimum) / yscale))
        violations.append(max(part_a, part_b, part_c))
    return CheckResult(n_instances, max(violations), 1e-6, {"violations": violations, "stall_distance": gaps})


# sg.epsilon_tracking lives in theory.claims.czarnecki (checked along whole trajectories).


# --- Czarnecki et al. 2017: the unified view -------------------------------------------------------

_DERIVATIVES = {"linear": lambda a: np.ones_like(a), "relu": lambda a: (a > 0).astype(float),
                "tanh": lambda a: 1.0 - np.tanh(a) ** 2}
_ACTIVATIONS = {"linear": lambda a: a, "relu": lambda a: np.maximum(a, 0.0), "tanh": np.tanh}


def direct_feedback_updates(weights, biases, x, y, feedback, *, mode: str, activation: str, loss: str):
    r"""DFA / FA updates computed directly from their formulas in plain numpy (an independent reference).

    Forward: :math:`a_l = W_l h_{l-1} + b_l`, :math:`h_l = f(a_l)` (the output is
    linear); output error :math:`e = \hat y - y` (mse) or
    :math:`\mathrm{softmax}(\hat y) - y` (ce). Hidden signals:
    :math:`\delta_l = (B_l e)\odot f'(a_l)` (``mode="dfa"``) or
    :math:`\delta_l = (B_{l+1}\delta_{l+1})\odot f'(a_l)` (``mode="fa"``). Updates:
    :math:`\Delta W_l = \frac1B\sum_b \delta_{l,b} h_{l-1,b}^T`, :math:`\Delta b_l = \frac1B\sum_b
    \delta_{l,b}`. Arrays carry the ensemble axis first; returns ``(dW, db)`` lists.
    """
    f, df = _ACTIVATIONS[activation], _DERIVATIVES[activation]
    n_layers = len(weights)
    h, pre = [np.broadcast_to(x, (weights[0].shape[0], *x.shape))], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        a = h[-1] @ np.swapaxes(w, 1, 2) + b[:, None, :]
        pre.append(a)
        h.append(a if i == n_layers - 1 else f(a))
    out = h[-1]
    if loss == "mse":
        e = out - y
    else:
        z = np.exp(out - out.max(axis=-1, keepdims=True))
        e = z / z.sum(axis=-1, keepdims=True) - y
    deltas = [None] * n_layers
    deltas[-1] = e
    for i in range(n_layers - 2, -1, -1):
        above = e if mode == "dfa" else deltas[i + 1]
        carried = above @ np.swapaxes(feedback[i], 1, 2)
        deltas[i] = carried * df(pre[i])
    n = x.shape[-2]
    return ([np.swapaxes(d, 1, 2) @ hp / n for d, hp in zip(deltas, h[:-1])], [d.mean(axis=1) for d in deltas])


@claim("sg.unified_view", source="Czarnecki et al. 2017",
       statement="A fixed synthetic-gradient module linear in the output error, SG_l = B_l e, reproduces DFA exactly; "
                 "bootstrapped through fixed feedback, SG_l = B_{l+1} delta_{l+1}, it reproduces FA exactly; "
                 "Kickback is DFA with all-ones feedback (SG_l = 1 e)",
       conditions="nets with 1-3 hidden layers of width 2-6, linear/relu/tanh, mse or ce, biases, E = 2, B = 4, "
                  "Gaussian feedback; violation = max |dW_sg - dW_ref| / (1 + |dW_ref|) over weights and biases, "
                  "where dW_ref is both the engine's own dfa/fa rule and an independent numpy computation of the "
                  "DFA/FA formulas (direct_feedback_updates), against 1e-12",
       rules=("sg",), instances=24, quick_instances=6, hypothesis_examples=5, plot=_plot_violations)
def check_unified_view(seed: int, n_instances: int) -> CheckResult:
    violations = []
    for j in range(n_instances):
        rng = _rng(seed, j)
        depth = int(rng.integers(2, 5))
        sizes = [int(n) for n in rng.integers(2, 7, size=depth + 1)]
        activation = ("linear", "relu", "tanh")[j % 3]
        loss = ("mse", "ce")[(j // 3) % 2]
        weights, biases = _random_net(rng, sizes, 2, bias=True)
        x = rng.normal(size=(4, sizes[0]))
        y = rng.normal(size=(4, sizes[-1])) if loss == "mse" else np.eye(sizes[-1])[rng.integers(0, sizes[-1], 4)]
        kwargs = dict(activation=activation, loss=loss, biases=biases)
        worst = 0.0
        pairs = []
        direct = dict(activation=activation, loss=loss)
        for rule, make in (("dfa", sg.dfa_modules), ("fa", sg.fa_modules)):
            feedback = draw_feedback(rule, sizes, 2, seed=seed + j)
            own = rule_updates("sg", weights, x, y, modules=make(feedback), **kwargs)
            pairs.append((rule_updates(rule, weights, x, y, feedback=feedback, **kwargs), own))
            ref = direct_feedback_updates(weights, biases, x, y, [np.asarray(f) for f in feedback], mode=rule, **direct)
            pairs.append((ref, own))
        ones = sg.kickback_feedback(sizes, 2)
        own = rule_updates("sg", weights, x, y, modules=sg.kickback_modules(sizes, 2), **kwargs)
        pairs.append((rule_updates("dfa", weights, x, y, feedback=ones, **kwargs), own))
        pairs.append((direct_feedback_updates(weights, biases, x, y, [np.ones_like(np.asarray(f)) for f in ones],
                                              mode="dfa", **direct), own))
        for ref, own in pairs:
            ref_all = (ref.weights + ref.biases) if hasattr(ref, "weights") else (ref[0] + ref[1])
            for a, b in zip(own.weights + own.biases, ref_all):
                a, b = np.asarray(a), np.asarray(b)
                worst = max(worst, float(np.max(np.abs(a - b) / (1.0 + np.abs(b)))))
        violations.append(worst)
    return CheckResult(n_instances, max(violations), 1e-12, {"violations": violations},
                       members=2 * n_instances)  # each instance a task with E = 2 networks
