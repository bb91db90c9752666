r"""Synthetic gradients (DNI, cDNI) as trained modules, and the unified view of FA, DFA and Kickback.

A synthetic-gradient (SG) module of hidden layer ``l`` predicts the per-sample
gradient of the loss with respect to the layer's output :math:`h_l`
(Jaderberg et al. 2016). The rules ``sg`` (DNI) and ``cdni`` of
:mod:`sim.rules` use that prediction as the layer's teaching signal, so the
layer can update right after its own forward pass:

.. math:: \delta_l = \mathrm{SG}_l(h_l\,[, y]) \odot f'(a_l), \qquad
          \Delta W_l = \operatorname{mean}_b \delta_{l,b}\, h_{l-1,b}^T .

The prediction stands in for BP's hidden signal *before* the activation
derivative, :math:`g_l = W_{l+1}^T \delta^{BP}_{l+1} = B\,\partial L/\partial h_l`
(``B`` the batch size; :math:`g_{l,b} = \partial \ell_b / \partial h_{l,b}` for the
per-sample loss :math:`\ell_b`).

Modules
-------
A module reads some of the *inputs* :data:`INPUTS` of its layer:

``hidden``  :math:`h_l`, the layer's output (DNI);
``label``   :math:`y`, the batch's target (cDNI: the label-conditioned module);
``error``   :math:`e = \partial(BL)/\partial \hat y`, the output error;
``above``   :math:`\delta_{l+1}`, the teaching signal of the layer above.

Its kinds (:data:`KINDS`), with :math:`u_k` the inputs and the output layer
initialised to zero so that the first update of the layer below is exactly zero:

``linear``  :math:`\mathrm{SG}(u) = \sum_k M_k u_k + c` (DNI: :math:`A h + c`; cDNI: :math:`A h + C y + c`);
``mlp``     :math:`\mathrm{SG}(u) = A\, \mathrm{relu}(\sum_k U_k u_k + d) + c` with ``A = c = 0`` at init.

Training
--------
A module is trained online by regression on the batch (:func:`module_gradients`),

.. math:: \ell^{SG}_l = \frac{1}{2B} \sum_b \lVert \mathrm{SG}_l(u_b) - t_{l,b}\rVert^2 ,
          \qquad \theta \leftarrow \theta - \eta_{SG}\, \partial \ell^{SG}_l/\partial\theta ,

towards the target :math:`t_l` (:data:`TARGETS`):

``true``       the true gradient :math:`g_l` (one BP pass, when it is available);
``bootstrap``  :math:`t_l = W_{l+1}^T \delta_{l+1}` with the rule's *own* signal of the
               layer above, :math:`\delta_{l+1} = \mathrm{SG}_{l+1} \odot f'(a_{l+1})`,
               i.e. :math:`\mathrm{SG}_{l+1}(h_{l+1})\, \partial h_{l+1}/\partial h_l`; only the
               top hidden layer sees the loss (its target is :math:`W_L^T e`, the true gradient);
``fixed``      not trained (the unified-view configurations below).

The module gradients of a step come from the same forward pass as the weight
updates, so network and modules follow the joint (simultaneous) gradient flow
:math:`\dot W = -\Delta W(W, \theta)`, :math:`\dot\theta = -(\eta_{SG}/\eta)\,
\partial\ell^{SG}/\partial\theta` at time :math:`t = \eta k`.

The unified view (Czarnecki et al. 2017)
----------------------------------------
Fixed linear modules reproduce the feedback-alignment family exactly:

===========  ========================================  ==========================================
method       module of hidden layer ``l``               helper
===========  ========================================  ==========================================
DFA          :math:`\mathrm{SG}_l = B_l e`              :func:`dfa_modules`
FA           :math:`\mathrm{SG}_l = B_{l+1}\delta_{l+1}` :func:`fa_modules` (bootstrapped through fixed ``B``)
Kickback     :math:`\mathrm{SG}_l = \mathbf 1 e`        :func:`kickback_modules` (DFA with all-ones ``B``)
===========  ========================================  ==========================================

and the label-conditioned linear module :func:`perfect_modules` equals the true
gradient wherever the network above the layer is linear (``mse`` loss).

Every function here is pure and takes the array namespace from its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .backend import get_dtype, get_namespace, member_rngs, namespace, to_device, to_host
from .metrics import angle
from .rules import Locking, SignalContext, get_rule, rule_updates, teaching_signals, validate_inputs

INPUTS = ("hidden", "label", "error", "above")
KINDS = ("linear", "mlp")
TARGETS = ("true", "bootstrap", "fixed")


@dataclass(frozen=True)
class SyntheticGradients:
    """The synthetic-gradient modules of every hidden layer of an ensemble (pure data).

    Attributes
    ----------
    params : tuple of dict
        One dict of arrays per hidden layer ``l = 1 .. L-1``. ``linear``: one
        matrix per input, named as the input (``"hidden"`` ``(E, n_l, n_l)``,
        ``"label"`` and ``"error"`` ``(E, n_l, n_L)``, ``"above"``
        ``(E, n_l, n_{l+1})``), and ``"bias"`` ``(E, n_l)``. ``mlp``: ``"in_<input>"``
        ``(E, m, width)``, ``"in_bias"`` ``(E, m)``, ``"out"`` ``(E, n_l, m)`` and
        ``"bias"`` ``(E, n_l)``.
    kind : {"linear", "mlp"}
    inputs : tuple of str
        What the modules read (see :data:`INPUTS`).
    target : {"true", "bootstrap", "fixed"}
        The regression target (``fixed``: never trained).
    lr : array
        The modules' learning rate, one per member, ``(E,)``.
    every : int
        The modules are updated on the steps that are multiples of ``every``.
    """

    params: tuple
    kind: str = "linear"
    inputs: tuple = ("hidden",)
    target: str = "true"
    lr: object = None
    every: int = 1

    @property
    def n_layers(self) -> int:
        """Number of hidden layers the modules serve (``L - 1``)."""
        return len(self.params)

    @property
    def trainable(self) -> bool:
        return self.target != "fixed"

    def member(self, m: int) -> SyntheticGradients:
        """The modules of member ``m`` alone (``E = 1``), as :meth:`sim.network.Network.member`."""
        params = tuple({k: v[m:m + 1, ...] for k, v in p.items()} for p in self.params)
        return replace(self, params=params, lr=None if self.lr is None else self.lr[m:m + 1])

    def signal(self, i: int, ctx: SignalContext):
        """The teaching signal of hidden layer ``i`` before ``f'`` (see :func:`synthetic_gradient`)."""
        return synthetic_gradient(self, i, ctx)


