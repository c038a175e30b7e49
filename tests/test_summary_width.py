"""`initscope run`'s terminal output: the summary tables fit the terminal (fewer columns per table, never a
cut number), and --quiet keeps the verdict unless --no-verdict."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

import initscope
from initscope.cli.app import main
from initscope.cli.summary import _fmt, layer_summary, print_summary, summary_metrics

SMALL = ["--depth", "3", "--trials", "3", "--width", "12", "--samples", "20", "--no-report"]


@pytest.fixture(scope="module")
def result():
    return initscope.run(depth=4, trials=3, init="normal,sphere")


@pytest.mark.parametrize("width", [80, 100, 180])
def test_tables_fit_the_terminal_and_keep_every_number(result, width):
    buffer = io.StringIO()
    print_summary(result, console=Console(file=buffer, width=width, force_terminal=False))
    text = buffer.getvalue()
    table_lines = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line.rstrip()) for line in table_lines) <= width
    assert "…" not in "".join(table_lines)
    cells = {c.strip() for line in table_lines for c in re.split("[│┃]", line)}
    summary = layer_summary(result.metrics)
    for row in summary.itertuples():
        if row.metric in summary_metrics() and row.metric != "grad_norm":
            assert _fmt(row.mean, row.spread, 3) in cells, (row.metric, row.layer)
    if width == 180:  # wide enough: one table per initializer, as before
        assert text.count("(continued)") == 0
    else:
        assert text.count("(continued)") >= 2


def test_quiet_keeps_the_verdict_unless_no_verdict(tmp_path, capsys):
    assert main(["run", *SMALL, "--quiet", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "Verdict" in out and "┃" not in out
    assert main(["run", *SMALL, "--quiet", "--no-verdict", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out == ""
    assert main(["run", *SMALL, "--no-verdict", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "Verdict" not in out and "┃" in out
