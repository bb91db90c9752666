"""The claims made strict (issue 14): each catches a break that its old, weak check missed.

Each test keeps a compact copy of the old check's criterion, shows that it passes
on a broken case, and shows that the registered check fails on it.
"""

from __future__ import annotations

import pytest

from theory.claims import linear as claims_linear
from theory.claims import REGISTRY, load_claims

load_claims()


def _old_within_90(cos: float, predicted: float, correction_over_norm: float) -> float:
    """The old fa.hidden_within_90 criterion: identity, and a cosine bound that the identity already implies."""
    return max(abs(cos - predicted), max(0.0, -cos - correction_over_norm))


@pytest.mark.parametrize("cos, correction", [(-0.2, 0.3), (-0.05, 0.05), (-0.9, 1.0)])
def test_hidden_within_90_checks_the_angle_itself(cos, correction):
    # a step where the identity holds exactly (cos = predicted) but the angle is above 90 degrees
    assert _old_within_90(cos, cos, correction) == 0.0  # the old check let it pass
    identity, angle = claims_linear.within_90_violations(cos, cos)
    assert identity == 0.0 and angle == pytest.approx(-cos)  # the new one fails it
    assert max(identity, angle) > REGISTRY["fa.hidden_within_90"].check(0, 1).tolerance


def test_hidden_within_90_passes_below_90():
    result = REGISTRY["fa.hidden_within_90"].check(4, 2)
    assert result.passed and result.details["largest_angle_deg"] < 90


# --- refinetti.degeneracy_breaking -------------------------------------------------------------------

def test_best_alignment_matches_a_numerical_optimum():
    """The closed-form optimum over the zero-loss fibre against a direct numerical maximisation."""
    import numpy as np
    from scipy.optimize import minimize

    from theory.claims.refinetti import best_alignment

    rng = np.random.default_rng(3)
    n1, n2, rank = 9, 3, 4
    h = rng.normal(size=(n1, rank)) @ rng.normal(size=(rank, 6))
    w0 = rng.normal(size=(n2, 6)) @ np.linalg.pinv(h)
    feedback = rng.normal(size=(n1, n2))
    u = np.linalg.svd(h)[0]
    null = u[:, rank:]  # (n1, n1 - rank): Z = C null^T keeps Z H = 0
    if np.sum(w0 * feedback.T) < 0:  # a > 0: the optimum is attained (else only approached at infinity)
        w0 = -w0

    def minus_cos(c):
        w2 = w0 + c.reshape(n2, -1) @ null.T
        return -np.sum(w2 * feedback.T) / (np.linalg.norm(w2) * np.linalg.norm(feedback))

    best = min((minimize(minus_cos, rng.normal(size=n2 * (n1 - rank)) * s, method="BFGS", options={"gtol": 1e-12})
                for s in (0.1, 1, 10)),
               key=lambda r: r.fun)
    np.testing.assert_allclose(np.degrees(np.arccos(-best.fun)), best_alignment(w0, h, feedback), atol=1e-3)


def _old_degeneracy_check(seed: int, n_instances: int, n_samples: int) -> bool:
    """The old refinetti.degeneracy_breaking check (tanh 32-32-4): DFA's angle 3 spreads below BP's."""
    import numpy as np

    from sim.data.tasks import Dataset
    from sim.network import init_network
    from sim.rules import draw_feedback
    from sim.train import train
    from theory.claims.dfa import _random_angle_spread, _rng, _seed

    sizes = (32, 32, 4)
    rng = _rng(seed, "refinetti.degeneracy_breaking")
    data = Dataset(rng.normal(size=(n_samples, 32)), rng.normal(size=(n_samples, 4)), "regression")
    angles = {}
    for name in ("bp", "dfa"):
        run_seed = _seed(seed, "refinetti.degeneracy_breaking")
        net = init_network(sizes, n_instances, seed=run_seed, scale=0.5, activation="tanh")
        fb = draw_feedback("dfa", sizes, n_instances, seed=run_seed)
        res = train(net, data, rule=name, steps=1500, lr=0.05, feedback=fb, probe="dfa", record_every=100,
                    progress=False)
        angles[name] = res.metric("weight_alignment")[-1, :, 0]
    return float(np.max(angles["dfa"] - angles["bp"])) <= -3.0 * _random_angle_spread(32 * 4)


def test_degeneracy_breaking_needs_degeneracy_and_the_old_check_did_not():
    from theory.claims import refinetti as claims_refinetti
    from theory.claims.dfa import _rng

    # the old check passed with 128 samples > 32 inputs, where there is no degeneracy to break
    assert _old_degeneracy_check(0, 2, 128)
    c = REGISTRY["refinetti.degeneracy_breaking"]
    assert c.check(0, 2).passed
    with claims_refinetti.no_degeneracy():
        assert not c.check(0, 2).passed  # the new one fails when the tasks have no degeneracy
    for i in range(2):  # there, both rules sit at the single zero-loss read-out of their representation
        out = claims_refinetti.fibre_gaps(_rng(0, "refinetti.degeneracy_breaking", i), degenerate=False)
        assert abs(out["bp"]["gap"]) < 1e-6 and abs(out["dfa"]["gap"]) < 1e-6


