"""The `initscope` command line: `initscope run` and `initscope report`.

Bad input is one line on stderr and exit status 2; anything unexpected is
exit status 1. Output files are written to a temporary folder beside `--out`
and moved into place only when everything succeeded, so a failed run leaves
nothing half-written and an earlier run's files are replaced whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import typer

from .config import config_to_toml, load_config, make_config

try:  # recent typer runs on its own copy of click and no longer installs click
    from typer._click.exceptions import ClickException as _UsageError
except ImportError:  # older typer re-exports click's exceptions
    from click.exceptions import ClickException as _UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="See and measure what a neural network does to data at initialization, layer by layer.",
    pretty_exceptions_enable=False,
)

REPORT_OUTPUTS = frozenset({"report.html", "figures", "init_log.csv", "train_log.csv"})  # optional outputs
OUTPUT_FILES = ("metrics.csv", "spectra.csv", "projections.csv", "weight_norms.csv", "flags.csv", "config.toml")


class BadInput(Exception):
    """User input the CLI rejects with exit status 2."""


@app.command("run")
def run_command(
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file of config fields; flags override it."),
    out: Path = typer.Option(Path("initscope-out"), "--out", help="Output folder."),
    init: Optional[str] = typer.Option(None, help="Comma-separated initializers to compare (default: normal,sphere)."),
    gain: Optional[str] = typer.Option(None, metavar="FLOAT", help="Gain of the initializers (default: each one's own)."),
    data: Optional[str] = typer.Option(None, help="ball, sphere, box, normal, ball-spaced, box-spaced, digits, iris, wine, breast_cancer, diabetes, or a .csv/.npy path (default: ball)."),
    input_dim: Optional[str] = typer.Option(None, "--input-dim", metavar="INT", help="Input dimension (synthetic data) (default: 3)."),
    width: Optional[str] = typer.Option(None, metavar="INT", help="Units per hidden layer (default: 40)."),
    depth: Optional[str] = typer.Option(None, metavar="INT", help="Hidden layers (default: 10)."),
    samples: Optional[str] = typer.Option(None, metavar="INT", help="Samples per trial (default: 100)."),
    activation: Optional[str] = typer.Option(None, help="relu, leaky_relu, tanh, gelu, identity (default: relu)."),
    shift: Optional[str] = typer.Option(None, help="linspace, zeros, normal, uniform, quantile (default: linspace)."),
    shift_scale: Optional[str] = typer.Option(None, "--shift-scale", metavar="FLOAT", help="Scale of the shifts (default: 1)."),
    residual: Optional[str] = typer.Option(None, metavar="FLOAT", help="Residual branch scale alpha, 0 = none (default: 0)."),
    norm: Optional[str] = typer.Option(None, help="none, layer, batch (default: none)."),
    readout: Optional[str] = typer.Option(None, help="zeros (the seed) or init (default: zeros)."),
    target: Optional[str] = typer.Option(None, help="cos-norm, norm, sin-sum, gaussian-bump, dataset, column:NAME (default: cos-norm)."),
    trials: Optional[str] = typer.Option(None, metavar="INT", help="Independent draws per initializer (default: 10)."),
    seed: Optional[str] = typer.Option(None, metavar="INT", help="Seed of every random draw (default: 0)."),
    dtype: Optional[str] = typer.Option(None, help="float64 or float32 (default: float64)."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated subset of metrics (default: all)."),
    lsuv_tol: Optional[str] = typer.Option(None, "--lsuv-tol", metavar="FLOAT", help="LSUV: stop when |Var - 1| < this (default: 0.01)."),
    lsuv_max_iter: Optional[str] = typer.Option(None, "--lsuv-max-iter", metavar="INT", help="LSUV: most rescalings per layer (default: 10)."),
    init_train: Optional[str] = typer.Option(None, "--init-train", help="none, forward-gradient, backprop: optimise the init for information first (default: none)."),
    train_steps: Optional[str] = typer.Option(None, "--train-steps", metavar="INT", help="Init-training steps (default: 100)."),
    train_lr: Optional[str] = typer.Option(None, "--train-lr", metavar="FLOAT", help="Init-training step size (default: 0.01; forward-gradient needs ~1/P of backprop's: 1e-4 on the seed's net)."),
    train_batch: Optional[str] = typer.Option(None, "--train-batch", metavar="INT", help="Samples per init-training step, 0 = all (default: 0)."),
    workers: Optional[str] = typer.Option(None, metavar="INT", help="Threads over trials (default: cores)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html (needs the optional 'report' extra)."),
    png: bool = typer.Option(False, "--png", help="Also write static PNG and GIF figures."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the summary table."),
) -> None:
    """Run the study (defaults: the seed post's) and write tidy CSVs, config.toml and report.html."""
    fields = dict(init=init, gain=gain, data=data, input_dim=input_dim, width=width, depth=depth,
                  samples=samples, activation=activation, shift=shift, shift_scale=shift_scale,
                  residual=residual, norm=norm, readout=readout, target=target, trials=trials,
                  seed=seed, dtype=dtype, metrics=metrics, lsuv_tol=lsuv_tol, lsuv_max_iter=lsuv_max_iter,
                  init_train=init_train, train_steps=train_steps, train_lr=train_lr, train_batch=train_batch)
    try:
        cfg = load_config(config_file, **fields) if config_file else make_config(**fields)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    n_workers = _workers(workers)
    _check_out(out)

    from .run import run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(cfg, workers=n_workers)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    _write_outputs(result, out, report=report, png=png)
    if not quiet:
        from .summary import print_summary

        print_summary(result, out)


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="A run's output folder, or a results store written by `initscope sweep`."),
    png: bool = typer.Option(False, "--png", help="Also write static PNG and GIF figures (run folders)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="PATH", help="Sweep report only: the .html file (default: report.html beside the store)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Sweep report only: metric(s), comma-separated (default: effective_rank)."),
    x: Optional[str] = typer.Option(None, "--x", help="Sweep report only: heat-map x axis, a config field (default: depth)."),
    y: Optional[str] = typer.Option(None, "--y", help="Sweep report only: heat-map y axis, a config field (default: width)."),
    group_by: str = typer.Option("init", "--group-by", help="Sweep report only: config field the depth curves are grouped by."),
) -> None:
    """Rebuild report.html from a run folder's CSVs, or build the sweep report of a results store."""
    if folder.is_file():
        from .cli_study import is_store, sweep_report

        if is_store(folder):
            sweep_report(folder, out, metric=metric, x=x, y=y, group_by=group_by)
            return
    if not folder.is_dir() or not (folder / "metrics.csv").is_file():
        raise BadInput(f"The 'folder' parameter must be a run folder containing metrics.csv or a results store. Got {str(folder)!r} instead.")
    report_mod = _report_module()
    try:
        tables = report_mod.load_run(folder)
    except (ValueError, KeyError) as exc:
        raise BadInput(f"The 'folder' parameter must hold a readable run: {exc}") from None
    path = report_mod.write_report(tables, folder / "report.html", png=png)
    typer.echo(f"wrote {path}")


