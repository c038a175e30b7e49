"""What every initscope command shares: exit codes, signals, output folders, shared options, config flags.

- `run_app(app, args)`: one line on stderr and exit 2 for bad input (`BadInput`),
  1 for anything unexpected, 130 for Ctrl-C and 143 for SIGTERM (the temporary
  folder removed first), the command's own status otherwise. `exit_process`
  ends the process without waiting for worker threads after an interrupt.
- `output_folder(out, command=..., overwrite=...)`: the output folder of a
  command (`initscope.study.writer.Output`): checked before anything is
  computed, written whole or not at all, never losing a file initscope did not write.
- `write_files`, `write_run`: the output writer's (`initscope.study.run_files`), with the note that
  report.html was skipped when plotly is missing.
- `Out`, `Overwrite`, `workers_option`/`parse_workers`, `has_report_extra`:
  options and checks declared once for every command.
- `ConfigFlag`: the run config's flags, declared once, so that `run` and
  `certify` (and any command that builds a Config) take exactly the same ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import shlex
import signal
import sys
import threading
import typing
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

try:  # typer ≥ 0.16 vendors click; older ones use the installed click
    from typer._click.exceptions import ClickException as UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException as UsageError

__all__ = ["BadInput", "Terminated", "run_app", "exit_process", "drawing_imports", "output_folder", "check_output", "write_files", "write_run",
           "Out", "Overwrite", "workers_option", "parse_workers", "has_report_extra", "command_line",
           "with_config_flags", "say_ignored", "ConfigFlag", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "memory_plan_warnings",
           "MemoryLimit"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_HANGUP = 129  # 128 + SIGHUP
_ARGV: contextvars.ContextVar[list[str]] = contextvars.ContextVar("initscope_argv", default=[])


class BadInput(Exception):
    """User input a command rejects with exit status 2 (one line on stderr, under any app)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C's KeyboardInterrupt is, so that the same clean-up runs."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_app(app: typer.Typer, args: list[str]) -> int:
    """Run a Typer app without its standalone handling; map outcomes to exit statuses."""
    token = _ARGV.set(list(args))
    try:
        with _sigterm_raises() as terminated:
            status = _run(app, args)
    finally:
        _ARGV.reset(token)
    if status == EXIT_INTERRUPTED:
        typer.echo("initscope: interrupted; nothing was left half-written", err=True)
        return 128 + terminated[0] if terminated else EXIT_INTERRUPTED
    return status


