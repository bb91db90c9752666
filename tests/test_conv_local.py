"""DNI, cDNI and DGL on convolutional networks (sim.conv_local) and their dispatch through sim.conv."""

from __future__ import annotations

import numpy as np
import pytest

from sim.conv import conv_transpose, conv_updates, draw_conv_feedback, forward, init_convnet, train_convnet
from sim.conv_local import ConvModules, init_conv_modules, local_step, pool_matrix, regression

EPS = np.finfo(np.float64).eps
FD_STEP = EPS ** (1 / 3)
FD_TOL = 1e3 * EPS ** (2 / 3)  # central differences: error ~ h^2 + eps / h
RULES = ("sg", "cdni", "dgl")
INPUT = (1, 12)


def small_net(n_members=2, seed=1, activation="tanh", bias=True):
    # two convolutions (the second one unpadded), a hidden dense layer, the read-out
    return init_convnet([1, 3, 4], [(1, 3), (1, 3)], [(1, 2), (1, 1)], [(0, 1), (0, 0)], [5, 3], INPUT, n_members,
                        seed=seed, activation=activation, bias=bias)


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, *INPUT)), np.eye(3)[rng.integers(0, 3, n)]


def random_modules(rule, net, seed=3, scale=0.3, **kwargs):
    modules = init_conv_modules(rule, net, INPUT, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    return modules.with_arrays([scale * rng.normal(size=a.shape) for a in modules.arrays()])


def true_gradients(net, x, y):
    """BP's per-sample gradient at every hidden layer's output (before f'), from sim.conv's transposes."""
    y_hat, _, outputs, shapes = forward(net, x)
    p = np.exp(y_hat - y_hat.max(-1, keepdims=True))
    delta = p / p.sum(-1, keepdims=True) - y
    grads = [None] * (len(net.weights) - 1)
    for i in range(len(net.weights) - 2, -1, -1):
        if i + 1 < net.n_conv:
            g = conv_transpose(delta, net.weights[i + 1], shapes[i + 1], *net.geometry[i + 1])
        else:
            g = (delta @ net.weights[i + 1]).reshape(outputs[i].shape)
        grads[i] = g
        delta = g * (1 - outputs[i] ** 2)  # tanh
    return grads, outputs


def perfect_modules(rule, net, x, y):
    """Linear modules reproducing the true gradient exactly on this batch (B <= n_l: A = (H^+ G)^T)."""
    grads, outputs = true_gradients(net, x, y)
    modules = init_conv_modules(rule, net, INPUT)
    params = []
    for g, h, p in zip(grads, outputs, modules.params):
        flat_h, flat_g = h.reshape(*h.shape[:2], -1), g.reshape(*g.shape[:2], -1)
        a = np.stack([(np.linalg.pinv(flat_h[m]) @ flat_g[m]).T for m in range(h.shape[0])])
        params.append((a, *[np.zeros_like(q) for q in p[1:]]))
    return modules.with_arrays([a for p in params for a in p]), grads


@pytest.mark.parametrize("rule", ["sg", "cdni"])
@pytest.mark.parametrize("target", ["bootstrap", "true"])
def test_perfect_synthetic_gradient_gives_bp_updates(rule, target):
    net = small_net()
    x, y = batch(n=4)  # 4 samples <= the narrowest hidden layer (5 units)
    modules, grads = perfect_modules(rule, net, x, y)
    modules = ConvModules(rule, modules.params, modules.pools, target)
    step = local_step(rule, net, x, y, modules=modules)
    bp, bp_loss = conv_updates("bp", net, x, y)
    tol = 1e6 * EPS
    for ours, theirs in zip(step.updates, bp):
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max())
    for ours, theirs in zip(step.signals, grads):
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max())
    np.testing.assert_allclose(step.loss, bp_loss, rtol=10 * EPS)
    # the module regressing on its (bootstrapped or true) target already has zero loss
    np.testing.assert_allclose(step.module_loss, 0.0, atol=tol)


@pytest.mark.parametrize("rule", ["sg", "cdni"])
def test_zero_modules_leave_hidden_layers_still(rule):
    net = small_net()
    x, y = batch()
    step = local_step(rule, net, x, y, modules=init_conv_modules(rule, net, INPUT))
    n_layers = len(net.weights)
    for k, u in enumerate(step.updates):
        if k % n_layers != n_layers - 1:  # every hidden weight and bias
            np.testing.assert_array_equal(u, 0.0)
    bp, _ = conv_updates("bp", net, x, y)  # the read-out still learns from the loss
    np.testing.assert_allclose(step.updates[n_layers - 1], bp[n_layers - 1], rtol=10 * EPS)


