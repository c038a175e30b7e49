"""The run configuration: seed defaults, TOML round trips, and errors that name what is wrong."""

from __future__ import annotations

import dataclasses
import math
import tomllib

import numpy as np
import pytest

from initscope.study.config import (
    DTYPES,
    FIELD_NAMES,
    TRAINING_FIELDS,
    measure_steps,
    task_of,
    Config,
    config_columns,
    config_to_toml,
    load_config,
    make_config,
)
from initscope.core.initializers import ACTIVATIONS, INITIALIZERS
from initscope.core.metrics import DEFAULT_METRICS, METRICS
from initscope.core.network import NORMS, READOUTS, SHIFTS

# DESIGN.md, "Config fields": the same names everywhere, in this order.
DESIGN_FIELDS = (
    "init", "gain", "data", "input_dim", "width", "depth", "samples", "activation", "shift",
    "shift_scale", "residual", "norm", "readout", "target", "trials", "seed", "dtype", "metrics",
)


def write_toml(path, text: str):
    path.write_text(text)
    return path


@pytest.fixture
def csv_with_target(tmp_path, rng):
    """A small data file with a header and a column named 'x' to use as the target."""
    values = rng.normal(size=(30, 3))
    path = tmp_path / "table.csv"
    lines = ["a,b,x"] + [",".join(f"{v:.6f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- defaults ---------------------------------------------------------------------------


def test_field_names_are_the_designs():
    # DESIGN.md's fields first, in its order; then the fixes' parameters (issue 6).
    assert FIELD_NAMES[: len(DESIGN_FIELDS)] == DESIGN_FIELDS
    assert FIELD_NAMES[len(DESIGN_FIELDS):] == (
        "lsuv_tol", "lsuv_max_iter", "init_train", "init_train_steps", "init_train_lr", "init_train_batch",
        "steps", "optimizer", "lr", "batch_size", "measure_at", "task")


@pytest.mark.parametrize("config", [Config(), make_config()], ids=["Config()", "make_config()"])
def test_defaults_are_the_seed_posts(config):
    assert config.input_dim == 3
    assert config.width == 40
    assert config.depth == 10
    assert config.samples == 100
    assert config.data == "ball"
    assert config.activation == "relu"
    assert config.shift == "linspace"
    assert config.readout == "zeros"
    assert config.init == ("normal", "sphere")
    assert config.gain is None
    assert config.residual == 0.0
    assert config.norm == "none"
    assert config.dtype == "float64"
    assert config.metrics == tuple(DEFAULT_METRICS)  # every registered metric marked default


def test_make_config_without_arguments_equals_the_dataclass_defaults():
    assert make_config() == Config()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().depth = 3  # type: ignore[misc]


# --- TOML round trip and overrides --------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"gain": 1.7},
        {"gain": 2.0, "init": "kaiming-normal,orthogonal", "activation": "tanh"},
        {"metrics": "rms,effective_rank,grad_norm"},
        {"shift": "normal", "shift_scale": 0.25, "residual": 0.5, "norm": "layer", "readout": "init",
         "target": "sin-sum", "trials": 3, "seed": 12345, "dtype": "float32", "input_dim": 7},
        {"data": "iris", "target": "dataset", "samples": 150},
    ],
    ids=["defaults", "gain", "gain-inits", "metrics-subset", "everything-else", "iris"],
)
def test_toml_round_trip_gives_an_equal_config(tmp_path, fields):
    config = make_config(**fields)
    path = write_toml(tmp_path / "config.toml", config_to_toml(config))
    back = load_config(path)
    assert back == config
    # Not equal by accident: the file holds the values themselves.
    raw = tomllib.loads(path.read_text())
    for name, value in fields.items():
        got = raw[name]
        want = getattr(config, name)
        assert (list(want) if isinstance(want, tuple) else want) == got


def test_toml_round_trip_with_a_data_file(tmp_path, csv_with_target):
    config = make_config(data=str(csv_with_target), target="column:x", samples=30)
    assert config.input_dim == 2
    path = write_toml(tmp_path / "config.toml", config_to_toml(config))
    assert load_config(path) == config
    assert tomllib.loads(path.read_text())["data"] == str(csv_with_target)


def test_toml_marks_an_unset_gain_and_reads_it_back_as_none(tmp_path):
    text = config_to_toml(make_config())
    assert "gain" not in tomllib.loads(text)
    assert "# gain is unset" in text
    assert load_config(write_toml(tmp_path / "c.toml", text)).gain is None


