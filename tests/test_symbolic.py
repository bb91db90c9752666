"""Symbolic gradient flows (theory.symbolic): derivations checked symbolically and numerically."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.rules import compute_updates, feedback_shapes
from theory import symbolic

EPS = float(np.finfo(np.float64).eps)
MAX_EXAMPLES = min(10, settings().max_examples)
SMALL = [(1, 1, 1), (2, 2, 2), (1, 1, 1, 1), (2, 2, 2, 2)]
RECTANGULAR = [(3, 4, 2), (2, 3, 3, 3)]


def random_problem(rule, sizes, rng, scale=0.7):
    weights = [rng.normal(0.0, scale, size=(b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    feedback = [rng.normal(size=s) for s in feedback_shapes(rule, sizes)]
    target = rng.normal(size=(sizes[-1], sizes[0]))
    return weights, feedback, target


def engine_field(rule, weights, feedback, target, rng, n_samples=16):
    x, y = symbolic.whitened_data(target, n_samples, rng)
    updates = compute_updates(rule, [w[None] for w in weights], x, y,
                              feedback=[b[None] for b in feedback] if feedback else None)
    return [-u[0] for u in updates]


def symbol(name):
    return sp.Symbol(name, real=True)


# --- the vector field ------------------------------------------------------------------------------

def test_scalar_fields_have_the_papers_form():
    a1, a2, a3, c, s, b1, b2 = (symbol(n) for n in ("a1", "a2", "a3", "c", "s", "b1", "b2"))
    e = a1 * a2 - s
    assert symbolic.is_zero(symbolic.linear_flow("bp", (1, 1, 1)).vector - sp.Matrix([-a2 * e, -a1 * e]))
    assert symbolic.is_zero(symbolic.linear_flow("fa", (1, 1, 1)).vector - sp.Matrix([-c * e, -a1 * e]))
    e3 = a1 * a2 * a3 - s
    dfa = symbolic.linear_flow("dfa", (1, 1, 1, 1))
    assert symbolic.is_zero(dfa.vector - sp.Matrix([-b1 * e3, -b2 * e3 * a1, -e3 * a1 * a2]))


@pytest.mark.parametrize("rule", symbolic.RULE_NAMES)
def test_field_is_minus_the_loss_gradient_for_bp(rule):
    flow = symbolic.linear_flow(rule, (2, 2, 2))
    if rule == "bp":
        gradient = sp.Matrix([sp.diff(flow.loss(), w) for w in flow.state])
        assert symbolic.is_zero(flow.vector + gradient)
    else:  # the output layer's update is the gradient for every rule
        top = flow.weights[-1]
        grad = sp.Matrix([sp.diff(flow.loss(), w) for w in top])
        assert symbolic.is_zero(sp.Matrix(list(flow.field[-1])) + grad)


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=min(4, MAX_EXAMPLES), deadline=None)
def test_derived_field_equals_compute_updates(seed):
    rng = np.random.default_rng(seed)
    for rule in symbolic.RULE_NAMES:
        for sizes in SMALL + RECTANGULAR:
            flow = symbolic.linear_flow(rule, sizes)
            weights, feedback, target = random_problem(rule, sizes, rng)
            derived = symbolic.numeric_field(flow)(weights, feedback, target)
            engine = engine_field(rule, weights, feedback, target, rng)
            scale = max(np.max(np.abs(e)) for e in engine)
            for d, e in zip(derived, engine):
                np.testing.assert_allclose(d, e, rtol=0, atol=64 * len(sizes) * 20 * EPS * scale)


def test_state_round_trip_and_parameters():
    flow = symbolic.linear_flow("dfa", (3, 4, 2))
    assert len(flow.state) == 4 * 3 + 2 * 4
    assert len(flow.parameters) == 4 * 2 + 2 * 3  # B_1 (4x2), then S (2x3)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))]
    back = symbolic.state_weights(flow, symbolic.state_vector(weights))
    for a, b in zip(weights, back):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [("sg", (1, 1, 1)), ("bp", (3,)), ("fa", (2, 0, 2))])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        symbolic.linear_flow(*bad)


def test_whitened_data_is_exactly_whitened():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(2, 3))
    x, y = symbolic.whitened_data(target, 10, rng)
    np.testing.assert_allclose(x.T @ x / 10, np.eye(3), atol=64 * EPS)
    np.testing.assert_allclose(y.T @ x / 10, target, atol=64 * EPS)
    with pytest.raises(ValueError):
        symbolic.whitened_data(target, 2, rng)


# --- conserved quantities -----------------------------------------------------------------------------

@pytest.mark.parametrize("rule", symbolic.RULE_NAMES)
@pytest.mark.parametrize("sizes", SMALL + [(3, 2, 2), (2, 3, 2)])
def test_conserved_quantities_have_zero_time_derivative(rule, sizes):
    flow = symbolic.linear_flow(rule, sizes)
    quantities = symbolic.conserved_quantities(flow)
    assert len(quantities) == len(sizes) - 2
    for q in quantities.values():
        assert symbolic.is_zero(q - q.T)
        assert symbolic.is_zero(symbolic.time_derivative(q, flow))


def test_named_scalar_laws():
    a1, a2, a3, c, b1, b2 = (symbol(n) for n in ("a1", "a2", "a3", "c", "b1", "b2"))
    fa = symbolic.conserved_quantities(symbolic.linear_flow("fa", (1, 1, 1)))
    assert symbolic.is_zero(fa["Q_1"][0, 0] - (a1 ** 2 - 2 * c * a2))
    dfa = symbolic.conserved_quantities(symbolic.linear_flow("dfa", (1, 1, 1, 1)))
    assert symbolic.is_zero(b2 * dfa["Q_1"][0, 0] - (b2 * a1 ** 2 - 2 * b1 * a2))
    assert symbolic.is_zero(dfa["Q_2"][0, 0] - (a2 ** 2 - 2 * b2 * a3))
    # two-layer DFA is FA: the same law
    two = symbolic.conserved_quantities(symbolic.linear_flow("dfa", (1, 1, 1)))
    assert symbolic.is_zero(two["Q_1"][0, 0] - (a1 ** 2 - 2 * symbol("b1") * a2))


@pytest.mark.parametrize("rule", symbolic.RULE_NAMES)
def test_a_wrong_sign_is_not_conserved(rule):
    flow = symbolic.linear_flow(rule, (2, 2, 2))
    w = sp.Matrix(flow.weights[0])
    wrong = 2 * w * w.T - symbolic.conserved_quantities(flow)["Q_1"]
    assert not symbolic.is_zero(symbolic.time_derivative(wrong, flow))


def numeric_dfa_law(weights, feedback):
    """The DFA conservation law computed independently with numpy's pseudo-inverse."""
    out = []
    n_out = weights[-1].shape[0]
    for l in range(len(weights) - 1):
        b_above = np.eye(n_out) if l + 1 == len(weights) - 1 else feedback[l + 1]
        a = feedback[l] @ np.linalg.pinv(b_above)
        cross = a @ weights[l + 1]
        out.append(weights[l] @ weights[l].T - cross - cross.T)
    return out


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=MAX_EXAMPLES, deadline=None)
def test_conservation_along_rk45_trajectories(seed):
    rng = np.random.default_rng(seed)
    for rule in symbolic.RULE_NAMES:
        for sizes in SMALL:
            flow = symbolic.linear_flow(rule, sizes)
            weights, feedback, target = random_problem(rule, sizes, rng, scale=0.5)
            _, path = symbolic.integrate_flow(flow, weights, feedback, target, 1.5, n_points=5)
            for q in symbolic.conserved_quantities(flow).values():
                fn = symbolic.numeric_quantity(q, flow)
                start = fn(weights, feedback, target)
                scale = 1.0 + sum(np.linalg.norm(w) ** 2 for w in weights)
                for w in path:
                    np.testing.assert_allclose(fn(w, feedback, target), start, rtol=0, atol=1e-7 * scale)


