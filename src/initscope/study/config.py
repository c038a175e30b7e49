"""The run configuration: one frozen dataclass, validated once, saved with every result.

The field names are the contract shared by the TOML keys, the CSV columns and
the CLI flags (kebab-case there). `make_config` is the only way user input
becomes a `Config`; it raises `ValueError`/`TypeError` that name the
parameter, the constraint and the value received.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from initscope.core.activations import ACTIVATIONS
from initscope.core.data import SYNTHETIC, TARGETS
from initscope.core.initializers import REGISTRY as INIT_REGISTRY
from initscope.core.metrics import DEFAULT_METRICS, METRICS, default_metrics
from initscope.core.network import NORMS, READOUTS, SHIFTS
from initscope.core.optimizers import OPTIMIZERS
from initscope.study.datasets import load_file, load_real
from initscope.study.files import CONFIG_LIMIT, read_bounded

__all__ = ["Config", "make_config", "load_config", "config_to_toml", "config_columns", "DTYPES", "MAX_SEED",
           "MAX_SIZE", "INT_FIELDS", "FLOAT_FIELDS", "TASKS", "DEPRECATED_FIELDS", "TRAINING_FIELDS",
           "measure_steps", "task_of", "config_fields", "renamed_fields"]

DTYPES = ("float64", "float32")
TASKS = ("auto", "regression", "classification")
MAX_CLASSES = 100  # integer labels with more distinct values than this are taken for a continuous target
# Old names of renamed fields, still read (with a DeprecationWarning). Their CSV columns keep the
# old names too, so that tables written before the rename and after it have the same columns.
DEPRECATED_FIELDS = {"train_steps": "init_train_steps", "train_lr": "init_train_lr", "train_batch": "init_train_batch"}
TRAINING_FIELDS = ("steps", "optimizer", "lr", "batch_size", "measure_at", "task")
INIT_TRAIN = ("none", "forward-gradient", "backprop")
REAL_DATA = ("digits", "iris", "wine", "breast_cancer", "diabetes")
DATA_FILE_SUFFIXES = (".csv", ".npy")


@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Defaults are the seed post's study.

    `gain=None` means each initializer's default gain (kaiming: the
    activation's recommended gain; all others 1). For real or file data,
    `input_dim` is the data's column count (set by `make_config`).
    """

    init: tuple[str, ...] = ("normal", "sphere")
    gain: float | None = None
    data: str = "ball"
    input_dim: int = 3
    width: int = 40
    depth: int = 10
    samples: int = 100
    activation: str = "relu"
    shift: str = "linspace"
    shift_scale: float = 1.0
    residual: float = 0.0
    norm: str = "none"
    readout: str = "zeros"
    target: str = "cos-norm"
    trials: int = 10
    seed: int = 0
    dtype: str = "float64"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    lsuv_tol: float = 0.01
    lsuv_max_iter: int = 10
    init_train: str = "none"
    init_train_steps: int = 100
    init_train_lr: float = 0.01
    init_train_batch: int = 0
    # Task training (issue 22): 0 steps trains nothing and every output is as without these fields.
    steps: int = 0
    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int = 0
    measure_at: tuple[int, ...] = ()  # empty: log-spaced 0, 1, 2, 5, 10, 20, 50, ... and the last step
    task: str = "auto"

    @property
    def data_is_file(self) -> bool:
        return self.data.lower().endswith(DATA_FILE_SUFFIXES)

    @property
    def data_is_fixed(self) -> bool:
        """Real and file data are the same rows in every trial (up to subsampling)."""
        return self.data_is_file or self.data in REAL_DATA


FIELD_NAMES = tuple(f.name for f in fields(Config))
# The numeric fields, from the dataclass's annotations (strings here: postponed evaluation),
# so that a field added to Config is typed the same way in sweep files.
INT_FIELDS = tuple(f.name for f in fields(Config) if f.type == "int")
FLOAT_FIELDS = tuple(f.name for f in fields(Config) if f.type in ("float", "float | None"))


def _fail(name: str, constraint: str, value: Any, fix: str = "") -> ValueError:
    msg = f"The '{name}' parameter must be {constraint}. Got {value!r} instead."
    return ValueError(msg + (f" {fix}" if fix else ""))


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise _fail(name, f"one of {list(valid)}", value)
    return value


# The largest integer any field takes. A seed is stored in SQLite's signed 64-bit INTEGER
# (the results store), so one bound for it everywhere: run, sweep, store and CLI. Sizes are
# far smaller in practice; the memory check (study/memory.py) refuses what does not fit,
# but a size must first be an integer numpy can index with.
MAX_SEED = 2**63 - 1
MAX_SIZE = 2**31 - 1


