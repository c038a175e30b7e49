"""`initscope phase --train`: the trainability diagram on a tiny grid, resumable from its store."""

import sqlite3

import pandas as pd
import pytest

from initscope.cli.app import main
from initscope.cli.phase_train import parse_depths
from initscope.study.trainability import TrainGrid, plan_grid, theory_lines

TINY = ["phase", "--train", "--sigma-w2", "1,1.76", "--depth", "3,30", "--width", "24", "--networks", "2",
        "--steps", "100", "--lr", "0.05", "--workers", "1"]


@pytest.mark.slow
def test_deep_ordered_cell_fails_while_near_critical_trains_and_the_grid_resumes(capsys, tmp_path):
    store = tmp_path / "cells.sqlite"
    assert main([*TINY, "--out", str(tmp_path / "a"), "--store", str(store)]) == 0
    out = capsys.readouterr()
    assert "plan: 4 cells of 2 networks" in out.err and "6ξ_c" in out.out
    table = pd.read_csv(tmp_path / "a" / "phase_trained.csv")
    assert list(table.columns) == ["sigma_w2", "sigma_b2", "depth", "network", "loss", "test_loss", "accuracy",
                                   "test_accuracy"]
    acc = table.groupby(["sigma_w2", "depth"])["test_accuracy"].median()
    # digits has 10 classes: chance is 0.1. Depth 30 is beyond 6ξ_c ≈ 22 in the ordered phase (σ_w² = 1) and far
    # within it at the edge of chaos (σ_w² = 1.76, ξ_c in the thousands).
    assert acc[(1.0, 30)] < 0.2 < 0.25 < acc[(1.76, 30)]
    assert acc[(1.0, 3)] > 0.5 and acc[(1.76, 3)] > 0.5
    page = (tmp_path / "a" / "report.html").read_text()
    assert "fig-trainability" in page and "fig-predictors" in page
    predictors = pd.read_csv(tmp_path / "a" / "phase_predictors.csv")
    assert {"stable_rank@last", "rms@worst", "overflow"} <= set(predictors["feature"]) and len(predictors) > 10
    assert "Best step-0 predictors" in out.out or "No step-0 measurement" in out.out
    # A rerun over the same store trains nothing again: the same rows, and no row added.
    rows = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert main([*TINY, "--out", str(tmp_path / "b"), "--store", str(store)]) == 0
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()[0] == rows == 8
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "phase_trained.csv"), table)
    # `initscope results` exports the store's predictors (and its cells).
    capsys.readouterr()
    assert main(["results", str(store), "--csv", str(tmp_path / "pred.csv")]) == 0
    exported = pd.read_csv(tmp_path / "pred.csv")
    assert {"feature", "spearman_rho", "auc", "grid"} <= set(exported.columns)
    assert main(["results", str(store), "--table", "trained", "--csv", str(tmp_path / "cells.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "cells.csv")) == 8
    assert main(["results", str(store), "--table", "spectra", "--csv", str(tmp_path / "x.csv")]) == 2


def test_bad_train_input_exits_2(capsys, tmp_path):
    for extra, name in ((["--lr", "0"], "lr"), (["--steps", "-1"], "steps"), (["--depth", "0,3"], "depth"),
                        (["--sigma-b2", "0.1,0.2"], "sigma_b2"), (["--batch-size", "-4"], "batch_size"), (["--trained-below", "-1"], "trained_below")):
        assert main([*TINY, "--out", str(tmp_path / "x"), *extra]) == 2
        assert f"'{name}' parameter must be" in capsys.readouterr().err


def test_depth_axis_and_plan():
    assert parse_depths("10:120:12") == tuple(range(10, 121, 10))
    assert parse_depths("5,3,5") == (3, 5)
    grid = TrainGrid(sigma_w2=(1.0, 2.0), depth=(10, 20), width=32, networks=2, steps=10, batch_size=16)
    plan = plan_grid(grid, samples=100, input_dim=8, outputs=3)
    assert plan.cells == 4
    # The deepest cell keeps 2 states of (networks, batch, width) per layer plus one full evaluation pass.
    assert plan.peak_bytes >= 8 * 2 * 2 * 16 * 32 * 20
    lines = theory_lines(grid)
    assert (lines["six_xi_c"] == 6 * lines["xi_c"]).all()
