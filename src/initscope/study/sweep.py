"""Sweep specs: a TOML file of config fields, any of them a list, expanded to validated Configs.

A sweep file is a run config file (`initscope run --config`) in which any field
may be a list. The sweep is the product of the lists, times `trials`:

    init = ["normal", "sphere", "kaiming-normal"]
    depth = [5, 10, 20]
    width = [40, 100]
    seed = [0, 1]
    trials = 10

is 3 × 3 × 2 × 2 = 36 configurations of 10 trials each. Rules:

- `init`: each initializer is its own stored configuration, so a list of
  initializers is an axis like any other.
- `metrics`: a list is the set of metrics every configuration computes, not
  an axis.
- `trials`: one integer, the trials of every configuration. More replicates
  come from a longer `trials` or from a `seed` list.
- `gain`: a number, or "default" for each initializer's own gain, so that
  `gain = ["default", 1.0, 2.0]` works (TOML has no null).
- `residual` with `width` ≠ `input_dim` is allowed: the residual branch is
  added only where the shapes match, so layer 1 (input_dim → width) has no
  skip connection and layers 2..depth have one.

Every combination is validated with `make_config` before anything runs; the
first bad one raises a `ValueError` naming the field, the constraint and the
value (and the combination, when the fault is in how values combine).
Combinations that validate to the same configuration (e.g. `input_dim` for a
real data set, which fixes it) are run once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from initscope.study.config import FIELD_NAMES, FLOAT_FIELDS, INT_FIELDS, Config, config_fields, make_config, renamed_fields
from initscope.study.files import CONFIG_LIMIT, read_bounded

__all__ = [
    "Sweep",
    "load_sweep",
    "make_sweep",
    "config_id",
    "split_inits",
    "config_record",
    "MAX_CONFIGS",
    "HASH_VERSION",
]

MAX_CONFIGS = 100_000
HASH_VERSION = "initscope-config-v1"
_INT_FIELDS = INT_FIELDS  # every numeric field of Config, lsuv_* and train_* included
_FLOAT_FIELDS = FLOAT_FIELDS
_NAME_LIST_FIELDS = ("init", "metrics")
_NOT_AXES = ("metrics", "trials")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its configurations (one initializer each) and what varies.

    configs: in product order, duplicates removed; each has `trials` = the sweep's.
    axes: the fields given as lists of more than one value, with those values.
    ids: `config_id` of each config, in the same order.
    """

    configs: tuple[Config, ...]
    axes: dict[str, tuple[Any, ...]]
    trials: int
    ids: tuple[str, ...]
    source: str = ""

    @property
    def total_trials(self) -> int:
        return len(self.configs) * self.trials


def _fail(field: str, constraint: str, value: Any, where: str) -> ValueError:
    return ValueError(f"The '{field}' field of {where} must be {constraint}. Got {value!r} instead.")


def _check_scalar(field: str, value: Any, where: str) -> Any:
    """A type check stricter than make_config's, which also accepts CLI text like "10"."""
    if field in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(field, "an integer or a non-empty list of integers", value, where)
    elif field in _FLOAT_FIELDS:
        if field == "gain" and value == "default":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            extra = ' or "default"' if field == "gain" else ""
            raise _fail(field, f"a number{extra} or a non-empty list of them", value, where)
    elif field == "init":
        if not isinstance(value, str):
            raise _fail(field, "an initializer name or a non-empty list of names", value, where)
    elif not isinstance(value, str):
        raise _fail(field, "a string or a non-empty list of strings", value, where)
    return value


def _axis_values(field: str, value: Any, where: str) -> list[Any]:
    """The values a field takes in the sweep: a list for an axis, [value] otherwise."""
    if field == "metrics":
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(m, str) for m in names):
            raise _fail(field, "a non-empty list of metric names (the set every configuration computes)",
                        value, where)
        return [[m.strip() for m in names]]
    if field == "measure_at":  # one list of steps for every configuration (make_config checks it)
        return [tuple(value) if isinstance(value, list) else value]
    if field == "trials":
        if isinstance(value, list):
            raise _fail(field, "one integer (the trials of every configuration; use a 'seed' list "
                        "for more replicates)", value, where)
        return [_check_scalar(field, value, where)]
    if field == "init" and isinstance(value, str) and "," in value:
        value = [v.strip() for v in value.split(",")]
    if isinstance(value, list):
        if not value:
            raise _fail(field, "a single value or a non-empty list", value, where)
        out = []
        for v in value:
            if isinstance(v, (list, dict)):
                raise _fail(field, "a single value or a flat list of values", value, where)
            v = _check_scalar(field, v, where)
            if v not in out:
                out.append(v)
        return out
    if isinstance(value, dict):
        raise _fail(field, "a single value or a list, not a table", value, where)
    return [_check_scalar(field, value, where)]


