"""initscope.study.flags: each diagnosis rule fires where it should, and nowhere else, on small tidy tables."""

import math

import pandas as pd
import pytest

from initscope.study import flags as F


def _metrics(per_layer: dict[str, list[float]], init: str = "normal", trials: int = 1, **extra) -> pd.DataFrame:
    """A tidy metrics table: the same value in every trial, layer l taking per_layer[metric][l]."""
    rows = [(init, trial, layer, metric, value)
            for metric, values in per_layer.items() for layer, value in enumerate(values) for trial in range(trials)]
    table = pd.DataFrame(rows, columns=["init", "trial", "layer", "metric", "value"])
    for name, value in extra.items():
        table[name] = value
    return table


def _model(per_layer: dict[str, list[float]], init: str = "model") -> pd.DataFrame:
    """A model's tidy metrics: module names "m<l>" of type Linear (layer 0 is the input)."""
    table = _metrics(per_layer, init)
    table["module"] = ["input" if layer == 0 else f"m{layer}" for layer in table["layer"]]
    table["module_type"] = ["" if layer == 0 else "Linear" for layer in table["layer"]]
    return table


# ---- the rules one value at a time ---------------------------------------------


@pytest.mark.parametrize(("rms", "fires"), [(0.1, False), (10.0, False), (1.0, False), (0.0999, True),
                                            (10.01, True), (0.0, True), (math.nan, False), (math.inf, False)])
def test_scale_rule_fires_outside_the_band_only(rms, fires):
    assert bool(F.scale_issue(rms, 1.0)) is fires
    assert bool(F.scale_issue(2 * rms, 2.0)) is fires  # relative to the input's rms


def test_scale_rule_needs_a_positive_input_rms():
    assert F.scale_issue(100.0, 0.0) == "" and F.scale_issue(100.0, math.nan) == ""
    assert F.scale_issue(20.0, 1.0) == "rms 20× the input's"


def test_rank_rule_is_half_the_input_or_half_the_units():
    assert F.rank_issue(2.0, 4.0) == "" and F.rank_cell(2.0, 4.0) == ""  # exactly half: kept
    assert F.rank_issue(1.9, 4.0) == "effective rank 1.9 (input 4)"
    assert F.rank_cell(1.9, 4.0) == "1.9 of the input's 4"
    # A layer of 4 units cannot keep the input's rank 28: half of 4 is the bar.
    assert F.rank_issue(3.0, 28.0, units=4) == ""
    assert F.rank_issue(1.5, 28.0, units=4) == "effective rank 1.5 of 4 units (input 28)"
    assert F.rank_issue(10.0, 28.0, units=256) == "effective rank 10 of 256 units (input 28)"
    assert F.rank_issue(math.nan, 28.0) == "" and F.rank_issue(1.0, math.nan) == ""


def test_dead_rule_fires_above_half():
    assert F.dead_issue(0.5) == "" and F.dead_cell(0.5) == ""
    assert F.dead_issue(0.61) == "61% dead units"
    assert F.dead_cell(0.61) == "61% of units dead"
    assert F.dead_issue(math.nan) == ""


def test_gradient_rule_fires_below_a_thousandth_of_the_largest():
    assert F.gradient_issue(1e-3, 1.0) == ""
    assert F.gradient_issue(3e-4, 1.0) == "weight gradient 0.0003× the largest layer's"
    assert F.gradient_issue(0.0, 0.0) == "" and F.gradient_issue(math.nan, 1.0) == ""


def test_layer_issues_lists_every_problem_of_a_layer():
    values = {"rms": 1.0, "dead_fraction": 0.61, "effective_rank": 3.0, "grad_norm": 1.0}
    assert F.layer_issues(values, rms0=1.0, rank0=28.4, units=256, grad_top=1.0) == [
        "61% dead units", "effective rank 3 of 256 units (input 28.4)"]
    assert F.layer_issues({"rms": math.inf}, rms0=1.0, rank0=math.nan) == ["not finite"]
    assert F.layer_issues({"rms": 1.0, "effective_rank": 20.0}, rms0=1.0, rank0=28.4) == []


def test_first_issue_skips_the_input_and_non_finite_layers():
    values = pd.Series([0.9, math.nan, 0.2, 0.8], index=[0, 1, 2, 3])
    assert F.first_issue(values, lambda _, v: F.dead_cell(v)) == (3, "80% of units dead")
    assert F.first_issue(values.iloc[:3], lambda _, v: F.dead_cell(v)) is None


# ---- a run's table ---------------------------------------------------------------


