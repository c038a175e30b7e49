"""The study commands: `initscope sweep`, `initscope results`, and the sweep report of `initscope report STORE`.

`initscope.cli.app` registers `sweep_command` and `results_command`; `initscope
report STORE` builds the sweep report through `sweep_report`. Bad input is one
line on stderr ("initscope: error: ...") and exit status 2 (`BadInput`, mapped
by `run_app`); nothing is written before the sweep file, the options and the
store have been checked.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import (
    BadInput,
    MemoryLimit,
    Overwrite,
    check_output,
    has_report_extra,
    output_folder,
    parse_workers,
    workers_option,
)
from initscope.cli.progress import DelayedProgress
from initscope.study.memory import format_bytes, memory_budget, parse_memory, plan_run
from initscope.study.sweep import config_record, load_sweep

__all__ = [
    "sweep_command",
    "results_command",
    "sweep_report",
    "is_store",
    "DEFAULT_SWEEP_OUT",
    "STORE_NAME",
]

DEFAULT_SWEEP_OUT = Path("initscope-sweep")
STORE_NAME = "results.sqlite"

def is_store(path: str | os.PathLike) -> bool:
    """True when `path` is an initscope results store (what `initscope report PATH` dispatches on)."""
    from initscope.study.store import is_store as _is_store

    return _is_store(path)


def _store_path(store: Path | None, out: Path | None) -> tuple[Path, Path]:
    """(store file, output folder): the store defaults to OUT/results.sqlite, OUT to the store's folder."""
    if out is None:
        out = store.parent if store is not None else DEFAULT_SWEEP_OUT
    if out.exists() and not out.is_dir():
        raise BadInput(f"The 'out' parameter must be a folder. Got {str(out)!r}, which is a file.")
    store = store if store is not None else out / STORE_NAME
    if store.exists():
        from initscope.study.store import store_state

        if store.is_dir():
            raise BadInput(f"The 'store' parameter must be a file. Got {str(store)!r}, which is a folder.")
        if store_state(store) == "foreign":
            raise BadInput(f"The 'store' parameter must be an initscope results store. Got {str(store)!r}, "
                       "which is some other file.")
    return store, out


