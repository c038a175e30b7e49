"""What every initscope command shares: exit codes, atomic output folders, config flags.

- `run_app(app, args)`: one line on stderr and exit 2 for bad input, 1 for
  anything unexpected, the command's own status otherwise.
- `write_folder(out, tables, texts, report_source, ...)`: every file goes to a
  temporary sibling folder first and is moved in only when all succeeded.
- `ConfigFlags`: the run config's flags, declared once, so that `run` and
  `certify` (and any command that builds a Config) take exactly the same ones.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import sys
import tempfile
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

try:  # typer ≥ 0.16 vendors click; older ones use the installed click
    from typer._click.exceptions import ClickException as UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException as UsageError

__all__ = ["BadInput", "run_app", "write_folder", "OPTIONAL_OUTPUTS", "with_config_flags", "ConfigFlag"]

# Files a run writes only sometimes: an earlier run's copy must not survive beside new CSVs.
OPTIONAL_OUTPUTS = frozenset({"report.html", "figures", "init_log.csv", "train_log.csv", "jacobian_spectra.csv"})


class BadInput(Exception):
    """User input a command rejects with exit status 2."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_app(app: typer.Typer, args: list[str]) -> int:
    """Run a Typer app without its standalone handling; map outcomes to exit statuses."""
    try:
        status = app(args=args, prog_name="initscope", standalone_mode=False)
    except BadInput as exc:
        # One line, even when a parser's message (TOML, CSV) spans several.
        typer.echo(f"initscope: error: {one_line(exc)}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("initscope: aborted", err=True)
        return 1
    except UsageError as exc:  # unknown flag, missing argument
        typer.echo(f"initscope: error: {one_line(exc.format_message())}", err=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - the contract: unexpected means exit 1 with the reason
        typer.echo(f"initscope: unexpected error: {type(exc).__name__}: {exc}", err=True)
        return 1
    # Without standalone mode, click hands back an Exit's code instead of raising it.
    return status if isinstance(status, int) else 0


def args_or_help(argv: list[str] | None) -> list[str]:
    args = list(sys.argv[1:] if argv is None else argv)
    return args or ["--help"]  # bare `initscope` asks what it can do; not an error


def write_folder(out: Path, tables: dict[str, Any], texts: dict[str, str], *, report_source=None,
                 png: bool = False) -> None:
    """Write tables (name -> DataFrame, as NAME.csv), texts (file name -> str) and, when
    report_source is given, report.html into a temporary sibling folder, then move them in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False)
        for name, text in texts.items():
            (tmp / name).write_text(text)
        if report_source is not None:
            try:
                import plotly  # noqa: F401
            except ImportError:
                typer.echo("note: report.html skipped (pip install 'initscope[report]' for it)", err=True)
            else:
                from initscope.report import write_report

                write_report(report_source, tmp / "report.html", png=png)
        out.mkdir(exist_ok=True)
        produced = {item.name for item in tmp.iterdir()}
        for stale in OPTIONAL_OUTPUTS - produced:
            if (out / stale).is_dir():
                shutil.rmtree(out / stale)
            elif (out / stale).exists():
                (out / stale).unlink()
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if item.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _flag(help_text: str, *names: str, metavar: str | None = None):
    return Annotated[Optional[str], typer.Option(*names, metavar=metavar, help=help_text)]


class ConfigFlag:
    """The run config's flags as annotated types: `depth: ConfigFlag.depth = None`.

    Numbers are read as text and validated by `make_config`, so that a bad
    value gets the same one-line message (naming parameter and value) as in a
    TOML file.
    """

    init = _flag("Comma-separated initializers to compare (default: normal,sphere).", "--init")
    gain = _flag("Gain of the initializers (default: each one's own).", "--gain", metavar="FLOAT")
    data = _flag("ball, sphere, box, normal, ball-spaced, box-spaced, digits, iris, wine, breast_cancer, "
                 "diabetes, or a .csv/.npy path (default: ball).", "--data")
    input_dim = _flag("Input dimension (synthetic data) (default: 3).", "--input-dim", metavar="INT")
    width = _flag("Units per hidden layer (default: 40).", "--width", metavar="INT")
    depth = _flag("Hidden layers (default: 10).", "--depth", metavar="INT")
    samples = _flag("Samples per trial (default: 100).", "--samples", metavar="INT")
    activation = _flag("relu, leaky_relu, tanh, gelu, identity (default: relu).", "--activation")
    shift = _flag("linspace, zeros, normal, uniform, quantile (default: linspace).", "--shift")
    shift_scale = _flag("Scale of the shifts (default: 1).", "--shift-scale", metavar="FLOAT")
    residual = _flag("Residual branch scale alpha, 0 = none (default: 0).", "--residual", metavar="FLOAT")
    norm = _flag("none, layer, batch (default: none).", "--norm")
    readout = _flag("zeros (the seed) or init (default: zeros).", "--readout")
    target = _flag("cos-norm, norm, sin-sum, gaussian-bump, dataset, column:NAME (default: cos-norm).", "--target")
    trials = _flag("Independent draws per initializer (default: 10).", "--trials", metavar="INT")
    seed = _flag("Seed of every random draw (default: 0).", "--seed", metavar="INT")
    dtype = _flag("float64 or float32 (default: float64).", "--dtype")
    metrics = _flag("Comma-separated subset of metrics (default: all).", "--metrics")
    lsuv_tol = _flag("LSUV: stop when |Var - 1| < this (default: 0.01).", "--lsuv-tol", metavar="FLOAT")
    lsuv_max_iter = _flag("LSUV: most rescalings per layer (default: 10).", "--lsuv-max-iter", metavar="INT")
    init_train = _flag("none, forward-gradient, backprop: optimise the init for information first "
                       "(default: none).", "--init-train")
    train_steps = _flag("Init-training steps (default: 100).", "--train-steps", metavar="INT")
    train_lr = _flag("Init-training step size (default: 0.01; forward-gradient needs ~1/P of backprop's: "
                     "1e-4 on the seed's net).", "--train-lr", metavar="FLOAT")
    train_batch = _flag("Samples per init-training step, 0 = all (default: 0).", "--train-batch", metavar="INT")


def with_config_flags(command):
    """Give a Typer command one flag per config field, passed to it as `fields` (a dict).

    The flags are appended to the command's own parameters in the signature
    Typer reads, so every command that builds a Config takes exactly the same
    flags, declared once in `ConfigFlag`.
    """
    from initscope.study.config import FIELD_NAMES

    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "fields"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=getattr(ConfigFlag, name)) for name in FIELD_NAMES]

    @functools.wraps(command)
    def wrapper(**kwargs):
        fields = {name: kwargs.pop(name) for name in FIELD_NAMES}
        return command(fields=fields, **kwargs)

    params = own + added
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # Typer must read the new signature, not the original's
    return wrapper