def test_run_table_names_the_first_layer_of_each_problem():
    metrics = _metrics({
        "rms": [1.0, 2.0, 0.05, 30.0],
        "effective_rank": [8.0, 5.0, 3.0, 3.0],
        "dead_fraction": [0.0, 0.3, 0.4, 0.9],
        "grad_norm": [math.nan, 1.0, 0.0, 0.0],
    }, trials=2)
    flags = pd.DataFrame({"init": ["normal"] * 3, "trial": [0, 1, 1], "layer": [2, 3, 3],
                          "flag": ["overflow", "overflow", "collapsed"]})
    row = F.flags_table(metrics, flags).set_index("init").loc["normal"]
    assert row[F.SCALE_COLUMN] == "layer 2 (rms 0.05× the input's)"
    assert row[F.RANK_COLUMN] == "layer 2 (3 of the input's 8)"
    assert row[F.DEAD_COLUMN] == "layer 3 (90% of units dead)"
    assert row["overflow"] == "layer 2 (in 1 of 2 trials; 1 more trial later)"
    assert row["collapse"] == "layer 3 (in 1 of 2 trials)"
    assert row["hidden-layer gradients"] == "nonzero, but 0 (median over trials) from layer 2"


def test_run_table_says_never_for_a_healthy_run_and_not_measured_for_absent_metrics():
    healthy = _metrics({"rms": [1.0, 1.1, 0.9], "effective_rank": [8.0, 7.0, 6.0],
                        "dead_fraction": [0.0, 0.5, 0.5], "grad_norm": [math.nan, 2.0, 1.0]}, init="sphere")
    row = F.flags_table(healthy, None).iloc[0]
    assert list(row.iloc[1:6]) == [F.NEVER] * 5
    assert row["hidden-layer gradients"] == "nonzero (smallest median 1, at layer 2)"
    row = F.flags_table(_metrics({"rms": [1.0, 1.0]}), pd.DataFrame(columns=["init", "trial", "layer", "flag"])).iloc[0]
    assert row[F.RANK_COLUMN] == row[F.DEAD_COLUMN] == row["hidden-layer gradients"] == F.NOT_MEASURED
    assert row["overflow"] == F.NEVER


def test_run_table_uses_the_median_over_trials():
    # One trial of three is dead at layer 1: the median is not.
    rows = [("normal", t, layer, "dead_fraction", 0.9 if (t, layer) == (0, 1) else 0.0)
            for t in range(3) for layer in range(3)]
    metrics = pd.DataFrame(rows, columns=["init", "trial", "layer", "metric", "value"])
    assert F.flags_table(metrics).iloc[0][F.DEAD_COLUMN] == F.NEVER


def test_run_table_says_a_zero_readout_leaves_gradients_unmeasured():
    metrics = _metrics({"rms": [1.0, 1.0], "grad_norm": [math.nan, 0.0]}, readout="zeros")
    cell = F.flags_table(metrics).iloc[0]["hidden-layer gradients"]
    assert cell == "not measured: the readout is zero, as in the post; use --readout init" == F.READOUT_ZERO
    metrics["readout"] = "gaussian"
    assert F.flags_table(metrics).iloc[0]["hidden-layer gradients"] == "all exactly 0"


def test_run_table_without_an_input_reference():
    metrics = _metrics({"rms": [0.0, 1.0], "effective_rank": [math.nan, 1.0]})
    row = F.flags_table(metrics).iloc[0]
    assert row[F.SCALE_COLUMN] == "no input rms to compare with"
    assert row[F.RANK_COLUMN] == "no input rank to compare with"


# ---- a model's table and diagnosis lines -------------------------------------------


def test_model_table_names_module_and_type():
    metrics = _model({"rms": [1.0, 1.0, 40.0], "effective_rank": [8.0, 3.0, 3.0],
                      "dead_fraction": [0.0, 0.7, 0.1], "grad_norm": [math.nan, 1.0, 1e-4]})
    flags = pd.DataFrame({"init": ["model"], "trial": [0], "layer": [2], "flag": ["overflow"]})
    row = F.model_flags_table(metrics, flags, {"model": {1: 16, 2: 16}}).iloc[0]
    assert row[F.SCALE_COLUMN] == "layer 2 (m2, Linear): rms 40× the input's"
    assert row[F.RANK_COLUMN] == "layer 1 (m1, Linear): effective rank 3 of 16 units (input 8)"
    assert row[F.DEAD_COLUMN] == "layer 1 (m1, Linear): 70% of units dead"
    assert row["vanishing gradients"] == ("1 of 2 weighted layers below 0.001× the largest; "
                                          "smallest layer 2 (m2, Linear): 0.0001× the largest")
    assert row["overflow"] == "layer 2 (m2, Linear)"
    assert row["collapse"] == F.NEVER


