"""The flags table: where each initializer first goes wrong, in plain words."""

from __future__ import annotations

import math

import numpy as np

from initscope.report._common import inits_of, layer_summary

__all__ = ["flags_table", "FLAG_COLUMNS"]

SCALE_BAND = (0.1, 10.0)
RANK_SHARE = 0.5
DEAD_SHARE = 0.5

FLAG_COLUMNS = (
    "init",
    "scale (rms) left [0.1, 10]× the input's",
    "effective rank below half the input's",
    "over half the units dead",
    "overflow",
    "collapse",
    "hidden-layer gradients",
)
NEVER = "never"
NOT_MEASURED = "not measured"


def _medians(metrics, metric: str, init: str):
    """Median over trials per layer, as a Series indexed by layer (None if not measured)."""
    if not (metrics["metric"] == metric).any():
        return None
    summary = layer_summary(metrics[metrics["init"].astype(str) == init], metric)
    return summary.set_index("layer")["median"].sort_index()


def _first_layer(series, test) -> str:
    """'layer l (detail)' for the first hidden layer where test(value) gives a detail, else 'never'."""
    for layer, value in series.items():
        if layer < 1 or not math.isfinite(value):
            continue
        detail = test(value)
        if detail:
            return f"layer {int(layer)} ({detail})"
    return NEVER


def _scale(metrics, init: str) -> str:
    rms = _medians(metrics, "rms", init)
    if rms is None:
        return NOT_MEASURED
    base = rms.get(0, math.nan)
    if not math.isfinite(base) or base <= 0:
        return "no input rms to compare with"
    lo, hi = SCALE_BAND

    def test(value: float) -> str:
        ratio = value / base
        return f"rms {ratio:.3g}× the input's" if not lo <= ratio <= hi else ""

    return _first_layer(rms, test)


def _rank(metrics, init: str) -> str:
    rank = _medians(metrics, "effective_rank", init)
    if rank is None:
        return NOT_MEASURED
    base = rank.get(0, math.nan)
    if not math.isfinite(base):
        return "no input rank to compare with"
    return _first_layer(rank, lambda v: f"{v:.3g} of the input's {base:.3g}" if v < RANK_SHARE * base else "")


def _dead(metrics, init: str) -> str:
    dead = _medians(metrics, "dead_fraction", init)
    if dead is None:
        return NOT_MEASURED
    return _first_layer(dead, lambda v: f"{v:.0%} of units dead" if v > DEAD_SHARE else "")


def _flagged(flags, init: str, flag: str, trials: int) -> str:
    if flags is None or not len(flags):
        return NEVER
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == flag)]
    if not len(rows):
        return NEVER
    first = int(rows["layer"].min())
    hit = rows.groupby("trial")["layer"].min()
    at_first = int((hit == first).sum())
    where = f"in {at_first} of {trials} trial{'s' if trials != 1 else ''}" if trials else ""
    later = int(len(hit) - at_first)
    more = f"; {later} more trial{'s' if later != 1 else ''} later" if later else ""
    return f"layer {first} ({where}{more})"


def _gradients(metrics, init: str, readout: str | None) -> str:
    rows = metrics[(metrics["init"].astype(str) == init) & (metrics["metric"] == "grad_norm")
                   & (metrics["layer"] >= 1)]
    if not len(rows):
        return NOT_MEASURED
    values = rows["value"].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return "not finite"
    if np.all(finite == 0):
        why = ": the readout is all zeros, so no gradient reaches any hidden layer" if readout == "zeros" else ""
        return f"all exactly 0{why}"
    medians = _medians(metrics, "grad_norm", init)
    medians = medians[(medians.index >= 1) & np.isfinite(medians.to_numpy())]
    zero = medians[medians == 0]
    if len(zero):
        return f"nonzero, but 0 (median over trials) from layer {int(zero.index.min())}"
    smallest = medians.idxmin()
    return f"nonzero (smallest median {medians[smallest]:.3g}, at layer {int(smallest)})"


def flags_table(metrics, flags=None):
    """One row per initializer: the first layer where each problem appears, in plain words.

    metrics: the tidy metrics table; flags: the flags table (init, trial,
    layer, flag), may be empty or None. Scale, rank and dead units use the
    median over trials at each layer, compared with layer 0 (the input):
    rms outside [0.1, 10]× the input's, effective rank below half the input's,
    dead_fraction above 0.5. Overflow and collapse come from the flags table
    (first layer in any trial). Each cell reads "layer l (detail)", "never"
    or "not measured" (the metric was not in this run).
    Returns a pandas DataFrame with the columns `FLAG_COLUMNS`.
    """
    import pandas as pd

    readout = str(metrics["readout"].iloc[0]) if "readout" in metrics.columns and len(metrics) else None
    inits = inits_of(metrics)
    if flags is not None and len(flags):
        inits += [i for i in inits_of(flags) if i not in inits]
    rows = []
    for init in inits:
        trials = int(metrics.loc[metrics["init"].astype(str) == init, "trial"].nunique())
        rows.append((
            init,
            _scale(metrics, init),
            _rank(metrics, init),
            _dead(metrics, init),
            _flagged(flags, init, "overflow", trials),
            _flagged(flags, init, "collapsed", trials),
            _gradients(metrics, init, readout),
        ))
    return pd.DataFrame(rows, columns=list(FLAG_COLUMNS))
