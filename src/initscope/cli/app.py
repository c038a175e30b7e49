"""The `initscope` command line: a group whose commands load only when they run.

`initscope --help`, `-h`, `--version` and shell completion of command names
import none of the command modules (and so neither pandas, scipy nor
plotly): each command is named here with its one-line help, and its module
(`initscope.cli.run`, `.inspect`, `.certify`, `.compare`, `.sweep`, `.phase`, `.explore`) is
imported when the command is resolved to run, or asked for its own help.

Plugins: `initscope --plugin MODULE_OR_FILE.py COMMAND ...` (repeatable, before the
command) imports a user's module that calls `initscope.register_metric`,
`register_initializer` or `register_activation` before the command runs; the
environment variable INITSCOPE_PLUGINS (comma-separated) does the same, and
sweep workers (processes, Dask) load the same plugins.

Bad input is one line on stderr and exit status 2; anything unexpected is
exit status 1; Ctrl-C is 130 and SIGTERM 143 (`initscope.cli.common.run_app`).

Shell completion (bash, zsh, fish), e.g. in ~/.bashrc:

    eval "$(_INITSCOPE_COMPLETE=source_bash initscope)"

(`source_zsh`, `source_fish`; click's `bash_source` spelling and a hand-typed
`complete_bash` print the same script), or `initscope --show-completion SHELL`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from initscope import __version__
from initscope.cli.common import BadInput, args_or_help, exit_process, run_app

try:  # typer ≥ 0.16 vendors click; older ones use the installed click
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed typer
    import click

__all__ = ["app", "main", "entry", "BadInput", "OUTPUT_FILES", "COMMANDS", "LazyGroup"]

OUTPUT_FILES = ("metrics.csv", "spectra.csv", "projections.csv", "weight_norms.csv", "flags.csv", "config.toml")


class Lazy(NamedTuple):
    """Where a command lives and its one-line help (checked against its docstring by the tests)."""

    module: str
    attr: str
    short_help: str


# In the order `initscope --help` lists them.
COMMANDS: dict[str, Lazy] = {
    "run": Lazy("initscope.cli.run", "run_command",
                "Run the study (defaults: the seed post's) and write tidy CSVs, config.toml and report.html."),
    "report": Lazy("initscope.cli.run", "report_command",
                   "Rebuild report.html from a run folder's CSVs, or build the sweep report of a results store."),
    "inspect": Lazy("initscope.cli.inspect", "inspect_command",
                    "Run your model on a batch and write per-layer metrics, spectra, flags and report.html."),
    "certify": Lazy("initscope.cli.certify", "certify_command",
                    "Certify per layer that no two samples merge and no input direction is lost (exit 0 yes, 3 no)."),
    "compare-fixes": Lazy("initscope.cli.compare", "compare_fixes_command",
                          "Run the seed's network (input_dim = width = 40) under every fix and rank them by what "
                          "survives."),
    "sweep": Lazy("initscope.cli.sweep", "sweep_command",
                  "Run every configuration of a sweep file into a results store, skipping what it already holds."),
    "results": Lazy("initscope.cli.sweep", "results_command",
                    "Summarise a results store (configurations, trials done/failed, rows per metric) and export a "
                    "table."),
    "phase": Lazy("initscope.cli.phase", "phase_command",
                  "Draw the order-to-chaos phase diagram (χ₁ = 1 line, ξ_c and ξ_q) and optionally measure ξ_c."),
    "explore": Lazy("initscope.cli.explore", "explore_command",
                    "Serve an interactive page: every config field a control, every view redrawn as you change them."),
}

_CONTEXT = {"help_option_names": ["-h", "--help"]}


def load_command(name: str) -> click.Command:
    """The real click command `name`: its module imported, its function turned into a command by Typer."""
    spec = COMMANDS[name]
    function = getattr(importlib.import_module(spec.module), spec.attr)
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, context_settings=_CONTEXT)
    single.command(name)(function)
    return typer.main.get_command(single)


class LazyGroup(TyperGroup):
    """A Typer group that lists `COMMANDS` by name and imports one only to run it.

    Listing (the group's help, completion of command names) gets a stand-in
    that carries the name and the one-line help; resolving a command to run
    it, or to complete its options, loads the real one.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            return self.commands.get(cmd_name) or TyperCommand(cmd_name, help=COMMANDS[cmd_name].short_help,
                                                                short_help=COMMANDS[cmd_name].short_help)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            name, cmd, rest = super().resolve_command(ctx, args)
        except click.exceptions.UsageError as exc:
            close = difflib.get_close_matches(args[0], list(COMMANDS)) if args else []
            if close and "Did you mean" not in exc.message:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
            raise
        if name in COMMANDS and name not in self.commands:
            self.commands[name] = load_command(name)
        return name, (self.commands.get(name) or cmd), rest


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"initscope {__version__}")
        raise typer.Exit(0)


