r"""The trainer: SGD on a whole ensemble at once, with observers and divergence detection.

One step, for every member at once (``mu`` the momentum, ``eta`` the member's
learning rate):

.. math:: v_l \leftarrow \mu v_l + \eta\, \Delta W_l,\qquad W_l \leftarrow W_l - v_l ,

the same as :math:`v_l \leftarrow \mu v_l + \Delta W_l,\ W_l \leftarrow W_l - \eta\, v_l`
for a constant :math:`\eta` (the learning rate multiplies the update inside
:func:`sim.rules.rule_updates`, which saves a pass over every weight array).

Every ``record_every`` steps the observers measure, per member, on the
observation set (the training set, or ``observe_on``):

``loss`` ``(E,)``, ``accuracy`` ``(E,)`` (classification),
``gradient_angle`` ``(E, L)``: angle between the rule's ``dW_l`` and BP's,
``signal_angle`` ``(E, L-1)``: angle between the hidden teaching signals of the
probe rule and BP's, ``weight_alignment`` ``(E, L-1)``: FA or DFA weight
alignment (see :mod:`sim.metrics`), and ``weight_norm`` ``(E, L)``.
A rule with trained modules adds its own (``sg``, ``cdni``: ``sg_error`` and
``sg_angle`` ``(E, L-1)``, see :func:`sim.synthetic.observe_modules`).

Such a rule (one with ``init_modules``, :class:`sim.rules.Rule`) gets its
modules created from ``module_settings`` unless ``modules`` are given, and
updated by the rule's ``update_modules`` hook on every step, from the same
forward pass as the weight update; the final modules are returned in
:attr:`TrainResult.modules`.

A member whose loss becomes non-finite is frozen from that step on (its weights
stop changing) and listed in :attr:`TrainResult.diverged` with the step and
reason; the others go on. No host synchronisation happens between records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from array_api_compat import is_numpy_namespace
from tqdm.auto import tqdm

from .backend import check_seed, column_major, namespace, shared_rng, to_device, to_host
from .data import Dataset
from .metrics import dfa_weight_alignment, fa_weight_alignment, layer_angles, weight_norms
from .network import Network
from .nn import accuracy, check_loss
from .rules import get_rule, rule_updates, validate_inputs


@dataclass(frozen=True)
class Divergence:
    """Where and why a member stopped: ``step`` is the first step whose loss was non-finite."""

    member: int
    step: int
    reason: str


@dataclass(frozen=True)
class TrainResult:
    """What a training run returns.

    ``steps`` ``(T,)`` are the recorded steps; ``metrics[name]`` is a host array
    with leading axes ``(T, E)``; ``network`` is the final ensemble (on the
    device); ``diverged`` lists the members that were stopped.
    """

    network: Network
    steps: np.ndarray
    metrics: dict
    diverged: list = field(default_factory=list)
    feedback: list | None = None
    modules: object = None

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metrics:
            raise ValueError(f"unknown metric {name!r}; recorded: {', '.join(self.metrics)}")
        return self.metrics[name]


def _member_array(value, n_members: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n_members, float(arr))
    if arr.shape != (n_members,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a non-negative finite number or one per member ({n_members}), "
                         f"got {value!r}")
    return arr


def _whole_number(value, minimum: int) -> bool:
    """Whether ``value`` is an integer (or integral float) ``>= minimum``; never raises."""
    try:
        return not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        return False


def observe(network: Network, x, y, *, rule, loss: str, feedback=None, probe=None, classification=False,
            modules=None) -> dict:
    """Measure the recorded metrics of an ensemble on ``(x, y)`` (see the module docstring).

    ``probe`` is the rule whose teaching signals are compared with BP's (default:
    ``rule``); it lets a BP-trained control report how a fixed FA or DFA feedback
    would align with it. ``modules`` are the trained modules of a rule that has
    them (synthetic gradients).
    """
    rule = get_rule(rule)
    probe = rule if probe is None else get_rule(probe)
    kwargs = dict(activation=network.activation, loss=loss, biases=network.biases, validate=False)
    bp = rule_updates("bp", network.weights, x, y, **kwargs)
    own = bp if rule.name == "bp" else rule_updates(rule, network.weights, x, y, feedback=feedback,
                                                    modules=modules, **kwargs)
    out = {"loss": bp.loss, "gradient_angle": layer_angles(own.weights, bp.weights),
           "weight_norm": weight_norms(network.weights)}
    if modules is not None and rule.observe_modules is not None:
        out.update(rule.observe_modules(modules, own, bp, weights=network.weights, targets=y))
    if classification:
        out["accuracy"] = accuracy(bp.forward.output, y)
    if network.n_layers > 1:
        if probe.name == "bp":
            signals = bp.signals
        elif probe.name == rule.name:
            signals = own.signals
        else:
            signals = rule_updates(probe, network.weights, x, y, feedback=feedback, modules=modules,
                                   **kwargs).signals
        out["signal_angle"] = layer_angles(signals[:-1], bp.signals[:-1])
        if feedback is not None and probe.feedback == "layerwise":
            out["weight_alignment"] = fa_weight_alignment(network.weights, feedback)
        elif feedback is not None and probe.feedback == "direct":
            out["weight_alignment"] = dfa_weight_alignment(network.weights, feedback)
    return out


def sgd_step(params: list, steps: list, alive) -> list:
    r"""Apply the steps :math:`p \leftarrow p - s` of every member still alive.

    ``params`` and ``steps`` are lists of arrays with the ensemble axis first
    (the trainer's steps already carry the learning rates, see
    :func:`sim.rules.rule_updates`'s ``scale``), ``alive`` is ``(E,)``.
    Members with ``alive`` false keep their parameters. On numpy, when every
    member is alive (a free host check there), the parameters are updated in
    place, which saves a temporary per array; otherwise (or on a device, where
    the check would synchronise) new arrays are returned. Both paths give the
    same numbers bit for bit.
    """
    xp = namespace(*params)
    n_members = params[0].shape[0]
    if is_numpy_namespace(xp) and bool(xp.all(alive)):
        for p, s in zip(params, steps):
            p -= s
        return params
    return [xp.where(xp.reshape(alive, (n_members,) + (1,) * (p.ndim - 1)), p - s, p) for p, s in zip(params, steps)]


def _batches(n_samples: int, batch_size: int | None, seed: int):
    """Endless minibatch indices: a fresh permutation each epoch (``None``: full batch)."""
    if batch_size is None or batch_size >= n_samples:
        while True:
            yield None
    rng = shared_rng(seed, "batches")
    while True:
        perm = rng.permutation(n_samples)
        for start in range(0, n_samples - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def train(network: Network, data: Dataset, *, rule: str, steps: int, lr, momentum: float = 0.0,
          batch_size: int | None = None, loss: str | None = None, feedback=None, seed: int = 0,
          record_every: int | None = None, observe_on: Dataset | None = None, probe: str | None = None,
          progress: bool | None = None, dtype: str | None = None, modules=None,
          module_settings: dict | None = None) -> TrainResult:
    """Train every member of ``network`` on ``data`` with ``rule`` by SGD.

    Parameters
    ----------
    network : Network
        The ensemble (its arrays decide the backend).
    data : Dataset
        Training data on the host, shared by all members.
    rule : str
        ``"bp"``, ``"fa"``, ``"dfa"``, ``"sg"`` or ``"cdni"``.
    steps : int
        Number of SGD steps.
    lr : float or sequence
        Learning rate, one for all or one per member.
    momentum : float
        Heavy-ball momentum in ``[0, 1)``.
    batch_size : int, optional
        Minibatch size; ``None`` (or at least ``N``) is full-batch gradient descent.
    loss : {"mse", "ce"}, optional
        Default: ``mse`` for regression data, ``ce`` for classification.
    feedback : list, optional
        Fixed feedback matrices (required by FA and DFA; see :mod:`sim.rules`).
    seed : int
        Seed of the minibatch order.
    record_every : int, optional
        Record the observers every this many steps (default ``max(1, steps // 100)``);
        the first and last steps are always recorded.
    observe_on : Dataset, optional
        Where the observers measure (default: the training data).
    probe : str, optional
        Rule whose signals are compared with BP's (see :func:`observe`).
    progress : bool, optional
        Show a progress bar (default: on for runs of 2000 steps or more).
    modules : optional
        The starting modules of a rule with trained modules (``sg``, ``cdni``:
        :func:`sim.synthetic.init_modules`); default: created by the rule's
        ``init_modules`` hook from ``module_settings`` and ``seed``.
    module_settings : dict, optional
        Settings of the created modules (``sg``, ``cdni``: ``kind``, ``target``,
        ``lr``, ``every``, ``hidden_units``, ``init_scale``, ``inputs``).
    """
    rule = get_rule(rule)
    loss = ("ce" if data.kind == "classification" else "mse") if loss is None else check_loss(loss)
    if not _whole_number(steps, 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    steps = int(steps)
    if not isinstance(momentum, int | float | np.floating | np.integer) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if batch_size is not None and not _whole_number(batch_size, 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    check_seed(seed)
    record_every = max(1, steps // 100) if record_every is None else record_every
    if not _whole_number(record_every, 1):
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    xp = namespace(*network.weights)
    dtype = str(network.weights[0].dtype).split(".")[-1] if dtype is None else dtype
    n_members = network.n_members
    lrs = _member_array(lr, n_members, "lr")
    x_all, y_all = to_device(data.x, xp, dtype), to_device(data.y, xp, dtype)
    obs = data if observe_on is None else observe_on
    x_obs, y_obs = (x_all, y_all) if observe_on is None else (to_device(obs.x, xp, dtype), to_device(obs.y, xp, dtype))
    if module_settings is not None and (rule.init_modules is None or modules is not None):
        raise ValueError(f"module_settings apply only when rule {rule.name!r} creates trained modules "
                         f"(rules with modules: sg, cdni; and not together with modules=)")
    if modules is None and rule.init_modules is not None:
        modules = rule.init_modules(network, seed=seed, **(module_settings or {}))
    if probe is not None and get_rule(probe).init_modules is not None and rule.init_modules is None:
        raise ValueError(f"probe {probe!r} needs trained modules, which rule {rule.name!r} does not train")
    validate_inputs(rule, network.weights, x_obs, y_obs, activation=network.activation, loss=loss,
                    feedback=feedback, biases=network.biases, modules=modules)
    if observe_on is not None:  # the training data were not checked above
        validate_inputs(rule, network.weights, x_all, y_all, activation=network.activation,
                        loss=loss, feedback=feedback, biases=network.biases, modules=modules)
    classification = obs.kind == "classification"

    # private copies (sgd_step may update them in place), in the layout the step reads fastest
    weights = [column_major(w) for w in network.weights]
    biases = None if network.biases is None else [xp.asarray(b, copy=True) for b in network.biases]
    params = weights + (biases or [])
    velocity = [xp.zeros_like(p) for p in params] if momentum else None
    lr_dev = to_device(lrs, xp, dtype)
    alive = xp.ones((n_members,), dtype=xp.bool)
    first_bad = xp.full((n_members,), -1, dtype=xp.int64)
    records, recorded_steps = [], []
    batches = _batches(data.n_samples, batch_size, seed)
    show = steps >= 2000 if progress is None else progress

    def record(step):
        net = replace(network, weights=tuple(weights), biases=None if biases is None else tuple(biases))
        with np.errstate(all="ignore"):
            records.append({k: to_host(v) for k, v in observe(net, x_obs, y_obs, rule=rule, loss=loss,
                                                               feedback=feedback, probe=probe,
                                                               classification=classification,
                                                               modules=modules).items()})
        recorded_steps.append(step)

    with np.errstate(all="ignore"), tqdm(total=steps, disable=not show, desc=f"train {rule.name}",
                                         unit="step") as bar:
        for step in range(steps):
            if step % record_every == 0:
                record(step)
                if not bool(xp.any(alive)):
                    break
            idx = next(batches)
            if idx is None:
                xb, yb = x_all, y_all
            else:
                idx_dev = xp.asarray(idx)
                xb, yb = xp.take(x_all, idx_dev, axis=0), xp.take(y_all, idx_dev, axis=0)
            upd = rule_updates(rule, weights, xb, yb, activation=network.activation, loss=loss,
                               feedback=feedback, biases=biases, validate=False, modules=modules, scale=lr_dev)
            finite = xp.isfinite(upd.loss)
            first_bad = xp.where(alive & ~finite, xp.asarray(step, dtype=xp.int64), first_bad)
            alive = alive & finite
            moves = upd.weights + (upd.biases or [])  # eta * dW
            if velocity is not None:
                velocity = [momentum * v + s for v, s in zip(velocity, moves)]
                moves = velocity
            if modules is not None and rule.update_modules is not None:  # same forward pass, pre-update weights
                modules = rule.update_modules(modules, upd, weights=weights, targets=yb,
                                              activation=network.activation, step=step, alive=alive)
            params = sgd_step(params, moves, alive)
            weights = params[:len(weights)]
            biases = None if biases is None else params[len(weights):]
            bar.update(1)
        else:
            record(steps)
    final_loss = records[-1]["loss"]
    first_bad = to_host(first_bad)
    alive_host = to_host(alive)
    diverged = []
    for m in range(n_members):
        if first_bad[m] >= 0:
            diverged.append(Divergence(m, int(first_bad[m]), "loss became non-finite (nan or inf)"))
        elif alive_host[m] and not np.isfinite(final_loss[m]):
            diverged.append(Divergence(m, recorded_steps[-1], "loss on the observation set became non-finite"))
    metrics = {k: np.stack([r[k] for r in records]) for k in records[0]}
    final = replace(network, weights=tuple(weights), biases=None if biases is None else tuple(biases))
    return TrainResult(final, np.asarray(recorded_steps), metrics, diverged, feedback, modules)
