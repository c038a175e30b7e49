"""Shell completion as the README tells people to set it up: bash, zsh and fish scripts, each spelling of
the request, and completions that answer in a real bash."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def initscope(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=SRC, **env)
    for name in ("COMP_WORDS", "COMP_CWORD", "_TYPER_COMPLETE_ARGS"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", *args],
                          capture_output=True, text=True, env=full, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize(("value", "first"), [
    ("complete_bash", "_initscope_completion()"), ("source_bash", "_initscope_completion()"),
    ("bash_source", "_initscope_completion()"), ("zsh_source", "#compdef initscope"),
    ("complete_zsh", "#compdef initscope"), ("source_fish", "complete --command initscope"),
])
def test_every_spelling_prints_the_script(tmp_path, value, first):
    done = initscope(tmp_path, _INITSCOPE_COMPLETE=value)
    assert done.returncode == 0 and done.stdout.strip().startswith(first), (done.stdout[:200], done.stderr)


@pytest.mark.parametrize(("shell", "first"), [("zsh", "#compdef initscope"), ("fish", "complete --command"),
                                               ("bash", "_initscope_completion()")])
def test_show_completion_prints_the_shell_named(tmp_path, shell, first):
    for args in (["--show-completion", shell], [f"--show-completion={shell}"]):
        done = initscope(tmp_path, *args)
        assert done.returncode == 0 and done.stdout.strip().startswith(first), done.stdout[:200]


def test_bash_completes_commands_and_options(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    wrapper = tmp_path / "bin" / "initscope"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from initscope.cli import entry; entry()' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    script = ('eval "$(_INITSCOPE_COMPLETE=complete_bash initscope)"; '
              'COMP_WORDS=(initscope comp); COMP_CWORD=1; _initscope_completion initscope; echo "${COMPREPLY[@]}"; '
              'COMP_WORDS=(initscope run --dep); COMP_CWORD=2; _initscope_completion initscope; echo "${COMPREPLY[@]}"')
    env = dict(os.environ, PYTHONPATH=SRC, PATH=f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([bash, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["compare-fixes"] and "--depth" in lines[1].split(), done.stdout
