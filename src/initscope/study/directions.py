"""Lost directions: how many spectrum components of each layer stand above the noise floor, and the first
layer of each trial that keeps fewer than its input did.

The numbers behind the `lost_directions` rows of a run's flags table: `run()`
derives them from the measured arrays (`lost_direction_rows`) before any
table is built; a table read back without them gets them from the tidy
tables (`with_lost_directions`, the very same rows). The verdict's sentences
and the report only read them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from initscope.core.metrics import rank_rtol

__all__ = ["LOST_DIRECTIONS", "config_fields", "kept_directions", "kept_counts", "kept_base", "lost_direction_rows",
           "lost_direction_flags", "with_lost_directions"]

LOST_DIRECTIONS = "lost_directions"


def config_fields(config: Any, metrics: pd.DataFrame) -> dict[str, Any]:
    """The config fields as a dict, from a Config, a mapping or the metrics' config columns."""
    if isinstance(config, Mapping) or config is None:
        out = dict(config or {})
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        out = dataclasses.asdict(config)
    else:
        out = dict(config)
    if len(metrics):
        first = metrics.iloc[0]
        for name in ("samples", "width", "input_dim", "dtype", "readout", "depth", "gain", "activation"):
            if name not in out and name in metrics.columns:
                out[name] = first[name]
    return out


def kept_directions(spectra: pd.DataFrame, metrics: pd.DataFrame, *, dtype: str, samples: int,
                    width: int, input_dim: int) -> pd.DataFrame:
    """Per (init, trial, layer): how many components stand above the noise floor.

    A component counts when σ_k > max(σ_1·rtol, √eps·‖S‖_F): above
    numerical_rank's relative threshold (rtol 1e-6 for float64, 1e-3 for
    float32), and above the absolute floor of a state of that size, ‖S‖_F =
    rms·√(n·w) (uncentred): differences between samples smaller than that
    are lost to rounding, whatever the centred spectrum's own σ_1.
    Returns columns init, trial, layer, kept.
    """
    eps = float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
    # Plain integer keys and numpy reductions: a pandas groupby over (init, trial, layer) on a deep
    # run's ~10⁶ spectrum rows held ~50 MiB of temporaries, which showed in the run's peak memory.
    init_codes, init_names = pd.factorize(spectra["init"].astype(str), sort=False)
    trial = spectra["trial"].to_numpy(dtype=np.int64)
    layer = spectra["layer"].to_numpy(dtype=np.int64)
    key = (init_codes.astype(np.int64) * (trial.max() + 1) + trial) * (layer.max() + 1) + layer
    groups, group_of = np.unique(key, return_inverse=True)
    values = spectra["singular_value"].to_numpy(dtype=np.float64)
    top = np.full(len(groups), -np.inf)
    np.maximum.at(top, group_of, values)
    floor = top[group_of] * rank_rtol(dtype)
    rms = metrics[metrics["metric"] == "rms"]
    if len(rms):
        r_codes = pd.Index(init_names).get_indexer(rms["init"].astype(str))
        r_key = (r_codes.astype(np.int64) * (trial.max() + 1) + rms["trial"].to_numpy(dtype=np.int64)) \
            * (layer.max() + 1) + rms["layer"].to_numpy(dtype=np.int64)
        scale = pd.Series(rms["value"].to_numpy(dtype=np.float64), index=r_key)
        scale = scale[~scale.index.duplicated()].reindex(groups).to_numpy()[group_of]
        units = np.where(layer == 0, input_dim, width)
        floor = np.fmax(floor, math.sqrt(eps) * scale * np.sqrt(samples * units))
    kept = np.bincount(group_of, weights=values > floor, minlength=len(groups)).astype(np.int64)
    first = np.zeros(len(groups), dtype=np.int64)
    first[group_of[::-1]] = np.arange(len(group_of))[::-1]  # each group's first row, for its labels
    return pd.DataFrame({"init": np.asarray(init_names, dtype=object)[init_codes[first]], "trial": trial[first],
                         "layer": layer[first], "kept": kept})


def kept_counts(sv: np.ndarray, rms: np.ndarray | None, *, dtype: str, samples: int, units: int) -> np.ndarray:
    """Components above the noise floor per trial, for one layer: `kept_directions`' rule on arrays.

    sv: (T, k) singular values of the layer's centred states; rms: (T,) the
    layer's rms, or None (no absolute floor). Returns (T,) counts, -1 where a
    trial has no finite spectrum (overflow), which the table form has no rows for.
    """
    sv = np.asarray(sv, dtype=np.float64)
    valid = ~np.isnan(sv).any(axis=1) if sv.shape[1] else np.zeros(len(sv), dtype=bool)
    if not valid.any():
        return np.full(len(sv), -1, dtype=np.int64)
    floor = np.where(valid, sv.max(axis=1, initial=-np.inf, where=~np.isnan(sv)), np.nan) * rank_rtol(dtype)
    if rms is not None:
        eps = float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
        floor = np.fmax(floor, math.sqrt(eps) * np.asarray(rms, dtype=np.float64) * math.sqrt(samples * units))
    kept = (sv > floor[:, None]).sum(axis=1)
    return np.where(valid, kept, -1)


