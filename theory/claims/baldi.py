r"""Baldi, Sadowski & Lu (2018), random back-propagation (FA) in linear networks: deep chains and one hidden layer.

**Deep scalar chains.** The chain :math:`x \to a_1 x \to \dots \to P x`, :math:`P = a_1\cdots a_L`, trained
by FA with fixed scalar feedbacks :math:`c_2, \dots, c_L` on data with :math:`\alpha = E[xy]`,
:math:`\beta = E[x^2]`, follows (with :math:`C_l = c_{l+1}\cdots c_L`, :math:`C_L = 1`)

.. math:: \dot a_l = C_l\, (a_1\cdots a_{l-1})\, (\alpha - \beta P).

Dividing consecutive equations, :math:`a_l \dot a_l = c_{l+1} \dot a_{l+1}`, so the :math:`L-1` quantities
:math:`\kappa_l = a_l^2 - 2 c_{l+1} a_{l+1}` are conserved (ours; the two-weight case is
:func:`theory.closed_forms.scalar_chain_invariant`). With positive feedbacks, a positive optimum
:math:`\alpha/\beta` and a small positive start, every :math:`\dot a_l` has the sign of
:math:`\alpha - \beta P > 0`: all weights grow, :math:`P` rises monotonically and the flow stops exactly at
:math:`P = \alpha/\beta`, at the first :math:`a_1 > a_1(0)` along the curve
:math:`a_{l+1} = (a_l^2 - \kappa_l)/(2c_{l+1})` where the product reaches it. The check integrates the
engine's FA flow and compares with that point (found by root bracketing on the curve).

**One hidden layer.** For :math:`n \to m \to n` with whitened inputs (:math:`\Sigma_{xx} = I`) and generic
feedback :math:`B` (:math:`m \times n`), an FA equilibrium needs :math:`R W_1^T = 0` and :math:`B R = 0`,
:math:`R = \Sigma_{yx} - W_2 W_1`. When :math:`m \ge n` this forces :math:`R = 0`: the global minimum
(the least-squares map). When :math:`m < n` it forces (ours) the end-to-end map

.. math:: W_2 W_1 = \Sigma_{yx}\, \Pi, \qquad \Pi = \text{projector onto } \operatorname{range}(\Sigma_{yx}^T B^T),

a rank-:math:`m` map fixed by :math:`B`, whose loss is above the reduced-rank (Eckart-Young) optimum for
generic :math:`B`: FA then does *not* reach the global minimum. Both are checked by running the engine's
FA rule (full-batch gradient descent) from a small init.
"""

from __future__ import annotations

import math

import numpy as np

from sim.rules import rule_updates
from theory.claims import CheckResult, claim
from theory.claims.linear import XP, _rng, feedback_not_fixed, feedback_sign_flipped
from theory.odes import integrate_rule_flow

# --- deep scalar chains -------------------------------------------------------------------------------------


