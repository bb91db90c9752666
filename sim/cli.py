"""The ``bbp`` command line: ``list``, ``run``, ``rerun``, ``verify``, ``bench``, ``data`` and the sweeps
(``sweep``, ``sweep-status``, ``sweep-plot``).

This is the shell: it is the only place that sees both :mod:`sim` and
:mod:`theory`. Bad input, and an output path that cannot be written, end
with a message on stderr and exit status 2 before any compute; ``verify``
exits 1 when a claim fails; ``run`` exits 3 when every member diverged.
SIGINT and SIGTERM stop a command within a second with one line, exit
status 130 or 143, after writing what it has (:mod:`sim.interrupt`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .backend import BACKENDS, DTYPES, tune_allocator

THEORY_EXPERIMENTS = ("theory.experiments",)


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _experiments():
    from .experiments import load_experiments

    try:
        return load_experiments(THEORY_EXPERIMENTS)
    except ModuleNotFoundError as err:
        if err.name not in THEORY_EXPERIMENTS:
            raise
        return load_experiments()


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def cmd_list(args) -> int:
    from theory.claims import load_claims

    print("Experiments (bbp run NAME):")
    for exp in sorted(_experiments().values(), key=lambda e: e.name):
        print(f"  {exp.name:<22} {exp.title}")
    print("\nClaims (bbp verify --claim ID):")
    for c in load_claims().values():
        print(f"  {c.id:<34} [{c.source}] {c.statement}")
    return 0


def cmd_data_fetch(args) -> int:
    """``bbp data fetch NAME``: download (or copy ``--from``), verify and convert a real dataset (sim.data.real)."""
    from .data.real import fetch

    folder = fetch(args.name, root=args.dir, source_dir=args.source, log=lambda message: print(message, flush=True))
    print(f"{args.name}: ready in {folder}; load it with sim.data.load({args.name!r})")
    return 0


def cmd_data_list(args) -> int:
    """``bbp data list``: the real datasets, whether each is fetched, and where."""
    from .data.real import DATASETS, SPLITS, data_dir

    root = data_dir(args.dir)
    print(f"data directory: {root} (set BBP_DATA or --dir to change it)")
    for name, spec in DATASETS.items():
        ready = all((root / name / f"{key}.npy").exists() for key in SPLITS)
        print(f"  {name:<15} {'fetched' if ready else 'not fetched (bbp data fetch ' + name + ')':<46} {spec.title}")
    print(f"  {'mnist1d':<15} {'generated on demand (the mnist1d package)':<46} MNIST-1D (Greydanus 2020)")
    return 0


def _load_config(path: str) -> dict:
    import tomllib

    config_path = Path(path)
    if config_path.is_dir():
        config_path = config_path / "config.toml"
    try:
        config = tomllib.loads(config_path.read_text())
    except OSError as err:
        raise CLIError(f"cannot read the run configuration {config_path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise CLIError(f"{config_path} is not valid TOML: {err}") from None
    missing = [k for k in ("experiment", "seed", "seeds", "backend", "dtype", "settings") if k not in config]
    if missing:
        raise CLIError(f"{config_path} is not a run configuration (no {', '.join(missing)})")
    return config


def _run_request(args):
    """The experiment, context and settings a ``bbp run`` asks for, validated before anything is written."""
    from .experiments import Context, get_experiment, resolve_settings

    config = _load_config(args.config) if args.config else {}
    name = args.experiment or config.get("experiment")
    if name is None:
        raise CLIError("name an experiment (bbp list shows them) or give --config DIR/config.toml")
    if config and name != config["experiment"]:
        raise CLIError(f"experiment {name!r} differs from {config['experiment']!r} in {args.config}")
    _experiments()
    exp = get_experiment(name)

    def pick(value, key, default):
        return value if value is not None else config.get(key, default)

    n_seeds, seed = pick(args.seeds, "seeds", exp.default_seeds), pick(args.seed, "seed", 0)
    for flag, value, low in (("--seeds", n_seeds, 1), ("--seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise CLIError(f"{flag} must be an integer >= {low}, got {value!r}")
    ctx = Context(seed=seed, n_seeds=n_seeds, backend=pick(args.backend, "backend", "numpy"),
                  dtype=pick(args.dtype, "dtype", "float64"), quick=args.quick or bool(config.get("quick", False)))
    overrides = {**config.get("settings", {}), **_parse_sets(args.set)}
    settings = resolve_settings(exp, quick=ctx.quick, overrides=overrides)
    return exp, ctx, settings


def cmd_run(args) -> int:
    from . import interrupt, rundir
    from .experiments import run_experiment

    exp, ctx, settings = _run_request(args)
    run = rundir.RunDirectory.create(args.out, name=exp.name, overwrite=args.overwrite, argv=["bbp", *args.argv])
    out = run.path
    config = {"experiment": exp.name, "seed": ctx.seed, "seeds": ctx.n_seeds, "backend": ctx.backend,
              "dtype": ctx.dtype, "quick": ctx.quick, "settings": settings, "started": run.info["started"],
              "versions": rundir.package_versions()}
    with run, rundir.logging_to(out / rundir.LOG_FILE):
        try:
            result, seconds, files = rundir.fill_run(
                run, config, lambda: run_experiment(exp.name, context=ctx, overrides=settings)[1])
        except interrupt.RunInterrupted as stop:
            with interrupt.deferred():
                print(f"bbp run: interrupted by {stop.signal_name} after {run.info['seconds']:.1f} s; kept "
                      f"{run.info['partial_records']} partial record set(s) in {out}/ (status: interrupted)",
                      file=sys.stderr)
            return stop.exit_status
        except ValueError as err:  # found while running (a memory estimate, say): logged with the run
            print(f"bbp run: error: {err}", file=sys.stderr)
            return 2
        print(f"{exp.name}: {result.summary}")
        for line in result.diverged:
            print(f"warning: diverged: {line}", file=sys.stderr)
        print(f"wrote {out}/ ({', '.join(files)}) in {seconds:.1f} s")
        if result.all_diverged:
            run.set_status("failed", error=f"every member diverged: {'; '.join(result.diverged)}")
            print(f"bbp run: every member diverged; the run is marked failed in {out}/status.json", file=sys.stderr)
            return 3
        run.set_status("complete")
    return 0


def cmd_rerun(args) -> int:
    args.config, args.experiment = args.directory, None
    args.seeds = args.seed = args.backend = args.dtype = None
    args.quick, args.set = False, []
    return cmd_run(args)


def _format_verify_table(outcomes) -> str:
    rows = [("id", "source", "statement", "inst", "tasks", "members", "worst", "tol", "verdict")]
    for o in outcomes:
        statement = o.statement if len(o.statement) <= 60 else o.statement[:57] + "..."
        counts = tuple("-" if v is None else str(v) for v in (getattr(o, "tasks", None), getattr(o, "members", None)))
        rows.append((o.id, o.source, statement, str(o.instances), *counts, f"{o.max_violation:.3g}",
                     f"{o.tolerance:.3g}", o.status.upper()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from theory.claims import get_claims, verify

    from . import interrupt, rundir

    json_path = rundir.check_output_file(args.json, "--json") if args.json else None
    report_dir = rundir.check_output_dir(args.report, "--report") if args.report else None
    claims = get_claims(args.claim)  # unknown ids fail before any work
    outcomes = []

    def show(outcome):
        outcomes.append(outcome)
        extra = f"  ({outcome.message})" if outcome.message else ""
        print(f"  {outcome.status:<5} {outcome.id} [{outcome.seconds:.1f} s]{extra}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        verify([c.id for c in claims], quick=args.quick, seed=args.seed, progress=show)
    except interrupt.RunInterrupted as stop:
        with interrupt.deferred():
            if outcomes:
                print(_format_verify_table(outcomes))
            if json_path is not None:
                rundir.write_json(json_path, [o.to_json() for o in outcomes])
            kept = f"; wrote their outcomes to {json_path}" if json_path is not None else ""
            print(f"bbp verify: interrupted by {stop.signal_name} after {len(outcomes)} of {len(claims)} claims"
                  f"{kept}", file=sys.stderr)
        return stop.exit_status
    print(_format_verify_table(outcomes))
    n_pass = sum(o.status == "pass" for o in outcomes)
    print(f"\n{n_pass} of {len(outcomes)} claims pass in {time.perf_counter() - start:.1f} s")
    if json_path is not None:
        rundir.write_json(json_path, [o.to_json() for o in outcomes])
    if report_dir is not None:
        from theory.report import write_report

        path = write_report(outcomes, report_dir)
        print(f"wrote the report {path}")
    return 0 if n_pass == len(outcomes) else 1


def _bench_runner(args):
    """``(run, format)`` of the bench ``args`` ask for: the engine's, the sweep engine's or the convex solvers'."""
    if args.sweep:  # sim.sweep.bench, a separate path
        from .sweep.bench import format_sweep_bench, run_sweep_bench

        return (lambda: run_sweep_bench(quick=args.quick)), format_sweep_bench
    if getattr(args, "convex", False):  # theory.convex.bench: the shell sees both packages
        from theory.convex.bench import format_convex_bench, run_convex_bench

        from .backend import get_namespace

        return (lambda: run_convex_bench(quick=args.quick, xp=get_namespace(args.backend))), format_convex_bench
    from .bench import format_bench, run_bench

    return (lambda: run_bench(quick=args.quick, backend=args.backend, dtype=args.dtype)), format_bench


