"""Tidy tables of a run: RunRecords and the assembly of measured chunks into long tables.

Tidy long tables (init, trial, layer, metric, value, config columns) are the
common currency between study, store, report and CLI. Assembly is one numpy
array per column, never a Python loop per row: deep runs have millions of rows.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from initscope.core.propagation import JACOBIAN_LOG10_EDGES
from initscope.study.config import DEPRECATED_FIELDS, Config, config_columns
from initscope.study.measure import Chunk
from initscope.study.directions import LOST_DIRECTIONS, lost_direction_rows

__all__ = ["RunRecords", "config_dict", "METRIC_COLUMNS", "THEORY_COLUMNS", "NumericalWarning", "tables", "warn_overflow", "JACOBIAN_COLUMNS", "GRADIENT_OVERFLOW"]

GRADIENT_OVERFLOW = "gradient_overflow"  # states finite, backward pass not: its own flag

JACOBIAN_COLUMNS = ("init", "trial", "layer", "log10_sv", "count")
METRIC_COLUMNS = ("init", "trial", "layer", "metric", "value")  # then one column per config field
THEORY_COLUMNS = ("init", "metric", "layer", "value", "curve")  # `initscope.study.overlays`


class NumericalWarning(RuntimeWarning):
    """Overflow or collapse happened in a run; it is in the results, not an error."""


@dataclass(repr=False)
class RunRecords:
    """Tidy tables of one study run (see DESIGN.md's output contract).

    The study's own record of a run; the public face of it is
    `initscope.Result` (`initscope.run` returns one), which shows and writes it.
    """

    config: Config
    metrics: pd.DataFrame
    spectra: pd.DataFrame
    projections: pd.DataFrame
    weight_norms: pd.DataFrame
    flags: pd.DataFrame
    gains: dict[str, float] = field(default_factory=dict)
    init_log: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["init", "trial", "layer", "quantity", "value"]))
    train_log: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["init", "trial", "step", "objective", "seconds"]))
    # With jacobian_log_spread: counts of log10 of the Jacobians' normalised singular values (non-zero bins)
    jacobian_spectra: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(JACOBIAN_COLUMNS)))
    # With steps > 0 (study.training): the loss per trial and step (training.csv), and metrics, spectra and
    # flags at every measured step with a `step` column (the tables above are step 0's, as without training).
    training: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["init", "trial", "step", "loss",
                                                                                  "test_loss"]))
    stepped: dict = field(default_factory=dict)
    # The theory curves that hold for this config, long (`initscope.study.overlays.theory_table`)
    theory: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(THEORY_COLUMNS)))

    def __repr__(self) -> str:
        cfg = self.config
        return (f"RunRecords({', '.join(cfg.init)} × {cfg.trials} trials, depth {cfg.depth}; "
                f"{len(self.metrics):,} metric rows)")


def tables(config: Config, results: dict[str, list[Chunk]], chunks, y: np.ndarray, gains) -> RunRecords:
    """Assemble the chunks into tidy tables, one numpy array per column (no per-row Python)."""
    L = config.depth
    trials = np.concatenate(chunks)
    T = len(trials)
    names = list(config.metrics)
    m_cols: dict[str, list] = {"init": [], "trial": [], "layer": [], "metric": [], "value": []}
    s_cols: dict[str, list] = {"init": [], "trial": [], "layer": [], "k": [], "singular_value": []}
    proj_cols: dict[str, list] = {k: [] for k in ("init", "layer", "sample", "pc1", "pc2", "pc3", "target")}
    norm_cols: dict[str, list] = {k: [] for k in ("init", "trial", "layer", "kind", "norm")}
    flag_rows, lost_rows = [], []  # lost_directions rows go last, as with_lost_directions adds them
    for init, parts in results.items():
        vals = np.stack([np.concatenate([p.values[name] for p in parts]) for name in names])  # (M, T, L+1)
        size = vals.size
        m_cols["init"].append(_repeat(init, size))
        m_cols["metric"].append(np.repeat(_names_array(names), T * (L + 1)))
        m_cols["trial"].append(np.tile(np.repeat(trials, L + 1), len(names)))
        m_cols["layer"].append(np.tile(np.arange(L + 1), len(names) * T))
        m_cols["value"].append(vals.reshape(-1))
        _add_spectra(s_cols, init, parts, trials, L)
        for p in parts:
            if p.projections is not None:
                n = p.projections.shape[1]
                proj_cols["init"].append(_repeat(init, (L + 1) * n))
                proj_cols["layer"].append(np.repeat(np.arange(L + 1, dtype=np.int32), n))
                proj_cols["sample"].append(np.tile(np.arange(n, dtype=np.int32), L + 1))
                for k in range(3):
                    proj_cols[f"pc{k + 1}"].append(p.projections[:, :, k].reshape(-1))
                proj_cols["target"].append(np.tile(y[0, :, 0].astype(np.float64), L + 1))
        _add_weight_norms(norm_cols, init, parts)
        overflow = np.concatenate([p.overflow_layer for p in parts])
        collapsed = np.concatenate([p.collapsed for p in parts])
        rows = [(init, int(trials[i]), int(overflow[i]), "overflow") for i in np.flatnonzero(overflow >= 0)]
        rows += [(init, int(trials[i]), int(layer), "collapsed") for i, layer in zip(*np.nonzero(collapsed))]
        if "grad_norm" in names:
            rows += _gradient_overflow_rows(init, trials, overflow, np.concatenate([p.values["grad_norm"] for p in parts]))
        flag_rows += sorted(rows, key=lambda r: (r[1], r[2]))
        lost_rows += lost_direction_rows(
            init, trials, [np.concatenate([p.spectra[layer] for p in parts]) for layer in range(L + 1)],
            vals[names.index("rms")] if "rms" in names else None, dtype=config.dtype, samples=config.samples,
            width=config.width, input_dim=config.input_dim)

    fixed = config_columns(config)
    metrics = _frame(m_cols, ["init", "trial", "layer", "metric", "value", *fixed], **fixed)
    spectra = _frame(s_cols, ["init", "trial", "layer", "k", "singular_value"])
    projections = _frame(proj_cols, ["init", "trial", "layer", "sample", "pc1", "pc2", "pc3", "target"], trial=0)
    weight_norms = _frame(norm_cols, ["init", "trial", "layer", "kind", "norm"])
    flags = pd.DataFrame(flag_rows + lost_rows, columns=["init", "trial", "layer", "flag"])
    flags.attrs[LOST_DIRECTIONS] = len(flags)  # complete at this many rows: not derived again later
    # Rows by (trial, layer) within an initializer, whatever chunks the trials ran in:
    # a chunk lists its rows layer by layer, so one chunk or seven would interleave differently.
    info_rows = [(init, *row) for init, parts in results.items()
                 for row in sorted((r for p in parts for r in p.init_info), key=lambda r: (r[0], r[1]))]
    init_log = pd.DataFrame(info_rows, columns=["init", "trial", "layer", "quantity", "value"])
    result = RunRecords(config, metrics, spectra, projections, weight_norms, flags, gains, init_log)
    if any(p.jacobian_hist is not None for parts in results.values() for p in parts):
        result.jacobian_spectra = _jacobian_table(results, trials)
    return result


def _jacobian_table(results: dict[str, list[Chunk]], trials: np.ndarray) -> pd.DataFrame:
    """The chunks' Jacobian histograms as tidy rows (init, trial, layer, log10_sv bin centre, count > 0)."""
    centres = np.round(0.5 * (JACOBIAN_LOG10_EDGES[1:] + JACOBIAN_LOG10_EDGES[:-1]), 6)
    cols: dict[str, list] = {k: [] for k in JACOBIAN_COLUMNS}
    for init, parts in results.items():
        counts = np.stack([np.concatenate([p.jacobian_hist[layer] for p in parts])
                           for layer in range(len(parts[0].jacobian_hist))], axis=1)  # (T, L+1, bins)
        t, layer, k = np.nonzero(counts)
        cols["init"].append(_repeat(init, len(t)))
        cols["trial"].append(trials[t].astype(np.int64))
        cols["layer"].append(layer.astype(np.int64))
        cols["log10_sv"].append(centres[k])
        cols["count"].append(counts[t, layer, k])
    return _frame(cols, list(JACOBIAN_COLUMNS))


def _add_spectra(s_cols: dict[str, list], init: str, parts: list[Chunk], trials: np.ndarray, L: int) -> None:
    """One initializer's spectrum rows (init, trial, layer, k, singular_value); overflowed trials have none."""
    for layer in range(L + 1):
        sv = np.concatenate([p.spectra[layer] for p in parts])  # (T, k); NaN rows: overflowed trials
        keep = ~np.isnan(sv).any(axis=1)
        sv, kept = sv[keep], trials[keep]
        k = sv.shape[1]
        s_cols["init"].append(_repeat(init, sv.size))
        s_cols["trial"].append(np.repeat(kept.astype(np.int32), k))
        s_cols["layer"].append(np.full(sv.size, layer, dtype=np.int32))
        s_cols["k"].append(np.tile(np.arange(1, k + 1, dtype=np.int32), len(kept)))
        s_cols["singular_value"].append(sv.reshape(-1))


def _add_weight_norms(norm_cols: dict[str, list], init: str, parts: list[Chunk]) -> None:
    """One initializer's weight-norm rows (init, trial, layer, kind, norm), ordered by (trial, layer).

    Chunks arrive per thread; ordering rows by (trial, layer) within an
    initializer makes the table the same bytes whatever the number of workers.
    """
    pieces = [(np.repeat(np.asarray(ts, dtype=np.int64), norms.shape[1]), np.full(norms.size, layer, dtype=np.int64),
               norms.reshape(-1)) for p in parts for layer, ts, norms in p.weight_norms]
    if not pieces:
        return
    t_col, l_col, n_col = (np.concatenate(col) for col in zip(*pieces))
    order = np.lexsort((l_col, t_col))  # stable: units keep their order within (trial, layer)
    t_col, l_col, n_col = t_col[order], l_col[order], n_col[order]
    kind = _repeat("internal", len(l_col))
    kind[l_col == 1] = "input"
    norm_cols["init"].append(_repeat(init, len(l_col)))
    norm_cols["trial"].append(t_col)
    norm_cols["layer"].append(l_col)
    norm_cols["kind"].append(kind)
    norm_cols["norm"].append(n_col)


def _repeat(value: str, n: int) -> np.ndarray:
    """An object array of n references to one string.

    np.full(n, value, dtype=object) goes through a unicode array and makes n
    separate str objects (~70 bytes each): hundreds of MB for deep runs.
    """
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _column(values: np.ndarray):
    return pd.Series(values, dtype=object, copy=False) if values.dtype == object else values


def _names_array(names: list[str]) -> np.ndarray:
    out = np.empty(len(names), dtype=object)
    out[:] = names
    return out


def _frame(cols: dict[str, list], order: list[str], **constant) -> pd.DataFrame:
    """One DataFrame from lists of column pieces (empty with the same columns when no pieces).

    Consumes `cols`. `constant` columns (one value for every row) are named in
    `order` too, and are built with the rest: inserting them one by one into a
    finished frame cost more than the whole table at seed scale.
    """
    if not cols[next(iter(cols))]:
        return pd.DataFrame(columns=order)
    # Pop each column's pieces as it is joined, so that the pieces and the joined
    # column are never all alive at once (deep runs have ~10⁶ spectrum rows).
    # Label columns stay object arrays of shared strs: pandas' inferred (Arrow) strings
    # would copy each row into a memory pool that the process keeps (~70 B/row).
    joined = {k: np.concatenate(cols.pop(k)) for k in list(cols)}
    rows = len(next(iter(joined.values())))
    for key, value in constant.items():
        joined[key] = _repeat(value, rows) if isinstance(value, str) else np.full(rows, value)
    return pd.DataFrame({k: _column(joined.pop(k)) for k in order})


def _gradient_overflow_rows(init: str, trials: np.ndarray, overflow: np.ndarray, grad: np.ndarray) -> list:
    """Flag rows (init, trial, layer, "gradient_overflow") for trials whose states stayed finite but whose
    backward pass did not. grad: (T, L+1) grad_norm values (layer 0 is NaN by definition).

    Backpropagation runs from the top, so the flagged layer is the deepest one whose gradient is not
    finite: every layer below it inherits the overflow. Trials whose states overflowed already carry
    the `overflow` flag, and their gradients are NaN from that layer on by construction.
    """
    hidden = grad[:, 1:]
    rows = []
    for i in np.flatnonzero((overflow < 0) & ~np.isfinite(hidden).all(axis=1)):
        deepest = int(np.flatnonzero(~np.isfinite(hidden[i]))[-1]) + 1
        rows.append((init, int(trials[i]), deepest, GRADIENT_OVERFLOW))
    return rows


def warn_overflow(config: Config, flags: pd.DataFrame) -> None:
    """One warning per initializer that overflowed (states, or gradients alone), naming the first layer."""
    over = flags[flags["flag"] == "overflow"]
    for init, rows in over.groupby("init", sort=False):
        first = int(rows["layer"].min())
        warnings.warn(
            f"init {init!r}: states overflow (non-finite states or Jacobians) from layer {first} in "
            f"{rows['trial'].nunique()} of {config.trials} trials; metrics are NaN from there on",
            NumericalWarning,
            stacklevel=3,
        )
    grad = flags[flags["flag"] == GRADIENT_OVERFLOW]
    for init, rows in grad.groupby("init", sort=False):
        warnings.warn(
            f"init {init!r}: the gradients overflow (non-finite) in the backward pass from layer "
            f"{int(rows['layer'].max())} down in {rows['trial'].nunique()} of {config.trials} trials, "
            "while the states stay finite; grad_norm is NaN there",
            NumericalWarning,
            stacklevel=3,
        )


def config_dict(config: Any = None, metrics: Any = None) -> dict[str, Any]:
    """The config fields as a plain dict, from a Config, a mapping or the metrics' columns.

    Fields missing from `config` are taken from the config columns of
    `metrics` (every row carries them), so a figure can be drawn from the
    metrics table alone. `gain` NaN becomes None (each initializer's default).
    """
    if config is None:
        out: dict[str, Any] = {}
    elif isinstance(config, Mapping):  # an inspection's context too: its fields that are set
        out = dict(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    else:
        raise TypeError(f"The 'config' parameter must be a Config or a mapping. Got {type(config).__name__} instead.")
    if metrics is not None and len(metrics):
        first = metrics.iloc[0]
        for column in metrics.columns:
            name = DEPRECATED_FIELDS.get(column, column)  # init-training columns keep their old names
            if name not in out and column not in METRIC_COLUMNS:
                out[name] = first[column].item() if hasattr(first[column], "item") else first[column]
        if "init" not in out:
            out["init"] = tuple(dict.fromkeys(metrics["init"].astype(str)))
    if isinstance(out.get("measure_at"), list):  # TOML's list of steps: the Config's tuple
        out["measure_at"] = tuple(out["measure_at"])
    for name in ("init", "metrics"):
        value = out.get(name)
        if isinstance(value, str):
            out[name] = tuple(v for v in value.split(",") if v)
        elif isinstance(value, list):
            out[name] = tuple(value)
    gain = out.get("gain")
    if isinstance(gain, float) and math.isnan(gain):
        out["gain"] = None
    return out
