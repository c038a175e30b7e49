"""The one set of diagnosis rules: where a network first goes wrong, in plain words.

The thresholds, the rules and their wording for the run report's flags table
(`initscope.report.flags`), `initscope run`'s summary (`initscope.cli.summary`)
and the torch adapter's diagnosis (`initscope.torch.diagnosis`):

- scale: a layer's rms outside [0.1, 10]× the input's (layer 0);
- rank: effective rank below half the input's (or half the layer's unit
  count, when a model's layer has fewer units than the input's rank);
- dead units: dead_fraction above 0.5;
- vanishing gradients (models): a weighted layer's grad_norm below 1e-3 of
  the largest layer's of the same parameter kind (the `param_kind` column of
  a torch model's metrics: weight, embedding, norm_affine, scale, bias), so
  BatchNorm γ/β gradients are never compared with conv weight gradients;
- overflow and collapse: the run's own flags table (init, trial, layer, flag).

A rule takes one layer's value and its reference and returns the problem in
plain words, or "" when there is none; a NaN value never fires one. Table
cells sit under a column that names the problem, so their words are short
("70% of units dead"); a diagnosis line stands alone and names the metric
("70% dead units", "effective rank 3.1 of 256 units (input 28.4)").
All tables here are the tidy long tables (init, trial, layer, metric, value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "SCALE_BAND", "RANK_SHARE", "DEAD_SHARE", "GRAD_SHARE", "NEVER", "NOT_MEASURED",
    "FLAG_COLUMNS", "MODEL_FLAG_COLUMNS", "READOUT_ZERO", "KIND_WORDS",
    "scale_issue", "rank_issue", "rank_cell", "dead_issue", "dead_cell", "gradient_issue",
    "first_issue", "place", "layer_issues",
    "flags_table", "model_flags_table", "model_context", "diagnosis_lines",
]

SCALE_BAND = (0.1, 10.0)
RANK_SHARE = 0.5
DEAD_SHARE = 0.5
GRAD_SHARE = 1e-3
NEVER = "never"
NOT_MEASURED = "not measured"
READOUT_ZERO = "not measured: the readout is zero, as in the post; use --readout init"

SCALE_COLUMN = f"scale (rms) left [{SCALE_BAND[0]:g}, {SCALE_BAND[1]:g}]× the input's"
RANK_COLUMN = "effective rank below half the input's"
DEAD_COLUMN = "over half the units dead"
# A run's table: per initializer, medians over trials (`flags_table`).
LOST_COLUMN = "directions lost (under the noise floor)"
FLAG_COLUMNS = ("init", SCALE_COLUMN, RANK_COLUMN, DEAD_COLUMN, "overflow", "collapse", LOST_COLUMN,
                "hidden-layer gradients")
# A model's table: per init label of an inspected torch model (`model_flags_table`).
MODEL_FLAG_COLUMNS = ("init", SCALE_COLUMN, RANK_COLUMN, DEAD_COLUMN, "vanishing gradients", "overflow", "collapse")

Rule = Callable[[int, float], str]


# ---- the rules, one layer at a time ---------------------------------------------


def scale_issue(rms: float, base: float, of: str = "input") -> str:
    """"rms 20× the input's" when rms / base leaves `SCALE_BAND`; "" otherwise or without a positive base.

    of: what base is the rms of ("input", or "reference" for a model's reference state).
    """
    if not math.isfinite(rms) or not base > 0:
        return ""
    ratio = rms / base
    lo, hi = SCALE_BAND
    return f"rms {ratio:.3g}× the {of}'s" if not lo <= ratio <= hi else ""


def _rank_low(rank: float, ceiling: float) -> bool:
    return math.isfinite(rank) and math.isfinite(ceiling) and rank < RANK_SHARE * ceiling


def rank_issue(rank: float, base: float, units: int | None = None, of: str = "input") -> str:
    """Effective rank below half of what the layer could keep: the input's `base`, or its unit count if fewer.

    Words for a diagnosis line: "effective rank 3.1 of 256 units (input 28.4)".
    """
    ceiling = min(base, units) if units else base
    if not _rank_low(rank, ceiling):
        return ""
    at_most = f" of {units} units" if units else ""
    return f"effective rank {rank:.3g}{at_most} ({of} {base:.3g})"


def rank_cell(rank: float, base: float) -> str:
    """The rank rule against the input's rank alone, in a table cell's words: "1.5 of the input's 4"."""
    return f"{rank:.3g} of the input's {base:.3g}" if _rank_low(rank, base) else ""


def _dead(fraction: float) -> bool:
    return math.isfinite(fraction) and fraction > DEAD_SHARE


def dead_issue(fraction: float) -> str:
    """dead_fraction above `DEAD_SHARE`, for a diagnosis line: "61% dead units"."""
    return f"{fraction:.0%} dead units" if _dead(fraction) else ""


def dead_cell(fraction: float) -> str:
    """dead_fraction above `DEAD_SHARE`, for a table cell: "61% of units dead"."""
    return f"{fraction:.0%} of units dead" if _dead(fraction) else ""


# How a diagnosis line names each parameter kind of a torch model (`initscope.torch.gradients`).
KIND_WORDS = {"weight": "weight", "embedding": "embedding", "norm_affine": "norm γ/β", "scale": "scale",
              "bias": "bias"}


def gradient_issue(grad: float, top: float, kind: str | None = None) -> str:
    """A layer's gradient below `GRAD_SHARE` of the largest layer's `top` (of the same parameter `kind`, when
    given): "weight gradient 0.00031× the largest layer's", "norm γ/β gradient 0.0002× the largest norm γ/β
    layer's"."""
    if not (math.isfinite(grad) and math.isfinite(top) and top > 0 and grad < GRAD_SHARE * top):
        return ""
    words = KIND_WORDS.get(kind or "weight", str(kind))
    return f"{words} gradient {grad / top:.2g}× the largest {'' if kind is None else words + ' '}layer's"


def layer_issues(values: Mapping[str, float], *, rms0: float, rank0: float, units: int | None = None,
                 grad_top: float = math.nan, of: str = "input", grad_kind: str | None = None) -> list[str]:
    """Every problem of one hidden layer, in a diagnosis line's words.

    values: the layer's metrics by name (missing ones are not judged); rms0,
    rank0: the input's rms and effective rank; units: the layer's unit count;
    grad_top: the largest weighted layer's grad_norm (of the layer's parameter kind `grad_kind`, if given).
    e.g. ["61% dead units", "effective rank 3.1 of 256 units (input 28.4)"].
    """
    issues = []
    rms = values.get("rms", math.nan)
    if "rms" in values and not math.isfinite(rms):
        issues.append("not finite")
    else:
        issues.append(scale_issue(rms, rms0, of))
    issues.append(dead_issue(values.get("dead_fraction", math.nan)))
    issues.append(rank_issue(values.get("effective_rank", math.nan), rank0, units, of))
    issues.append(gradient_issue(values.get("grad_norm", math.nan), grad_top, grad_kind))
    return [issue for issue in issues if issue]


# ---- first hidden layer with a problem ------------------------------------------


def first_issue(values: pd.Series, rule: Rule, *, start: int = 1, skip=()) -> tuple[int, str] | None:
    """(layer, words) for the first layer >= start (finite value, not in skip) where rule(layer, value) fires.

    values: one metric per layer, indexed by layer in depth order. None if
    the rule never fires.
    """
    for layer, value in values.items():
        if layer < start or layer in skip or not math.isfinite(value):
            continue
        words = rule(int(layer), float(value))
        if words:
            return int(layer), words
    return None


def place(layer: int, module: str | None = None, module_type: str | None = None) -> str:
    """Where a layer is: "layer 7", or "layer 7 (body.6, ReLU)" for a model's module."""
    return f"layer {layer}" if module is None else f"layer {layer} ({module}, {module_type})"


# ---- a run: one row per initializer, medians over trials -------------------------


def _medians(metrics: pd.DataFrame, metric: str, init: str) -> pd.Series | None:
    """Median over trials per layer, indexed by layer (None if the metric was not measured)."""
    if not (metrics["metric"] == metric).any():
        return None
    rows = metrics[(metrics["init"].astype(str) == init) & (metrics["metric"] == metric)]
    return rows.groupby("layer", sort=True)["value"].median()


def _run_cell(found: tuple[int, str] | None) -> str:
    return NEVER if found is None else f"layer {found[0]} ({found[1]})"


def _run_scale(metrics: pd.DataFrame, init: str) -> str:
    rms = _medians(metrics, "rms", init)
    if rms is None:
        return NOT_MEASURED
    base = rms.get(0, math.nan)
    if not math.isfinite(base) or base <= 0:
        return "no input rms to compare with"
    return _run_cell(first_issue(rms, lambda _, v: scale_issue(v, base)))


def _run_rank(metrics: pd.DataFrame, init: str) -> str:
    rank = _medians(metrics, "effective_rank", init)
    if rank is None:
        return NOT_MEASURED
    base = rank.get(0, math.nan)
    if not math.isfinite(base):
        return "no input rank to compare with"
    return _run_cell(first_issue(rank, lambda _, v: rank_cell(v, base)))


def _run_dead(metrics: pd.DataFrame, init: str) -> str:
    dead = _medians(metrics, "dead_fraction", init)
    return NOT_MEASURED if dead is None else _run_cell(first_issue(dead, lambda _, v: dead_cell(v)))


def _run_flagged(flags: pd.DataFrame | None, init: str, flag: str, trials: int) -> str:
    """"layer l (in k of n trials; m more trials later)" for the first layer any trial raised `flag` at."""
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


def _run_gradients(metrics: pd.DataFrame, init: str, readout: str | None) -> str:
    rows = metrics[(metrics["init"].astype(str) == init) & (metrics["metric"] == "grad_norm")
                   & (metrics["layer"] >= 1)]
    if not len(rows):
        return NOT_MEASURED
    values = rows["value"].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return "not finite"
    if np.all(finite == 0):
        # The seed's setting, not a problem: with a zero readout no gradient can reach a hidden layer.
        return READOUT_ZERO if readout == "zeros" else "all exactly 0"
    medians = _medians(metrics, "grad_norm", init)
    medians = medians[(medians.index >= 1) & np.isfinite(medians.to_numpy())]
    zero = medians[medians == 0]
    if len(zero):
        return f"nonzero, but 0 (median over trials) from layer {int(zero.index.min())}"
    smallest = medians.idxmin()
    return f"nonzero (smallest median {medians[smallest]:.3g}, at layer {int(smallest)})"


def _inits(table: pd.DataFrame, config: Mapping | None = None) -> list[str]:
    """Initializers in config order, then any others in order of appearance."""
    seen = list(dict.fromkeys(table["init"].astype(str))) if len(table) else []
    ordered = [i for i in (config or {}).get("init", ()) if i in seen]
    return ordered + [i for i in seen if i not in ordered]


def flags_table(metrics: pd.DataFrame, flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per initializer of a run: the first layer where each problem appears, in plain words.

    metrics: the tidy metrics table; flags: the flags table (init, trial,
    layer, flag), may be empty or None. Scale, rank and dead units use the
    median over trials at each layer, compared with layer 0 (the input):
    rms outside [0.1, 10]× the input's, effective rank below half the input's,
    dead_fraction above 0.5. Overflow and collapse come from the flags table
    (first layer in any trial). Each cell reads "layer l (detail)", "never"
    or "not measured" (the metric was not in this run).
    Returns a DataFrame with the columns `FLAG_COLUMNS`.
    """
    readout = str(metrics["readout"].iloc[0]) if "readout" in metrics.columns and len(metrics) else None
    inits = _inits(metrics)
    if flags is not None and len(flags):
        inits += [i for i in _inits(flags) if i not in inits]
    rows = []
    for init in inits:
        trials = int(metrics.loc[metrics["init"].astype(str) == init, "trial"].nunique())
        rows.append((
            init,
            _run_scale(metrics, init),
            _run_rank(metrics, init),
            _run_dead(metrics, init),
            _run_flagged(flags, init, "overflow", trials),
            _run_flagged(flags, init, "collapsed", trials),
            _run_flagged(flags, init, "lost_directions", trials),  # see initscope.study.directions
            _run_gradients(metrics, init, readout),
        ))
    return pd.DataFrame(rows, columns=list(FLAG_COLUMNS))


# ---- a model: one row per init label, naming each layer's module ----------------


def _wide(metrics: pd.DataFrame, init: str) -> pd.DataFrame:
    """One row per layer, one column per metric, with module and module_type where known."""
    rows = metrics[metrics["init"].astype(str) == init]
    wide = rows.pivot_table(index="layer", columns="metric", values="value", aggfunc="first", dropna=False)
    info = rows.drop_duplicates("layer").set_index("layer")
    for column in ("module", "module_type"):
        wide[column] = info.get(column, "")
    if "param_kind" in info:
        wide["param_kind"] = info["param_kind"].fillna("none").astype(str)
    return wide.sort_index()


_TEXT = ("module", "module_type", "param_kind")


def _kinds(wide: pd.DataFrame) -> pd.Series:
    """Each layer's parameter kind: the param_kind column, or "weight" for all where a table has none."""
    return wide["param_kind"] if "param_kind" in wide else pd.Series("weight", index=wide.index)


def _grad_tops(wide: pd.DataFrame) -> pd.Series:
    """Per layer >= 1, the largest finite grad_norm among the layers of its parameter kind."""
    g = wide["grad_norm"][wide.index >= 1]
    kinds = _kinds(wide)[g.index]
    finite = g.where(g.map(math.isfinite))
    return finite.groupby(kinds).transform("max")


def _where(wide: pd.DataFrame, layer: int) -> str:
    return place(layer, wide.at[layer, "module"], wide.at[layer, "module_type"])


def _model_cell(wide: pd.DataFrame, metric: str, rule: Rule, ref: int = 0, skip=()) -> str:
    if metric not in wide:
        return NOT_MEASURED
    found = first_issue(wide[metric], rule, start=max(ref + 1, 1), skip=skip)
    return NEVER if found is None else f"{_where(wide, found[0])}: {found[1]}"


def _of(ref: int) -> str:
    return "input" if ref == 0 else "reference"


def _model_scale(wide: pd.DataFrame, ref: int = 0, skip=()) -> str:
    base = wide["rms"].get(ref, math.nan) if "rms" in wide else math.nan
    if "rms" in wide and not (math.isfinite(base) and base > 0):
        return f"no {_of(ref)} rms to compare with"
    return _model_cell(wide, "rms", lambda _, v: scale_issue(v, base, _of(ref)), ref, skip)


def _model_rank(wide: pd.DataFrame, units: Mapping[int, int], ref: int = 0, skip=()) -> str:
    base = wide["effective_rank"].get(ref, math.nan) if "effective_rank" in wide else math.nan
    return _model_cell(wide, "effective_rank", lambda layer, v: rank_issue(v, base, units.get(layer), _of(ref)),
                       ref, skip)


def _model_gradients(wide: pd.DataFrame) -> str:
    """The vanishing-gradient cell: layers compared with the largest of their own parameter kind."""
    if "grad_norm" not in wide:
        return NOT_MEASURED
    g = wide["grad_norm"][(wide.index >= 1)]
    g = g[g.notna()]
    if not len(g):
        weighted = "param_kind" in wide and (_kinds(wide)[wide.index >= 1] != "none").any()
        return NOT_MEASURED if weighted or not wide["grad_norm"].isna().all() else "no weighted layers"
    finite = g[g.map(math.isfinite)]
    if not len(finite):
        return "not finite"
    if finite.max() == 0:
        return "all exactly 0: no gradient reaches any weight"
    tops = _grad_tops(wide)[finite.index]
    share = finite / tops
    low = share[share < GRAD_SHARE]
    if not len(low):
        return NEVER
    worst = low.idxmin()
    if "param_kind" not in wide:
        return (f"{len(low)} of {len(finite)} weighted layers below {GRAD_SHARE:g}× the largest; smallest "
                f"{_where(wide, worst)}: {low[worst]:.3g}× the largest")
    words = KIND_WORDS.get(wide.at[worst, "param_kind"], str(wide.at[worst, "param_kind"]))
    return (f"{len(low)} of {len(finite)} weighted layers below {GRAD_SHARE:g}× the largest of their kind "
            f"(weights, embeddings, norm γ/β compared apart); smallest {_where(wide, worst)}: "
            f"{low[worst]:.3g}× the largest {words} layer's")


def _model_flagged(flags: pd.DataFrame | None, wide: pd.DataFrame, init: str, flag: str) -> str:
    if flags is None or not len(flags):
        return NEVER
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == flag)]
    if not len(rows):
        return NEVER
    layer = int(rows["layer"].min())
    return _where(wide, layer) if layer in wide.index else f"layer {layer}"


