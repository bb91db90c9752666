r"""Claims about BP and FA in linear networks (registered on import; see :mod:`theory.claims`).

Every check simulates with the engine (:func:`sim.train.train`, or a loop over
:func:`sim.rules.rule_updates` where it needs every step's update, or the
engine's own gradient flow :func:`theory.odes.integrate_rule_flow`) and compares
with theory: the closed forms of :mod:`theory.closed_forms`, the exact
step-by-step identities of gradient descent, or the first-order error
:math:`\eta\,\varepsilon(t)` of gradient descent around the flow
(:func:`theory.odes.euler_error_coefficient`). Tolerances come from the problem:
the float64 epsilon times the number of steps for identities, and the size
:math:`\eta \Lambda` of the next order for :math:`O(\eta)` statements, where
:math:`\Lambda = \max_t \lVert J(t)\rVert_2` is the largest rate of the flow
along the trajectory (the step's second-order term is :math:`\eta\Lambda`
times its first-order term).

Conventions (DESIGN.md): ``W_l`` is ``(E, n_l, n_{l-1})``, the FA feedback of the
two-layer net is ``B`` ``(n_1, n_2)``, the loss is
:math:`\frac{1}{2N}\sum_n\lVert W_2W_1x_n - y_n\rVert^2`, the update is
:math:`\Delta W = \operatorname{mean}_n \delta h^T` and gradient descent with step
:math:`\eta` for :math:`k` steps is the flow at :math:`t = \eta k`, along which

.. math:: \dot W_1 = G(\Sigma_{yx} - W_2W_1\Sigma_{xx}),\quad
          \dot W_2 = (\Sigma_{yx} - W_2W_1\Sigma_{xx})W_1^T,\quad G = W_2^T\ (\text{BP}),\ B\ (\text{FA}).
"""

from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

from sim import rules as sim_rules
from sim.backend import to_host
from sim.data import lillicrap_linear, linear_teacher
from sim.data.tasks import Dataset
from sim.lazy import lazy_module
from sim.metrics import angle
from sim.network import init_network, network_from_weights
from sim.rules import draw_feedback, rule_updates
from sim.train import train
from theory import closed_forms as cf
from theory.claims import CheckResult, claim
from theory.odes import covariances, euler_error_coefficient, integrate_rule_flow

XP = lazy_module("array_api_compat.numpy")  # get_namespace("numpy"), imported at the first use (sim.lazy)
EPS = float(np.finfo(np.float64).eps)

#: Step size of the mode simulations (the ratio check also runs at half of it).
MODE_LR = 0.02
#: Checkpoints per mode simulation.
MODE_POINTS = 30


# --- shared helpers ----------------------------------------------------------------------------------