# --- sg.unified_view ---------------------------------------------------------------------------------

def test_unified_view_catches_a_break_shared_by_both_code_paths():
    import numpy as np

    from sim import synthetic as sg
    from sim.rules import draw_feedback, rule_updates
    from theory.claims import sabotaged
    from theory.claims.synthetic import direct_feedback_updates

    c = REGISTRY["sg.unified_view"]
    rng = np.random.default_rng(0)
    sizes = [3, 4, 5, 2]
    weights = [rng.normal(size=(2, b, a)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=(2, n)) for n in sizes[1:]]
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    feedback = draw_feedback("dfa", sizes, 2, seed=1)
    clean = rule_updates("dfa", weights, x, y, feedback=feedback, activation="tanh", biases=biases)
    ref_w, _ = direct_feedback_updates(weights, biases, x, y, [np.asarray(f) for f in feedback], mode="dfa",
                                       activation="tanh", loss="mse")
    for a, b in zip(clean.weights, ref_w):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-14)
    with sabotaged("sg", "dfa", "fa"):  # the same break in the SG path and in the rules it is compared with
        own = rule_updates("sg", weights, x, y, modules=sg.dfa_modules(feedback), activation="tanh", biases=biases)
        ref = rule_updates("dfa", weights, x, y, feedback=feedback, activation="tanh", biases=biases)
        old = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(own.weights, ref.weights))
        assert old <= 1e-12  # the old self-comparison saw nothing
        assert not c.check(0, 3).passed  # the independent computation does
    assert c.check(0, 3).passed


# --- sg.epsilon_tracking -----------------------------------------------------------------------------

def _flat(arrays):
    import numpy as np

    return np.concatenate([np.ravel(a) for a in arrays])


def _old_epsilon_tracking(seed: int, n_instances: int) -> float:
    """The old sg.epsilon_tracking check (one step at random points); returns its worst violation."""
    import math

    import numpy as np

    from sim import synthetic as sg
    from sim.rules import rule_updates
    from theory.claims.synthetic import _random_net, _rng

    violations, rhos, inner = [], [], []
    for j in range(n_instances):
        rng = _rng(seed, j)
        activation = ("linear", "relu", "tanh")[j % 3]
        sizes = [int(n) for n in rng.integers(2, 7, size=3)]
        weights, _ = _random_net(rng, sizes, 1, bias=False)
        x, y = rng.normal(size=(8, sizes[0])), rng.normal(size=(8, sizes[-1]))
        bp = rule_updates("bp", weights, x, y, activation=activation)
        g = _flat(bp.weights)
        perfect = sg.perfect_modules(weights, activation)
        h = bp.forward.inputs[1][0]
        bound_k = float(np.max(np.linalg.norm(x, axis=1)))  # times max|f'|, which is 1 for linear, relu, tanh
        # a random error of the module's parameters, scaled to the tracking level rho
        rho_target = (0.05, 0.5, 0.9)[j % 3]
        delta = {k: rng.normal(size=v.shape) for k, v in perfect.params[0].items()}
        eps = h @ delta["hidden"][0].T + y @ delta["label"][0].T + delta["bias"][0]
        size = bound_k * float(np.mean(np.linalg.norm(eps, axis=1))) / float(np.linalg.norm(g))
        factor = rho_target / size
        params = {k: v + factor * delta[k] for k, v in perfect.params[0].items()}
        modules = sg.SyntheticGradients((params,), "linear", ("hidden", "label"), "fixed", np.zeros(1), 1)
        eps = factor * eps
        rho = bound_k * float(np.mean(np.linalg.norm(eps, axis=1))) / float(np.linalg.norm(g))
        own = rule_updates("cdni", weights, x, y, activation=activation, modules=modules)
        g_sg = _flat(own.weights)
        norm2 = float(g @ g)
        excess = max(0.0, float(np.linalg.norm(g_sg - g)) - bound_k * float(np.mean(np.linalg.norm(eps, axis=1))))
        product = float(g_sg @ g)
        shortfall = max(0.0, (1 - rho) * norm2 - product) / norm2
        loss = float(bp.loss[0])
        eta = 1e-4 * loss / product if product > 0 else 0.0
        stepped = [w - eta * dw for w, dw in zip(weights, own.weights)]
        decrease = loss - float(rule_updates("bp", stepped, x, y, activation=activation).loss[0])
        descent = max(0.0, 0.5 - decrease / (eta * product)) if product > 0 else 1.0
        # the condition broken on purpose: SG = -c dL/dh, c chosen so that <g_SG, g> < 0
        g1, g2 = _flat(bp.weights[:1]), _flat(bp.weights[1:])
        c = 2.0 * (float(g2 @ g2) + float(g1 @ g1)) / max(float(g1 @ g1), 1e-300)
        flipped = sg.SyntheticGradients(({k: -c * v for k, v in perfect.params[0].items()},), "linear",
                                        ("hidden", "label"), "fixed", np.zeros(1), 1)
        bad = rule_updates("cdni", weights, x, y, activation=activation, modules=flipped)
        bad_product = float(_flat(bad.weights) @ g)
        eta_bad = 1e-4 * loss / abs(bad_product)
        rise = float(rule_updates("bp", [w - eta_bad * dw for w, dw in zip(weights, bad.weights)], x, y,
                                  activation=activation).loss[0]) - loss
        rises = 0.0 if (bad_product < 0 and rise > 0) else 1.0
        violations.append(max(excess / math.sqrt(norm2), shortfall, descent, rises))
        rhos.append(rho)
        inner.append(product / norm2)
    return max(violations)