def test_model_table_rank_ceiling_is_the_layer_units():
    metrics = _model({"effective_rank": [28.0, 3.0]})
    assert F.model_flags_table(metrics, None, {"model": {1: 4}}).iloc[0][F.RANK_COLUMN] == F.NEVER
    assert F.model_flags_table(metrics, None).iloc[0][F.RANK_COLUMN].startswith("layer 1 (m1, Linear)")


def test_model_table_healthy_gradients_and_no_weights():
    row = F.model_flags_table(_model({"grad_norm": [math.nan, 1.0, 0.5]}), None).iloc[0]
    assert row["vanishing gradients"] == F.NEVER
    assert row[F.SCALE_COLUMN] == F.NOT_MEASURED
    row = F.model_flags_table(_model({"grad_norm": [math.nan, math.nan]}), None).iloc[0]
    assert row["vanishing gradients"] == "no weighted layers"
    row = F.model_flags_table(_model({"grad_norm": [math.nan, 0.0, 0.0]}), None).iloc[0]
    assert row["vanishing gradients"] == "all exactly 0: no gradient reaches any weight"


def test_diagnosis_lines_one_per_layer_with_a_problem():
    metrics = _model({"rms": [1.0, 1.0, 1.0, math.inf], "effective_rank": [28.4, 20.0, 3.1, 3.1],
                      "dead_fraction": [0.0, 0.0, 0.61, 0.0], "grad_norm": [math.nan, 1.0, 1.0, 1.0]})
    lines = F.diagnosis_lines(metrics, {"model": {1: 256, 2: 256, 3: 256}})
    assert lines == ["model: layer 2 (m2, Linear): 61% dead units, effective rank 3.1 of 256 units (input 28.4)",
                     "model: layer 3 (m3, Linear): not finite, effective rank 3.1 of 256 units (input 28.4)"]
    assert F.diagnosis_lines(metrics, {"model": {1: 256, 2: 256, 3: 256}}, limit=1)[-1] == "model: … and 1 more layers"


def test_healthy_model_gets_no_diagnosis_lines():
    metrics = _model({"rms": [1.0, 1.2, 0.8], "effective_rank": [8.0, 7.0, 6.0],
                      "dead_fraction": [0.0, 0.4, 0.5], "grad_norm": [math.nan, 1.0, 0.01]})
    assert F.diagnosis_lines(metrics) == []
    assert (F.model_flags_table(metrics, None).iloc[0].iloc[1:] == F.NEVER).all()


def test_one_set_of_rules_behind_report_summary_and_torch():
    import initscope.cli.summary as summary
    import initscope.report.flags as report_flags

    assert report_flags.flags_table is F.flags_table
    assert summary.flags_table is F.flags_table
    assert report_flags.FLAG_COLUMNS == F.FLAG_COLUMNS


def test_model_gradients_compare_layers_of_one_parameter_kind():
    # conv weights ~100, BatchNorm γ/β ~0.01: 1e-4 of the largest layer, but healthy among norms
    metrics = _model({"grad_norm": [math.nan, 100.0, 0.01, 80.0, 0.02, 90.0, math.nan]})
    kinds = ["none", "weight", "norm_affine", "weight", "norm_affine", "weight", "none"]
    metrics["param_kind"] = [kinds[layer] for layer in metrics["layer"]]
    assert F.model_flags_table(metrics.drop(columns="param_kind"), None).iloc[0]["vanishing gradients"] != F.NEVER
    assert F.model_flags_table(metrics, None).iloc[0]["vanishing gradients"] == F.NEVER
    assert F.diagnosis_lines(metrics) == []
    metrics.loc[metrics["layer"] == 4, "value"] = 1e-6  # now low among the norms themselves
    cell = F.model_flags_table(metrics, None).iloc[0]["vanishing gradients"]
    assert cell == ("1 of 5 weighted layers below 0.001× the largest of their kind (weights, embeddings, norm γ/β "
                    "compared apart); smallest layer 4 (m4, Linear): 0.0001× the largest norm γ/β layer's")
    assert F.diagnosis_lines(metrics) == ["model: layer 4 (m4, Linear): norm γ/β gradient 0.0001× the largest "
                                          "norm γ/β layer's"]


def test_model_gradients_not_measured_is_not_no_weighted_layers():
    metrics = _model({"grad_norm": [math.nan, math.nan, math.nan]})
    metrics["param_kind"] = ["none" if layer != 1 else "weight" for layer in metrics["layer"]]
    assert F.model_flags_table(metrics, None).iloc[0]["vanishing gradients"] == F.NOT_MEASURED
    metrics["param_kind"] = "none"
    assert F.model_flags_table(metrics, None).iloc[0]["vanishing gradients"] == "no weighted layers"