def _rng(seed: int, tag: str, instance: int) -> np.random.Generator:
    """The random stream of one instance of one claim."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode()), int(instance)]))


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, k)))
    return q * np.sign(np.diag(r))


def _members(*matrices) -> list:
    """Host matrices -> engine arrays with one ensemble member."""
    return [XP.asarray(np.asarray(m, dtype=float)[None, ...]) for m in matrices]


def _train_at(weights, data: Dataset, rule: str, lr: float, checkpoints, feedback=None) -> list:
    """Train with the engine (full batch) and return the host weights at each checkpoint step.

    ``checkpoints`` starts at 0 and increases; each segment is one :func:`sim.train.train` call.
    """
    net = network_from_weights(weights)
    states = [[np.array(to_host(w)) for w in net.weights]]
    done = 0
    for step in checkpoints[1:]:
        n = int(step - done)
        res = train(net, data, rule=rule, steps=n, lr=lr, feedback=feedback, record_every=n, progress=False)
        net, done = res.network, step
        states.append([np.array(to_host(w)) for w in net.weights])
    return states


def _gd_with_sums(rule: str, weights, x, y, lr: float, steps: int, feedback=None, *, each_step=None):
    r"""Full-batch gradient descent with the engine's rule, keeping the exact second-order sums.

    Returns the final host weights and :math:`S_1 = \sum_k \Delta W_{1,k}\Delta W_{1,k}^T`,
    :math:`S_2 = \sum_k \Delta W_{2,k}^T \Delta W_{2,k}` (two-layer nets).
    ``each_step(k, weights, updates, s1)`` is called before every step.
    """
    w = [XP.asarray(np.asarray(a, dtype=float)) for a in weights]
    x, y = XP.asarray(x), XP.asarray(y)
    fb = None if feedback is None else [XP.asarray(np.asarray(f, dtype=float)) for f in feedback]
    s1 = np.zeros((w[0].shape[0], w[0].shape[1], w[0].shape[1]))
    s2 = np.zeros((w[1].shape[0], w[1].shape[2], w[1].shape[2]))
    for k in range(steps):
        upd = rule_updates(rule, w, x, y, feedback=fb, validate=(k == 0))
        g1, g2 = (np.asarray(u) for u in upd.weights)
        if each_step is not None:
            each_step(k, [np.asarray(a) for a in w], upd, s1)
        s1 += g1 @ np.swapaxes(g1, -1, -2)
        s2 += np.swapaxes(g2, -1, -2) @ g2
        w = [a - lr * g for a, g in zip(w, upd.weights)]
    return [np.asarray(a) for a in w], s1, s2


def _correlated_data(rng: np.random.Generator, n_in: int, n_out: int, n_samples: int) -> Dataset:
    """Inputs with a random, non-white covariance and noisy linear targets (any ``Sigma_xx``)."""
    mix = np.eye(n_in) + 0.6 * rng.normal(size=(n_in, n_in)) / np.sqrt(n_in)
    x = rng.normal(size=(n_samples, n_in)) @ mix
    x /= np.sqrt(np.linalg.norm(x.T @ x / n_samples, 2))
    teacher = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
    y = x @ teacher.T + 0.3 * rng.normal(size=(n_samples, n_out))
    return Dataset(x, y, "regression", {"teacher": teacher})


def _sizes(rng: np.random.Generator, low: int = 2, high: int = 6) -> list[int]:
    return [int(v) for v in rng.integers(low, high + 1, size=3)]


def _sym(a):
    return (a + np.swapaxes(a, -1, -2)) / 2


# --- the Saxe modes and their FA analogue -------------------------------------------------------------

@dataclass(frozen=True)
class _ModeInstance:
    """A whitened linear teacher ``U diag(s) V^T`` and a hidden frame ``R`` (n1 x r)."""

    data: Dataset
    s: np.ndarray
    U: np.ndarray
    V: np.ndarray
    R: np.ndarray

    def weights(self, a, c) -> list:
        """``W1 = R diag(a) V^T``, ``W2 = U diag(c) R^T`` as one-member engine arrays."""
        return _members(self.R @ np.diag(a) @ self.V.T, self.U @ np.diag(c) @ self.R.T)

    def strengths(self, states) -> np.ndarray:
        """``U^T W2 W1 V`` at every checkpoint, ``(T, r, r)``."""
        return np.array([self.U.T @ w[1][0] @ w[0][0] @ self.V for w in states])

    def outside(self, states) -> float:
        """Largest part of ``W2 W1`` outside ``span(U) x span(V)`` over the checkpoints."""
        pu, pv = self.U @ self.U.T, self.V @ self.V.T
        return max(float(np.linalg.norm((p := w[1][0] @ w[0][0]) - pu @ p @ pv)) for w in states)


def _mode_instance(rng: np.random.Generator) -> _ModeInstance:
    r = int(rng.integers(2, 4))
    n_in, hidden, n_out = (r + int(k) for k in rng.integers(0, 3, size=3))
    s = rng.uniform(1.5, 3.0) * rng.uniform(0.5, 0.75) ** np.arange(r)
    data = linear_teacher(n_in, n_out, s, 2 * n_in, seed=int(rng.integers(2 ** 31)))
    return _ModeInstance(data, s, data.info["U"], data.info["V"], _orthonormal(rng, hidden, r))


def _checkpoints(horizon: float, lr: float, n_points: int = MODE_POINTS, lr_grid: float = MODE_LR) -> list[int]:
    """Checkpoint steps at the times ``j * dt`` shared by the steps ``lr_grid`` and ``lr_grid / 2^m``."""
    per = max(1, math.ceil(horizon / n_points / lr_grid))
    every = int(round(lr_grid / lr)) * per
    return [j * every for j in range(n_points + 1)]


def _mode_field(s: float, b: float | None):
    r"""Field and Jacobian of one mode ``(a, c)``.

    BP (``b=None``): :math:`\dot a = c(s-ac)`; FA: :math:`\dot a = b(s-ac)`; both :math:`\dot c = a(s-ac)`.
    """
    def field(y):
        a, c = y
        r = s - a * c
        return np.array([(c if b is None else b) * r, a * r])

    def jacobian(y):
        a, c = y
        r = s - a * c
        if b is None:
            return np.array([[-c * c, r - a * c], [r - a * c, -a * a]])
        return np.array([[-b * c, -b * a], [r - a * c, -a * a]])

    return field, jacobian


def _first_order(s: float, b, a0: float, c0: float, times):
    """Flow ``u(t)``, first-order GD error coefficient of ``u = ac`` and the largest rate ``Lambda``."""
    field, jacobian = _mode_field(s, b)
    y, eps = euler_error_coefficient(field, jacobian, [a0, c0], times)
    e1 = y[:, 1] * eps[:, 0] + y[:, 0] * eps[:, 1]
    rate = max(float(np.linalg.norm(jacobian(state), 2)) for state in y)
    return y[:, 0] * y[:, 1], e1, rate


def _saxe_run(inst: _ModeInstance, u0: float, lr: float, horizon: float, n_points: int = MODE_POINTS):
    a0 = math.sqrt(u0)
    r = inst.s.size
    steps = _checkpoints(horizon, lr, n_points)
    states = _train_at(inst.weights(np.full(r, a0), np.full(r, a0)), inst.data, "bp", lr, steps)
    return np.array(steps) * lr, states


def _saxe_instance(seed: int, tag: str, i: int):
    rng = _rng(seed, tag, i)
    inst = _mode_instance(rng)
    u0 = float(10 ** rng.uniform(-4, -2))
    return inst, u0, 1.5 * float(cf.saxe_half_time(inst.s.min(), u0))


def _plot_modes(result: CheckResult, ax):
    d = result.details
    for j, s in enumerate(d["s"]):
        (line,) = ax.plot(d["fine_times"], d["fine_theory"][:, j], lw=1, label=f"theory s={s:.2f}")
        ax.plot(d["times"], d["simulated"][:, j], "o", ms=3, color=line.get_color())
    ax.set(xlabel="t = eta * steps", ylabel="mode strength u", title=d.get("title", ""))
    ax.legend(fontsize=7)


@claim("saxe.closed_form", source="Saxe et al. 2013",
       statement="BP from a small balanced init in the teacher's modes follows u(t) = s e^{2st}/(e^{2st}-1+s/u0) "
                 "per mode; GD differs by its first-order error eta*e1(t) up to a relative O(eta*Lambda)",
       conditions="two-layer linear net, whitened inputs, W1 = sqrt(u0) R V^T, W2 = sqrt(u0) U R^T with the teacher's "
                  "U, V; 2-3 modes, s in [0.37, 3], u0 in [1e-4, 1e-2], full-batch GD with eta = 0.02; violation = "
                  "max_t |u_GD - u - eta e1| / (eta max|e1|) divided by its allowance eta*Lambda",
       rules=("bp",), instances=8, quick_instances=3, hypothesis_examples=2, plot=_plot_modes)
def check_saxe_closed_form(seed: int, n_instances: int) -> CheckResult:
    worst, details = 0.0, {}
    for i in range(n_instances):
        inst, u0, horizon = _saxe_instance(seed, "saxe", i)
        times, states = _saxe_run(inst, u0, MODE_LR, horizon)
        simulated = np.diagonal(inst.strengths(states), axis1=1, axis2=2)
        for j, s in enumerate(inst.s):
            a0 = math.sqrt(u0)
            flow, e1, rate = _first_order(s, None, a0, a0, times)
            closed = cf.saxe_mode_strength(times, s, u0)
            remainder = np.max(np.abs(simulated[:, j] - closed - MODE_LR * e1)) / (MODE_LR * np.max(np.abs(e1)))
            worst = max(worst, remainder / (MODE_LR * rate))
        if i == 0:
            fine = np.linspace(0, times[-1], 200)
            details = {"s": inst.s, "times": times, "simulated": simulated, "fine_times": fine,
                       "fine_theory": cf.saxe_mode_strength(fine[:, None], inst.s[None, :], u0),
                       "title": f"BP modes, u0={u0:.1e}"}
    return CheckResult(n_instances, worst, 1.0, details)


@claim("saxe.gd_error_linear", source="Saxe et al. 2013; ours",
       statement="The GD error around Saxe's u(t) is linear in eta: its size at eta and eta/2 has ratio 2 up to "
                 "O(eta*Lambda)",
       conditions="as saxe.closed_form, at eta = 0.02 and 0.01 on the same time grid (error = root mean square over "
                  "the grid and the modes); violation = |ratio - 2| / (eta*Lambda)",
       rules=("bp",), instances=5, quick_instances=2, hypothesis_examples=2)
def check_saxe_gd_error_linear(seed: int, n_instances: int) -> CheckResult:
    worst, ratios = 0.0, []
    for i in range(n_instances):
        inst, u0, horizon = _saxe_instance(seed, "saxe", i)
        errors = []
        for lr in (MODE_LR, MODE_LR / 2):
            times, states = _saxe_run(inst, u0, lr, horizon)
            simulated = np.diagonal(inst.strengths(states), axis1=1, axis2=2)
            errors.append(np.sqrt(np.mean((simulated - cf.saxe_mode_strength(times[:, None], inst.s, u0)) ** 2)))
        rate = 2.0 * float(inst.s.max())  # max ||J|| of the balanced mode flow is 2 s_max (at u = s)
        ratio = errors[0] / errors[1]
        ratios.append(ratio)
        worst = max(worst, abs(ratio - 2.0) / (MODE_LR * rate))
    return CheckResult(n_instances, worst, 1.0, {"ratios": np.array(ratios)})


def _half_time(times, u, s):
    """Interpolated time of ``u = s/2``, linear in the logit ``ln(u/(s-u))`` (exact for the logistic)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(u / (s - u))
    k = int(np.argmax(u >= s / 2))
    if k == 0 or not np.all(np.isfinite(logit[k - 1:k + 1])):
        return math.nan
    return float(times[k - 1] + (0 - logit[k - 1]) * (times[k] - times[k - 1]) / (logit[k] - logit[k - 1]))


