r"""The layer-parallel runtime: the blocks of one network on separate workers of one machine.

Design: threads, with BLAS limited to one thread each
-----------------------------------------------------
Each worker is a Python thread that owns a contiguous group of blocks and
their parameters; BLAS is limited to one thread (``threadpoolctl``) for the
whole run, so ``K`` workers use ``K`` cores and never oversubscribe them.
Threads rather than processes because

* numpy releases the interpreter lock inside matrix products and element-wise
  loops, so on compute-bound block sizes the threads really run in parallel;
  the lock is held only for the few microseconds of Python between kernels;
* activations and signals pass between workers by reference through
  :class:`queue.Queue`: no pickling, no copies, no shared-memory segments to
  allocate and unlink (processes would copy every activation, or need
  shared-memory buffers sized in advance and a start-up of a second or more);
* the workers call the pure block functions of :mod:`sim.local` on whatever
  arrays the network holds, so the runtime needs no second implementation
  (with CuPy arrays every worker queues kernels on the one GPU; there the
  runtime overlaps launches, not cores);
* shutdown is simple and certain: every blocking operation waits in short
  slices and checks a shared stop event, and the threads are daemons.

The cost is the lock: on tiny blocks (tens of microseconds of arithmetic)
Python overhead dominates and threads gain little; the schedule model
(:mod:`sim.schedule`) makes that explicit with its per-message cost.

The schedule: a deterministic process network
---------------------------------------------
Every block ``j`` runs the same program: for ``s = 0, 1, ...``
``forward(j, s)`` (receive batch ``s``'s input from block ``j-1``, or read the
data, compute, apply its local update, send its output up) and then
``backward(j, s - D_j)`` (receive the signal the rule sends down for batch
``s - D_j``, update from the cached forward of that batch, pass a signal on).
Channels are bounded FIFO queues, so block ``j`` works on batch ``s`` while
block ``j+1`` works on batch ``s-1``. Each block's result depends only on the
messages it receives and their order, never on timing (a Kahn process
network), so **any** assignment of blocks to workers, including one worker in
the calling thread (the sequential schedule), gives bit-for-bit the same
weights. The feedback delays ``D_j`` are part of the rule's schedule
(:func:`feedback_delays`), and they are its documented staleness:

==============  ==========================  ====================================================
rule            ``D_j`` pipelined           staleness
==============  ==========================  ====================================================
dgl, greedy     0 (nothing flows down)      none: the pipeline *is* sequential DGL
overlap         1                           the block above's signal is one batch late
bp              ``K - 1 - j``               block ``j``'s gradient is ``K-1-j`` updates stale
                                            (1F1B pipelining without weight stashing)
dfa             ``K - 1 - j``               the output error reaches block ``j`` ``K-1-j``
                                            batches late
sg, cdni        1                           the weights never wait (they follow the module's
                                            prediction); the module's regression target from
                                            the block above is one batch late
==============  ==========================  ====================================================

With ``pipelined=False`` every ``D_j = 0``: the rule is exactly its synchronous
form (:func:`sim.local.block_updates`) and BP, DFA and overlap are locked batch
by batch (DNI's modules then train on the target of the same batch).
``async-dgl`` is not a process network: block ``j`` samples a replay
buffer of ``M`` batches (:class:`sim.local.ReplayBuffer`) at its own pace, so
its threaded result depends on timing; its sequential schedule is a fixed tick
pattern (``speeds``), which with ``M = 1`` and equal speeds is DGL exactly.

Divergence: every block checks, for each member, the losses it computes (its
local loss, the network loss at the top, a synthetic-gradient module's
regression loss) and its updated parameters. A member whose loss becomes
non-finite or exceeds ``divergence_factor`` times the block's first loss of it,
or whose parameters become non-finite, is frozen in that block (its parameters
stop changing) and every message the block sends for it from then on (outputs
up, signals down, the output error, replay-buffer entries) is ``nan``, so the
blocks it talks to freeze it too, as a function of the messages only (the
schedule stays deterministic). :attr:`RuntimeResult.diverged` lists each
diverged member once (its earliest step and reason, :mod:`sim.divergence`);
its recorded losses are ``nan`` from that step on and
:meth:`RuntimeResult.accuracy` reports ``nan`` for it. (A block that hears
nothing from the diverging one, such as a lower DGL block when the top
diverges, keeps training the member; the member is reported all the same.)

Shutdown: a block that raises stops every worker (they see the stop event
within ``POLL`` seconds) and the runtime raises :class:`BlockError` from the
original exception; a ``KeyboardInterrupt`` in the calling thread does the
same and is re-raised; a channel that stays empty or full for ``timeout``
seconds raises :class:`TimeoutError` instead of hanging.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from array_api_compat import is_numpy_namespace

from .backend import COMPONENTS, SHARED_OFFSET, namespace, shared_rng, to_device, to_host
from .data.tasks import Dataset
from .divergence import (
    DIVERGENCE_FACTOR,
    LOSS_EXCEEDED,
    LOSS_NON_FINITE,
    WEIGHTS_NON_FINITE,
    check_divergence_factor,
    collect_divergences,
)
from .local import (
    BlockNetwork,
    BlockRule,
    ReplayBuffer,
    SyntheticGradientModule,
    check_objective,
    draw_block_feedback,
    get_block_rule,
    local_step,
    objective_signal,
    predict_blocks,
    synthetic_step,
    two_views,
)
from .nn import accuracy
from .schedule import assign_blocks

#: Seconds between checks of the stop event while a worker waits.
POLL = 0.05
VIEW_KINDS = (None, "augment")


class BlockError(RuntimeError):
    """A block raised inside the runtime; ``block`` is its index, the cause is the original exception."""

    def __init__(self, block: int, message: str):
        super().__init__(message)
        self.block = block


class _Stopped(Exception):
    """Internal: another worker failed, stop quietly."""


# --- BLAS threads ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def blas_limit(threads: int | None):
    """Limit every BLAS library to ``threads`` threads inside the block (``None``: leave as is).

    Uses ``threadpoolctl``; the limit is process-wide, which is what the
    runtime needs (each worker thread then runs single-threaded kernels).
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"blas_threads must be a positive integer or None, got {threads!r}")
    from .backend import blas_limit as engine_blas_limit

    with engine_blas_limit(int(threads)):  # also the budget of blas_policy inside (sim.backend)
        yield