def _workers(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise BadInput(f"The 'workers' parameter must be an integer >= 1. Got {text!r} instead.")
    return value


def _report_module():
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise BadInput("The report needs plotly: pip install 'initscope[report]'.") from None
    from . import report

    return report


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"The 'out' parameter must be a folder. Got {str(out)!r}, which is a file.")


def _write_outputs(result, out: Path, *, report: bool, png: bool) -> None:
    """Write every output into a temporary sibling folder, then move them in together."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result.metrics.to_csv(tmp / "metrics.csv", index=False)
        result.spectra.to_csv(tmp / "spectra.csv", index=False)
        result.projections.to_csv(tmp / "projections.csv", index=False)
        result.weight_norms.to_csv(tmp / "weight_norms.csv", index=False)
        result.flags.to_csv(tmp / "flags.csv", index=False)
        # What data-driven initializers did (LSUV iterations) and init-training histories.
        if len(result.init_log):
            result.init_log.to_csv(tmp / "init_log.csv", index=False)
        if len(result.train_log):
            result.train_log.to_csv(tmp / "train_log.csv", index=False)
        (tmp / "config.toml").write_text(config_to_toml(result.config))
        if report:
            try:
                import plotly  # noqa: F401
            except ImportError:
                typer.echo("note: report.html skipped (pip install 'initscope[report]' for it)", err=True)
            else:
                from .report import write_report

                write_report(result, tmp / "report.html", png=png)
        out.mkdir(exist_ok=True)
        # An earlier run's report or figures must not sit beside this run's CSVs.
        for stale in (REPORT_OUTPUTS - {item.name for item in tmp.iterdir()}):
            if (out / stale).is_dir():
                shutil.rmtree(out / stale)
            elif (out / stale).exists():
                (out / stale).unlink()
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if item.is_dir():
                if target.exists():
                    shutil.rmtree(target)
                os.replace(item, target)
            else:
                os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


from .cli_torch import inspect_command  # noqa: E402  (torch is imported only when the command runs)

app.command("inspect")(inspect_command)

from .cli_compare import compare_fixes_command  # noqa: E402
from .cli_fixes import certify_command  # noqa: E402
from .cli_study import results_command, sweep_command  # noqa: E402

app.command("certify")(certify_command)
app.command("compare-fixes")(compare_fixes_command)
app.command("sweep")(sweep_command)
app.command("results")(results_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # bare `initscope` asks what it can do; that is not an error
        args = ["--help"]
    try:
        status = app(args=args, prog_name="initscope", standalone_mode=False)
    except BadInput as exc:
        # One line, even when a parser's message (TOML, CSV) spans several.
        typer.echo(f"initscope: error: {' '.join(str(exc).splitlines())}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("initscope: aborted", err=True)
        return 1
    except _UsageError as exc:
        # Usage errors (unknown flag, missing argument): one line, exit 2.
        message = " ".join(exc.format_message().split())
        typer.echo(f"initscope: error: {message}", err=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - the contract: unexpected means exit 1 with the reason
        typer.echo(f"initscope: unexpected error: {type(exc).__name__}: {exc}", err=True)
        return 1
    # Without standalone mode, click hands back an Exit's code instead of raising it.
    return status if isinstance(status, int) else 0


def entry() -> None:
    sys.exit(main())
