"""Plugins that misbehave: they cannot change the run's arrays, and every failure names the plugin's entry,
its file and line, with exit 2 on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import initscope
from initscope.core import activations as A
from initscope.core import initializers as I
from initscope.core import metrics as M
from initscope.study import plugins
from initscope.study.plugins import PluginError

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = dict(depth=3, width=8, samples=20, trials=2, input_dim=3, shift="zeros")
HEADER = "import numpy as np\nimport initscope\n\n"


@pytest.fixture
def load(tmp_path):
    """load(source, name) writes a plugin file and loads it as --plugin does; unloads everything after."""
    before = {kind: set(registry) for kind, registry in
              (("m", M.METRICS), ("i", I.REGISTRY), ("a", A.ACTIVATIONS))}
    loaded: list[str] = []

    def go(source: str, name: str = "bad_plugin"):
        path = tmp_path / f"{name}.py"
        path.write_text(HEADER + textwrap.dedent(source))
        loaded.append(str(path.resolve()))
        initscope.load_plugins([str(path)])
        return path

    yield go
    for kind, registry in (("m", M.METRICS), ("i", I.REGISTRY), ("a", A.ACTIVATIONS)):
        for name in set(registry) - before[kind]:
            del registry[name]
    for key in loaded:
        module = plugins._LOADED.pop(key, None)
        if module is not None:
            sys.modules.pop(module.__name__, None)


def test_a_metric_that_writes_into_its_input_is_stopped_and_named(load):
    clean = initscope.run(metrics=["rms", "effective_rank"], **SMALL).metrics
    load('''
        def zeroing(S):
            S[...] = 0.0
            return S.mean(axis=(1, 2))

        initscope.register_metric("zeroing", zeroing)
    ''')
    with pytest.raises(PluginError, match=r"plugin metric 'zeroing' \(bad_plugin.py:6\) failed: it wrote into its input"):
        initscope.run(metrics=["zeroing", "rms", "effective_rank"], **SMALL)
    # The built-in metrics after it are what they are without it.
    again = initscope.run(metrics=["rms", "effective_rank"], **SMALL).metrics
    np.testing.assert_array_equal(again["value"].to_numpy(), clean["value"].to_numpy())


def test_a_metric_that_raises_or_answers_the_wrong_shape(load):
    load('''
        def broken(S):
            return 1 / 0

        def flat(S):
            return S.ravel()

        initscope.register_metric("broken", broken)
        initscope.register_metric("flat", flat)
    ''')
    with pytest.raises(PluginError, match=r"plugin metric 'broken' \(bad_plugin.py:6\) failed: ZeroDivisionError"):
        initscope.run(metrics=["broken"], **SMALL)
    with pytest.raises(PluginError, match=r"plugin metric 'flat' \(bad_plugin.py:8\) failed: it must return one value per trial"):
        initscope.run(metrics=["flat"], **SMALL)


def test_an_initializer_and_an_activation_that_fail(load):
    load('''
        def short(fan_in, fan_out, gain, rng):
            return rng.standard_normal((fan_in, fan_out - 1))

        def loud(z):
            raise RuntimeError("boom")

        initscope.register_initializer("short", short)
        initscope.register_activation("loud", loud, loud)
    ''')
    with pytest.raises(PluginError, match=r"plugin initializer 'short' \(bad_plugin.py:5\) failed: .*\(fan_in, fan_out\)"):
        initscope.run(init=["short"], metrics=["rms"], **SMALL)
    with pytest.raises(PluginError, match=r"plugin activation 'loud' \(bad_plugin.py:9\) failed: RuntimeError: boom"):
        initscope.run(activation="loud", metrics=["rms"], **SMALL)


def test_a_well_behaved_plugin_gives_the_same_numbers_guarded(load):
    load('''
        def max_abs(S):
            return np.abs(S).max(axis=(1, 2))

        initscope.register_metric("max_abs_ok", max_abs)
    ''', name="good_plugin")
    result = initscope.run(metrics=["rms", "max_abs_ok"], **SMALL)
    m = result.metrics
    rows = m[m["metric"] == "max_abs_ok"]
    assert len(rows) == SMALL["trials"] * (SMALL["depth"] + 1) * 2 and np.isfinite(rows["value"]).all()


def _cli(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])  # absolute: cwd is tmp_path
    return subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def test_cli_exit_2_naming_the_plugin(tmp_path):
    writer = tmp_path / "writer.py"
    writer.write_text(HEADER + "def w(S):\n    S += 1\n    return S.mean(axis=(1, 2))\n\n"
                      "initscope.register_metric('w', w)\n")
    done = _cli(["--plugin", str(writer), "run", "--metrics", "w,rms", "--depth", "2", "--trials", "1",
                 "--out", str(tmp_path / "o")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("initscope: error: plugin metric 'w' (writer.py:5) failed:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    quitter = tmp_path / "quitter.py"
    quitter.write_text("import sys\nsys.exit(0)\n")
    done = _cli(["--plugin", str(quitter), "run", "--depth", "1"], tmp_path)
    assert done.returncode == 2 and "sys.exit(0)" in done.stderr and "quitter.py" in done.stderr, done.stderr
    raiser = tmp_path / "raiser.py"
    raiser.write_text("x = 1\nraise KeyError('nope')\n")
    done = _cli(["--plugin", str(raiser), "run", "--depth", "1"], tmp_path)
    assert done.returncode == 2 and "raiser.py:2" in done.stderr and "KeyError" in done.stderr, done.stderr


def test_unreadable_plugin_files_are_refused_unread(tmp_path):
    from initscope.cli import main

    folder = tmp_path / "folder.py"
    folder.mkdir()
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    for path, words in ((folder, "a folder"), (fifo, "FIFO")):
        with pytest.raises(ValueError, match=f"'plugin' parameter must be a regular .py file.*{words}"):
            initscope.load_plugins([str(path)])
        assert main(["--plugin", str(path), "run", "--depth", "1"]) == 2
