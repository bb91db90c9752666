"""Experiment ``layer-parallel``: local learning on real parallel workers against back-propagation.

For an MLP on a teacher classification task and a patch network on the
hierarchical digits, every rule trains from the same initialisation on the
same batches, once with the sequential schedule (one worker, the calling
thread) and once with the layer-parallel runtime (one thread per block group,
BLAS limited to one thread each; :mod:`sim.parallel`). Reported per rule:
epoch time, test accuracy, time to a target accuracy (a fraction of what
sequential BP reaches), and the speedup over sequential BP on the same
machine in the same run. A compute-bound two-block MLP measures the
throughput of parallel DGL against its own sequential schedule, and the
schedule model (:mod:`sim.schedule`), fed with per-block costs measured here,
is compared with every measured epoch time and extrapolated to ``K`` workers.

DNI and cDNI run with linear synthetic-gradient modules between blocks
(:class:`sim.local.SyntheticGradientModule`, the modules of :mod:`sim.synthetic`
at block level), trained at their own rate ``sg_lr``.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import to_device
from ..data import teacher_classification
from ..data.tasks import Dataset
from ..divergence import divergence_message
from ..lazy import lazy_callable
from ..local import (
    BLOCK_RULES,
    attach_synthetic_gradients,
    draw_block_feedback,
    make_block_network,
    make_patch_block_network,
)
from ..parallel import BatchPlan, train_blocks
from ..plots import legend_outside, new_figure
from ..schedule import (
    BlockCost,
    measure_block_costs,
    measure_message_cost,
    measure_parallel_ceiling,
    predict_epoch,
    speedup_curve,
)
from ..settings import choice, integer, list_of, real, setting_error
from . import Context, ExperimentResult, every_member_diverged, experiment, report_all_diverged

# matplotlib is imported at the first figure (sim.lazy: bbp list starts fast)
MaxNLocator = lazy_callable("matplotlib.ticker", "MaxNLocator")
NullFormatter = lazy_callable("matplotlib.ticker", "NullFormatter")

NETWORKS = ("mlp", "patch")
#: Rules whose blocks pass a signal to their input (their backward includes it).
SIGNAL_RULES = ("bp", "overlap", "sg", "cdni")
MODEL_CURVES = (("bp", False, "BP, locked"), ("bp", True, "BP, pipelined (stale)"), ("dfa", True, "DFA, pipelined"),
                ("dgl", True, "DGL"), ("async-dgl", True, "async DGL"), ("overlap", True, "overlap (LoCo)"),
                ("sg", True, "SG (DNI)"))


#: The patch network reads 27 x 27 digits through 3 x 3 patches: at most three patch layers.
MAX_PATCH_LAYERS = 3
_POSITIVE_INT, _POSITIVE = integer(1), real(0, lo_open=True)
SCHEMA = {
    "networks": list_of(choice(*NETWORKS), max_len=len(NETWORKS), distinct=True),
    "rules": list_of(choice(*BLOCK_RULES), max_len=len(BLOCK_RULES), distinct=True),
    "epochs": _POSITIVE_INT, "sg_lr": _POSITIVE, "batch_size": _POSITIVE_INT, "lr": _POSITIVE, "patch_lr": _POSITIVE,
    "n_train": _POSITIVE_INT, "n_test": _POSITIVE_INT, "n_classes": integer(2), "mlp_inputs": _POSITIVE_INT,
    "mlp_hidden": _POSITIVE_INT, "mlp_depth": _POSITIVE_INT, "mlp_layers_per_block": list_of(_POSITIVE_INT, max_len=64),
    "patch_widths": list_of(_POSITIVE_INT, max_len=MAX_PATCH_LAYERS),
    "patch_layers_per_block": list_of(_POSITIVE_INT, max_len=MAX_PATCH_LAYERS), "workers": _POSITIVE_INT,
    "buffer_size": _POSITIVE_INT, "dfa_feedback_scale": _POSITIVE, "target_fraction": real(0, 1, lo_open=True),
    "evaluations_per_epoch": _POSITIVE_INT, "repeats": _POSITIVE_INT, "throughput_width": _POSITIVE_INT,
    "throughput_batch": _POSITIVE_INT, "throughput_batches": _POSITIVE_INT, "extrapolate_workers": _POSITIVE_INT,
    "schedule_check_blocks": list_of(_POSITIVE_INT, max_len=16), "schedule_check_batches": _POSITIVE_INT,
    "sleep_seconds": real(0, 1),
}


def _check_settings(settings: dict) -> None:
    """Constraints between settings (each setting's own type and range is in :data:`SCHEMA`)."""
    if settings["batch_size"] > settings["n_train"]:
        raise setting_error("batch_size", settings["batch_size"], f"is larger than n_train ({settings['n_train']})",
                            f"an integer from 1 to n_train = {settings['n_train']}")
    for key, layers, what in (("mlp_layers_per_block", settings["mlp_depth"] + 1, "mlp_depth + 1"),
                              ("patch_layers_per_block", len(settings["patch_widths"]), "len(patch_widths)")):
        if sum(settings[key]) != layers:
            raise setting_error(key, settings[key], f"sums to {sum(settings[key])}, not to the {layers} layers",
                                f"block sizes summing to {what} = {layers}")


def _mlp_problem(settings: dict, ctx: Context):
    n_train, n_test = settings["n_train"], settings["n_test"]
    full = teacher_classification(n_train + n_test, seed=ctx.seed, n_inputs=settings["mlp_inputs"],
                                  n_hidden=64, n_classes=settings["n_classes"], gain=3.0)
    train, test = full.split(n_train)
    hidden = settings["mlp_hidden"]
    sizes = [settings["mlp_inputs"], *([hidden] * settings["mlp_depth"]), settings["n_classes"]]

    def build():
        return make_block_network(sizes, ctx.n_seeds, layers_per_block=settings["mlp_layers_per_block"],
                                  seed=ctx.seed, activation="relu", head="linear", xp=ctx.xp, dtype=ctx.dtype)

    return train, test, build, settings["lr"]


def _patch_problem(settings: dict, ctx: Context):
    from ..data.hierarchical import digits

    n_train, n_test = settings["n_train"], settings["n_test"]
    sample = digits(n_train + n_test, seed=ctx.seed)
    data = sample.to_dataset()
    train, test = data.split(n_train)
    side = sample.grammar.image_size

    def build():
        return make_patch_block_network((side, side, 1), settings["patch_widths"], sample.grammar.n_classes,
                                        ctx.n_seeds, patch_size=sample.grammar.patch_size,
                                        layers_per_block=settings["patch_layers_per_block"], seed=ctx.seed,
                                        head="linear", xp=ctx.xp, dtype=ctx.dtype)

    return train, test, build, settings["patch_lr"]


def _time_to(seconds, accuracy, target):
    hit = np.nonzero(np.asarray(accuracy) >= target)[0]
    return float(seconds[hit[0]]) if hit.size else None


def _finite_mean(values) -> float:
    """Mean of the finite entries (``nan`` when every member diverged), without a warning."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _network_for(build, rule: str):
    net = build()
    if BLOCK_RULES[rule].feedback == "synthetic":
        net = attach_synthetic_gradients(net, conditioned=rule == "cdni")
    return net


def _run_rule(build, train: Dataset, x_test, y_test, rule: str, *, workers: int, pipelined: bool, lr, settings,
              ctx: Context) -> dict:
    bpe = train.n_samples // settings["batch_size"]
    steps = settings["epochs"] * bpe
    every = max(1, bpe // settings["evaluations_per_epoch"])
    best = None
    for _ in range(settings["repeats"]):
        net = _network_for(build, rule)
        plan = BatchPlan(train, settings["batch_size"], steps, seed=ctx.seed)
        feedback = (draw_block_feedback(net, seed=ctx.seed, scale=settings["dfa_feedback_scale"])
                    if rule == "dfa" else None)
        res = train_blocks(net, plan, rule=rule, lr=lr, workers=workers, pipelined=pipelined,
                           buffer_size=settings["buffer_size"], snapshot_every=every, feedback=feedback,
                           head_lr=settings["sg_lr"] if BLOCK_RULES[rule].feedback == "synthetic" else None)
        if best is None or res.seconds < best.seconds:
            best = res
    res = best
    count = res.n_snapshots()
    accuracy = np.array([res.accuracy(x_test, y_test, snapshot=i) for i in range(count)])  # (T, E), nan: diverged
    seconds = res.snapshot_seconds()
    epochs = steps / bpe if rule != "greedy" else steps * len(res.delays) / bpe
    return {"seconds": res.seconds, "epoch_seconds": res.seconds / epochs, "batches": steps, "curve_seconds": seconds,
            "curve_accuracy": accuracy, "final_accuracy": _finite_mean(res.accuracy(x_test, y_test)),
            "diverged": res.diverged, "all_diverged": every_member_diverged([res]),
            "busy": res.busy, "waiting": res.waiting, "updates": res.updates, "workers": res.workers,
            "groups": res.groups,
            "buffer_max": res.buffer_max, "delays": list(res.delays)}


def calibrate(costs, rule: str, per_batch) -> list[BlockCost]:
    """Scale isolated per-block costs so that each block's work under ``rule`` is its measured ``per_batch`` seconds."""
    out = []
    for cost, seconds in zip(costs, per_batch):
        factor = seconds / max(cost.work(rule), 1e-12)
        out.append(BlockCost(cost.forward * factor, cost.backward * factor, cost.update * factor, cost.head * factor))
    return out


def _model_check(build, train: Dataset, rules_runs: dict, settings: dict, comm: float):
    """Predict every measured epoch time with the schedule model.

    The model's per-block costs are the busy seconds per batch of each block in
    the rule's own sequential run, split into forward / head / backward / update
    in the proportions timed on one isolated batch (:func:`calibrate`): the
    check is whether the schedule (pipelining, locking, messages) predicts the
    parallel runs from what the blocks cost alone.
    """
    net = build()
    xp = _namespace_of(net)
    dtype = str(net.params[0][0].dtype).split(".")[-1]
    plan = BatchPlan(train, settings["batch_size"], 1, seed=0)
    x, y = plan.host_batch(0)
    x, y = to_device(x, xp, dtype), to_device(y, xp, dtype)
    plain = measure_block_costs(net, x, y, input_signal=False)
    signal = measure_block_costs(net, x, y, input_signal=True)
    synthetic = {rule: measure_block_costs(_network_for(build, rule), x, y, input_signal=True)
                 for rule in ("sg", "cdni") if (rule, "sequential") in rules_runs}
    bpe = train.n_samples // settings["batch_size"]
    rows = []
    for (rule, mode), run in rules_runs.items():
        costs = synthetic.get(rule, signal if rule in SIGNAL_RULES else plain)
        seq = rules_runs.get((rule, "sequential"))
        if seq is not None:
            costs = calibrate(costs, rule, [b / seq["batches"] for b in seq["busy"]])
        pipelined = mode != "parallel (locked)"
        pred = predict_epoch(rule, costs, workers=run["workers"], n_batches=bpe, comm=comm, pipelined=pipelined,
                             groups=run["groups"])
        rows.append({"rule": rule, "mode": mode, "workers": run["workers"], "predicted_epoch_seconds": pred.seconds,
                     "measured_epoch_seconds": run["epoch_seconds"],
                     "measured_over_predicted": run["epoch_seconds"] / pred.seconds})
    return rows, plain, signal


def _load():
    """The 1-minute load average (other jobs share the cores: speedups are only meaningful when it is low)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - platforms without it
        return None


def _namespace_of(net):
    from ..backend import namespace

    return namespace(*net.params[0])


def _throughput(settings: dict, ctx: Context, comm: float) -> dict:
    """2-block DGL (and BP) on a compute-bound MLP: parallel against its own sequential schedule."""
    width, batch, n_batches = settings["throughput_width"], settings["throughput_batch"], settings["throughput_batches"]
    rng = np.random.default_rng(ctx.seed)
    x = rng.normal(size=(batch * n_batches, width))
    y = np.eye(10)[rng.integers(0, 10, size=batch * n_batches)]
    data = Dataset(x, y, "classification")
    sizes = [width, width, width, 10]
    out = {"width": width, "batch": batch, "batches": n_batches, "members": 1, "runs": {}}

    def build():
        return make_block_network(sizes, 1, layers_per_block=[1, 2], seed=ctx.seed, activation="relu",
                                  xp=ctx.xp, dtype=ctx.dtype)

    ceilings = [measure_parallel_ceiling(width, batch, max(2, n_batches // 2))["ceiling"]]
    for rule, pipelined in (("dgl", True), ("bp", False), ("bp", True)):
        times, busy = {}, {}
        for workers in (1, 2):
            best = None
            for _ in range(settings["repeats"] + 1):
                res = train_blocks(build(), BatchPlan(data, batch, n_batches, seed=ctx.seed), rule=rule, lr=1e-3,
                                   workers=workers, pipelined=pipelined)
                if best is None or res.seconds < best.seconds:
                    best = res
            times[workers], busy[workers] = best.seconds, best.busy
        if rule == "dgl":
            dgl_busy = [b / n_batches for b in busy[1]]
        name = rule if rule == "dgl" else f"bp ({'pipelined' if pipelined else 'locked'})"
        out["runs"][name] = {"sequential_seconds": times[1], "parallel_seconds": times[2],
                             "throughput_ratio": times[1] / times[2]}
    ceilings.append(measure_parallel_ceiling(width, batch, max(2, n_batches // 2))["ceiling"])
    out["machine_ceiling"] = {"before": ceilings[0], "after": ceilings[1],
                              "note": "two threads of independent matmuls of the block size against one thread: "
                                      "the most any 2-worker run can gain on this machine at this moment"}
    out["dgl_fraction_of_ceiling"] = out["runs"]["dgl"]["throughput_ratio"] / max(np.mean(ceilings), 1e-9)
    net = build()
    xb = to_device(x[:batch], ctx.xp, ctx.dtype)
    yb = to_device(y[:batch], ctx.xp, ctx.dtype)
    costs = calibrate(measure_block_costs(net, xb, yb), "dgl", dgl_busy)
    pred_seq = predict_epoch("dgl", costs, workers=1, n_batches=n_batches, comm=comm).seconds
    pred_par = predict_epoch("dgl", costs, workers=2, n_batches=n_batches, comm=comm).seconds
    out["model"] = {"dgl_predicted_ratio": pred_seq / pred_par, "dgl_predicted_sequential": pred_seq,
                    "dgl_predicted_parallel": pred_par, "dgl_measured_parallel": out["runs"]["dgl"]["parallel_seconds"],
                    "block_costs": [c.__dict__ for c in costs]}
    out["block_costs"] = costs
    return out


SCHEDULE_CHECK = (("dgl", True), ("async-dgl", True), ("bp", False), ("bp", True), ("dfa", False), ("dfa", True),
                  ("overlap", False), ("overlap", True), ("sg", True))


def _schedule_check(settings: dict, ctx: Context) -> list[dict]:
    """Runtime against schedule model on blocks of simulated cost (a sleep), free of competition for cores.

    Every block sleeps ``sleep_seconds`` inside each forward step (tiny
    arithmetic otherwise), so the schedule alone decides the time: pipelining,
    locking, the messages and the threads' hand-overs. The model gets each
    block's busy seconds per batch from the rule's sequential run.
    """
    rng = np.random.default_rng(ctx.seed)
    data = Dataset(rng.normal(size=(512, 8)), np.eye(4)[rng.integers(0, 4, 512)], "classification")
    n, pause = settings["schedule_check_batches"], settings["sleep_seconds"]
    rows = []
    for k in settings["schedule_check_blocks"]:
        for rule, pipelined in SCHEDULE_CHECK:
            def build():
                return make_block_network([8] * k + [4], 1, seed=ctx.seed, xp=ctx.xp, dtype=ctx.dtype)

            seconds, busy = {}, None
            for workers in (1, k):
                res = train_blocks(_network_for(build, rule), BatchPlan(data, 16, n, seed=ctx.seed), rule=rule,
                                   lr=0.01, workers=workers, pipelined=pipelined, block_delays=[pause] * k)
                seconds[workers] = res.seconds
                if workers == 1:
                    busy = [b / n for b in res.busy]
            costs = [BlockCost(b, 0.0) for b in busy]
            pred_seq = predict_epoch(rule, costs, workers=1, n_batches=n, pipelined=pipelined).seconds
            pred_par = predict_epoch(rule, costs, workers=k, n_batches=n, pipelined=pipelined).seconds
            rows.append({"blocks": k, "rule": rule, "pipelined": pipelined, "sequential_seconds": seconds[1],
                         "parallel_seconds": seconds[k], "measured_speedup": seconds[1] / seconds[k],
                         "predicted_speedup": pred_seq / pred_par,
                         "parallel_measured_over_predicted": seconds[k] / pred_par})
    return rows


@experiment(
    "layer-parallel",
    title="Local learning in parallel: BP vs DGL, async DGL, overlap, DFA, DNI, cDNI, sequential and on workers",
    description="Time to target accuracy and epoch time of each rule on an MLP and a patch network (hierarchical "
                "digits), with the sequential schedule and the layer-parallel runtime (threads, BLAS limited to "
                "one thread each); speedups over sequential BP; 2-block DGL throughput against its own sequential "
                "schedule on a compute-bound size; the schedule model checked against every measurement and "
                "extrapolated to K workers.",
    defaults={"networks": list(NETWORKS), "rules": ["bp", "dgl", "async-dgl", "overlap", "dfa", "sg", "cdni"],
              "epochs": 4, "sg_lr": 0.05,
              "batch_size": 128, "lr": 0.1, "patch_lr": 0.1, "n_train": 8192, "n_test": 2048, "n_classes": 5,
              "mlp_inputs": 64, "mlp_hidden": 512, "mlp_depth": 3, "mlp_layers_per_block": [2, 2],
              "patch_widths": [32, 128, 256], "patch_layers_per_block": [2, 1], "workers": 2, "buffer_size": 2,
              "dfa_feedback_scale": 0.1,
              "target_fraction": 0.9, "evaluations_per_epoch": 4, "repeats": 1, "throughput_width": 1024,
              "throughput_batch": 256, "throughput_batches": 40, "extrapolate_workers": 16,
              "schedule_check_blocks": [2, 4], "schedule_check_batches": 24, "sleep_seconds": 0.004},
    quick={"epochs": 2, "batch_size": 64, "n_train": 1024, "n_test": 512, "mlp_hidden": 128,
           "patch_widths": [8, 32, 64], "throughput_width": 384, "throughput_batch": 128, "throughput_batches": 12,
           "evaluations_per_epoch": 2, "extrapolate_workers": 8, "schedule_check_batches": 8,
           "sleep_seconds": 0.002},
    schema=SCHEMA,
    checks=_check_settings,
    default_seeds=2,
)
def layer_parallel(settings: dict, ctx: Context) -> ExperimentResult:
    comm = measure_message_cost(200 if ctx.quick else 2000)
    metrics = {"machine_cpus": os.cpu_count(), "load_average_at_start": _load(), "message_seconds": comm,
               "networks": {}}
    arrays, model_rows = {}, []
    diverged, every = [], True
    fig_acc, acc_axes = new_figure(len(settings["networks"]))
    fig_speed, speed_axes = new_figure(len(settings["networks"]))
    problems = {"mlp": _mlp_problem, "patch": _patch_problem}
    for ax, network in zip(acc_axes, settings["networks"]):
        train, test, build, lr = problems[network](settings, ctx)
        xp = ctx.xp
        x_test, y_test = to_device(test.x, xp, ctx.dtype), to_device(test.y, xp, ctx.dtype)
        k = build().n_blocks
        workers = min(int(settings["workers"]), k)
        runs = {}
        for rule in settings["rules"]:
            modes = [("sequential", 1, True)]
            if rule != "greedy":
                modes.append(("parallel", workers, True))
            if rule == "bp":
                modes.append(("parallel (locked)", workers, False))
            for mode, w, pipelined in modes:
                runs[(rule, mode)] = _run_rule(build, train, x_test, y_test, rule, workers=w, pipelined=pipelined,
                                               lr=lr, settings=settings, ctx=ctx)
        base = runs.get(("bp", "sequential"))
        target = settings["target_fraction"] * (base["final_accuracy"] if base else
                                                max(r["final_accuracy"] for r in runs.values()))
        net_metrics = {"blocks": k, "workers": workers, "target_accuracy": target, "rules": {}}
        base_time = base["epoch_seconds"] if base else None
        base_ttt = _time_to(base["curve_seconds"], base["curve_accuracy"].mean(axis=1), target) if base else None
        labels, speedups = [], []
        for (rule, mode), run in runs.items():
            diverged += [divergence_message(f"{network} {rule} ({mode})", d) for d in run["diverged"]]
            every = every and run["all_diverged"]
            mean_acc = np.array([_finite_mean(a) for a in run["curve_accuracy"]])
            ttt = _time_to(run["curve_seconds"], mean_acc, target)
            entry = {"epoch_seconds": run["epoch_seconds"], "final_test_accuracy": run["final_accuracy"],
                     "time_to_target_seconds": ttt, "busy_seconds": run["busy"], "waiting_seconds": run["waiting"],
                     "updates": run["updates"], "delays": run["delays"], "workers": run["workers"]}
            if base_time:
                entry["epoch_speedup_over_sequential_bp"] = base_time / run["epoch_seconds"]
            if base_ttt and ttt:
                entry["time_to_target_speedup_over_sequential_bp"] = base_ttt / ttt
            if run["buffer_max"]:
                entry["buffer_max"] = run["buffer_max"]
            net_metrics["rules"].setdefault(rule, {})[mode] = entry
            style = "--" if mode == "sequential" else (":" if "locked" in mode else "-")
            index = settings["rules"].index(rule)  # a colour and a marker per rule (some curves coincide)
            ax.plot(run["curve_seconds"], mean_acc, style, color=f"C{index % 10}", marker="osD^vPX*"[index % 8],
                    ms=3, label=f"{rule} ({mode})")
            key = f"{network}_{rule}_{mode.replace(' ', '_').replace('(', '').replace(')', '')}"
            arrays[f"{key}_seconds"] = run["curve_seconds"]
            arrays[f"{key}_accuracy"] = run["curve_accuracy"]
            labels.append(f"{rule}\n{mode}")
            speedups.append(entry.get("epoch_speedup_over_sequential_bp", np.nan))
        ax.axhline(target, color="grey", lw=0.8, ls="--", label="target accuracy")
        ax.set(xlabel="wall-clock seconds", ylabel="test accuracy (mean over seeds)",
               title=f"{network}: accuracy against time")
        ax.xaxis.set_major_locator(MaxNLocator(4))  # wall-clock ticks: few, so that they never collide
        legend_outside(ax, fontsize=6, title="rule (schedule)", title_fontsize=6)
        rows, plain, signal = _model_check(build, train, runs, settings, comm)
        for row in rows:
            row["network"] = network
        model_rows += rows
        net_metrics["block_costs"] = [c.__dict__ for c in plain]
        net_metrics["block_costs_with_input_signal"] = [c.__dict__ for c in signal]
        metrics["networks"][network] = net_metrics
        sax = speed_axes[settings["networks"].index(network)]
        sequential = np.array(["sequential" in lab for lab in labels])
        positions, heights = np.arange(len(labels)), np.asarray(speedups, dtype=float)
        sax.bar(positions[sequential], heights[sequential], color="tab:grey", label="sequential schedule (1 worker)")
        sax.bar(positions[~sequential], heights[~sequential], color="tab:blue", label=f"on {workers} workers")
        sax.axhline(1.0, color="black", lw=0.8)
        sax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
        sax.set(xlabel="rule and schedule", ylabel="epoch-time speedup over sequential BP",
                title=f"{network} ({workers} workers)")
        sax.legend(fontsize=6)
    thr = _throughput(settings, ctx, comm)
    check_rows = _schedule_check(settings, ctx)
    metrics["schedule_check_simulated_costs"] = check_rows
    metrics["load_average_at_end"] = _load()
    block_costs = thr.pop("block_costs")
    metrics["throughput"] = thr
    metrics["schedule_model"] = model_rows
    ratios = np.array([r["measured_over_predicted"] for r in model_rows if r["mode"] != "sequential"])
    metrics["schedule_model_summary"] = {
        "parallel_runs_median_measured_over_predicted": float(np.median(ratios)),
        "parallel_runs_max_abs_log2_error": float(np.max(np.abs(np.log2(ratios)))),
        "note": "per-block costs calibrated on each rule's sequential run; the parallel runs are predictions"}
    # the schedule model: predicted against measured, and extrapolated to K workers
    fig_model, (mx, sx, ex) = new_figure(3)
    pred = np.array([r["predicted_epoch_seconds"] for r in model_rows])
    meas = np.array([r["measured_epoch_seconds"] for r in model_rows])
    for mode, marker in (("sequential", "o"), ("parallel", "s"), ("parallel (locked)", "^")):
        sel = np.array([r["mode"] == mode for r in model_rows])
        if sel.any():
            mx.scatter(pred[sel], meas[sel], marker=marker, label=mode)
    lims = [min(pred.min(), meas.min()) * 0.8, max(pred.max(), meas.max()) * 1.25]
    mx.plot(lims, lims, color="grey", lw=0.8, label="measured = predicted")
    mx.set(xscale="log", yscale="log", xlabel="predicted epoch time (seconds)",
           ylabel="measured epoch time (seconds)", title="schedule model vs runtime")
    mx.xaxis.set_minor_formatter(NullFormatter())
    mx.yaxis.set_minor_formatter(NullFormatter())
    mx.legend(fontsize=7)
    pred_s = np.array([r["predicted_speedup"] for r in check_rows])
    meas_s = np.array([r["measured_speedup"] for r in check_rows])
    for k in settings["schedule_check_blocks"]:
        sel = np.array([r["blocks"] == k for r in check_rows])
        sx.scatter(pred_s[sel], meas_s[sel], label=f"{k} blocks on {k} workers (a point per rule)")
    top = max(pred_s.max(), meas_s.max()) * 1.1
    sx.plot([0, top], [0, top], color="grey", lw=0.8, label="measured = predicted")
    sx.set(xlabel="predicted speedup over own sequential schedule", ylabel="measured speedup",
           title="simulated block costs (sleep)")
    sx.legend(fontsize=7)
    ks = np.arange(1, settings["extrapolate_workers"] + 1)
    unit = BlockCost(block_costs[0].forward, block_costs[0].backward, block_costs[0].update, block_costs[0].head)
    bytes_per_message = 8 * settings["throughput_batch"] * settings["throughput_width"]
    cluster_comm = 50e-6 + bytes_per_message / 10e9
    extrapolation = {}
    for rule, pipelined, label in MODEL_CURVES:
        cost = unit
        if rule == "sg":  # a linear module on an n-wide output: a forward-sized product and a weight-gradient one
            cost = BlockCost(unit.forward, unit.backward, unit.update, 2 * unit.forward + unit.update)
        curve = speedup_curve(rule, cost, ks, n_batches=100, comm=comm, pipelined=pipelined, baseline=BlockCost(
            unit.forward, unit.backward, unit.update))
        far = speedup_curve(rule, cost, ks, n_batches=100, comm=cluster_comm, pipelined=pipelined,
                            baseline=BlockCost(unit.forward, unit.backward, unit.update))
        n_curve = len(extrapolation)  # a marker per curve: some coincide (DGL and overlap)
        line, = ex.plot(ks, curve, label=label, marker="osD^vPX*"[n_curve % 8], ms=3)
        ex.plot(ks, far, ls=":", color=line.get_color())
        extrapolation[label] = {"workers": ks.tolist(), "speedup_threads": curve.tolist(),
                                "speedup_cluster": far.tolist()}
        arrays[f"model_speedup_{rule}_{'pipelined' if pipelined else 'locked'}"] = curve
    ex.plot(ks, ks, color="grey", lw=0.8, ls="--", label="K (ideal)")
    ex.plot([], [], ":", color="k", label="dotted: over cluster links")
    ex.set(xlabel="workers K (= blocks)", ylabel="speedup over sequential BP", title="model: K equal blocks")
    legend_outside(ex, fontsize=6)
    metrics["extrapolation"] = {"block_cost": unit.__dict__, "thread_message_seconds": comm,
                                "cluster_message_seconds": cluster_comm, "curves": extrapolation}
    parts = []
    for network, nm in metrics["networks"].items():
        for rule, modes in nm["rules"].items():
            par = modes.get("parallel")
            if par and "epoch_speedup_over_sequential_bp" in par:
                parts.append(f"{network}/{rule} x{par['epoch_speedup_over_sequential_bp']:.2f}")
    dgl = thr["runs"]["dgl"]
    ceiling = np.mean([thr["machine_ceiling"]["before"], thr["machine_ceiling"]["after"]])
    summary = (f"2-block DGL on width {thr['width']}: parallel/sequential throughput x{dgl['throughput_ratio']:.2f} "
               f"(model x{thr['model']['dgl_predicted_ratio']:.2f}; this machine's 2-thread ceiling now "
               f"x{ceiling:.2f}) on {os.cpu_count()} CPUs; "
               f"epoch speedups over sequential BP: {', '.join(parts)}; schedule model, parallel runs, "
               f"measured/predicted median "
               f"{metrics['schedule_model_summary']['parallel_runs_median_measured_over_predicted']:.2f}; "
               f"load average {metrics['load_average_at_start']} -> {metrics['load_average_at_end']}")
    figures = {"accuracy_vs_time": fig_acc, "speedups": fig_speed, "schedule_model": fig_model}
    return report_all_diverged(ExperimentResult(metrics, arrays, figures, summary, diverged), every)