def _constant(flags: pd.DataFrame | None, init: str) -> set[int]:
    """Layers flagged "constant input": constant by construction, so not compared with the reference."""
    if flags is None or not len(flags):
        return set()
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == "constant input")]
    return set(rows["layer"].astype(int))


def model_context(layers: pd.DataFrame | None) -> tuple[dict[str, dict[int, int]], dict[str, int], dict[str, set[int]]]:
    """(units, reference, normalised) of `model_flags_table` from a model's layers table (init, layer, units,
    state_samples, reference, normalised_by): per init label, each layer's unit count (at most its rows − 1, the
    rank of a centred state), the layer of its reference state, and the layers whose state a norm reads next
    (a Linear's or Conv's output that the following BatchNorm/LayerNorm rescales). Empty without a table."""
    if layers is None or not len(layers) or "units" not in layers:
        return {}, {}, {}
    units: dict[str, dict[int, int]] = {}
    for init in dict.fromkeys(layers["init"].astype(str)):
        part = layers[layers["init"].astype(str) == init]
        most = part["units"].astype(int)
        if "state_samples" in part:
            most = most.clip(upper=(part["state_samples"].astype(int) - 1).clip(lower=1))
        units[init] = dict(zip(part["layer"].astype(int), most, strict=True))
    reference: dict[str, int] = {}
    if "reference" in layers:
        hit = layers[layers["reference"].astype(str).str.lower() == "true"]
        reference = dict(zip(hit["init"].astype(str), hit["layer"].astype(int), strict=True))
    normalised: dict[str, set[int]] = {}
    if "normalised_by" in layers:
        by = layers["normalised_by"].fillna("").astype(str)  # read back from layers.csv, empty cells are NaN
        for init, layer in zip(layers["init"].astype(str)[by != ""], layers["layer"].astype(int)[by != ""],
                               strict=True):
            normalised.setdefault(init, set()).add(int(layer))
    return units, reference, normalised


