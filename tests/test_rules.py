"""Learning rules (sim.rules): BP is the gradient, FA/DFA reduce to BP, ensembles are independent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sim import nn
from sim.network import init_network
from sim.rules import compute_updates, draw_feedback, feedback_shapes, get_rule, rule_updates

EPS = float(np.finfo(np.float64).eps)
#: Central-difference step: balances truncation (h^2) against rounding (eps / h).
FD_STEP = EPS ** (1 / 3)
MAX_EXAMPLES = min(25, settings().max_examples)
ACTIVATIONS = nn.ACTIVATIONS
LOSSES = nn.LOSSES


# --- instances and references ---------------------------------------------------------------------

def make_instance(seed, sizes, n_members, batch, *, loss="mse", bias=False, scale=1.0, shared_x=False):
    """A well-conditioned random instance drawn from ``default_rng(seed)``.

    Weights have entries ``N(0, scale^2 / n_in)``, so pre-activations stay O(scale);
    inputs are standard normal; ``mse`` targets are standard normal, ``ce`` targets one-hot.
    """
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, scale / np.sqrt(n_in), size=(n_members, n_out, n_in))
               for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0.0, 0.5, size=(n_members, n)) for n in sizes[1:]] if bias else None
    lead = () if shared_x else (n_members,)
    x = rng.normal(size=(*lead, batch, sizes[0]))
    if loss == "mse":
        y = rng.normal(size=(*lead, batch, sizes[-1]))
    else:
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=(*lead, batch))]
    return weights, biases, x, y


def hidden_preactivations(weights, biases, x, activation):
    """Hidden pre-activations by an independent plain-numpy forward pass."""
    h = np.broadcast_to(x, (weights[0].shape[0], *x.shape[-2:]))
    out = []
    for i, w in enumerate(weights[:-1]):
        a = np.einsum("ebj,eij->ebi", h, w)
        if biases is not None:
            a = a + biases[i][:, None, :]
        out.append(a)
        h = {"linear": a, "relu": np.maximum(a, 0.0), "tanh": np.tanh(a)}[activation]
    return out


def relu_margin(weights, biases, x):
    """Smallest distance of a hidden pre-activation from the relu kink at 0."""
    pre = hidden_preactivations(weights, biases, x, "relu")
    return min((float(np.min(np.abs(a))) for a in pre), default=np.inf)


def relu_patterns(weights, biases, x):
    return [a > 0 for a in hidden_preactivations(weights, biases, x, "relu")]


def finite_difference_gradients(weights, biases, x, y, activation, loss, step=FD_STEP):
    """Central differences of ``loss_value(predict(...))`` per member, for weights and biases.

    Members are independent, so entry ``(i, j)`` is perturbed in all members at once
    and member ``m``'s loss gives member ``m``'s derivative. Returns the gradients and
    whether every perturbed point kept the relu activation pattern (FD is valid).
    """
    base_pattern = relu_patterns(weights, biases, x) if activation == "relu" else None
    valid = True

    def member_losses(ws, bs):
        nonlocal valid
        if base_pattern is not None:
            valid &= all(np.array_equal(p, q) for p, q in zip(relu_patterns(ws, bs, x), base_pattern))
        return nn.loss_value(nn.predict(ws, x, activation, bs), y, loss)

    def gradient_of(params, index, rebuild):
        grad = np.zeros_like(params[index])
        for pos in np.ndindex(params[index].shape[1:]):
            plus, minus = [p.copy() for p in params], [p.copy() for p in params]
            plus[index][(slice(None), *pos)] += step
            minus[index][(slice(None), *pos)] -= step
            grad[(slice(None), *pos)] = (member_losses(*rebuild(plus)) - member_losses(*rebuild(minus))) / (2 * step)
        return grad

    w_grads = [gradient_of(list(weights), i, lambda ws: (ws, biases)) for i in range(len(weights))]
    b_grads = None
    if biases is not None:
        b_grads = [gradient_of(list(biases), i, lambda bs: (weights, bs)) for i in range(len(biases))]
    return w_grads, b_grads, valid


def finite_difference_check(weights, biases, x, y, activation, loss):
    """FD gradients with step h, and an absolute tolerance for comparing them with a gradient.

    The central-difference error is ``c h^2`` (truncation) plus O(eps / h) rounding.
    Steps ``h`` and ``2h`` give ``|FD(h) - FD(2h)| ~ 3 c h^2``, an estimate (with a
    factor 3 margin) of the truncation error that scales with the instance's own
    higher derivatives; ``sqrt(eps)`` times the gradient scale covers rounding
    (which is O(eps^(2/3)) relative). Any real error in a gradient is O(1) relative.

    Returns ``(weight_grads, bias_grads, tol, valid)``; ``valid`` is False when a
    relu pattern changed under a perturbation or the instance is so ill-conditioned
    that the truncation estimate exceeds 1e-3 of the gradient scale.
    """
    fd_w, fd_b, valid_h = finite_difference_gradients(weights, biases, x, y, activation, loss, FD_STEP)
    fd2_w, fd2_b, valid_2h = finite_difference_gradients(weights, biases, x, y, activation, loss, 2 * FD_STEP)
    fine, coarse = fd_w + (fd_b or []), fd2_w + (fd2_b or [])
    assert all(np.all(np.isfinite(g)) for g in fine), "the loss is not finite near the instance"
    scale = max(1.0, *(float(np.max(np.abs(g), initial=0.0)) for g in fine))
    truncation = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(fine, coarse))
    tol = np.sqrt(EPS) * scale + truncation
    return fd_w, fd_b, tol, valid_h and valid_2h and truncation < 1e-3 * scale


def rounding_tolerance(sizes, batch=1):
    """Relative tolerance for two evaluations of the same expression in a different order."""
    return 16 * EPS * (sum(sizes) + batch)


def reference_updates(rule, weights, x, y, activation, loss, feedback=None):
    """The rule table of DESIGN.md in plain numpy (einsum), independent of sim.rules."""
    n_members = weights[0].shape[0]
    h = np.broadcast_to(x, (n_members, *x.shape[-2:]))
    y = np.broadcast_to(y, (n_members, *y.shape[-2:]))
    inputs, pre = [], []
    for i, w in enumerate(weights):
        inputs.append(h)
        a = np.einsum("ebj,eij->ebi", h, w)
        pre.append(a)
        h = {"linear": a, "relu": np.maximum(a, 0.0), "tanh": np.tanh(a)}[activation]
    y_hat = pre[-1]
    if loss == "mse":
        error = y_hat - y
    else:
        z = np.exp(y_hat - y_hat.max(axis=-1, keepdims=True))
        error = z / z.sum(axis=-1, keepdims=True) - y
    derivative = {"linear": lambda a: np.ones_like(a), "relu": lambda a: (a > 0).astype(float),
                  "tanh": lambda a: 1.0 - np.tanh(a) ** 2}[activation]
    deltas = [None] * len(weights)
    deltas[-1] = error
    for i in range(len(weights) - 2, -1, -1):
        if rule == "bp":
            back = np.einsum("ebk,ekj->ebj", deltas[i + 1], weights[i + 1])
        else:
            b = np.broadcast_to(feedback[i], (n_members, *feedback[i].shape[-2:]))
            source = deltas[i + 1] if rule == "fa" else error
            back = np.einsum("ebk,ejk->ebj", source, b)
        deltas[i] = back * derivative(pre[i])
    batch = x.shape[-2]
    return [np.einsum("ebi,ebj->eij", d, hh) / batch for d, hh in zip(deltas, inputs)]


def transposed(weights):
    """FA feedback equal to the forward weights: B_{l+1} = W_{l+1}^T."""
    return [np.swapaxes(w, -1, -2).copy() for w in weights[1:]]


# --- BP is the gradient ---------------------------------------------------------------------------

SIZES = (3, 5, 4, 2)
#: Seed of the fixed FD instances; the relu test asserts its margin below.
FD_SEED = 11


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bp_equals_finite_differences(activation, loss, bias):
    weights, biases, x, y = make_instance(FD_SEED, SIZES, 2, 4, loss=loss, bias=bias)
    if activation == "relu":
        # FD across a kink is meaningless: require pre-activations far from 0 on the scale of the step
        assert relu_margin(weights, biases, x) > 1e3 * FD_STEP
    upd = rule_updates("bp", weights, x, y, activation=activation, loss=loss, biases=biases)
    fd_w, fd_b, tol, valid = finite_difference_check(weights, biases, x, y, activation, loss)
    assert valid
    for got, want in zip(upd.weights, fd_w):
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    if bias:
        assert upd.biases is not None and len(upd.biases) == len(weights)
        for got, want in zip(upd.biases, fd_b):
            np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    else:
        assert upd.biases is None
    # the reported loss is the loss of the forward pass
    np.testing.assert_allclose(upd.loss, nn.loss_value(nn.predict(weights, x, activation, biases), y, loss),
                               rtol=rounding_tolerance(SIZES), atol=0)


@pytest.mark.parametrize("loss", LOSSES)
def test_bp_single_layer_equals_finite_differences(loss):
    weights, _, x, y = make_instance(3, (4, 3), 3, 5, loss=loss)
    got = compute_updates("bp", weights, x, y, loss=loss)
    fd_w, _, tol, valid = finite_difference_check(weights, None, x, y, "linear", loss)
    assert valid
    np.testing.assert_allclose(got[0], fd_w[0], rtol=0, atol=tol)


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_updates_match_reference_table(rule, activation, loss):
    weights, _, x, y = make_instance(5, SIZES, 3, 4, loss=loss)
    feedback = draw_feedback(rule, SIZES, 3, seed=9)
    got = compute_updates(rule, weights, x, y, activation=activation, loss=loss, feedback=feedback)
    want = reference_updates(rule, weights, x, y, activation, loss, feedback)
    assert len(got) == len(weights)
    for g, w, ref in zip(got, want, weights):
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, w, rtol=rounding_tolerance(SIZES, 4), atol=EPS * float(np.max(np.abs(w))))


def test_shared_inputs_equal_per_member_inputs():
    weights, biases, x, y = make_instance(2, SIZES, 3, 4, loss="ce", bias=True, shared_x=True)
    tiled_x, tiled_y = np.broadcast_to(x, (3, *x.shape)).copy(), np.broadcast_to(y, (3, *y.shape)).copy()
    feedback = draw_feedback("fa", SIZES, 3, seed=1)
    shared = rule_updates("fa", weights, x, y, activation="tanh", loss="ce", feedback=feedback, biases=biases)
    tiled = rule_updates("fa", weights, tiled_x, tiled_y, activation="tanh", loss="ce", feedback=feedback,
                         biases=biases)
    tol = rounding_tolerance(SIZES, 4)
    for a, b in zip(shared.weights + shared.biases, tiled.weights + tiled.biases):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


def test_compute_updates_is_rule_updates_weights():
    weights, _, x, y = make_instance(4, SIZES, 2, 3)
    feedback = draw_feedback("dfa", SIZES, 2, seed=4)
    a = compute_updates("dfa", weights, x, y, activation="tanh", feedback=feedback)
    b = rule_updates("dfa", weights, x, y, activation="tanh", feedback=feedback).weights
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_compute_updates_is_pure():
    weights, _, x, y = make_instance(6, SIZES, 2, 3)
    before = [w.copy() for w in weights], x.copy(), y.copy()
    first = compute_updates("bp", weights, x, y, activation="relu")
    second = compute_updates("bp", weights, x, y, activation="relu")
    for w, w0 in zip(weights, before[0]):
        np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(x, before[1])
    np.testing.assert_array_equal(y, before[2])
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_float32_updates_agree_with_float64_to_float32_precision(rule):
    weights, biases, x, y = make_instance(15, SIZES, 2, 4, loss="ce", bias=True)
    feedback = draw_feedback(rule, SIZES, 2, seed=15)
    want = rule_updates(rule, weights, x, y, activation="tanh", loss="ce", feedback=feedback, biases=biases)
    single = [a.astype(np.float32) for a in weights], [b.astype(np.float32) for b in biases]
    got = rule_updates(rule, single[0], x.astype(np.float32), y.astype(np.float32), activation="tanh", loss="ce",
                       feedback=draw_feedback(rule, SIZES, 2, seed=15, dtype="float32"), biases=single[1])
    eps32 = float(np.finfo(np.float32).eps)
    tol = 16 * eps32 * (sum(SIZES) + 4)
    for a, b in zip(got.weights + got.biases, want.weights + want.biases):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


# --- FA and DFA reduce to BP ----------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fa_with_transposed_weights_equals_bp(activation, loss, bias):
    weights, biases, x, y = make_instance(7, SIZES, 2, 4, loss=loss, bias=bias)
    bp = rule_updates("bp", weights, x, y, activation=activation, loss=loss, biases=biases)
    fa = rule_updates("fa", weights, x, y, activation=activation, loss=loss, biases=biases,
                      feedback=transposed(weights))
    tol = rounding_tolerance(SIZES, 4)
    for a, b in zip(fa.weights + (fa.biases or []), bp.weights + (bp.biases or [])):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


def test_fa_with_shared_transposed_feedback_of_one_member_equals_bp():
    weights, _, x, y = make_instance(8, SIZES, 1, 4)
    shared = [b[0] for b in transposed(weights)]  # (rows, cols): broadcast over members
    fa = compute_updates("fa", weights, x, y, activation="tanh", feedback=shared)
    bp = compute_updates("bp", weights, x, y, activation="tanh")
    tol = rounding_tolerance(SIZES, 4)
    for a, b in zip(fa, bp):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dfa_one_hidden_layer_with_transposed_weights_equals_bp(activation, loss):
    sizes = (4, 6, 3)
    weights, biases, x, y = make_instance(10, sizes, 3, 5, loss=loss, bias=True)
    bp = rule_updates("bp", weights, x, y, activation=activation, loss=loss, biases=biases)
    dfa = rule_updates("dfa", weights, x, y, activation=activation, loss=loss, biases=biases,
                       feedback=[np.swapaxes(weights[1], -1, -2).copy()])
    tol = rounding_tolerance(sizes, 5)
    for a, b in zip(dfa.weights + dfa.biases, bp.weights + bp.biases):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


def test_dfa_deep_linear_with_transposed_products_equals_bp():
    # linear network: BP's delta_l = (W_L ... W_{l+1})^T e, so DFA with B_l = (W_L ... W_{l+1})^T is BP
    sizes = (3, 5, 4, 6, 2)
    weights, _, x, y = make_instance(12, sizes, 2, 4)
    feedback = []
    for i in range(len(weights) - 1):
        product = weights[-1]
        for w in reversed(weights[i + 1:-1]):
            product = product @ w
        feedback.append(np.swapaxes(product, -1, -2).copy())
    dfa = compute_updates("dfa", weights, x, y, feedback=feedback)
    bp = compute_updates("bp", weights, x, y)
    tol = rounding_tolerance(sizes, 4)
    for a, b in zip(dfa, bp):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_hidden_updates_are_not_zero_at_random_init(rule, activation):
    sizes = (5, 8, 7, 3)
    net = init_network(sizes, 2, seed=3, activation=activation)
    feedback = draw_feedback(rule, sizes, 2, seed=3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, sizes[0])), rng.normal(size=(6, sizes[-1]))
    upd = compute_updates(rule, net.weights, x, y, activation=activation, feedback=feedback)
    top = np.linalg.norm(upd[-1], axis=(1, 2))
    assert np.all(top > 0)
    for dw in upd[:-1]:
        hidden = np.linalg.norm(dw, axis=(1, 2))
        # clearly non-zero: on the scale of the output layer's update, not of rounding
        assert np.all(hidden > 1e-2 * top), (rule, activation, hidden, top)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_output_layer_update_of_every_rule_is_bp(rule):
    weights, _, x, y = make_instance(13, SIZES, 2, 4, loss="ce")
    feedback = draw_feedback(rule, SIZES, 2, seed=13)
    own = compute_updates(rule, weights, x, y, activation="tanh", loss="ce", feedback=feedback)
    bp = compute_updates("bp", weights, x, y, activation="tanh", loss="ce")
    np.testing.assert_allclose(own[-1], bp[-1], rtol=rounding_tolerance(SIZES, 4), atol=0)
    # and random feedback really differs from BP below the top
    assert np.linalg.norm(own[0] - bp[0]) > 1e-3 * np.linalg.norm(bp[0])


def test_bp_ignores_feedback():
    weights, _, x, y = make_instance(14, SIZES, 2, 4)
    junk = [np.ones((2, 2))]
    a = compute_updates("bp", weights, x, y, feedback=junk)
    b = compute_updates("bp", weights, x, y)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# --- ensembles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_ensemble_equals_separate_members(rule, activation):
    sizes = (4, 6, 5, 3)
    n_members = 4
    net = init_network(sizes, n_members, seed=21, activation=activation, bias=True,
                       scale=[0.5, 1.0, 1.5, 2.0])
    rng = np.random.default_rng(21)
    biases = [rng.normal(size=b.shape) for b in net.biases]
    x, y = rng.normal(size=(n_members, 5, sizes[0])), rng.normal(size=(n_members, 5, sizes[-1]))
    feedback = draw_feedback(rule, sizes, n_members, seed=21)
    full = rule_updates(rule, net.weights, x, y, activation=activation, feedback=feedback, biases=biases)
    tol = rounding_tolerance(sizes, 5)
    for m in range(n_members):
        member = net.member(m)
        fb = None if feedback is None else [b[m:m + 1] for b in feedback]
        one = rule_updates(rule, member.weights, x[m:m + 1], y[m:m + 1], activation=activation, feedback=fb,
                           biases=[b[m:m + 1] for b in biases])
        for a, b in zip(one.weights + one.biases, full.weights + full.biases):
            np.testing.assert_allclose(a[0], b[m], rtol=tol, atol=tol * float(np.max(np.abs(b[m]))))
        np.testing.assert_allclose(one.loss[0], full.loss[m], rtol=tol, atol=0)


# --- feedback matrices ----------------------------------------------------------------------------

def test_feedback_shapes():
    sizes = (3, 5, 4, 2)
    assert feedback_shapes("bp", sizes) == []
    assert feedback_shapes("fa", sizes) == [(sizes[i], sizes[i + 1]) for i in range(1, len(sizes) - 1)]
    assert feedback_shapes("dfa", sizes) == [(sizes[i], sizes[-1]) for i in range(1, len(sizes) - 1)]
    assert draw_feedback("bp", sizes, 2, seed=0) is None
    for rule in ("fa", "dfa"):
        fb = draw_feedback(rule, sizes, 3, seed=0)
        assert [b.shape for b in fb] == [(3, *s) for s in feedback_shapes(rule, sizes)]
        assert all(b.dtype == np.float64 for b in fb)
    assert draw_feedback("fa", sizes, 2, seed=0, dtype="float32")[0].dtype == np.float32


@pytest.mark.parametrize("distribution", ["gaussian", "uniform"])
def test_feedback_statistics(distribution):
    rows, cols, scale = 300, 200, 1.7
    (b,) = draw_feedback("dfa", (2, rows, cols), 2, seed=5, distribution=distribution, scale=scale)
    std = scale / np.sqrt(cols)
    n = rows * cols
    # sample mean and std of n i.i.d. draws: 6 standard errors
    np.testing.assert_allclose(b.mean(axis=(1, 2)), 0.0, atol=6 * std / np.sqrt(n))
    np.testing.assert_allclose(b.std(axis=(1, 2)), std, rtol=6 * np.sqrt(2.0 / n))
    if distribution == "uniform":
        assert np.max(np.abs(b)) <= std * np.sqrt(3.0)


def test_feedback_member_draws_do_not_depend_on_ensemble_size():
    sizes = (3, 5, 4, 2)
    for rule in ("fa", "dfa"):
        two = draw_feedback(rule, sizes, 2, seed=8)
        five = draw_feedback(rule, sizes, 5, seed=8)
        other = draw_feedback(rule, sizes, 2, seed=9)
        for a, b, c in zip(two, five, other):
            np.testing.assert_array_equal(a, b[:2])
            assert not np.array_equal(a, c)
            assert not np.array_equal(a[0], a[1])


def test_get_rule_and_locking():
    for name in ("bp", "fa", "dfa"):
        rule = get_rule(name)
        assert rule.name == name
        assert get_rule(rule) is rule
    assert get_rule("bp").feedback is None
    assert get_rule("fa").feedback == "layerwise"
    assert get_rule("dfa").feedback == "direct"
    # DFA removes backward locking; BP and FA do not
    assert get_rule("dfa").locking.backward is False
    assert get_rule("bp").locking.backward and get_rule("fa").locking.backward


# --- property-based identities --------------------------------------------------------------------

@st.composite
def instance_settings(draw, min_depth=1):
    depth = draw(st.integers(min_depth, 4))
    return dict(
        seed=draw(st.integers(0, 2**32 - 1)),
        sizes=tuple(draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))),
        n_members=draw(st.integers(1, 3)),
        batch=draw(st.integers(1, 5)),
        scale=draw(st.floats(0.25, 2.0)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        loss=draw(st.sampled_from(LOSSES)),
        bias=draw(st.booleans()),
    )


def _build(s):
    return make_instance(s["seed"], s["sizes"], s["n_members"], s["batch"], loss=s["loss"], bias=s["bias"],
                         scale=s["scale"])


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(instance_settings())
def test_property_bp_equals_finite_differences(s):
    weights, biases, x, y = _build(s)
    upd = rule_updates("bp", weights, x, y, activation=s["activation"], loss=s["loss"], biases=biases)
    fd_w, fd_b, tol, valid = finite_difference_check(weights, biases, x, y, s["activation"], s["loss"])
    assume(valid)  # relu: no perturbation crossed a kink; FD truncation small
    for got, want in zip(upd.weights + (upd.biases or []), fd_w + (fd_b or [])):
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(instance_settings())
def test_property_fa_with_transposed_weights_equals_bp(s):
    weights, biases, x, y = _build(s)
    kwargs = dict(activation=s["activation"], loss=s["loss"], biases=biases)
    bp = rule_updates("bp", weights, x, y, **kwargs)
    fa = rule_updates("fa", weights, x, y, feedback=transposed(weights), **kwargs)
    tol = rounding_tolerance(s["sizes"], s["batch"])
    for a, b in zip(fa.weights + (fa.biases or []), bp.weights + (bp.biases or [])):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b)))))


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(instance_settings(), st.sampled_from(["bp", "fa", "dfa"]))
def test_property_ensemble_equals_separate_members(s, rule):
    weights, biases, x, y = _build(s)
    feedback = draw_feedback(rule, s["sizes"], s["n_members"], seed=s["seed"])
    kwargs = dict(activation=s["activation"], loss=s["loss"])
    full = rule_updates(rule, weights, x, y, feedback=feedback, biases=biases, **kwargs)
    tol = rounding_tolerance(s["sizes"], s["batch"])
    for m in range(s["n_members"]):
        one = rule_updates(rule, [w[m:m + 1] for w in weights], x[m:m + 1], y[m:m + 1],
                           feedback=None if feedback is None else [b[m:m + 1] for b in feedback],
                           biases=None if biases is None else [b[m:m + 1] for b in biases], **kwargs)
        for a, b in zip(one.weights + (one.biases or []), full.weights + (full.biases or [])):
            np.testing.assert_allclose(a[0], b[m], rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b[m])))))


# --- error paths ----------------------------------------------------------------------------------

def _valid(n_members=2):
    weights, biases, x, y = make_instance(0, SIZES, n_members, 4, bias=True)
    return weights, biases, x, y


def test_unknown_names():
    weights, _, x, y = _valid()
    with pytest.raises(ValueError, match="unknown rule 'sgd'.*bp"):
        compute_updates("sgd", weights, x, y)
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'.*relu"):
        compute_updates("bp", weights, x, y, activation="sigmoid")
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*mse"):
        compute_updates("bp", weights, x, y, loss="hinge")
    with pytest.raises(ValueError, match="unknown feedback distribution 'cauchy'.*gaussian"):
        draw_feedback("fa", SIZES, 2, seed=0, distribution="cauchy")
    with pytest.raises(ValueError, match="unknown rule"):
        feedback_shapes("nope", SIZES)
    for fn in (nn.activate, nn.activation_derivative):
        with pytest.raises(ValueError, match="unknown activation"):
            fn(x, "softplus")
    for fn in (nn.loss_value, nn.output_error):
        with pytest.raises(ValueError, match="unknown loss"):
            fn(y, y, "l1")


def test_weight_shape_errors():
    weights, _, x, y = _valid()
    with pytest.raises(ValueError, match="at least one layer"):
        compute_updates("bp", [], x, y)
    with pytest.raises(ValueError, match=r"W_2 must have shape \(E, n_out, n_in\)"):
        compute_updates("bp", [weights[0], weights[1][0], weights[2]], x, y)
    with pytest.raises(ValueError, match="W_2 expects 4 inputs but W_1 has 5 outputs"):
        compute_updates("bp", [weights[0], np.ones((2, 4, 4)), np.ones((2, 2, 4))], x, y)
    with pytest.raises(ValueError, match="W_3 has 3 members, W_1 has 2"):
        compute_updates("bp", [weights[0], weights[1], np.ones((3, 2, 4))], x, y)


def test_data_shape_errors():
    weights, _, x, y = _valid()
    with pytest.raises(ValueError, match="x has 2 features, the network expects 3"):
        compute_updates("bp", weights, x[..., :2], y)
    with pytest.raises(ValueError, match="y has 3 features, the network expects 2"):
        compute_updates("bp", weights, x, np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, n\) or \(E, B, n\)"):
        compute_updates("bp", weights, x[0, 0], y)
    with pytest.raises(ValueError, match=r"y must have shape \(B, n\) or \(E, B, n\)"):
        compute_updates("bp", weights, x, y[None])
    with pytest.raises(ValueError, match="x has batch size 4 but y has 3"):
        compute_updates("bp", weights, x, y[:, :3])
    with pytest.raises(ValueError, match="x has 3 members, the weights have 2"):
        compute_updates("bp", weights, np.ones((3, 4, 3)), y)
    with pytest.raises(ValueError, match="y has 1 members, the weights have 2"):
        compute_updates("bp", weights, x, y[:1])
    with pytest.raises(ValueError, match="batch is empty"):
        compute_updates("bp", weights, x[:, :0], y[:, :0])


def test_bias_shape_errors():
    weights, biases, x, y = _valid()
    with pytest.raises(ValueError, match="got 2 bias vectors for 3 layers"):
        rule_updates("bp", weights, x, y, biases=biases[:2])
    with pytest.raises(ValueError, match=r"bias b_2 must have shape \(2, 4\), got \(2, 5\)"):
        rule_updates("bp", weights, x, y, biases=[biases[0], np.ones((2, 5)), biases[2]])
    with pytest.raises(ValueError, match=r"bias b_1 must have shape \(2, 5\), got \(5,\)"):
        rule_updates("bp", weights, x, y, biases=[biases[0][0], biases[1], biases[2]])


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_feedback_errors(rule):
    weights, _, x, y = _valid()
    good = draw_feedback(rule, SIZES, 2, seed=0)
    with pytest.raises(ValueError, match=f"rule '{rule}' needs feedback matrices.*draw_feedback"):
        compute_updates(rule, weights, x, y)
    with pytest.raises(ValueError, match=f"rule '{rule}' needs 2 feedback matrices.*got 1"):
        compute_updates(rule, weights, x, y, feedback=good[:1])
    bad_shape = [good[0], np.ones((2, 7, 7))]
    with pytest.raises(ValueError, match=f"feedback matrix 2 of rule '{rule}' must have shape"):
        compute_updates(rule, weights, x, y, feedback=bad_shape)
    bad_members = [np.concatenate([good[0], good[0]]), good[1]]
    with pytest.raises(ValueError, match="feedback matrix 1 .* must have shape"):
        compute_updates(rule, weights, x, y, feedback=bad_members)
    with pytest.raises(ValueError, match="feedback matrix 1 .* must have shape"):
        compute_updates(rule, weights, x, y, feedback=[good[0][0, 0], good[1]])
    for value in (np.nan, np.inf):
        broken = [good[0], good[1].copy()]
        broken[1][1, 0, 0] = value
        with pytest.raises(ValueError, match="feedback matrix 2 contains non-finite"):
            compute_updates(rule, weights, x, y, feedback=broken)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(value):
    weights, biases, x, y = _valid()
    bad_x, bad_y = x.copy(), y.copy()
    bad_x[1, 2, 0] = value
    bad_y[0, 3, 1] = value
    with pytest.raises(ValueError, match="x contains non-finite"):
        compute_updates("bp", weights, bad_x, y)
    with pytest.raises(ValueError, match="y contains non-finite"):
        compute_updates("bp", weights, x, bad_y)
    bad_w = [w.copy() for w in weights]
    bad_w[1][1, 0, 0] = value
    with pytest.raises(ValueError, match="W_2 contains non-finite"):
        compute_updates("bp", bad_w, x, y)


def test_bad_feedback_settings():
    with pytest.raises(ValueError, match="feedback scale must be a positive finite number"):
        draw_feedback("fa", SIZES, 2, seed=0, scale=0.0)
    with pytest.raises(ValueError, match="feedback scale must be a positive finite number"):
        draw_feedback("dfa", SIZES, 2, seed=0, scale=np.nan)
    for seed in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            draw_feedback("fa", SIZES, 2, seed=seed)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        draw_feedback("fa", SIZES, 2, seed=0, dtype="float16")


def test_compute_updates_accepts_python_lists():
    w = [np.array([[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]]), np.array([[[1.0, 2.0, 3.0]]])]
    x, y = [[1.0, 2.0], [0.5, -1.0]], [[1.0], [0.0]]
    want = compute_updates("bp", w, np.array(x), np.array(y))
    for weights in (w, [wi.tolist() for wi in w]):
        got = compute_updates("bp", weights, x, y)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e)
    with pytest.raises(ValueError, match="x must be an array or a rectangular list"):
        compute_updates("bp", w, [[1.0, 2.0], [1.0]], y)
