"""`initscope compare-fixes`: every fix runs, is certified and ranked; the command writes its report."""

import numpy as np
import pandas as pd
import pytest

from initscope.cli.app import main
from initscope.study.fixes import FIXES, compare_fixes, fix_config, ranking


def test_every_fix_has_a_valid_config():
    for name in FIXES:
        cfg = fix_config(name, depth=10, trials=2)
        assert (cfg.input_dim, cfg.width, cfg.depth) == (40, 40, 10)
    assert fix_config("kaiming+residual", depth=16, trials=1).residual == pytest.approx(0.25)
    assert fix_config("kaiming+layernorm", depth=3, trials=1).norm == "layer"
    with pytest.raises(ValueError, match="'fixes'"):
        fix_config("magic", depth=3, trials=1)


@pytest.mark.slow
def test_ranking_puts_certified_fixes_first():
    table, outcomes = compare_fixes(["kaiming", "kaiming+residual", "sphere"], depths=(4,), trials=3, workers=1)
    assert list(table.columns[:3]) == ["depth", "fix", "certified_share"]
    assert table["rank"].tolist() == [1, 2, 3]
    # A residual branch keeps the identity path: every layer injective. A plain ReLU
    # layer as wide as its input cannot be (inactive units drop Jacobian rank).
    assert table.iloc[0]["fix"] == "kaiming+residual" and table.iloc[0]["certified_share"] == 1.0
    plain = table[table["fix"] == "kaiming"].iloc[0]
    assert plain["certified_share"] == 0.0 and plain["first_uncertified_layer"] == 1
    assert plain["jacobian_rank"] < 1
    assert np.all(np.diff(table["certified_share"]) <= 0)


@pytest.mark.slow
def test_compare_fixes_command_writes_ranked_report(tmp_path, capsys):
    out = tmp_path / "fixes"
    code = main(["compare-fixes", "--out", str(out), "--fixes", "normal,kaiming+residual",
                 "--depths", "3", "--trials", "2", "--no-report"])
    assert code == 0, capsys.readouterr().err
    ranking_csv = pd.read_csv(out / "ranking.csv")
    assert set(ranking_csv["fix"]) == {"normal", "kaiming+residual"}
    for label in ("normal-depth3", "kaiming+residual-depth3"):
        assert (out / label / "metrics.csv").is_file() and (out / label / "certificate.csv").is_file()
    page = (out / "index.html").read_text()
    assert "kaiming+residual" in page and "depth 3" in page
    assert "depth 3" in capsys.readouterr().out


def test_compare_fixes_bad_input_exits_2(tmp_path, capsys):
    assert main(["compare-fixes", "--out", str(tmp_path / "x"), "--fixes", "magic", "--depths", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fixes'" in err[0] and "magic" in err[0]
    assert main(["compare-fixes", "--out", str(tmp_path / "y"), "--depths", "0"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