@claim("saxe.half_times", source="Saxe et al. 2013",
       statement="Larger singular values are learnt first: simulated half-times follow ln(s/u0 - 1)/(2s), "
                 "shifted by the first-order GD lag, in decreasing order of s",
       conditions="as saxe.closed_form with 40 checkpoints; half-times interpolated in the logit of u/s; the lag is "
                  "eta*e1(t_half)/u'(t_half); violation = |t_sim - t_half - lag| / (|lag| eta Lambda + eta^2 Lambda), "
                  "infinite if two modes cross s/2 out of order",
       rules=("bp",), instances=8, quick_instances=3, hypothesis_examples=2)
def check_saxe_half_times(seed: int, n_instances: int) -> CheckResult:
    worst, rows = 0.0, []
    for i in range(n_instances):
        inst, u0, horizon = _saxe_instance(seed, "saxe", i)
        times, states = _saxe_run(inst, u0, MODE_LR, horizon, n_points=40)
        simulated = np.diagonal(inst.strengths(states), axis1=1, axis2=2)
        sim_half = np.array([_half_time(times, simulated[:, j], s) for j, s in enumerate(inst.s)])
        closed = cf.saxe_half_time(inst.s, u0)
        for j, s in enumerate(inst.s):
            a0 = math.sqrt(u0)
            _, e1, rate = _first_order(s, None, a0, a0, np.linspace(0, closed[j], 50))
            lag = -MODE_LR * e1[-1] / (s * s / 2)  # u'(t_half) = 2 (s/2)(s/2) = s^2/2
            allowance = abs(lag) * MODE_LR * rate + MODE_LR ** 2 * rate
            worst = max(worst, abs(sim_half[j] - closed[j] - lag) / allowance)
        order = np.argsort(-inst.s)
        if not np.all(np.diff(sim_half[order]) > 0):
            worst = math.inf
        rows.append((inst.s, sim_half, closed))
    return CheckResult(n_instances, worst, 1.0, {"half_times": rows})


@claim("saxe.decoupled", source="Saxe et al. 2013",
       statement="From a decoupled init in the teacher's modes BP keeps the modes decoupled: U^T W2 W1 V stays "
                 "diagonal and W2 W1 stays in span(U) x span(V), to rounding",
       conditions="as saxe.closed_form; violation = (largest off-diagonal + outside part) / s_max against "
                  "steps * eps * max width",
       rules=("bp",), instances=8, quick_instances=3, hypothesis_examples=2)