def _int(name: str, value: Any, minimum: int, maximum: int = MAX_SIZE) -> int:
    # bool is an int subclass; `depth = true` in a TOML file is a mistake, not 1.
    original = value
    if isinstance(value, np.integer) and not isinstance(value, bool):
        value = int(value)  # numpy.int64(3) from user code is an integer like any other
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, np.floating) and float(value).is_integer():
            value = int(value)
        elif isinstance(value, str):
            # Text comes from CLI flags; int() alone decides, so "--3" or "²" fail here
            # with the parameter's name rather than as int()'s own message.
            try:
                if not value.isascii():  # int() reads any script's digits: "４" is not a depth anyone typed
                    raise ValueError
                value = int(value.strip())
            except ValueError:
                raise _fail(name, f"an integer >= {minimum}", original) from None
        else:
            raise _fail(name, f"an integer >= {minimum}", value)
    if value < minimum:
        raise _fail(name, f"an integer >= {minimum}", original)
    if value > maximum:
        raise _fail(name, f"an integer >= {minimum} and <= {maximum}", original)
    return value


def _float(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    try:
        if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):  # float() reads "１.５"
            raise TypeError
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range (10**400)
        raise _fail(name, f"a finite number {'>' if strict else '>='} {minimum}", value) from None
    if not math.isfinite(out) or out < minimum or (strict and out == minimum):
        raise _fail(name, f"a finite number {'>' if strict else '>='} {minimum}", value)
    return out


