r"""Claims of the convex view of two-layer ReLU networks (registered on import; see :mod:`theory.claims`).

* ``convex.global-optimum``: the convex program's optimum (exact arrangements,
  cvxpy + Clarabel) is the global optimum of the non-convex training problem:
  no gradient-descent run of any width goes below it, and the recovered network
  attains it (Pilanci & Ergen 2020, Theorem 1).
* ``convex.strong-duality``: the convex program and its dual have the same
  value on random instances, and the certificate's lower bound is below both.
* ``convex.arrangement-count``: the exact enumeration finds
  :math:`2\sum_{k<d}\binom{n-1}{k}` patterns for points in general position,
  and every pattern a Gaussian gate realises is among them.
* ``convex.gated-lower-bound``: the gated-ReLU optimum lower-bounds the ReLU
  one; its cone decomposition is a feasible ReLU point, and when it is exact the
  two optima are equal (Mishkin et al. 2022).
* ``convex.greedy-bound``: greedy layerwise training by convex steps obeys
  Belilovsky et al.'s Prop. 3.1 in its weight-decay form
  (:mod:`theory.convex.layerwise`).

None is about a rule of :mod:`sim.rules`; each sabotage breaks the piece of
:mod:`theory.convex` it is about (a wrong recovery map, a dropped dual
constraint, a dropped sign combination, a split that ignores the cones, a
block that passes up only half of its features).
"""

from __future__ import annotations

from unittest.mock import patch

import numpy as np

from theory.convex import arrangements as arr
from theory.convex import layerwise
from theory.convex import relu
from theory.convex.nonconvex import gradient_descent

from . import CheckResult, claim


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15, *key)))



def instance(rng, n_range=(6, 10)):
    """Data ``X`` ``(n, 3)`` (two Gaussian features and a bias column), targets ``y`` and ``beta``."""
    n = int(rng.integers(*n_range))
    X = np.c_[rng.normal(size=(n, 2)), np.ones(n)]
    return X, rng.normal(size=n), float(rng.uniform(0.05, 0.5))


def _scale(value: float) -> float:
    return max(1.0, abs(value))


# --- the global optimum -------------------------------------------------------------------------------------

def _wrong_recovery(V, W, *, threshold=1e-7):
    """Sabotage: the weights split as (v / ||v||, ||v||) instead of (v / sqrt||v||, sqrt||v||)."""
    blocks = np.concatenate([V, W])
    norms = np.linalg.norm(blocks, axis=1)
    keep = norms > threshold * max(float(norms.max(initial=0.0)), 1e-300)
    signs = np.concatenate([np.ones(len(V)), -np.ones(len(W))])[keep]
    return blocks[keep] / norms[keep, None], signs * norms[keep]


@claim("convex.global-optimum", source="Pilanci & Ergen 2020 (Theorem 1)",
       statement="The convex program over all arrangement patterns attains the global minimum of the two-layer "
                 "ReLU objective with weight decay: gradient descent from 6 random inits at widths 1, m* and 2m* "
                 "never ends below it, and the network read off by the recovery map has exactly that objective.",
       conditions="n = 6..9 points, two Gaussian features plus a bias column, Gaussian targets, beta in "
                  "[0.05, 0.5]; exact enumeration; cvxpy + Clarabel (tolerance 1e-6 relative).",
       instances=6, quick_instances=2, hypothesis_examples=2,
       sabotage=lambda: patch.object(relu, "_RECOVER", _wrong_recovery))
def _check_global_optimum(seed: int, n_instances: int) -> CheckResult:
    worst, gd_gaps, widths = 0.0, [], []
    for i in range(n_instances):
        rng = _rng(seed, 1, i)
        X, y, beta = instance(rng)
        sol = relu.two_layer_relu(X, y, beta, solver="cvxpy")
        U, alpha = sol.network()
        attained = float(relu.nonconvex_objective(U, alpha, X, y, beta))
        worst = max(worst, abs(attained - sol.objective) / _scale(sol.objective))
        for m in sorted({1, len(alpha), 2 * len(alpha)}):
            _, _, values = gradient_descent(X, y, beta, m, runs=6, steps=600, seed=seed * 1000 + i)
            worst = max(worst, (sol.objective - float(values.min())) / _scale(sol.objective))
            gd_gaps.append(float(values.min()) - sol.objective)
        widths.append(len(alpha))
    return CheckResult(n_instances, max(worst, 0.0), 1e-6, {"gd_minus_convex": gd_gaps, "widths": widths})


