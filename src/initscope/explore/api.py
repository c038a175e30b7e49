"""Requests in, tables out: what the explorer's JSON API accepts and answers.

- `config_from_fields(fields, data_dir=...)`: config fields (JSON values or
  query-string text) -> a validated `Config`, through `make_config`, so a bad
  value gets exactly the CLI's one-line message. `data` may name a built-in
  data set or a .csv/.npy file under the server's data folder, nothing else.
- `check_budget(config, max_size, workers=...)`: refuse, before any work, a
  request whose size (trials × samples × width × depth per initializer, plus
  the Jacobian pass and init training) exceeds the server's budget, naming the
  field to reduce and how far; or whose memory peak (`study.memory`'s
  estimate, the one `initscope run` checks) cannot fit this machine's memory
  budget, naming the field that drives it and both sizes in bytes.
- `result_payload(result, orient)`: a run's tables as JSON-ready
  objects (NaN -> null), rows as objects ("records", the CSV columns) or as
  columns ("columns", compact: constant config columns given once).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from initscope.core.data import SYNTHETIC
from initscope.core.metrics import METRICS
from initscope.core.propagation import JACOBIAN_SAMPLES
from initscope.study.config import DATA_FILE_SUFFIXES, FIELD_NAMES, REAL_DATA, Config, config_columns, make_config
from initscope.study.memory import MemoryBudgetError, memory_budget, plan_run
from initscope.study.parallel import worker_count

__all__ = ["metric_display", "RequestError", "config_from_fields", "fields_from_query", "check_budget", "request_size",
           "result_payload", "encode", "TABLES", "ORIENTS", "BUILTIN_DATA", "one_line", "config_json"]

TABLES = ("metrics", "spectra", "projections", "flags")
ORIENTS = ("records", "columns")
BUILTIN_DATA = tuple(SYNTHETIC) + tuple(REAL_DATA)
# Fields a 413 may ask to reduce, in the order they are preferred when equally oversized.
_REDUCIBLE = ("samples", "trials", "depth", "width", "input_dim", "init_train_steps")


class RequestError(Exception):
    """A request the API refuses: an HTTP status and a one-line message (plus details)."""

    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.details = details

    def payload(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


def metric_display() -> dict[str, dict[str, Any]]:
    """How the page draws each registered metric, from its registry entry: {name: {label, linear, floor}}.

    linear: never a log axis (shares, cosines, correlations: `Metric.linear_scale`,
    as the report); floor: values below it are clipped (`display_floor`), or None.
    """
    return {name: {"label": entry.label, "linear": entry.linear_scale, "floor": entry.display_floor}
            for name, entry in METRICS.items()}


def one_line(text: Any) -> str:
    """The message as the CLI prints it: all whitespace runs collapsed to one space."""
    return " ".join(str(text).split())


def fields_from_query(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Config fields from query-string pairs; a repeated key (`init=a&init=b`) joins with commas."""
    out: dict[str, list[str]] = {}
    for key, value in items:
        out.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in out.items()}