def make_sweep(spec: dict[str, Any], *, source: str = "the sweep") -> Sweep:
    """Validate a sweep spec (field -> value or list of values) into a `Sweep`.

    Raises ValueError naming the field and value for an unknown field, a wrong
    type, an empty list, a value make_config rejects, or more than
    MAX_CONFIGS combinations. Nothing is run.
    """
    spec = renamed_fields(spec)  # old names of renamed fields, with a DeprecationWarning
    unknown = [k for k in spec if k not in FIELD_NAMES]
    if unknown:
        raise ValueError(
            f"Unknown field {unknown[0]!r} in {source}. Valid fields are {list(FIELD_NAMES)}."
        )
    values = {k: _axis_values(k, v, source) for k, v in spec.items()}
    size = 1
    for v in values.values():
        size *= len(v)
    if size > MAX_CONFIGS:
        raise ValueError(
            f"The sweep in {source} has {size:,} combinations; at most {MAX_CONFIGS:,} are allowed. "
            "Split it into several sweep files over one store."
        )
    names = list(values)
    axes = {k: tuple(v) for k, v in values.items() if len(v) > 1 and k not in _NOT_AXES}
    configs: list[Config] = []
    ids: list[str] = []
    seen: set[str] = set()
    for combo in itertools.product(*(values[k] for k in names)):
        kwargs = dict(zip(names, combo))
        if "init" in kwargs:
            kwargs["init"] = [kwargs["init"]]
        try:
            config = make_config(**kwargs)
        except (ValueError, TypeError) as exc:
            where = ", ".join(f"{k}={kwargs[k] if k != 'init' else kwargs[k][0]!r}" for k in axes)
            raise ValueError(f"{exc} (in {source}" + (f", combination {where})" if where else ")")) from None
        for single in split_inits(config):
            cid = config_id(single)
            if cid not in seen:
                seen.add(cid)
                configs.append(single)
                ids.append(cid)
    trials = configs[0].trials
    return Sweep(tuple(configs), axes, trials, tuple(ids), source)


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep TOML file. Raises ValueError with a one-line reason."""
    path = Path(path)
    text = read_bounded(path, parameter="config", what="TOML file", limit=CONFIG_LIMIT)  # no /dev/zero, no FIFO
    try:
        spec = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"The 'config' parameter must be valid TOML. Got {str(path)!r}: {exc}") from None
    return make_sweep(spec, source=f"sweep file {str(path)!r}")


def split_inits(config: Config) -> list[Config]:
    """One Config per initializer: the unit the store identifies and runs.

    A trial's numbers do not change by splitting: run() derives each
    initializer's generators from (seed, initializer name, trial).
    """
    return [dataclasses.replace(config, init=(name,)) for name in config.init]


def _identity(config: Config) -> dict[str, Any]:
    if len(config.init) != 1:
        raise ValueError(
            f"The 'init' field of a stored configuration must be one initializer. Got {list(config.init)} instead. "
            "Use split_inits(config) first."
        )
    out: dict[str, Any] = {}
    for name, value in config_fields(config).items():  # an untrained config's id is as before task training
        if name == "trials":
            continue
        if name == "init":
            value = value[0]
        elif name == "metrics":
            value = sorted(value)
        out[name] = value
    return out


def config_id(config: Config) -> str:
    """A stable identity of a single-initializer Config: 16 hex digits of a SHA-256.

    Hashes every field but `trials` (trial t's numbers do not depend on how
    many trials run), with the metric set sorted. Floats hash by their
    shortest repr, so 1 and 1.0 (both stored as 1.0 by make_config) agree.
    A data file is identified by its path, not its contents.
    """
    payload = json.dumps([HASH_VERSION, _identity(config)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def config_record(config: Config) -> dict[str, Any]:
    """The config's columns as stored: every field but `trials`, `init` a single name,
    `metrics` comma-joined, `gain` None when unset."""
    rec = _identity(config)
    rec["metrics"] = ",".join(config.metrics)
    return rec
