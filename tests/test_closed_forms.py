"""Closed forms and ODEs of linear networks against independent computations.

Independent means: ``solve_ivp`` of the defining ODEs, the sympy derivation,
finite differences, and the engine itself (``sim.rules`` / ``sim.train``), whose
gradient descent must approach the flow with an error linear in the step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from sim.backend import get_namespace
from sim.data import linear_teacher
from sim.data.tasks import Dataset
from sim.network import init_network, network_from_weights
from sim.rules import compute_updates, draw_feedback
from sim.train import train
from theory import closed_forms as cf
from theory.odes import (
    covariances,
    euler_error_coefficient,
    gradient_flow_field,
    integrate_gradient_flow,
    integrate_rule_flow,
)

XP = get_namespace("numpy")
EPS = float(np.finfo(np.float64).eps)
MAX_EXAMPLES = min(20, settings().max_examples)
ODE = dict(method="DOP853", rtol=1e-12, atol=1e-14)


def _orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.normal(size=(n, k)))
    return q * np.sign(np.diag(r))


# --- Saxe modes -------------------------------------------------------------------------------------

@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(s=st.floats(0.2, 5.0), log_u0=st.floats(-6, -0.5), t_end=st.floats(0.1, 10.0))
def test_saxe_solves_the_logistic(s, log_u0, t_end):
    u0 = min(10 ** log_u0, s / 3)
    times = np.linspace(0, t_end, 25)
    sol = solve_ivp(lambda _, u: 2 * u * (s - u), (0, t_end), [u0], t_eval=times, **ODE)
    np.testing.assert_allclose(cf.saxe_mode_strength(times, s, u0), sol.y[0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(cf.depth_mode_strength(times, s, u0, 2), sol.y[0], rtol=1e-8, atol=1e-12)


def test_saxe_limits_and_half_time():
    s, u0 = 2.0, 1e-3
    assert cf.saxe_mode_strength(0.0, s, u0) == pytest.approx(u0, rel=1e-14)
    assert cf.saxe_mode_strength(1e4, s, u0) == pytest.approx(s, rel=1e-14)
    assert cf.saxe_mode_strength(3.0, s, 0.0) == 0.0  # BP from zero never moves
    half = cf.saxe_half_time(s, u0)
    assert cf.saxe_mode_strength(half, s, u0) == pytest.approx(s / 2, rel=1e-12)
    # decreasing in s (for s > e u0): larger singular values are learnt first
    assert np.all(np.diff(cf.saxe_half_time(np.linspace(0.1, 5, 50), u0)) < 0)
    # finite differences of the closed form satisfy the ODE
    t, h = 1.7, 1e-5
    derivative = (cf.saxe_mode_strength(t + h, s, u0) - cf.saxe_mode_strength(t - h, s, u0)) / (2 * h)
    u = cf.saxe_mode_strength(t, s, u0)
    assert derivative == pytest.approx(2 * u * (s - u), rel=1e-8)


def test_half_time_needs_small_init():
    with pytest.raises(ValueError):
        cf.saxe_half_time(1.0, 0.6)
    with pytest.raises(ValueError):
        cf.depth_mode_rate(1.0, 1.0, 0)
    with pytest.raises(ValueError):
        cf.depth_mode_strength([-1.0], 1.0, 0.1, 2)


def test_depth_one_is_linear_regression():
    times = np.linspace(0, 5, 11)
    np.testing.assert_allclose(cf.depth_mode_strength(times, 1.5, 0.2, 1), 1.5 + (0.2 - 1.5) * np.exp(-times),
                               rtol=1e-10)


def _deep_mode_error(lr, depth=3, s=(2.0, 1.0), u0=1e-2, t_end=4.0):
    """Max |u_GD - u_ODE| of a balanced depth-D linear net in the teacher's modes (engine GD)."""
    s = np.asarray(s)
    data = linear_teacher(3, 3, s, 6, seed=4)
    u, v = data.info["U"], data.info["V"]
    rng = np.random.default_rng(0)
    frames = [v] + [_orthonormal(rng, 4, s.size) for _ in range(depth - 1)] + [u]
    a0 = u0 ** (1 / depth)
    weights = [XP.asarray((a0 * frames[i + 1] @ frames[i].T)[None]) for i in range(depth)]
    steps = int(round(t_end / lr))
    res = train(network_from_weights(weights), data, rule="bp", steps=steps, lr=lr, record_every=steps,
                progress=False)
    product = np.eye(3)
    for w in res.network.weights:
        product = np.asarray(w)[0] @ product
    simulated = np.diag(u.T @ product @ v)
    theory = np.array([cf.depth_mode_strength([t_end], sj, u0, depth)[0] for sj in s])
    return np.max(np.abs(simulated - theory))


