"""`initscope compare-fixes`: run every fix on the seed's network and write a ranked report."""

from __future__ import annotations

import html
from typing import Optional

import typer

from initscope.cli.common import (
    BadInput,
    MemoryLimit,
    Out,
    Overwrite,
    command_line,
    memory_plan_warnings,
    output_folder,
    parse_workers,
    workers_option,
    write_files,
    write_run,
)
from initscope.cli.progress import DelayedProgress
from initscope.study.writer import mark_folder
from initscope.study.fixes import FIXES, compare_fixes, outcome_label, plan_fixes
from initscope.study.memory import memory_budget

__all__ = ["compare_fixes_command", "index_page"]


def compare_fixes_command(
    out: Out = "initscope-fixes",
    overwrite: Overwrite = False,
    fixes: Optional[str] = typer.Option(None, help=f"Comma-separated fixes (default: all of {', '.join(FIXES)})."),
    depths: str = typer.Option("10,50", help="Comma-separated depths."),
    trials: str = typer.Option("20", metavar="INT", help="Trials per fix and depth."),
    seed: str = typer.Option("0", metavar="INT", help="Seed."),
    workers: workers_option("Threads over trials (default: cores).") = None,
    report: bool = typer.Option(True, "--report/--no-report", help="Write each fix's report.html."),
    memory_limit: MemoryLimit = None,
) -> None:
    """Run the seed's network (input_dim = width = 40) under every fix and rank them by what survives."""
    from rich.console import Console

    names = None if fixes is None else [f.strip() for f in fixes.split(",") if f.strip()]
    if names == []:
        raise BadInput(f"The 'fixes' parameter must name at least one fix from {list(FIXES)}. Got {fixes!r} instead.")
    try:
        depth_list = [int(d) for d in depths.split(",") if d.strip()]
        if not depth_list or min(depth_list) < 1:
            raise ValueError
    except ValueError:
        raise BadInput(f"The 'depths' parameter must be a comma-separated list of integers >= 1. Got {depths!r} instead.") from None
    n_workers = parse_workers(workers)
    given = dict(depths=depth_list, trials=int(trials) if trials.strip().isdigit() else trials,
                 seed=int(seed) if seed.strip().isdigit() else seed, workers=n_workers)
    try:  # every fix's fields and memory (its run and its certificate) before anything is computed
        budget = memory_budget(memory_limit)
        plan_fixes(names, memory_limit=budget, **given)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    with output_folder(out, command="compare-fixes", overwrite=overwrite) as folder:
        try:
            # A bar over fixes × depths on a terminal once it has taken ~2 s: the comparison takes minutes.
            with memory_plan_warnings(), DelayedProgress("fixes × depths") as bar:
                ranking, outcomes = compare_fixes(names, memory_limit=budget, progress=bar, **given)
        except (ValueError, TypeError) as exc:
            raise BadInput(str(exc)) from None
        for o in outcomes:
            if o.diverged:  # a result, not an error: said here and in index.html
                typer.echo(f"warning: fix {o.fix!r} {o.diverged}", err=True)
        for o in outcomes:
            # Each fix's folder is a run folder of its own: `initscope report` redraws it, `run --out` replaces it.
            sub = folder / outcome_label(o)
            write_run(sub, o.result, report=report, png=False)
            write_files(sub, {"certificate": o.certificate}, {})
            mark_folder(sub, "run", command_line(), owners={"certificate.csv": "certify"})
        notes = tuple(f"fix {o.fix!r} {o.diverged}" for o in outcomes if o.diverged)
        write_files(folder, {"ranking": ranking}, {"index.html": index_page(ranking, linked=report, notes=notes)})

    console = Console()
    for depth, rows in ranking.groupby("depth", sort=True):
        console.print(ranking_table(rows, title=f"depth {depth}: ranked by certified share, then last-layer "
                                                "jacobian_rank, linear_r2, effective_rank"))
    console.print(LEGEND, highlight=False)
    console.print(f"wrote {out}/ (index.html, ranking.csv, one folder per fix and depth)")