def check_saxe_decoupled(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance = 0.0, 0.0
    for i in range(n_instances):
        inst, u0, horizon = _saxe_instance(seed, "saxe", i)
        times, states = _saxe_run(inst, u0, MODE_LR, horizon)
        m = inst.strengths(states)
        off = np.max(np.abs(m - np.einsum("tj,jk->tjk", np.diagonal(m, axis1=1, axis2=2), np.eye(m.shape[1]))))
        worst = max(worst, (off + inst.outside(states)) / inst.s.max())
        steps = round(times[-1] / MODE_LR)
        tolerance = max(tolerance, steps * EPS * max(inst.data.n_inputs, inst.R.shape[0], inst.data.n_outputs))
    return CheckResult(n_instances, worst, tolerance)


def _fa_mode_instance(seed: int, i: int):
    rng = _rng(seed, "fa.modes", i)
    inst = _mode_instance(rng)
    b = rng.uniform(0.5, 1.5, size=inst.s.size) * rng.choice([-1.0, 1.0], size=inst.s.size)
    feedback = [XP.asarray((inst.R @ np.diag(b) @ inst.U.T)[None, ...])]
    return inst, b, feedback, 1.5 * float(np.max(cf.fa_mode_half_time(inst.s, b)))


@claim("fa.mode_dynamics", source="ours (FA analogue of Saxe et al. 2013)",
       statement="FA from zero with B = R diag(b) U^T keeps the teacher's modes decoupled and each follows "
                 "a' = b(s - ac), c' = a(s - ac), i.e. u = s v^3 with F(v) = (2bs)^{2/3} t/2 (no plateau); GD differs "
                 "by eta*e1(t) up to a relative O(eta*Lambda)",
       conditions="two-layer linear net, whitened inputs, W1 = W2 = 0, |b| in [0.5, 1.5] of either sign, eta = 0.02; "
                  "violation = max(remainder / (eta Lambda), (off-diagonal + outside part) / (s_max steps eps width))",
       rules=("fa",), instances=8, quick_instances=3, hypothesis_examples=2, plot=_plot_modes)
def check_fa_mode_dynamics(seed: int, n_instances: int) -> CheckResult:
    worst, details = 0.0, {}
    for i in range(n_instances):
        inst, b, feedback, horizon = _fa_mode_instance(seed, i)
        r = inst.s.size
        steps = _checkpoints(horizon, MODE_LR)
        states = _train_at(inst.weights(np.zeros(r), np.zeros(r)), inst.data, "fa", MODE_LR, steps, feedback)
        times = np.array(steps) * MODE_LR
        m = inst.strengths(states)
        simulated = np.diagonal(m, axis1=1, axis2=2)
        for j, s in enumerate(inst.s):
            flow, e1, rate = _first_order(s, b[j], 0.0, 0.0, times)
            closed = cf.fa_mode_strength(times, s, b[j])
            remainder = np.max(np.abs(simulated[:, j] - closed - MODE_LR * e1)) / (MODE_LR * np.max(np.abs(e1)))
            worst = max(worst, remainder / (MODE_LR * rate))
        off = np.max(np.abs(m - np.einsum("tj,jk->tjk", simulated, np.eye(r)))) + inst.outside(states)
        width = max(inst.data.n_inputs, inst.R.shape[0], inst.data.n_outputs)
        worst = max(worst, off / inst.s.max() / (steps[-1] * EPS * width))
        if i == 0:
            fine = np.linspace(0, times[-1], 200)
            details = {"s": inst.s, "b": b, "times": times, "simulated": simulated, "fine_times": fine,
                       "fine_theory": cf.fa_mode_strength(fine[:, None], inst.s[None, :], b[None, :]),
                       "title": "FA modes from zero"}
    return CheckResult(n_instances, worst, 1.0, details)


# --- conservation laws -------------------------------------------------------------------------------

def _conservation_instance(seed: int, tag: str, i: int, *, zero_init: bool = False):
    rng = _rng(seed, tag, i)
    n_in, hidden, n_out = _sizes(rng)
    data = _correlated_data(rng, n_in, n_out, 3 * n_in + 2)
    if zero_init:
        w = [np.zeros((1, hidden, n_in)), np.zeros((1, n_out, hidden))]
    else:
        scale = rng.uniform(0.3, 1.0)
        w = [scale * rng.normal(size=(1, hidden, n_in)) / np.sqrt(n_in),
             scale * rng.normal(size=(1, n_out, hidden)) / np.sqrt(hidden)]
    feedback = rng.normal(size=(1, hidden, n_out)) / np.sqrt(n_out)
    return data, w, feedback, int(rng.integers(150, 300))


CONSERVATION_LR = 0.02


@claim("bp.balancedness", source="Saxe et al. 2013; Arora et al. 2018",
       statement="BP conserves W1 W1^T - W2^T W2 under gradient flow; GD drifts by exactly "
                 "eta^2 sum_k (dW1 dW1^T - dW2^T dW2)_k, i.e. O(eta) at fixed t",
       conditions="two-layer linear net, any input covariance, random init, full-batch GD with eta = 0.02 for 150-300 "
                  "steps; violation = residual of the exact GD identity relative to the weights' squared norms",
       rules=("bp",), instances=20, quick_instances=8, hypothesis_examples=5)
def check_bp_balancedness(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance, drifts = 0.0, 0.0, []
    for i in range(n_instances):
        data, w, _, steps = _conservation_instance(seed, "bp.balancedness", i)
        (v1, v2), s1, s2 = _gd_with_sums("bp", w, data.x, data.y, CONSERVATION_LR, steps)
        before = w[0] @ np.swapaxes(w[0], 1, 2) - np.swapaxes(w[1], 1, 2) @ w[1]
        after = v1 @ np.swapaxes(v1, 1, 2) - np.swapaxes(v2, 1, 2) @ v2
        scale = sum(float(np.sum(a * a)) for a in (*w, v1, v2))
        residual = np.linalg.norm(after - before - CONSERVATION_LR ** 2 * (s1 - s2)) / scale
        worst = max(worst, residual)
        tolerance = max(tolerance, 8 * steps * EPS)
        drifts.append(np.linalg.norm(after - before) / CONSERVATION_LR)
    return CheckResult(n_instances, worst, tolerance, {"drift_over_eta": np.array(drifts)})


def _fa_q(w1, w2, feedback):
    bw = feedback @ w2
    return w1 @ np.swapaxes(w1, 1, 2) - bw - np.swapaxes(bw, 1, 2)


@claim("fa.conservation", source="ours (following Lillicrap et al. 2016)",
       statement="FA conserves Q = W1 W1^T - B W2 - W2^T B^T under gradient flow for any input covariance; "
                 "GD drifts by exactly eta^2 sum_k dW1_k dW1_k^T (positive semi-definite, O(eta) at fixed t)",
       conditions="two-layer linear net, B random Gaussian, non-white inputs, random init, full-batch GD with "
                  "eta = 0.02 for 150-300 steps; violation = residual of the exact GD identity relative to the "
                  "squared norms",
       rules=("fa",), instances=20, quick_instances=8, hypothesis_examples=5)
def check_fa_conservation(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance, drifts = 0.0, 0.0, []
    for i in range(n_instances):
        data, w, feedback, steps = _conservation_instance(seed, "fa.conservation", i)
        (v1, v2), s1, _ = _gd_with_sums("fa", w, data.x, data.y, CONSERVATION_LR, steps, [feedback])
        q0, q1 = _fa_q(*w, feedback), _fa_q(v1, v2, feedback)
        scale = sum(float(np.sum(a * a)) for a in (*w, v1, v2, feedback))
        worst = max(worst, np.linalg.norm(q1 - q0 - CONSERVATION_LR ** 2 * s1) / scale)
        tolerance = max(tolerance, 8 * steps * EPS)
        drifts.append(np.linalg.norm(q1 - q0) / CONSERVATION_LR)
    return CheckResult(n_instances, worst, tolerance, {"drift_over_eta": np.array(drifts)})


@claim("fa.zero_init_psd", source="ours (corollary of fa.conservation)",
       statement="FA from zero init keeps sym(B W2) = W1 W1^T / 2, which is positive semi-definite (under GD: "
                 "sym(B W2) = (W1 W1^T - P)/2 with P = eta^2 sum dW1 dW1^T, so its smallest eigenvalue is >= -|P|/2)",
       conditions="two-layer linear net, W1 = W2 = 0, B random Gaussian, non-white inputs, eta = 0.02; violation = "
                  "max(identity residual, excess negativity beyond |P|/2) relative to the squared norms",
       rules=("fa",), instances=20, quick_instances=8, hypothesis_examples=5)
def check_fa_zero_init_psd(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance, smallest = 0.0, 0.0, []
    for i in range(n_instances):
        data, w, feedback, steps = _conservation_instance(seed, "fa.zero_init_psd", i, zero_init=True)
        (v1, v2), s1, _ = _gd_with_sums("fa", w, data.x, data.y, CONSERVATION_LR, steps, [feedback])
        sym_bw = _sym(feedback @ v2)[0]
        p = CONSERVATION_LR ** 2 * s1[0]
        scale = sum(float(np.sum(a * a)) for a in (v1, v2, feedback))
        residual = np.linalg.norm(sym_bw - (v1[0] @ v1[0].T - p) / 2) / scale
        lowest = float(np.linalg.eigvalsh(sym_bw)[0])
        negativity = max(0.0, -lowest - np.linalg.norm(p, 2) / 2) / scale
        worst = max(worst, residual, negativity)
        tolerance = max(tolerance, 8 * steps * EPS)
        smallest.append(lowest / np.linalg.norm(sym_bw, 2))
    return CheckResult(n_instances, worst, tolerance, {"relative_smallest_eigenvalue": np.array(smallest)})


def within_90_violations(cos: float, predicted: float) -> tuple[float, float]:
    r"""The two violations of ``fa.hidden_within_90`` at one step.

    Returns :math:`|\cos\theta - \cos\theta_{pred}|` (the conservation identity)
    and :math:`\max(0, -\cos\theta)`, which is positive exactly when the angle
    :math:`\theta` between :math:`Be` and :math:`W_2^T e` exceeds 90 degrees. The
    identity alone allows :math:`\cos\theta` down to
    :math:`-e^T B^T P B e / (2c|Be||W_2^Te|)`, so the angle is checked itself.
    """
    return abs(cos - predicted), max(0.0, -cos)


@claim("fa.hidden_within_90", source="ours (corollary of fa.conservation; cf. Lillicrap et al. 2016)",
       statement="FA from zero with B^T B = c I: the hidden signal B e is within 90 degrees of BP's W2^T e at every "
                 "step, and its cosine obeys sum_b e^T W2 B e = (sum_b |W1^T B e|^2 - e^T B^T P B e)/(2c), "
                 "P = eta^2 sum dW1 dW1^T",
       conditions="two-layer linear net, W1 = W2 = 0, B = sqrt(c) x orthonormal columns (n1 >= n2), non-white "
                  "inputs, eta = 0.02, every step where W2 != 0; violation = max over steps of |cos - predicted cos| "
                  "and of -cos (positive exactly when the angle itself exceeds 90 degrees)",
       rules=("fa",), instances=12, quick_instances=6, hypothesis_examples=4)
def check_fa_hidden_within_90(seed: int, n_instances: int) -> CheckResult:
    worst, tolerance, largest = 0.0, 0.0, 0.0
    for i in range(n_instances):
        rng = _rng(seed, "fa.hidden_within_90", i)
        n_in, n_out = (int(v) for v in rng.integers(2, 6, size=2))
        hidden = n_out + int(rng.integers(0, 3))
        data = _correlated_data(rng, n_in, n_out, 3 * n_in + 2)
        c = float(rng.uniform(0.25, 2.0))
        feedback = math.sqrt(c) * _orthonormal(rng, hidden, n_out)[None, ...]
        steps = int(rng.integers(100, 200))
        found = []

        def each_step(k, w, upd, s1, feedback=feedback, c=c, found=found):
            w1, w2 = w
            e = np.asarray(upd.signals[-1])[0]  # (N, n2)
            fa_signal = np.asarray(upd.signals[0])[0]  # the rule's hidden signal (B e per sample)
            bp_signal = e @ w2[0]  # W2^T e per sample
            norm = np.linalg.norm(fa_signal) * np.linalg.norm(bp_signal)
            if norm == 0:
                return
            be = e @ feedback[0].T
            p = CONSERVATION_LR ** 2 * s1[0]
            correction = float(np.sum((be @ p) * be)) / (2 * c)
            predicted = (float(np.sum((be @ w1[0]) ** 2)) / (2 * c) - correction) / norm
            cos = float(np.sum(fa_signal * bp_signal)) / norm
            found.append((*within_90_violations(cos, predicted), math.degrees(math.acos(max(-1.0, min(1.0, cos))))))

        _gd_with_sums("fa", [np.zeros((1, hidden, n_in)), np.zeros((1, n_out, hidden))], data.x, data.y,
                      CONSERVATION_LR, steps, [feedback], each_step=each_step)
        if not found:
            return CheckResult(i + 1, math.inf, 0.0)
        worst = max(worst, max(max(f[0], f[1]) for f in found))
        largest = max(largest, max(f[2] for f in found))
        tolerance = max(tolerance, 64 * steps * EPS)
    return CheckResult(n_instances, worst, tolerance, {"largest_angle_deg": largest})


@claim("fa.moves_from_zero", source="ours (following Lillicrap et al. 2016)",
       statement="At W1 = W2 = 0 BP's update vanishes and BP never moves, while FA's first update is -B Sigma_yx and "
                 "its end-to-end map grows as W2 W1 = t^2 (t - eta)/2 Sigma_yx Sigma_yx^T B^T B Sigma_yx + O(t^6)",
       conditions="two-layer linear net, any input covariance, B random Gaussian, eta = 0.01; the cubic law is "
                  "checked at t = 5..20 steps, its allowance is the next order t^3 |B|^2 |Sigma_yx|^2 |Sigma_xx| "
                  "(relative); violation = max(BP's largest weight, first-update residual / (eps width), "
                  "relative cubic-law error / allowance), tolerance 1",
       rules=("fa",), instances=20, quick_instances=8, hypothesis_examples=5)
def check_fa_moves_from_zero(seed: int, n_instances: int) -> CheckResult:
    lr = 0.01
    worst = 0.0
    for i in range(n_instances):
        data, w, feedback, _ = _conservation_instance(seed, "fa.moves_from_zero", i, zero_init=True)
        sigma_xx, sigma_yx = covariances(data.x, data.y)
        fb = feedback[0]
        (b1, b2), _, _ = _gd_with_sums("bp", w, data.x, data.y, lr, 20)
        worst = max(worst, float(np.max(np.abs(b1))), float(np.max(np.abs(b2))))
        first = np.asarray(rule_updates("fa", _members(w[0][0], w[1][0]), data.x, data.y,
                                        feedback=[XP.asarray(feedback)]).weights[0])[0]
        width = max(fb.shape) + data.n_inputs
        worst = max(worst, np.linalg.norm(first + fb @ sigma_yx) / (np.linalg.norm(fb @ sigma_yx) * EPS * width * 8))
        kernel = sigma_yx @ sigma_yx.T @ fb.T @ fb @ sigma_yx
        rate = np.linalg.norm(fb, 2) ** 2 * np.linalg.norm(sigma_yx, 2) ** 2 * np.linalg.norm(sigma_xx, 2)
        for k in (5, 10, 20):
            (v1, v2), _, _ = _gd_with_sums("fa", w, data.x, data.y, lr, k, [feedback])
            t = k * lr
            predicted = t * t * (t - lr) / 2 * kernel
            relative = np.linalg.norm(v2[0] @ v1[0] - predicted) / np.linalg.norm(predicted)
            worst = max(worst, relative / (t ** 3 * rate))
    return CheckResult(n_instances, worst, 1.0)


# --- Lillicrap et al. (2016): the 30-20-10 linear task ---------------------------------------------------

LILLICRAP = {"n_samples": 200, "steps": 1000, "lr": 0.02, "init_scale": 0.5}
_LILLICRAP_CACHE: dict = {}


@dataclass(frozen=True)
class _Run:
    """What the Lillicrap checks read of one rule's runs: recorded metrics ``(records, E[, 1])`` and final weights."""

    steps: np.ndarray
    metrics: dict
    weights: list

    def metric(self, name: str) -> np.ndarray:
        return self.metrics[name]


def _lillicrap_tasks(seed: int, n_tasks: int):
    """``n_tasks`` independent 30-20-10 tasks (one teacher T each), stacked on the member axis: ``(E, N, n)``."""
    tasks = [lillicrap_linear(LILLICRAP["n_samples"], seed=int(np.random.SeedSequence([int(seed), 30, 20, 10, i])
                                                                   .generate_state(1)[0]))
             for i in range(n_tasks)]
    return np.stack([t.x for t in tasks]), np.stack([t.y for t in tasks])


def _descend_recorded(rule: str, weights, x, y, feedback, *, steps: int, lr: float, every: int) -> _Run:
    """Full-batch GD of every member on its own task with the engine's rule, recording FA's probe metrics."""
    w = [XP.asarray(np.asarray(to_host(a), dtype=float)) for a in weights]
    x, y = XP.asarray(x), XP.asarray(y)
    recorded, loss, signal, alignment = [], [], [], []
    for k in range(steps + 1):
        if k % every == 0 or k == steps:
            bp = rule_updates("bp", w, x, y, validate=(k == 0))
            fa = rule_updates("fa", w, x, y, feedback=feedback, validate=False)
            recorded.append(k)
            loss.append(np.asarray(bp.loss))
            signal.append(np.asarray(angle(fa.signals[0], bp.signals[0]))[:, None])
            alignment.append(np.asarray(angle(feedback[0], XP.matrix_transpose(w[1])))[:, None])
        if k == steps:
            break
        upd = rule_updates(rule, w, x, y, feedback=feedback, validate=False)
        w = [a - lr * g for a, g in zip(w, upd.weights)]
    metrics = {"loss": np.array(loss), "signal_angle": np.array(signal), "weight_alignment": np.array(alignment)}
    return _Run(np.array(recorded), metrics, [np.asarray(a) for a in w])


def _lillicrap_runs(seed: int, n_members: int):
    """FA and the BP-trained control on ``n_members`` independent 30-20-10 tasks, one member per task.

    Each member has its own teacher, init and feedback; the members run as one
    ensemble (the engine's batched matmuls, each member on its own data).
    Cached for the claims that share it, keyed on the rule objects in use (a
    sabotaged rule is a different object, so it never reuses a clean run).
    """
    key = (seed, n_members)
    rules_now = (sim_rules.RULES["fa"], sim_rules.RULES["bp"])
    hit = _LILLICRAP_CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], rules_now)):
        return hit[1]
    x, y = _lillicrap_tasks(seed, n_members)
    sizes = [x.shape[-1], 20, y.shape[-1]]
    net = init_network(sizes, n_members, seed=seed, scale=LILLICRAP["init_scale"])
    feedback = draw_feedback("fa", sizes, n_members, seed=seed)
    common = dict(steps=LILLICRAP["steps"], lr=LILLICRAP["lr"], every=50)
    fa = _descend_recorded("fa", net.weights, x, y, feedback, **common)
    bp = _descend_recorded("bp", net.weights, x, y, feedback, **common)
    out = (Dataset(x[0], y[0], "regression"), (x, y), feedback, fa, bp)
    _LILLICRAP_CACHE.clear()
    _LILLICRAP_CACHE[key] = (rules_now, out)
    return out


@contextlib.contextmanager
def feedback_not_fixed(rule: str = "fa", seed: int = 0):
    """Sabotage: the rule's feedback matrices are redrawn at every use (same shapes and scale).

    FA's results rest on a *fixed* feedback that the forward weights can align
    with; the default sabotage (scaling and rolling the signal) is FA with another
    fixed feedback, for which the Lillicrap results hold as well, so these claims
    are broken this way instead. Only for tests of the claims.
    """
    saved = sim_rules.RULES[rule]
    rng = np.random.default_rng(seed)

    def hidden_signal(i, ctx):
        fresh = [XP.asarray(rng.normal(size=tuple(f.shape)) * float(np.std(np.asarray(f)))) for f in ctx.feedback]
        return saved.hidden_signal(i, replace(ctx, feedback=fresh))

    sim_rules.RULES[rule] = replace(saved, hidden_signal=hidden_signal)
    try:
        yield
    finally:
        sim_rules.RULES[rule] = saved


def _plot_lillicrap(result: CheckResult, ax):
    d = result.details
    for name, label in (("fa", "FA: B e vs W^T e"), ("bp", "BP control: B e vs W^T e")):
        v = d[f"{name}_angle"]
        ax.plot(d["steps"], v.mean(axis=1), label=label)
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="step", ylabel="hidden signal angle (degrees)", ylim=(0, 120), title="Lillicrap 30-20-10")
    ax.legend(fontsize=7)