# --- settings checks -----------------------------------------------------------------------------

def _check_choice(kind: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def _check_inputs(inputs) -> tuple:
    if isinstance(inputs, str):
        inputs = (inputs,)
    inputs = tuple(inputs)
    if not inputs or any(k not in INPUTS for k in inputs) or len(set(inputs)) != len(inputs):
        raise ValueError(f"module inputs must be distinct names among {', '.join(INPUTS)}, got {inputs!r}")
    return tuple(k for k in INPUTS if k in inputs)  # canonical order


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _whole(value, minimum: int) -> bool:
    try:
        return not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        return False


def _member_lrs(lr, n_members: int) -> np.ndarray:
    try:
        arr = np.asarray(lr, dtype=float)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim == 0:
        arr = np.full(n_members, float(arr))
    if arr.shape != (n_members,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"module lr must be a non-negative finite number or one per member ({n_members}), "
                         f"got {lr!r}")
    return arr


def input_widths(sizes: Sequence[int], i: int, inputs: Sequence[str]) -> dict:
    """Widths of the inputs of hidden layer ``i`` (0-based) for layer ``sizes``."""
    width = {"hidden": sizes[i + 1], "label": sizes[-1], "error": sizes[-1], "above": sizes[i + 2]}
    return {k: width[k] for k in inputs}


def param_shapes(sizes: Sequence[int], n_members: int, i: int, kind: str, inputs: Sequence[str],
                 hidden_units: int | None = None) -> dict:
    """Shapes of the parameters of the module of hidden layer ``i`` (see :class:`SyntheticGradients`)."""
    n = sizes[i + 1]
    widths = input_widths(sizes, i, inputs)
    if kind == "linear":
        return {**{k: (n_members, n, w) for k, w in widths.items()}, "bias": (n_members, n)}
    m = n if hidden_units is None else hidden_units
    return {**{f"in_{k}": (n_members, m, w) for k, w in widths.items()}, "in_bias": (n_members, m),
            "out": (n_members, n, m), "bias": (n_members, n)}


# --- construction ----------------------------------------------------------------------------------

def init_modules(sizes: Sequence[int], n_members: int = 1, *, seed: int = 0, kind: str = "linear",
                 inputs: Sequence[str] = ("hidden",), target: str = "true", lr=0.1, every: int = 1,
                 hidden_units: int | None = None, init_scale: float = 1.0, backend: str = "numpy",
                 dtype: str = "float64", xp=None) -> SyntheticGradients:
    r"""Zero-output synthetic-gradient modules for every hidden layer of networks of layer ``sizes``.

    The output layer of every module is zero (``linear``: all of it), so that
    :math:`\mathrm{SG}_l \equiv 0` and the first update of every hidden layer is
    exactly zero (Jaderberg et al. 2016). The first layer of an ``mlp`` module
    has entries :math:`\mathcal N(0, s^2/\mathrm{fan\_in})` drawn from each
    member's ``"synthetic_gradient"`` seed stream.

    Parameters
    ----------
    sizes : sequence of int
        ``(n_0, ..., n_L)`` of the network.
    n_members : int
        Ensemble size ``E``.
    seed : int
        The run's seed.
    kind : {"linear", "mlp"}
        Module kind (see the module docstring).
    inputs : sequence of str
        Among ``hidden``, ``label``, ``error``, ``above``; ``("hidden",)`` is DNI,
        ``("hidden", "label")`` is cDNI.
    target : {"true", "bootstrap", "fixed"}
        Regression target (see the module docstring).
    lr : float or sequence of float
        Module learning rate, one for all members or one per member.
    every : int
        Update the modules every ``every`` steps.
    hidden_units : int, optional
        Width ``m`` of an ``mlp`` module (default: the layer's width).
    init_scale : float
        Scale ``s`` of the first layer of an ``mlp`` module.
    backend, dtype, xp
        Where the arrays live (``xp`` overrides ``backend``).

    Raises
    ------
    ValueError
        Unknown kind, input or target; non-positive sizes, ``every`` or
        ``hidden_units``; negative or non-finite ``lr`` or ``init_scale``.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive layer widths, got {sizes}")
    n_members = _positive_int("n_members", n_members)
    _check_choice("module kind", kind, KINDS)
    inputs = _check_inputs(inputs)
    _check_choice("module target", target, TARGETS)
    every = _positive_int("every", every)
    if hidden_units is not None:
        hidden_units = _positive_int("hidden_units", hidden_units)
    if not np.isfinite(init_scale) or init_scale < 0:
        raise ValueError(f"init_scale must be a non-negative finite number, got {init_scale!r}")
    lrs = _member_lrs(lr, n_members)
    xp = get_namespace(backend) if xp is None else xp
    rngs = member_rngs(seed, n_members, "synthetic_gradient")
    params = []
    for i in range(len(sizes) - 2):
        shapes = param_shapes(sizes, n_members, i, kind, inputs, hidden_units)
        host = {name: np.zeros(shape) for name, shape in shapes.items()}
        if kind == "mlp":
            fan_in = sum(input_widths(sizes, i, inputs).values())
            for m, rng in enumerate(rngs):
                for k in inputs:
                    arr = host[f"in_{k}"]
                    arr[m] = rng.normal(0.0, init_scale / np.sqrt(fan_in), size=arr.shape[1:])
        params.append({name: to_device(a, xp, dtype) for name, a in host.items()})
    return SyntheticGradients(tuple(params), kind, inputs, target, to_device(lrs, xp, dtype), every)


def _stack_members(arrays, n_members, xp):
    out = []
    for a in arrays:
        if a.ndim == 2:
            a = xp.broadcast_to(a[None, ...], (n_members, *a.shape))
        out.append(a)
    return out


def _fixed_linear(matrices, name: str, n_members: int | None) -> SyntheticGradients:
    xp = namespace(*matrices)
    if n_members is None:
        n_members = next((m.shape[0] for m in matrices if m.ndim == 3), 1)
    matrices = _stack_members(matrices, n_members, xp)
    params = tuple({name: m, "bias": xp.zeros((m.shape[0], m.shape[1]), dtype=m.dtype)} for m in matrices)
    lr = xp.zeros((n_members,), dtype=matrices[0].dtype) if matrices else None
    return SyntheticGradients(params, "linear", (name,), "fixed", lr, 1)


def dfa_modules(feedback, n_members: int | None = None) -> SyntheticGradients:
    r"""Fixed modules linear in the output error, :math:`\mathrm{SG}_l = B_l e`: DFA.

    ``feedback`` is DFA's ``B_1 .. B_{L-1}`` (:func:`sim.rules.draw_feedback`),
    each ``(E, n_l, n_L)`` or ``(n_l, n_L)`` (then repeated over ``n_members``,
    default 1). The rule ``sg`` with these modules gives exactly the updates of
    ``dfa`` with this feedback (Czarnecki et al. 2017).
    """
    return _fixed_linear(list(feedback), "error", n_members)


def fa_modules(feedback, n_members: int | None = None) -> SyntheticGradients:
    r"""Fixed modules bootstrapped through fixed feedback, :math:`\mathrm{SG}_l = B_{l+1}\delta_{l+1}`: FA.

    The bootstrapped target of DNI is :math:`\mathrm{SG}_{l+1}\,\partial h_{l+1}/\partial h_l =
    W_{l+1}^T(\mathrm{SG}_{l+1}\odot f'_{l+1})`; replacing :math:`W_{l+1}^T` by the fixed
    :math:`B_{l+1}` and using it as the module gives FA. ``feedback`` is FA's
    ``B_2 .. B_L``, each ``(E, n_l, n_{l+1})`` or ``(n_l, n_{l+1})``.
    """
    return _fixed_linear(list(feedback), "above", n_members)


def kickback_feedback(sizes: Sequence[int], n_members: int = 1, *, xp=None, dtype: str = "float64") -> list:
    """All-ones DFA feedback ``B_l = 1`` ``(E, n_l, n_L)``: Kickback (Balduzzi et al. 2015) as DFA."""
    xp = get_namespace("numpy") if xp is None else xp
    dt = get_dtype(xp, dtype)
    return [xp.ones((n_members, sizes[i], sizes[-1]), dtype=dt) for i in range(1, len(sizes) - 1)]


def kickback_modules(sizes: Sequence[int], n_members: int = 1, *, xp=None, dtype: str = "float64"):
    r"""Kickback as a fixed module, :math:`\mathrm{SG}_l = \mathbf 1\, e` (each unit gets the summed error)."""
    return dfa_modules(kickback_feedback(sizes, n_members, xp=xp, dtype=dtype), n_members)


def perfect_modules(weights, activation: str = "linear", *, biases=None, loss: str = "mse",
                    lr=0.0, target: str = "fixed") -> SyntheticGradients:
    r"""Label-conditioned linear modules equal to the true gradient (``mse`` loss).

    If the network above hidden layer ``l`` is linear, :math:`\hat y = P_l h_l + q_l`
    with :math:`P_l = W_L \cdots W_{l+1}` and :math:`q_l` its propagated biases, and
    the true gradient is linear in :math:`(h_l, y)`:

    .. math:: g_l = P_l^T(P_l h_l + q_l - y) = A h_l + C y + c,\quad
              A = P_l^T P_l,\; C = -P_l^T,\; c = P_l^T q_l ,

    so the cDNI module ``(A, C, c)`` represents it exactly (Czarnecki et al. 2017).
    That holds for every hidden layer of a linear network and for the top hidden
    layer of any network.

    Raises
    ------
    ValueError
        For ``ce`` (its gradient is not linear in ``(h, y)``), or a nonlinear
        activation with more than one hidden layer (no exact linear module below
        the top hidden layer).
    """
    from .nn import check_activation, check_loss

    check_activation(activation)
    check_loss(loss)
    if loss != "mse":
        raise ValueError("perfect linear modules exist only for the mse loss (the ce gradient is not linear)")
    weights = list(weights)
    n_hidden = len(weights) - 1
    if activation != "linear" and n_hidden > 1:
        raise ValueError("perfect linear modules need a linear network above every hidden layer: "
                         "activation 'linear', or a single hidden layer")
    xp = namespace(*weights)
    n_members = weights[0].shape[0]
    params = []
    for i in range(n_hidden):
        p = weights[-1]
        q = None if biases is None else biases[-1]
        for j in range(len(weights) - 2, i, -1):  # P = W_L ... W_{i+2} (0-based weights[i+1:])
            if biases is not None:
                q = q + xp.matmul(p, biases[j][..., None])[..., 0]
            p = xp.matmul(p, weights[j])
        pt = xp.matrix_transpose(p)
        bias = xp.zeros((n_members, pt.shape[1]), dtype=p.dtype) if q is None else xp.matmul(pt, q[..., None])[..., 0]
        params.append({"hidden": xp.matmul(pt, p), "label": -pt, "bias": bias})
    lr = to_device(_member_lrs(lr, n_members), xp, str(weights[0].dtype).split(".")[-1])
    return SyntheticGradients(tuple(params), "linear", ("hidden", "label"), target, lr, 1)


def locking_of(modules: SyntheticGradients) -> Locking:
    """What a layer taught by these modules waits for (Jaderberg et al. 2016).

    Modules of ``hidden`` (and ``label``) are update- and backward-unlocked;
    reading the output ``error`` is update-locked (DFA); reading the signal
    ``above`` is also backward-locked (FA).
    """
    return Locking(forward=True, update=bool({"error", "above"} & set(modules.inputs)),
                   backward="above" in modules.inputs)


# --- prediction ------------------------------------------------------------------------------------

def module_inputs(modules: SyntheticGradients, i: int, ctx: SignalContext) -> dict:
    """The inputs of the module of hidden layer ``i`` from a :class:`sim.rules.SignalContext`."""
    out = {}
    for k in modules.inputs:
        if k == "hidden":
            out[k] = ctx.forward.inputs[i + 1]
        elif k == "label":
            out[k] = ctx.targets
        elif k == "error":
            out[k] = ctx.signals[-1]
        else:
            out[k] = ctx.signals[i + 1]
    return out


def _linear_map(params: dict, inputs: dict, prefix: str = "", bias: str = "bias"):
    xp = namespace(*inputs.values())
    total = None
    for k, u in inputs.items():
        term = xp.matmul(u, xp.matrix_transpose(params[prefix + k]))
        total = term if total is None else total + term
    return total + params[bias][:, None, :]


def predict(modules: SyntheticGradients, i: int, inputs: dict):
    r"""The prediction :math:`\mathrm{SG}_i(u)` of the module of hidden layer ``i``, ``(E, B, n)``.

    ``inputs`` maps each name of ``modules.inputs`` to its array ``(E, B, w)`` or
    ``(B, w)`` (:func:`module_inputs`).
    """
    params = modules.params[i]
    if modules.kind == "linear":
        return _linear_map(params, inputs)
    xp = namespace(*inputs.values())
    pre = _linear_map(params, inputs, "in_", "in_bias")
    z = xp.maximum(pre, xp.zeros_like(pre))
    return xp.matmul(z, xp.matrix_transpose(params["out"])) + params["bias"][:, None, :]


def synthetic_gradient(modules: SyntheticGradients, i: int, ctx: SignalContext):
    r"""The synthetic gradient :math:`\mathrm{SG}_i` of hidden layer ``i`` in a signal context.

    This is the hidden signal of the rules ``sg`` and ``cdni`` before the
    activation derivative (:mod:`sim.rules`).
    """
    return predict(modules, i, module_inputs(modules, i, ctx))


# --- targets and regression ------------------------------------------------------------------------

def true_gradients(weights, updates, activation: str) -> list:
    r"""BP's hidden signals before ``f'``: :math:`g_l = W_{l+1}^T \delta^{BP}_{l+1}` for ``l = 1 .. L-1``.

    Computed from the forward pass and output error stored in ``updates`` (a
    :class:`sim.rules.Updates` of any rule on the same weights).
    """
    xp = namespace(*weights)
    bp = teaching_signals(get_rule("bp"), weights, updates.forward, updates.signals[-1], activation)
    return [xp.matmul(bp[i + 1], weights[i + 1]) for i in range(len(weights) - 1)]


def bootstrap_targets(weights, signals) -> list:
    r"""Bootstrapped targets :math:`t_l = W_{l+1}^T \delta_{l+1}` from a rule's own signals."""
    xp = namespace(*weights)
    return [xp.matmul(signals[i + 1], weights[i + 1]) for i in range(len(weights) - 1)]


def module_targets(modules: SyntheticGradients, updates, *, weights, activation: str, target: str | None = None):
    """The regression targets of every module (``target`` defaults to the modules' own)."""
    target = modules.target if target is None else target
    _check_choice("module target", target, ("true", "bootstrap"))
    if target == "true":
        return true_gradients(weights, updates, activation)
    return bootstrap_targets(weights, updates.signals)


def _as_members(u, xp):
    return u[None, ...] if u.ndim == 2 else u


def _layer_gradients(modules: SyntheticGradients, i: int, inputs: dict, target):
    """Prediction, residual-based loss and parameter gradients of one module."""
    xp = namespace(target, *inputs.values())
    params = modules.params[i]
    batch = target.shape[-2]
    grads = {}
    if modules.kind == "linear":
        residual = _linear_map(params, inputs) - target
        for k, u in inputs.items():
            grads[k] = xp.matmul(xp.matrix_transpose(residual), _as_members(u, xp)) / batch
    else:
        pre = _linear_map(params, inputs, "in_", "in_bias")
        z = xp.maximum(pre, xp.zeros_like(pre))
        residual = xp.matmul(z, xp.matrix_transpose(params["out"])) + params["bias"][:, None, :] - target
        grads["out"] = xp.matmul(xp.matrix_transpose(residual), z) / batch
        back = xp.matmul(residual, params["out"]) * xp.astype(pre > 0, pre.dtype)
        for k, u in inputs.items():
            grads[f"in_{k}"] = xp.matmul(xp.matrix_transpose(back), _as_members(u, xp)) / batch
        grads["in_bias"] = xp.mean(back, axis=-2)
    grads["bias"] = xp.mean(residual, axis=-2)
    loss = xp.sum(residual * residual, axis=(-2, -1)) / (2 * batch)
    return grads, loss


def module_gradients(modules: SyntheticGradients, updates, *, weights, targets, activation: str,
                     target: str | None = None):
    r"""Gradients of the modules' regression losses on the batch of ``updates``.

    For hidden layer ``l`` with inputs :math:`u_b` and target :math:`t_{l,b}`
    (:func:`module_targets`), the loss is
    :math:`\ell^{SG}_l = \frac{1}{2B}\sum_b \lVert \mathrm{SG}_l(u_b) - t_{l,b}\rVert^2`;
    for a linear module, with the residual :math:`r_b = \mathrm{SG}_l(u_b) - t_{l,b}`,
    :math:`\partial\ell/\partial M_k = \operatorname{mean}_b r_b u_{k,b}^T` and
    :math:`\partial\ell/\partial c = \operatorname{mean}_b r_b`.

    Parameters
    ----------
    modules : SyntheticGradients
    updates : sim.rules.Updates
        The rule's updates on the batch (forward pass and signals).
    weights : list of arrays
        The weights the updates were computed with.
    targets : array
        The batch's ``y`` (the ``label`` input).
    activation : str
        The network's hidden activation.
    target : {"true", "bootstrap"}, optional
        Default: the modules' own target.

    Returns
    -------
    (list of dict, array)
        One dict of gradients per hidden layer (same names as ``params``) and the
        regression losses ``(E, L-1)``.
    """
    goals = module_targets(modules, updates, weights=weights, activation=activation, target=target)
    ctx = SignalContext(updates.signals, weights, None, updates.forward, targets, modules)
    grads, losses = [], []
    for i, goal in enumerate(goals):
        g, loss = _layer_gradients(modules, i, module_inputs(modules, i, ctx), goal)
        grads.append(g)
        losses.append(loss)
    xp = namespace(*weights)
    return grads, (xp.stack(losses, axis=-1) if losses else None)


def apply_gradients(modules: SyntheticGradients, grads, *, mask=None) -> SyntheticGradients:
    r"""One SGD step :math:`\theta \leftarrow \theta - \eta_{SG}\, g` on every module (members in ``mask`` only)."""
    new = []
    for params, g in zip(modules.params, grads):
        layer = {}
        for name, p in params.items():
            xp = namespace(p)
            shape = (p.shape[0],) + (1,) * (p.ndim - 1)
            step = p - xp.reshape(modules.lr, shape) * g[name]
            layer[name] = step if mask is None else xp.where(xp.reshape(mask, shape), step, p)
        new.append(layer)
    return replace(modules, params=tuple(new))


def update_modules(modules: SyntheticGradients, updates, *, weights, targets, activation: str, step: int = 0,
                   alive=None) -> SyntheticGradients:
    """The trainer's hook: one regression step of the modules on the step's batch.

    Nothing happens for ``fixed`` modules or on steps that are not multiples of
    ``modules.every``; members outside ``alive`` keep their modules.
    """
    if not modules.trainable or step % modules.every or modules.n_layers == 0:
        return modules
    grads, _ = module_gradients(modules, updates, weights=weights, targets=targets, activation=activation)
    return apply_gradients(modules, grads, mask=alive)


def observe_modules(modules: SyntheticGradients, own, bp, *, weights, targets) -> dict:
    r"""The modules' metrics against the true gradient :math:`g_l`, each ``(E, L-1)``.

    ``sg_error``: :math:`\lVert \mathrm{SG}_l - g_l\rVert_F / \lVert g_l\rVert_F` over the batch
    (``nan`` where :math:`g_l = 0`); ``sg_angle``: the angle between them in
    degrees. ``own`` and ``bp`` are the :class:`sim.rules.Updates` of the rule and
    of BP on the same batch and weights.
    """
    xp = namespace(*weights)
    ctx = SignalContext(own.signals, weights, None, own.forward, targets, modules)
    errors, angles = [], []
    for i in range(len(weights) - 1):
        s = synthetic_gradient(modules, i, ctx)
        g = xp.matmul(bp.signals[i + 1], weights[i + 1])
        d = s - g
        num = xp.sqrt(xp.sum(d * d, axis=(-2, -1)))
        den = xp.sqrt(xp.sum(g * g, axis=(-2, -1)))
        safe = xp.where(den > 0, den, xp.ones_like(den))
        errors.append(xp.where(den > 0, num / safe, xp.full(den.shape, float("nan"), dtype=den.dtype)))
        angles.append(angle(s, g))
    if not errors:
        return {}
    return {"sg_error": xp.stack(errors, axis=-1), "sg_angle": xp.stack(angles, axis=-1)}


# --- validation and the rules' hooks ---------------------------------------------------------------

def check_modules(modules, sizes: Sequence[int], n_members: int, *, rule: str = "sg",
                  require: Sequence[str] = ()) -> None:
    """Check that ``modules`` fit networks of layer ``sizes``; raise ``ValueError`` saying what is wrong."""
    if modules is None:
        raise ValueError(f"rule {rule!r} needs its synthetic-gradient modules: pass modules= "
                         f"(see sim.synthetic.init_modules)")
    if not isinstance(modules, SyntheticGradients):
        raise ValueError(f"rule {rule!r} needs modules of type sim.synthetic.SyntheticGradients, "
                         f"got {type(modules).__name__}")
    _check_choice("module kind", modules.kind, KINDS)
    _check_choice("module target", modules.target, TARGETS)
    if _check_inputs(modules.inputs) != tuple(modules.inputs):
        raise ValueError(f"module inputs must be in the order {INPUTS}, got {modules.inputs!r}")
    missing = [k for k in require if k not in modules.inputs]
    if missing:
        raise ValueError(f"rule {rule!r} needs modules reading {', '.join(require)}; these read "
                         f"{', '.join(modules.inputs)}")
    n_hidden = len(sizes) - 2
    if modules.n_layers != n_hidden:
        raise ValueError(f"got synthetic-gradient modules for {modules.n_layers} hidden layers, "
                         f"the network has {n_hidden}")
    for i, params in enumerate(modules.params):
        hidden_units = params["out"].shape[-1] if modules.kind == "mlp" and "out" in params else None
        want = param_shapes(sizes, n_members, i, modules.kind, modules.inputs, hidden_units)
        if set(params) != set(want):
            raise ValueError(f"module {i + 1} must hold the parameters {sorted(want)}, got {sorted(params)}")
        for name, shape in want.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"parameter {name!r} of module {i + 1} must have shape {shape}, "
                                 f"got {tuple(params[name].shape)}")
            xp = namespace(params[name])
            if not bool(xp.all(xp.isfinite(params[name]))):
                raise ValueError(f"parameter {name!r} of module {i + 1} contains non-finite values (nan or inf)")
    if modules.n_layers and (modules.lr is None or tuple(modules.lr.shape) != (n_members,)):
        raise ValueError(f"module lr must hold one value per member ({n_members})")


