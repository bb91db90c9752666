r"""Learning rules as teaching signals: BP, FA and DFA.

Every rule of the toolkit differs only in the teaching signal
:math:`\delta_l` that layer ``l`` receives; the update is always

.. math:: \Delta W_l = \operatorname{mean}_b\, \delta_{l,b}\, h_{l-1,b}^T,
          \qquad W_l \leftarrow W_l - \eta\, \Delta W_l ,

with :math:`\delta_L = e` the output error (:func:`sim.nn.output_error`).
For a hidden layer, with :math:`f'` the activation derivative at :math:`a_l`:

========  =====================================================================
rule      :math:`\delta_l`
========  =====================================================================
``bp``    :math:`(W_{l+1}^T \delta_{l+1}) \odot f'` (back-propagation)
``fa``    :math:`(B_{l+1} \delta_{l+1}) \odot f'`, ``B_{l+1}`` fixed, ``(n_l, n_{l+1})``
``dfa``   :math:`(B_l \delta_L) \odot f'`, ``B_l`` fixed, ``(n_l, n_L)``
``sg``    :math:`\mathrm{SG}_l(h_l) \odot f'`, ``SG_l`` a trained module (DNI, :mod:`sim.synthetic`)
``cdni``  :math:`\mathrm{SG}_l(h_l, y) \odot f'`, the label-conditioned module (cDNI)
``usf``   :math:`(\operatorname{sign}(W_{l+1}^T) \delta_{l+1}) \odot f'` (sign symmetry)
``frsf``  :math:`((|R_{l+1}| \odot \operatorname{sign}(W_{l+1}^T)) \delta_{l+1}) \odot f'`, ``R`` fixed
``brsf``  as ``frsf``, ``R`` redrawn for every batch by the trainer
``kp``    :math:`(B_{l+1} \delta_{l+1}) \odot f'`, ``B`` learned by Kolen-Pollack
``drtp``  :math:`(B_l\,(-y)) \odot f'`, ``B_l`` fixed, ``(n_l, n_L)`` (DRTP)
========  =====================================================================

The last five are described in :mod:`sim.rules_feedback`.

The ``feedback`` argument is the list of fixed matrices, one per hidden layer,
in layer order: ``B_2 .. B_L`` for FA and ``B_1 .. B_{L-1}`` for DFA (and, alike,
the magnitudes ``R_2 .. R_L`` of ``frsf`` / ``brsf``, the current ``B_2 .. B_L``
of ``kp``, ``B_1 .. B_{L-1}`` of ``drtp``). Each is
``(E, rows, cols)`` or ``(rows, cols)`` (shared by all members). The
``modules`` argument holds the trained synthetic-gradient modules of ``sg`` and
``cdni`` (:func:`sim.synthetic.init_modules`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .backend import is_column_major, member_rngs, namespace, to_device
from .rules_feedback import drtp_signal, random_sign_matrices, random_sign_signal, usf_matrices, usf_signal
from .nn import (
    Forward,
    check_activation,
    check_loss,
    forward,
    loss_and_error,
    times_derivative,
)


@dataclass(frozen=True)
class Locking:
    """What a layer must wait for before it can update (Jaderberg et al. 2016).

    Attributes
    ----------
    forward : bool
        The layer's input needs the forward pass of every layer below.
    update : bool
        The layer cannot update before the forward pass reached the output.
    backward : bool
        The layer cannot update before the layers above computed their signals.
    """

    forward: bool
    update: bool
    backward: bool


@dataclass(frozen=True)
class Rule:
    """A learning rule: how a hidden layer's teaching signal is formed.

    ``hidden_signal(i, ctx)`` returns the signal of the hidden layer with
    0-based index ``i`` *before* the activation derivative, given a
    :class:`SignalContext` whose ``signals[i+1:]`` are already computed; it
    must be a new array, which the caller multiplies by ``f'`` in place.
    ``feedback`` names the fixed matrices the rule needs: ``None``,
    ``"layerwise"`` (FA: ``B_{l+1}``) or ``"direct"`` (DFA: ``B_l``).

    A rule with trained modules (the synthetic gradients of ``sg`` and ``cdni``)
    carries hooks the trainer calls; all default to ``None``:

    * ``init_modules(network, *, seed, **settings) -> modules``;
    * ``update_modules(modules, updates, *, weights, targets, activation, step, alive) -> modules``,
      called every step with the step's :class:`Updates` and pre-update weights;
    * ``observe_modules(modules, own, bp, *, weights, targets) -> dict`` of extra metrics;
    * ``check_modules(modules, sizes, n_members)`` raises ``ValueError`` if they do not fit.

    The feedback of the sign-symmetry rules and Kolen-Pollack
    (:mod:`sim.rules_feedback`): ``feedback_matrices(weights, feedback)``
    returns the ``B_2 .. B_L`` a layerwise rule actually uses (for the weight
    alignment metric) when they are not ``feedback`` itself;
    ``redraws_feedback``: the trainer draws new ``feedback`` before every step
    (``brsf``); ``learns_feedback``: the trainer moves ``feedback`` by the
    Kolen-Pollack step after every step (``kp``).
    """

    name: str
    title: str
    feedback: str | None
    locking: Locking
    hidden_signal: Callable
    init_modules: Callable | None = None
    update_modules: Callable | None = None
    observe_modules: Callable | None = None
    check_modules: Callable | None = None
    feedback_matrices: Callable | None = None
    redraws_feedback: bool = False
    learns_feedback: bool = False


@dataclass(frozen=True)
class SignalContext:
    """What a rule may use to form a hidden teaching signal.

    ``signals`` is filled from the top down (``signals[-1]`` is the output
    error); ``forward`` is the forward pass, ``targets`` the batch's ``y``,
    ``feedback`` the fixed matrices, ``modules`` any trained rule modules (for
    example synthetic-gradient modules).
    """

    signals: list
    weights: list
    feedback: list | None
    forward: Forward
    targets: object
    modules: object = None


def _bp_signal(i, ctx: SignalContext):
    xp = namespace(ctx.signals[i + 1])
    return xp.matmul(ctx.signals[i + 1], ctx.weights[i + 1])


def _fa_signal(i, ctx: SignalContext):
    xp = namespace(ctx.signals[i + 1])
    return xp.matmul(ctx.signals[i + 1], xp.matrix_transpose(ctx.feedback[i]))


def _dfa_signal(i, ctx: SignalContext):
    xp = namespace(ctx.signals[-1])
    return xp.matmul(ctx.signals[-1], xp.matrix_transpose(ctx.feedback[i]))


def _sg_signal(i, ctx: SignalContext):
    # SG_l(h_l [, y]): the prediction of layer l's trained module (sim.synthetic)
    if ctx.modules is None:
        raise ValueError("the synthetic-gradient rules need their modules: pass modules= "
                         "(see sim.synthetic.init_modules)")
    return ctx.modules.signal(i, ctx)


def _synthetic_hook(name: str) -> Callable:
    """The function ``name`` of :mod:`sim.synthetic`, imported on first call (that module imports this one)."""
    def hook(*args, **kwargs):
        from . import synthetic

        return getattr(synthetic, name)(*args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    return hook


_SG_HOOKS = dict(update_modules=_synthetic_hook("update_modules"), observe_modules=_synthetic_hook("observe_modules"))

RULES: dict[str, Rule] = {
    "bp": Rule("bp", "back-propagation", None, Locking(True, True, True), _bp_signal),
    "fa": Rule("fa", "feedback alignment", "layerwise", Locking(True, True, True), _fa_signal),
    "dfa": Rule("dfa", "direct feedback alignment", "direct", Locking(True, True, False), _dfa_signal),
    "sg": Rule("sg", "synthetic gradients (DNI)", None, Locking(True, False, False), _sg_signal,
               init_modules=_synthetic_hook("init_dni"), check_modules=_synthetic_hook("check_dni"), **_SG_HOOKS),
    "cdni": Rule("cdni", "label-conditioned synthetic gradients (cDNI)", None, Locking(True, False, False),
                 _sg_signal, init_modules=_synthetic_hook("init_cdni"), check_modules=_synthetic_hook("check_cdni"),
                 **_SG_HOOKS),
    # sign symmetry, Kolen-Pollack, DRTP (sim.rules_feedback)
    "usf": Rule("usf", "sign symmetry, uniform magnitudes (usf)", None, Locking(True, True, True), usf_signal,
                feedback_matrices=usf_matrices),
    "brsf": Rule("brsf", "sign symmetry, magnitudes random per batch (brsf)", "layerwise", Locking(True, True, True),
                 random_sign_signal, feedback_matrices=random_sign_matrices, redraws_feedback=True),
    "frsf": Rule("frsf", "sign symmetry, magnitudes random fixed (frsf)", "layerwise", Locking(True, True, True),
                 random_sign_signal, feedback_matrices=random_sign_matrices),
    "kp": Rule("kp", "Kolen-Pollack", "layerwise", Locking(True, True, True), _fa_signal, learns_feedback=True),
    "drtp": Rule("drtp", "direct random target projection (DRTP)", "direct", Locking(True, False, False),
                 drtp_signal),
}


def get_rule(rule: str | Rule) -> Rule:
    """The :class:`Rule` named ``rule`` (a :class:`Rule` is returned as is)."""
    if isinstance(rule, Rule):
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    return RULES[rule]


@dataclass(frozen=True)
class Updates:
    """Everything one application of a rule to a batch produces.

    Attributes
    ----------
    weights : list
        ``dW_1 .. dW_L`` (descent directions: ``W <- W - lr * dW``), times
        ``scale`` when :func:`rule_updates` was given one.
    biases : list or None
        ``db_1 .. db_L`` when the network has biases (scaled likewise).
    signals : list
        The per-sample teaching signals ``delta_1 .. delta_L``, ``(E, B, n_l)``.
    loss : array
        The loss of each member on the batch, ``(E,)``.
    forward : Forward
        The forward pass the updates were computed from.
    """

    weights: list
    biases: list | None
    signals: list
    loss: object
    forward: Forward


def teaching_signals(rule: Rule, weights, fwd: Forward, error, activation: str, feedback=None, targets=None,
                     modules=None) -> list:
    """The teaching signals ``delta_1 .. delta_L`` of ``rule`` (``delta_L = error``)."""
    n_layers = len(weights)
    signals = [None] * n_layers
    signals[-1] = error
    ctx = SignalContext(signals, weights, feedback, fwd, targets, modules)
    for i in range(n_layers - 2, -1, -1):
        # f'(a_l) from the layer's output h_l = fwd.inputs[i + 1]
        signals[i] = times_derivative(rule.hidden_signal(i, ctx), fwd.inputs[i + 1], activation)
    return signals


def signal_updates(signals, inputs, scale=None, like=None) -> list:
    r"""Weight updates :math:`\operatorname{mean}_b \delta_{l,b} h_{l-1,b}^T` for every layer.

    ``scale``, optional, ``(E,)``: member ``m``'s updates are multiplied by
    ``scale[m]`` (the trainer passes the learning rates, so that the SGD step
    needs no product array of its own). The factor ``scale / B`` multiplies
    the smaller operand: the signal ``(E, B, n_l)`` when ``B < n_{l-1}``,
    otherwise the product, in place.

    ``like``, optional: the weights. An update whose weight is stored column
    by column (the trainer's copies, :func:`sim.backend.column_major`) is
    formed as :math:`(h^T \delta)^T`, which stores it the same way, so that
    the SGD step reads both in one order; otherwise as :math:`\delta^T h`.
    """
    xp = namespace(*signals)
    batch = signals[0].shape[-2]
    factor = 1 / batch if scale is None else xp.reshape(scale / batch, (-1, 1, 1))
    updates = []
    for i, (delta, h) in enumerate(zip(signals, inputs)):
        if h.ndim == 2:  # input shared by all members: (B, n) -> broadcast
            h = h[None, ...]
        scale_signal = batch < h.shape[-1]
        if scale_signal:
            delta = delta * factor
        if like is not None and is_column_major(like[i]):
            update = xp.matrix_transpose(xp.matmul(xp.matrix_transpose(h), delta))
        else:
            update = xp.matmul(xp.matrix_transpose(delta), h)
        if not scale_signal:
            update *= factor
        updates.append(update)
    return updates


def rule_updates(rule, weights, x, y, *, activation="linear", loss="mse", feedback=None, biases=None,
                 validate=True, modules=None, scale=None) -> Updates:
    """Apply ``rule`` to the batch ``(x, y)``: signals, updates and loss.

    The full-information form of :func:`compute_updates`; see there for the
    arguments. ``validate=False`` skips the input checks (for the trainer's hot
    loop, whose inputs were checked once). ``scale``, optional, ``(E,)``
    multiplies member ``m``'s weight and bias updates by ``scale[m]`` (the
    trainer passes the learning rates and gets the SGD steps); the signals
    are not scaled.
    """
    rule = get_rule(rule)
    if validate:
        weights, x, y, feedback = as_arrays(weights, x, y, feedback)
        validate_inputs(rule, weights, x, y, activation=activation, loss=loss, feedback=feedback,
                        biases=biases, modules=modules)
        if scale is not None and (getattr(scale, "ndim", None) != 1 or scale.shape[0] != weights[0].shape[0]
                                  or not _all_finite(scale)):
            raise ValueError(f"scale must be a finite array of shape ({weights[0].shape[0]},), one factor per "
                             f"member, got {scale!r}")
    fwd = forward(weights, x, activation, biases)
    y_hat = fwd.output
    loss_values, error = loss_and_error(y_hat, y, loss)
    signals = teaching_signals(rule, weights, fwd, error, activation, feedback, targets=y, modules=modules)
    xp = namespace(y_hat)
    bias_updates = None
    if biases is not None:
        bias_updates = [xp.mean(delta, axis=-2) for delta in signals]
        if scale is not None:
            bias_updates = [db * xp.reshape(scale, (-1, 1)) for db in bias_updates]
    return Updates(signal_updates(signals, fwd.inputs, scale, like=weights), bias_updates, signals, loss_values, fwd)


def compute_updates(rule, weights, x, y, *, activation="linear", loss="mse", feedback=None, modules=None):
    r"""The weight updates ``[dW_1, ..., dW_L]`` of a learning rule on one batch.

    Pure: no state, no I/O; the array namespace comes from the inputs.

    Parameters
    ----------
    rule : {"bp", "fa", "dfa", "sg", "cdni", "usf", "brsf", "frsf", "kp", "drtp"}
        The learning rule (see the module docstring for its teaching signal).
    weights : list of arrays
        ``W_1 .. W_L``, each ``(E, n_l, n_{l-1})``.
    x : array
        Inputs, ``(E, B, n_0)`` or ``(B, n_0)``.
    y : array
        Targets, ``(E, B, n_L)`` or ``(B, n_L)`` (one-hot for ``ce``).
    activation : {"linear", "relu", "tanh"}
        Hidden activation; the output layer is linear.
    loss : {"mse", "ce"}
        ``mse``: :math:`\frac{1}{2B}\sum_b\lVert\hat y_b-y_b\rVert^2`; ``ce``:
        softmax cross-entropy averaged over the batch.
    feedback : list of arrays, optional
        FA: ``B_2 .. B_L`` with ``B_{l+1}`` of shape ``(n_l, n_{l+1})``; DFA:
        ``B_1 .. B_{L-1}`` with ``B_l`` of shape ``(n_l, n_L)``; each may carry a
        leading ensemble axis. Required by FA and DFA, ignored by BP. The
        same shapes for ``frsf`` / ``brsf`` (the magnitudes ``R``: ``B =
        |R| * sign(W^T)``), ``kp`` (the current ``B``; FA's signal) and
        ``drtp`` (DFA's ``B_l``); ``usf`` needs none.
    modules : sim.synthetic.SyntheticGradients, optional
        The synthetic-gradient modules of ``sg`` and ``cdni`` (required by them,
        ignored by the others); see :func:`sim.synthetic.init_modules`.

    Returns
    -------
    list of arrays
        ``dW_l`` of shape ``(E, n_l, n_{l-1})``, descent directions
        (``W_l <- W_l - lr * dW_l``); for BP exactly :math:`\partial L/\partial W_l`.

    Raises
    ------
    ValueError
        Unknown rule, activation or loss; mismatched shapes of weights, data or
        feedback; missing feedback; non-finite inputs.
    """
    return rule_updates(rule, weights, x, y, activation=activation, loss=loss, feedback=feedback,
                        modules=modules).weights


# --- the matmuls of a step ----------------------------------------------------------------------

def step_matmul_shapes(rule, sizes: Sequence[int], n_members: int, batch: int) -> list[tuple[int, int, int, int]]:
    r"""The matmuls of one training step, as ``(E, m, k, n)``: ``(E, m, k) @ (E, k, n)``.

    With layer sizes :math:`n_0, \dots, n_L` and batch :math:`B`:

    * forward, each layer :math:`l = 1..L`: :math:`h_{l-1} W_l^T`,
      ``(E, B, n_{l-1}) @ (E, n_{l-1}, n_l)``;
    * teaching signals, each hidden layer :math:`l = L-1..1`: BP
      :math:`\delta_{l+1} W_{l+1}` and FA :math:`\delta_{l+1} B_{l+1}^T` are
      ``(E, B, n_{l+1}) @ (E, n_{l+1}, n_l)``; DFA :math:`\delta_L B_l^T` is
      ``(E, B, n_L) @ (E, n_L, n_l)``;
    * weight updates, each layer: :math:`(h_{l-1}^T \delta_l)^T`,
      ``(E, n_{l-1}, B) @ (E, B, n_l)``, the product of the trainer's
      column-major weights (see :func:`sim.rules.signal_updates`).
    """
    rule = get_rule(rule)
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    shapes = [(n_members, batch, sizes[i], sizes[i + 1]) for i in range(n_layers)]
    for i in range(n_layers - 2, -1, -1):  # hidden layer i + 1 (1-based)
        above = sizes[-1] if rule.feedback == "direct" else sizes[i + 2]
        shapes.append((n_members, batch, above, sizes[i + 1]))
    shapes += [(n_members, sizes[i], batch, sizes[i + 1]) for i in range(n_layers)]
    return shapes


def step_flops(rule, sizes: Sequence[int], n_members: int, batch: int) -> float:
    r"""Floating-point operations of the matmuls of one training step of an ensemble.

    A product ``(m, k) @ (k, n)`` counts :math:`2mkn` (a multiply and an add
    per term); element-wise work (activations, loss, the SGD update) is not
    counted. Summed over :func:`step_matmul_shapes`, for BP and FA this is

    .. math:: 2EB\Big(2\sum_{l=1}^{L} n_l n_{l-1} + \sum_{l=1}^{L-1} n_{l+1} n_l\Big),

    and for DFA the middle sum is :math:`\sum_{l=1}^{L-1} n_L n_l`.
    """
    return float(sum(2 * e * m * k * n for e, m, k, n in step_matmul_shapes(rule, sizes, n_members, batch)))


# --- feedback matrices ---------------------------------------------------------------------------

FEEDBACK_DISTRIBUTIONS = ("gaussian", "uniform")


def feedback_shapes(rule, sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Shapes of the fixed feedback matrices ``rule`` needs for layer ``sizes``."""
    rule = get_rule(rule)
    if rule.feedback == "layerwise":
        return [(sizes[i], sizes[i + 1]) for i in range(1, len(sizes) - 1)]
    if rule.feedback == "direct":
        return [(sizes[i], sizes[-1]) for i in range(1, len(sizes) - 1)]
    return []


def draw_feedback(rule, sizes: Sequence[int], n_members: int, *, seed: int, distribution: str = "gaussian",
                  scale: float = 1.0, xp=None, dtype: str = "float64") -> list | None:
    r"""Draw the fixed random feedback matrices of FA or DFA for an ensemble.

    Entries are i.i.d. with mean 0 and standard deviation
    :math:`\mathrm{scale}/\sqrt{c}`, where ``c`` is the number of columns (the
    size of the signal the matrix carries down): Gaussian, or uniform on
    :math:`[-\mathrm{scale}\sqrt{3/c}, \mathrm{scale}\sqrt{3/c}]`. Member ``m``
    draws from its own ``"feedback"`` seed stream (see :mod:`sim.backend`).

    Returns
    -------
    list of arrays or None
        One ``(E, rows, cols)`` array per hidden layer in layer order, or ``None``
        for a rule without feedback (BP).
    """
    rule = get_rule(rule)
    if rule.feedback is None:
        return None
    if distribution not in FEEDBACK_DISTRIBUTIONS:
        raise ValueError(f"unknown feedback distribution {distribution!r}; "
                         f"allowed: {', '.join(FEEDBACK_DISTRIBUTIONS)}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"feedback scale must be a positive finite number, got {scale!r}")
    if xp is None:
        from .backend import get_namespace

        xp = get_namespace("numpy")
    shapes = feedback_shapes(rule, sizes)
    rngs = member_rngs(seed, n_members, "feedback")
    host = [np.empty((n_members, *shape)) for shape in shapes]
    for m, rng in enumerate(rngs):
        for arr, (rows, cols) in zip(host, shapes):
            std = scale / np.sqrt(cols)
            if distribution == "gaussian":
                arr[m] = rng.normal(0.0, std, size=(rows, cols))
            else:
                bound = std * np.sqrt(3.0)
                arr[m] = rng.uniform(-bound, bound, size=(rows, cols))
    return [to_device(a, xp, dtype) for a in host]


# --- input checks --------------------------------------------------------------------------------

def _is_listlike(value) -> bool:
    return isinstance(value, list | tuple | int | float | np.number)


def as_arrays(weights, x, y, feedback=None):
    """``weights``, ``x``, ``y`` and ``feedback`` with Python lists (and numbers) made arrays.

    The arrays take the namespace and dtype of the inputs that are arrays
    already (numpy and float64 when none is); a ragged or non-numeric list
    raises ``ValueError``.
    """
    if not isinstance(weights, list | tuple):
        raise ValueError(f"weights must be a list of arrays W_1 .. W_L, got {type(weights).__name__}")
    feedback_list = None if feedback is None else list(feedback)
    items = [*weights, x, y, *(feedback_list or [])]
    if not any(_is_listlike(a) for a in items):
        return weights, x, y, feedback
    arrays = [a for a in items if a is not None and not _is_listlike(a)]
    if arrays:
        xp, dtype = namespace(*arrays), str(arrays[0].dtype).split(".")[-1]
    else:
        from .backend import get_namespace

        xp, dtype = get_namespace("numpy"), "float64"

    def convert(value, name):
        if not _is_listlike(value):
            return value
        try:
            host = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an array or a rectangular list of numbers, got {value!r}") from None
        return to_device(host, xp, dtype if dtype in ("float32", "float64") else "float64")

    weights = [convert(w, f"weight W_{i + 1}") for i, w in enumerate(weights)]
    if feedback_list is not None:
        feedback = [convert(b, f"feedback matrix {i + 1}") for i, b in enumerate(feedback_list)]
    return weights, convert(x, "x"), convert(y, "y"), feedback


def _all_finite(a) -> bool:
    xp = namespace(a)
    return bool(xp.all(xp.isfinite(a)))


def validate_inputs(rule, weights, x, y, *, activation, loss, feedback=None, biases=None, modules=None) -> None:
    """Check names, shapes and finiteness of a rule's inputs; raise ``ValueError`` if wrong."""
    rule = get_rule(rule)
    check_activation(activation)
    check_loss(loss)
    if len(weights) < 1:
        raise ValueError("weights must hold at least one layer")
    for i, w in enumerate(weights):
        if w.ndim != 3:
            raise ValueError(f"weight W_{i + 1} must have shape (E, n_out, n_in), got {tuple(w.shape)}")
    n_members = weights[0].shape[0]
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    for i, w in enumerate(weights):
        if w.shape[0] != n_members:
            raise ValueError(f"weight W_{i + 1} has {w.shape[0]} members, W_1 has {n_members}")
        if i > 0 and w.shape[2] != weights[i - 1].shape[1]:
            raise ValueError(f"weight W_{i + 1} expects {w.shape[2]} inputs but W_{i} has "
                             f"{weights[i - 1].shape[1]} outputs")
    for name, arr, width in (("x", x, sizes[0]), ("y", y, sizes[-1])):
        if arr.ndim not in (2, 3):
            raise ValueError(f"{name} must have shape (B, n) or (E, B, n), got {tuple(arr.shape)}")
        if arr.shape[-1] != width:
            raise ValueError(f"{name} has {arr.shape[-1]} features, the network expects {width}")
        if arr.ndim == 3 and arr.shape[0] != n_members:
            raise ValueError(f"{name} has {arr.shape[0]} members, the weights have {n_members}")
        if not _all_finite(arr):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"x has batch size {x.shape[-2]} but y has {y.shape[-2]}")
    if x.shape[-2] < 1:
        raise ValueError("the batch is empty")
    for i, w in enumerate(weights):
        if not _all_finite(w):
            raise ValueError(f"weight W_{i + 1} contains non-finite values (nan or inf)")
    if biases is not None:
        if len(biases) != len(weights):
            raise ValueError(f"got {len(biases)} bias vectors for {len(weights)} layers")
        for i, b in enumerate(biases):
            if tuple(b.shape) != (n_members, sizes[i + 1]):
                raise ValueError(f"bias b_{i + 1} must have shape {(n_members, sizes[i + 1])}, "
                                 f"got {tuple(b.shape)}")
    if rule.check_modules is not None:
        rule.check_modules(modules, sizes, n_members)
    if rule.feedback is None:
        return
    expected = feedback_shapes(rule, sizes)
    what = "B_2 .. B_L" if rule.feedback == "layerwise" else "B_1 .. B_{L-1}"
    if feedback is None:
        raise ValueError(f"rule {rule.name!r} needs feedback matrices {what} "
                         f"(see sim.rules.draw_feedback)")
    if len(feedback) != len(expected):
        raise ValueError(f"rule {rule.name!r} needs {len(expected)} feedback matrices ({what}), "
                         f"got {len(feedback)}")
    for i, (b, shape) in enumerate(zip(feedback, expected)):
        if tuple(b.shape[-2:]) != shape or b.ndim not in (2, 3) or (b.ndim == 3 and b.shape[0] != n_members):
            raise ValueError(f"feedback matrix {i + 1} of rule {rule.name!r} must have shape {shape} "
                             f"or {(n_members, *shape)}, got {tuple(b.shape)}")
        if not _all_finite(b):
            raise ValueError(f"feedback matrix {i + 1} contains non-finite values (nan or inf)")