# Short headers keep the table inside 80 columns, so that no fix name is ever cut; the legend says what they mean.
_COLUMNS = (("#", "rank"), ("fix", "fix"), ("certified", "certified_share"), ("lost from", "first_uncertified_layer"),
            ("jac_rank", "jacobian_rank"), ("lin_r2", "linear_r2"), ("eff_rank", "effective_rank"),
            ("rms×", "rms_ratio"))
LEGEND = ("certified: share of trials certified injective at every layer; lost from: the first layer some trial "
          "is not certified; jac_rank, lin_r2, eff_rank: the last layer's median jacobian_rank, linear_r2 "
          "(leave-one-out) and effective_rank; rms×: the last layer's rms over the input's.")


def _num(value: float) -> str:
    """Three significant digits, short exponents (9.34e31, -0.0409), so numbers fit their column."""
    return f"{value:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def first_lost(value) -> str:
    """'never' when every layer is certified (an empty cell in ranking.csv), else 'layer l'."""
    import pandas as pd

    return "never" if pd.isna(value) else f"layer {int(value)}"


def ranking_table(rows, *, title: str):
    """One depth's ranking as a rich table whose fix names are never cut (they set the column's width)."""
    from rich import box
    from rich.table import Table

    # No cell padding: SIMPLE_HEAD already puts a space between columns, so the 8 columns fit in 80.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for header, column in _COLUMNS:
        if column == "fix":
            table.add_column(header, no_wrap=True, min_width=max(len(str(f)) for f in rows["fix"]))
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for _, r in rows.iterrows():
        table.add_row(str(r["rank"]), str(r["fix"]), f"{r['certified_share']:.2f}", first_lost(r["first_uncertified_layer"]),
                      *(_num(float(r[c])) for c in ("jacobian_rank", "linear_r2", "effective_rank", "rms_ratio")))
    return table


def index_page(ranking, *, linked: bool = True, notes: tuple[str, ...] = ()) -> str:
    """A small self-contained page: the ranking per depth, each fix linking to its own report; notes
    (a diverged fix's sentence) under the tables."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>initscope: fixes compared</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td.l,th.l{text-align:left}</style></head><body>",
             "<h1>The fixes the post names, compared</h1>",
             "<p>The seed's ReLU network with input_dim = width = 40, linspace shifts, 100 points in the unit ball. "
             "Ranked within each depth by the share of trials whose every layer is certified injective on the data, then "
             "by the last layer's median jacobian_rank, linear_r2 (leave-one-out) and effective_rank. "
             "rms_ratio is the last layer's rms over the input's.</p>"]
    cols = ["rank", "fix", "certified_share", "first_uncertified_layer", "jacobian_rank", "linear_r2", "effective_rank",
            "rms_ratio", "overflowed_trials"]
    for depth, rows in ranking.groupby("depth", sort=True):
        parts.append(f"<h2>depth {int(depth)}</h2><table><tr>")
        parts += [f"<th class='{'l' if c == 'fix' else ''}'>{html.escape(c)}</th>" for c in cols]
        parts.append("</tr>")
        for _, r in rows.iterrows():
            cells = []
            for c in cols:
                v = r[c]
                if c == "first_uncertified_layer":
                    cells.append(f"<td>{html.escape(first_lost(v))}</td>")
                elif c == "fix":
                    label = html.escape(str(v))
                    href = html.escape(f"{v}-depth{int(depth)}/report.html")
                    cells.append(f"<td class='l'><a href='{href}'>{label}</a></td>" if linked else f"<td class='l'>{label}</td>")
                elif isinstance(v, float):
                    cells.append(f"<td>{v:.4g}</td>")
                else:
                    cells.append(f"<td>{html.escape(str(v))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    if notes:
        parts.append("<h2>notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