@claim("lillicrap.learns", source="Lillicrap et al. 2016",
       statement="On the 30-20-10 linear task FA drives the training error to ~0 like BP: the loss falls below "
                 "1e-6 of its initial value by t = 20",
       conditions="Gaussian inputs, teacher T ~ U[-1, 1], 200 samples, Gaussian init of scale 0.5, B Gaussian, "
                  "full-batch GD with eta = 0.02 for 1000 steps; each instance an independent task (its own T, "
                  "inputs, init and B), one member per task",
       rules=("fa",), instances=16, quick_instances=6, hypothesis_examples=3, sabotage=feedback_not_fixed)
def check_lillicrap_learns(seed: int, n_instances: int) -> CheckResult:
    _, _, _, fa, bp = _lillicrap_runs(seed, n_instances)
    loss = fa.metric("loss")
    relative = loss[-1] / loss[0]
    worst = float(np.max(relative)) if np.all(np.isfinite(relative)) else math.inf
    return CheckResult(n_instances, worst, 1e-6, {"fa_relative_loss": relative,
                                                  "bp_relative_loss": bp.metric("loss")[-1] / bp.metric("loss")[0]})


@claim("lillicrap.alignment", source="Lillicrap et al. 2016",
       statement="FA's hidden update B e ends far below 90 degrees from BP's W^T e (below 60), while in a BP-trained "
                 "control the same fixed B stays at 90 degrees (within 4 null standard deviations)",
       conditions="as lillicrap.learns; FA: mean over seeds of the final angle over the training errors; control: "
                  "mean over seeds of the angle between B and W2^T, whose null std is (180/pi)/sqrt(n1 n2 E); "
                  "violation = max(FA angle / 60, |control - 90| / (4 null std)), tolerance 1",
       rules=("fa",), instances=16, quick_instances=6, hypothesis_examples=3, sabotage=feedback_not_fixed,
       plot=_plot_lillicrap)
