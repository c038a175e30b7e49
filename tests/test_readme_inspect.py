"""The README's `initscope inspect` examples run as printed from a clone (examples/ holds their inputs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def readme_inspect_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Your own PyTorch model: `initscope inspect`", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("initscope inspect")]


def test_the_shipped_inputs_are_what_make_inputs_writes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_inputs", ROOT / "examples" / "make_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    for name in ("x.npy", "labels.npy", "ids.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / name), np.load(ROOT / "examples" / name))


@pytest.mark.slow
@pytest.mark.parametrize("line", readme_inspect_lines())
def test_readme_inspect_example_runs_as_printed(line, tmp_path, monkeypatch, capsys):
    from initscope.cli import main

    monkeypatch.chdir(ROOT)
    args = shlex.split(line)[1:]
    code = main([*args, "--no-report", "--quiet", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "layers.csv").is_file()
