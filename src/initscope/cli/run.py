"""`initscope run` and `initscope report`, registered lazily on the main CLI (`initscope.cli.app`).

Output files are written to a temporary folder beside `--out` and moved into
place only when everything succeeded (`initscope.cli.common.output_folder`), so
a failed or interrupted run leaves nothing half-written, an earlier run's files
are replaced whole or not at all, and a file initscope did not write is never touched.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import (
    BadInput,
    Out,
    Overwrite,
    has_report_extra,
    output_folder,
    parse_workers,
    say_ignored,
    with_config_flags,
    workers_option,
    write_run,
)
from initscope.cli.progress import DelayedProgress
from initscope.cli.sweep import is_store, sweep_report
from initscope.study.config import load_config, make_config, subsample_note
from initscope.study.memory import memory_budget, plan_run
from initscope.study.parallel import worker_count

__all__ = ["run_command", "report_command"]


# long: a Typer command whose options are its signature; the body runs, writes and prints in order
@with_config_flags
def run_command(
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file of config fields; flags override it."),
    out: Out = "initscope-out",
    overwrite: Overwrite = False,
    fields: dict | None = None,
    workers: workers_option("Threads over trials (default: cores).") = None,
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html (needs the optional 'report' extra)."),
    png: bool = typer.Option(False, "--png", help="Also write static PNG and GIF figures."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the summary table (the verdict still prints)."),
    verdict: bool = typer.Option(True, "--verdict/--no-verdict", help="Print the verdict in words (with --quiet too)."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", metavar="SIZE",
                                               help="Memory budget, e.g. 8GiB (default: 80% of available memory)."),
) -> None:
    """Run the study (defaults: the seed post's) and write tidy CSVs, config.toml and report.html."""
    try:
        cfg = load_config(config_file, **fields) if config_file else make_config(**fields)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    say_ignored(fields, cfg)
    n_workers = parse_workers(workers)

    from initscope.study.runner import run

    try:  # before the output folder exists: a run that cannot fit is refused at once
        budget = memory_budget(memory_limit)
        plan = plan_run(cfg, worker_count(n_workers, cfg.trials), budget)
        from initscope.study.training import check_training_memory

        check_training_memory(cfg, budget, worker_count(n_workers, cfg.trials))
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    note = subsample_note(cfg)
    if note:  # once, before the run: the table it prints is of the subsets
        typer.echo(f"note: {note}", err=True)

    with output_folder(out, command="run", overwrite=overwrite) as folder:
        # A bar on stderr for runs past ~2 s, on a terminal only, and never under --quiet.
        with warnings.catch_warnings(record=True) as caught, DelayedProgress(
                "measuring layers", enabled=False if quiet else None) as bar:
            warnings.simplefilter("always")
            result = run(cfg, workers=n_workers, plan=plan, progress=bar)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        write_run(folder, result, report=report, png=png)
    if not quiet:
        from initscope.cli.summary import print_summary

        print_summary(result, Path(out), verdict=verdict)
    elif verdict:  # --quiet drops the tables, not the answer
        from rich.console import Console

        from initscope.cli.summary import print_verdict

        print_verdict(result, Console(width=None if sys.stdout.isatty() else 180))
    if len(result.training):  # steps > 0: how each initializer's training went
        from initscope.study.train_summary import summary_lines

        typer.echo(f"Training ({cfg.steps} steps, {cfg.optimizer}, lr {cfg.lr:g}"
                   f"{f', batch {cfg.batch_size}' if cfg.batch_size else ''}):")
        for line in summary_lines(result.training):
            typer.echo(f"  {line}")


def report_command(
    folder: Path = typer.Argument(..., help="A run's output folder, or a results store written by `initscope sweep`."),
    png: bool = typer.Option(False, "--png", help="Also write static PNG and GIF figures (run folders)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="PATH", help="Sweep report only: the .html file (default: report.html beside the store)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Sweep report only: metric(s), comma-separated (default: effective_rank)."),
    x: Optional[str] = typer.Option(None, "--x", help="Sweep report only: heat-map x axis, a config field (default: depth)."),
    y: Optional[str] = typer.Option(None, "--y", help="Sweep report only: heat-map y axis, a config field (default: width)."),
    group_by: str = typer.Option("init", "--group-by", help="Sweep report only: config field the depth curves are grouped by."),
    overwrite: Overwrite = False,
) -> None:
    """Rebuild report.html from a run folder's CSVs, or build the sweep report of a results store."""
    if folder.is_file():
        if is_store(folder):
            sweep_report(folder, out, metric=metric, x=x, y=y, group_by=group_by, overwrite=overwrite)
            return
    if not folder.is_dir() or not (folder / "metrics.csv").is_file():
        raise BadInput(f"The 'folder' parameter must be a run folder containing metrics.csv or a results store. Got {str(folder)!r} instead.")
    has_report_extra(required=True)
    from initscope import report as report_mod
    from initscope.report.page import write_page
    from initscope.study.writer import read_marker

    try:
        tables = report_mod.load_run(folder)
    except (ValueError, KeyError) as exc:
        raise BadInput(f"The 'folder' parameter must hold a readable run: {exc}") from None
    # The page belongs to the run that wrote the folder (run or inspect): a later run replaces it.
    owner = (read_marker(folder) or {"files": {}})["files"].get("metrics.csv", "run")
    with output_folder(folder, command=owner, overwrite=overwrite, replace=False, writes=("report.html",)) as staging:
        write_page(tables, staging / "report.html", png=png)
    typer.echo(f"wrote {folder / 'report.html'}")
