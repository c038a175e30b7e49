"""Where an inspected model first goes wrong, in plain words, naming the module.

The thresholds are those of the report's flags table (`initscope.report.flags`):
rms outside [0.1, 10]× the reference's, effective rank below half the
reference's, over half the units dead; and, for gradients, a weighted layer
whose grad_norm is below 1e-3 of the largest layer's (vanishing gradients).
The reference is the result's reference state (`layers["reference"]`: the
input, or the embedding's output for token ids, the first layer for images);
states before it, and states constant because their module's inputs are
("constant input"), are not compared with it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["flag_table", "diagnose", "FLAG_COLUMNS"]

SCALE_BAND = (0.1, 10.0)
RANK_SHARE = 0.5
DEAD_SHARE = 0.5
GRAD_SHARE = 1e-3
NEVER = "never"
NOT_MEASURED = "not measured"

FLAG_COLUMNS = (
    "init",
    "scale (rms) left [0.1, 10]× the input's",
    "effective rank below half the input's",
    "over half the units dead",
    "vanishing gradients",
    "overflow",
    "collapse",
)


def _wide(metrics: pd.DataFrame, init: str, result=None) -> pd.DataFrame:
    """One row per layer, one column per metric, with module and module_type, and the rows to compare.

    Rows before the reference state and rows flagged "constant input" are
    dropped (except the reference itself, which the checks skip), so the
    checks see only states to compare with the reference; the reference is
    the index's first entry.
    """
    rows = metrics[metrics["init"].astype(str) == init]
    wide = rows.pivot_table(index="layer", columns="metric", values="value", aggfunc="first", dropna=False)
    info = rows.drop_duplicates("layer").set_index("layer")
    for column in ("module", "module_type"):
        wide[column] = info.get(column, "")
    wide = wide.sort_index()
    ref, constant = _reference(result, init)
    keep = (wide.index >= ref) & ~wide.index.isin(constant)
    return wide[keep]


def _reference(result, init: str) -> tuple[int, set[int]]:
    """(the reference layer, the layers flagged constant input) of one init label; (0, {}) when unknown."""
    layers, flags = getattr(result, "layers", None), getattr(result, "flags", None)
    ref = 0
    if layers is not None and "reference" in layers and len(layers):
        part = layers[(layers["init"].astype(str) == init) & layers["reference"].astype(bool)]
        ref = int(part["layer"].iloc[0]) if len(part) else 0
    constant: set[int] = set()
    if flags is not None and len(flags):
        hit = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == "constant input")]
        constant = set(hit["layer"].astype(int))
    return ref, constant


def _where(row: pd.Series, layer: int) -> str:
    return f"layer {layer} ({row['module']}, {row['module_type']})"


def _first(wide: pd.DataFrame, metric: str, test) -> str:
    if metric not in wide:
        return NOT_MEASURED
    for layer, row in wide.iloc[1:].iterrows():
        value = row[metric]
        if not math.isfinite(value):
            continue
        detail = test(value)
        if detail:
            return f"{_where(row, layer)}: {detail}"
    return NEVER


def _base(wide: pd.DataFrame, metric: str) -> float:
    return float(wide[metric].iloc[0]) if metric in wide and len(wide) else math.nan


def _scale(wide: pd.DataFrame) -> str:
    base = _base(wide, "rms")
    if "rms" in wide and not (math.isfinite(base) and base > 0):
        return "no reference rms to compare with"
    lo, hi = SCALE_BAND
    return _first(wide, "rms", lambda v: f"rms {v / base:.3g}× the reference's" if not lo <= v / base <= hi else "")


def _units(result, init: str) -> dict[int, int]:
    """The most effective rank each layer can have: its units, or its state's rows − 1 (centred) if fewer."""
    layers = getattr(result, "layers", None)
    if layers is None or not len(layers):
        return {}
    part = layers[layers["init"].astype(str) == init] if "init" in layers else layers
    units = part["units"].astype(int)
    if "state_samples" in part:
        units = np.minimum(units, np.maximum(part["state_samples"].astype(int) - 1, 1))
    return dict(zip(part["layer"].astype(int), units.astype(int), strict=True))


def _rank_issue(value: float, base: float, units: int | None) -> str:
    """Effective rank below half of what the layer could keep: the input's, or its unit count if fewer."""
    ceiling = min(base, units) if units else base
    if not (math.isfinite(value) and math.isfinite(ceiling)) or value >= RANK_SHARE * ceiling:
        return ""
    of = f" of at most {units}" if units else ""
    return f"effective rank {value:.3g}{of} (reference {base:.3g})"