# --- strong duality -------------------------------------------------------------------------------------------

def _one_sided_dual(cp, x, signs, corr, beta):
    """Sabotage: only the +lambda constraints (the output weights' sign is dropped)."""
    mu = cp.Variable(signs.shape, nonneg=True)
    return [cp.norm(corr + x.T @ cp.multiply(signs, mu), 2, axis=0) <= beta]


@claim("convex.strong-duality", source="Pilanci & Ergen 2020 (their dual, via conic duality)",
       statement="The convex program and its dual (max 1/2||y||^2 - 1/2||lambda - y||^2 subject to one "
                 "second-order cone per pattern and output sign) have equal optimal values, and the certified "
                 "lower bound from the primal's dual point lies below the primal value within the solver's "
                 "tolerance.",
       conditions="Random instances as for convex.global-optimum; exact or 8 sampled arrangements; Clarabel "
                  "(tolerance 1e-6 relative).",
       instances=8, quick_instances=3, hypothesis_examples=2,
       sabotage=lambda: patch.object(relu, "_dual_constraints", _one_sided_dual))
def _check_strong_duality(seed: int, n_instances: int) -> CheckResult:
    worst, gaps = 0.0, []
    for i in range(n_instances):
        rng = _rng(seed, 2, i)
        X, y, beta = instance(rng)
        arrangements = "exact" if i % 2 == 0 else 8
        sol = relu.two_layer_relu(X, y, beta, arrangements=arrangements, solver="cvxpy", seed=i)
        dual, _ = relu.relu_dual(X, y, beta, sol.mask)
        gap = (sol.objective - dual) / _scale(sol.objective)
        cert = sol.certificate
        worst = max(worst, abs(gap), -cert.gap / _scale(cert.primal), cert.relative_gap, cert.constraint_violation)
        gaps.append(gap)
    return CheckResult(n_instances, worst, 1e-6, {"relative_gaps": gaps})


# --- the arrangement count ------------------------------------------------------------------------------------

def _one_sign_combination(sign_sets):
    """Sabotage: only one side of the hyperplanes through each vertex is enumerated."""
    return sign_sets[:1]


@claim("convex.arrangement-count", source="Cover 1965; Pilanci & Ergen 2020 (arrangement patterns)",
       statement="For n points in general position in R^d (rank d), the exact enumeration finds "
                 "2 sum_{k<d} C(n-1, k) distinct patterns diag(1[Xg >= 0]), and each pattern that 2000 Gaussian "
                 "gates realise is one of them.",
       conditions="Gaussian X with d = 1..4 and n = 1..12 (general position with probability one).",
       instances=20, quick_instances=8, hypothesis_examples=5,
       sabotage=lambda: patch.object(arr, "_SIGN_COMBINATIONS", _one_sign_combination))
def _check_arrangement_count(seed: int, n_instances: int) -> CheckResult:
    worst, rows = 0.0, []
    for i in range(n_instances):
        rng = _rng(seed, 3, i)
        d = int(rng.integers(1, 5))
        n = int(rng.integers(1, 13))
        X = rng.normal(size=(n, d))
        mask, _ = arr.exact_arrangements(X, include_zero=True)
        expected = arr.arrangement_count(n, min(n, d))
        sampled, _ = arr.sample_arrangements(X, 2000, seed=i, include_all_ones=False)
        known = {m.tobytes() for m in mask.T.astype(bool)}
        missing = sum(m.tobytes() not in known for m in sampled.T.astype(bool))
        worst = max(worst, abs(mask.shape[1] - expected) + missing)
        rows.append((n, d, mask.shape[1], expected))
    return CheckResult(n_instances, float(worst), 0.0, {"n_d_found_expected": rows})


# --- the gated-ReLU relaxation ------------------------------------------------------------------------------

def _split_ignoring_cones(x, mask, gates, u, signed_u, signed_g):
    """Sabotage: w_i = 0, v_i = u_i whatever the cone (the ReLU constraint is dropped)."""
    return np.zeros_like(u)