def test_dfa_law_for_rectangular_widths_numerically():
    """The DFA law with A_l = B_l B_{l+1}^+ holds whenever the hidden widths are at least n_L."""
    rng = np.random.default_rng(3)
    sizes = (2, 4, 3, 2)
    flow = symbolic.linear_flow("dfa", sizes)
    weights, feedback, target = random_problem("dfa", sizes, rng, scale=0.5)
    _, path = symbolic.integrate_flow(flow, weights, feedback, target, 1.0, n_points=4)
    start = numeric_dfa_law(weights, feedback)
    for w in path:
        for q, q0 in zip(numeric_dfa_law(w, feedback), start):
            np.testing.assert_allclose(q, q0, rtol=0, atol=1e-7)


def test_dfa_law_matches_its_symbolic_form_for_square_feedback():
    rng = np.random.default_rng(4)
    flow = symbolic.linear_flow("dfa", (2, 2, 2, 2))
    weights, feedback, target = random_problem("dfa", (2, 2, 2, 2), rng)
    for q, expected in zip(symbolic.conserved_quantities(flow).values(), numeric_dfa_law(weights, feedback)):
        np.testing.assert_allclose(symbolic.numeric_quantity(q, flow)(weights, feedback, target), expected,
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_gradient_descent_changes_the_law_by_exactly_eta_squared_dw_dwT(rule):
    """One step of GD changes W1 W1^T - sym(A W2) by eta^2 dW1 dW1^T: O(eta) at fixed time."""
    rng = np.random.default_rng(5)
    sizes = (3, 4, 2)
    flow = symbolic.linear_flow(rule, sizes)
    weights, feedback, target = random_problem(rule, sizes, rng)
    x, y = symbolic.whitened_data(target, 16, rng)
    q = symbolic.numeric_quantity(symbolic.conserved_quantities(flow)["Q_1"], flow)
    eta = 0.1
    dw = [d[0] for d in compute_updates(rule, [w[None] for w in weights], x, y, feedback=[b[None] for b in feedback])]
    stepped = [w - eta * d for w, d in zip(weights, dw)]
    change = q(stepped, feedback, target) - q(weights, feedback, target)
    np.testing.assert_allclose(change, eta ** 2 * dw[0] @ dw[0].T, rtol=1e-10, atol=1e-13)


# --- fixed points and Jacobians ------------------------------------------------------------------------

def test_bp_scalar_chain_fixed_points_and_eigenvalues():
    flow = symbolic.linear_flow("bp", (1, 1, 1))
    a1, a2 = flow.state
    s = symbol("s")
    points = symbolic.fixed_points(flow)
    assert {a1: 0, a2: 0} in points
    hyperbola = [p for p in points if a2 not in p and a1 in p]
    assert len(hyperbola) == 1 and symbolic.is_zero(hyperbola[0][a1] - s / a2)
    assert set(symbolic.eigenvalues_at(flow, {a1: 0, a2: 0})) == {s, -s}
    eig = symbolic.eigenvalues_at(flow, {a1: s / a2})
    assert any(symbolic.is_zero(k) for k in eig)
    assert any(symbolic.is_zero(k + a2 ** 2 + s ** 2 / a2 ** 2) for k in eig)


def test_fa_scalar_chain_has_no_fixed_point_at_the_origin():
    flow = symbolic.linear_flow("fa", (1, 1, 1))
    a1, a2 = flow.state
    c, s = symbol("c"), symbol("s")
    points = symbolic.fixed_points(flow)
    assert len(points) == 1 and symbolic.is_zero(points[0][a1] - s / a2)
    eig = symbolic.eigenvalues_at(flow, {a1: s / a2})
    assert any(symbolic.is_zero(k + s ** 2 / a2 ** 2 + c * a2) for k in eig)


def test_dfa_deep_scalar_chain_fixed_points_are_the_optima():
    flow = symbolic.linear_flow("dfa", (1, 1, 1, 1))
    a1, a2, a3 = flow.state
    points = symbolic.fixed_points(flow)
    assert len(points) == 1 and symbolic.is_zero(points[0][a1] - symbol("s") / (a2 * a3))


def test_bp_2x2_origin_is_a_saddle_with_eigenvalues_plus_minus_singular_values():
    flow = symbolic.linear_flow("bp", (2, 2, 2))
    jac0 = sp.Matrix(symbolic.jacobian(flow)).subs({w: 0 for w in flow.state})
    lam = sp.Symbol("lambda")
    s = flow.target
    frob = sum(v ** 2 for v in s)
    det = s[0, 0] * s[1, 1] - s[0, 1] * s[1, 0]
    expected = (lam ** 4 - frob * lam ** 2 + det ** 2) ** 2
    assert symbolic.is_zero(jac0.charpoly(lam).as_expr() - sp.expand(expected))
    rng = np.random.default_rng(6)
    target = rng.normal(size=(2, 2))
    sigma = np.linalg.svd(target, compute_uv=False)
    numeric = symbolic.numeric_quantity(symbolic.jacobian(flow), flow)([np.zeros((2, 2))] * 2, [], target)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(numeric).real),
                               np.sort(np.concatenate([sigma, sigma, -sigma, -sigma])), atol=1e-12)