# --- batches ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    r"""The order of minibatches of a run, fixed in advance from its seed.

    Batch ``s`` is rows ``order[s]`` of the data: a fresh permutation per epoch
    from the run's ``"batches"`` stream (as :mod:`sim.train`), dropping a last
    partial batch. With ``views="augment"`` (contrastive objectives) batch
    ``s`` holds two augmented views of those rows (:func:`sim.local.two_views`,
    drawn from the ``"noise"`` stream's child ``s``), ``2B`` rows, labels
    repeated; ``views`` may also be a callable ``views(rows, rng) -> (x2, y2)``
    (for example two images of the hierarchical data generated from the same
    upper-level symbols).
    """

    data: Dataset
    batch_size: int
    steps: int
    seed: int = 0
    views: object = None
    view_noise: float = 0.3
    view_drop: float = 0.2
    order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        n = self.data.n_samples
        for name in ("batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size > n:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {n} samples of the data")
        if not (self.views in VIEW_KINDS or callable(self.views)):
            raise ValueError(f"views must be None, 'augment' or a callable, got {self.views!r}")
        rng = shared_rng(self.seed, "batches")
        per_epoch = n // self.batch_size
        rows = []
        while len(rows) < self.steps:
            perm = rng.permutation(n)
            rows += [perm[i * self.batch_size:(i + 1) * self.batch_size] for i in range(per_epoch)]
        object.__setattr__(self, "order", np.stack(rows[:self.steps]))

    @property
    def batches_per_epoch(self) -> int:
        return self.data.n_samples // self.batch_size

    def host_batch(self, s: int):
        """Inputs and targets of batch ``s`` on the host."""
        rows = self.order[s]
        x, y = self.data.x[rows], self.data.y[rows]
        if self.views is None:
            return x, y
        rng = np.random.default_rng(np.random.SeedSequence(
            self.seed, spawn_key=(SHARED_OFFSET + COMPONENTS.index("noise"), int(s))))
        if callable(self.views):
            return self.views(rows, rng)
        return two_views(x, rng, noise=self.view_noise, drop=self.view_drop), np.concatenate([y, y])


# --- channels ---------------------------------------------------------------------------------------------

class _Channel:
    """A bounded FIFO between two blocks; waits in slices of ``POLL`` s and honours the stop event."""

    def __init__(self, name: str, capacity: int, stop: threading.Event, timeout: float):
        self.name = name
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = stop
        self.timeout = timeout

    def put(self, item) -> float:
        start = time.perf_counter()
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=POLL)
                return time.perf_counter() - start
            except queue.Full:
                if time.perf_counter() - start > self.timeout:
                    raise TimeoutError(f"channel {self.name} stayed full for {self.timeout} s") from None

    def get(self, expected: int):
        start = time.perf_counter()
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                item = self.queue.get(timeout=POLL)
                break
            except queue.Empty:
                if time.perf_counter() - start > self.timeout:
                    raise TimeoutError(f"channel {self.name} stayed empty for {self.timeout} s waiting for "
                                       f"batch {expected}") from None
        if item[0] != expected:
            raise RuntimeError(f"channel {self.name} delivered batch {item[0]}, expected {expected}")
        return item, time.perf_counter() - start


# --- results ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """Block parameters after ``batches`` batches were fully applied, at ``seconds`` since the start."""

    batches: int
    seconds: float
    params: tuple


@dataclass
class RuntimeResult:
    """What :func:`train_blocks` returns.

    ``network`` is the final network; ``seconds`` the wall time of training;
    ``losses[j]`` a host array ``(updates, E)`` of block ``j``'s loss per update
    (local loss, or the network loss for the last block); ``snapshots[j]`` the
    block's parameters every ``snapshot_every`` batches; ``busy[j]`` and
    ``waiting[j]`` its seconds of computation and of waiting on channels;
    ``updates[j]`` its number of updates; ``buffer_max[j]`` the largest size of
    block ``j``'s input buffer (``async-dgl``); ``trace`` (when asked) the
    actions ``(block, kind, batch, start, end)`` in order of start (seconds since
    the start of training; ``batch`` counts the block's updates for ``async-dgl``), with
    ``kind`` ``"forward"`` (forward, local loss and local update) or
    ``"backward"`` (an update from a signal sent down). ``diverged`` lists the
    members that diverged (:class:`sim.divergence.Divergence`: the earliest
    step over the blocks, a batch index, or the block's update count for
    ``async-dgl``; greedy's stages count on from each other); their ``losses``
    are ``nan`` from then on.
    """

    network: BlockNetwork
    rule: str
    workers: int
    groups: list
    pipelined: bool
    delays: tuple
    seconds: float
    losses: list
    snapshots: list
    busy: list
    waiting: list
    updates: list
    buffer_max: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    diverged: list = field(default_factory=list)

    def accuracy(self, x, y, snapshot: int | None = None) -> np.ndarray:
        """Accuracy ``(E,)`` on ``(x, y)`` of the final network (or of snapshot ``snapshot``), ``nan`` for a
        member that had diverged by then."""
        net = self.network if snapshot is None else self.network_at(snapshot)
        acc = np.array(evaluate(net, x, y), dtype=float)
        batches = None if snapshot is None else max(s[snapshot].batches for s in self.snapshots)
        for d in self.diverged:
            if batches is None or d.step < batches:
                acc[d.member] = np.nan
        return acc

    def n_snapshots(self) -> int:
        return min(len(s) for s in self.snapshots)

    def network_at(self, i: int) -> BlockNetwork:
        """The network made of every block's ``i``-th snapshot."""
        return self.network.with_params([s[i].params for s in self.snapshots])

    def snapshot_seconds(self) -> np.ndarray:
        """When every block had reached its ``i``-th snapshot (the latest of the blocks)."""
        return np.array([max(s[i].seconds for s in self.snapshots) for i in range(self.n_snapshots())])


def evaluate(net: BlockNetwork, x, y) -> np.ndarray:
    """Accuracy ``(E,)`` of a block network on ``(x, y)`` (host result)."""
    return to_host(accuracy(predict_blocks(net, x), y))


# --- the runtime --------------------------------------------------------------------------------------------

def feedback_delays(rule, n_blocks: int, pipelined: bool = True) -> tuple[int, ...]:
    """The delays ``D_j`` (see the module docstring) of ``rule`` on ``n_blocks`` blocks."""
    rule = get_block_rule(rule)
    if rule.feedback is None or not pipelined:
        return (0,) * n_blocks
    if rule.feedback in ("neighbour", "synthetic"):
        return tuple(1 if j < n_blocks - 1 else 0 for j in range(n_blocks))
    return tuple(n_blocks - 1 - j for j in range(n_blocks))


def _sgd(params, grads, lr):
    out = []
    for p, g in zip(params, grads):
        if np.ndim(lr) == 0:
            out.append(p - lr * g)
        else:
            xp = namespace(p)
            out.append(p - xp.reshape(xp.asarray(lr, dtype=p.dtype), (-1,) + (1,) * (p.ndim - 1)) * g)
    return tuple(out)


class _Run:
    """The shared state of one run: blocks' parameters, channels, records (one block per owner thread)."""

    def __init__(self, net: BlockNetwork, plan: BatchPlan, rule: BlockRule, *, lr, delays, objective, temperature,
                 feedback, queue_size, timeout, snapshot_every, stop, block_delays, stage=None, trace=False,
                 head_lr=None, divergence_factor=DIVERGENCE_FACTOR, previous=None, step_offset=0):
        self.net, self.plan, self.rule = net, plan, rule
        self.k = net.n_blocks
        self.params = [tuple(p) for p in net.params]
        self.head_params = [None if h is None else tuple(h) for h in net.head_params]
        self.lr, self.delays, self.objective, self.temperature = lr, delays, objective, temperature
        self.head_lr = lr if head_lr is None else head_lr
        self.feedback = feedback
        self.snapshot_every = snapshot_every
        self.block_delays = block_delays
        self.stop = stop
        self.stage = stage
        self.caches = [dict() for _ in range(self.k)]
        self.trace = [] if trace else None
        self.action_start = [0.0] * self.k
        self.losses = [[] for _ in range(self.k)]
        self.snapshots = [[] for _ in range(self.k)]
        self.busy = [0.0] * self.k
        self.waiting = [0.0] * self.k
        self.updates = [0] * self.k
        self.start = time.perf_counter()
        xp = namespace(*self.params[0])
        self.xp = xp
        self.dtype = str(self.params[0][0].dtype).split(".")[-1]
        self.x_all = to_device(plan.data.x, xp, self.dtype) if plan.views is None else None
        self.y_all = to_device(plan.data.y, xp, self.dtype) if plan.views is None else None
        capacity = max(1, int(queue_size))
        self.timeout = timeout
        self.up = [_Channel(f"{j}->{j + 1}", capacity, stop, timeout) for j in range(self.k - 1)]
        self.down = [_Channel(f"{j + 1}->{j}", delays[j] + 2, stop, timeout) for j in range(self.k - 1)]
        self.direct = [_Channel(f"{self.k - 1}->{j} (direct)", delays[j] + 2, stop, timeout)
                       for j in range(self.k - 1)]
        # divergence, per block and member (device arrays): see the module docstring
        n_members = net.n_members
        self.divergence_factor, self.step_offset = divergence_factor, step_offset
        self.loss_steps = [[] for _ in range(self.k)]
        if previous is None:  # a greedy stage carries on from the stage before
            self.alive = [xp.ones((n_members,), dtype=xp.bool) for _ in range(self.k)]
            self.first_bad = [xp.full((n_members,), -1, dtype=xp.int64) for _ in range(self.k)]
            self.reason = [xp.zeros((n_members,), dtype=xp.int8) for _ in range(self.k)]
        else:
            self.alive, self.first_bad, self.reason = list(previous.alive), list(previous.first_bad), \
                list(previous.reason)
        self.limit = [xp.full((n_members,), np.nan, dtype=self.params[0][0].dtype) for _ in range(self.k)]

    # records
    def _snapshot(self, j: int, batches: int) -> None:
        if self.snapshot_every and batches % self.snapshot_every == 0:
            self.snapshots[j].append(Snapshot(batches, time.perf_counter() - self.start, self.params[j]))

    def _update(self, j: int, s: int, grads, head_grads=None) -> None:
        """The SGD step of block ``j`` (``grads=None``: only its head) on batch ``s``, for the members not frozen."""
        new = None if grads is None else _sgd(self.params[j], grads, self.lr)
        new_head = None if head_grads is None else _sgd(self.head_params[j], head_grads, self.head_lr)
        xp = self.xp
        finite = self.alive[j]
        for p in [*(new or ()), *(new_head or ())]:
            finite = finite & xp.all(xp.isfinite(p), axis=tuple(range(1, p.ndim)))
        self._diverge(j, s, self.alive[j] & ~finite, WEIGHTS_NON_FINITE)
        if new is not None:
            self.params[j] = self._keep(j, self.params[j], new)
        if new_head is not None:
            self.head_params[j] = self._keep(j, self.head_params[j], new_head)

    def _all_alive(self, j: int) -> bool:
        return is_numpy_namespace(self.xp) and bool(np.all(self.alive[j]))  # free on numpy; elsewhere assume not

    def _keep(self, j: int, old, new):
        if self._all_alive(j):
            return new
        xp = self.xp
        return tuple(xp.where(xp.reshape(self.alive[j], (-1,) + (1,) * (p.ndim - 1)), p, q) for p, q in zip(new, old))

    def _diverge(self, j: int, s: int, bad, code) -> None:
        """Freeze the members ``bad`` of block ``j`` as diverged on batch ``s`` for reason ``code``."""
        xp = self.xp
        self.first_bad[j] = xp.where(bad, xp.asarray(s + self.step_offset, dtype=xp.int64), self.first_bad[j])
        self.reason[j] = xp.where(bad, xp.asarray(code, dtype=xp.int8), self.reason[j])
        self.alive[j] = self.alive[j] & ~bad

    def _check_loss(self, j: int, s: int, loss):
        """Check block ``j``'s loss ``(E,)`` on batch ``s``; returns it, ``nan`` for the members frozen."""
        xp = self.xp
        finite = xp.isfinite(loss)
        self.limit[j] = xp.where(xp.isnan(self.limit[j]),
                                 xp.where(loss > 0, self.divergence_factor * loss, xp.inf), self.limit[j])
        bad = self.alive[j] & ~(finite & (loss <= self.limit[j]))
        self._diverge(j, s, bad, xp.where(finite, xp.asarray(LOSS_EXCEEDED, dtype=xp.int8),
                                          xp.asarray(LOSS_NON_FINITE, dtype=xp.int8)))
        return loss if self._all_alive(j) else xp.where(self.alive[j], loss, xp.full_like(loss, np.nan))

    def _record_loss(self, j: int, s: int, loss) -> None:
        self.losses[j].append(self._check_loss(j, s, loss))
        self.loss_steps[j].append(s + self.step_offset)

    def _mask(self, j: int, message):
        """A message of block ``j`` ``(E, ...)``: ``nan`` for the members it has frozen."""
        if message is None or self._all_alive(j):
            return message
        xp = self.xp
        return xp.where(xp.reshape(self.alive[j], (-1,) + (1,) * (message.ndim - 1)), message,
                        xp.full_like(message, np.nan))

    def batch(self, s: int):
        if self.x_all is not None:
            idx = self.xp.asarray(self.plan.order[s])
            return self.xp.take(self.x_all, idx, axis=0), self.xp.take(self.y_all, idx, axis=0)
        x, y = self.plan.host_batch(s)
        return to_device(x, self.xp, self.dtype), to_device(y, self.xp, self.dtype)

    def _receive(self, j: int, s: int):
        if j == 0:
            return self.batch(s)
        (_, h, y), waited = self.up[j - 1].get(s)
        self.waiting[j] += waited
        return h, y

    def _send(self, channel: _Channel, j: int, item) -> None:
        item = (item[0], self._mask(j, item[1]), *item[2:])  # nan for the members block j has frozen
        self.waiting[j] += channel.put(item)

    def _pause(self, j: int) -> None:
        """Simulated extra compute of block ``j``: sleep inside its step, before it sends anything."""
        if self.block_delays is not None and self.block_delays[j] > 0:
            time.sleep(self.block_delays[j])

    # the process-network program
    def has_backward(self, j: int) -> bool:
        return self.rule.feedback is not None and j < self.k - 1 and self.stage is None

    def forward(self, j: int, s: int) -> bool | None:
        rule, k = self.rule, self.k
        if self.stage is not None and j > self.stage:
            return False
        h, y = self._receive(j, s)
        start = self.action_start[j] = time.perf_counter()
        top = j == k - 1
        if self.stage is not None and j < self.stage:  # greedy: a frozen block only forwards
            out, _ = self.net.blocks[j].forward(self.params[j], h)
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            self._send(self.up[j], j, (s, out, y))
            return
        block, params = self.net.blocks[j], self.params[j]
        if rule.feedback == "synthetic" and not top:  # DNI: update from the module's prediction, at once
            step = synthetic_step(block, params, self.net.heads[j], self.head_params[j], h, y, input_signal=j > 0)
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            self._send(self.up[j], j, (s, step.output, y))
            if step.signal_in is not None:
                self._send(self.down[j - 1], j, (s, step.signal_in))
            start = time.perf_counter()
            self._update(j, s, step.grads)
            self.caches[j][s] = (step.output, y)
        elif rule.local_heads or (top and rule.feedback in (None, "neighbour", "synthetic")):
            step = local_step(block, params, None if top else self.net.heads[j], self.head_params[j], h, y,
                              objective=self.objective, loss=self.net.loss, temperature=self.temperature,
                              input_signal=rule.feedback in ("neighbour", "synthetic") and j > 0)
            self._record_loss(j, s, step.loss)
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            if not top and self.stage is None:
                self._send(self.up[j], j, (s, step.output, y))
            if step.signal_in is not None:
                self._send(self.down[j - 1], j, (s, step.signal_in))
            start = time.perf_counter()
            self._update(j, s, step.grads, step.head_grads)
            if self.has_backward(j):
                self.caches[j][s] = step.cache
        elif top and rule.feedback == "direct":  # dfa: broadcast the output error first, then update
            out, cache = block.forward(params, h)
            value, error = objective_signal("supervised", out, y, loss=self.net.loss)
            self._record_loss(j, s, value)
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            for i in range(k - 1):
                self._send(self.direct[i], j, (s, error))
            start = time.perf_counter()
            grads, _ = block.backward(params, cache, error, input_signal=False)
            self._update(j, s, grads)
        elif top:  # bp: the network loss at the output, its signal down the chain
            out, cache = block.forward(params, h)
            value, error = objective_signal("supervised", out, y, loss=self.net.loss)
            grads, signal_in = block.backward(params, cache, error, input_signal=j > 0)
            self._record_loss(j, s, value)
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            if j > 0:
                self._send(self.down[j - 1], j, (s, signal_in))
            start = time.perf_counter()
            self._update(j, s, grads)
        else:  # bp or dfa below the top: forward, keep the cache
            out, cache = block.forward(params, h)
            self.caches[j][s] = cache
            self._pause(j)
            self.busy[j] += time.perf_counter() - start
            self._send(self.up[j], j, (s, out, y))
            start = time.perf_counter()
        self.busy[j] += time.perf_counter() - start
        if not self.has_backward(j):
            self.updates[j] += 1
            self._snapshot(j, s + 1)

    def backward(self, j: int, b: int) -> None:
        rule = self.rule
        channel = self.direct[j] if rule.feedback == "direct" else self.down[j]
        (_, signal), waited = channel.get(b)
        self.waiting[j] += waited
        start = self.action_start[j] = time.perf_counter()
        cache = self.caches[j].pop(b)
        block = self.net.blocks[j]
        if rule.feedback == "synthetic":  # regress the module on the target the block above sent
            out, y = cache
            grads, loss = self.net.heads[j].regress(self.head_params[j], out, y, signal)
            self._record_loss(j, b, loss)
            self._update(j, b, None, grads)
            self.busy[j] += time.perf_counter() - start
            self.updates[j] += 1
            self._snapshot(j, b + 1)
            return
        if rule.feedback == "direct":
            xp = self.xp
            signal = xp.matmul(signal, xp.matrix_transpose(self.feedback[j]))
        pass_on = rule.feedback == "chain" and j > 0
        grads, signal_in = block.backward(self.params[j], cache, signal, input_signal=pass_on)
        self.busy[j] += time.perf_counter() - start
        if pass_on:
            self._send(self.down[j - 1], j, (b, signal_in))
        start = time.perf_counter()
        self._update(j, b, grads)
        self.busy[j] += time.perf_counter() - start
        self.updates[j] += 1
        self._snapshot(j, b + 1)

    def guarded(self, action, j: int, s: int):
        """Run ``action(j, s)``; a failure of the block's own code becomes a :class:`BlockError`."""
        try:
            if self.trace is None:
                return action(j, s)
            out = action(j, s)
            if out is not False:
                kind = "backward" if action.__name__ == "backward" else "forward"
                self.trace.append((j, kind, s, self.action_start[j] - self.start, time.perf_counter() - self.start))
            return out
        except (_Stopped, TimeoutError, BlockError, KeyboardInterrupt):
            raise
        except Exception as err:
            raise BlockError(j, f"block {j} failed on batch {s}: {type(err).__name__}: {err}") from err

    def run_blocks(self, blocks: list[int]) -> None:
        steps = self.plan.steps
        last = steps + max(self.delays[j] for j in blocks)
        for s in range(last):
            if s < steps:
                for j in blocks:
                    self.guarded(self.forward, j, s)
            for j in reversed(blocks):
                b = s - self.delays[j]
                if self.has_backward(j) and 0 <= b < steps:
                    self.guarded(self.backward, j, b)


class _AsyncRun(_Run):
    """Asynchronous DGL: block ``j > 0`` samples a replay buffer of ``M`` batches filled by block ``j - 1``.

    Every block has the budget of ``plan.steps`` updates (the compute of DGL);
    block ``j > 0`` waits only when its buffer is empty, replays entries when
    nothing fresh has arrived, and stops early only if block ``j - 1`` is done
    and the buffer emptied (possible with a reuse cap).
    """

    def __init__(self, *args, buffer_size: int, reuse_cap, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffers = [None] + [ReplayBuffer(buffer_size, reuse_cap) for _ in range(self.k - 1)]
        self.done = [False] * self.k
        self.next_batch = 0

    def finished(self, j: int) -> bool:
        return self.done[j]

    def try_step(self, j: int) -> bool:
        """One update of block ``j`` if it can act now; False if it has nothing to work on."""
        return self.guarded(self._try_step, j, self.updates[j])

    def _try_step(self, j: int, _count: int) -> bool:
        if self.done[j]:
            return False
        steps = self.plan.steps
        if j == 0:
            s = self.updates[0]
            h, y = self.batch(s)
        else:
            below_done = self.done[j - 1]
            if self.updates[j] >= steps or (below_done and len(self.buffers[j]) == 0):
                self.done[j] = True
                if j < self.k - 1:
                    self.buffers[j + 1].close()
                return False
            item = self.buffers[j].sample()
            if item is None:
                return False
            s, h, y = item
        start = self.action_start[j] = time.perf_counter()
        top = j == self.k - 1
        step = local_step(self.net.blocks[j], self.params[j], None if top else self.net.heads[j],
                          self.head_params[j], h, y, objective=self.objective, loss=self.net.loss,
                          temperature=self.temperature)
        count = self.updates[j]
        self._record_loss(j, count, step.loss)
        self._pause(j)
        self.busy[j] += time.perf_counter() - start
        if not top:
            self.buffers[j + 1].push((s, self._mask(j, step.output), y))
        start = time.perf_counter()
        self._update(j, count, step.grads, step.head_grads)
        self.busy[j] += time.perf_counter() - start
        self.updates[j] += 1
        self._snapshot(j, self.updates[j])
        if j == 0 and self.updates[0] >= steps:
            self.done[0] = True
            if self.k > 1:
                self.buffers[1].close()
        return True

    def run_blocks(self, blocks: list[int]) -> None:
        timeout = self.timeout
        idle_since = None
        while not all(self.done[j] for j in blocks):
            if self.stop.is_set():
                raise _Stopped
            acted = False
            for j in blocks:
                acted |= self.try_step(j)
            if acted:
                idle_since = None
                continue
            pending = [j for j in blocks if not self.done[j] and j > 0]
            if not pending:
                continue
            start = time.perf_counter()
            self.buffers[pending[0]].wait(POLL)
            self.waiting[pending[0]] += time.perf_counter() - start
            idle_since = idle_since or start
            if time.perf_counter() - idle_since > timeout:
                raise TimeoutError(f"async blocks {pending} found nothing to sample for {timeout} s")

    def run_ticks(self, ticks) -> None:
        """The sequential schedule: block ``ticks[i]`` acts at tick ``i`` if it can."""
        for j in ticks:
            self.try_step(j)
        while not all(self.done):  # let every block finish its budget in round-robin order
            before = list(self.done)
            acted = [self.try_step(j) for j in range(self.k)]
            if not any(acted) and self.done == before:
                raise RuntimeError("the asynchronous schedule stalled")  # pragma: no cover - a bug


def async_ticks(speeds, rounds: int) -> list[int]:
    """A tick pattern where block ``j`` acts ``speeds[j]`` times per round (in block order)."""
    speeds = [int(v) for v in speeds]
    if not speeds or min(speeds) < 1:
        raise ValueError(f"speeds must be positive integers, one per block, got {speeds}")
    return [j for _ in range(int(rounds)) for j, v in enumerate(speeds) for _ in range(v)]


def _run_workers(run: _Run, groups: list[list[int]], worker: Callable) -> None:
    """Run ``worker(run, group)`` for each group: in this thread for one group, else one thread each.

    Floating-point warnings are off in the workers: a diverging member is found and reported instead.
    """
    if len(groups) == 1:
        with np.errstate(all="ignore"):
            worker(run, groups[0])
        return
    errors: list[tuple[list[int], BaseException]] = []

    def target(group):
        try:
            with np.errstate(all="ignore"):
                worker(run, group)
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - every failure must stop the others
            errors.append((group, err))
            run.stop.set()

    threads = [threading.Thread(target=target, args=(g,), name=f"bbp-worker-{i}", daemon=True)
               for i, g in enumerate(groups)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(POLL)
    except BaseException:
        run.stop.set()
        for t in threads:
            t.join(10 * POLL + 1.0)
        raise
    if errors:
        group, err = errors[0]
        if isinstance(err, BlockError | TimeoutError | KeyboardInterrupt):
            raise err
        raise BlockError(group[0], f"a worker with blocks {group} failed: {type(err).__name__}: {err}") from err


def train_blocks(net: BlockNetwork, plan: BatchPlan, *, rule: str, lr, workers: int = 1, pipelined: bool = True,
                 objective: str = "supervised", temperature: float = 0.5, feedback=None, queue_size: int = 2,
                 buffer_size: int = 2, reuse_cap: int | None = None, speeds=None, block_delays=None,
                 snapshot_every: int | None = None, timeout: float = 60.0, blas_threads: int | None = 1,
                 groups=None, feedback_seed: int = 0, trace: bool = False, head_lr=None,
                 divergence_factor: float = DIVERGENCE_FACTOR) -> RuntimeResult:
    r"""Train a block network with ``rule`` on ``workers`` workers (threads) or sequentially (``workers=1``).

    Parameters
    ----------
    net : BlockNetwork
        The network; its arrays decide the backend.
    plan : BatchPlan
        The batches, in order (``plan.steps`` of them; greedy uses them once per stage).
    rule : {"bp", "dfa", "greedy", "dgl", "async-dgl", "overlap", "sg", "cdni"}
    lr : float or array ``(E,)``
        SGD step of every block and head (non-negative; 0 freezes a member).
    head_lr : float or array ``(E,)``, optional
        Step of the heads and synthetic-gradient modules (default ``lr``).
    workers : int
        Threads, ``1 .. K``; blocks go to workers in contiguous groups
        (:func:`sim.schedule.assign_blocks`), or as given by ``groups``.
        ``workers=1`` runs in the calling thread.
    pipelined : bool
        Use the delays of :func:`feedback_delays` (``False``: all zero, the
        rule's synchronous form, locked for BP, DFA and overlap).
    objective : {"supervised", "infonce", "ntxent"}
        Local objective of the heads (contrastive ones need ``plan.views``).
    feedback : list, optional
        DFA's matrices (default :func:`sim.local.draw_block_feedback` from ``feedback_seed``).
    queue_size : int
        Capacity of each forward channel (how far block ``j`` may run ahead of ``j+1``).
    buffer_size, reuse_cap, speeds, block_delays
        ``async-dgl``: buffer capacity ``M``, uses allowed per entry; the tick
        pattern of the sequential schedule (block ``j`` acts ``speeds[j]``
        times per round); ``block_delays``: seconds of sleep added to each
        forward step of each block, inside the step and before its messages go
        out (blocks of simulated cost: different speeds for ``async-dgl``, and
        schedules checked without competing for cores).
    snapshot_every : int, optional
        Keep every block's parameters each time it has applied this many batches.
    timeout : float
        Seconds a worker may wait on one channel before the run fails.
    blas_threads : int or None
        BLAS threads during the run (default 1: one core per worker).
    trace : bool
        Record every action's start and end (:attr:`RuntimeResult.trace`).
    divergence_factor : float
        A member whose loss in a block exceeds this many times that block's
        first loss of it has diverged, as one whose loss or parameters become
        non-finite: it is frozen, reported in :attr:`RuntimeResult.diverged`,
        and its losses and accuracy are ``nan`` from then on (see the module
        docstring). Greater than 1; ``inf`` keeps only the non-finite checks.

    Returns
    -------
    RuntimeResult

    Raises
    ------
    ValueError
        Bad settings. BlockError: a block raised (the cause is attached).
        TimeoutError: a worker waited longer than ``timeout``.
    """
    rule = get_block_rule(rule)
    check_objective(objective)
    if not isinstance(plan, BatchPlan):
        raise ValueError(f"plan must be a BatchPlan, got {type(plan).__name__}")
    if objective != "supervised" and plan.views is None:
        raise ValueError(f"objective {objective!r} needs two views per sample: build the BatchPlan with views")
    k = net.n_blocks
    if groups is None:
        if isinstance(workers, bool) or int(workers) != workers or not 1 <= workers <= k:
            raise ValueError(f"workers must be an integer in 1 .. {k} (the number of blocks), got {workers!r}")
        groups = assign_blocks(k, int(workers))
    else:
        groups = [list(g) for g in groups]
        if sorted(j for g in groups for j in g) != list(range(k)) or any(
                g != list(range(g[0], g[0] + len(g))) for g in groups if g):
            raise ValueError(f"groups must split blocks 0 .. {k - 1} into contiguous runs, got {groups}")
    lr_host = np.asarray(to_host(lr), dtype=float)
    if lr_host.shape not in ((), (net.n_members,)) or not np.all(np.isfinite(lr_host)) or np.any(lr_host < 0):
        raise ValueError(f"lr must be a non-negative finite number or one per member ({net.n_members}), "
                         f"got {lr!r}")
    if not (np.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    divergence_factor = check_divergence_factor(divergence_factor)
    if snapshot_every is not None and (int(snapshot_every) != snapshot_every or snapshot_every < 1):
        raise ValueError(f"snapshot_every must be a positive integer or None, got {snapshot_every!r}")
    if block_delays is not None and (len(block_delays) != k or min(block_delays) < 0):
        raise ValueError(f"block_delays must be {k} non-negative numbers of seconds, got {block_delays!r}")
    if isinstance(queue_size, bool) or int(queue_size) != queue_size or queue_size < 1:
        raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
    if rule.name == "dfa" and feedback is None:
        feedback = draw_block_feedback(net, seed=feedback_seed)
    if rule.feedback == "synthetic" and not all(
            isinstance(h, SyntheticGradientModule) and bool(h.n_label) == (rule.name == "cdni")
            for h in net.heads[:-1]):
        raise ValueError(f"rule {rule.name!r} needs synthetic-gradient modules on the blocks below the top: "
                         f"sim.local.attach_synthetic_gradients(net, conditioned={rule.name == 'cdni'})")
    delays = feedback_delays(rule, k, pipelined)
    stop = threading.Event()
    common = dict(lr=lr, delays=delays, objective=objective, temperature=temperature, feedback=feedback,
                  queue_size=queue_size, timeout=timeout, snapshot_every=snapshot_every, stop=stop,
                  block_delays=block_delays, trace=trace, head_lr=head_lr, divergence_factor=divergence_factor)
    with blas_limit(blas_threads):
        start = time.perf_counter()
        if rule.name == "async-dgl":
            run = _AsyncRun(net, plan, rule, buffer_size=buffer_size, reuse_cap=reuse_cap, **common)
            if len(groups) == 1:
                ticks = async_ticks(speeds or [1] * k, plan.steps)
                _run_workers(run, groups, lambda r, g: r.run_ticks(ticks))
            else:
                _run_workers(run, groups, lambda r, g: r.run_blocks(g))
            buffer_max = [0] + [b.max_size for b in run.buffers[1:]]
            runs = [run]
        elif rule.staged:
            runs, current = [], net
            for stage in range(k):
                run = _Run(current, plan, rule, stage=stage, previous=runs[-1] if runs else None,
                           step_offset=stage * plan.steps, **common)
                run.start = start
                _run_workers(run, [g for g in ([j for j in grp if j <= stage] for grp in groups) if g],
                             lambda r, g: r.run_blocks(g))
                current = current.with_params(run.params, run.head_params)
                runs.append(run)
            buffer_max = []
        else:
            run = _Run(net, plan, rule, **common)
            _run_workers(run, groups, lambda r, g: r.run_blocks(g))
            buffer_max = []
            runs = [run]
        seconds = time.perf_counter() - start
    last = runs[-1]
    final = net.with_params(last.params, last.head_params)
    diverged = collect_divergences(np.stack([to_host(a) for a in last.first_bad]),
                                   np.stack([to_host(a) for a in last.reason]), divergence_factor)
    losses = [_stack_losses([value for r in runs for value in r.losses[j]]) for j in range(k)]
    for j in range(k):  # nan from a member's divergence on, in every block
        steps = np.asarray([t for r in runs for t in r.loss_steps[j]])
        for d in diverged if losses[j].size else ():
            losses[j][steps >= d.step, d.member] = np.nan
    snapshots = [[s for r in runs for s in r.snapshots[j]] for j in range(k)]
    if rule.staged:  # the network's output means something in the last stage only
        snapshots = [[Snapshot(snap.batches, snap.seconds, snap.params if j == k - 1 else last.params[j])
                      for snap in last.snapshots[k - 1]] for j in range(k)]
    return RuntimeResult(final, rule.name, len(groups), groups, pipelined, delays, seconds, losses, snapshots,
                         [sum(r.busy[j] for r in runs) for j in range(k)],
                         [sum(r.waiting[j] for r in runs) for j in range(k)],
                         [sum(r.updates[j] for r in runs) for j in range(k)], buffer_max,
                         sorted((t for r in runs for t in (r.trace or [])), key=lambda t: t[3]), diverged)


def _stack_losses(values) -> np.ndarray:
    if not values:
        return np.zeros((0, 0))
    return np.stack([to_host(v) for v in values])