def chain_invariants(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    r""":math:`\kappa_l = a_l^2 - 2 c_{l+1} a_{l+1}`, ``l = 1 .. L-1``; ``a`` is ``(..., L)``, ``c`` ``(..., L-1)``
    (the feedbacks :math:`c_2 .. c_L`)."""
    a, c = np.asarray(a, dtype=float), np.asarray(c, dtype=float)
    return a[..., :-1] ** 2 - 2 * c * a[..., 1:]


def _chain_curve(a1: float, kappa: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The weights on the conserved curve through ``a1``."""
    a = [a1]
    for k, cc in zip(kappa, c):
        a.append((a[-1] ** 2 - k) / (2 * cc))
    return np.array(a)


def chain_limit(a0: np.ndarray, c: np.ndarray, optimum: float) -> np.ndarray:
    r"""Where the FA flow of a deep scalar chain with positive feedbacks stops from a positive start below
    the optimum: the first :math:`a_1 > a_1(0)` on the conserved curve where :math:`\prod a_l` reaches
    ``optimum`` (scan, then ``brentq``)."""
    from scipy.optimize import brentq

    a0, c = np.asarray(a0, dtype=float), np.asarray(c, dtype=float)
    kappa = chain_invariants(a0, c)

    def gap(a1):
        return float(np.prod(_chain_curve(a1, kappa, c))) - optimum

    lo, step = float(a0[0]), 0.01
    if gap(lo) >= 0:
        raise ValueError("the start must be below the optimum")
    while True:
        hi = lo + step
        if gap(hi) >= 0:
            return _chain_curve(brentq(gap, lo, hi, xtol=1e-15, rtol=1e-15), kappa, c)
        lo, step = hi, step * 1.2
        if lo > 1e6:
            raise RuntimeError("no root on the conserved curve")


#: Relative tolerance on the limit (the flow is integrated with rtol 1e-10).
CHAIN_TOL = 1e-6


#: Members (starts and feedbacks) per deep-chain task.
CHAIN_MEMBERS = 6


def _deep_chain_instance(rng: np.random.Generator, members: int = CHAIN_MEMBERS):
    """One task (alpha, beta, depth) and members (start, feedbacks); the flow's end and the predicted limit."""
    depth = int(rng.integers(3, 7))
    beta = float(rng.uniform(0.5, 2.0))
    alpha = beta * float(rng.uniform(0.5, 2.0))
    a0 = rng.uniform(0.05, 0.3, size=(members, depth))
    c = rng.uniform(0.5, 2.0, size=(members, depth - 1))
    root = math.sqrt(beta)
    x, y = np.array([[root], [-root]]), np.array([[alpha / root], [-alpha / root]])
    weights = [a0[:, l].reshape(members, 1, 1) for l in range(depth)]
    feedback = [c[:, l].reshape(members, 1, 1) for l in range(depth - 1)]
    times = np.linspace(0.0, 400.0, 81)
    sol = integrate_rule_flow("fa", weights, x, y, times, feedback=feedback, rtol=1e-10, atol=1e-12, method="LSODA")
    path = np.stack([np.asarray(w).reshape(len(times), members) for w in sol.weights], axis=-1)  # (T, E, L)
    predicted = np.stack([chain_limit(a0[m], c[m], alpha / beta) for m in range(members)])
    return alpha / beta, path, predicted


@claim("baldi.deep_chain", source="Baldi, Sadowski & Lu 2018 (random backpropagation in linear chains); ours "
                                  "(the conserved quantities and the limit)",
       statement="FA on a scalar linear chain of L >= 3 weights with positive feedbacks, from a small positive init, "
                 "converges to a1...aL = alpha/beta (the global minimum), the product rising monotonically, at the "
                 "point fixed by the L-1 conserved quantities a_l^2 - 2 c_{l+1} a_{l+1}",
       conditions="each instance its own task (alpha = E[xy], beta = E[x^2] in [0.5, 2], alpha/beta in [0.5, 2]), "
                  "depth L in 3..6, 6 members with init uniform in [0.05, 0.3] and feedbacks c_l uniform in "
                  "[0.5, 2]; the engine's FA gradient flow (solve_ivp LSODA, rtol 1e-10) to t = 400; violation = max "
                  "relative distance of the end point to the predicted limit, and of the product to alpha/beta; "
                  "infinite if the product decreases by more than 1e-8 (relative, integration error) between "
                  "checkpoints",
       rules=("fa",), instances=8, quick_instances=3, hypothesis_examples=3, sabotage=feedback_sign_flipped)
def check_deep_chain(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    for i in range(n_instances):
        optimum, path, predicted = _deep_chain_instance(_rng(seed, "baldi.deep_chain", i))
        end = path[-1]
        product = np.prod(path, axis=-1)  # (T, E)
        if not np.all(np.isfinite(path)) or np.any(np.diff(product, axis=0) < -1e-8 * optimum):
            return CheckResult(i + 1, math.inf, CHAIN_TOL, tasks=i + 1, members=CHAIN_MEMBERS * (i + 1))
        where = np.linalg.norm(end - predicted, axis=-1) / np.linalg.norm(predicted, axis=-1)
        reached = np.abs(product[-1] / optimum - 1)
        worst = max(worst, float(np.max(where)), float(np.max(reached)))
    return CheckResult(n_instances, worst, CHAIN_TOL, tasks=n_instances, members=CHAIN_MEMBERS * n_instances)


# --- one hidden layer -------------------------------------------------------------------------------------

#: Step, maximum steps, init scale.
SHALLOW_LR, SHALLOW_STEPS, SHALLOW_INIT = 0.2, 6000, 0.01


def fa_equilibrium_map(sigma_yx: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""The end-to-end map at an FA equilibrium of ``n -> m -> n`` with whitened inputs: :math:`\Sigma_{yx}\Pi`,
    :math:`\Pi` the orthogonal projector onto :math:`\operatorname{range}(\Sigma_{yx}^T B^T)` (``b`` is ``(m, n)``)."""
    q, _ = np.linalg.qr(sigma_yx.T @ b.T)
    return sigma_yx @ q @ q.T


def _shallow_task(rng: np.random.Generator, bottleneck: bool):
    n = int(rng.integers(4, 7))
    m = int(rng.integers(2, n)) if bottleneck else int(rng.integers(n, n + 3))
    samples = 4 * n
    q, _ = np.linalg.qr(rng.normal(size=(samples, n)))
    x = math.sqrt(samples) * q  # whitened: x^T x / N = I
    y = x @ rng.normal(size=(n, n)).T / math.sqrt(n) + 0.3 * rng.normal(size=(samples, n))
    return n, m, x, y


def fa_shallow_run(rng: np.random.Generator, bottleneck: bool):
    """Train ``n -> m -> n`` by FA (engine, full batch) from a small init; returns
    ``(relative distance of W2 W1 to the target map, excess loss, reduced-rank optimum excess)``.

    The target map is :func:`fa_equilibrium_map`, which is the least-squares map :math:`\\Sigma_{yx}`
    without a bottleneck (``m >= n``). Excess losses are over the least-squares residual:
    :math:`\\tfrac12\\lVert\\Sigma_{yx} - M\\rVert_F^2`, and the best rank-m map's.
    """
    n, m, x, y = _shallow_task(rng, bottleneck)
    sigma_yx = y.T @ x / x.shape[0]
    b = rng.normal(size=(m, n)) / math.sqrt(n)
    target = fa_equilibrium_map(sigma_yx, b)
    w = [XP.asarray(SHALLOW_INIT * rng.normal(size=(1, m, n))), XP.asarray(SHALLOW_INIT * rng.normal(size=(1, n, m)))]
    feedback = [XP.asarray(b[None])]
    xd, yd = XP.asarray(x), XP.asarray(y)
    distance, product = math.inf, None
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(SHALLOW_STEPS):
            upd = rule_updates("fa", w, xd, yd, feedback=feedback, validate=(k == 0))
            w = [a - SHALLOW_LR * g for a, g in zip(w, upd.weights)]
            if (k + 1) % 20 == 0:
                product = np.asarray(w[1])[0] @ np.asarray(w[0])[0]
                distance = float(np.linalg.norm(product - target) / np.linalg.norm(target))
                if not distance < 1e3:
                    return math.inf, math.inf, 0.0
                if distance < 1e-10:
                    break
    s = np.linalg.svd(sigma_yx, compute_uv=False)
    excess = 0.5 * float(np.sum((sigma_yx - product) ** 2))
    return distance, excess, 0.5 * float(np.sum(s[m:] ** 2))


SHALLOW_TOL = 1e-7


@claim("baldi.shallow", source="Baldi, Sadowski & Lu 2018 (random backpropagation, one hidden layer); ours (the "
                               "bottleneck's limit)",
       statement="FA on a linear n -> m -> n network with generic B from a small init converges to the end-to-end "
                 "map Sigma_yx P, P the projector onto range(Sigma_yx^T B^T): with m >= n that is the global minimum "
                 "of the MSE (the least-squares map); with a bottleneck m < n it is a rank-m map fixed by B whose "
                 "loss is strictly above the global (reduced-rank) minimum, so there FA does not reach it. The limit "
                 "depends on "
                 "B only through its row space (mixing the hidden units' signals by an invertible matrix, the "
                 "registry's generic sabotage, leaves it unchanged; feedback redrawn at every step breaks it)",
       conditions="each instance its own task, even instances with a bottleneck (m in 2..n-1), odd ones without "
                  "(m in n..n+2): n in 4..6, 4n whitened inputs, linear teacher plus noise 0.3, init std 0.01, B "
                  "Gaussian std 1/sqrt(n); the engine's FA, full-batch GD eta = 0.2 for up to 6000 steps; violation "
                  "= |W2 W1 - Sigma_yx P| / |Sigma_yx P|, infinite on a bottleneck instance unless FA's excess loss "
                  "is strictly above the reduced-rank optimum's (their ratio below 1 - 1e-6; the ratios are in "
                  "the details), tolerance 1e-7",
       rules=("fa",), instances=10, quick_instances=3, hypothesis_examples=3, sabotage=feedback_not_fixed)
def check_shallow(seed: int, n_instances: int) -> CheckResult:
    worst, gaps = 0.0, []
    for i in range(n_instances):
        bottleneck = i % 2 == 0
        distance, excess, optimal = fa_shallow_run(_rng(seed, "baldi.shallow", i), bottleneck=bottleneck)
        worst = max(worst, distance)
        if bottleneck:
            ratio = optimal / excess if excess > 0 else math.inf
            gaps.append(ratio)
            if not ratio < 1 - 1e-6:  # FA's loss must stay strictly above the reduced-rank optimum
                worst = math.inf
    return CheckResult(n_instances, worst, SHALLOW_TOL, {"optimum_over_fa": np.array(gaps)})