def _run(app: typer.Typer, args: list[str]) -> int:
    try:
        status = app(args=args, prog_name="initscope", standalone_mode=False)
    except BadInput as exc:
        # One line, even when a parser's message (TOML, CSV) spans several.
        typer.echo(f"initscope: error: {one_line(exc)}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:  # typer turns it into Exit(130); older ones into Abort, below
        return EXIT_INTERRUPTED
    except typer.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        typer.echo("initscope: aborted", err=True)
        return 1
    except UsageError as exc:  # unknown flag, missing argument
        typer.echo(f"initscope: error: {one_line(exc.format_message())}", err=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - the contract: unexpected means exit 1 with the reason
        plugin = _plugin_error(exc)
        if plugin is not None:  # a user's plugin failed: named, and bad input like any other (exit 2)
            typer.echo(f"initscope: error: {one_line(plugin)}", err=True)
            return 2
        typer.echo(f"initscope: unexpected error: {type(exc).__name__}: {exc}", err=True)
        return 1
    # Without standalone mode, click hands back an Exit's code instead of raising it.
    return status if isinstance(status, int) else 0


def _plugin_error(exc: BaseException | None) -> BaseException | None:
    """The plugin's failure that exc is or was raised from (a worker may wrap it), else None."""
    from initscope.study.plugins import PluginError

    for _ in range(8):
        if exc is None or isinstance(exc, PluginError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[list[int]]:
    """While a command runs, SIGTERM and SIGHUP (the terminal closed) raise `Terminated` in the main thread
    (their default would kill the process on the spot, leaving the temporary folder behind). Yields a list
    that records the signal; the exit status is then 128 + its number (143, 129)."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum, frame):
        seen.append(signum)
        raise Terminated()

    signals = (signal.SIGTERM,) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield seen
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


def exit_process(status: int) -> typing.NoReturn:
    """End the process with `status`. After an interrupt, worker threads may still be inside a
    chunk of trials; the interpreter would wait for them at exit, so leave without waiting."""
    if status in (EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_HANGUP):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)
    sys.exit(status)


def args_or_help(argv: list[str] | None) -> list[str]:
    args = list(sys.argv[1:] if argv is None else argv)
    return args or ["--help"]  # bare `initscope` asks what it can do; not an error


def command_line() -> str:
    """The command line being run, for the output folder's marker."""
    return shlex.join(["initscope", *_ARGV.get()])


@contextlib.contextmanager
def memory_plan_warnings() -> Iterator[None]:
    """Inside the block, a MemoryPlanWarning (a run split into smaller chunks to fit the memory budget)
    becomes one `warning: ...` line on stderr per message; other warnings go on as they would."""
    import warnings

    from initscope.study.memory import MemoryPlanWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MemoryPlanWarning)
        yield
    seen: set[str] = set()
    registry: dict = {}
    for w in caught:
        if not issubclass(w.category, MemoryPlanWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=registry)
        elif str(w.message) not in seen:
            seen.add(str(w.message))
            typer.echo(f"warning: {w.message}", err=True)


# --- options every command shares -------------------------------------------------------------

Out = Annotated[Optional[str], typer.Option("--out", metavar="DIR", help="Output folder.")]
MemoryLimit = Annotated[Optional[str], typer.Option(
    "--memory-limit", metavar="SIZE", help="Memory budget, e.g. 8GiB (default: 80% of available memory).")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Write into an output folder that holds files initscope did not write "
                        "(only initscope's own file names are written; nothing else is touched).")]


def workers_option(help_text: str) -> Any:
    """The `--workers INT` option, read as text and checked by `parse_workers` (one message everywhere)."""
    return Annotated[Optional[str], typer.Option("--workers", metavar="INT", help=help_text)]


def parse_workers(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadInput(f"The 'workers' parameter must be an integer >= 1. Got {text!r} instead.")
    return value


def has_report_extra(*, required: bool = False) -> bool:
    """Whether plotly (the 'report' extra) is installed. required: bad input without it; otherwise a
    note on stderr says the page was skipped."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        if required:
            raise BadInput("The report needs plotly: pip install 'initscope[report]'.") from None
        typer.echo("note: report.html skipped (pip install 'initscope[report]' for it)", err=True)
        return False
    return True


# --- output folders ----------------------------------------------------------------------------


@contextlib.contextmanager
def output_folder(out: str | os.PathLike | None, *, command: str, overwrite: bool = False,
                  replace: bool = True, writes: tuple[str, ...] = ()) -> Iterator[Path]:
    """Check `out` now (bad input before any computing) and yield the temporary folder to write into;
    the files reach `out` when the block ends without an exception (see `initscope.study.writer`)."""
    from initscope.study.writer import Output, OutputError

    try:
        output = Output(out, command=command, line=command_line(), overwrite=overwrite, replace=replace,
                        writes=writes)
        with output as folder:
            yield folder
    except OutputError as exc:
        raise BadInput(str(exc)) from None


def check_output(out: str | os.PathLike | None, *, command: str, overwrite: bool = False, replace: bool = True,
                 writes: tuple[str, ...] = ()) -> None:
    """`output_folder`'s checks alone, leaving nothing behind (bad input before a long computation)."""
    from initscope.study.writer import Output, OutputError

    try:
        Output.check(out, command=command, overwrite=overwrite, replace=replace, writes=writes)
    except OutputError as exc:
        raise BadInput(str(exc)) from None


def write_files(folder: Path, tables: dict[str, Any], texts: dict[str, str], *, report_source=None,
                png: bool = False) -> None:
    """`initscope.study.run_files.write_files`, with report.html skipped (and a note) without plotly."""
    from initscope.study.run_files import write_files as write

    if png and report_source is None:
        typer.echo("note: --png draws the report's figures: with --no-report no figures are written", err=True)
    report = _report(report_source, png=png)
    drawing_imports(report=report is not None, png=png and report is not None)
    write(folder, tables, texts, report=report)


def write_run(folder: Path, result, *, report: bool, png: bool) -> None:
    """`initscope.study.run_files.write_run`, with report.html skipped (and a note) without plotly."""
    from initscope.study.run_files import write_run as write

    if png and not report:
        typer.echo("note: --png draws the report's figures: with --no-report no figures are written", err=True)
    writer = _report(result if report else None, png=png)
    drawing_imports(report=writer is not None, png=png and writer is not None)
    write(folder, result, report=writer)


def _report(source, *, png: bool):
    """The report page's writer for `source`, or None without a source or without plotly (with a note)."""
    if source is None or not has_report_extra():
        return None
    from initscope.report.page import page_writer

    return page_writer(source, png=png)


# What drawing the report and its figures imports, all of it: imported before drawing starts, so that a
# Ctrl-C while drawing lands in our code (exit 130), never half-way through an import (which leaves a
# module half-made, and the next import of it fails with a ModuleNotFoundError and a traceback).
_REPORT_MODULES = ("plotly.graph_objects", "plotly.io", "plotly.subplots", "plotly.offline", "plotly.colors",
                   "plotly.graph_objs.layout", "plotly.graph_objs.layout._template", "plotly.io._html",
                   "plotly.io.json", "plotly.io._json", "plotly.io._utils")
_PNG_MODULES = ("matplotlib.figure", "matplotlib.animation", "matplotlib.backends.backend_agg", "matplotlib.colors",
                "matplotlib.cm", "matplotlib.patheffects", "matplotlib.ticker", "PIL.Image", "PIL.PngImagePlugin",
                "PIL.GifImagePlugin", "PIL.BmpImagePlugin", "PIL.JpegImagePlugin", "PIL.PpmImagePlugin")


def drawing_imports(*, report: bool, png: bool) -> None:
    """Import what writing report.html (report) and figures/ (png) will import, now."""
    import importlib

    for name in (_REPORT_MODULES if report else ()) + (_PNG_MODULES if png else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the writer says what is missing, as it would have


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
    samples = _flag("Samples per trial (default: 100; a data file or dataset: all its rows, and fewer draw a random "
                    "subset per trial).", "--samples", metavar="INT")
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
    init_train_steps = _flag("Init-training steps (default: 100).", "--init-train-steps", metavar="INT")
    init_train_lr = _flag("Init-training step size (default: 0.01; forward-gradient needs ~1/P of backprop's: "
                          "1e-4 on the seed's net).", "--init-train-lr", metavar="FLOAT")
    init_train_batch = _flag("Samples per init-training step, 0 = all (default: 0).", "--init-train-batch",
                             metavar="INT")
    steps = _flag("Train on the task for this many steps, measuring every metric along the way "
                  "(default: 0, nothing trained).", "--steps", metavar="INT")
    optimizer = _flag("sgd, momentum or adam: the task training's optimiser (default: sgd).", "--optimizer")
    lr = _flag("The task training's learning rate (default: 0.01).", "--lr", metavar="FLOAT")
    batch_size = _flag("Samples per training step, 0 = all (default: 0).", "--batch-size", metavar="INT")
    measure_at = _flag("Comma-separated steps at which every metric is measured (default: 0,1,2,5,10,20,50,... "
                       "and the last).", "--measure-at", metavar="STEPS")
    task = _flag("auto, regression or classification (default: auto: a dataset's or column's integer labels "
                 "are classes).", "--task")
    # Old names of renamed fields, hidden from --help and still read (with a warning).
    train_steps = Annotated[Optional[str], typer.Option("--train-steps", hidden=True)]
    train_lr = Annotated[Optional[str], typer.Option("--train-lr", hidden=True)]
    train_batch = Annotated[Optional[str], typer.Option("--train-batch", hidden=True)]


def say_ignored(given: dict, config) -> None:
    """A note on stderr for each flag the config did not take as given (a data file or dataset sets
    input_dim from its columns): a value silently ignored would read as a value used."""
    wanted = given.get("input_dim")
    if wanted is not None and config.data_is_fixed and str(wanted).strip() != str(config.input_dim):
        typer.echo(f"note: --input-dim {str(wanted).strip()} ignored: data {config.data!r} has {config.input_dim} "
                   f"column(s), which set input_dim", err=True)


def with_config_flags(command):
    """Give a Typer command one flag per config field, passed to it as `fields` (a dict).

    The flags are appended to the command's own parameters in the signature
    Typer reads, so every command that builds a Config takes exactly the same
    flags, declared once in `ConfigFlag`.
    """
    from initscope.study.config import DEPRECATED_FIELDS, FIELD_NAMES

    names = FIELD_NAMES + tuple(DEPRECATED_FIELDS)
    hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "fields"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=getattr(ConfigFlag, name)) for name in names]

    @functools.wraps(command)
    def wrapper(**kwargs):
        fields = {name: kwargs.pop(name) for name in names}
        for old, new in DEPRECATED_FIELDS.items():
            value = fields.pop(old)
            if value is not None:
                flag, renamed = "--" + old.replace("_", "-"), "--" + new.replace("_", "-")
                typer.echo(f"warning: {flag} is deprecated: it is renamed {renamed} (it tunes the "
                           f"initialization, not the task training of --steps)", err=True)
                if fields[new] is None:
                    fields[new] = value
        return command(fields=fields, **kwargs)

    params = own + added
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # Typer must read the new signature, not the original's
    return wrapper