def test_toml_file_sets_fields_and_leaves_others_at_default(tmp_path):
    path = write_toml(tmp_path / "c.toml", 'depth = 4\nwidth = 16\ninit = ["xavier-normal"]\nshift_scale = 0.2\n')
    config = load_config(path)
    assert (config.depth, config.width, config.init, config.shift_scale) == (4, 16, ("xavier-normal",), 0.2)
    assert config.samples == Config.samples
    assert config.activation == Config.activation


def test_overrides_win_over_the_file_and_none_leaves_the_file_value(tmp_path):
    path = write_toml(tmp_path / "c.toml", "depth = 4\nwidth = 16\nseed = 3\n")
    config = load_config(path, depth=9, seed=None, metrics="rms")
    assert config.depth == 9
    assert config.seed == 3
    assert config.width == 16
    assert config.metrics == ("rms",)


def test_comma_separated_names_are_split_stripped_and_deduplicated():
    config = make_config(init=" sphere, normal ,sphere", metrics="rms, std,rms")
    assert config.init == ("sphere", "normal")
    assert config.metrics == ("rms", "std")


def test_text_numbers_are_parsed():
    # CLI flags arrive as text; make_config is the one place that reads them.
    config = make_config(depth="4", width=" 12 ", gain="0.5", shift_scale="2", trials="3")
    assert (config.depth, config.width, config.gain, config.shift_scale, config.trials) == (4, 12, 0.5, 2.0, 3)
    assert make_config(depth=3.0).depth == 3


def test_config_columns_are_every_field_but_init_as_scalars():
    columns = config_columns(make_config(metrics="rms,std"))
    # Untrained: the columns from before task training, the renamed init-training fields under their old names.
    legacy = {"init_train_steps": "train_steps", "init_train_lr": "train_lr", "init_train_batch": "train_batch"}
    untrained = [legacy.get(f, f) for f in FIELD_NAMES if f != "init" and f not in TRAINING_FIELDS]
    assert tuple(columns) == tuple(untrained)
    trained = config_columns(make_config(steps=30))
    assert tuple(trained) == tuple(legacy.get(f, f) for f in FIELD_NAMES if f != "init")
    assert trained["measure_at"] == "0,1,2,5,10,20,30" and trained["steps"] == 30
    assert columns["metrics"] == "rms,std"
    assert math.isnan(columns["gain"])
    assert columns["depth"] == 10
    assert config_columns(make_config(gain=2.0))["gain"] == 2.0


# --- validation: every error names the parameter and the value ----------------------------


def assert_names(message: str, name: str, value) -> None:
    assert f"'{name}'" in message, message
    assert repr(value) in message or str(value) in message, message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("depth", -1),
        ("depth", 0),
        ("depth", "abc"),
        ("depth", 2.5),
        ("depth", True),
        ("depth", "--3"),
        ("depth", [3]),
        ("width", 0),
        ("samples", 0),
        ("trials", 0),
        ("input_dim", 0),
        ("seed", -1),
        ("shift_scale", -0.5),
        ("shift_scale", "abc"),
        ("residual", -1.0),
        ("gain", 0),
        ("gain", -1.0),
        ("gain", math.nan),
        ("gain", math.inf),
        ("gain", True),
        ("gain", "big"),
        ("activation", "softmax"),
        ("shift", "sine"),
        ("norm", "group"),
        ("readout", "ones"),
        ("dtype", "float16"),
        ("metrics", "accuracy"),
        ("init", "he"),
        ("data", "mnist"),
        ("data", "table.txt"),
        ("target", "cosine"),
    ],
)
def test_bad_values_name_the_parameter_and_the_value(name, value):
    with pytest.raises(ValueError) as info:
        make_config(**{name: value})
    assert_names(str(info.value), name, value)


def test_bad_value_message_states_the_constraint():
    with pytest.raises(ValueError, match=r"The 'depth' parameter must be an integer >= 1\. Got -2 instead\."):
        make_config(depth=-2)
    with pytest.raises(ValueError, match=r"'gain' parameter must be a finite number > 0"):
        make_config(gain=0)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("init", tuple(INITIALIZERS)),
        ("activation", ACTIVATIONS),
        ("shift", SHIFTS),
        ("norm", NORMS),
        ("readout", READOUTS),
        ("dtype", DTYPES),
        ("metrics", METRICS),
    ],
)
def test_unknown_option_lists_the_valid_ones(name, valid):
    with pytest.raises(ValueError) as info:
        make_config(**{name: "nonsense"})
    message = str(info.value)
    assert_names(message, name, "nonsense")
    for option in valid:
        assert repr(option) in message, (option, message)