def test_epsilon_tracking_follows_the_trajectory_and_catches_what_one_step_missed():
    from theory.claims import sabotaged

    c = REGISTRY["sg.epsilon_tracking"]
    assert _old_epsilon_tracking(0, 3) <= 1e-9 and c.check(0, 2).passed
    with sabotaged("cdni", factor=0.99):  # a 1% mix of the wrong units into the SG update
        assert _old_epsilon_tracking(0, 3) <= 1e-9  # one step at random points: within its slack
        assert not c.check(0, 2).passed  # along the trajectory the realised tracking level is wrong


def test_epsilon_tracking_reaches_least_squares():
    import numpy as np

    result = REGISTRY["sg.epsilon_tracking"].check(5, 3)
    assert result.passed
    assert all(curve[-1] < 1e-6 for curve in result.details["excess_curves"])
    np.testing.assert_allclose(result.details["rho"], [0.2, 0.5, 0.8])


# --- local.dgl-moving-input --------------------------------------------------------------------------

def test_dgl_moving_input_tests_both_sides_of_dgls_condition():
    from theory.claims import local as claims_local

    c = REGISTRY["local.dgl-moving-input"]
    assert c.check(0, 1).passed
    slow, offset = claims_local.DRIFTS["slow"], claims_local.DRIFTS["offset"]
    # the old check passed a (t+1)^-1/2 drift in its "summable" slot; it is on the holding side of DGL's
    # condition (sum eta_t c_t < inf), which the new check runs, and the new check fails if that case stalls
    claims_local.DRIFTS["slow"] = offset
    try:
        assert not c.check(0, 1).passed
    finally:
        claims_local.DRIFTS["slow"] = slow
    # and fails if the case that breaks the condition (the input never reaches the limit) converges instead
    claims_local.DRIFTS["offset"] = slow
    try:
        assert not c.check(0, 1).passed
    finally:
        claims_local.DRIFTS["offset"] = offset


# --- members and tasks ---------------------------------------------------------------------------------

def test_members_and_tasks_are_reported_separately():
    import json

    from theory.claims import run_claim
    from theory.report import verify_table

    shared = run_claim(REGISTRY["refinetti.align_then_memorise"], quick=True)  # 2 members on each task
    assert shared.to_json()["tasks"] == shared.instances // 2 and shared.to_json()["members"] == shared.instances
    lillicrap = run_claim(REGISTRY["lillicrap.learns"], quick=True)  # now one independent task per member
    assert lillicrap.to_json()["tasks"] == lillicrap.to_json()["members"] == lillicrap.instances
    json.dumps([shared.to_json(), lillicrap.to_json()], allow_nan=False)
    table = verify_table([shared])
    assert "| tasks | members |" in table and f"| {shared.instances // 2} | {shared.instances} |" in table


def test_lillicrap_tasks_are_independent():
    import numpy as np

    from theory.claims.linear import _lillicrap_tasks

    x, y = _lillicrap_tasks(0, 3)
    teachers = [np.linalg.lstsq(x[i], y[i], rcond=None)[0] for i in range(3)]
    assert not np.allclose(teachers[0], teachers[1]) and not np.allclose(teachers[1], teachers[2])


def test_new_figures_draw():
    from sim.plots import new_figure

    for claim_id in ("refinetti.degeneracy_breaking", "local.dgl-moving-input", "lillicrap.alignment"):
        c = REGISTRY[claim_id]
        fig, (ax,) = new_figure(1)
        c.plot(c.check(0, 1), ax)
        assert ax.lines or ax.patches
