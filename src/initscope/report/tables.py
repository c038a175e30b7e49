"""The tables a report is drawn from, and reading them back from a run folder.

A run writes tidy CSVs and its `config.toml` into one folder (DESIGN.md,
"Outputs"); `load_run` reads them back so that `initscope report DIR` can
rebuild a page without rerunning anything.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from initscope.study.overlays import THEORY_COLUMNS, theory_table
from initscope.study.records import config_dict

__all__ = ["RunTables", "TABLE_COLUMNS", "load_run", "as_tables"]

# The columns each table has at least (metrics.csv adds one column per config field).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": ("init", "trial", "layer", "metric", "value"),
    "spectra": ("init", "trial", "layer", "k", "singular_value"),
    "projections": ("init", "trial", "layer", "sample", "pc1", "pc2", "pc3", "target"),
    "weight_norms": ("init", "trial", "layer", "kind", "norm"),
    "flags": ("init", "trial", "layer", "flag"),
    # Optional: written only with jacobian_log_spread (counts of log10 normalised Jacobian singular values).
    "jacobian_spectra": ("init", "trial", "layer", "log10_sv", "count"),
    # Optional: the theory curves that hold for the run (`initscope.study.overlays`); derived when absent.
    "theory": THEORY_COLUMNS,
}


@dataclasses.dataclass(frozen=True)
class RunTables:
    """The tidy tables of one run and its config as a plain mapping.

    `config` holds the config fields by name (`init` and `metrics` as tuples,
    `gain` None when each initializer takes its default). Any table may be
    empty, with the columns of `TABLE_COLUMNS`. theory: the theory curves the
    report draws (the run's own, or derived from the metrics when a folder or
    a mapping comes without them).
    """

    metrics: Any
    spectra: Any
    projections: Any
    weight_norms: Any
    flags: Any
    config: Mapping[str, Any]
    jacobian_spectra: Any = None
    layers: Any = None  # an inspected model's layers table (module names, units, reference); None for a run
    training: Any = None  # a trained run's training.csv (steps > 0); None otherwise
    stepped: Any = None  # a trained run's {metrics, spectra, flags} at every measured step (`step` column)
    theory: Any = None


def load_run(folder: str | os.PathLike) -> RunTables:
    """Read a run folder's CSVs and `config.toml` into `RunTables`.

    `metrics.csv` and `config.toml` must exist; a missing or empty optional
    table (spectra, projections, weight norms, flags, jacobian spectra) becomes an empty table.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"The 'folder' parameter of load_run must be a run folder. Got {str(folder)!r} instead.")
    for required in ("metrics.csv", "config.toml"):
        if not (folder / required).is_file():
            raise ValueError(
                f"The 'folder' parameter of load_run must hold {required}; {str(folder)!r} does not. "
                "Point it at the --out folder of `initscope run`."
            )
    with (folder / "config.toml").open("rb") as fh:
        config = tomllib.load(fh)
    config.setdefault("gain", None)  # TOML has no null: an unset gain is left out
    tables = {name: _read_csv(folder / f"{name}.csv", columns) for name, columns in TABLE_COLUMNS.items()}
    layers = folder / "layers.csv"  # written by `initscope inspect`
    tables["layers"] = _read_csv(layers, ("init", "layer")) if layers.is_file() and layers.stat().st_size else None
    config = config_dict(config)
    if not (folder / "theory.csv").is_file():  # a run written before theory.csv, or one with no curve
        tables["theory"] = theory_table(tables["metrics"], config)
    if "step" in tables["metrics"].columns:  # a trained run: the tables above are step 0's, as `run` returns them
        tables["stepped"] = {name: tables[name] for name in ("metrics", "spectra", "flags")}
        for name, table in tables["stepped"].items():
            if "step" in table.columns:
                tables[name] = table[table["step"] == 0].drop(columns="step").reset_index(drop=True)
        tables["training"] = _read_csv(folder / "training.csv", ("init", "trial", "step", "loss", "test_loss"))
    return RunTables(**tables, config=config)


def _read_csv(path: Path, columns: tuple[str, ...]):
    import pandas as pd

    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype=_column_dtype(c)) for c in columns})
    # keep_default_na=False keeps an initializer or flag named like "nan"/"none"
    # a string; numeric columns still parse "nan" as NaN.
    table = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN", ""])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path.name} must have the columns {list(columns)}; it lacks {missing}.")
    for c in ("init", "metric", "kind", "flag", "curve"):
        if c in table.columns:
            table[c] = table[c].astype(str)
    return table


def _column_dtype(column: str) -> str:
    return "object" if column in ("init", "metric", "kind", "flag", "curve") else "float64"


def as_tables(result: Any) -> RunTables:
    """Coerce a `Result` (or a run's records), a `RunTables` or a mapping of tables to `RunTables`."""
    import pandas as pd

    get = result.get if isinstance(result, Mapping) else lambda name, default=None: getattr(result, name, default)
    if get("metrics") is None:
        raise TypeError(
            "The 'result_or_tables' parameter must be a Result, RunTables or a mapping with a "
            f"'metrics' table. Got {type(result).__name__} instead."
        )
    tables = {}
    for name, columns in TABLE_COLUMNS.items():
        table = get(name)
        if table is None:
            table = pd.DataFrame({c: pd.Series(dtype=_column_dtype(c)) for c in columns})
        tables[name] = table
    config = config_dict(get("config"), tables["metrics"])
    if get("theory") is None:
        tables["theory"] = theory_table(tables["metrics"], config)
    return RunTables(**tables, config=config, layers=get("layers"), training=get("training"),
                     stepped=get("stepped"))