def check_lillicrap_alignment(seed: int, n_instances: int) -> CheckResult:
    _, _, feedback, fa, bp = _lillicrap_runs(seed, n_instances)
    fa_angle = fa.metric("signal_angle")[..., 0]
    control = bp.metric("weight_alignment")[-1, :, 0]
    n1, n2 = np.asarray(feedback[0]).shape[1:]
    null_std = math.degrees(1.0 / math.sqrt(n1 * n2 * n_instances))
    fa_final = float(np.mean(fa_angle[-1]))
    worst = max(fa_final / 60.0, abs(float(np.mean(control)) - 90.0) / (4 * null_std))
    if not math.isfinite(fa_final):
        worst = math.inf
    return CheckResult(n_instances, worst, 1.0, {"steps": fa.steps, "fa_angle": fa_angle,
                                                 "bp_angle": bp.metric("signal_angle")[..., 0],
                                                 "fa_final_deg": fa_final, "control_deg": float(np.mean(control))})


@claim("lillicrap.ewbe_positive", source="Lillicrap et al. 2016",
       statement="After FA training e^T W B e > 0: on average over e (trace of W B > 0) and, in our simulations, "
                 "for every e (sym(W B) positive definite); not so in the BP-trained control",
       conditions="as lillicrap.learns (W = W2, 10 x 20; B 20 x 10); violation = -(smallest eigenvalue of "
                  "sym(W2 B)) / |W2 B|, which must be negative (tolerance 0)",
       rules=("fa",), instances=16, quick_instances=6, hypothesis_examples=3, sabotage=feedback_not_fixed)