def _names(name: str, value: Any, valid: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(name, f"a non-empty list of names from {list(valid)}", value)
    out = []
    for v in value:
        if v not in valid:
            raise _fail(name, f"a list of names from {list(valid)}", v)
        if v not in out:
            out.append(v)
    return tuple(out)


def make_config(**kwargs: Any) -> Config:  # long: one validated line per field, in the dataclass's order
    """Validate keyword arguments (TOML/CLI field names) into a `Config`.

    Unknown names, wrong types and out-of-range values raise `ValueError`
    with the parameter, the constraint and the value. For real data sets and
    data files the data are loaded once here, so that a bad file is reported
    before anything runs, and `input_dim` is set to the data's column count.
    """
    kwargs = renamed_fields(kwargs)
    unknown = sorted(set(kwargs) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(
            f"Unknown config field {unknown[0]!r}. Valid fields are {list(FIELD_NAMES)}."
        )
    kw = {k: v for k, v in kwargs.items() if v is not None}
    c: dict[str, Any] = {}
    # The registries are read now, not at import: names registered after import are valid.
    c["init"] = _names("init", kw.get("init", Config.init), tuple(INIT_REGISTRY))
    gain = kw.get("gain")
    c["gain"] = None if gain is None else _float("gain", gain, minimum=0.0, strict=True)
    c["activation"] = _choice("activation", kw.get("activation", Config.activation), tuple(ACTIVATIONS))
    c["shift"] = _choice("shift", kw.get("shift", Config.shift), SHIFTS)
    c["norm"] = _choice("norm", kw.get("norm", Config.norm), NORMS)
    c["readout"] = _choice("readout", kw.get("readout", Config.readout), READOUTS)
    c["dtype"] = _choice("dtype", kw.get("dtype", Config.dtype), DTYPES)
    c["metrics"] = _names("metrics", kw.get("metrics", default_metrics()), tuple(METRICS))
    c["input_dim"] = _int("input_dim", kw.get("input_dim", Config.input_dim), 1)
    c["width"] = _int("width", kw.get("width", Config.width), 1)
    c["depth"] = _int("depth", kw.get("depth", Config.depth), 1)
    c["samples"] = _int("samples", kw.get("samples", Config.samples), 1)
    c["trials"] = _int("trials", kw.get("trials", Config.trials), 1)
    c["seed"] = _int("seed", kw.get("seed", Config.seed), 0, MAX_SEED)
    c["shift_scale"] = _float("shift_scale", kw.get("shift_scale", Config.shift_scale), minimum=0.0)
    c["residual"] = _float("residual", kw.get("residual", Config.residual), minimum=0.0)
    c["lsuv_tol"] = _float("lsuv_tol", kw.get("lsuv_tol", Config.lsuv_tol), minimum=0.0, strict=True)
    c["lsuv_max_iter"] = _int("lsuv_max_iter", kw.get("lsuv_max_iter", Config.lsuv_max_iter), 0)
    c["init_train"] = _choice("init_train", kw.get("init_train", Config.init_train), INIT_TRAIN)
    c["init_train_steps"] = _int("init_train_steps", kw.get("init_train_steps", Config.init_train_steps), 0)
    c["init_train_lr"] = _float("init_train_lr", kw.get("init_train_lr", Config.init_train_lr), minimum=0.0,
                                strict=True)
    c["init_train_batch"] = _int("init_train_batch", kw.get("init_train_batch", Config.init_train_batch), 0)
    c.update(_training_fields(kw))
    if "looks-linear" in c["init"] and c["width"] % 2:
        raise _fail("width", "even for init 'looks-linear' (its units come in mirrored pairs)", c["width"])

    data = kw.get("data", Config.data)
    if isinstance(data, os.PathLike):
        data = os.fspath(data)  # data=pathlib.Path("x.csv") names a file, as the string does
    if not isinstance(data, str) or not data:
        raise _fail("data", f"one of {list(SYNTHETIC + REAL_DATA)} or a .csv/.npy path", data)
    if data.lower().endswith(DATA_FILE_SUFFIXES):
        # An absolute path keeps config.toml rerunnable from any working directory.
        try:
            data = str(Path(data).expanduser().resolve())
        except ValueError:  # a NUL byte
            raise _fail("data", "an existing .csv or .npy file", data, "(a file name cannot hold a NUL byte).") from None
        except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise _fail("data", "an existing .csv or .npy file", data, f"({exc}).") from None
    c["data"] = data
    target = kw.get("target", Config.target)
    if not isinstance(target, str):
        raise _fail("target", f"one of {list(TARGETS)}", target)
    c["target"] = target
    config = Config(**c)
    config = _resolve_data(config, samples_given="samples" in kw)
    if config.steps > 0:
        task_of(config)  # a target that does not fit the task is refused before anything runs
    return config


def renamed_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keys of `DEPRECATED_FIELDS` under their new names, with a DeprecationWarning each."""
    out = dict(kwargs)
    for old, new in DEPRECATED_FIELDS.items():
        if old in out:
            value = out.pop(old)
            if value is None:
                continue
            warnings.warn(f"The '{old}' field is renamed '{new}' (it tunes the initialization before use, not "
                          f"the task training of 'steps'); '{old}' is read for now.", DeprecationWarning,
                          stacklevel=3)
            if out.get(new) is None:
                out[new] = value
    return out


def _training_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Task training's fields, validated (steps, optimizer, lr, batch_size, measure_at, task)."""
    c: dict[str, Any] = {}
    c["steps"] = _int("steps", kw.get("steps", Config.steps), 0)
    c["optimizer"] = _choice("optimizer", kw.get("optimizer", Config.optimizer), OPTIMIZERS)
    c["lr"] = _float("lr", kw.get("lr", Config.lr), minimum=0.0, strict=True)
    c["batch_size"] = _int("batch_size", kw.get("batch_size", Config.batch_size), 0)
    c["task"] = _choice("task", kw.get("task", Config.task), TASKS)
    raw = kw.get("measure_at", Config.measure_at)
    if isinstance(raw, str):
        raw = [v.strip() for v in raw.split(",") if v.strip()]
    if not isinstance(raw, (list, tuple)):
        raise _fail("measure_at", "a list of steps (integers >= 0)", raw)
    steps = sorted({_int("measure_at", v, 0) for v in raw})
    if steps and steps[-1] > c["steps"]:
        raise _fail("measure_at", f"steps between 0 and steps={c['steps']}", steps[-1])
    c["measure_at"] = tuple(steps)
    return c


def measure_steps(config: Config) -> tuple[int, ...]:
    """The steps at which every metric is measured: the config's `measure_at`, or 0, 1, 2, 5, 10, 20, 50, …
    up to `steps`; always with 0 and the last step. (0,) when nothing is trained."""
    if config.steps == 0:
        return (0,)
    if config.measure_at:
        return tuple(sorted({0, *config.measure_at, config.steps}))
    out, scale = {0, config.steps}, 1
    while scale <= config.steps:
        out.update(k * scale for k in (1, 2, 5) if k * scale <= config.steps)
        scale *= 10
    return tuple(sorted(out))


def task_of(config: Config) -> str:
    """'regression' (squared error) or 'classification' (cross-entropy): the config's task, or for 'auto'
    classification when the target is a dataset's or file column's integer labels (at most MAX_CLASSES).

    Raises ValueError (naming 'task' or 'target') when the target does not fit an explicit task.
    """
    labelled = config.data_is_fixed and (config.target == "dataset" or config.target.startswith("column:"))
    y = load_table(config).y if labelled else None
    discrete = y is not None and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y))) and \
        bool(y.min() >= 0) and len(np.unique(y)) <= MAX_CLASSES
    if config.task == "regression" or (config.task == "auto" and not discrete):
        return "regression"
    if not discrete:
        what = (f"target {config.target!r} of data {config.data!r} is continuous" if y is not None
                else f"target {config.target!r} is a continuous function of the input, not class labels")
        raise _fail("task", f"'regression' or 'auto' for this target ({what}); 'classification' needs "
                    f"integer class labels 0..{MAX_CLASSES - 1} (target 'dataset' or 'column:NAME')",
                    config.task)
    return "classification"


