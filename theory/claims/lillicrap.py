r"""Lillicrap et al. (2016), supplementary results: Gauss-Newton steps with :math:`B = W^+`; the equilibrium.

For a linear read-out :math:`\hat y = W h` and the per-sample error :math:`e = \hat y - y`, the
Gauss-Newton step on the hidden activity minimises the linearised loss in the least-norm sense,

.. math:: \Delta h_{GN} = \arg\min_{\Delta h} \bigl\{|\Delta h| : |W(h - \Delta h) - y| \text{ minimal}\bigr\}
          = W^+ e ,

while BP sends :math:`W^T e` and FA sends :math:`B e`. With :math:`B = W^+` (which Lillicrap et al.
argue FA's forward weights approach, :math:`W \approx B^+`, from small weights), FA's hidden signal *is*
the Gauss-Newton step: FA then behaves like a second-order method on the hidden layer. The check
compares the engine's FA signal with a least-squares solve (``numpy.linalg.lstsq``) per sample.
"""

from __future__ import annotations

import numpy as np

from sim.rules import rule_updates
from theory.claims import CheckResult, claim
from theory.claims.linear import EPS, XP, _rng
from theory.claims.linear import feedback_not_fixed as _feedback_not_fixed


def gauss_newton_hidden_step(w2: np.ndarray, errors: np.ndarray) -> np.ndarray:
    r"""Least-norm solutions :math:`\Delta h` of :math:`W_2\,\Delta h = e` in the least-squares sense, per sample.

    ``w2`` is ``(n2, n1)``, ``errors`` ``(N, n2)``; returns ``(N, n1)`` from one ``lstsq`` call
    (an SVD-based solve, independent of ``pinv``).
    """
    solution, *_ = np.linalg.lstsq(w2, errors.T, rcond=None)
    return solution.T


@claim("lillicrap.gauss_newton", source="Lillicrap et al. 2016 (Supplementary Notes)",
       statement="With feedback B = W2^+ the FA hidden signal B e of a two-layer linear net is exactly the "
                 "Gauss-Newton step on the hidden layer (the least-norm least-squares solution of W2 dh = e), for "
                 "wide (n1 > n2) and narrow (n1 < n2) hidden layers alike",
       conditions="each instance an independent task: n0, n1, n2 in 2..7, Gaussian weights, inputs and targets, "
                  "16 samples; the engine's FA rule with feedback pinv(W2) against numpy lstsq per sample; "
                  "violation = max relative difference, tolerance 1e3 eps",
       rules=("fa",), instances=20, quick_instances=6, hypothesis_examples=5)
def check_gauss_newton(seed: int, n_instances: int) -> CheckResult:
    worst = 0.0
    for i in range(n_instances):
        rng = _rng(seed, "lillicrap.gauss_newton", i)
        n0, n1, n2 = (int(v) for v in rng.integers(2, 8, size=3))
        w1, w2 = rng.normal(size=(1, n1, n0)), rng.normal(size=(1, n2, n1))
        x, y = rng.normal(size=(16, n0)), rng.normal(size=(16, n2))
        feedback = [XP.asarray(np.linalg.pinv(w2[0])[None])]
        upd = rule_updates("fa", [XP.asarray(w1), XP.asarray(w2)], XP.asarray(x), XP.asarray(y), feedback=feedback)
        signal = np.asarray(upd.signals[0])[0]
        errors = np.asarray(upd.signals[-1])[0]
        reference = gauss_newton_hidden_step(w2[0], errors)
        scale = max(float(np.max(np.abs(reference))), np.finfo(float).tiny)
        worst = max(worst, float(np.max(np.abs(signal - reference))) / scale)
    return CheckResult(n_instances, worst, 1e3 * EPS)


# --- convergence to the equilibrium manifold --------------------------------------------------------------

#: Step, number of steps and the relative distance to the least-squares map that counts as reached.
EQUILIBRIUM_LR, EQUILIBRIUM_STEPS, EQUILIBRIUM_TOL = 0.2, 10000, 1e-6
#: Init std times sqrt(fan-in): not too small, so that no mode waits long on its plateau.
INIT = 0.1


