"""`initscope compare-fixes`' terminal table and index page: whole names and words, never sentinels."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console

from initscope.cli.compare import LEGEND, first_lost, index_page, ranking_table
from initscope.study.fixes import FIXES


def fake_ranking() -> pd.DataFrame:
    """A ranking with every fix name (the longest set the width) and one fully certified fix."""
    n = len(FIXES)
    return pd.DataFrame({
        "depth": [10] * n, "fix": list(FIXES), "certified_share": [1.0] + [0.0] * (n - 1),
        "first_uncertified_layer": pd.array([None] + list(range(1, n)), dtype="Int64"),
        "jacobian_rank": [0.123456] * n, "linear_r2": [-0.0409123] * n, "effective_rank": [12.3456] * n,
        "rms_ratio": [9.34e31] * n, "overflowed_trials": [0] * n, "rank": list(range(1, n + 1)),
    })


def test_the_table_never_cuts_a_fix_name_at_80_columns():
    out = io.StringIO()
    Console(file=out, width=80).print(ranking_table(fake_ranking(), title="depth 10"))
    text = out.getvalue()
    assert "…" not in text
    for name in FIXES:
        assert name in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_the_table_keeps_names_whole_even_when_narrower():
    out = io.StringIO()
    Console(file=out, width=60).print(ranking_table(fake_ranking(), title="depth 10"))
    for name in FIXES:
        assert name in out.getvalue()


def test_words_instead_of_the_old_minus_one():
    assert first_lost(pd.NA) == "never" and first_lost(3) == "layer 3"
    out = io.StringIO()
    Console(file=out, width=80).print(ranking_table(fake_ranking(), title="depth 10"))
    assert "never" in out.getvalue() and " -1 " not in out.getvalue()
    page = index_page(fake_ranking())
    assert "<td>never</td>" in page and "<td>-1</td>" not in page and "<td>layer 1</td>" in page
    assert "lost from" in LEGEND
