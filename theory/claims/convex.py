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
* ``convex.width-suffices``: at width :math:`8m^*` the best of 16 gradient-descent
  runs ends within 5% of the convex optimum (what the theorem implies for the
  global optimum, measured for gradient descent).
* ``convex.vector-sandwich``: for vector outputs, the certified lower bound (gated
  relaxation, exact dual norm) and the returned network's objective bracket the
  global optimum and every gradient-descent run (Sahiner et al. 2021; ours).

None is about a rule of :mod:`sim.rules`; each sabotage breaks the piece of
:mod:`theory.convex` it is about (a wrong recovery map, a dropped dual
constraint, a dropped sign combination, a split that ignores the cones, a
block that passes up only half of its features, gradient descent that trains
only the output layer, a dual norm that looks only inside the cones).
"""

from __future__ import annotations

from unittest.mock import patch

import numpy as np

from theory.convex import arrangements as arr
from theory.convex import layerwise
from theory.convex import nonconvex, relu, vector
from theory.convex.nonconvex import gradient_descent, gradient_descent_vector

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


# --- the width suffices: gradient descent at width >= m* ----------------------------------------------------

@claim("convex.width-suffices", source="Pilanci & Ergen 2020 (Theorem 1: p* is the global optimum at every width "
                                       "m >= m*); gradient descent's side measured here",
       statement="At width m = 8 m* (m* the width of the network the convex program recovers) the best of 16 "
                 "gradient-descent runs of 6000 steps from random inits ends within 5% (relative) of the convex "
                 "optimum p*. The theorem makes p* the global optimum of every width m >= m*, but does not say that "
                 "gradient descent finds it. Measured: at width m* the best of 8 runs of 3000 steps was more than "
                 "10% above p* on 7 of 30 instances; at 4 m* (16 runs, 2000 steps) on 1 of 48 (19%); at 8 m* with "
                 "2000 steps 4 of 120 were above 5% (up to 12.8%), and these were slow, not stuck: with 6000 steps "
                 "the worst of them was 1.8%, and on 60 fresh instances the worst was 1.0% (median 0.13%). Gradient "
                 "descent needs more width (and time) than the optimum does.",
       conditions="Random instances as for convex.global-optimum (n = 6..9 points, two Gaussian features plus a "
                  "bias column, Gaussian targets, beta in [0.05, 0.5]; exact arrangements, Clarabel); 6000 plain "
                  "gradient steps of size 1/(||X||^2 + ||y|| + beta), halved when a step more than doubles the "
                  "objective; inits u ~ N(0, I/d), alpha ~ N(0, 1/m).",
       instances=6, quick_instances=1, hypothesis_examples=2,
       sabotage=lambda: patch.object(nonconvex, "_TRAIN_HIDDEN", False))
def _check_width_suffices(seed: int, n_instances: int) -> CheckResult:
    worst, gaps, widths = -np.inf, [], []
    for i in range(n_instances):
        rng = _rng(seed, 6, i)
        X, y, beta = instance(rng)
        sol = relu.two_layer_relu(X, y, beta, solver="cvxpy")
        with np.errstate(over="ignore", invalid="ignore"):  # a blown-up step is undone (and halved) by the trainer
            _, _, values = gradient_descent(X, y, beta, 8 * sol.width, runs=16, steps=6000, seed=seed * 1000 + i)
        gap = (float(values.min()) - sol.objective) / sol.objective
        worst = max(worst, gap)
        gaps.append(gap)
        widths.append(sol.width)
    return CheckResult(n_instances, max(float(worst), 0.0), 0.05, {"best_relative_gap": gaps, "m_star": widths},
                       tasks=n_instances, members=16 * n_instances)


# --- vector outputs: the certified sandwich ----------------------------------------------------------------

def _interior_faces_only(d: int):
    """Sabotage: the exact dual norm looks only inside the cones, missing maximisers on their boundaries."""
    return range(1)


@claim("convex.vector-sandwich",
       source="Sahiner, Ergen, Pauly & Pilanci 2021 (vector-output two-layer ReLU networks: the exact program is "
              "copositive); ours (the gated nuclear-norm bound, the exact dual norm by face enumeration, the sandwich)",
       statement="For vector outputs with all arrangement patterns, theory.convex.two_layer_relu_vector returns "
                 "lower <= upper with: the exact dual norm max_{||u||<=1} ||Lambda^T relu(Xu)|| at least its value "
                 "at 20000 random unit directions; lower at least the gated relaxation's certified bound and at most "
                 "the objective of every gradient-descent run (8 runs at widths 4 and 16); upper equal to "
                 "the objective of the returned network and at most the one-vs-all optimum (separate hidden layers "
                 "per output); and the relative gap closed to 1e-3 by column generation.",
       conditions="n = 6..8 points, two Gaussian features plus a bias column, k = 2 or 3 Gaussian target columns, "
                  "beta in [0.05, 0.5]; exact enumeration; Clarabel for the gated program and the one-vs-all "
                  "programs; tolerances 1e-6 relative (1e-3 for the gap).",
       instances=4, quick_instances=1, hypothesis_examples=2,
       sabotage=lambda: patch.object(vector, "_FACE_SIZES", _interior_faces_only))
def _check_vector_sandwich(seed: int, n_instances: int) -> CheckResult:
    worst, gaps, ratios = 0.0, [], []
    directions = _rng(seed, 7, 10_000).normal(size=(20_000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for i in range(n_instances):
        rng = _rng(seed, 7, i)
        n, k = int(rng.integers(6, 9)), int(rng.integers(2, 4))
        X = np.c_[rng.normal(size=(n, 2)), np.ones(n)]
        Y, beta = rng.normal(size=(n, k)), float(rng.uniform(0.05, 0.5))
        sol = vector.two_layer_relu_vector(X, Y, beta, one_vs_all=True)
        U, A = sol.network()
        scale = max(1.0, sol.upper_bound)
        residual = Y - np.maximum(X @ U.T, 0.0) @ A
        s = vector.relu_dual_norm(X, residual, sol.mask)
        sampled = float(np.max(np.linalg.norm(np.maximum(directions @ X.T, 0.0) @ residual, axis=1)))
        gd = min(float(gradient_descent_vector(X, Y, beta, m, runs=8, steps=1000, seed=seed * 1000 + i)[2].min())
                 for m in (4, 16))
        worst = max(worst, sampled / max(s, 1e-300) - 1.0,
                    (sol.lower_bound - min(gd, sol.upper_bound)) / scale,
                    (sol.extra["gated_lower_bound"] - sol.lower_bound) / scale,
                    abs(float(vector.vector_objective(U, A, X, Y, beta)) - sol.upper_bound) / scale,
                    (sol.upper_bound - sol.extra["one_vs_all_objective"]) / scale,
                    sol.relative_gap - 1e-3)
        gaps.append(sol.relative_gap)
        ratios.append(sol.upper_bound / sol.extra["one_vs_all_objective"])
    return CheckResult(n_instances, max(worst, 0.0), 1e-6, {"relative_gap": gaps, "vector_over_one_vs_all": ratios})
