r"""The trainer: SGD on a whole ensemble at once, with observers and divergence detection.

One step, for every member at once (``mu`` the momentum, ``eta`` the member's
learning rate):

.. math:: v_l \leftarrow \mu v_l + \eta\, \Delta W_l,\qquad W_l \leftarrow W_l - v_l ,

the same as :math:`v_l \leftarrow \mu v_l + \Delta W_l,\ W_l \leftarrow W_l - \eta\, v_l`
for a constant :math:`\eta` (the learning rate multiplies the update inside
:func:`sim.rules.rule_updates`, which saves a pass over every weight array).
``train(..., optimizer="adam")`` steps by Adam instead (:mod:`sim.optim`,
:func:`adam_train_step`, chosen once by the :class:`Stepper`; the SGD step is
untouched).

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
members (:class:`Stepper`, :func:`member_threads`), and so are the records
when the observation set holds enough work; the numbers are the same bit for
bit, only faster.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

import numpy as np
from array_api_compat import is_numpy_namespace

from .backend import (
    blas_policy,
    blas_threads,
    check_seed,
    column_major,
    member_rngs,
    cpu_count,
    namespace,
    shared_rng,
    to_device,
    to_host,
    tune_allocator,
)
from . import interrupt
from .data import Dataset
from .metrics import dfa_weight_alignment, fa_weight_alignment, layer_angles, weight_norms
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
from .rules import Updates, get_rule, rule_updates, step_flops, validate_inputs
from .optim import OPTIMIZERS, adam_moments, adam_steps, check_adam
from .rules_feedback import draw_magnitudes, kolen_pollack_step


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
        if probe.feedback_matrices is not None and (feedback is not None or probe.feedback is None):
            # sign symmetry: the B_{l+1} the rule uses, from the weights (and the magnitudes)
            out["weight_alignment"] = fa_weight_alignment(network.weights,
                                                          probe.feedback_matrices(network.weights, feedback))
        elif feedback is not None and probe.feedback == "layerwise":
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


# --- one step of the whole ensemble -----------------------------------------------------------------

#: The matmul work (FLOPs of one step, :func:`sim.rules.step_flops`) each
#: thread needs before :func:`member_threads` splits an ensemble: below it the
#: threads' hand-off and their turns at the interpreter lock cost more than
#: they save (see the README's Performance section for the measurements).
MIN_FLOPS_PER_THREAD = 16e6


@dataclass
class TrainState:
    """What the trainer carries from one step to the next; every array has the ensemble axis first.

    ``weights`` and ``biases`` (or ``None``) are the parameters, ``velocity``
    the momentum buffers (``None`` without momentum), ``alive`` ``(E,)`` whether
    a member still trains, ``first_bad`` ``(E,)`` the step at which it diverged
    (``-1``: never), ``reason`` ``(E,)`` why (a code of :func:`divergence_reason`,
    0: alive), ``limit`` ``(E,)`` the loss bound (``nan`` until the first step
    sets it to ``divergence_factor`` times the member's loss), ``modules`` a
    rule's trained modules.
    """

    weights: list
    biases: list | None
    velocity: list | None
    alive: object
    first_bad: object
    modules: object = None
    reason: object = None
    limit: object = None
    limit_set: bool = False  # every member's limit is set (an optimisation: then the step skips setting it)
    moments: list | None = None  # Adam's first moments then second moments, one per parameter (None: SGD)

    def __post_init__(self):
        if self.reason is None or self.limit is None:
            xp = namespace(*self.weights)
            n_members = self.weights[0].shape[0]
            if self.reason is None:
                self.reason = xp.zeros((n_members,), dtype=xp.int8)
            if self.limit is None:
                self.limit = xp.full((n_members,), math.nan, dtype=self.weights[0].dtype)

    @classmethod
    def start(cls, weights, biases=None, *, momentum: float = 0.0, modules=None, adam: bool = False) -> TrainState:
        """The state at the first step: every member alive, zero momentum buffers when ``momentum``
        (zero Adam moments when ``adam``)."""
        xp = namespace(*weights)
        n_members = weights[0].shape[0]
        velocity = [xp.zeros_like(p) for p in [*weights, *(biases or [])]] if momentum else None
        moments = [xp.zeros_like(p) for _ in range(2) for p in [*weights, *(biases or [])]] if adam else None
        return cls(list(weights), biases, velocity, xp.ones((n_members,), dtype=xp.bool),
                   xp.full((n_members,), -1, dtype=xp.int64), modules, moments=moments)

    def members(self, part: slice) -> TrainState:
        """The members ``part`` (views on numpy; the modules are not split)."""
        return TrainState(_part(self.weights, part), _part(self.biases, part), _part(self.velocity, part),
                          self.alive[part], self.first_bad[part], self.modules, self.reason[part], self.limit[part],
                          self.limit_set, _part(self.moments, part))

    def arrays(self) -> list:
        return [*self.weights, *(self.biases or []), *(self.velocity or []), self.alive, self.first_bad,
                self.reason, self.limit, *(self.moments or [])]

    def check_weights(self, step: int) -> TrainState:
        """Freeze the members alive whose weights (or biases) are not all finite, as diverged at ``step``."""
        xp = namespace(*self.weights)
        finite = self.alive
        for p in [*self.weights, *(self.biases or [])]:
            finite = finite & xp.all(xp.isfinite(p), axis=tuple(range(1, p.ndim)))
        bad = self.alive & ~finite
        return replace(self, alive=self.alive & ~bad,
                       first_bad=xp.where(bad, xp.asarray(step, dtype=xp.int64), self.first_bad),
                       reason=xp.where(bad, xp.asarray(WEIGHTS_NON_FINITE, dtype=xp.int8), self.reason))


def _part(arrays, part: slice):
    return None if arrays is None else [a[part, ...] for a in arrays]


def feedback_part(feedback, part: slice):
    """The feedback matrices of the members ``part`` (a matrix shared by all members stays as it is)."""
    return None if feedback is None else [b[part, ...] if b.ndim == 3 else b for b in feedback]


def train_step(state: TrainState, x, y, *, step: int, rule, activation: str, loss: str, lr, momentum: float = 0.0,
               feedback=None, divergence_factor: float = DIVERGENCE_FACTOR,
               weight_decay: float = 0.0) -> tuple[TrainState, Updates]:
    """One SGD step of every member on the batch ``(x, y)``: the trainer's loop body.

    The rule's updates scaled by ``lr`` ``(E,)`` (without input checks), the
    divergence check on the step's loss (non-finite, or above ``state.limit``,
    which the first step sets to ``divergence_factor`` times the loss) and its
    bookkeeping, momentum, the rule's module
    update (on the pre-update weights) and :func:`sgd_step`. ``weight_decay``
    ``lambda`` adds ``lr * lambda * W_l`` to the step of every weight
    (not to ``Updates.weights``, which stay ``eta * dW``). Returns the new
    state and the step's :class:`sim.rules.Updates`. On numpy, while every member
    is alive, the parameters are updated in place.
    """
    rule = get_rule(rule)
    xp = namespace(*state.weights)
    upd = rule_updates(rule, state.weights, x, y, activation=activation, loss=loss, feedback=feedback,
                       biases=state.biases, validate=False, modules=state.modules, scale=lr)
    limit = state.limit
    if not state.limit_set:  # the first step sets the bound (none from a zero loss; a nan loss gives inf)
        limit = xp.where(xp.isnan(limit), xp.where(upd.loss > 0, divergence_factor * upd.loss, math.inf), limit)
    bad = state.alive & ~(upd.loss < limit)  # limit is never nan: this is false for a nan or inf loss too
    alive, first_bad, reason = state.alive, state.first_bad, state.reason
    if not is_numpy_namespace(xp) or bool(xp.any(bad)):  # a free host check on numpy
        first_bad = xp.where(bad, xp.asarray(step, dtype=xp.int64), first_bad)
        reason = xp.where(bad, xp.where(xp.isfinite(upd.loss), xp.asarray(LOSS_EXCEEDED, dtype=xp.int8),
                                        xp.asarray(LOSS_NON_FINITE, dtype=xp.int8)), reason)
        alive = alive & ~bad
    moves = upd.weights + (upd.biases or [])  # eta * dW
    if weight_decay:  # eta * (dW + lambda W)
        n_members = state.weights[0].shape[0]
        decay = xp.reshape(lr * weight_decay, (n_members, 1, 1))
        moves = [s + decay * w for s, w in zip(upd.weights, state.weights)] + (upd.biases or [])
    velocity = state.velocity
    if velocity is not None:
        velocity = [momentum * v + s for v, s in zip(velocity, moves)]
        moves = velocity
    modules = state.modules
    if modules is not None and rule.update_modules is not None:
        modules = rule.update_modules(modules, upd, weights=state.weights, targets=y, activation=activation,
                                      step=step, alive=alive)
    n_weights = len(state.weights)
    params = sgd_step(state.weights + (state.biases or []), moves, alive)
    biases = None if state.biases is None else params[n_weights:]
    return TrainState(params[:n_weights], biases, velocity, alive, first_bad, modules, reason, limit, True), upd



def adam_train_step(state: TrainState, x, y, *, step: int, rule, activation: str, loss: str, lr,
                    betas: tuple = (0.9, 0.999), eps: float = 1e-8, feedback=None,
                    divergence_factor: float = DIVERGENCE_FACTOR,
                    weight_decay: float = 0.0) -> tuple[TrainState, Updates]:
    """One Adam step of every member (:mod:`sim.optim`): the loop body of ``train(..., optimizer="adam")``.

    As :func:`train_step` (the divergence check and bookkeeping, the module
    update), but the rule's unscaled updates ``dW`` feed Adam's moments
    (``state.moments``), bias-corrected with ``t = step + 1``, and the step
    is ``lr * m_hat / (sqrt(v_hat) + eps)``; ``weight_decay`` ``lambda`` is
    decoupled: ``lr * lambda * W`` more for every weight. The returned
    :class:`sim.rules.Updates` carry the Adam steps of the weights (without
    the decay) as ``weights``, which is what Kolen-Pollack's feedback follows.
    """
    rule = get_rule(rule)
    xp = namespace(*state.weights)
    upd = rule_updates(rule, state.weights, x, y, activation=activation, loss=loss, feedback=feedback,
                       biases=state.biases, validate=False, modules=state.modules)
    limit = state.limit
    if not state.limit_set:
        limit = xp.where(xp.isnan(limit), xp.where(upd.loss > 0, divergence_factor * upd.loss, math.inf), limit)
    bad = state.alive & ~(upd.loss < limit)
    alive, first_bad, reason = state.alive, state.first_bad, state.reason
    if not is_numpy_namespace(xp) or bool(xp.any(bad)):
        first_bad = xp.where(bad, xp.asarray(step, dtype=xp.int64), first_bad)
        reason = xp.where(bad, xp.where(xp.isfinite(upd.loss), xp.asarray(LOSS_EXCEEDED, dtype=xp.int8),
                                        xp.asarray(LOSS_NON_FINITE, dtype=xp.int8)), reason)
        alive = alive & ~bad
    grads = upd.weights + (upd.biases or [])
    n_params, n_weights = len(grads), len(state.weights)
    first, second = adam_moments(state.moments[:n_params], state.moments[n_params:], grads, *betas)
    moves = adam_steps(first, second, step + 1, lr, *betas, eps)
    upd = replace(upd, weights=moves[:n_weights], biases=moves[n_weights:] if state.biases is not None else None)
    if weight_decay:
        decay = xp.reshape(lr * weight_decay, (state.weights[0].shape[0], 1, 1))
        moves = [s + decay * w for s, w in zip(moves[:n_weights], state.weights)] + moves[n_weights:]
    modules = state.modules
    if modules is not None and rule.update_modules is not None:
        modules = rule.update_modules(modules, upd, weights=state.weights, targets=y, activation=activation,
                                      step=step, alive=alive)
    params = sgd_step(state.weights + (state.biases or []), moves, alive)
    biases = None if state.biases is None else params[n_weights:]
    return TrainState(params[:n_weights], biases, None, alive, first_bad, modules, reason, limit, True,
                      first + second), upd


def member_threads(xp, rule, sizes, n_members: int, batch: int) -> int:
    """How many threads the trainer splits an ensemble over by default.

    One per CPU, while each gets a member and :data:`MIN_FLOPS_PER_THREAD` of
    a step's matmul work, and no more than BLAS may use
    (:func:`sim.backend.blas_threads`: a process told to keep to one thread,
    such as a worker among several, keeps to one); one on other backends than
    numpy (a GPU runs the whole ensemble at once) and for rules with trained
    modules or feedback that changes during training (``brsf``, ``kp``).
    """
    rule = get_rule(rule)
    if not is_numpy_namespace(xp) or rule.init_modules is not None or rule.redraws_feedback or rule.learns_feedback:
        return 1
    affordable = int(step_flops(rule, sizes, n_members, batch) // MIN_FLOPS_PER_THREAD)
    return max(1, min(cpu_count(), blas_threads(), n_members, affordable))


class MemberThreads:
    """Runs work on contiguous slices of an ensemble's members, one slice per thread.

    ``run(fn)`` calls ``fn(part)`` for every slice ``part``: the first on the
    calling thread, the others on a pool, and returns when all are done (an
    exception in any is raised). While it runs, BLAS is limited to one thread
    (``threadpoolctl``), so that the threads never oversubscribe the cores;
    numpy releases the interpreter lock inside its kernels, which is what lets
    the threads run at once. The pool's threads run with the caller's
    ``numpy.errstate``. With more than one thread, use it as a context manager
    (that holds the pool).
    """

    def __init__(self, n_members: int, threads: int):
        threads = max(1, min(int(threads), int(n_members)))
        bounds = np.linspace(0, n_members, threads + 1).round().astype(int)
        self.parts = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = self._blas = None

    @property
    def threads(self) -> int:
        return len(self.parts)

    def __enter__(self) -> MemberThreads:
        if self.threads > 1 and self._pool is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()  # found once: its limit() then costs microseconds
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="bbp-members")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def run(self, fn) -> None:
        if self.threads == 1:
            fn(self.parts[0])
            return
        if self._pool is None:
            raise RuntimeError("MemberThreads with more than one thread must be open: use it in a with block")
        errors = np.geterr()  # numpy's floating-point error handling is per thread: carry the caller's

        def in_thread(part):
            with np.errstate(**errors):
                fn(part)

        with self._blas.limit(limits=1, user_api="blas"):
            futures = [self._pool.submit(in_thread, part) for part in self.parts[1:]]
            try:
                fn(self.parts[0])
            finally:
                wait(futures)
        for future in futures:
            future.result()


class Stepper:
    """The trainer's step, applied to a :class:`TrainState`: ``stepper(x, y, step)`` updates ``stepper.state``.

    With ``threads > 1`` (numpy only; capped at ``E``) the members are split
    into that many contiguous slices (:class:`MemberThreads`), and each slice's
    :func:`train_step` runs on its own thread, on views of the state's arrays;
    what a thread does not update in place it writes back. Members are
    independent and each thread runs the same kernels on its members, so the
    weights are bit for bit those of one thread. Use a stepper with threads
    as a context manager (that holds its threads).

    ``self.feedback`` is the feedback of the next step: for ``brsf`` it is
    redrawn before every step (member ``m`` from its ``"feedback_batch"``
    stream of ``feedback_seed``, :func:`sim.rules_feedback.draw_magnitudes`),
    for ``kp`` moved after every step by
    :func:`sim.rules_feedback.kolen_pollack_step` (with the same weight decay).
    """

    def __init__(self, state: TrainState, *, rule, activation: str, loss: str, lr, momentum: float = 0.0,
                 feedback=None, threads: int = 1, divergence_factor: float = DIVERGENCE_FACTOR,
                 weight_decay: float = 0.0, feedback_seed: int = 0, optimizer: str = "sgd",
                 betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        self.state = state
        self.feedback = feedback
        self.lr = lr
        self.weight_decay = weight_decay
        self.settings = dict(rule=get_rule(rule), activation=activation, loss=loss, momentum=momentum,
                             divergence_factor=divergence_factor, weight_decay=weight_decay)
        self._step = train_step  # chosen once: the default path is train_step as it is
        if optimizer == "adam":
            if state.moments is None:
                raise ValueError("optimizer='adam' needs a state with Adam moments (TrainState.start(..., adam=True))")
            self._step = adam_train_step
            del self.settings["momentum"]
            self.settings.update(betas=tuple(betas), eps=eps)
        elif optimizer != "sgd":
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        self.members = MemberThreads(state.weights[0].shape[0], threads)
        rule = self.settings["rule"]
        self._rngs = None
        if rule.redraws_feedback:
            self._rngs = member_rngs(feedback_seed, state.weights[0].shape[0], "feedback_batch")
            self._sizes = [state.weights[0].shape[2]] + [w.shape[1] for w in state.weights]
        if self.threads > 1 and (rule.redraws_feedback or rule.learns_feedback):
            raise ValueError(f"rule {rule.name!r} changes its feedback every step and runs on one thread (threads=1)")
        if self.threads > 1 and state.modules is not None:
            raise ValueError("a rule with trained modules runs on one thread (threads=1)")
        if self.threads > 1 and not is_numpy_namespace(namespace(*state.weights)):
            raise ValueError("member threads need numpy arrays; on other backends use threads=1")

    @property
    def threads(self) -> int:
        return self.members.threads

    def __enter__(self) -> Stepper:
        self.members.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.members.__exit__(*exc)

    def __call__(self, x, y, step: int) -> None:
        rule = self.settings["rule"]
        if self._rngs is not None:
            xp = namespace(*self.state.weights)
            self.feedback = draw_magnitudes(self._rngs, self._sizes, xp, str(self.state.weights[0].dtype).split(".")[-1])
        if self.threads == 1:
            self.state, upd = self._step(self.state, x, y, step=step, lr=self.lr, feedback=self.feedback,
                                         **self.settings)
            if rule.learns_feedback:
                decay = self.lr * self.weight_decay if self.weight_decay else None
                self.feedback = kolen_pollack_step(self.feedback, upd.weights, decay, self.state.alive)
        else:
            self.members.run(lambda part: self._step_part(part, x, y, step))
            self.state.limit_set = True

    def _step_part(self, part: slice, x, y, step: int) -> None:
        views = self.state.members(part)
        new, _ = self._step(views, x, y, step=step, lr=self.lr[part], feedback=feedback_part(self.feedback, part),
                            **self.settings)
        for view, value in zip(views.arrays(), new.arrays()):
            if value is not view:
                view[...] = value


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
          betas: tuple = (0.9, 0.999), eps: float = 1e-8) -> TrainResult:
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
                                        classification=classification, modules=stepper.state.modules)

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