def check_dni(modules, sizes, n_members) -> None:
    """Validation hook of the rule ``sg``."""
    check_modules(modules, sizes, n_members, rule="sg")


def check_cdni(modules, sizes, n_members) -> None:
    """Validation hook of the rule ``cdni``: the modules must read the label."""
    check_modules(modules, sizes, n_members, rule="cdni", require=("label",))


def _init_for(network, seed, inputs, settings):
    settings = dict(settings)
    inputs = settings.pop("inputs", inputs)
    allowed = {"kind", "target", "lr", "every", "hidden_units", "init_scale"}
    unknown = set(settings) - allowed
    if unknown:
        raise ValueError(f"unknown synthetic-gradient settings {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(allowed | {'inputs'}))}")
    w = network.weights[0]
    return init_modules(network.sizes, network.n_members, seed=seed, inputs=inputs, xp=namespace(w),
                        dtype=str(w.dtype).split(".")[-1], **settings)


def init_dni(network, *, seed: int = 0, **settings) -> SyntheticGradients:
    """Init hook of the rule ``sg``: DNI modules ``SG(h)`` (settings as :func:`init_modules`)."""
    return _init_for(network, seed, ("hidden",), settings)


def init_cdni(network, *, seed: int = 0, **settings) -> SyntheticGradients:
    """Init hook of the rule ``cdni``: label-conditioned modules ``SG(h, y)``."""
    return _init_for(network, seed, ("hidden", "label"), settings)