def model_flags_table(metrics: pd.DataFrame, flags: pd.DataFrame | None,
                      units: Mapping[str, Mapping[int, int]] | None = None,
                      reference: Mapping[str, int] | None = None,
                      normalised: Mapping[str, set[int]] | None = None) -> pd.DataFrame:
    """One row per `init` label of an inspected model: the first layer (and module) of each problem.

    metrics: tidy metrics with module and module_type columns; flags: (init,
    trial, layer, flag) or None; units: per init label, each layer's unit
    count (the rank rule's ceiling); reference: per init label, the layer the
    scale and rank rules compare with (default 0, the input); layers up to it
    and layers flagged "constant input" are not judged by those rules;
    normalised: per init label, layers the scale rule skips (a norm reads
    them next and sets their scale: `model_context`).
    Cells read "layer l (module, Type): detail", "never" or "not measured".
    Columns: `MODEL_FLAG_COLUMNS`.
    """
    units, reference, normalised = units or {}, reference or {}, normalised or {}
    rows = []
    for init in dict.fromkeys(metrics["init"].astype(str)):
        wide = _wide(metrics, init)
        ref, skip = reference.get(init, 0), _constant(flags, init)
        rows.append((init, _model_scale(wide, ref, skip | normalised.get(init, set())),
                     _model_rank(wide, units.get(init, {}), ref, skip),
                     _model_cell(wide, "dead_fraction", lambda _, v: dead_cell(v)), _model_gradients(wide),
                     _model_flagged(flags, wide, init, "overflow"), _model_flagged(flags, wide, init, "collapsed")))
    return pd.DataFrame(rows, columns=list(MODEL_FLAG_COLUMNS))


