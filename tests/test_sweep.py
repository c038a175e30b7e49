"""Sweep specs: product expansion, validation up front, and config identity."""

import dataclasses

import numpy as np
import pytest

from initscope.study.config import make_config
from initscope.study.runner import run
from initscope.study.sweep import config_id, config_record, load_sweep, make_sweep, split_inits


def test_product_of_lists_times_trials():
    sweep = make_sweep({"init": ["normal", "sphere"], "depth": [2, 3, 4], "width": [8, 16], "trials": 5})
    assert len(sweep.configs) == 12
    assert sweep.trials == 5 and sweep.total_trials == 60
    assert sweep.axes == {"init": ("normal", "sphere"), "depth": (2, 3, 4), "width": (8, 16)}
    assert all(len(c.init) == 1 and c.trials == 5 for c in sweep.configs)
    assert len(set(sweep.ids)) == 12
    assert list(sweep.ids) == [config_id(c) for c in sweep.configs]


def test_scalars_and_metric_set_are_not_axes():
    sweep = make_sweep({"depth": 3, "metrics": ["rms", "effective_rank"], "init": "normal"})
    assert len(sweep.configs) == 1 and sweep.axes == {}
    assert sweep.configs[0].metrics == ("rms", "effective_rank")


def test_gain_default_is_unset_gain():
    sweep = make_sweep({"init": "kaiming-normal", "gain": ["default", 1.0]})
    assert [c.gain for c in sweep.configs] == [None, 1.0]


def test_combinations_that_validate_alike_run_once():
    # A real data set fixes input_dim, so both input_dim values are the same configuration.
    sweep = make_sweep({"data": "iris", "input_dim": [3, 4], "init": ["normal"], "samples": 50})
    assert len(sweep.configs) == 1 and sweep.configs[0].input_dim == 4


@pytest.mark.parametrize("spec, needle", [
    ({"depht": [2, 3]}, "Unknown field 'depht'"),
    ({"depth": "ten"}, "'depth' field"),
    ({"depth": True}, "'depth' field"),
    ({"width": [8, "a"]}, "'width' field"),
    ({"width": []}, "'width' field"),
    ({"trials": [5, 10]}, "'trials' field"),
    ({"init": ["normal", "nope"]}, "'init' parameter"),
    ({"depth": [2, 0]}, "'depth' parameter"),
    ({"residual": [0.0, -1.0]}, "'residual' parameter"),
    ({"width": {"a": 1}}, "'width' field"),
    ({"metrics": []}, "'metrics' field"),
])
def test_bad_specs_name_the_field_and_value(spec, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")) as info:
        make_sweep(spec)
    assert "\n" not in str(info.value)


def test_impossible_combination_names_it():
    with pytest.raises(ValueError) as info:
        make_sweep({"data": "iris", "samples": [100, 500], "depth": [2, 3]})
    text = str(info.value)
    assert "'samples'" in text and "500" in text and "samples=500" in text and "depth=2" in text


def test_too_many_combinations_is_refused(monkeypatch):
    import initscope.study.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "MAX_CONFIGS", 10)
    with pytest.raises(ValueError, match="combinations"):
        make_sweep({"depth": list(range(1, 5)), "width": list(range(1, 5))})


def test_load_sweep_reads_toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('init = ["normal", "sphere"]\ndepth = [2, 3]\ntrials = 2\n')
    sweep = load_sweep(path)
    assert len(sweep.configs) == 4 and str(path) in sweep.source
    path.write_text("depth = [2, 3\n")
    with pytest.raises(ValueError, match="valid TOML"):
        load_sweep(path)
    with pytest.raises(ValueError, match="existing TOML"):
        load_sweep(tmp_path / "missing.toml")


def test_config_id_ignores_trials_and_metric_order_and_nothing_else():
    base = split_inits(make_config(init=["normal"], depth=3))[0]
    assert config_id(base) == config_id(dataclasses.replace(base, trials=99))
    assert config_id(base) == config_id(dataclasses.replace(base, metrics=tuple(reversed(base.metrics))))
    assert config_id(base) != config_id(dataclasses.replace(base, depth=4))
    assert config_id(base) != config_id(dataclasses.replace(base, seed=1))
    assert config_id(base) != config_id(dataclasses.replace(base, gain=1.0))
    assert config_id(base) == config_id(split_inits(make_config(init=["normal"], depth=3, residual=0))[0])
    with pytest.raises(ValueError, match="one initializer"):
        config_id(make_config(init=["normal", "sphere"]))
    assert config_record(base)["init"] == "normal"


def _by_trial(metrics):
    return metrics.sort_values(["trial", "metric", "layer"])["value"].to_numpy()


def test_splitting_initializers_changes_no_number():
    both = make_config(init=["normal", "sphere"], depth=3, width=8, samples=20, trials=3)
    joint = run(both, workers=1).metrics
    for single in split_inits(both):
        alone = run(single, workers=1).metrics
        np.testing.assert_array_equal(_by_trial(alone), _by_trial(joint[joint["init"] == single.init[0]]))


def test_a_trials_numbers_do_not_depend_on_how_many_trials_run():
    # What resuming a configuration with more trials relies on.
    small = run(make_config(init=["sphere"], depth=3, width=8, samples=20, trials=2), workers=1).metrics
    large = run(make_config(init=["sphere"], depth=3, width=8, samples=20, trials=5), workers=1).metrics
    np.testing.assert_array_equal(_by_trial(small), _by_trial(large[large["trial"] < 2]))


def test_residual_with_width_unequal_input_dim_is_allowed():
    sweep = make_sweep({"residual": [0.0, 1.0], "input_dim": 3, "width": 8, "depth": 3, "trials": 1,
                        "init": "kaiming-normal", "samples": 10})
    assert len(sweep.configs) == 2
    result = run(sweep.configs[1], workers=1)
    assert np.isfinite(result.metrics["value"][result.metrics["metric"] == "rms"]).all()
