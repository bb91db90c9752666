r"""The Markdown report of ``bbp verify --report DIR``.

:func:`write_report` writes ``DIR/report.md``: the verify table (id, source,
statement, instances, worst violation, tolerance, verdict, seconds) and, for
every claim that registered a ``plot`` and whose check returned a result, a
section with its conditions and one PNG figure (``DIR/figures/<id>.png``),
drawn by ``claim.plot(result, ax)`` from :attr:`theory.claims.CheckResult.details`.
A claim that does not hold as its paper states says so in its own statement,
which the report prints in full.

Figures use :class:`matplotlib.figure.Figure` (no pyplot state) and every
file is written atomically (:mod:`sim.rundir`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from sim import rundir

from .claims import REGISTRY, Outcome

FIGURE_DIR = "figures"
VERDICTS = {"pass": "PASS", "fail": "**FAIL**", "error": "**ERROR**"}


def _cell(text) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def figure_name(claim_id: str) -> str:
    """File name of a claim's figure: its id with every character outside ``[A-Za-z0-9_-]`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", claim_id) + ".png"


def verify_table(outcomes: Sequence[Outcome]) -> str:
    """The verify table in Markdown."""
    lines = ["| id | source | statement | instances | worst violation | tolerance | verdict | seconds | tasks | "
             "members |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for o in outcomes:
        tasks, members = ("-" if v is None else v for v in (o.tasks, o.members))
        lines.append(f"| `{_cell(o.id)}` | {_cell(o.source)} | {_cell(o.statement)} | {o.instances} | "
                     f"{_number(o.max_violation)} | {_number(o.tolerance)} | {VERDICTS.get(o.status, o.status)} | "
                     f"{o.seconds:.2f} | {tasks} | {members} |")
    return "\n".join(lines)


def draw_figure(claim, outcome: Outcome) -> Figure:
    """The claim's figure: ``claim.plot(result, ax)`` on one axes, under a title naming the claim and its source.

    The title is wrapped to the figure's width (a long source takes two or three lines).
    """
    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.subplots()
    claim.plot(outcome.result, ax)
    fig.suptitle(textwrap.fill(f"{claim.id} ({claim.source})", width=62), fontsize="medium")
    return fig


def _draw(claim, outcome: Outcome, path: Path) -> str | None:
    """Draw the claim's figure to ``path``; the error message if its plot function fails."""
    try:
        fig = draw_figure(claim, outcome)
    except Exception as err:  # a broken figure must not hide the verdicts
        return f"{type(err).__name__}: {err}"
    rundir.write_figure(path, fig)
    return None


def write_report(outcomes: Sequence[Outcome], directory) -> Path:
    """Write ``directory/report.md`` (and its figures) for the outcomes of :func:`theory.claims.verify`.

    Parameters
    ----------
    outcomes : sequence of Outcome
        What ``bbp verify`` ran, in order.
    directory : str or Path
        Created if missing; figures go to ``directory/figures/``.

    Returns
    -------
    Path
        The path of ``report.md``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    outcomes = list(outcomes)
    n_pass = sum(o.status == "pass" for o in outcomes)
    total = sum(o.seconds for o in outcomes)
    parts = [
        "# beyond-backprop: verified claims",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}. "
        f"**{n_pass} of {len(outcomes)} claims pass** ({total:.1f} s of checks).",
        "",
        "Each claim's check draws random instances that meet its conditions and reports the worst violation "
        "against a tolerance derived from the problem; a claim passes when the worst violation is at most the "
        "tolerance. Where a paper's statement did not hold in our simulations, the claim states what does "
        "happen instead.",
        "",
        "## Verify table",
        "",
        verify_table(outcomes),
        "",
    ]
    problems = [o for o in outcomes if o.status != "pass"]
    if problems:
        parts += ["## Claims that did not pass", ""]
        for o in problems:
            parts.append(f"* `{o.id}`: {o.status}" + (f" ({o.message})" if o.message else "")
                         + f", worst violation {_number(o.max_violation)} against {_number(o.tolerance)}.")
        parts.append("")
    sections = []
    for o in outcomes:
        claim = REGISTRY.get(o.id)
        if claim is None or claim.plot is None or o.result is None:
            continue
        name = figure_name(o.id)
        error = _draw(claim, o, directory / FIGURE_DIR / name)
        section = [f"### `{o.id}` ({VERDICTS.get(o.status, o.status)})", "", f"*Source:* {o.source}.", "",
                   o.statement, ""]
        if claim.conditions:
            section += [f"*Conditions:* {claim.conditions}", ""]
        if error is None:
            section += [f"![{o.id}]({FIGURE_DIR}/{name})", ""]
        else:
            section += [f"(The figure could not be drawn: {error}.)", ""]
        sections += section
    if sections:
        parts += ["## Figures", ""] + sections
    path = directory / "report.md"
    rundir.write_text(path, "\n".join(parts).rstrip() + "\n")
    return path