app = typer.Typer(
    cls=LazyGroup,
    # Plain click help for the group: typer's rich help imports rich and markdown-it (~0.1-0.3 s),
    # more than everything else `initscope --help` does. Each command's own help stays rich.
    rich_markup_mode=None,
    add_completion=True,
    no_args_is_help=True,
    help="See and measure what a neural network does to data at initialization, layer by layer.",
    pretty_exceptions_enable=False,
    context_settings=_CONTEXT,
)


def _load_plugins(plugins: list[str] | None) -> None:
    """Import INITSCOPE_PLUGINS' modules, then each --plugin, before the command parses its options.

    Sweeps hand the loaded plugins to their worker processes (`executors.run_config`).
    """
    from initscope.study.plugins import load_plugins

    try:
        load_plugins()
        load_plugins(plugins or [])
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print initscope's version and exit."),
    plugin: list[str] = typer.Option(
        None, "--plugin", metavar="MODULE_OR_FILE.py",
        help="Import a module (by name, or a .py file) that registers metrics, initializers or activations, "
             "before the command runs; repeatable, and given before the command: "
             "`initscope --plugin my_metrics.py run --metrics rms,my_metric`. INITSCOPE_PLUGINS "
             "(comma-separated) is loaded too."),
) -> None:
    """See and measure what a neural network does to data at initialization, layer by layer."""
    _load_plugins(plugin)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected, 3 not certified)."""
    args = args_or_help(argv)
    _completion_request()
    shown = _show_completion(args)
    if shown is not None:
        return shown
    return run_app(app, args)


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
_COMPLETE_VAR = "_INITSCOPE_COMPLETE"
# What a shell's completion function sets when it asks for completions: without it, the request is a
# person's `eval "$(_INITSCOPE_COMPLETE=complete_bash initscope)"`, who wants the script.
_ASKING = {"bash": "COMP_WORDS", "zsh": "_TYPER_COMPLETE_ARGS", "fish": "_TYPER_COMPLETE_ARGS",
           "powershell": "_TYPER_COMPLETE_ARGS", "pwsh": "_TYPER_COMPLETE_ARGS"}


def _completion_request() -> None:
    """Read _INITSCOPE_COMPLETE as every spelling people use: click's `bash_source` (and zsh_, fish_),
    Typer's `source_bash`, and `complete_bash` typed by hand (the script, not a crash on COMP_WORDS)."""
    import os

    value = os.environ.get(_COMPLETE_VAR)
    if not value:
        return
    shell, _, action = value.partition("_")
    if action == "source" and shell in SHELLS:  # click's spelling
        os.environ[_COMPLETE_VAR] = f"source_{shell}"
    elif shell == "complete" and action in SHELLS and _ASKING[action] not in os.environ:
        os.environ[_COMPLETE_VAR] = f"source_{action}"


def _show_completion(args: list[str]) -> int | None:
    """`--show-completion SHELL` (or `=SHELL`) prints that shell's script; Typer's own option detects the
    running shell and ignores the name given. None when the option is not given with a shell."""
    for i, arg in enumerate(args):
        if arg == "--show-completion" and i + 1 < len(args) and args[i + 1] in SHELLS:
            shell = args[i + 1]
        elif arg.startswith("--show-completion=") and arg.split("=", 1)[1] in SHELLS:
            shell = arg.split("=", 1)[1]
        else:
            continue
        from typer.completion import get_completion_script

        typer.echo(get_completion_script(prog_name="initscope", complete_var=_COMPLETE_VAR, shell=shell))
        return 0
    return None


def entry() -> None:
    exit_process(main())
