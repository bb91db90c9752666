r"""The schedule model: predicted epoch time of a rule on ``K`` workers from per-block costs.

Each block ``j`` of a network costs, per batch, ``forward`` :math:`f_j`, ``head``
:math:`h_j` (an auxiliary head's forward, objective and backward, or a
synthetic-gradient module's), ``backward`` :math:`b_j` (the block's own
backward, from whatever signal it is sent) and ``update`` :math:`u_j`; ``comm``
:math:`c` is the cost of one message between two workers (a queue hand-over
between threads; latency plus bytes over bandwidth between machines). Blocks
are assigned to ``K`` workers in contiguous groups :math:`P_1..P_K` (balanced by
cost, :func:`assign_blocks`); a worker's cycle per batch is the work of its
blocks plus its messages across worker boundaries,
:math:`C_k = \sum_{j\in P_k} w_j + m_k c`. With ``n`` batches per epoch:

===================  ======================================================================  ===================
rule                 epoch time :math:`T`                                                    work :math:`w_j`
===================  ======================================================================  ===================
sequential (K = 1)   :math:`n \sum_j w_j`                                                    per rule, below
BP, not pipelined    :math:`n\,(\sum_j w_j + 2(K-1)c)`: forward, update and backward         :math:`f+b+u`
                     locking serialise every batch
BP, pipelined        :math:`(n-1)\max_k C_k + \sum_k C_k` (1F1B with stale gradients)        :math:`f+b+u`
DFA, not pipelined   :math:`n\,(\sum_j f_j + K c + \max_k \sum_{P_k}(b_j+u_j))`: the          :math:`f+b+u`
                     forward chain, then every block updates at once
DFA, pipelined       :math:`(n-1)\max_k C_k + \sum_k C_k`                                    :math:`f+b+u`
DGL, overlap         :math:`(n-1)\max_k C_k + \sum_k C_k`                                    :math:`f+h+b+u`
overlap, not         :math:`(n-1)\max_k (C_k + w'_{k+1}) + \sum_k C_k`: worker ``k`` waits     :math:`f+h+b+u`
pipelined            for the first block above (:math:`w' = f+h+b`) on the same batch
async DGL            :math:`n \max_k C_k + \sum_{k<K} f_{P_k}`: no coupling after the fill   :math:`f+h+b+u`
DNI / cDNI           :math:`(n-1)\max_k C_k + \sum_k C_k` (``h``: the module's prediction      :math:`f+h+b+u`
                     and regression)
===================  ======================================================================  ===================

The pipeline formula :math:`(n-1)\max_k C_k + \sum_k C_k` is the fill (one
pass through every stage) plus ``n - 1`` cycles of the slowest stage. It is a
model: it ignores memory-bandwidth contention between workers and the
interpreter lock held between numerical kernels (both make the real runtime
slower than predicted; :func:`compare` reports the ratio). Greedy layerwise
training is a sequence of single-block stages and is modelled as DGL run
once per stage with only that block training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODEL_RULES = ("bp", "dfa", "dgl", "async-dgl", "overlap", "sg", "cdni", "greedy")


@dataclass(frozen=True)
class BlockCost:
    """Seconds per batch of one block: ``forward``, ``head``, ``backward``, ``update``."""

    forward: float
    backward: float
    update: float = 0.0
    head: float = 0.0

    def __post_init__(self):
        for name in ("forward", "backward", "update", "head"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"block cost {name} must be a non-negative finite number of seconds, got {value!r}")

    def work(self, rule: str) -> float:
        """Per-batch work :math:`w_j` of the block under ``rule`` (see the module table)."""
        rule = check_model_rule(rule)
        base = self.forward + self.backward + self.update
        return base + self.head if rule in ("dgl", "async-dgl", "overlap", "sg", "cdni", "greedy") else base


def check_model_rule(rule: str) -> str:
    if rule not in MODEL_RULES:
        raise ValueError(f"unknown rule {rule!r} for the schedule model; allowed: {', '.join(MODEL_RULES)}")
    return rule


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def assign_blocks(n_blocks: int, workers: int, weights: Sequence[float] | None = None) -> list[list[int]]:
    r"""Contiguous groups of blocks, one per worker, minimising the largest group's total weight.

    Linear partition by dynamic programming: ``workers`` groups of consecutive
    blocks (``workers <= n_blocks``), each non-empty, minimising
    :math:`\max_k \sum_{j \in P_k} w_j` (ties: the earliest split). Without
    ``weights`` every block weighs 1.

    Raises
    ------
    ValueError
        If ``workers`` is not in ``1 .. n_blocks`` or the weights do not fit.
    """
    n_blocks = _check_positive_int("n_blocks", n_blocks)
    workers = _check_positive_int("workers", workers)
    if workers > n_blocks:
        raise ValueError(f"workers must be at most the number of blocks ({n_blocks}), got {workers}")
    w = np.ones(n_blocks) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n_blocks,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n_blocks} non-negative finite numbers, got {weights!r}")
    prefix = np.concatenate([[0.0], np.cumsum(w)])
    inf = float("inf")
    best = np.full((workers + 1, n_blocks + 1), inf)
    cut = np.zeros((workers + 1, n_blocks + 1), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, workers + 1):
        for n in range(k, n_blocks + 1):
            for m in range(k - 1, n):
                cost = max(best[k - 1, m], prefix[n] - prefix[m])
                if cost < best[k, n] - 1e-15:
                    best[k, n], cut[k, n] = cost, m
    groups, n = [], n_blocks
    for k in range(workers, 0, -1):
        m = cut[k, n]
        groups.append(list(range(m, n)))
        n = m
    return groups[::-1]


def _messages(groups, rule: str, pipelined: bool) -> list[int]:
    """Messages each worker sends or receives across worker boundaries per batch."""
    k = len(groups)
    counts = [0] * k
    for i in range(k - 1):  # forward activations across each boundary
        counts[i] += 1
        counts[i + 1] += 1
    if rule in ("bp", "overlap", "dni", "cdni"):  # one signal back across each boundary
        for i in range(k - 1):
            counts[i] += 1
            counts[i + 1] += 1
    if rule == "dfa":  # the output error broadcast from the last worker
        counts[-1] += k - 1
        for i in range(k - 1):
            counts[i] += 1
    return counts


@dataclass(frozen=True)
class Prediction:
    """A predicted epoch: ``seconds``, the per-worker cycles, the groups, and what bounds it."""

    rule: str
    workers: int
    pipelined: bool
    seconds: float
    cycles: tuple
    groups: tuple
    bottleneck: str


def predict_epoch(rule: str, costs: Sequence[BlockCost], *, workers: int = 1, n_batches: int = 1,
                  comm: float = 0.0, pipelined: bool = True, groups=None) -> Prediction:
    r"""Predicted time of ``n_batches`` batches of ``rule`` on ``workers`` workers (see the module table).

    Parameters
    ----------
    rule : {"bp", "dfa", "dgl", "async-dgl", "overlap", "sg", "cdni", "greedy"}
    costs : sequence of BlockCost
        One per block, in order.
    workers : int
        ``K``, at most the number of blocks.
    n_batches : int
        Batches per epoch.
    comm : float
        Seconds per message between workers.
    pipelined : bool
        BP and DFA: pipelined with stale updates (1F1B) or locked batch by batch.
        The other rules always pipeline (they are not backward-locked, or, for
        ``overlap``, one step stale).
    groups : list of lists, optional
        Blocks of each worker (default :func:`assign_blocks` balanced by work).

    Raises
    ------
    ValueError
        Unknown rule, non-positive counts, negative ``comm``, no costs.
    """
    rule = check_model_rule(rule)
    costs = list(costs)
    if not costs or not all(isinstance(c, BlockCost) for c in costs):
        raise ValueError("costs must be a non-empty sequence of BlockCost, one per block")
    n_batches = _check_positive_int("n_batches", n_batches)
    workers = _check_positive_int("workers", workers)
    if not (np.isfinite(comm) and comm >= 0):
        raise ValueError(f"comm must be a non-negative finite number of seconds, got {comm!r}")
    work = np.array([c.work(rule) for c in costs])
    if groups is None:
        groups = assign_blocks(len(costs), workers, work)
    groups = [list(g) for g in groups]
    if len(groups) != workers or any(not g for g in groups) or \
            sorted(j for g in groups for j in g) != list(range(len(costs))):
        raise ValueError(f"groups must split the {len(costs)} blocks among {workers} workers, got {groups}")
    k = workers
    if rule == "greedy":
        total, cycles_all = 0.0, []
        for stage in range(len(costs)):
            stage_costs = [BlockCost(c.forward, 0.0, 0.0, 0.0) for c in costs[:stage]] + [costs[stage]]
            sub = [[j for j in g if j <= stage] for g in groups]
            sub = [g for g in sub if g]
            p = predict_epoch("dgl", stage_costs, workers=len(sub), n_batches=n_batches, comm=comm, groups=sub)
            total += p.seconds
            cycles_all.append(p.cycles)
        return Prediction(rule, k, True, total, tuple(cycles_all), tuple(map(tuple, groups)), "stages")
    messages = _messages(groups, rule, pipelined)
    cycles = np.array([work[g].sum() + m * comm for g, m in zip(groups, messages)])
    if k == 1:
        seconds, bound = n_batches * float(work.sum()), "sequential"
    elif rule == "bp" and not pipelined:
        seconds, bound = n_batches * (float(work.sum()) + 2 * (k - 1) * comm), "locked"
    elif rule == "dfa" and not pipelined:
        fwd = sum(c.forward for c in costs)
        updates = max(sum(costs[j].backward + costs[j].update for j in g) for g in groups)
        seconds, bound = n_batches * (fwd + k * comm + updates), "locked"
    elif rule == "overlap" and not pipelined:
        nxt = [costs[g[0]].forward + costs[g[0]].head + costs[g[0]].backward for g in groups[1:]]
        coupled = cycles + np.array(nxt + [0.0])
        seconds = (n_batches - 1) * float(coupled.max()) + float(cycles.sum())
        bound = f"worker {int(coupled.argmax())} waiting for the block above"
    elif rule == "async-dgl":
        fill = sum(sum(costs[j].forward for j in g) for g in groups[:-1])
        seconds, bound = n_batches * float(cycles.max()) + fill, f"worker {int(cycles.argmax())}"
    else:
        seconds = (n_batches - 1) * float(cycles.max()) + float(cycles.sum())
        bound = f"worker {int(cycles.argmax())}"
    return Prediction(rule, k, pipelined, float(seconds), tuple(float(c) for c in cycles),
                      tuple(map(tuple, groups)), bound)


def speedup_curve(rule: str, block_cost: BlockCost, workers: Sequence[int], *, n_batches: int = 100,
                  comm: float = 0.0, pipelined: bool = True, baseline: BlockCost | None = None) -> np.ndarray:
    r"""Speedup over sequential BP of ``rule`` on a network of ``K`` equal blocks, for each ``K`` in ``workers``.

    The network has as many blocks as workers (the extrapolation: deeper
    networks split into ``K`` equal blocks, each costing ``block_cost``; BP's
    blocks cost ``baseline``, default ``block_cost`` without its head). Returns
    :math:`T_{BP,seq}(K) / T_{rule}(K)`.
    """
    baseline = BlockCost(block_cost.forward, block_cost.backward, block_cost.update) if baseline is None else baseline
    out = []
    for k in workers:
        k = _check_positive_int("workers", k)
        seq = predict_epoch("bp", [baseline] * k, workers=1, n_batches=n_batches).seconds
        par = predict_epoch(rule, [block_cost] * k, workers=k, n_batches=n_batches, comm=comm,
                            pipelined=pipelined).seconds
        out.append(seq / par)
    return np.array(out)


# --- measuring costs on this machine -------------------------------------------------------------------

def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_block_costs(net, x, y, *, objective: str = "supervised", repeats: int = 5, warmup: int = 1,
                        blas_threads: int | None = 1, temperature: float = 0.5,
                        input_signal: bool = False) -> list[BlockCost]:
    r"""Time each block's forward, head, backward and update on one batch (median of ``repeats``).

    ``net`` is a :class:`sim.local.BlockNetwork`; ``x`` the batch input (device
    array), ``y`` its targets. ``head`` is the head's forward, objective and
    backward (zero for the last block). ``backward`` includes the signal to the
    block's input (blocks after the first) when ``input_signal`` (BP and
    overlap need it, DGL and DFA do not). BLAS is limited to ``blas_threads``
    threads while timing, as in the runtime's workers.
    """
    from .local import SyntheticGradientModule, local_step, objective_signal
    from .parallel import blas_limit

    repeats = _check_positive_int("repeats", repeats)
    costs = []
    with blas_limit(blas_threads):
        h = x
        for j, (block, params) in enumerate(zip(net.blocks, net.params)):
            head, head_params = net.heads[j], net.head_params[j]
            synthetic = isinstance(head, SyntheticGradientModule)
            for _ in range(warmup):
                if not synthetic:
                    local_step(block, params, head, head_params, h, y, objective=objective, loss=net.loss,
                               temperature=temperature)
            out, cache = block.forward(params, h)
            forward = _median_seconds(lambda: block.forward(params, h), repeats)
            signal = out * 0 + 1
            backward = _median_seconds(lambda: block.backward(params, cache, signal,
                                                              input_signal=input_signal and j > 0), repeats)
            grads, _ = block.backward(params, cache, signal, input_signal=False)
            update = _median_seconds(lambda: tuple(p - 0.01 * g for p, g in zip(params, grads)), repeats)
            head_cost = 0.0
            if synthetic:  # the module's prediction, regression and update
                def run_module():
                    head.predict(head_params, out, y)
                    hg, _ = head.regress(head_params, out, y, signal)
                    return tuple(p - 0.01 * g for p, g in zip(head_params, hg))

                head_cost = _median_seconds(run_module, repeats)
            elif head is not None:
                def run_head():
                    z, head_cache = head.forward(head_params, out)
                    _, sz = objective_signal(objective, z, y, loss=net.loss, temperature=temperature)
                    hg, _ = head.backward(head_params, head_cache, sz, input_signal=True)
                    return tuple(p - 0.01 * g for p, g in zip(head_params, hg))

                head_cost = _median_seconds(run_head, repeats)
            costs.append(BlockCost(forward, backward, update, head_cost))
            h = out
    return costs


def measure_message_cost(repeats: int = 2000) -> float:
    """Seconds of one hand-over through a :class:`queue.Queue` between two threads (half a round trip)."""
    import queue
    import threading

    repeats = _check_positive_int("repeats", repeats)
    ping, pong = queue.Queue(1), queue.Queue(1)

    def echo():
        for _ in range(repeats):
            pong.put(ping.get())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    start = time.perf_counter()
    for i in range(repeats):
        ping.put(i)
        pong.get()
    seconds = time.perf_counter() - start
    thread.join(timeout=5)
    return seconds / (2 * repeats)


def measure_parallel_ceiling(n: int = 512, batch: int = 256, repeats: int = 20, workers: int = 2,
                             blas_threads: int | None = 1) -> dict:
    r"""The speedup this machine gives *now* to ``workers`` threads of independent matrix products.

    Each of ``workers`` threads multiplies a ``(batch, n)`` by an ``(n, n)``
    matrix ``repeats`` times (BLAS limited as in the runtime); the same total
    work in one thread is the reference. The ratio is the ceiling of any
    layer-parallel speedup at this moment: below ``workers`` when the cores are
    shared with other jobs or memory bandwidth is the limit.

    Returns ``{"sequential": s, "parallel": s, "ceiling": ratio, "workers": K}``.
    """
    import threading

    from .parallel import blas_limit

    n, batch, repeats, workers = (_check_positive_int(k, v) for k, v in
                                  (("n", n), ("batch", batch), ("repeats", repeats), ("workers", workers)))
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(batch, n)) for _ in range(workers)]
    b = [rng.normal(size=(n, n)) / np.sqrt(n) for _ in range(workers)]

    def work(i):
        for _ in range(repeats):
            a[i] @ b[i]

    with blas_limit(blas_threads):
        work(0)
        start = time.perf_counter()
        for i in range(workers):
            work(i)
        sequential = time.perf_counter() - start
        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        parallel = time.perf_counter() - start
    return {"sequential": sequential, "parallel": parallel, "ceiling": sequential / parallel, "workers": workers}