def diagnosis_lines(metrics: pd.DataFrame, units: Mapping[str, Mapping[int, int]] | None = None, *,
                    limit: int = 12, reference: Mapping[str, int] | None = None,
                    flags: pd.DataFrame | None = None,
                    normalised: Mapping[str, set[int]] | None = None) -> list[str]:
    """Plain-language lines, one per layer with a problem, e.g.
    "model: layer 7 (body.6, ReLU): 61% dead units, effective rank 3.1 of 256 units (input 28.4)".

    metrics, units, reference and flags as for `model_flags_table`. At most
    `limit` lines per init label, then a count of the rest.
    """
    units, reference, normalised = units or {}, reference or {}, normalised or {}
    lines: list[str] = []
    for init in dict.fromkeys(metrics["init"].astype(str)):
        wide = _wide(metrics, init)
        ref, skip = reference.get(init, 0), _constant(flags, init)
        refs = dict(
            rms0=wide["rms"].get(ref, math.nan) if "rms" in wide else math.nan,
            rank0=wide["effective_rank"].get(ref, math.nan) if "effective_rank" in wide else math.nan,
            of=_of(ref),
        )
        tops = _grad_tops(wide) if "grad_norm" in wide else pd.Series(dtype=np.float64)
        found = []
        for layer, row in wide.iterrows():
            if layer < 1:
                continue
            values = {k: v for k, v in row.items() if k not in _TEXT}
            if layer <= ref or layer in skip:  # judged by the dead-unit and gradient rules only
                values = {k: v for k, v in values.items() if k not in ("rms", "effective_rank")}
            if layer in normalised.get(init, ()):  # a norm sets its scale next
                values.pop("rms", None)
            issues = layer_issues(values, units=units.get(init, {}).get(layer), grad_top=tops.get(layer, math.nan),
                                  grad_kind=row.get("param_kind"), **refs)
            if issues:
                found.append(f"{init}: {_where(wide, layer)}: {', '.join(issues)}")
        lines += found[:limit]
        if len(found) > limit:
            lines.append(f"{init}: … and {len(found) - limit} more layers")
    return lines
