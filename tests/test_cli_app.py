"""Start-up: `import initscope` and the CLI's help, version and completion stay light (DESIGN.md, "Start-up").

Each check runs in a fresh interpreter, because this test process has long
since imported pandas and scipy. The commands are registered lazily
(`initscope.cli.app.COMMANDS`); the tests also check that every one of them
loads and that its listed help is its own docstring's.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

from initscope.cli.app import COMMANDS, load_command, main

HEAVY = ("pandas", "scipy.stats", "scipy.special", "plotly", "torch", "matplotlib", "typer.rich_utils")
COMMAND_MODULES = tuple(sorted({spec.module for spec in COMMANDS.values()}))
LIGHT = {"initscope.cli", "initscope.cli.app", "initscope.cli.common"}


def loaded_after(code: str) -> tuple[set[str], str]:
    """(heavy and command modules loaded, stdout) after running `code` in a fresh interpreter."""
    probe = (
        "import sys, json, io, contextlib\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + f"names = {list(HEAVY + COMMAND_MODULES)!r}\n"
        "names += [n for n in sys.modules if n.startswith('initscope.') and n not in names]\n"
        "sys.__stdout__.write(json.dumps([[n for n in names if n in sys.modules], out.getvalue()]))\n"
    )
    env = dict(os.environ, COLUMNS="100")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    names, out = json.loads(done.stdout)
    return set(names), out


def test_import_initscope_loads_no_heavy_module():
    loaded, _ = loaded_after("import initscope")
    assert not loaded & set(HEAVY), f"`import initscope` imported {sorted(loaded & set(HEAVY))}"
    assert not {n for n in loaded if n.startswith("initscope.")}, sorted(loaded)


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--version"], []])
def test_help_and_version_load_no_command_module(argv):
    loaded, out = loaded_after(
        "from initscope.cli.app import main\n"
        f"status = main({argv!r})\n"
        "assert status == 0, status"
    )
    # Only the group itself: no command module (and so no study, core or report module) is imported.
    assert loaded <= LIGHT, f"`initscope {' '.join(argv)}` imported {sorted(loaded - LIGHT)}"
    if argv == ["--version"]:
        from initscope import __version__

        assert out.strip() == f"initscope {__version__}"
    else:
        for name in COMMANDS:  # every command listed, by name, without loading it
            assert name in out


def test_completion_of_command_names_loads_no_command_module(monkeypatch):
    env = dict(os.environ, COMP_WORDS="initscope re", COMP_CWORD="1", _INITSCOPE_COMPLETE="complete_bash")
    probe = ("import sys\nfrom initscope.cli.app import main\n"
             "try:\n    main([])\nexcept SystemExit:\n    pass\n"
             f"print('LOADED', sorted(n for n in sys.modules if n in {list(HEAVY)!r} "
             f"or n.startswith('initscope.') and n not in {sorted(LIGHT)!r}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    words = done.stdout.split()
    assert {"report", "results"} <= set(words) and "run" not in words
    assert done.stdout.strip().endswith("LOADED []")


@pytest.mark.slow
def test_completion_of_a_command_option_loads_that_command():
    env = dict(os.environ, COMP_WORDS="initscope run --dep", COMP_CWORD="2", _INITSCOPE_COMPLETE="complete_bash")
    probe = "from initscope.cli.app import main\ntry:\n    main([])\nexcept SystemExit:\n    pass\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["--depth"]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_lazy_command_loads_and_its_listed_help_is_its_docstring(name):
    command = load_command(name)
    assert command.name == name
    function = getattr(__import__(COMMANDS[name].module, fromlist=["_"]), COMMANDS[name].attr)
    first = " ".join(inspect.getdoc(function).split("\n\n")[0].split())
    assert COMMANDS[name].short_help == first


@pytest.mark.parametrize("name", list(COMMANDS))
def test_dash_h_shows_each_commands_own_help(capsys, name):
    assert main([name, "-h"]) == 0
    out = capsys.readouterr().out
    assert f"initscope {name}" in out


def test_unknown_command_suggests_the_close_one(capsys):
    assert main(["rn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such command 'rn'" in err and "Did you mean 'run'?" in err


def test_version_matches_the_package_metadata(capsys):
    from initscope import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"initscope {__version__}\n"