def finite_difference(fn, arrays, index):
    """Central differences of the scalar ``fn()`` with respect to every entry of ``arrays[index]``."""
    arr = arrays[index]
    out = np.zeros_like(arr)
    for pos in np.ndindex(arr.shape):
        saved = arr[pos]
        arr[pos] = saved + FD_STEP
        up = fn()
        arr[pos] = saved - FD_STEP
        down = fn()
        arr[pos] = saved
        out[pos] = (up - down) / (2 * FD_STEP)
    return out


def test_regression_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    h, y, target = rng.normal(size=(2, 5, 3, 1, 2)), np.eye(4)[rng.integers(0, 4, (2, 5))], rng.normal(size=(2, 5, 6))
    params = [rng.normal(size=(2, 6, 6)), rng.normal(size=(2, 6, 4)), rng.normal(size=(2, 6))]
    grads, _ = regression(params, h, y, target)
    for k in range(len(params)):
        numeric = finite_difference(lambda: float(np.sum(regression(params, h, y, target)[1])), params, k)
        np.testing.assert_allclose(grads[k], numeric, rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("rule", ["sg", "cdni"])
def test_module_gradients_in_a_step_match_finite_differences(rule):
    # module l's loss regresses on a target from the layers above, held fixed (stop-gradient)
    net = small_net()
    x, y = batch()
    modules = random_modules(rule, net)
    arrays = modules.arrays()
    grads = local_step(rule, net, x, y, modules=modules).module_grads
    per_layer = len(modules.params[0])
    for k in range(len(arrays)):
        layer = k // per_layer

        def loss():
            return float(np.sum(local_step(rule, net, x, y, modules=modules.with_arrays(arrays)).module_loss[:, layer]))

        if arrays[k].size > 200:  # the widest map: check a slice of the matrix
            continue
        np.testing.assert_allclose(grads[k], finite_difference(loss, arrays, k), rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("head_pool", [None, (1, 2)])
def test_dgl_block_update_matches_finite_differences_of_its_local_loss(head_pool):
    net = small_net()
    x, y = batch()
    modules = random_modules("dgl", net, head_pool=head_pool)
    step = local_step("dgl", net, x, y, modules=modules)
    n_layers = len(net.weights)
    weights, biases, heads = list(net.weights), list(net.biases), modules.arrays()

    def block_loss(layer):
        def value():
            now = type(net)(tuple(weights), net.geometry, net.activation, tuple(biases))
            s = local_step("dgl", now, x, y, modules=modules.with_arrays(heads))
            return float(np.sum(s.loss if layer == n_layers - 1 else s.module_loss[:, layer]))
        return value

    for layer in range(n_layers):  # each layer (and bias) descends its own block's loss only
        np.testing.assert_allclose(step.updates[layer], finite_difference(block_loss(layer), weights, layer),
                                   rtol=FD_TOL, atol=FD_TOL)
        np.testing.assert_allclose(step.updates[n_layers + layer], finite_difference(block_loss(layer), biases, layer),
                                   rtol=FD_TOL, atol=FD_TOL)
    for k in range(len(heads)):
        np.testing.assert_allclose(step.module_grads[k], finite_difference(block_loss(k // 2), heads, k),
                                   rtol=FD_TOL, atol=FD_TOL)
    # no gradient crosses blocks: a lower layer's local loss does not move with the layers above
    saved = weights[2].copy()
    before = local_step("dgl", net, x, y, modules=modules).module_loss[:, :2]
    weights[2] = saved + 1.0
    now = type(net)(tuple(weights), net.geometry, net.activation, tuple(biases))
    np.testing.assert_array_equal(local_step("dgl", now, x, y, modules=modules).module_loss[:, :2], before)


def test_pool_matrix_averages_adaptive_bins():
    np.testing.assert_allclose(pool_matrix(5, 2), [[1 / 3, 1 / 3, 1 / 3, 0, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3]],
                               rtol=10 * EPS)
    np.testing.assert_allclose(pool_matrix(3, 7), np.eye(3), rtol=10 * EPS)  # clipped to the map
    np.testing.assert_allclose(pool_matrix(20, 5).sum(axis=1), 1.0, rtol=10 * EPS)


@pytest.mark.parametrize("rule", RULES)
def test_ensemble_axis_equals_separate_members(rule):
    net = small_net(n_members=3)
    x, y = batch()
    modules = random_modules(rule, net, head_pool=(1, 2) if rule == "dgl" else None)
    step = local_step(rule, net, x, y, modules=modules)
    for m in range(3):
        one = type(net)(tuple(w[m:m + 1] for w in net.weights), net.geometry, net.activation,
                        tuple(b[m:m + 1] for b in net.biases))
        alone = local_step(rule, one, x, y, modules=modules.member(m))
        for ours, theirs in zip(step.updates + step.module_grads, alone.updates + alone.module_grads):
            np.testing.assert_allclose(ours[m:m + 1], theirs, rtol=1e3 * EPS, atol=1e3 * EPS)
        np.testing.assert_allclose(step.module_loss[m:m + 1], alone.module_loss, rtol=1e3 * EPS)


def shifted_patterns(n, seed):
    """Three classes of 1-D signals: a class template at a random shift, plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.array([[1, 1, 1, 0], [1, -1, 1, -1], [-1, -1, 1, 1]], dtype=float)
    labels = rng.integers(0, 3, n)
    x = 0.3 * rng.normal(size=(n, 1, *INPUT))
    for k, (c, s) in enumerate(zip(labels, rng.integers(0, INPUT[1] - 4, n))):
        x[k, 0, 0, s:s + 4] += templates[c]
    return x, np.eye(3)[labels]


@pytest.mark.parametrize("rule", RULES)
def test_rules_train_a_tiny_conv_task_above_chance(rule):
    net = init_convnet([1, 6, 6], [(1, 3), (1, 3)], [(1, 1), (1, 2)], [(0, 1), (0, 1)], [3], INPUT, 2, seed=2,
                       activation="relu", bias=True, init="uniform")
    x, y = shifted_patterns(300, 0)
    test = shifted_patterns(200, 1)
    modules = init_conv_modules(rule, net, INPUT, seed=2, head_pool=(1, 3) if rule == "dgl" else None)
    _, record, trained = train_convnet(net, x, y, rule=rule, steps=300, lr=0.01, batch_size=30, feedback=modules,
                                       seed=2, test=test, record_every=100, optimizer="adam")
    assert record["accuracy"].shape == (4, 2) and record["gradient_angle"].shape == (4, 2, 3)
    assert np.all(record["accuracy"][-1] > 0.7), record["accuracy"][-1]  # chance: 1/3
    assert not record["diverged"]
    # the read-out learns from the loss on its input, exactly as BP's
    np.testing.assert_allclose(record["gradient_angle"][:, :, -1], 0.0, atol=np.degrees(np.sqrt(8 * EPS)))
    assert isinstance(trained, ConvModules) and trained.rule == rule
    moved = [np.abs(a - b).max() for a, b in zip(trained.arrays(), modules.arrays())]
    assert min(moved) > 0, moved  # every module array took steps
    frozen = train_convnet(net, x, y, rule=rule, steps=5, lr=0.01, batch_size=30, seed=2, optimizer="adam",
                           feedback=ConvModules(rule, modules.params, modules.pools, lr_scale=0.0))[2]
    for a, b in zip(frozen.arrays(), modules.arrays()):
        np.testing.assert_array_equal(a, b)


def test_bad_settings_raise():
    net = small_net()
    x, y = batch()
    with pytest.raises(ValueError, match="allowed: sg, cdni, dgl"):
        init_conv_modules("fa", net, INPUT)
    with pytest.raises(ValueError, match="DGL heads only"):
        init_conv_modules("sg", net, INPUT, head_pool=2)
    with pytest.raises(ValueError, match="head_pool must be"):
        init_conv_modules("dgl", net, INPUT, head_pool=(0, 2))
    with pytest.raises(ValueError, match="allowed: bootstrap, true"):
        init_conv_modules("sg", net, INPUT, target="fixed")
    with pytest.raises(ValueError, match="lr_scale"):
        init_conv_modules("cdni", net, INPUT, lr_scale=-1.0)
    with pytest.raises(ValueError, match="needs its trained modules"):
        conv_updates("sg", net, x, y)
    with pytest.raises(ValueError, match="needs its trained modules"):
        conv_updates("cdni", net, x, y, feedback=init_conv_modules("sg", net, INPUT))
    with pytest.raises(ValueError, match="init_conv_modules"):
        draw_conv_feedback("dgl", net, INPUT)
    with pytest.raises(ValueError, match="needs its trained modules"):
        train_convnet(net, x, y, rule="dgl", steps=1, lr=0.1, batch_size=2)
    with pytest.raises(ValueError, match="sg, cdni, dgl"):
        conv_updates("nope", net, x, y)
    other = init_convnet([1, 3], [(1, 3)], [(1, 2)], [(0, 1)], [3], INPUT, 2)
    with pytest.raises(ValueError, match="hidden layers"):
        conv_updates("sg", other, x, y, feedback=init_conv_modules("sg", net, INPUT))
