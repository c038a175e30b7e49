"""Ctrl-C while `--png` draws: everything drawing imports is imported before drawing starts, so an interrupt
lands in initscope's code (exit 130), never inside an import that it would leave half-made."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    import initscope
    from initscope.cli.common import drawing_imports
    result = initscope.run(depth=3, width=8, samples=20, trials=2)
    drawing_imports(report=True, png=True)
    before = set(sys.modules)
    from initscope.report.page import page_writer
    from initscope.study.run_files import write_run
    with tempfile.TemporaryDirectory() as tmp:
        write_run(Path(tmp), result, report=page_writer(result, png=True))
        assert (Path(tmp) / "figures").is_dir()
    print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("matplotlib", "PIL", "plotly")))
""")


@pytest.mark.slow
def test_drawing_imports_nothing_once_started():
    pytest.importorskip("matplotlib")
    pytest.importorskip("plotly")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=SRC))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_png_without_the_report_says_so(tmp_path, capsys):
    from initscope.cli import main

    assert main(["run", "--depth", "2", "--trials", "1", "--png", "--no-report", "--quiet",
                 "--out", str(tmp_path / "o")]) == 0
    assert "with --no-report no figures are written" in capsys.readouterr().err
    assert not (tmp_path / "o" / "figures").exists()
