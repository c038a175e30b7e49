"""Theory overlays as a table below the report (study/overlays.py): computed once, written, and only drawn above."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import initscope
from initscope.cli.app import main
from initscope.core import theory
from initscope.report.depth import metric_depth_spec
from initscope.report.tables import load_run
from initscope.study.overlays import mean_field_curves, theory_table
from initscope.study.records import THEORY_COLUMNS, config_dict

FIELDS = dict(init=("kaiming-normal", "orthogonal"), shift="zeros", depth=4, width=16, input_dim=6, samples=20,
              trials=3, metrics=("rms", "mean_cosine", "pre_q", "pre_cosine", "jacobian_sq_mean"), seed=1)


@pytest.fixture(scope="module")
def ran():
    return initscope.run(**FIELDS)


def _median(metrics: pd.DataFrame, init: str, metric: str, layer: int) -> float:
    rows = metrics[(metrics["init"] == init) & (metrics["metric"] == metric) & (metrics["layer"] == layer)]
    return float(rows["value"].median())


def test_a_run_carries_every_curve_that_holds_as_a_long_table(ran):
    table = ran.theory
    assert list(table.columns) == list(THEORY_COLUMNS)
    assert set(zip(table["metric"], table["init"])) == {(m, i) for m in FIELDS["metrics"] for i in FIELDS["init"]}
    rms = table[(table["init"] == "kaiming-normal") & (table["metric"] == "rms")]
    expected = theory.expected_rms(_median(ran.metrics, "kaiming-normal", "rms", 0), init="kaiming-normal",
                                   gain=math.sqrt(2), activation="relu", input_dim=6, width=16, depth=4)
    np.testing.assert_array_equal(rms["layer"], np.arange(5))
    np.testing.assert_allclose(rms["value"], expected, rtol=1e-12)
    assert set(rms["curve"]) == {"theory: second-moment recursion"}
    q0, c0 = (_median(ran.metrics, "orthogonal", m, 0) for m in ("pre_q", "pre_cosine"))
    mean_field = mean_field_curves(config_dict(ran.config), "orthogonal", q0, c0)
    for metric in ("pre_q", "pre_cosine", "jacobian_sq_mean"):
        rows = table[(table["init"] == "orthogonal") & (table["metric"] == metric)]
        np.testing.assert_allclose(rows["value"], mean_field[metric], rtol=1e-12)


def test_no_curve_where_the_assumptions_fail():
    res = initscope.run(**dict(FIELDS, norm="layer", shift="linspace", trials=1))
    assert len(res.theory) == 0 and list(res.theory.columns) == list(THEORY_COLUMNS)


def test_theory_csv_is_written_and_read_back(ran, tmp_path, capsys):
    argv = ["run", "--init", "kaiming-normal,orthogonal", "--shift", "zeros", "--depth", "4", "--width", "16",
            "--input-dim", "6", "--samples", "20", "--trials", "3", "--seed", "1",
            "--metrics", ",".join(FIELDS["metrics"]), "--no-report", "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    capsys.readouterr()
    written = pd.read_csv(tmp_path / "run" / "theory.csv")
    pd.testing.assert_frame_equal(written, ran.theory.reset_index(drop=True), check_dtype=False, rtol=1e-15)
    pd.testing.assert_frame_equal(load_run(tmp_path / "run").theory, written)
    # A folder without it (an older run) gets the same curves derived from its metrics.
    (tmp_path / "run" / "theory.csv").unlink()
    derived = load_run(tmp_path / "run").theory
    pd.testing.assert_frame_equal(derived.reset_index(drop=True), written, check_dtype=False, rtol=1e-12)


def test_the_report_draws_the_table_it_is_given(ran):
    """The depth panels draw the theory table's numbers: a table with other values gives other dashed lines."""
    def dashed(table) -> list[np.ndarray]:
        spec = metric_depth_spec(ran.metrics, config=ran.config, theory=table)
        return [np.asarray(t["y"], dtype=float) for t in spec["data"] if str(t.get("name", "")).endswith(": theory")]

    base = dashed(ran.theory)
    doubled = dashed(ran.theory.assign(value=ran.theory["value"] * 2))
    assert len(base) == len(doubled) == 10  # five metrics, two initializers
    for mine, theirs in zip(doubled, base):
        np.testing.assert_allclose(mine, 2 * theirs, rtol=1e-3)  # the page keeps 4 significant digits
    assert dashed(theory_table(ran.metrics.iloc[:0], ran.config)) == []


def test_an_inspection_has_an_empty_theory_table():
    torch = pytest.importorskip("torch")
    import initscope.torch as it

    torch.manual_seed(0)
    res = it.inspect(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU()), torch.randn(16, 3))
    assert len(res.theory) == 0 and "theory" not in res.tables()


def test_a_scale_beyond_the_floats_gives_no_curve_and_says_why():
    """Numerical trouble is a result: shifts of scale 1e308 overflow σ_b²; the run stands, the maps draw nothing."""
    from initscope.study.overlays import mean_field_notes, overlay_reason

    config = dict(activation="relu", shift="normal", shift_scale=1e308, norm="none", residual=0.0, width=8,
                  input_dim=4, depth=2, gain=None, init_train="none")
    assert overlay_reason(config, "kaiming-normal") == "σ_b² overflows at shift_scale 1e+308"
    with pytest.warns(Warning):  # the run's own overflow warning
        res = initscope.run(**dict(FIELDS, shift="normal", shift_scale=1e308, trials=1))
    assert not (res.theory["metric"].isin(["pre_q", "pre_cosine", "jacobian_sq_mean"])).any()
    assert any("σ_b² overflows" in note for note in mean_field_notes(res.metrics, res.config))