def check_lillicrap_ewbe_positive(seed: int, n_instances: int) -> CheckResult:
    _, _, feedback, fa, bp = _lillicrap_runs(seed, n_instances)
    b = np.asarray(feedback[0])
    wb = np.asarray(fa.weights[1]) @ b
    lowest = np.linalg.eigvalsh(_sym(wb))[:, 0] / np.linalg.norm(wb, 2, axis=(1, 2))
    control = np.asarray(bp.weights[1]) @ b
    worst = float(np.max(-lowest)) if np.all(np.isfinite(lowest)) else math.inf
    return CheckResult(n_instances, worst, 0.0, {"relative_smallest_eigenvalue": lowest,
                                                 "trace": np.trace(wb, axis1=1, axis2=2),
                                                 "control_trace": np.trace(control, axis1=1, axis2=2)})


@claim("lillicrap.pseudoinverse", source="Lillicrap et al. 2016",
       statement="After FA training the hidden signal B e is closer to the pseudo-inverse signal W^+ e than to "
                 "BP's W^T e (angles over the training errors), for every seed",
       conditions="as lillicrap.learns; violation = max over seeds of angle(Be, W^+e) - angle(Be, W^T e) in degrees "
                  "(must be negative, tolerance 0)",
       rules=("fa",), instances=16, quick_instances=6, hypothesis_examples=3, sabotage=feedback_not_fixed)
def check_lillicrap_pseudoinverse(seed: int, n_instances: int) -> CheckResult:
    _, (x, y), feedback, fa, _ = _lillicrap_runs(seed, n_instances)
    w = [XP.asarray(a) for a in fa.weights]
    upd = rule_updates("bp", w, XP.asarray(x), XP.asarray(y))
    e = np.asarray(upd.signals[-1])  # (E, N, n2)
    b = np.asarray(feedback[0])
    w2 = np.asarray(w[1])
    be = e @ np.swapaxes(b, 1, 2)
    to_pinv = np.asarray(angle(XP.asarray(be), XP.asarray(e @ np.swapaxes(np.linalg.pinv(w2), 1, 2))))
    to_transpose = np.asarray(angle(XP.asarray(be), XP.asarray(e @ w2)))
    diff = to_pinv - to_transpose
    worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    return CheckResult(n_instances, worst, 0.0, {"angle_to_pinv": to_pinv, "angle_to_transpose": to_transpose})


# --- the scalar FA chain (Baldi et al. 2018) ------------------------------------------------------------

@contextlib.contextmanager
def feedback_sign_flipped(rule: str = "fa"):
    """Sabotage for width-1 hidden layers: the rule sends the error back through ``-B`` instead of ``B``.

    Rolling a width-1 signal does nothing and scaling it is FA with another
    feedback, so the default sabotage cannot break the scalar chain; feeding
    back through the wrong sign can (the predicted limit depends on ``c``).
    Only for tests of the claims.
    """
    saved = sim_rules.RULES[rule]

    def hidden_signal(i, ctx):
        return -saved.hidden_signal(i, ctx)

    sim_rules.RULES[rule] = replace(saved, hidden_signal=hidden_signal)
    try:
        yield
    finally:
        sim_rules.RULES[rule] = saved


def _chain_data(alpha: float, beta: float) -> Dataset:
    """Two samples with E[x^2] = beta and E[xy] = alpha exactly."""
    root = math.sqrt(beta)
    return Dataset(np.array([[root], [-root]]), np.array([[alpha / root], [-alpha / root]]), "regression")


def _chain_rate(a1: float, kappa: float, beta: float) -> float:
    """Convergence rate ``-g'(a1) = (beta/2)(3 a1^2 - kappa)`` at an equilibrium."""
    return beta / 2 * (3 * a1 * a1 - kappa)


def _chain_time(a1: float, limit: float, kappa: float, c: float, alpha: float, beta: float, rate: float) -> float:
    r"""Time the reduced flow :math:`\dot a_1 = g(a_1)` needs from ``a1`` to within 1e-11 of ``limit``.

    The transit to 10% of the initial distance, :math:`\int da_1/|g(a_1)|` (slow
    near a fold's ghost), plus :math:`\ln(10^{10})/\text{rate}` for the exponential approach.
    """
    from scipy.integrate import quad

    end = a1 + 0.9 * (limit - a1)
    if end == a1:
        transit = 0.0
    else:
        def slowness(a):
            return 1.0 / abs(c * alpha - beta / 2 * (a ** 3 - kappa * a))

        transit = quad(slowness, min(a1, end), max(a1, end), limit=200)[0]
    return transit + math.log(1e10) / rate


