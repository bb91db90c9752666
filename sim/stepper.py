r"""One step of the whole ensemble: the trainer's state, its SGD and Adam steps, and member threads.

:class:`TrainState` is what :func:`sim.train.train` carries from one step to
the next; :func:`train_step` (SGD with momentum) and :func:`adam_train_step`
(Adam, :mod:`sim.optim`) are the loop body, with the divergence check on the
step's loss (:mod:`sim.divergence`); :class:`Stepper` applies the step chosen
once, and on numpy splits an ensemble with enough work per step over the CPUs
by members (:func:`member_threads`, :class:`MemberThreads`): the numbers are
the same bit for bit, only faster. :mod:`sim.train` re-exports every name here.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import numpy as np
from array_api_compat import is_numpy_namespace

from .backend import blas_threads, cpu_count, member_rngs, namespace
from .divergence import DIVERGENCE_FACTOR, LOSS_EXCEEDED, LOSS_NON_FINITE, WEIGHTS_NON_FINITE
from .optim import OPTIMIZERS, adam_moments, adam_steps
from .rules import Updates, get_rule, rule_updates, step_flops
from .rules_feedback import draw_magnitudes, kolen_pollack_step


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