@claim("convex.gated-lower-bound", source="Mishkin et al. 2022 (gated ReLU, cone decomposition)",
       statement="Over the same patterns, the gated-ReLU optimum is at most the ReLU optimum; the cone "
                 "decomposition of the gated solution is feasible for the ReLU program with an objective at least "
                 "the ReLU optimum, and when every gated block lies in its cone or its negative it is exact: the "
                 "decomposed, gated and ReLU optima coincide.",
       conditions="Random instances as for convex.global-optimum, 4 to 40 sampled arrangements, beta in "
                  "[0.05, 2]; every other instance a planted two-neuron network (output weights +1, -1, noise "
                  "0.01) gated by its own two neurons, beta in [0.001, 0.05]; Clarabel (tolerance 1e-6 relative).",
       instances=8, quick_instances=3, hypothesis_examples=2,
       sabotage=lambda: patch.object(relu, "_DECOMPOSE", _split_ignoring_cones))
def _check_gated(seed: int, n_instances: int) -> CheckResult:
    worst, exact_seen, ratios = 0.0, 0, []
    for i in range(n_instances):
        rng = _rng(seed, 4, i)
        X, y, _ = instance(rng)
        beta = float(rng.uniform(0.05, 2.0))
        k = int(rng.integers(4, 41))
        if i % 2:  # a planted network, gated by its own neurons: the decomposition is then typically exact
            k = rng.normal(size=(3, 2))
            y = np.maximum(X @ k, 0.0) @ np.array([1.0, -1.0]) + 0.01 * rng.normal(size=len(y))
            beta = float(rng.uniform(0.001, 0.05))
        gated = relu.gated_relu(X, y, beta, arrangements=k, solver="cvxpy", seed=i)
        full = relu.two_layer_relu(X, y, beta, arrangements=k, solver="cvxpy", seed=i)
        split = relu.cone_decompose(X, gated, y=y)
        tol = _scale(full.objective)
        worst = max(worst, (gated.objective - full.objective) / tol, (full.objective - split.objective) / tol,
                    split.certificate.constraint_violation)
        if split.extra["exact_decomposition"]:
            exact_seen += 1
            worst = max(worst, abs(split.objective - gated.objective) / tol,
                        abs(full.objective - gated.objective) / tol)
        ratios.append(gated.objective / full.objective)
    return CheckResult(n_instances, max(worst, 0.0), 1e-6, {"gated_over_relu": ratios, "exact": exact_seen})


# --- convex greedy: Prop. 3.1 --------------------------------------------------------------------------------

def _drop_strongest_neurons(block, H):
    """Sabotage: the block passes up only the features of its weaker half of neurons (by |alpha|)."""
    features = block.features(H)
    weight = np.zeros(features.shape[1])
    for cols, alpha in zip(block.columns, block.heads):
        weight[cols] = np.abs(alpha)
    keep = weight < np.median(weight) if weight.size > 1 else weight < 0
    return features[:, keep]


@claim("convex.greedy-bound", source="Belilovsky et al. 2019 (Prop. 3.1); ours (with weight decay)",
       statement="In greedy layerwise training by convex steps, block k+1's optimal objective is at most block k's "
                 "training loss plus beta(||alpha_k^+|| + ||alpha_k^-||) (the identity on the non-negative "
                 "features, with the all-ones pattern, is feasible for block k+1), so the training risk does not "
                 "increase block by block as beta -> 0.",
       conditions="n = 16..29 points in R^2, targets sign(x1 x2) + 0.1 noise, beta in [0.01, 0.2], 2 or 3 blocks "
                  "(2 in the quick check), 16 sampled arrangements per block (the all-ones pattern included); "
                  "Clarabel (tolerance 1e-6).",
       instances=6, quick_instances=2, hypothesis_examples=2,
       sabotage=lambda: patch.object(layerwise, "_FEATURES", _drop_strongest_neurons))
def _check_greedy_bound(seed: int, n_instances: int) -> CheckResult:
    worst, risks = -np.inf, []
    for i in range(n_instances):
        rng = _rng(seed, 5, i)
        n = int(rng.integers(16, 30))
        X = rng.normal(size=(n, 2))
        y = np.sign(X[:, 0] * X[:, 1]) + 0.1 * rng.normal(size=n)
        beta = float(rng.uniform(0.01, 0.2))
        blocks = 2 if n_instances <= 2 else int(rng.integers(2, 4))
        result = layerwise.convex_greedy(X, y, beta, blocks, arrangements=16, seed=i)
        worst = max(worst, *result.bound_violations)
        risks.append(result.risks)
    return CheckResult(n_instances, max(float(worst), 0.0), 1e-6, {"risks": risks})