# --- the scalar FA chain's limit ----------------------------------------------------------------------

@pytest.mark.parametrize("start", [(0.3, -0.2, 1.0, 1.0), (-3.0, 0.0, 1.0, 1.0), (1.5, 2.0, -0.7, 1.3),
                                   (0.0, 0.0, 0.8, -1.1)])
def test_scalar_fa_limit_matches_the_integrated_flow(start):
    a1, a2, c, s = start
    flow = symbolic.linear_flow("fa", (1, 1, 1))
    p1, p2 = symbolic.scalar_fa_limit(a1, a2, c, s)
    np.testing.assert_allclose(p1 * p2, s, rtol=1e-12)
    assert p1 ** 2 + c * p2 > 0  # a stable point of the hyperbola
    _, path = symbolic.integrate_flow(flow, [np.array([[a1]]), np.array([[a2]])], [np.array([[c]])],
                                      np.array([[s]]), 60.0, n_points=2)
    np.testing.assert_allclose([path[-1][0][0, 0], path[-1][1][0, 0]], [p1, p2], rtol=1e-6, atol=1e-8)


def test_scalar_fa_limit_can_be_anti_aligned():
    p1, p2 = symbolic.scalar_fa_limit(-3.0, 0.0, 1.0, 1.0)
    assert 1.0 * p2 < 0  # c a2 < 0: the feedback and the forward weight disagree in sign
    np.testing.assert_allclose(symbolic.conserved_scalar_fa(p1, p2, 1.0), 9.0, rtol=1e-12)


def test_public_functions_have_numpydoc_docstrings():
    for name, fn in inspect.getmembers(symbolic, inspect.isfunction):
        if name.startswith("_") or fn.__module__ != symbolic.__name__:
            continue
        assert fn.__doc__ and len(fn.__doc__.strip()) > 20, name
