"""Theory overlays as a long table: the closed forms and mean-field maps a run's measurements are laid over.

`theory_table(metrics, config)` -> one row per (init, metric, layer) of each
curve that holds for the run, columns init, metric, layer, value, curve (the
curve's name in words). A run writes it as theory.csv; the report's dashed
lines, its static figures and the explorer's theory lines only draw it.

- rms: the He/Xavier second-moment recursion from the measured input rms
  (`theory.expected_rms`); mean_cosine: the activation's correlation map
  iterated from the measured median at layer 1 (for ReLU the arc-cosine map,
  Cho & Saul 2009). Both need an activation whose registry entry has these
  closed forms, zero shifts, no norm and no residual (`theory_applies`).
- pre_q, pre_cosine, jacobian_sq_mean: the q-map and c-map (Poole et al.
  2016) and χ₁ (Schoenholz et al. 2017) for the run's own layers, with
  σ_w² = fan_in·E[w²] of the initializer at each layer (the first layer's
  fan_in is input_dim) and σ_b² of the shifts, started from layer 0's
  measured pre_q and pre_cosine:

      q_1 = σ_w²(1)·pre_q(0) + σ_b²,   c_1 = (σ_w²(1)·pre_q(0)·pre_cosine(0) + σ_b²)/q_1,
      q_{l+1} = q_map(q_l),  c_{l+1} = correlation_map(c_l; q_l),
      jacobian_sq_mean(l) = ∏_{k ≤ l} σ_w²(k)·E[φ'(√q_k·z)²]  (χ₁ at each layer's q).

  With inputs of unequal norms (ball data) the start c_1 is approximate: the
  mean of cosines is not the cosine of mean inner products. Where the maps do
  not describe the run, `overlay_reason` says why in words.

Medians are over trials (NaN skipped). Non-finite values (the maps' breakdown)
stay NaN in the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from initscope.core import theory
from initscope.core.activations import ACTIVATIONS
from initscope.core.initializers import default_gain
from initscope.study.records import THEORY_COLUMNS, config_dict

__all__ = ["THEORY_COLUMNS", "OVERLAID", "THEORY_METRICS", "theory_table", "theory_lines", "theory_curve",
           "overlay_reason", "mean_field_curves", "mean_field_notes", "resolved_gain", "theory_applies"]

OVERLAID = ("pre_q", "pre_cosine", "jacobian_sq_mean")  # the mean-field maps' metrics
THEORY_METRICS = ("rms", "mean_cosine", *OVERLAID)
_MEAN_FIELD_WORDS = {"pre_q": "q-map", "pre_cosine": "c-map", "jacobian_sq_mean": "∏χ₁"}

Curve = tuple[np.ndarray, np.ndarray, str]  # (layers, values, label)


def _number(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def resolved_gain(config: Mapping[str, Any], init: str) -> float:
    """The config's gain, or the initializer's default when unset.

    NaN for an initializer or activation the registry does not know (a table
    from elsewhere): it then gets no theory overlay, rather than no page.
    """
    gain = config.get("gain")
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        try:
            return float(default_gain(init, str(config.get("activation", "relu"))))
        except ValueError:
            return math.nan
    return float(gain)


def theory_applies(config: Mapping[str, Any]) -> bool:
    """True when the closed forms of `theory` hold: zero shifts, no norm, no residual, and an activation
    whose registry entry has them (a constant second-moment factor and a correlation map: ReLU, leaky
    ReLU, the identity, or a registered one)."""
    shift_zero = config.get("shift") == "zeros" or _number(config.get("shift_scale")) == 0.0
    act = ACTIVATIONS.get(str(config.get("activation")))
    return (
        act is not None
        and act.correlation_map is not None
        and math.isfinite(act.second_moment)
        and shift_zero
        and config.get("norm", "none") == "none"
        and _number(config.get("residual", 0.0)) == 0.0
    )


def _sigma_b2(config: Mapping[str, Any]) -> float:
    """σ_b² of the config's shifts; inf where it overflows a float (a shift_scale near 1e308 is a run's to show)."""
    try:
        return theory.shift_sigma2(str(config.get("shift")), _number(config.get("shift_scale")))
    except OverflowError:
        return math.inf


def overlay_reason(config: Mapping[str, Any], init: str) -> str | None:
    """None when the mean-field maps describe this run for `init`; otherwise why not, in a few words."""
    if "model" in config and "activation" not in config:  # an `initscope.torch.inspect` result
        return "a PyTorch model: its layers' σ_w², σ_b² and activations are not known to the maps"
    if str(config.get("norm", "none")) != "none":
        return f"{config.get('norm')} norm rescales every layer; the maps describe no normalization"
    if _number(config.get("residual", 0.0), 0.0) > 0:
        return "a residual branch adds the previous state; the maps describe a plain feed-forward net"
    if str(config.get("init_train", "none") or "none") != "none":
        return "the weights were trained before measuring"
    sigma_b2 = _sigma_b2(config)
    if math.isinf(sigma_b2):
        return f"σ_b² overflows at shift_scale {config.get('shift_scale')}"
    if not math.isfinite(sigma_b2):
        return f"{config.get('shift')} shifts are not i.i.d. across units, so σ_b² is not defined"
    gain = resolved_gain(config, init)
    width, d = int(_number(config.get("width"), 0)), int(_number(config.get("input_dim"), 0))
    if not (math.isfinite(gain) and width > 0 and d > 0
            and math.isfinite(theory.weight_sigma2(init, d, width, gain))):
        return f"{init} has no fixed weight variance (data-driven or deterministic init)"
    try:
        theory.q_map(1.0, str(config.get("activation")), sigma_w2=1.0)
    except ValueError:
        return f"activation {config.get('activation')!r} has no mean-field map here"
    return None


def mean_field_curves(config: Mapping[str, Any], init: str, q0: float, c0: float) -> dict[str, np.ndarray]:
    """Theory per layer 0..depth for each of OVERLAID, from layer 0's pre_q = q0 and pre_cosine = c0.

    Returns {metric: (depth + 1,) values}; layer 0 is q0, c0 and 1 (the
    Jacobian of the input is the identity). NaN where the maps break down
    (q infinite, or no value to start from). Call only when
    `overlay_reason` is None.
    """
    activation = str(config["activation"])
    depth, width, d = int(config["depth"]), int(config["width"]), int(config["input_dim"])
    gain = resolved_gain(config, init)
    sigma_b2 = _sigma_b2(config)
    q, c, jac = (np.full(depth + 1, math.nan) for _ in range(3))
    q[0], c[0], jac[0] = q0, c0, 1.0
    for layer in range(1, depth + 1):
        fan_in = d if layer == 1 else width
        sw2 = theory.weight_sigma2(init, fan_in, width, gain)
        if layer == 1:  # the input is not passed through φ: the first pre-activation is linear in x
            q[1] = sw2 * q0 + sigma_b2
            c[1] = (sw2 * q0 * c0 + sigma_b2) / q[1] if q[1] > 0 else math.nan
        else:
            prev = q[layer - 1]
            if not (math.isfinite(prev) and prev > 0):
                break
            q[layer] = float(theory.q_map(prev, activation, sigma_w2=sw2, sigma_b2=sigma_b2))
            if math.isfinite(c[layer - 1]):
                c[layer] = float(theory.correlation_map(c[layer - 1], activation, sigma_w2=sw2, sigma_b2=sigma_b2,
                                                        q=prev))
        if not (math.isfinite(q[layer]) and q[layer] < 1e300):
            q[layer] = math.nan
            break
        jac[layer] = jac[layer - 1] * theory.chi_1(activation, sigma_w2=sw2, sigma_b2=sigma_b2, q=q[layer])
    return {"pre_q": q, "pre_cosine": c, "jacobian_sq_mean": jac}


def _medians(metrics: pd.DataFrame, init: str, metric: str) -> dict[int, float]:
    """layer -> the median over trials of `metric` for `init` (NaN skipped; NaN where every trial is)."""
    rows = metrics[(metrics["init"].astype(str) == init) & (metrics["metric"].astype(str) == metric)]
    return {int(k): float(v) for k, v in rows.groupby("layer")["value"].median().items()}


def theory_curve(metric: str, init: str, config: Mapping[str, Any], metrics: pd.DataFrame) -> Curve | None:
    """(layers, values, label) of the closed form for `metric` and `init`, or None where none applies.

    config: the run's fields as a mapping (`config_dict`); metrics: the tidy
    table, whose medians over trials start the curves (see the module doc).
    """
    try:
        if metric in OVERLAID:
            return _mean_field_curve(metric, init, config, metrics)
        if metric in ("rms", "mean_cosine") and theory_applies(config):
            return _closed_form(metric, init, config, metrics)
    except OverflowError:  # a gain or scale beyond a float's range: the run shows it, the theory has no line
        return None
    return None


def _closed_form(metric: str, init: str, config: Mapping[str, Any], metrics: pd.DataFrame) -> Curve | None:
    at = _medians(metrics, init, metric)
    act = ACTIVATIONS[str(config["activation"])]
    if metric == "rms" and math.isfinite(at.get(0, math.nan)):
        if not at or config.get("input_dim") is None or config.get("width") is None:
            return None
        depth = int(config.get("depth") or max(at))
        curve = theory.expected_rms(
            at[0], init=init, gain=resolved_gain(config, init), activation=act.name,
            input_dim=int(config["input_dim"]), width=int(config["width"]), depth=depth,
        )
        if not np.isfinite(curve[1:]).any():
            return None
        return np.arange(depth + 1), np.asarray(curve, dtype=np.float64), "theory: second-moment recursion"
    if metric == "mean_cosine" and math.isfinite(at.get(1, math.nan)):
        layers = np.array(sorted(layer for layer in at if layer >= 1), dtype=int)
        values = [at[1]]
        for _ in layers[1:]:
            values.append(float(act.correlation_map(values[-1])))
        return layers, np.array(values), f"theory: {'arc-cosine' if act.relu_like else 'correlation'} map from layer 1"
    return None


def _layer0(metrics: pd.DataFrame, init: str, metric: str) -> float:
    return _medians(metrics, init, metric).get(0, math.nan)


def _mean_field_curve(metric: str, init: str, config: Mapping[str, Any], metrics: pd.DataFrame) -> Curve | None:
    if overlay_reason(config, init) is not None:
        return None
    q0, c0 = _layer0(metrics, init, "pre_q"), _layer0(metrics, init, "pre_cosine")
    if not math.isfinite(q0) or (metric == "pre_cosine" and not math.isfinite(c0)):
        return None
    curve = mean_field_curves(config, init, q0, c0 if math.isfinite(c0) else 0.0)[metric]
    if not np.isfinite(curve[1:]).any():
        return None
    return np.arange(len(curve)), curve, f"theory: mean-field {_MEAN_FIELD_WORDS[metric]} from layer 0"


def _inits(metrics: pd.DataFrame, config: Mapping[str, Any]) -> list[str]:
    present = list(dict.fromkeys(metrics["init"].astype(str)))
    listed = [str(i) for i in (config.get("init") or ())]
    return [i for i in listed if i in present] + [i for i in present if i not in listed]


def theory_table(metrics: pd.DataFrame, config: Any = None) -> pd.DataFrame:
    """Every theory curve that holds for the run, long: init, metric, layer, value, curve (see the module doc).

    metrics: the tidy table (init, trial, layer, metric, value, ...); config:
    a Config or mapping (default: the metrics' config columns). Empty, with
    these columns, where no curve holds (an inspected model, a norm, ...).
    """
    used = metrics[metrics["metric"].astype(str).isin(THEORY_METRICS)] if len(metrics) else metrics
    if not len(used):
        return pd.DataFrame(columns=list(THEORY_COLUMNS))
    cfg = config_dict(config, metrics)
    frames = []
    for metric in THEORY_METRICS:
        if not (used["metric"].astype(str) == metric).any():
            continue
        for init in _inits(used, cfg):
            with np.errstate(all="ignore"):  # a curve may leave the floats (overflow is a result): inf/NaN kept
                found = theory_curve(metric, init, cfg, used)
            if found is not None:
                layers, values, label = found
                frames.append(pd.DataFrame({"init": init, "metric": metric, "layer": layers.astype(np.int64),
                                            "value": np.asarray(values, dtype=np.float64), "curve": label}))
    if not frames:
        return pd.DataFrame(columns=list(THEORY_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def theory_lines(table: pd.DataFrame) -> dict[str, dict[str, Curve]]:
    """A theory table as metric -> init -> (layers, values, label): the lines to draw, in table order."""
    out: dict[str, dict[str, Curve]] = {}
    if table is None or not len(table):
        return out
    for (metric, init), rows in table.groupby(["metric", "init"], sort=False):
        out.setdefault(str(metric), {})[str(init)] = (rows["layer"].to_numpy(dtype=np.int64),
                                                      rows["value"].to_numpy(dtype=np.float64),
                                                      str(rows["curve"].iloc[0]))
    return out


def mean_field_notes(metrics: pd.DataFrame, config: Any = None) -> list[str]:
    """One line per initializer whose pre_q/pre_cosine/jacobian_sq_mean panels get no mean-field overlay, and why."""
    if not set(metrics["metric"].astype(str)) & set(OVERLAID):
        return []
    cfg = config_dict(config, metrics)
    notes = []
    for init in _inits(metrics, cfg):
        reason = overlay_reason(cfg, init)
        if reason is None and not math.isfinite(_layer0(metrics, init, "pre_q")):
            reason = "pre_q was not measured, so the maps have no start"
        if reason is not None:
            notes.append(f"{init}: no mean-field overlay ({reason})")
    return notes