def config_from_fields(fields: Mapping[str, Any], *, data_dir: Path | None = None) -> Config:
    """A validated Config from request fields; RequestError(400) with make_config's message otherwise.

    An empty string or null means "the default", as an absent field does.
    """
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:  # make_config's own message, before any field is read
        raise RequestError(400, f"Unknown config field {unknown[0]!r}. Valid fields are {list(FIELD_NAMES)}.")
    kw = {k: v for k, v in fields.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    if "data" in kw:
        kw["data"] = _data_path(kw["data"], data_dir)
    try:
        return make_config(**kw)
    except (ValueError, TypeError) as exc:
        raise RequestError(400, str(exc)) from None


def _data_path(value: Any, data_dir: Path | None) -> str:
    """A built-in data name, or the resolved path of a .csv/.npy file inside `data_dir`.

    Paths are resolved (symbolic links followed) before the containment test,
    so neither `../` nor a link can reach outside the folder.
    """
    if isinstance(value, str) and value in BUILTIN_DATA:
        return value
    where = ("a .csv/.npy file under the server's --data-dir" if data_dir is not None
             else "a file only when the server was started with --data-dir")
    constraint = f"one of {list(BUILTIN_DATA)} or {where}"
    if not isinstance(value, str) or data_dir is None:
        raise RequestError(400, f"The 'data' parameter must be {constraint}. Got {value!r} instead.")
    root = data_dir.resolve()
    try:
        path = (root / value).resolve()
        usable = path.is_relative_to(root) and path.suffix.lower() in DATA_FILE_SUFFIXES and path.is_file()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, too long a name, a symlink loop
        usable = False
    if not usable:
        raise RequestError(400, f"The 'data' parameter must be {constraint}. Got {value[:200]!r} instead.")
    return str(path)


def _size_terms(c: Config) -> dict[str, float]:
    """The work of a run in state entries: the forward states, the Jacobian tangents, init training."""
    per_layer = float(len(c.init)) * c.trials * c.width * c.depth
    terms = {"states": per_layer * c.samples}
    if "jacobian_rank" in c.metrics:
        terms["jacobian"] = per_layer * min(c.samples, JACOBIAN_SAMPLES) * c.input_dim
    if c.init_train != "none":
        terms["training"] = per_layer * (c.init_train_batch or c.samples) * c.init_train_steps
    return terms


def request_size(config: Config) -> float:
    """trials × samples × width × depth × initializers, plus the Jacobian pass and init training."""
    return sum(_size_terms(config).values())


def check_budget(config: Config, max_size: float, *, workers: int | None = None, memory_limit=None) -> None:
    """RequestError(413) naming the field to reduce when the request's size exceeds `max_size`, or when
    its memory peak (`study.memory.plan_run` with `workers` threads) cannot fit the budget in any
    chunking (memory_limit in bytes or text; default 80% of the memory available now)."""
    _check_size(config, max_size)
    try:
        plan_run(config, worker_count(workers, config.trials), memory_budget(memory_limit))
    except MemoryBudgetError as exc:
        raise RequestError(413, str(exc), field=exc.parameter, value=getattr(config, exc.parameter, None),
                           size=exc.needed, budget=exc.budget, unit="bytes") from None


def _check_size(config: Config, max_size: float) -> None:
    size = request_size(config)
    if size <= max_size:
        return
    field = _field_to_reduce(config)
    value = getattr(config, field)
    fits = _largest_fitting(config, field, max_size)
    advice = (f"Reduce {field!r} ({value}) to at most {fits}" if fits
              else f"Reduce {field!r} ({value}) and the other sizes")
    terms = _size_terms(config)
    extra = "".join(f" + {name} {v:.3g}" for name, v in terms.items() if name != "states")
    raise RequestError(
        413,
        f"The request is too large for this server: trials × samples × width × depth over "
        f"{len(config.init)} initializer(s) is {terms['states']:.3g}{extra} = {size:.3g}, above its budget "
        f"of {max_size:.3g} (initscope explore --max-size). {advice}, or run it with `initscope run`.",
        field=field, value=value, max=fits, size=size, budget=max_size,
    )


def _field_to_reduce(config: Config) -> str:
    """The size field furthest above its default (relative), among those the user can change."""
    defaults = Config()
    terms = _size_terms(config)
    candidates = ["samples", "trials", "depth", "width"]
    if "jacobian" in terms and terms["jacobian"] > terms["states"] and not config.data_is_fixed:
        candidates.append("input_dim")
    if "training" in terms and terms["training"] > terms["states"]:
        candidates.append("init_train_steps")
    ratios = {name: getattr(config, name) / max(getattr(defaults, name), 1) for name in candidates}
    return max(_REDUCIBLE, key=lambda name: (ratios.get(name, -math.inf), -_REDUCIBLE.index(name)))


def _largest_fitting(config: Config, field: str, max_size: float) -> int:
    """The largest value of `field` (other fields fixed) that fits the budget; 0 if even 1 does not."""
    lo, hi = 0, int(getattr(config, field))
    while lo < hi:  # the size grows with every field, so bisection finds the boundary
        mid = (lo + hi + 1) // 2
        if request_size(dataclasses.replace(config, **{field: mid})) <= max_size:
            lo = mid
        else:
            hi = mid - 1
    return lo


def config_json(config: Config) -> dict[str, Any]:
    """The config's fields as JSON values (tuples as lists, an unset gain as null)."""
    out = {}
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def result_payload(result, orient: str = "records") -> dict[str, Any]:
    """A run's tables as JSON-ready objects: config, gains and the tables in `orient` form.

    records: each table a list of row objects with the CSV's columns (named
    under "columns" too, for tables without rows); columns:
    each table {"rows", "columns" (names in CSV order), "data" (name -> list),
    "constant" (name -> the one value of a config column)}. Serialise with
    `encode`: floats at full precision (the shortest repr that reads back to
    the same double), NaN as null, ±inf as ±1e999.
    """
    if orient not in ORIENTS:
        raise RequestError(400, f"The 'orient' parameter must be one of {list(ORIENTS)}. Got {orient!r} instead.")
    # Only metrics carries the config as columns (projections' `target` is a number, not the field).
    constant = {"metrics": set(config_columns(result.config))}

    def encode(name: str):
        df = getattr(result, name)
        return _records(df) if orient == "records" else _columns(df, constant.get(name, set()))

    return {
        "config": config_json(result.config),
        "gains": {k: float(v) for k, v in result.gains.items()},
        "tables": {name: encode(name) for name in TABLES},
        # The CSV columns of each table, also when it has no rows (records cannot show them then).
        "columns": {name: [str(c) for c in getattr(result, name).columns] for name in TABLES},
    }


# JSON has no infinity and orjson writes it as null, which would read back as NaN. An infinite value
# (a state's rms at the edge of overflow) goes out as the number 1e999 instead: valid JSON grammar, and
# JavaScript's JSON.parse and Python's json read it back as ±inf. Tokens mark them until `encode`.
_INF = {math.inf: "\u0000initscope:+inf\u0000", -math.inf: "\u0000initscope:-inf\u0000"}
_INF_BYTES = {b'"\\u0000initscope:+inf\\u0000"': b"1e999", b'"\\u0000initscope:-inf\\u0000"': b"-1e999"}


def encode(payload: Any) -> bytes:
    """The payload as JSON bytes: floats at full precision, NaN as null, ±inf as ±1e999."""
    import orjson

    out = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    for token, number in _INF_BYTES.items():
        out = out.replace(token, number)
    return out


def _finite_or_token(values: list) -> list:
    return [_INF[v] if isinstance(v, float) and math.isinf(v) else v for v in values]


def _column_values(series) -> list | np.ndarray:
    values = series.to_numpy()
    if values.dtype.kind in "iub":
        return values  # orjson writes numpy arrays natively
    if values.dtype.kind == "f":
        return _finite_or_token(values.tolist()) if np.isinf(values).any() else values  # NaN goes out as null
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]


def _records(df) -> list[dict[str, Any]]:
    names = list(df.columns)
    columns = []
    for name in names:
        values = df[name].tolist()
        if df[name].dtype.kind == "f" and np.isinf(df[name].to_numpy()).any():
            values = _finite_or_token(values)
        columns.append(values)
    return [dict(zip(names, row)) for row in zip(*columns)]


def _columns(df, constant: set[str]) -> dict[str, Any]:
    names = [str(c) for c in df.columns]
    folded = {n: df[n].iloc[0] for n in names if n in constant and len(df)}
    folded = {n: (v.item() if hasattr(v, "item") else v) for n, v in folded.items()}
    return {
        "rows": int(len(df)),
        "columns": names,
        "data": {n: _column_values(df[n]) for n in names if n not in folded},
        "constant": folded,
    }
