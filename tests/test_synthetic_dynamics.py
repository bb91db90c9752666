"""The joint gradient flow of a two-layer linear net and its synthetic-gradient module (theory.synthetic_dynamics)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from sim import synthetic
from sim.data.tasks import whitened_gaussian
from sim.rules import rule_updates
from theory import synthetic_dynamics as sd

EPS = float(np.finfo(np.float64).eps)
TEACHER = np.array([[2.0, 0.3], [0.1, 1.0]])


@pytest.fixture(scope="module", params=[True, False], ids=["cdni", "dni"])
def flow(request):
    return sd.derive_flow(2, 2, 2, label=request.param)


def test_field_is_the_documented_closed_form(flow):
    b = flow.blocks
    w1, w2, a, s = b["W1"], b["W2"], b["A"], flow.teacher
    c_label = b.get("C", sp.zeros(2, 2))
    m = a * w1 + c_label * s
    g = w2.T * (w2 * w1 - s)
    expected = {"W1": -m, "W2": -(w2 * w1 - s) * w1.T, "A": -flow.beta * (m - g) * w1.T,
                "C": -flow.beta * (m - g) * s.T, "c": -flow.beta * b["c"]}
    rates = sd.unpack(flow, np.zeros(len(flow.state)))  # only for the block layout
    start = 0
    for name in rates:
        size = b[name].shape[0] * b[name].shape[1]
        got = sp.Matrix(flow.field[start:start + size]).reshape(*b[name].shape)
        assert sp.simplify(got - expected[name]) == sp.zeros(*b[name].shape), name
        start += size
    assert sp.simplify(flow.loss - sp.Rational(1, 2) * sum(e ** 2 for e in (w2 * w1 - s))) == 0


def test_field_equals_the_engine_on_whitened_data(flow):
    rng = np.random.default_rng(0)
    field = sd.numeric_field(flow)
    x = whitened_gaussian(rng, 16, 2)
    y = x @ TEACHER.T
    for _ in range(3):
        z = rng.normal(size=len(flow.state))
        b = sd.unpack(flow, z)
        inputs = ("hidden", "label") if flow.label else ("hidden",)
        params = {"hidden": b["A"][None], "bias": b["c"][None, :, 0]}
        if flow.label:
            params["label"] = b["C"][None]
        modules = synthetic.SyntheticGradients((params,), "linear", inputs, "true", np.array([1.0]), 1)
        weights = [b["W1"][None], b["W2"][None]]
        upd = rule_updates("cdni" if flow.label else "sg", weights, x, y, modules=modules)
        grads, _ = synthetic.module_gradients(modules, upd, weights=weights, targets=y, activation="linear")
        beta = 1.7
        engine = sd.pack(flow, W1=-upd.weights[0][0], W2=-upd.weights[1][0], A=-beta * grads[0]["hidden"][0],
                         C=-beta * grads[0]["label"][0] if flow.label else None, c=-beta * grads[0]["bias"][0][:, None])
        got = field(z, TEACHER, beta)
        np.testing.assert_allclose(got, engine, rtol=0, atol=1e3 * EPS * max(1.0, float(np.max(np.abs(engine)))))


def test_euler_steps_follow_the_flow_to_first_order(flow):
    rng = np.random.default_rng(1)
    z0 = sd.pack(flow, W1=0.3 * rng.normal(size=(2, 2)), W2=0.3 * rng.normal(size=(2, 2)))
    t_max, beta = 4.0, 2.0
    errors = []
    for lr in (0.02, 0.01):
        steps, every = int(round(t_max / lr)), int(round(0.5 / lr))
        sim = sd.simulate(flow, z0, teacher=TEACHER, lr=lr, beta=beta, steps=steps, record_every=every)
        ode = sd.integrate(flow, z0, t_max, teacher=TEACHER, beta=beta, t_eval=sim.t)
        np.testing.assert_allclose(sim.t, ode.t)
        np.testing.assert_allclose(sim.states[0], z0)
        errors.append(float(np.max(np.abs(sim.states - ode.states))))
        assert errors[-1] < 20 * lr  # O(lr) on this horizon
    ratio = errors[0] / errors[1]
    assert 1.7 < ratio < 2.3, errors  # halving the step halves the error: first order
    # the recorded loss is the loss of the recorded state
    np.testing.assert_allclose(sim.loss, ode.loss, atol=20 * 0.01)


def test_cdni_converges_where_dni_stalls():
    # a start from which DNI stalls (whether it does depends on the start, as in the scalar system)
    rng = np.random.default_rng(0)
    w1, w2 = 0.3 * rng.normal(size=(2, 2)), 0.3 * rng.normal(size=(2, 2))
    losses = {}
    for label in (True, False):
        f = sd.derive_flow(2, 2, 2, label=label)
        ode = sd.integrate(f, sd.pack(f, W1=w1, W2=w2), 60.0, teacher=TEACHER, beta=2.0, t_eval=[0.0, 60.0])
        losses[label] = ode.loss
    assert losses[True][-1] < 1e-6 * losses[True][0]
    assert losses[False][-1] > 0.05 * losses[False][0]


# --- fixed points and stability of the scalar system ---------------------------------------------------

def _family(solutions, **fixed):
    """The solution dict whose keys (by name) and values match ``fixed``."""
    for sol in solutions:
        named = {str(k): v for k, v in sol.items()}
        if set(named) == set(fixed) and all(sp.simplify(named[k] - sp.sympify(v)) == 0 for k, v in fixed.items()):
            return sol
    raise AssertionError(f"no fixed-point family {fixed} among {solutions}")


def test_scalar_dni_fixed_points_and_their_stability():
    f = sd.derive_flow(label=False)
    w1, w2, a, c = f.state
    s = f.teacher[0, 0]
    solutions = sd.fixed_points(f)
    _family(solutions, w1=0, c=0)  # the spurious set: any w2 and a
    _family(solutions, c=0, a=0, w2=s / w1)  # the solutions
    beta = 1.5
    # solutions: attracting, one zero eigenvalue (along the hyperbola w1 w2 = s)
    eig = sd.stability(f, [0.8, 1.0 / 0.8, 0.0, 0.0], teacher=[[1.0]], beta=beta)
    assert sd.classify(eig) == "attracting-marginal" and np.sum(np.abs(eig) < 1e-9) == 1
    # the spurious set w1 = 0: eigenvalues -a, 0, 0, -beta
    for a_value, verdict in ((0.7, "attracting-marginal"), (-0.7, "unstable")):
        eig = sd.stability(f, [0.0, -0.4, a_value, 0.0], teacher=[[1.0]], beta=beta)
        np.testing.assert_allclose(np.sort(np.real(eig)), np.sort([-a_value, 0.0, 0.0, -beta]), atol=1e-12)
        assert sd.classify(eig) == verdict


def test_scalar_cdni_fixed_points_and_their_stability():
    f = sd.derive_flow(label=True)
    w1, w2, a, b, c = f.state
    s = f.teacher[0, 0]
    solutions = sd.fixed_points(f)
    _family(solutions, w2=s / w1, b=-a * w1 / s, c=0)
    _family(solutions, w1=0, w2=0, b=0, c=0)
    beta = 1.5
    for w1_value, a_value in ((0.8, 0.3), (-1.2, 0.5)):
        point = [w1_value, 1.0 / w1_value, a_value, -a_value * w1_value, 0.0]
        eig = sd.stability(f, point, teacher=[[1.0]], beta=beta)
        assert sd.classify(eig) == "attracting-marginal" and np.sum(np.abs(eig) < 1e-9) == 2
    # the origin is a saddle for every module state a
    for a_value in (-1.0, 0.0, 2.0):
        assert sd.classify(sd.stability(f, {w1: 0, w2: 0, a: a_value, b: 0, c: 0}, teacher=[[1.0]], beta=beta)) \
            == "unstable"


def test_dni_keeps_the_sign_of_w1_and_can_stall_on_the_spurious_set():
    f = sd.derive_flow(label=False)
    fc = sd.derive_flow(label=True)
    # wrong-sign start: a fast module drives w1 to 0 before w2 turns (loss stays s^2/2); cDNI crosses w1 = 0
    ode = sd.integrate(f, sd.pack(f, W1=[[0.3]], W2=[[-1.0]]), 200.0, teacher=[[1.0]], beta=4.0)
    assert np.all(ode.states[:, 0] > -1e-12)  # w1 keeps its sign (up to the solver's tolerance)
    assert abs(ode.states[-1, 0]) < 1e-6 and ode.states[-1, 2] > 0
    np.testing.assert_allclose(ode.loss[-1], 0.5, rtol=1e-6)
    cdni = sd.integrate(fc, sd.pack(fc, W1=[[0.3]], W2=[[-1.0]]), 200.0, teacher=[[1.0]], beta=4.0)
    assert cdni.loss[-1] < 1e-8 and cdni.states[-1, 0] < 0
    # a slower module lets w2 turn first, and DNI converges
    slow = sd.integrate(f, sd.pack(f, W1=[[0.3]], W2=[[-1.0]]), 200.0, teacher=[[1.0]], beta=0.5)
    assert slow.loss[-1] < 1e-8


def test_errors():
    f = sd.derive_flow(label=False)
    with pytest.raises(ValueError, match="positive integers"):
        sd.derive_flow(0, 1, 1)
    with pytest.raises(ValueError, match=r"unknown blocks \['B'\]"):
        sd.pack(f, B=[[1.0]])
    with pytest.raises(ValueError, match=r"block W1 must have shape \(1, 1\)"):
        sd.pack(f, W1=[1.0, 2.0])
    with pytest.raises(ValueError, match="a state of this flow has 4 entries"):
        sd.unpack(f, np.zeros(5))
    with pytest.raises(ValueError, match="t_max must be a positive finite time"):
        sd.integrate(f, np.zeros(4), -1.0, teacher=[[1.0]], beta=1.0)
    with pytest.raises(ValueError, match="beta must be a non-negative finite ratio"):
        sd.integrate(f, np.zeros(4), 1.0, teacher=[[1.0]], beta=np.nan)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        sd.simulate(f, np.zeros(4), teacher=[[1.0]], lr=0.1, beta=1.0, steps=-2)