# long: its 19-line docstring is the command's --help text; signature 13 lines, body 42
def sweep_command(
    config_file: Path = typer.Argument(..., metavar="CONFIG.toml",
                                       help="Sweep file: config fields, any of them a list; the sweep is their product."),
    store: Optional[Path] = typer.Option(None, "--store", help="Results store (SQLite) (default: OUT/results.sqlite)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for the store and report.html "
                                       "(default: the store's folder, else initscope-sweep)."),
    workers: workers_option("Local processes running configurations (default: cores; 1 = in this process).") = None,
    scheduler: Optional[str] = typer.Option(None, metavar="ADDRESS", help="Run on this Dask scheduler "
                                            "(e.g. tcp://host:8786) instead of local processes."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html at the end (needs plotly)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overwrite: Overwrite = False,
    memory_limit: MemoryLimit = None,
) -> None:
    """Run every configuration of a sweep file into a results store, skipping what it already holds.

    The sweep file has the fields of a run config (`initscope run --config`);
    any of them may be a list, and the sweep is the product of the lists, each
    initializer a configuration of its own, times `trials`. Example:
    init = ["normal", "sphere"], depth = [5, 10, 20], width = [40, 100],
    trials = 10. `metrics` is the set every configuration computes; gain =
    "default" means each initializer's own gain. A residual with width !=
    input_dim is allowed: layer 1 then has no skip connection. Every
    combination is validated before anything runs.

    Each configuration's trials run as one batch and are committed together;
    stop it at any time (even with kill -9) and run the same command again to
    finish it. Sweeps sharing a store share finished configurations.

    --memory-limit is shared by the local processes: each gets its share, and
    a configuration over it runs fewer trials at a time (a warning; the same
    numbers) or, when one trial does not fit, is refused before anything runs.

    Exit status: 0 if every configuration succeeded, 1 if some failed (each is
    recorded in the store with its error, and listed), 2 for bad input
    (nothing is written).
    """
    try:
        sweep = load_sweep(config_file)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    n_workers = parse_workers(workers)
    share = _check_memory(sweep, n_workers, memory_limit) if scheduler is None else _memory_share(memory_limit)
    store_path, out_dir = _store_path(store, out)
    # The store goes into OUT and the page comes at the end: an OUT that cannot be written, or a
    # report.html in it that initscope did not write, is refused now, not after the sweep.
    check_output(out_dir, command="sweep", overwrite=overwrite, replace=False,
                 writes=("report.html",) if report else ())

    from initscope.study.executors import open_executor, run_sweep
    from initscope.study.store import Store

    stack = ExitStack()
    try:
        executor, slots = stack.enter_context(open_executor(n_workers, scheduler))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if scheduler is None and n_workers is not None and slots < n_workers:
        typer.echo(f"note: --workers {n_workers} capped at {slots}, the CPU cores available "
                   "(more processes would only add memory)", err=True)
    try:
        db = Store(store_path)
    except ValueError as exc:  # e.g. replaced by another file since it was checked
        stack.close()
        raise BadInput(str(exc)) from None
    try:
        with stack, db, _SweepProgress(quiet) as progress:
            outcome = run_sweep(sweep, db, executor, slots=slots, on_start=progress.start,
                                on_progress=progress.advance, memory_limit=share)
    except KeyboardInterrupt:
        typer.echo(f"initscope: interrupted; finished configurations are in {store_path}. "
                   "Run the same command again to resume.", err=True)
        raise typer.Exit(130) from None
    _print_outcome(sweep, outcome, store_path)
    if report:
        _auto_report(store_path, out_dir, overwrite=overwrite)
    if outcome.failures:
        raise typer.Exit(1)


def _check_memory(sweep, n_workers: int | None, memory_limit: str | None) -> int | None:
    """Each local process's share of the memory budget, after refusing now a configuration that
    cannot fit it even one trial at a time (otherwise it would only fail, recorded in the store,
    once its turn came). Each process runs one configuration at a time (run(workers=1)), so a
    process gets budget / processes; a configuration that fits only in smaller chunks is said once.
    """
    from initscope.study.executors import available_cores

    try:
        budget = memory_budget(memory_limit)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if budget is None:
        return None
    processes = min(n_workers or available_cores(), available_cores())
    share = budget // processes
    chunked = 0
    for config in sweep.configs:
        try:
            chunked += plan_run(config, 1, share).chunked
        except ValueError as exc:
            raise BadInput(f"{exc} (a configuration of {sweep.source}: init={config.init[0]!r}, "
                           f"width={config.width}, depth={config.depth}, samples={config.samples}; "
                           f"{processes} process(es) share the budget)") from None
    if chunked:
        typer.echo(f"warning: memory: {chunked} of {len(sweep.configs)} configurations exceed each process's share "
                   f"of the budget ({format_bytes(share)} = {format_bytes(budget)} / {processes} processes); they "
                   "run fewer trials at a time (the same numbers)", err=True)
    return share


def _memory_share(memory_limit: str | None) -> int | None:
    """The budget of a configuration run on a Dask cluster: --memory-limit as given (each worker is a
    machine of its own), else each worker's own default."""
    try:
        return None if memory_limit is None else parse_memory(memory_limit)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


class _SweepProgress:
    """The sweep's on_start / on_progress callbacks on the command line's one progress bar (`cli.progress`):
    trials done of those to run, their rate, elapsed time and ETA, and each failed configuration above it."""

    def __init__(self, quiet: bool):
        self.bar = DelayedProgress("sweep", enabled=not quiet, delay=0.0, transient=False, rate=True)
        self.total = 0
        self.failed = 0

    def start(self, total: int, done: int) -> None:
        self.total = total  # the trials to run now: those already in the store are not counted

    def advance(self, trials: int, batch) -> None:
        if batch is not None and not batch.ok:
            self.failed += 1
            self.bar.note(f"[red]failed[/red] {batch.config_id} ({batch.config.init[0]}): {batch.error}")
        if self.total:  # nothing to run: no empty bar
            self.bar.advance(trials, self.total)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def _describe_config(config, axes: dict) -> str:
    rec = config_record(config)
    keys = [k for k in axes if k in rec] or ["init", "depth", "width"]
    return ", ".join(f"{k}={rec[k]!r}" for k in keys)


def _print_outcome(sweep, outcome, store_path: Path) -> None:
    run_trials = outcome.trials - outcome.skipped_trials
    rate = f" ({run_trials / outcome.seconds:.1f} trials/s)" if outcome.seconds > 0 and run_trials else ""
    lines = [
        f"sweep: {outcome.configs:,} configurations x {sweep.trials} trials = {outcome.trials:,} trials",
        f"  already in the store: {outcome.skipped_trials:,} trials",
        f"  ran: {outcome.ran_configs:,} configurations, {outcome.written_trials:,} trials written "
        f"in {outcome.seconds:.1f} s{rate}",
        f"  failed: {len(outcome.failures):,} configurations",
    ]
    for cid, config, error in outcome.failures:
        lines.append(f"    {cid} [{_describe_config(config, sweep.axes)}]: {error}")
    lines.append(f"store: {store_path}")
    typer.echo("\n".join(lines))


def _auto_report(store_path: Path, out_dir: Path, *, overwrite: bool) -> None:
    if not has_report_extra():
        return
    from initscope.report.sweep_page import write_sweep_report

    try:
        with output_folder(out_dir, command="sweep", overwrite=overwrite, replace=False,
                           writes=("report.html",)) as folder:
            write_sweep_report(store_path, folder / "report.html")
    except ValueError as exc:  # e.g. every configuration failed: nothing to plot
        typer.echo(f"note: report.html skipped: {exc}", err=True)
        return
    typer.echo(f"report: {out_dir / 'report.html'}")


_TABLES = ("metrics", "spectra", "trials", "flags")


def results_command(
    store: Path = typer.Argument(..., metavar="STORE", help="A results store written by `initscope sweep`."),
    csv: Optional[Path] = typer.Option(None, "--csv", metavar="PATH", help="Export the table as CSV."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", metavar="PATH",
                                           help="Export the table as Parquet (needs pyarrow)."),
    table: str = typer.Option("metrics", "--table", help="Table to export: metrics, spectra, trials or flags."),
    overwrite: Overwrite = False,
) -> None:
    """Summarise a results store (configurations, trials done/failed, rows per metric) and export a table.

    The metrics export has the columns of `initscope run`'s metrics.csv
    (without `trials`) plus config_id. An export replaces a file only when
    initscope wrote it (the folder's .initscope marker lists it), or with
    --overwrite.
    """
    from initscope.study.store import Store
    from initscope.study.trainability import is_cell_store

    if is_cell_store(store):  # a `phase --train` store: its cells, step-0 features or predictors (the default)
        from initscope.cli.phase_train import export_cells

        export_cells(store, "predictors" if table == "metrics" else table, csv, parquet, overwrite, _export_to)
        return
    if table not in _TABLES:
        raise BadInput(f"The 'table' parameter must be one of {list(_TABLES)}. Got {table!r} instead.")
    if parquet is not None:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise BadInput("Parquet export needs pyarrow: pip install 'initscope[parquet]' (or pip install pyarrow).")
    for name, path in (("csv", csv), ("parquet", parquet)):
        if path is not None and path.is_dir():
            raise BadInput(f"The '{name}' parameter must be a file path. Got {str(path)!r}, which is a folder.")
    try:
        db = Store(store, create=False)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with db, ExitStack() as stack:
        # Each export's place is checked (a file initscope did not write is refused) before the table is read.
        exports = [(path, kind, stack.enter_context(_export_to(path, kind, overwrite)))
                   for path, kind in ((csv, "csv"), (parquet, "parquet")) if path is not None]
        summary = db.summary()
        _print_summary(summary, store)
        if not exports:
            return
        frame = getattr(db, table)()
        for path, kind, folder in exports:
            if kind == "csv":
                frame.to_csv(folder / path.name, index=False)
            else:
                frame.to_parquet(folder / path.name, index=False)
    for path, _, _ in exports:
        typer.echo(f"wrote {path} ({len(frame):,} rows of {table})")


def _print_summary(summary, store: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{store}[/bold]: {summary.configs:,} configurations ({summary.configs_complete:,} complete), "
                  f"{summary.trials_ok:,} trials ok, {summary.trials_failed:,} failed, "
                  f"{summary.spectra_rows:,} singular values")
    for name, values in summary.axes.items():
        console.print(f"  {name}: {', '.join(str(v) for v in values)}")
    if len(summary.metric_rows):
        t = Table(title="metric rows")
        t.add_column("metric")
        t.add_column("rows", justify="right")
        t.add_column("finite", justify="right")
        for r in summary.metric_rows.itertuples():
            t.add_row(str(r.metric), f"{r.rows:,}", f"{r.finite:,}")
        console.print(t)
    if len(summary.failures):
        console.print(f"[red]failed configurations: {len(summary.failures)}[/red]")
        for r in summary.failures.itertuples():
            console.print(f"  {r.config_id} ({r.init}, depth={r.depth}, width={r.width}): {r.error}")


@contextmanager
def _export_to(path: Path, kind: str, overwrite: bool):
    """The temporary folder to write the `kind` export into; the one writer (`Output`) puts it at `path`
    when the block succeeds: a failed export leaves no half file, and a file initscope did not write
    is refused now (naming `kind`) unless overwrite."""
    from initscope.study.writer import Output, OutputError

    try:
        with Output(path.parent, command="results", replace=False, writes=(path.name,),
                    overwrite=overwrite) as folder:
            yield folder
    except OutputError as exc:
        raise BadInput(str(exc.renamed(kind, "--overwrite"))) from None


def sweep_report(
    store: Path,
    out: Optional[Path] = None,
    *,
    metric: Optional[str] = None,
    x: Optional[str] = None,
    y: Optional[str] = None,
    group_by: str = "init",
    overwrite: bool = False,
) -> Path:
    """Build the sweep report of a store (what `initscope report STORE` runs); return the page's path.

    out: the .html path (default: report.html beside the store). Bad
    options raise BadInput (exit status 2, one line on stderr).
    """
    has_report_extra(required=True)
    from initscope.report.sweep_page import write_sweep_report

    path = Path(out) if out is not None else Path(store).with_name("report.html")
    if path.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"The 'out' parameter must end in .html. Got {str(path)!r} instead.")
    # The page is one of initscope's files in its folder: a page of the same name that initscope did
    # not write is refused (unless overwrite), and the folder's marker lists it.
    try:
        with output_folder(path.parent, command="sweep", overwrite=overwrite, replace=False,
                           writes=(path.name,)) as folder:
            write_sweep_report(store, folder / path.name, metrics=metric, x=x, y=y, group_by=group_by)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    typer.echo(f"wrote {path}")
    return path