def test_deep_balanced_modes_follow_the_depth_ode():
    coarse, fine = _deep_mode_error(0.02), _deep_mode_error(0.01)
    assert coarse < 0.05
    assert coarse / fine == pytest.approx(2.0, abs=0.15)


def test_saxe_gd_error_is_linear_in_eta_and_first_order_predicted():
    s, u0, t_end = 2.0, 1e-3, 3.0
    field = lambda y: np.array([y[0] * (s - y[0] ** 2)])  # noqa: E731  (balanced mode a, u = a^2)
    jacobian = lambda y: np.array([[s - 3 * y[0] ** 2]])  # noqa: E731
    errors = []
    for lr in (0.02, 0.01, 0.005):
        steps = int(round(t_end / lr))
        a = math.sqrt(u0)
        for _ in range(steps):
            a = a + lr * a * (s - a * a)
        errors.append(a * a - cf.saxe_mode_strength(t_end, s, u0))
        flow, eps = euler_error_coefficient(field, jacobian, [math.sqrt(u0)], [0.0, t_end])
        predicted = 2 * flow[-1, 0] * lr * eps[-1, 0]
        assert errors[-1] == pytest.approx(predicted, rel=4 * lr * 2 * s)
    assert errors[0] / errors[1] == pytest.approx(2.0, abs=0.1)
    assert errors[1] / errors[2] == pytest.approx(2.0, abs=0.05)


# --- the FA analogue ----------------------------------------------------------------------------------

@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(s=st.floats(0.2, 4.0), b=st.floats(0.2, 3.0), negative=st.booleans(), t=st.floats(0.0, 8.0))
def test_fa_mode_time_inverts_strength(s, b, negative, t):
    b = -b if negative else b
    u = cf.fa_mode_strength(t, s, b)
    # near saturation the round trip through u is ill-conditioned: dt = du / u' with u' ~ (s - u)
    assume(u < s * (1 - 1e-4))
    assert cf.fa_mode_time(u, s, b) == pytest.approx(t, rel=1e-9, abs=1e-12)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(s=st.floats(0.2, 4.0), b=st.floats(0.2, 3.0), negative=st.booleans())
