"""`show()` outside a notebook: one folder per process for its pages, and the folders of ended processes
removed, instead of a new temporary folder left behind per call."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import webbrowser

import pytest

import initscope
from initscope.report import notebook


def test_show_reuses_one_folder_and_removes_ended_processes_folders(tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True).stdout.strip()
    (tmp_path / f"initscope-report-{ended}").mkdir()
    (tmp_path / f"initscope-report-{ended}" / "report-1.html").write_text("old")
    (tmp_path / "initscope-report-notapid").mkdir()  # not ours to judge: kept
    result = initscope.run(depth=2, trials=1, width=8, samples=10, metrics=["rms"])
    first, second = notebook.show(result), notebook.show(result)
    assert first != second and first.parent == second.parent == tmp_path / f"initscope-report-{os.getpid()}"
    assert first.is_file() and second.is_file() and len(opened) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"initscope-report-{os.getpid()}",
                                                                 "initscope-report-notapid"])