def _resolve_data(config: Config, *, samples_given: bool = True) -> Config:
    """Check the data and target names; for fixed data, load once and fix input_dim.

    Fixed data (a file or a built-in dataset) use all their rows unless
    `samples` was given: a smaller `samples` draws a random subset per trial
    (`subsample_note` says so).
    """
    valid_targets = TARGETS + ("dataset",)
    if config.data in SYNTHETIC:
        if config.target not in TARGETS:
            raise _fail("target", f"one of {list(TARGETS)} for synthetic data", config.target)
        return config
    if config.data in REAL_DATA or config.data_is_file:
        table = load_table(config)
        if config.target.startswith("column:") and not config.data_is_file:
            raise _fail("target", "'column:NAME' only for a .csv/.npy data file", config.target)
        if config.target == "dataset" and table.y is None:
            raise _fail(
                "target",
                f"one of {list(TARGETS)} or 'column:NAME' for a data file without a target",
                config.target,
            )
        if config.target not in valid_targets and not config.target.startswith("column:"):
            raise _fail("target", f"one of {list(valid_targets)} or 'column:NAME'", config.target)
        n_rows = table.x.shape[0]
        if not samples_given:
            config = dataclasses.replace(config, samples=int(n_rows))
        if config.samples > n_rows:
            raise _fail(
                "samples",
                f"at most the {n_rows} rows of data {config.data!r}",
                config.samples,
                f"Use --samples {n_rows} or fewer.",
            )
        return dataclasses.replace(config, input_dim=int(table.x.shape[1]))
    raise _fail("data", f"one of {list(SYNTHETIC + REAL_DATA)} or a path ending in .csv or .npy", config.data)


def subsample_note(config: Config) -> str | None:
    """One sentence when a run uses fewer samples than its fixed data's rows, else None."""
    if not config.data_is_fixed:
        return None
    rows = int(load_table(config).x.shape[0])
    if config.samples >= rows:
        return None
    return (f"samples: {config.samples} of the {rows} rows of {config.data!r}, a random subset per trial "
            f"(all rows without --samples, or with --samples {rows})")


def load_table(config: Config):
    """The fixed data table of a config whose data are real or a file."""
    if config.data in REAL_DATA:
        return load_real(config.data)
    column = config.target[len("column:"):] if config.target.startswith("column:") else None
    return load_file(config.data, target_column=column)


def load_config(path: str | os.PathLike, **overrides: Any) -> Config:
    """Read a TOML file (flat table of config fields), apply overrides, validate."""
    path = Path(path)
    # Judged and read in bounded chunks: /dev/zero, a FIFO or a huge file is refused, not read.
    text = read_bounded(path, parameter="config", what="TOML file", limit=CONFIG_LIMIT)
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"The 'config' parameter must be valid TOML. Got {str(path)!r}: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(**raw)


def config_to_toml(config: Config) -> str:
    """The config as TOML text that `load_config` reads back to an equal Config."""
    return toml_text({f.name: getattr(config, f.name) for f in fields(Config)},
                     header="initscope run configuration: rerun with `initscope run --config THIS_FILE`")


def toml_text(values: dict[str, Any], header: str | None = None) -> str:
    """A flat table as TOML. None and NaN are unset (TOML has no null): a comment says so."""
    lines = [f"# {header}"] if header else []
    for name, value in values.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            lines.append(f"# {name} is unset: each initializer's default" if name == "gain" else f"# {name} is unset")
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # inf and nan are TOML literals too
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_fields(config: Config) -> dict[str, Any]:
    """Every field's value under its column name: the renamed init-training fields under their old names, and
    task training's fields only when it trains (steps > 0), so that an untrained run's tables and a sweep's
    configuration ids are exactly those from before these fields existed."""
    legacy = {new: old for old, new in DEPRECATED_FIELDS.items()}
    return {legacy.get(f.name, f.name): getattr(config, f.name) for f in fields(Config)
            if not (f.name in TRAINING_FIELDS and config.steps == 0)}


def config_columns(config: Config) -> dict[str, Any]:
    """Config fields as scalar CSV columns (all but `init`, which is a row's own column; see `config_fields`)."""
    out: dict[str, Any] = {}
    for name, value in config_fields(config).items():
        if name == "init":
            continue
        if name == "measure_at":
            value = ",".join(str(s) for s in measure_steps(config))
        elif isinstance(value, tuple):
            value = ",".join(value)
        elif value is None:
            value = math.nan
        out[name] = value
    return out