def _draw_chain(rng: np.random.Generator, n: int, *, scale: float, want_anti: bool | None, min_rate: float = 0.25):
    """Draw a task (alpha, beta) and ``n`` members (a1, a2, c) meeting the claim's conditions.

    Conditions: the limit's rate is at least ``min_rate``; on bistable level sets
    the start is at least 0.1 (relative) away from the unstable equilibrium;
    the predicted time to converge (:func:`_chain_time`) is at most 200;
    ``want_anti`` selects members predicted to end anti-aligned (True), aligned
    (False) or either (None). Returns the task, the members (with their
    predicted limits) and the time by which all have converged.
    """
    alpha = float(rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0]))
    beta = float(rng.uniform(0.5, 2.0))
    members, horizon = [], 0.0
    for _ in range(200 * n):
        if len(members) == n:
            break
        a1, a2 = rng.uniform(-scale, scale, size=2)
        c = float(rng.uniform(0.25, 2.0) * rng.choice([-1.0, 1.0]))
        kappa = a1 * a1 - 2 * c * a2
        roots = cf.scalar_chain_equilibria(kappa, c, alpha, beta)
        l1, l2 = (float(v) for v in cf.scalar_chain_limit(a1, a2, c, alpha, beta))
        rate = _chain_rate(l1, kappa, beta)
        if rate < min_rate:
            continue
        if roots.size == 3 and abs(a1 - roots[1]) < 0.1 * (1 + abs(roots[1])):
            continue
        if want_anti is not None and (c * l2 < 0) != want_anti:
            continue
        needed = _chain_time(a1, l1, kappa, c, alpha, beta, rate)
        if needed > 200:
            continue
        members.append((a1, a2, c, l1, l2))
        horizon = max(horizon, needed)
    if len(members) < n:
        raise RuntimeError("could not draw scalar-chain instances meeting the conditions")
    return alpha, beta, np.array(members), horizon


def _chain_flow(alpha: float, beta: float, members: np.ndarray, horizon: float):
    """Integrate the engine's FA flow of all members at once; the final ``(a1, a2)``."""
    e = members.shape[0]
    data = _chain_data(alpha, beta)
    w = [members[:, 0].reshape(e, 1, 1), members[:, 1].reshape(e, 1, 1)]
    feedback = [members[:, 2].reshape(e, 1, 1)]
    sol = integrate_rule_flow("fa", w, data.x, data.y, [0.0, horizon], feedback=feedback, rtol=1e-10, atol=1e-12)
    return sol.weights[0][-1].reshape(e), sol.weights[1][-1].reshape(e)


CHAIN_TOLERANCE = 1e-6


def _plot_chain(result: CheckResult, ax):
    d = result.details
    start, end, predicted = d["start"], d["end"], d["predicted"]
    ax.plot(start[:, 0], start[:, 1], "o", ms=3, color="grey", label="start")
    ax.plot(predicted[:, 0], predicted[:, 1], "s", ms=6, mfc="none", color="k", label="predicted limit")
    colors = np.where(d["anti"], "tab:red", "tab:blue")
    ax.scatter(end[:, 0], end[:, 1], c=colors, s=10, label="simulated limit (red: anti-aligned)")
    grid = np.linspace(-4, 4, 400)
    with np.errstate(divide="ignore"):
        ax.plot(grid, d["optimum"] / grid, lw=0.8, color="grey")
    ax.set(xlim=(-4, 4), ylim=(-4, 4), xlabel="a1", ylabel="a2", title="scalar FA chain")
    ax.legend(fontsize=6)


def _chain_check(seed: int, n_instances: int, tag: str, scale: float, want_anti: bool | None) -> CheckResult:
    worst, details = 0.0, {}
    for i in range(n_instances):
        rng = _rng(seed, tag, i)
        alpha, beta, members, horizon = _draw_chain(rng, 8, scale=scale, want_anti=want_anti)
        try:
            a1, a2 = _chain_flow(alpha, beta, members, horizon)
        except RuntimeError:
            return CheckResult(i + 1, math.inf, CHAIN_TOLERANCE)
        optimum = alpha / beta
        product = np.abs(a1 * a2 / optimum - 1)
        where = np.hypot(a1 - members[:, 3], a2 - members[:, 4]) / (1 + np.hypot(members[:, 3], members[:, 4]))
        anti = members[:, 2] * a2 < 0
        wrong_side = np.where(anti == (members[:, 2] * members[:, 4] < 0), 0.0, math.inf)
        if want_anti:
            wrong_side = np.maximum(wrong_side, np.where(anti, 0.0, math.inf))
        values = np.maximum(np.maximum(product, where), wrong_side)
        worst = max(worst, float(np.max(values)) if np.all(np.isfinite(values)) else math.inf)
        if i == 0:
            details = {"start": members[:, :2], "end": np.stack([a1, a2], axis=1), "predicted": members[:, 3:5],
                       "anti": anti, "optimum": optimum}
    return CheckResult(n_instances, worst, CHAIN_TOLERANCE, details)


@claim("scalar_chain.converges", source="Baldi et al. 2018",
       statement="The scalar FA chain x -> a1 x -> a2 a1 x with any feedback c != 0 from any init converges to "
                 "a1 a2 = alpha/beta (alpha = E[xy], beta = E[x^2]), at the point predicted by the conserved "
                 "a1^2 - 2 c a2",
       conditions="gradient flow of the engine's FA rule (solve_ivp, rtol 1e-10), |c| in [0.25, 2], |alpha/beta| in "
                  "[0.25, 4], init uniform in [-2, 2]^2, limit rate >= 0.25, starts not within 10% of the unstable "
                  "equilibrium, predicted convergence time <= 200 (integrated that long); violation = "
                  "max(|a1 a2 beta/alpha - 1|, relative distance to the predicted limit), infinite if the simulated "
                  "and predicted sides (sign of c a2) differ",
       rules=("fa",), instances=12, quick_instances=4, hypothesis_examples=3, sabotage=feedback_sign_flipped,
       plot=_plot_chain)
def check_scalar_chain_converges(seed: int, n_instances: int) -> CheckResult:
    return _chain_check(seed, n_instances, "scalar_chain.converges", 2.0, None)


@claim("scalar_chain.anti_aligned", source="Baldi et al. 2018; ours (the basin condition)",
       statement="From a large init the scalar FA chain can converge anti-aligned (c a2 < 0, its FA signal opposite "
                 "to BP's) yet at a1 a2 = alpha/beta: exactly when kappa = a1^2 - 2 c a2 > 3 (|c alpha|/beta)^{2/3} "
                 "and a1 starts beyond the middle root of a1^3 - kappa a1 = 2 c alpha/beta (below it if c alpha > 0, "
                 "above it if c alpha < 0)",
       conditions="as scalar_chain.converges with init uniform in [-4, 4]^2 and only starts predicted to end "
                  "anti-aligned; violation as there, infinite if a member ends aligned",
       rules=("fa",), instances=12, quick_instances=4, hypothesis_examples=3, sabotage=feedback_sign_flipped,
       plot=_plot_chain)
def check_scalar_chain_anti_aligned(seed: int, n_instances: int) -> CheckResult:
    return _chain_check(seed, n_instances, "scalar_chain.anti_aligned", 4.0, True)