def test_fa_mode_solves_the_mode_odes(s, b, negative):
    b = -b if negative else b
    times = np.linspace(0, 3 * float(cf.fa_mode_half_time(s, b)), 30)

    def full(_, y):  # a' = b (s - ac), c' = a (s - ac), from a = c = 0
        r = s - y[0] * y[1]
        return [b * r, y[0] * r]

    sol = solve_ivp(full, (0, times[-1]), [0.0, 0.0], t_eval=times, **ODE)
    np.testing.assert_allclose(cf.fa_mode_strength(times, s, b), sol.y[0] * sol.y[1], rtol=1e-8, atol=1e-12)
    a, c = cf.fa_mode_weights(times, s, b)
    np.testing.assert_allclose(a, sol.y[0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(c, sol.y[1], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(cf.scalar_chain_invariant(a, c, b), 0.0, atol=1e-12)  # a^2 - 2 b c = 0
    reduced = solve_ivp(lambda _, y: cf.fa_mode_rate(y, s, b), (0, times[-1]), [0.0], t_eval=times, **ODE)
    np.testing.assert_allclose(reduced.y[0], a, rtol=1e-8, atol=1e-12)


def test_fa_mode_early_growth_and_half_time():
    s, b = 1.5, 0.8
    for t in (1e-3, 1e-2, 5e-2):
        early = cf.fa_mode_early(t, s, b)
        assert early == pytest.approx(b * b * s ** 3 * t ** 3 / 2)
        # u = b^2 s^3 t^3 / 2 (1 - 3/8 (bs)^2 t^3 + ...): the relative correction is the next series term
        ratio = cf.fa_mode_strength(t, s, b) / early
        assert ratio - 1 == pytest.approx(-3 / 8 * (b * s) ** 2 * t ** 3, rel=1e-3, abs=1e-14)
    half = cf.fa_mode_half_time(s, b)
    assert cf.fa_mode_strength(half, s, b) == pytest.approx(s / 2, rel=1e-10)
    # t_half scales as (|b| s)^(-2/3)
    assert cf.fa_mode_half_time(8 * s, b) == pytest.approx(half / 4, rel=1e-12)
    assert cf.fa_mode_half_time(s, -b) == pytest.approx(half, rel=1e-12)
    assert cf.fa_mode_strength(1e5, s, b) == pytest.approx(s, rel=1e-12)
    with pytest.raises(ValueError):
        cf.fa_mode_time(s, s, b)
    with pytest.raises(ValueError):
        cf.fa_mode_strength(-1.0, s, b)


@pytest.fixture(scope="module")
def derivation():
    return cf.derive_fa_mode_dynamics()


def test_sympy_derivation_of_the_fa_modes(derivation):
    d = derivation
    a, c, b, s, t = (d.symbols[k] for k in "acbst")
    assert all(sp.simplify(e) == 0 for e in d.off_diagonal)
    assert sp.simplify(d.mode_field[0] - b * (s - a * c)) == 0
    assert sp.simplify(d.mode_field[1] - a * (s - a * c)) == 0
    assert sp.simplify(d.bp_mode_field[0] - c * (s - a * c)) == 0
    assert all(e.subs({a: 0, c: 0}) == 0 for e in d.bp_mode_field)  # BP from zero does not move
    assert sp.simplify(d.invariant - (a ** 2 - 2 * b * c)) == 0
    assert d.invariant_rate == 0
    assert sp.simplify(d.reduced_rate - (b * s - a ** 3 / 2)) == 0
    assert sp.simplify(d.strength - a ** 3 / (2 * b)) == 0
    assert sp.simplify(d.time_check) == 0
    u = sp.Poly(d.series_u, t)
    assert sp.simplify(u.coeff_monomial(t ** 3) - b ** 2 * s ** 3 / 2) == 0
    assert sp.simplify(u.coeff_monomial(t ** 6) + sp.Rational(3, 16) * b ** 4 * s ** 5) == 0
    for power in (0, 1, 2, 4, 5):
        assert u.coeff_monomial(t ** power) == 0


def test_sympy_derivation_matches_the_numerics(derivation):
    d = derivation
    a, b, s, t = (d.symbols[k] for k in "abst")
    time_of = sp.lambdify((a, b, s), d.time_to_strength, "numpy")
    series = sp.lambdify((t, b, s), d.series_u, "numpy")
    for sv, bv in ((1.0, 1.0), (2.5, 0.6), (0.7, 1.8)):
        for tv in (0.3, 1.0, 2.0):
            av, _ = cf.fa_mode_weights(tv, sv, bv)
            assert time_of(float(av), bv, sv) == pytest.approx(tv, rel=1e-10)
        small = 0.05
        assert series(small, bv, sv) == pytest.approx(cf.fa_mode_strength(small, sv, bv), rel=1e-9)


def test_sympy_mode_field_matches_the_engine(derivation):
    """The engine's FA and BP updates, rotated into the modes, are the derived per-mode vector fields."""
    d = derivation
    a_s, c_s, b_s, s_s = (d.symbols[k] for k in "acbs")
    fa_field = [sp.lambdify((a_s, c_s, b_s, s_s), e, "numpy") for e in d.mode_field]
    bp_field = [sp.lambdify((a_s, c_s, s_s), e, "numpy") for e in d.bp_mode_field]
    rng = np.random.default_rng(3)
    s = np.array([2.0, 1.2, 0.5])
    data = linear_teacher(5, 4, s, 10, seed=9)
    u, v = data.info["U"], data.info["V"]
    frame = _orthonormal(rng, 6, 3)
    a, c, b = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    weights = [XP.asarray((frame @ np.diag(a) @ v.T)[None]), XP.asarray((u @ np.diag(c) @ frame.T)[None])]
    feedback = [XP.asarray((frame @ np.diag(b) @ u.T)[None])]
    for rule in ("fa", "bp"):
        d1, d2 = (np.asarray(g)[0] for g in compute_updates(rule, weights, data.x, data.y, feedback=feedback))
        rate1, rate2 = frame.T @ (-d1) @ v, u.T @ (-d2) @ frame
        if rule == "fa":
            expect1, expect2 = fa_field[0](a, c, b, s), fa_field[1](a, c, b, s)
        else:
            expect1, expect2 = bp_field[0](a, c, s), bp_field[1](a, c, s)
        np.testing.assert_allclose(rate1, np.diag(expect1), atol=1e-13)
        np.testing.assert_allclose(rate2, np.diag(expect2), atol=1e-13)


def _fa_mode_gd_error(lr, t_end=2.0):
    s, b = np.array([2.0, 0.8]), np.array([1.0, -0.7])
    data = linear_teacher(3, 3, s, 6, seed=2)
    u, v = data.info["U"], data.info["V"]
    frame = _orthonormal(np.random.default_rng(1), 3, 2)
    weights = [XP.zeros((1, 3, 3)), XP.zeros((1, 3, 3))]
    feedback = [XP.asarray((frame @ np.diag(b) @ u.T)[None])]
    steps = int(round(t_end / lr))
    res = train(network_from_weights(weights), data, rule="fa", steps=steps, lr=lr, feedback=feedback,
                record_every=steps, progress=False)
    w1, w2 = (np.asarray(w)[0] for w in res.network.weights)
    return np.max(np.abs(np.diag(u.T @ w2 @ w1 @ v) - cf.fa_mode_strength(t_end, s, b)))


def test_fa_mode_simulation_error_is_linear_in_eta():
    coarse, fine = _fa_mode_gd_error(0.02), _fa_mode_gd_error(0.01)
    assert coarse < 0.05
    assert coarse / fine == pytest.approx(2.0, abs=0.1)


# --- the scalar chain ----------------------------------------------------------------------------------

@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(a1=st.floats(-3, 3), a2=st.floats(-3, 3), c=st.floats(0.3, 2), c_negative=st.booleans(),
       alpha=st.floats(0.5, 2), alpha_negative=st.booleans(), beta=st.floats(0.5, 2))
def test_scalar_chain_limit_matches_the_flow(a1, a2, c, c_negative, alpha, alpha_negative, beta):
    c = -c if c_negative else c
    alpha = -alpha if alpha_negative else alpha
    kappa = a1 * a1 - 2 * c * a2
    roots = cf.scalar_chain_equilibria(kappa, c, alpha, beta)
    assert roots.size in (1, 3)
    assert (roots.size == 3) == bool(cf.scalar_chain_bistable(a1, a2, c, alpha, beta))
    np.testing.assert_allclose(roots * (roots ** 2 - kappa) / (2 * c), alpha / beta, rtol=1e-9)  # all on a1 a2 = a/b
    limit1, limit2 = (float(x) for x in cf.scalar_chain_limit(a1, a2, c, alpha, beta))
    rate = beta / 2 * (3 * limit1 ** 2 - kappa)
    assume(rate > 0.3)
    if roots.size == 3:
        assume(abs(a1 - roots[1]) > 0.2)

    def flow(_, y):
        r = alpha - beta * y[0] * y[1]
        return [c * r, y[0] * r]

    sol = solve_ivp(flow, (0, 60 / rate + 60), [a1, a2], **ODE)
    assert sol.y[0, -1] == pytest.approx(limit1, rel=1e-6, abs=1e-8)
    assert sol.y[1, -1] == pytest.approx(limit2, rel=1e-6, abs=1e-8)
    assert cf.scalar_chain_invariant(sol.y[0, -1], sol.y[1, -1], c) == pytest.approx(kappa, rel=1e-8, abs=1e-8)


def test_scalar_chain_anti_aligned_from_large_init():
    # c = alpha = beta = 1: bistable beyond kappa = 3; a1 far left of the middle root ends anti-aligned
    limit1, limit2 = cf.scalar_chain_limit(-3.0, 0.5, 1.0, 1.0, 1.0)
    assert limit1 * limit2 == pytest.approx(1.0)
    assert limit2 < 0  # c a2 < 0
    limit1, limit2 = cf.scalar_chain_limit(0.1, 0.1, 1.0, 1.0, 1.0)  # small init: aligned
    assert limit2 > 0 and limit1 * limit2 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cf.scalar_chain_equilibria(1.0, 0.0, 1.0, 1.0)


# --- gradient-flow ODEs of deep linear networks ---------------------------------------------------------

def _deep_problem(depth, seed=0, n_samples=30):
    rng = np.random.default_rng(seed)
    sizes = [int(k) for k in rng.integers(2, 6, size=depth + 1)]
    mix = np.eye(sizes[0]) + 0.5 * rng.normal(size=(sizes[0], sizes[0]))
    x = rng.normal(size=(n_samples, sizes[0])) @ mix
    x /= np.sqrt(np.linalg.norm(x.T @ x / n_samples, 2))
    y = rng.normal(size=(n_samples, sizes[-1]))
    return sizes, Dataset(x, y, "regression")


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_flow_field_is_minus_the_engine_update(rule, depth):
    if depth == 1 and rule != "bp":
        pytest.skip("FA and DFA need a hidden layer")
    sizes, data = _deep_problem(depth, seed=depth)
    net = init_network(sizes, 3, seed=1, scale=0.9)
    feedback = draw_feedback(rule, sizes, 3, seed=2)
    sigma_xx, sigma_yx = covariances(data.x, data.y)
    velocities = gradient_flow_field(rule, net.weights, sigma_yx, sigma_xx, feedback)
    updates = compute_updates(rule, list(net.weights), data.x, data.y, feedback=feedback)
    for vel, upd in zip(velocities, updates):
        np.testing.assert_allclose(vel, -np.asarray(upd), atol=50 * EPS)


def test_whitened_default_and_single_matrices():
    data = linear_teacher(4, 3, [2.0, 1.0], 8, seed=5)
    net = init_network([4, 5, 3], 1, seed=0)
    sigma_xx, sigma_yx = covariances(data.x, data.y)
    np.testing.assert_allclose(sigma_xx, np.eye(4), atol=1e-12)
    white = gradient_flow_field("bp", net.weights, sigma_yx)
    general = gradient_flow_field("bp", [np.asarray(w)[0] for w in net.weights], sigma_yx, sigma_xx)
    for a, b in zip(white, general):
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError):
        gradient_flow_field("fa", net.weights, sigma_yx)


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_gd_approaches_the_flow_linearly_in_eta(rule):
    sizes, data = _deep_problem(3, seed=7)
    net = init_network(sizes, 2, seed=3, scale=0.8)
    feedback = draw_feedback(rule, sizes, 2, seed=4)
    sigma_xx, sigma_yx = covariances(data.x, data.y)
    t_end = 1.5
    flow = integrate_gradient_flow(rule, net.weights, [0.0, t_end], sigma_yx, sigma_xx, feedback)
    engine_flow = integrate_rule_flow(rule, net.weights, data.x, data.y, [0.0, t_end], feedback=feedback)
    for a, b in zip(flow.at(1), engine_flow.at(1)):
        np.testing.assert_allclose(a, b, atol=1e-8)
    errors = []
    for lr in (0.02, 0.01):
        steps = int(round(t_end / lr))
        res = train(net, data, rule=rule, steps=steps, lr=lr, feedback=feedback, record_every=steps,
                    progress=False)
        errors.append(max(float(np.max(np.abs(np.asarray(w) - f))) for w, f in zip(res.network.weights,
                                                                                    flow.at(1))))
    assert errors[0] < 0.05
    assert errors[0] / errors[1] == pytest.approx(2.0, abs=0.15)


def test_flow_solution_times_and_errors():
    sizes, data = _deep_problem(2, seed=1)
    net = init_network(sizes, 1, seed=0)
    sigma_xx, sigma_yx = covariances(data.x, data.y)
    sol = integrate_gradient_flow("bp", net.weights, [0.0, 0.0, 0.5, 1.0], sigma_yx, sigma_xx)
    assert sol.weights[0].shape == (4, 1, sizes[1], sizes[0])
    np.testing.assert_array_equal(sol.at(0)[0], np.asarray(net.weights[0]))
    with pytest.raises(ValueError):
        integrate_gradient_flow("bp", net.weights, [1.0, 0.5], sigma_yx, sigma_xx)


def test_euler_error_coefficient_of_exponential_growth():
    lam = 1.3
    times = np.linspace(0, 2, 9)
    flow, eps = euler_error_coefficient(lambda y: lam * y, lambda y: np.array([[lam]]), [1.0], times)
    np.testing.assert_allclose(flow[:, 0], np.exp(lam * times), rtol=1e-9)
    # (1 + h lam)^(t/h) = e^{lam t} (1 - h lam^2 t / 2 + O(h^2))
    np.testing.assert_allclose(eps[:, 0], -lam ** 2 * times * np.exp(lam * times) / 2, rtol=1e-8, atol=1e-12)