def lost_direction_rows(init: str, trials: np.ndarray, spectra: list[np.ndarray], rms: np.ndarray | None, *,
                        dtype: str, samples: int, width: int, input_dim: int) -> list[tuple[str, int, int, str]]:
    """`lost_direction_flags` for one initializer from the measured arrays, before any table is built.

    trials: (T,) trial ids; spectra: per layer 0..L, (T, k_l) singular values
    (NaN rows for overflowed trials); rms: (T, L+1) or None. Deriving the flag
    here rather than from the long spectra table keeps a deep run's peak
    memory at that of its tables. Rows (init, trial, first lost layer, flag),
    by trial, the same rows `lost_direction_flags` gives from the tables.
    """
    def counts(layer: int) -> np.ndarray:
        return kept_counts(spectra[layer], None if rms is None else rms[:, layer], dtype=dtype, samples=samples,
                           units=input_dim if layer == 0 else width)

    base = counts(0)
    first = np.full(len(trials), -1, dtype=np.int64)
    for layer in range(1, len(spectra)):
        kept = counts(layer)
        hit = (first < 0) & (base >= 0) & (kept >= 0) & (kept < base)
        first[hit] = layer
    order = np.argsort(trials, kind="stable")
    return [(init, int(trials[i]), int(first[i]), LOST_DIRECTIONS) for i in order if first[i] >= 0]


def lost_direction_flags(metrics: pd.DataFrame, spectra: pd.DataFrame, config: Any = None) -> pd.DataFrame:
    """Flag rows (init, trial, layer, flag="lost_directions"): the first layer of each trial that keeps
    fewer directions than its input did.

    A direction is kept when its component stands above the noise floor
    (`kept_directions`). Once under it, no later layer can bring it back: those
    input directions are lost for good. An overflowed layer (no finite
    spectrum) is the overflow flag's, not this one's.
    """
    columns = ["init", "trial", "layer", "flag"]
    if spectra is None or not len(spectra):
        return pd.DataFrame(columns=columns)
    cfg = config_fields(config, metrics)
    kept = kept_directions(spectra, metrics, dtype=str(cfg.get("dtype", "float64")), samples=int(cfg["samples"]),
                           width=int(cfg["width"]), input_dim=int(cfg["input_dim"]))
    base = kept[kept["layer"] == 0].set_index(["init", "trial"])["kept"]
    kept = kept[kept["layer"] >= 1]
    reference = base.reindex(pd.MultiIndex.from_frame(kept[["init", "trial"]])).to_numpy()
    lost = kept[kept["kept"].to_numpy() < reference]
    first = lost.groupby(["init", "trial"], sort=False)["layer"].min().reset_index()
    return first.assign(flag=LOST_DIRECTIONS)[columns]


def with_lost_directions(metrics: pd.DataFrame, spectra: pd.DataFrame | None, flags: pd.DataFrame | None,
                         config: Any = None) -> pd.DataFrame | None:
    """`flags` with the lost_directions rows added, unless it has them already or they cannot be derived.

    A flags table `run()` made says so in `flags.attrs[LOST_DIRECTIONS]`, the
    row count it was complete at: its rows hold every lost_directions flag even
    when no trial lost a direction, so the summary, the verdict and the report do
    not derive them again. A table with rows taken out (pandas keeps attrs through
    a filter) no longer matches its count and is derived again.
    """
    if flags is not None and flags.attrs.get(LOST_DIRECTIONS) == len(flags):
        return flags
    cfg = config_fields(config, metrics)
    if spectra is None or not len(spectra) or not {"samples", "width", "input_dim"} <= set(cfg):
        return flags
    if flags is not None and len(flags) and (flags["flag"].astype(str) == LOST_DIRECTIONS).any():
        return flags
    extra = lost_direction_flags(metrics, spectra, cfg)
    if flags is None or not len(flags):
        return extra if len(extra) else flags
    return pd.concat([flags, extra], ignore_index=True) if len(extra) else flags


def kept_base(metrics: pd.DataFrame, spectra: pd.DataFrame, cfg: Mapping[str, Any], init: str) -> float:
    """The input's kept directions (median over trials), when numerical_rank was not measured."""
    kept = kept_directions(spectra[spectra["init"].astype(str) == init], metrics, dtype=str(cfg.get("dtype", "float64")),
                           samples=int(cfg["samples"]), width=int(cfg["width"]), input_dim=int(cfg["input_dim"]))
    base = kept.loc[kept["layer"] == 0, "kept"]
    return float(base.median()) if len(base) else math.nan
