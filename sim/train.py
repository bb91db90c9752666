r"""The trainer: SGD on a whole ensemble at once, with observers and divergence detection.

One step, for every member at once (``mu`` the momentum, ``eta`` the member's
learning rate):

.. math:: v_l \leftarrow \mu v_l + \eta\, \Delta W_l,\qquad W_l \leftarrow W_l - v_l ,

the same as :math:`v_l \leftarrow \mu v_l + \Delta W_l,\ W_l \leftarrow W_l - \eta\, v_l`
for a constant :math:`\eta` (the learning rate multiplies the update inside
:func:`sim.rules.rule_updates`, which saves a pass over every weight array).
``train(..., optimizer="adam")`` steps by Adam instead (:mod:`sim.optim`,
:func:`sim.stepper.adam_train_step`, chosen once by the :class:`sim.stepper.Stepper`;
the SGD step is untouched).

Every ``record_every`` steps the observers measure, per member, on the
observation set (the training set, or ``observe_on``):

``loss`` ``(E,)``, ``accuracy`` ``(E,)`` (classification),
``gradient_angle`` ``(E, L)``: angle between the rule's ``dW_l`` and BP's,
``signal_angle`` ``(E, L-1)``: angle between the hidden teaching signals of the
probe rule and BP's, with ``train(..., gauss_newton=True)`` ``gn_signal_angle``
``(E, L-1)``: angle between the probe's hidden signals and the Gauss-Newton
ones :math:`(J_l^+ e) \odot f'` (Meulemans et al. 2020,
:func:`sim.metrics.gauss_newton_signals`), ``weight_alignment`` ``(E, L-1)``: FA or DFA weight
alignment (see :mod:`sim.metrics`), and ``weight_norm`` ``(E, L)``.
A rule with trained modules adds its own (``sg``, ``cdni``: ``sg_error`` and
``sg_angle`` ``(E, L-1)``, see :func:`sim.synthetic.observe_modules`).

Such a rule (one with ``init_modules``, :class:`sim.rules.Rule`) gets its
modules created from ``module_settings`` unless ``modules`` are given, and
updated by the rule's ``update_modules`` hook on every step, from the same
forward pass as the weight update; the final modules are returned in
:attr:`TrainResult.modules`.

A member *diverges* when its training loss becomes non-finite, when its loss
exceeds ``divergence_factor`` (default :data:`DIVERGENCE_FACTOR`, ``1e3``) times
its loss at the first step, or when its weights become non-finite (checked at
every record, one reduction per layer). It is frozen from that step on (its
weights stop changing) and listed in :attr:`TrainResult.diverged` with the step
and reason (:func:`divergence_message` words them); the others go on. Every
recorded metric of a diverged member is ``nan`` from its divergence on (the
loss, accuracies, angles, weight alignment, norms), never a plausible number.
The check reuses the loss the step computes: no host synchronisation happens
between records.

On numpy, an ensemble with enough work per step is split over the CPUs by
members (:class:`sim.stepper.Stepper`, :func:`sim.stepper.member_threads`),
and so are the records when the observation set holds enough work; the numbers
are the same bit for bit, only faster. The step itself (:class:`TrainState`,
:func:`train_step`, the threads) lives in :mod:`sim.stepper`; every name of it
is importable from here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .backend import (
    blas_policy,
    check_seed,
    column_major,
    namespace,
    shared_rng,
    to_device,
    to_host,
    tune_allocator,
)
from . import interrupt
from .data import Dataset
from .metrics import dfa_weight_alignment, fa_weight_alignment, gauss_newton_signals, layer_angles, weight_norms
from .network import Network
from .nn import accuracy, check_loss
from .progress import progress_bar
from .divergence import (  # noqa: F401 - Divergence and the helpers are part of the trainer's interface
    DIVERGENCE_FACTOR,
    LOSS_EXCEEDED,
    LOSS_NON_FINITE,
    WEIGHTS_NON_FINITE,
    Divergence,
    check_divergence_factor,
    collect_divergences,
    divergence_message,
    divergence_reason,
    mask_diverged,
)
from .rules import get_rule, rule_updates, validate_inputs
from .optim import OPTIMIZERS, check_adam


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
    if isinstance(value, str | bytes) or np.asarray(value).dtype.kind not in "iuf":  # not "0.1", not True
        raise ValueError(f"{name} must be a non-negative finite number or one per member ({n_members}), "
                         f"got {value!r}")
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
            modules=None, gauss_newton: bool = False) -> dict:
    """Measure the recorded metrics of an ensemble on ``(x, y)`` (see the module docstring).

    ``probe`` is the rule whose teaching signals are compared with BP's (default:
    ``rule``); it lets a BP-trained control report how a fixed FA or DFA feedback
    would align with it. ``modules`` are the trained modules of a rule that has
    them (synthetic gradients). ``gauss_newton=True`` adds ``gn_signal_angle``:
    the probe's hidden signals against the Gauss-Newton ones
    (:func:`sim.metrics.gauss_newton_signals`).
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
        if gauss_newton:
            out["gn_signal_angle"] = layer_angles(signals[:-1], gauss_newton_signals(
                network.weights, bp.forward, bp.signals[-1], network.activation))
        if probe.feedback_matrices is not None and (feedback is not None or probe.feedback is None):
            # sign symmetry: the B_{l+1} the rule uses, from the weights (and the magnitudes)
            out["weight_alignment"] = fa_weight_alignment(network.weights,
                                                          probe.feedback_matrices(network.weights, feedback))
        elif feedback is not None and probe.feedback == "layerwise":
            out["weight_alignment"] = fa_weight_alignment(network.weights, feedback)
        elif feedback is not None and probe.feedback == "direct":
            out["weight_alignment"] = dfa_weight_alignment(network.weights, feedback)
    return out


