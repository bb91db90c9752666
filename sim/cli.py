"""The ``bbp`` command line: ``list``, ``run``, ``verify`` and ``bench``.

This is the shell: it is the only place that sees both :mod:`sim` and
:mod:`theory`. Bad input ends with a message on stderr and exit status 2;
``verify`` exits 1 when a claim fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def cmd_run(args) -> int:
    from . import rundir
    from .experiments import Context, get_experiment, run_experiment

    _experiments()
    exp = get_experiment(args.experiment)
    n_seeds = exp.default_seeds if args.seeds is None else args.seeds
    if n_seeds < 1:
        raise CLIError(f"--seeds must be at least 1, got {n_seeds}")
    if args.seed < 0:
        raise CLIError(f"--seed must be non-negative, got {args.seed}")
    ctx = Context(seed=args.seed, n_seeds=n_seeds, backend=args.backend, dtype=args.dtype, quick=args.quick)
    out = Path(args.out) if args.out else Path("runs") / f"{exp.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    start = time.perf_counter()
    settings, result = run_experiment(exp.name, context=ctx, overrides=_parse_sets(args.set))
    seconds = time.perf_counter() - start
    config = {"experiment": exp.name, "seed": ctx.seed, "seeds": ctx.n_seeds, "backend": ctx.backend,
              "dtype": ctx.dtype, "quick": ctx.quick, "settings": settings,
              "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "versions": rundir.package_versions()}
    rundir.write_toml(out / "config.toml", config)
    rundir.write_json(out / "metrics.json", {"experiment": exp.name, "seconds": seconds, "diverged": result.diverged,
                                             **result.metrics})
    rundir.write_arrays(out / "arrays.npz", result.arrays)
    for name, fig in result.figures.items():
        rundir.write_figure(out / f"{name}.png", fig)
    print(f"{exp.name}: {result.summary}")
    for line in result.diverged:
        print(f"warning: diverged: {line}", file=sys.stderr)
    print(f"wrote {out}/ (config.toml, metrics.json, arrays.npz, "
          f"{', '.join(f'{n}.png' for n in result.figures)}) in {seconds:.1f} s")
    return 0


def _format_verify_table(outcomes) -> str:
    rows = [("id", "source", "statement", "inst", "worst", "tol", "verdict")]
    for o in outcomes:
        statement = o.statement if len(o.statement) <= 60 else o.statement[:57] + "..."
        rows.append((o.id, o.source, statement, str(o.instances), f"{o.max_violation:.3g}", f"{o.tolerance:.3g}",
                     o.status.upper()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from theory.claims import get_claims, verify

    from . import rundir

    get_claims(args.claim)  # unknown ids fail before any work

    def show(outcome):
        extra = f"  ({outcome.message})" if outcome.message else ""
        print(f"  {outcome.status:<5} {outcome.id} [{outcome.seconds:.1f} s]{extra}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    outcomes = verify(args.claim, quick=args.quick, seed=args.seed, progress=show)
    print(_format_verify_table(outcomes))
    n_pass = sum(o.status == "pass" for o in outcomes)
    print(f"\n{n_pass} of {len(outcomes)} claims pass in {time.perf_counter() - start:.1f} s")
    if args.json:
        rundir.write_json(Path(args.json), [o.to_json() for o in outcomes])
    if args.report:
        from theory.report import write_report

        path = write_report(outcomes, Path(args.report))
        print(f"wrote the report {path}")
    return 0 if n_pass == len(outcomes) else 1


def cmd_bench(args) -> int:
    from . import rundir
    from .bench import format_bench, run_bench

    results = run_bench(quick=args.quick, backend=args.backend, dtype=args.dtype)
    print(format_bench(results))
    if args.json:
        rundir.write_json(Path(args.json), results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbp", description="beyond-backprop: learning rules without end-to-end "
                                     "back-propagation, their theory and simulations")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments and the claims").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run an experiment and write its run directory")
    run.add_argument("experiment", help="experiment name (see bbp list)")
    run.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
    run.add_argument("--seeds", type=int, help="number of seed replicates (ensemble members)")
    run.add_argument("--seed", type=int, default=0, help="base seed of the run (default 0)")
    run.add_argument("--backend", choices=BACKENDS, default="numpy")
    run.add_argument("--dtype", choices=DTYPES, default="float64")
    run.add_argument("--quick", action="store_true", help="small settings that finish in well under a minute")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    run.set_defaults(func=cmd_run)

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
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        return args.func(args)
    except (CLIError, ValueError) as err:
        print(f"bbp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped early (bbp list | head)
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