def cmd_bench(args) -> int:
    from . import interrupt, rundir

    json_path = rundir.check_output_file(args.json, "--json") if args.json else None
    run, format_results = _bench_runner(args)
    try:
        results = run()
    except interrupt.RunInterrupted as stop:
        print(f"bbp bench: interrupted by {stop.signal_name}; no figures written", file=sys.stderr)
        return stop.exit_status
    print(format_results(results))
    if json_path is not None:
        rundir.write_json(json_path, results)
    return 0


def _sweep_spec(args):
    """The sweep spec of ``bbp sweep``'s arguments (a ``--spec`` file, then the options given), and its ``--out``."""
    import tomllib

    from .sweep.spec import SweepSpec, parse_axes

    data, out = {}, args.out
    if args.spec:
        try:
            data = tomllib.loads(Path(args.spec).read_text())
        except OSError as err:
            raise CLIError(f"cannot read the sweep spec {args.spec}: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise CLIError(f"{args.spec} is not valid TOML: {err}") from None
        out = out or data.get("out")
    if args.experiment:
        if data.get("experiment", args.experiment) != args.experiment:
            raise CLIError(f"experiment {args.experiment!r} differs from {data['experiment']!r} in {args.spec}")
        data["experiment"] = args.experiment
    if "experiment" not in data:
        raise CLIError("name an experiment (bbp list shows them) or give --spec FILE")
    for key, pairs, flag in (("grid", args.grid, "--grid"), ("zip", args.zip, "--zip")):
        data[key] = {**data.get(key, {}), **parse_axes(pairs, flag)}
    data["settings"] = {**data.get("settings", {}), **_parse_sets(args.set)}
    for key in ("seeds", "seed", "backend", "dtype"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    data["quick"] = bool(args.quick or data.get("quick", False))
    data["figures"] = bool(args.figures or data.get("figures", False))
    return SweepSpec.from_dict(data, where=args.spec or "the sweep"), out


def cmd_sweep(args) -> int:
    from .sweep import run_sweep

    if args.serial and (args.scheduler or args.workers is not None):
        raise CLIError("--serial runs in this process; it takes neither --scheduler nor --workers")
    if args.scheduler and args.workers is not None:
        raise CLIError("--workers starts a local cluster; with --scheduler the cluster has its own workers")
    spec, out = _sweep_spec(args)
    _experiments()
    result = run_sweep(spec, out=out, serial=args.serial, workers=args.workers, scheduler=args.scheduler,
                       retry_failed=args.retry_failed, fold=not args.no_fold, argv=["bbp", *args.argv])
    for key, error in list(result.failed.items())[:10]:
        print(f"failed: point {key}: {error}", file=sys.stderr)
    if len(result.failed) > 10:
        print(f"... and {len(result.failed) - 10} more failed points (bbp sweep-status {result.out})",
              file=sys.stderr)
    table = f"; the table is {result.out}/results.parquet" if result.table is not None and len(result.table) else ""
    if result.interrupted:
        print(f"bbp sweep: interrupted by {result.interrupted}: {result.summary()}; the same command again "
              f"computes the rest{table}", file=sys.stderr)
        import signal

        return 128 + getattr(signal, result.interrupted, signal.SIGINT)
    print(f"sweep {result.out}: {result.summary()}{table}")
    if result.failed:
        print(f"bbp sweep: {len(result.failed)} of {result.points} points failed (errors and tracebacks in their "
              f"status.json; --retry-failed computes them again)", file=sys.stderr)
        return 1
    return 0


def cmd_sweep_status(args) -> int:
    from .sweep import plan, read_spec
    from .sweep.point import STATES, point_dir, point_state
    from .sweep.table import write_tables

    _experiments()
    spec = read_spec(args.directory)
    points = plan(spec)
    states = {p.key: point_state(point_dir(args.directory, p.key)) for p in points}
    counts = {state: sum(s == state for s in states.values()) for state in STATES}
    print(f"sweep {args.directory}: {spec.experiment}, {len(points)} points x {points[0].seeds if points else 0} "
          f"seeds; swept: {', '.join(spec.swept) or 'nothing'}")
    print("  " + ", ".join(f"{counts[s]} {'done' if s == 'complete' else s}" for s in STATES))
    for p in points:
        if states[p.key] in ("failed", "running", "interrupted"):
            from .rundir import read_status

            error = (read_status(point_dir(args.directory, p.key)) or {}).get("error") or ""
            values = ", ".join(f"{k}={v}" for k, v in p.values.items())
            print(f"  {states[p.key]:<11} {p.key}  {values}  {error.splitlines()[0] if error else ''}".rstrip())
    if args.rebuild:
        write_tables(args.directory, points)
        print(f"rebuilt {args.directory}/results.parquet from the point directories")
    return 0


def cmd_sweep_plot(args) -> int:
    from . import rundir
    from .sweep import load
    from .sweep.plot import plot_metric

    out = rundir.check_output_file(args.out, "--out") if args.out else \
        Path(args.directory) / f"{args.y}_vs_{args.x}{'_by_' + args.hue if args.hue else ''}.png"
    _experiments()
    table = load(args.directory)
    fig = plot_metric(table, args.x, args.y, hue=args.hue, logx=args.logx, logy=args.logy)
    rundir.write_figure(out, fig)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbp", description="beyond-backprop: learning rules without end-to-end "
                                     "back-propagation, their theory and simulations",
                                     epilog="exit status: 0 done, 1 a claim failed or an internal error, 2 bad "
                                     "input or output path, 3 every member of a run diverged, 130/143 stopped "
                                     "by SIGINT/SIGTERM")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments and the claims").set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="real datasets: fetch once, then sim.data.load(NAME)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download the official files, verify checksums, convert to .npy")
    fetch.add_argument("name", help="mnist, fashion-mnist or cifar10")
    fetch.add_argument("--dir", help="data directory (default $BBP_DATA, else the user's cache dir + /bbp)")
    fetch.add_argument("--from", dest="source", metavar="FOLDER", help="use the official files from FOLDER "
                       "instead of downloading them (checksums are verified all the same)")
    fetch.set_defaults(func=cmd_data_fetch)
    dlist = data_sub.add_parser("list", help="the datasets and whether they are fetched")
    dlist.add_argument("--dir", help="data directory (default $BBP_DATA, else the user's cache dir + /bbp)")
    dlist.set_defaults(func=cmd_data_list)

    run = sub.add_parser("run", help="run an experiment and write its run directory")
    run.add_argument("experiment", nargs="?", help="experiment name (see bbp list); optional with --config")
    run.add_argument("--config", metavar="PATH", help="run again what a run directory's config.toml holds "
                     "(a directory or the file); other options override it")
    run.add_argument("--out", help="run directory, new or empty (default runs/NAME-TIMESTAMP-XXXX)")
    run.add_argument("--overwrite", action="store_true", help="replace the whole content of an existing --out")
    run.add_argument("--seeds", type=int, help="number of seed replicates (ensemble members)")
    run.add_argument("--seed", type=int, help="base seed of the run (default 0)")
    run.add_argument("--backend", choices=BACKENDS, help="array backend (default numpy)")
    run.add_argument("--dtype", choices=DTYPES, help="floating-point precision (default float64)")
    run.add_argument("--quick", action="store_true", help="small settings that finish in well under a minute")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    run.set_defaults(func=cmd_run)

    rerun = sub.add_parser("rerun", help="run again exactly what a run directory holds, into a new directory")
    rerun.add_argument("directory", help="a run directory (with config.toml)")
    rerun.add_argument("--out", help="run directory, new or empty (default runs/NAME-TIMESTAMP-XXXX)")
    rerun.add_argument("--overwrite", action="store_true", help="replace the whole content of an existing --out")
    rerun.set_defaults(func=cmd_rerun)

    ver = sub.add_parser("verify", help="check the registered theoretical claims")
    ver.add_argument("--claim", action="append", metavar="ID", help="only this claim (repeatable)")
    ver.add_argument("--quick", action="store_true", help="fewer random instances")
    ver.add_argument("--seed", type=int, default=0, help="seed of the random instances")
    ver.add_argument("--json", metavar="PATH", help="write the outcomes as JSON")
    ver.add_argument("--report", metavar="DIR", help="write a Markdown report with figures")
    ver.set_defaults(func=cmd_verify)

    bench = sub.add_parser("bench", help="measure the engine's speed against batched matmul and a Python loop")
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    bench.add_argument("--backend", choices=BACKENDS, default="numpy")
    bench.add_argument("--dtype", choices=DTYPES, default="float64")
    bench.add_argument("--sweep", action="store_true", help="the sweep engine instead: throughput of 2 local "
                       "Dask workers vs serial, overhead per point")
    bench.add_argument("--convex", action="store_true", help="the convex solvers instead: first-order (FISTA) vs "
                       "cvxpy + Clarabel on the gated-ReLU program, then the active-set method and the augmented "
                       "Lagrangian vs Clarabel on the ReLU program; scaling, batched ensemble vs a loop")
    bench.set_defaults(func=cmd_bench)

    sweep = sub.add_parser("sweep", help="a study: an experiment over a grid of settings and seeds, on Dask, "
                           "resumable, into one table")
    sweep.add_argument("experiment", nargs="?", help="experiment name (see bbp list); optional with --spec")
    sweep.add_argument("--spec", metavar="FILE", help="a TOML file: experiment, seeds, [settings], [grid], [zip]")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a grid axis; the points are the product of the axes (values parsed like --set)")
    sweep.add_argument("--zip", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="an axis that varies together with the other --zip axes (same lengths)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed setting")
    sweep.add_argument("--seeds", type=int, help="seed replicates per point (one ensemble)")
    sweep.add_argument("--seed", type=int, help="base seed of every point (default 0)")
    sweep.add_argument("--out", help="sweep directory (default sweeps/EXPERIMENT-DIGEST, named by the spec); "
                       "the same command again resumes it")
    sweep.add_argument("--quick", action="store_true", help="the experiment's quick settings")
    sweep.add_argument("--backend", choices=BACKENDS, help="array backend (default numpy)")
    sweep.add_argument("--dtype", choices=DTYPES, help="floating-point precision (default float64)")
    sweep.add_argument("--figures", action="store_true", help="write each point's figures (off by default)")
    sweep.add_argument("--workers", type=int, help="processes of the local Dask cluster (default: one per CPU)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask cluster (tcp://HOST:PORT)")
    sweep.add_argument("--serial", action="store_true", help="run in this process, without Dask")
    sweep.add_argument("--retry-failed", action="store_true", help="compute failed points again")
    sweep.add_argument("--no-fold", action="store_true", help="one task per point, even where points could "
                       "share one ensemble")
    sweep.set_defaults(func=cmd_sweep)

    status = sub.add_parser("sweep-status", help="points of a sweep done / running / failed / missing")
    status.add_argument("directory", help="a sweep directory (with sweep.toml)")
    status.add_argument("--rebuild", action="store_true", help="rebuild results.parquet and curves.nc")
    status.set_defaults(func=cmd_sweep_status)

    splot = sub.add_parser("sweep-plot", help="a metric of a sweep against a swept setting")
    splot.add_argument("directory", help="a sweep directory")
    splot.add_argument("--x", required=True, help="a swept setting (a column of results.parquet)")
    splot.add_argument("--y", required=True, help="a metric column, e.g. dfa.final_loss")
    splot.add_argument("--hue", help="one line per value of this setting")
    splot.add_argument("--out", metavar="PNG", help="figure path (default DIR/Y_vs_X.png)")
    splot.add_argument("--logx", action="store_true", default=None, help="log x axis (default: when x spans 20x)")
    splot.add_argument("--logy", action="store_true", help="log y axis")
    splot.set_defaults(func=cmd_sweep_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``bbp`` command; returns its exit status (see ``bbp --help``)."""
    from .interrupt import RunInterrupted, handle_signals

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    with handle_signals():
        try:
            args = parser.parse_args(argv)
            args.argv = argv
            tune_allocator()
            return args.func(args)
        except (CLIError, ValueError) as err:
            print(f"bbp {argv[0] if argv else ''}: error: {err}", file=sys.stderr)
            return 2
        except RunInterrupted as stop:  # stopped before a command had anything to keep
            print(f"bbp: interrupted by {stop.signal_name}", file=sys.stderr)
            return stop.exit_status
        except BrokenPipeError:  # output piped into a reader that stopped early (bbp list | head)
            sys.stderr.close()
            return 0


if __name__ == "__main__":
    sys.exit(main())