from .stepper import (  # noqa: F401 - the step's machinery (sim.stepper), part of the trainer's interface
    MIN_FLOPS_PER_THREAD,
    MemberThreads,
    Stepper,
    TrainState,
    adam_train_step,
    feedback_part,
    member_threads,
    sgd_step,
    train_step,
)


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
          module_settings: dict | None = None, threads: int | None = None,
          divergence_factor: float = DIVERGENCE_FACTOR, weight_decay: float = 0.0, optimizer: str = "sgd",
          betas: tuple = (0.9, 0.999), eps: float = 1e-8, gauss_newton: bool = False) -> TrainResult:
    """Train every member of ``network`` on ``data`` with ``rule`` by SGD (or Adam).

    Parameters
    ----------
    network : Network
        The ensemble (its arrays decide the backend).
    data : Dataset
        Training data on the host, shared by all members.
    rule : str
        A name of :data:`sim.rules.RULES`: ``"bp"``, ``"fa"``, ``"dfa"``, ``"sg"``,
        ``"cdni"``, ``"usf"``, ``"brsf"``, ``"frsf"``, ``"kp"`` or ``"drtp"``.
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
    threads : int, optional
        Threads the members are split over, for the steps and for the
        observers' records (numpy only, see :class:`Stepper`; capped at ``E``).
        Default: :func:`member_threads`, which splits only work with enough
        matmuls per thread: a step on the batch, a record on the observation
        set. The weights and metrics do not depend on it, bit for bit.
    divergence_factor : float
        A member whose loss exceeds this many times its loss at the first
        step has diverged (as one whose loss or weights become non-finite):
        it is frozen, listed in :attr:`TrainResult.diverged` and its metrics
        are ``nan`` from then on. Greater than 1; ``inf`` keeps only the
        non-finite checks. Default :data:`DIVERGENCE_FACTOR` (``1e3``).
    weight_decay : float
        ``lambda >= 0``: every weight step is ``lr * (dW + lambda * W)``
        (and Kolen-Pollack's feedback decays alike). Default 0. With Adam
        the decay is decoupled (AdamW): ``lr * lambda * W`` besides the Adam step.
    optimizer : {"sgd", "adam"}
        ``"sgd"`` (default): SGD with ``momentum``. ``"adam"``: Adam (Kingma &
        Ba 2015, bias-corrected; :mod:`sim.optim`) on the rule's updates
        ``dW``, member ``m`` with its own ``lr[m]``; ``momentum`` must be 0.
        Kolen-Pollack's feedback then moves by the transpose of the Adam step.
    betas : (float, float)
        Adam's decay rates of the first and second moments, each in ``[0, 1)``.
    eps : float
        Adam's ``epsilon`` (positive), added to ``sqrt(v_hat)``.
    gauss_newton : bool
        Also record ``gn_signal_angle`` (see the module docstring). Off by
        default: its per-sample pseudo-inverses add about 20% to a record of
        the ``fa-linear`` network and 2-3 times the record of a tanh network.

    Rules whose feedback changes (``brsf``: redrawn before every step from
    ``seed``; ``kp``: learned) return the last feedback in
    :attr:`TrainResult.feedback` and run on one thread.
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
    divergence_factor = check_divergence_factor(divergence_factor)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float | np.floating | np.integer) \
            or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a non-negative finite number, got {weight_decay!r}")
    if threads is not None and not _whole_number(threads, 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    betas = check_adam(betas, eps)[:2]
    if optimizer == "adam" and momentum:
        raise ValueError(f"momentum applies to optimizer='sgd'; Adam's momentum is betas[0] (got momentum={momentum!r})")
    if not isinstance(gauss_newton, bool):
        raise ValueError(f"gauss_newton must be True or False, got {gauss_newton!r}")
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

    tune_allocator()  # once per process; see its docstring
    # private copies (updated in place on numpy), in the layout the step reads fastest
    weights = [column_major(w) for w in network.weights]
    biases = None if network.biases is None else [xp.asarray(b, copy=True) for b in network.biases]
    state = TrainState.start(weights, biases, momentum=momentum, modules=modules, adam=optimizer == "adam")

    def split(n_samples):  # threads for a step's work on n_samples samples
        return member_threads(xp, rule, network.sizes, n_members, n_samples) if threads is None else threads

    stepper = Stepper(state, rule=rule, activation=network.activation, loss=loss, lr=to_device(lrs, xp, dtype),
                      momentum=momentum, feedback=feedback, divergence_factor=divergence_factor,
                      weight_decay=float(weight_decay), feedback_seed=seed, optimizer=optimizer, betas=betas,
                      eps=float(eps), threads=split(data.n_samples if batch_size is None else min(batch_size, data.n_samples)))
    observers = MemberThreads(n_members, split(obs.n_samples))  # the records split members too
    records, recorded_steps = [], []
    batches = _batches(data.n_samples, batch_size, seed)
    show = steps >= 2000 if progress is None else progress

    def current():
        st = stepper.state
        return replace(network, weights=tuple(st.weights), biases=None if st.biases is None else tuple(st.biases))

    def record(step):
        stepper.state = stepper.state.check_weights(step)
        net, parts = current(), {}

        def measure(part):
            parts[part.start] = observe(net.members(part), x_obs, y_obs, rule=rule, loss=loss,
                                        feedback=feedback_part(stepper.feedback, part), probe=probe,
                                        classification=classification, modules=stepper.state.modules,
                                        gauss_newton=gauss_newton)

        with np.errstate(all="ignore"):
            observers.run(measure)
        measured = [parts[start] for start in sorted(parts)]
        records.append({k: np.concatenate([to_host(m[k]) for m in measured]) for k in measured[0]})
        recorded_steps.append(step)

    # BLAS threads (sim.backend.blas_policy): judged by the largest product, on the batch or the observation set
    largest_product = 2 * max(obs.n_samples, data.n_samples if batch_size is None else min(batch_size, data.n_samples)) \
        * max(a * b for a, b in zip(network.sizes, network.sizes[1:]))
    try:
        with np.errstate(all="ignore"), blas_policy(largest_product), stepper, observers, interrupt.polling(), \
                progress_bar(total=steps, disable=not show, desc=f"train {rule.name}", unit="step") as bar:
            for step in range(steps):
                interrupt.check()  # a signal stops the loop here, between whole steps
                if step % record_every == 0:
                    record(step)
                    if not bool(xp.any(stepper.state.alive)):
                        break
                idx = next(batches)
                if idx is None:
                    xb, yb = x_all, y_all
                else:
                    idx_dev = xp.asarray(idx)
                    xb, yb = xp.take(x_all, idx_dev, axis=0), xp.take(y_all, idx_dev, axis=0)
                stepper(xb, yb, step)
                bar.update(1)
            else:
                record(steps)
    except interrupt.RunInterrupted:  # keep the records so far for the shell (sim.interrupt.journal)
        metrics = {k: np.stack([r[k] for r in records]) for k in records[0]} if records else {}
        interrupt.record(rule.name, TrainResult(current(), np.asarray(recorded_steps), metrics, [], stepper.feedback,
                                                stepper.state.modules))
        raise
    final_loss = records[-1]["loss"]
    first_bad = to_host(stepper.state.first_bad)
    reasons = to_host(stepper.state.reason)
    diverged = collect_divergences(first_bad, reasons, divergence_factor)
    for m in range(n_members):  # finite on the training batches, not on the observation set
        if first_bad[m] < 0 and not np.isfinite(final_loss[m]):
            diverged.append(Divergence(m, recorded_steps[-1], divergence_reason(LOSS_NON_FINITE)))
    diverged.sort(key=lambda d: d.member)
    metrics = mask_diverged({k: np.stack([r[k] for r in records]) for k in records[0]}, recorded_steps, diverged)
    result = TrainResult(current(), np.asarray(recorded_steps), metrics, diverged, stepper.feedback,
                         stepper.state.modules)
    interrupt.record(rule.name, result)
    return result
