r"""The conditioning of DFA's alignment matrix in a two-layer linear network (ours; cf. Refinetti et al. 2021).

Refinetti et al. (2021) name the conditioning of the *alignment matrices* as what controls alignment in
deep linear networks trained by DFA. Here is a case where everything is exact (our derivation). From zero
weights, DFA keeps :math:`W_1 = B M` and :math:`W_2 = C B^T` (``dfa.structure``); :math:`C` is the
alignment matrix of the read-out. Take feedback with orthonormal columns (:math:`B^T B = I`) and whitened
inputs, and write the target map :math:`S = \Sigma_{yx} = U\,\mathrm{diag}(s)\,V^T`. The flow is
:math:`\dot M = E`, :math:`\dot C = E M^T`, :math:`E = S - C M`; from zero it stays in the modes of
:math:`S`, :math:`M = U\mathrm{diag}(m)V^T`, :math:`C = U\mathrm{diag}(c)U^T`, with
:math:`\dot m_i = s_i - c_i m_i`, :math:`\dot c_i = (s_i - c_i m_i) m_i`, so :math:`c_i = m_i^2/2` and
each mode ends at :math:`m_i^3 = 2 s_i`:

.. math:: C_\infty = (S S^T / 2)^{1/3}, \qquad \kappa(C_\infty) = (s_{\max}/s_{\min})^{2/3},

.. math:: \cos(W_2, B^T) = \frac{\operatorname{tr} C}{\sqrt{n_L}\,\lVert C\rVert_F}
          = \frac{\sum_i s_i^{2/3}}{\sqrt{n_L \sum_i s_i^{4/3}}} \;\ge\; \frac{2\sqrt{\kappa}}{1 + \kappa}

(the bound is the Pólya-Szegő inequality). The read-out is perfectly aligned with the feedback only when
the target's singular values are equal (a well-conditioned alignment matrix); ill-conditioned targets
leave it misaligned although the loss reaches zero.
"""

from __future__ import annotations

import math

import numpy as np

from theory.claims import CheckResult, claim
from theory.claims.linear import _rng
from theory.odes import integrate_rule_flow


def alignment_matrix_limit(s: np.ndarray, u: np.ndarray) -> np.ndarray:
    r""":math:`C_\infty = U\,\mathrm{diag}((s^2/2)^{1/3})\,U^T`, from the target map's singular values ``s``
    and left singular vectors ``u``."""
    return (u * np.cbrt(np.asarray(s, dtype=float) ** 2 / 2)) @ u.T


def readout_alignment(c: np.ndarray) -> float:
    r""":math:`\operatorname{tr} C / (\sqrt{n}\lVert C\rVert_F)`: the cosine between :math:`W_2 = C B^T` and :math:`B^T`
    when :math:`B^T B = I`."""
    return float(np.trace(c) / (math.sqrt(c.shape[0]) * np.linalg.norm(c)))


CONDITIONING_TOL = 1e-6


def _plot_conditioning(result: CheckResult, ax):
    d = result.details
    kappa = np.linspace(1.0, max(2.0, float(np.max(d["kappa"])) * 1.1), 200)
    ax.plot(kappa, 2 * np.sqrt(kappa) / (1 + kappa), color="grey", label="bound 2 sqrt(kappa)/(1 + kappa)")
    ax.plot(d["kappa"], d["cos"], "o", ms=4, label="DFA read-out (engine)")
    ax.set(xlabel="condition number of C", ylabel="cos(W2, B^T)", title="refinetti.alignment_conditioning")
    ax.legend(fontsize=7)


@claim("refinetti.alignment_conditioning",
       source="ours (cf. Refinetti et al. 2021, the conditioning of the alignment matrices)",
       statement="Two-layer linear DFA from zero init with orthonormal feedback columns and whitened inputs: the "
                 "read-out's alignment matrix C = W2 B converges to (S S^T/2)^{1/3} (S = Sigma_yx), so its "
                 "condition number is (s_max/s_min)^{2/3}, and the read-out's alignment with the feedback is "
                 "cos(W2, B^T) = sum s^{2/3} / sqrt(n_L sum s^{4/3}) >= 2 sqrt(kappa)/(1 + kappa): perfect only "
                 "for equal singular values, lower the worse the conditioning",
       conditions="each instance its own task: n0 in 3..5, n_L in 2..min(n0, 3), n1 in n_L+1..7, S = U diag(s) V^T "
                  "with s uniform in [0.3, 3], 4 n0 whitened inputs (X^T X / N = I), y = S x exactly, B with "
                  "orthonormal columns; the engine's DFA gradient flow (solve_ivp LSODA, rtol 1e-10) from zero "
                  "weights to t = 60; violation = max(|C - C_pred| / |C_pred|, |cos - predicted|), infinite if "
                  "the conditioning bound fails; tolerance 1e-6",
       rules=("dfa",), instances=10, quick_instances=4, hypothesis_examples=4, plot=_plot_conditioning)
def check_alignment_conditioning(seed: int, n_instances: int) -> CheckResult:
    worst, cosines, kappas = 0.0, [], []
    for i in range(n_instances):
        rng = _rng(seed, "refinetti.alignment_conditioning", i)
        n0 = int(rng.integers(3, 6))
        n_out = int(rng.integers(2, min(n0, 3) + 1))
        n1 = int(rng.integers(n_out + 1, 8))
        u = np.linalg.qr(rng.normal(size=(n_out, n_out)))[0]
        v = np.linalg.qr(rng.normal(size=(n0, n_out)))[0]
        s = rng.uniform(0.3, 3.0, size=n_out)
        target = (u * s) @ v.T
        samples = 4 * n0
        x = math.sqrt(samples) * np.linalg.qr(rng.normal(size=(samples, n0)))[0]
        y = x @ target.T
        b = np.linalg.qr(rng.normal(size=(n1, n_out)))[0]
        weights = [np.zeros((1, n1, n0)), np.zeros((1, n_out, n1))]
        sol = integrate_rule_flow("dfa", weights, x, y, [0.0, 60.0], feedback=[b[None]], rtol=1e-10, atol=1e-12,
                                  method="LSODA")
        w2 = np.asarray(sol.weights[1][-1]).reshape(n_out, n1)
        c = w2 @ b
        predicted = alignment_matrix_limit(s, u)
        cos = float(np.sum(w2 * b.T) / (np.linalg.norm(w2) * np.linalg.norm(b)))
        cos_predicted = float(np.sum(s ** (2 / 3)) / math.sqrt(n_out * np.sum(s ** (4 / 3))))
        kappa = (s.max() / s.min()) ** (2 / 3)
        if not np.all(np.isfinite(c)) or cos < 2 * math.sqrt(kappa) / (1 + kappa) - 1e-12:
            return CheckResult(i + 1, math.inf, CONDITIONING_TOL)
        worst = max(worst, float(np.linalg.norm(c - predicted) / np.linalg.norm(predicted)), abs(cos - cos_predicted))
        cosines.append(cos)
        kappas.append(kappa)
    return CheckResult(n_instances, worst, CONDITIONING_TOL, {"cos": np.array(cosines), "kappa": np.array(kappas)})