# --- learning through a module below a fixed readout -----------------------------------------------

@dataclass(frozen=True)
class ReadoutRun:
    """What :func:`train_fixed_readout` returns (host arrays, leading axes ``(T, E)``).

    ``steps`` ``(T,)``; ``loss`` ``(T, E)``; ``first_weights`` ``(T, E, n_1, n_0)``
    the trajectory of ``W_1``; ``module`` the trajectory of each parameter of the
    top module (the one right below the readout), name -> ``(T, E, ...)``;
    ``weights`` and ``modules`` the final state (on the device).
    """

    steps: np.ndarray
    loss: np.ndarray
    first_weights: np.ndarray
    module: dict
    weights: list
    modules: SyntheticGradients


def train_fixed_readout(weights, x, y, modules: SyntheticGradients, *, rule: str = "cdni", lr=0.05,
                        steps: int = 1000, record_every: int = 1, activation: str = "linear",
                        loss: str = "mse") -> ReadoutRun:
    r"""Full-batch descent of every layer but a fixed readout ``W_L``, taught through synthetic gradients.

    The setting of Czarnecki et al. (2017) for linear regression: with
    ``weights = [W_1, I]`` the prediction is :math:`p = W_1 x` and the module of the
    hidden layer ``p`` predicts :math:`\partial \ell/\partial p = p - y`; only
    :math:`W_1 .. W_{L-1}` and the modules learn (``W <- W - lr dW`` and
    :func:`update_modules` on the same forward pass), the readout stays fixed, so
    the SG-trained part *is* the predictor. ``x`` ``(E, N, n_0)`` or ``(N, n_0)``;
    ``lr`` one number or one per member.
    """
    rule = get_rule(rule)
    validate_inputs(rule, weights, x, y, activation=activation, loss=loss, modules=modules)
    if not _whole(steps, 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    record_every = _positive_int("record_every", record_every)
    xp = namespace(*weights)
    weights = list(weights)
    n_members = weights[0].shape[0]
    lr_dev = xp.reshape(to_device(_member_lrs(lr, n_members), xp, str(weights[0].dtype).split(".")[-1]),
                        (n_members, 1, 1))
    top = modules.n_layers - 1
    recorded, losses, firsts = [], [], []
    module_traj = {name: [] for name in modules.params[top]} if top >= 0 else {}
    for step in range(int(steps) + 1):
        upd = rule_updates(rule, weights, x, y, activation=activation, loss=loss, modules=modules, validate=False)
        if step % record_every == 0 or step == steps:
            recorded.append(step)
            losses.append(to_host(upd.loss))
            firsts.append(to_host(weights[0]))
            for name in module_traj:
                module_traj[name].append(to_host(modules.params[top][name]))
        if step == steps:
            break
        new_modules = update_modules(modules, upd, weights=weights, targets=y, activation=activation, step=step)
        weights = [w - lr_dev * dw for w, dw in zip(weights[:-1], upd.weights[:-1])] + [weights[-1]]
        modules = new_modules
    return ReadoutRun(np.asarray(recorded), np.stack(losses), np.stack(firsts),
                      {k: np.stack(v) for k, v in module_traj.items()}, weights, modules)