def fa_end_to_end(rng: np.random.Generator, steps: int = EQUILIBRIUM_STEPS, lr: float = EQUILIBRIUM_LR):
    r"""Train a two-layer linear net with FA on its own noisy task; the relative distance of :math:`W_2W_1`
    to :math:`C_{ls}`.

    :math:`C_{ls}` is the least-squares map (``numpy.linalg.lstsq``): the equilibrium manifold of the
    FA flow in a linear network is :math:`\{W_2 W_1 \Sigma_{xx} = \Sigma_{yx}\}`, where the output error
    is orthogonal to the inputs and every FA update vanishes.
    """
    import math

    n0, n2 = int(rng.integers(6, 10)), int(rng.integers(2, 4))
    n1 = int(rng.integers(n2, n0))  # n2 <= n1 < n0: W1 has a null space, the top layer alone cannot fit
    n = 4 * n0
    q, _ = np.linalg.qr(rng.normal(size=(n, n0)))
    x = math.sqrt(n) * q
    y = x @ rng.normal(size=(n0, n2)) / math.sqrt(n0) + 0.3 * rng.normal(size=(n, n2))
    c_ls = np.linalg.lstsq(x, y, rcond=None)[0].T
    w = [XP.asarray(INIT * rng.normal(size=(1, n1, n0)) / math.sqrt(n0)),
         XP.asarray(INIT * rng.normal(size=(1, n2, n1)) / math.sqrt(n1))]
    feedback = [XP.asarray(rng.normal(size=(1, n1, n2)) / math.sqrt(n2))]
    xd, yd = XP.asarray(x), XP.asarray(y)
    distance = math.inf
    with np.errstate(over="ignore", invalid="ignore"):  # a broken rule may diverge: reported as inf below
        for k in range(steps):
            upd = rule_updates("fa", w, xd, yd, feedback=feedback, validate=(k == 0))
            w = [a - lr * g for a, g in zip(w, upd.weights)]
            if (k + 1) % 10 == 0 or k + 1 == steps:  # stop once well inside the tolerance (deterministic run)
                product = np.asarray(w[1])[0] @ np.asarray(w[0])[0]
                distance = float(np.linalg.norm(product - c_ls) / np.linalg.norm(c_ls))
                if distance < 1e-3 * EQUILIBRIUM_TOL:
                    break
                if not distance < 1e3:  # diverging
                    return math.inf
    return distance


@claim("lillicrap.equilibrium", source="Lillicrap et al. 2016 (Supplementary Notes: convergence in linear networks)",
       statement="FA in a two-layer linear network converges to the equilibrium manifold W2 W1 Sigma_xx = Sigma_yx: "
                 "with noisy targets (no zero-loss solution) the end-to-end map reaches the least-squares map",
       conditions="each instance an independent task: n0 in 6..9, n2 in 2..3, n2 <= n1 < n0 (as 30-20-10: the "
                  "first layer must learn), 4 n0 whitened inputs, "
                  "linear teacher plus noise 0.3, init std 0.1/sqrt(fan-in), Gaussian B, full-batch GD eta = 0.2 "
                  "for up to 10000 steps (stopped once 1000 times inside the tolerance; some tasks sit long on a "
                  "plateau); violation = |W2 W1 - C_ls| / |C_ls| (numpy lstsq), tolerance 1e-6",
       rules=("fa",), instances=10, quick_instances=3, hypothesis_examples=4, sabotage=_feedback_not_fixed)
def check_equilibrium(seed: int, n_instances: int) -> CheckResult:
    distances = [fa_end_to_end(_rng(seed, "lillicrap.equilibrium", i)) for i in range(n_instances)]
    worst = max(d if np.isfinite(d) else np.inf for d in distances)
    return CheckResult(n_instances, worst, EQUILIBRIUM_TOL, {"distances": np.array(distances)})