def _rank(wide: pd.DataFrame, units: dict[int, int]) -> str:
    if "effective_rank" not in wide:
        return NOT_MEASURED
    base = _base(wide, "effective_rank")
    for layer, row in wide.iloc[1:].iterrows():
        detail = _rank_issue(row["effective_rank"], base, units.get(layer))
        if detail:
            return f"{_where(row, layer)}: {detail}"
    return NEVER


def _dead(wide: pd.DataFrame) -> str:
    return _first(wide, "dead_fraction", lambda v: f"{v:.0%} of units dead" if v > DEAD_SHARE else "")


def _gradients(wide: pd.DataFrame) -> str:
    if "grad_norm" not in wide:
        return NOT_MEASURED
    g = wide["grad_norm"].iloc[1:]
    g = g[g.notna()]
    if not len(g):
        return "no weighted layers" if wide["grad_norm"].iloc[1:].isna().all() else NOT_MEASURED
    finite = g[g.map(math.isfinite)]
    if not len(finite):
        return "not finite"
    top = finite.max()
    if top == 0:
        return "all exactly 0: no gradient reaches any weight"
    low = finite[finite < GRAD_SHARE * top]
    if not len(low):
        return NEVER
    worst = low.idxmin()
    return (f"{len(low)} of {len(finite)} weighted layers below {GRAD_SHARE:g}× the largest; smallest "
            f"{_where(wide.loc[worst], worst)}: {finite[worst] / top:.3g}× the largest")


def _flagged(flags: pd.DataFrame, wide: pd.DataFrame, init: str, flag: str) -> str:
    if flags is None or not len(flags):
        return NEVER
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == flag)]
    if not len(rows):
        return NEVER
    layer = int(rows["layer"].min())
    return _where(wide.loc[layer], layer) if layer in wide.index else f"layer {layer}"


def flag_table(result) -> pd.DataFrame:
    """One row per `init` label of an InspectResult: the first layer (and module) of each problem.

    Cells read "layer l module (Type): detail", "never" or "not measured".
    Columns: `FLAG_COLUMNS`.
    """
    metrics, flags = result.metrics, result.flags
    rows = []
    for init in dict.fromkeys(metrics["init"].astype(str)):
        wide = _wide(metrics, init, result)
        everything = _wide(metrics, init)  # gradients of every weighted layer, the reference's included
        rows.append((init, _scale(wide), _rank(wide, _units(result, init)), _dead(wide), _gradients(everything),
                     _flagged(flags, everything, init, "overflow"), _flagged(flags, everything, init, "collapsed")))
    return pd.DataFrame(rows, columns=list(FLAG_COLUMNS))


def diagnose(result, *, limit: int = 12) -> list[str]:
    """Plain-language lines, one per layer with a problem, e.g.
    "model: layer 7 (body.6, ReLU): 61% dead units, effective rank 3.1 of at most 256 (reference 28.4)".

    At most `limit` lines per init label, then a count of the rest.
    """
    lines: list[str] = []
    for init in dict.fromkeys(result.metrics["init"].astype(str)):
        wide = _wide(result.metrics, init, result)
        units = _units(result, init)
        rms0, er0 = _base(wide, "rms"), _base(wide, "effective_rank")
        gmax = wide["grad_norm"].iloc[1:].max() if "grad_norm" in wide else math.nan
        found = []
        for layer, row in wide.iloc[1:].iterrows():
            issues = []
            rms = row.get("rms", math.nan)
            if "rms" in row and not math.isfinite(rms):
                issues.append("not finite")
            elif math.isfinite(rms) and rms0 > 0 and not SCALE_BAND[0] <= rms / rms0 <= SCALE_BAND[1]:
                issues.append(f"rms {rms / rms0:.3g}× the reference's")
            dead = row.get("dead_fraction", math.nan)
            if math.isfinite(dead) and dead > DEAD_SHARE:
                issues.append(f"{dead:.0%} dead units")
            rank = _rank_issue(row.get("effective_rank", math.nan), er0, units.get(layer))
            if rank:
                issues.append(rank)
            g = row.get("grad_norm", math.nan)
            if math.isfinite(g) and math.isfinite(gmax) and gmax > 0 and g < GRAD_SHARE * gmax:
                issues.append(f"weight gradient {g / gmax:.2g}× the largest layer's")
            if issues:
                found.append(f"{init}: {_where(row, layer)}: {', '.join(issues)}")
        lines += found[:limit]
        if len(found) > limit:
            lines.append(f"{init}: … and {len(found) - limit} more layers")
    return lines
