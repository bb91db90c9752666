"""Local learning rules (sim.local): blocks, heads, contrastive losses, DGL/greedy/overlap, the replay buffer."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import local, patch
from sim.backend import to_host
from sim.data.hierarchical import digits
from sim.network import init_network
from sim.rules import compute_updates

EPS = float(np.finfo(np.float64).eps)
FD_STEP = EPS ** (1 / 3)
MAX_EXAMPLES = min(15, settings().max_examples)


def fd_gradient(f, arrays, index):
    """Central differences of a per-member loss ``f(arrays) -> (E,)`` w.r.t. ``arrays[index]`` (all members at once)."""
    base = [a.copy() for a in arrays]
    grad = np.zeros_like(base[index])
    for pos in np.ndindex(base[index].shape[1:]):
        plus, minus = [a.copy() for a in base], [a.copy() for a in base]
        plus[index][(slice(None), *pos)] += FD_STEP
        minus[index][(slice(None), *pos)] -= FD_STEP
        grad[(slice(None), *pos)] = (f(plus) - f(minus)) / (2 * FD_STEP)
    return grad


def fd_tolerance(grad):
    return 1e-6 * max(1.0, float(np.max(np.abs(grad))))


# --- blocks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "tanh"])
@pytest.mark.parametrize("output", [False, True])
def test_dense_block_backward_is_the_gradient(activation, output):
    rng = np.random.default_rng(3)
    block = local.DenseBlock((4, 5, 3), activation, output=output)
    params = [rng.normal(size=(2, n_out, n_in)) / np.sqrt(n_in) for n_out, n_in in block.shapes()]
    x = rng.normal(size=(2, 6, 4))
    probe = rng.normal(size=(2, 6, 3))

    def loss(arrays):  # L = (1/B) sum_b <probe_b, out_b>, so the per-sample signal is `probe`
        out, _ = block.forward(tuple(arrays[:2]), arrays[2])
        return np.sum(out * probe, axis=(1, 2)) / 6

    out, cache = block.forward(tuple(params), x)
    grads, signal_in = block.backward(tuple(params), cache, probe, input_signal=True)
    for i in range(2):
        want = fd_gradient(loss, [*params, x], i)
        np.testing.assert_allclose(grads[i], want, atol=fd_tolerance(want))
    want_x = fd_gradient(loss, [*params, x], 2) * 6  # per-sample signal = B dL/dx
    np.testing.assert_allclose(signal_in, want_x, atol=fd_tolerance(want_x))
    _, none = block.backward(tuple(params), cache, probe, input_signal=False)
    assert none is None


def test_patch_block_network_equals_patch_module():
    net = local.make_patch_block_network((9, 9, 2), [3, 4], 3, 2, patch_size=3, layers_per_block=1, seed=2)
    reference = patch.init_patch_network((9, 9, 2), [3, 4], 3, 2, patch_size=3, seed=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 9, 9, 2))
    y = np.eye(3)[rng.integers(0, 3, 5)]
    upd = local.block_updates("bp", net, x.reshape(5, -1), y)
    loss, grads = patch.patch_gradients(reference, x, y)
    mine = [upd.grads[0][0], upd.grads[1][0], upd.grads[0][1], upd.grads[1][1], upd.grads[1][2], upd.grads[1][3]]
    for a, b in zip(mine, grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(upd.losses[-1], loss, rtol=1e-13)
    np.testing.assert_allclose(local.predict_blocks(net, x.reshape(5, -1)),
                               patch.patch_logits(reference, x), rtol=1e-13, atol=1e-14)


def test_patch_block_input_signal_is_the_gradient():
    rng = np.random.default_rng(1)
    block = local.PatchBlock((4, 4, 2), (3,), 2)
    params = [rng.normal(size=(1, *shape)) for shape in block.shapes()]
    x = rng.normal(size=(1, 3, 32))
    probe = rng.normal(size=(1, 3, block.n_out))

    def loss(arrays):
        out, _ = block.forward(tuple(arrays[:2]), arrays[2])
        return np.sum(out * probe, axis=(1, 2)) / 3

    out, cache = block.forward(tuple(params), x)
    grads, signal_in = block.backward(tuple(params), cache, probe, input_signal=True)
    for i in range(2):
        want = fd_gradient(loss, [*params, x], i)
        np.testing.assert_allclose(grads[i], want, atol=fd_tolerance(want))
    want = fd_gradient(loss, [*params, x], 2) * 3
    np.testing.assert_allclose(signal_in, want, atol=fd_tolerance(want))
    assert block.n_in == 32 and block.n_out == 2 * 2 * 3


def test_block_network_weights_are_init_network_weights():
    sizes = [5, 7, 6, 4, 3]
    net = local.make_block_network(sizes, 3, layers_per_block=[1, 2, 1], seed=4, activation="tanh")
    plain = init_network(sizes, 3, seed=4, activation="tanh")
    flat = [w for p in net.params for w in p]
    for a, b in zip(flat, plain.weights):
        np.testing.assert_array_equal(a, b)
    assert [b.sizes for b in net.blocks] == [(5, 7), (7, 6, 4), (4, 3)]
    assert net.heads[-1] is None and net.head_params[-1] is None
    assert [h.sizes for h in net.heads[:-1]] == [(7, 3), (4, 3)]
    mlp = local.make_block_network(sizes, 1, head="mlp", head_hidden=9, head_outputs=5)
    assert mlp.heads[0].sizes == (7, 9, 5)
    assert local.to_network(net).sizes == tuple(sizes)


def test_split_sizes():
    assert local.split_sizes([1, 2, 3, 4, 5], 2) == [(1, 2, 3), (3, 4, 5)]
    assert local.split_sizes([1, 2, 3, 4], 2) == [(1, 2, 3), (3, 4)]
    assert local.split_sizes([1, 2, 3, 4], [1, 2]) == [(1, 2), (2, 3, 4)]
    with pytest.raises(ValueError, match="summing to 3"):
        local.split_sizes([1, 2, 3, 4], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        local.split_sizes([1, 2, 3], 0)


# --- contrastive objectives -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["infonce", "ntxent"])
def test_contrastive_gradients_are_exact(name):
    rng = np.random.default_rng(5)
    z1, z2 = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    fn = local.info_nce if name == "infonce" else local.nt_xent
    loss, g1, g2 = fn(z1, z2, 0.7)
    for i, g in enumerate((g1, g2)):
        want = fd_gradient(lambda arrays: fn(arrays[0], arrays[1], 0.7)[0], [z1, z2], i)
        np.testing.assert_allclose(g, want, atol=fd_tolerance(want))


def test_info_nce_from_scores():
    scores = np.array([[[2.0, 0.0], [0.0, 2.0]]])
    loss, grad = local.info_nce_from_scores(scores)
    np.testing.assert_allclose(loss, [np.log(1 + np.exp(-2.0))], rtol=1e-14)
    np.testing.assert_allclose(np.sum(grad, axis=-1), 0.0, atol=1e-16)
    with pytest.raises(ValueError, match="square"):
        local.info_nce_from_scores(np.zeros((2, 3)))


def test_nt_xent_values():
    z = np.ones((1, 5, 4))
    np.testing.assert_allclose(local.nt_xent(z, z, 0.1)[0], [np.log(9)], rtol=1e-14)
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(3, 6, 2)), rng.normal(size=(3, 6, 2))
    np.testing.assert_allclose(local.nt_xent(10 * z1, 10 * z2)[0], local.nt_xent(z1, z2)[0], rtol=1e-13)
    zero = z1.copy()
    zero[0, 0] = 0.0  # a dead unit: defined, finite
    loss, g1, _ = local.nt_xent(zero, z2)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g1))


def test_objective_signal_errors():
    with pytest.raises(ValueError, match="even number of rows"):
        local.objective_signal("ntxent", np.zeros((1, 3, 2)), None)
    with pytest.raises(ValueError, match="unknown local objective"):
        local.objective_signal("simclr", np.zeros((1, 2, 2)), None)
    with pytest.raises(ValueError, match="temperature"):
        local.nt_xent(np.ones((1, 2, 2)), np.ones((1, 2, 2)), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        local.info_nce(np.ones((1, 2, 2)), np.ones((1, 3, 2)))


# --- rules on block networks ---------------------------------------------------------------------------

def _instance(seed=0, members=2, objective="supervised", head="linear"):
    rng = np.random.default_rng(seed)
    net = local.make_block_network([6, 8, 7, 5, 3], members, layers_per_block=[1, 1, 2], seed=seed,
                                   activation="tanh", head=head, head_hidden=4,
                                   head_outputs=3 if objective == "supervised" else 4)
    rows = 5 if objective == "supervised" else 10
    x = rng.normal(size=(rows, 6))
    y = np.eye(3)[rng.integers(0, 3, rows)]
    return net, x, y


@pytest.mark.parametrize("rule", ["bp", "dfa"])
def test_bp_and_dfa_on_one_layer_blocks_equal_sim_rules(rule):
    net = local.make_block_network([6, 8, 7, 3], 2, seed=1, activation="tanh")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 6)), np.eye(3)[rng.integers(0, 3, 5)]
    feedback = local.draw_block_feedback(net, seed=3) if rule == "dfa" else None
    got = local.block_updates(rule, net, x, y, feedback=feedback)
    want = compute_updates(rule, list(local.to_network(net).weights), x, y, activation="tanh", loss="ce",
                           feedback=feedback)
    for g, w in zip(got.grads, want):
        np.testing.assert_array_equal(g[0], w)


@pytest.mark.parametrize("objective", local.OBJECTIVES)
@pytest.mark.parametrize("head", local.HEADS)
def test_dgl_updates_are_each_blocks_own_local_step(objective, head):
    net, x, y = _instance(2, objective=objective, head=head)
    upd = local.block_updates("dgl", net, x, y, objective=objective)
    h = x
    for j in range(net.n_blocks):
        step = local.local_step(net.blocks[j], net.params[j], net.heads[j], net.head_params[j], h, y,
                                objective=objective)
        for a, b in zip(upd.grads[j], step.grads):
            np.testing.assert_array_equal(a, b)
        h = step.output
    assert upd.head_grads[-1] is None and upd.losses[-1].shape == (2,)


def test_dgl_block_update_is_the_gradient_of_its_local_loss():
    net, x, y = _instance(3, members=1, head="mlp")
    upd = local.block_updates("dgl", net, x, y)
    j = 1
    h_in = local.block_outputs(net, x)[j - 1]

    def local_loss(arrays):
        out, _ = net.blocks[j].forward(tuple(arrays[:1]), h_in)
        z, _ = net.heads[j].forward(tuple(arrays[1:]), out)
        return local.objective_signal("supervised", z, y)[0]

    arrays = [*net.params[j], *net.head_params[j]]
    for i, grad in enumerate([*upd.grads[j], *upd.head_grads[j]]):
        want = fd_gradient(local_loss, arrays, i)
        np.testing.assert_allclose(grad, want, atol=fd_tolerance(want))


def test_overlap_adds_the_block_aboves_loss():
    net, x, y = _instance(4)
    dgl = local.block_updates("dgl", net, x, y)
    overlap = local.block_updates("overlap", net, x, y)
    # the top block gets only its own loss; every other block its own plus the block above's
    np.testing.assert_array_equal(overlap.grads[-1][0], dgl.grads[-1][0])
    outs = local.block_outputs(net, x)
    for j in range(net.n_blocks - 1):
        above = local.local_step(net.blocks[j + 1], net.params[j + 1], net.heads[j + 1], net.head_params[j + 1],
                                 outs[j], y, input_signal=True)
        _, cache = net.blocks[j].forward(net.params[j], x if j == 0 else outs[j - 1])
        extra, _ = net.blocks[j].backward(net.params[j], cache, above.signal_in, input_signal=False)
        for got, own, more in zip(overlap.grads[j], dgl.grads[j], extra):
            np.testing.assert_allclose(got, own + more, rtol=1e-13, atol=1e-15)


def test_gradient_isolation_exactly():
    net, x, y = _instance(5)
    rng = np.random.default_rng(9)
    changed = net.with_params([net.params[0], *[tuple(rng.normal(size=w.shape) for w in p) for p in net.params[1:]]],
                              [net.head_params[0], tuple(rng.normal(size=w.shape) for w in net.head_params[1]), None])
    a, b = local.block_updates("dgl", net, x, y), local.block_updates("dgl", changed, x, y)
    for u, v in zip(a.grads[0] + a.head_grads[0], b.grads[0] + b.head_grads[0]):
        np.testing.assert_array_equal(u, v)
    bp_a, bp_b = local.block_updates("bp", net, x, y), local.block_updates("bp", changed, x, y)
    assert np.max(np.abs(bp_a.grads[0][0] - bp_b.grads[0][0])) > 0


def test_greedy_trains_only_its_stage():
    net, x, y = _instance(6)
    for stage in range(net.n_blocks):
        upd = local.block_updates("greedy", net, x, y, stage=stage)
        assert [g is not None for g in upd.grads] == [j == stage for j in range(net.n_blocks)]
        dgl = local.block_updates("dgl", net, x, y)
        for a, b in zip(upd.grads[stage], dgl.grads[stage]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="stage"):
        local.block_updates("greedy", net, x, y)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.integers(0, 2**16), st.sampled_from(["bp", "dgl", "overlap", "dfa"]), st.sampled_from(local.OBJECTIVES))
def test_property_ensemble_members_are_independent(seed, rule, objective):
    net, x, y = _instance(seed, members=3, objective=objective)
    feedback = local.draw_block_feedback(net, seed=seed) if rule == "dfa" else None
    whole = local.block_updates(rule, net, x, y, objective=objective, feedback=feedback)
    for m in (0, 2):
        member = net.with_params([tuple(w[m:m + 1] for w in p) for p in net.params],
                                 [None if h is None else tuple(w[m:m + 1] for w in h) for h in net.head_params])
        fb = None if feedback is None else [b[m:m + 1] for b in feedback]
        one = local.block_updates(rule, member, x, y, objective=objective, feedback=fb)
        for ga, gb in zip(whole.grads, one.grads):
            for a, b in zip(ga, gb):
                np.testing.assert_allclose(a[m:m + 1], b, rtol=1e-12, atol=1e-14)


def test_apply_updates_with_member_learning_rates():
    net, x, y = _instance(7, members=2)
    upd = local.block_updates("dgl", net, x, y)
    new = local.apply_updates(net, upd, np.array([0.1, 0.0]))
    np.testing.assert_array_equal(new.params[0][0][1], net.params[0][0][1])
    np.testing.assert_allclose(new.params[0][0][0], net.params[0][0][0] - 0.1 * upd.grads[0][0][0])


def test_locking_declarations():
    locks = {name: rule.locking for name, rule in local.BLOCK_RULES.items()}
    assert locks["bp"].backward and locks["bp"].update
    assert not locks["dfa"].backward and locks["dfa"].update
    for name in ("dgl", "greedy", "async-dgl"):
        assert not locks[name].update and not locks[name].backward
    assert not locks["async-dgl"].forward and locks["dgl"].forward
    assert locks["overlap"].backward and not locks["overlap"].update
    assert local.BLOCK_RULES["overlap"].feedback == "neighbour"
    with pytest.raises(ValueError, match="allowed"):
        local.get_block_rule("hebbian")


def test_core_on_array_api_strict():
    net, x, y = _instance(8, objective="ntxent", head="mlp")
    strict = net.with_params([tuple(xps.asarray(w) for w in p) for p in net.params],
                             [None if h is None else tuple(xps.asarray(w) for w in h) for h in net.head_params])
    for rule in ("dgl", "overlap", "bp"):
        want = local.block_updates(rule, net, x, y, objective="ntxent")
        got = local.block_updates(rule, strict, xps.asarray(x), xps.asarray(y), objective="ntxent")
        for ga, gb in zip(got.grads, want.grads):
            for a, b in zip(ga, gb):
                np.testing.assert_allclose(to_host(a), b, rtol=1e-12, atol=1e-14)
    pnet = local.make_patch_block_network((4, 4, 1), [2, 3], 2, 1, patch_size=2, seed=0)
    px = np.random.default_rng(0).normal(size=(3, 16))
    py = np.eye(2)[[0, 1, 1]]
    strict_p = pnet.with_params([tuple(xps.asarray(w) for w in p) for p in pnet.params],
                                [None if h is None else tuple(xps.asarray(w) for w in h) for h in pnet.head_params])
    want = local.block_updates("dgl", pnet, px, py)
    got = local.block_updates("dgl", strict_p, xps.asarray(px), xps.asarray(py))
    for ga, gb in zip(got.grads, want.grads):
        for a, b in zip(ga, gb):
            np.testing.assert_allclose(to_host(a), b, rtol=1e-12, atol=1e-14)


# --- views ------------------------------------------------------------------------------------------------

def test_two_views_and_hierarchical_views():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5))
    v = local.two_views(x, rng)
    assert v.shape == (8, 5)
    assert not np.allclose(v[:4], v[4:])
    with pytest.raises(ValueError, match="drop"):
        local.two_views(x, rng, drop=1.0)
    sample = digits(20, seed=1, noise=0.0, distractor=0.0)
    views = local.hierarchical_views(sample, level=1)
    xv, yv = views(np.arange(6), np.random.default_rng(1))
    assert xv.shape == (12, 27 * 27) and yv.shape == (12, 10)
    np.testing.assert_array_equal(yv[:6], yv[6:])
    np.testing.assert_array_equal(np.argmax(yv[:6], axis=1), sample.labels[:6])
    # level = depth: the same bottom symbols, so without noise both views are the original image
    same = local.hierarchical_views(sample, level=2)(np.arange(3), np.random.default_rng(2))[0]
    np.testing.assert_array_equal(same[:3], sample.images[:3].reshape(3, -1))
    np.testing.assert_array_equal(same[3:], same[:3])
    with pytest.raises(ValueError, match="level"):
        local.hierarchical_views(sample, level=5)


# --- replay buffer ---------------------------------------------------------------------------------------

def test_replay_buffer_policy():
    buf = local.ReplayBuffer(3)
    assert buf.sample() is None
    for item in "abc":
        buf.push(item)
    assert buf.sample() == "c"  # least used, freshest
    assert buf.sample() == "b"
    assert buf.sample() == "a"
    assert buf.sample() == "c"  # all used once: the freshest again
    buf.push("d")  # drops "a", the oldest
    assert len(buf) == 3 and buf.max_size == 3
    assert buf.sample() == "d"
    capped = local.ReplayBuffer(2, reuse_cap=1)
    capped.push("x")
    assert capped.sample() == "x" and capped.sample() is None
    assert not capped.has_unused()


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(st.integers(1, 5), st.one_of(st.none(), st.integers(1, 3)), st.lists(st.booleans(), max_size=60))
def test_property_replay_buffer_never_exceeds_capacity(capacity, cap, pushes):
    buf = local.ReplayBuffer(capacity, cap)
    for i, push in enumerate(pushes):
        if push:
            buf.push(i)
        else:
            buf.sample()
        assert len(buf) <= capacity
    assert buf.max_size <= capacity


def test_replay_buffer_errors():
    with pytest.raises(ValueError, match="capacity"):
        local.ReplayBuffer(0)
    with pytest.raises(ValueError, match="reuse_cap"):
        local.ReplayBuffer(2, reuse_cap=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown head"):
        local.make_head("conv", 3, 2)
    with pytest.raises(ValueError, match="hidden width"):
        local.make_head("mlp", 3, 2)
    with pytest.raises(ValueError, match="at least two"):
        local.DenseBlock((3,))
    with pytest.raises(ValueError, match="cannot be cut"):
        local.PatchBlock((5, 5, 1), (2,), 2)
    net, x, y = _instance(0)
    with pytest.raises(ValueError, match="dfa needs"):
        local.block_updates("dfa", net, x, y)
    with pytest.raises(ValueError, match="unknown local objective"):
        local.block_updates("dgl", net, x, y, objective="byol")


def test_block_rule_declarations_are_checked():
    from sim.rules import Locking

    with pytest.raises(ValueError, match="unknown feedback"):
        local.BlockRule("x", "x", Locking(True, True, True), "sideways", False)
    with pytest.raises(ValueError, match="Locking"):
        local.BlockRule("x", "x", (True, True, True), None, False)


# --- synthetic gradients between blocks ---------------------------------------------------------------------

def test_synthetic_gradient_module_regression_is_the_gradient():
    rng = np.random.default_rng(2)
    module = local.SyntheticGradientModule(4, 3)
    params = [rng.normal(size=(2, *shape)) for shape in module.shapes()]
    h, y, target = rng.normal(size=(2, 5, 4)), rng.normal(size=(5, 3)), rng.normal(size=(2, 5, 4))
    grads, loss = module.regress(tuple(params), h, y, target)
    for i in range(3):
        want = fd_gradient(lambda arrays: module.regress(tuple(arrays), h, y, target)[1], params, i)
        np.testing.assert_allclose(grads[i], want, atol=fd_tolerance(want))
    assert loss.shape == (2,)


def test_dni_starts_with_zero_updates_and_needs_modules():
    net, x, y = _instance(3)
    with pytest.raises(ValueError, match="attach_synthetic_gradients"):
        local.block_updates("sg", net, x, y)
    dni = local.attach_synthetic_gradients(net)
    assert all(np.all(p == 0) for h in dni.head_params[:-1] for p in h)
    upd = local.block_updates("sg", dni, x, y)
    for j in range(net.n_blocks - 1):
        assert all(np.all(g == 0) for g in upd.grads[j])  # zero modules predict a zero gradient
        assert upd.head_grads[j] is not None and upd.losses[j].shape == (2,)
    bp = local.block_updates("bp", net, x, y)
    for a, b in zip(upd.grads[-1], bp.grads[-1]):
        np.testing.assert_array_equal(a, b)  # the top block sees the true loss
    with pytest.raises(ValueError, match="conditioned=True"):
        local.block_updates("cdni", dni, x, y)


def test_dni_on_one_layer_blocks_equals_sim_rules_sg():
    from sim.synthetic import init_modules

    net = local.make_block_network([6, 8, 7, 3], 2, seed=1, activation="tanh")
    dni = local.attach_synthetic_gradients(net, conditioned=True)
    rng = np.random.default_rng(4)
    modules = init_modules([6, 8, 7, 3], 2, inputs=("hidden", "label"))
    params = []
    for i, layer in enumerate(modules.params):  # random modules, the same in both views
        layer = {k: rng.normal(size=v.shape) for k, v in layer.items()}
        params.append(layer)
    modules = type(modules)(tuple(params), modules.kind, modules.inputs, "bootstrap", modules.lr, 1)
    dni = dni.with_params(head_params=[(p["hidden"], p["label"], p["bias"]) for p in params] + [None])
    x, y = rng.normal(size=(5, 6)), np.eye(3)[rng.integers(0, 3, 5)]
    got = local.block_updates("cdni", dni, x, y)
    want = compute_updates("cdni", list(local.to_network(net).weights), x, y, activation="tanh", loss="ce",
                           modules=modules)
    for g, w in zip(got.grads, want):
        np.testing.assert_allclose(g[0], w, rtol=1e-13, atol=1e-15)