def test_one_bad_name_in_a_list_is_the_one_reported():
    with pytest.raises(ValueError) as info:
        make_config(init="normal,bogus,sphere")
    assert_names(str(info.value), "init", "bogus")


def test_empty_list_of_names_is_rejected():
    with pytest.raises(ValueError, match="'metrics'"):
        make_config(metrics=" , ")


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="'colour'"):
        make_config(colour="red")


def test_unknown_field_in_a_toml_file_is_named(tmp_path):
    path = write_toml(tmp_path / "c.toml", "depth = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert "'learning_rate'" in str(info.value)
    assert "depth" in str(info.value)  # and lists the valid fields


def test_bad_value_in_a_toml_file_is_named(tmp_path):
    path = write_toml(tmp_path / "c.toml", "depth = true\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert_names(str(info.value), "depth", True)


def test_invalid_toml_names_config_and_the_file(tmp_path):
    path = write_toml(tmp_path / "broken.toml", "depth = [\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert "'config'" in str(info.value)
    assert str(path) in str(info.value)


def test_toml_that_is_not_utf8_names_config(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b'data = "\xff"\n')
    with pytest.raises(ValueError, match="'config'"):
        load_config(path)


def test_missing_config_file_names_config_and_the_path(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert_names(str(info.value), "config", str(path))


def test_a_folder_as_config_file_is_bad_input(tmp_path):
    with pytest.raises(ValueError) as info:
        load_config(tmp_path)
    assert_names(str(info.value), "config", str(tmp_path))


# --- real and file data --------------------------------------------------------------------


def test_iris_sets_input_dim_to_its_four_columns():
    config = make_config(data="iris", input_dim=3, samples=50)
    assert config.input_dim == 4
    assert config.data_is_fixed
    assert not config.data_is_file


def test_more_samples_than_iris_has_rows_names_samples():
    with pytest.raises(ValueError) as info:
        make_config(data="iris", samples=151)
    message = str(info.value)
    assert_names(message, "samples", 151)
    assert "150" in message  # the limit, and the fix


def test_all_rows_of_iris_are_allowed():
    assert make_config(data="iris", samples=150).samples == 150


def test_dataset_target_works_with_real_data():
    assert make_config(data="iris", target="dataset").target == "dataset"


@pytest.mark.parametrize("data", ["ball", "normal"])
def test_dataset_target_with_synthetic_data_names_target(data):
    with pytest.raises(ValueError) as info:
        make_config(data=data, target="dataset")
    assert_names(str(info.value), "target", "dataset")


def test_column_target_with_a_csv_file(csv_with_target):
    config = make_config(data=str(csv_with_target), target="column:x", samples=30)
    assert config.input_dim == 2  # a, b; x is the target
    assert config.target == "column:x"
    assert config.data_is_file and config.data_is_fixed


def test_file_without_target_takes_every_column(csv_with_target):
    assert make_config(data=str(csv_with_target), samples=10).input_dim == 3


def test_unknown_target_column_names_target(csv_with_target):
    with pytest.raises(ValueError) as info:
        make_config(data=str(csv_with_target), target="column:y", samples=10)
    assert_names(str(info.value), "target", "y")


def test_dataset_target_for_a_file_without_one_names_target(csv_with_target):
    with pytest.raises(ValueError) as info:
        make_config(data=str(csv_with_target), target="dataset", samples=10)
    assert_names(str(info.value), "target", "dataset")


def test_column_target_with_real_data_names_target():
    with pytest.raises(ValueError) as info:
        make_config(data="iris", target="column:x")
    assert_names(str(info.value), "target", "column:x")


def test_column_target_with_synthetic_data_names_target():
    with pytest.raises(ValueError) as info:
        make_config(data="ball", target="column:x")
    assert_names(str(info.value), "target", "column:x")


def test_more_samples_than_file_rows_names_samples(csv_with_target):
    with pytest.raises(ValueError) as info:
        make_config(data=str(csv_with_target), samples=31)
    assert_names(str(info.value), "samples", 31)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("a,b\n1,nan\n2,3\n", "finite"), ("", "empty"), ("a,b\n", "no rows")],
    ids=["nan", "empty", "header-only"],
)
def test_bad_csv_names_data_and_the_path(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        make_config(data=str(path), samples=1)
    assert_names(str(info.value), "data", str(path))
    assert problem in str(info.value)


def test_npy_with_wrong_ndim_names_data(tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError) as info:
        make_config(data=str(path), samples=1)
    assert_names(str(info.value), "data", str(path))
    assert "ndim" in str(info.value)


def test_missing_data_file_names_data(tmp_path):
    path = tmp_path / "missing.npy"
    with pytest.raises(ValueError) as info:
        make_config(data=str(path))
    assert_names(str(info.value), "data", str(path))


def _rows_file(tmp_path, rows: int = 150):
    path = tmp_path / "rows.csv"
    x = np.random.default_rng(1).standard_normal((rows, 3))
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    return path


def test_a_data_file_uses_all_its_rows_unless_samples_is_given(tmp_path):
    from initscope.study.config import subsample_note

    path = _rows_file(tmp_path)
    config = make_config(data=str(path))
    assert config.samples == 150 and subsample_note(config) is None
    assert make_config(data="iris").samples == 150
    fewer = make_config(data=str(path), samples=100)
    assert fewer.samples == 100
    assert subsample_note(fewer).startswith("samples: 100 of the 150 rows of ")
    assert subsample_note(make_config()) is None  # synthetic data: nothing to subsample


def test_the_cli_says_once_that_it_subsamples_and_not_otherwise(tmp_path, capsys):
    from initscope.cli.app import main

    path = _rows_file(tmp_path)
    base = ["run", "--data", str(path), "--trials", "2", "--depth", "2", "--no-report", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--samples", "40"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: samples: 40 of the 150 rows") == 1
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert "note: samples" not in capsys.readouterr().err
    import pandas as pd

    metrics = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert set(metrics["samples"]) == {150}


# --- task training's fields (issue 22) ---------------------------------------------------


def test_training_fields_default_to_nothing_trained():
    c = make_config()
    assert (c.steps, c.optimizer, c.lr, c.batch_size, c.measure_at, c.task) == (0, "sgd", 0.01, 0, (), "auto")
    assert measure_steps(c) == (0,)
    assert measure_steps(make_config(steps=300)) == (0, 1, 2, 5, 10, 20, 50, 100, 200, 300)
    assert measure_steps(make_config(steps=7, measure_at="3, 1")) == (0, 1, 3, 7)


@pytest.mark.parametrize("field,value,constraint", [
    ("steps", -1, "an integer >= 0"), ("steps", 1.5, "an integer >= 0"), ("lr", 0, "a finite number > 0"),
    ("lr", float("nan"), "a finite number > 0"), ("batch_size", -2, "an integer >= 0"),
    ("optimizer", "rmsprop", "one of"), ("task", "ranking", "one of"), ("measure_at", "x", "an integer >= 0"),
])
def test_training_fields_are_validated(field, value, constraint):
    with pytest.raises(ValueError, match=f"The '{field}' parameter must be {constraint}") as info:
        make_config(**{field: value})
    assert_names(str(info.value), field, value)


def test_measure_at_beyond_the_last_step_is_refused():
    with pytest.raises(ValueError, match="'measure_at' parameter must be steps between 0 and steps=10. Got 20"):
        make_config(steps=10, measure_at=[5, 20])


def test_the_task_follows_the_target():
    assert task_of(make_config(steps=1)) == "regression"
    assert task_of(make_config(steps=1, data="iris", target="dataset")) == "classification"
    assert task_of(make_config(steps=1, data="diabetes", target="dataset")) == "regression"
    assert task_of(make_config(steps=1, data="iris", target="dataset", task="regression")) == "regression"
    with pytest.raises(ValueError, match="'task' parameter must be 'regression' or 'auto' for this target "
                                         r"\(target 'dataset' of data 'diabetes' is continuous\)"):
        make_config(steps=1, data="diabetes", target="dataset", task="classification")
    with pytest.raises(ValueError, match="continuous function of the input"):
        make_config(steps=1, task="classification")


def test_old_init_training_names_are_read_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning) as caught:
        c = make_config(train_steps=7, train_lr=0.5)
    assert sorted(str(w.message).split(" field")[0] for w in caught) == ["The 'train_lr'", "The 'train_steps'"]
    assert "'train_steps' field is renamed 'init_train_steps'" in str(caught[0].message) + str(caught[1].message)
    assert (c.init_train_steps, c.init_train_lr) == (7, 0.5)
    path = tmp_path / "old.toml"
    path.write_text("train_batch = 3\n")
    with pytest.warns(DeprecationWarning, match="'train_batch'"):
        assert load_config(path).init_train_batch == 3


def test_trained_config_round_trips_through_toml(tmp_path):
    c = make_config(steps=12, optimizer="adam", lr=1e-3, batch_size=8, measure_at=[4])
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(c))
    assert load_config(path) == c
