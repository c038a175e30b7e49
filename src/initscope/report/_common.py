"""Helpers shared by the figure builders: colours, trial summaries, theory gating."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Plotly's D3 palette: one fixed colour per initializer across every figure.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
TEMPLATE = "plotly_white"
BAND = (0.1, 0.9)


def inits_of(table, config: Mapping[str, Any] | None = None) -> list[str]:
    """Initializers in config order, then any others in order of appearance."""
    seen = list(dict.fromkeys(table["init"].astype(str))) if len(table) else []
    ordered = [i for i in (config or {}).get("init", ()) if i in seen]
    return ordered + [i for i in seen if i not in ordered]


def label(text: str) -> str:
    """A string shown as plain text in a plotly label (plotly parses a few HTML tags)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def colour(inits: list[str], init: str) -> str:
    return PALETTE[inits.index(init) % len(PALETTE)]


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def layer_summary(metrics, metric: str):
    """Median and 10–90% band over trials, per (init, layer), for one metric.

    Returns a DataFrame with columns init, layer, median, lo, hi (NaN rows
    where every trial is NaN, so an overflowed layer shows as a gap).
    """
    rows = metrics[metrics["metric"] == metric]
    grouped = rows.groupby(["init", "layer"], sort=True)["value"]
    out = grouped.median().rename("median").to_frame()
    out["lo"] = grouped.quantile(BAND[0])
    out["hi"] = grouped.quantile(BAND[1])
    return out.reset_index()


def resolved_gain(config: Mapping[str, Any], init: str) -> float:
    """The config's gain, or the initializer's default when unset.

    NaN for an initializer or activation the registry does not know (a table
    from elsewhere): it then gets no theory overlay, rather than no page.
    """
    gain = config.get("gain")
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        from initscope.core.initializers import default_gain

        try:
            return float(default_gain(init, str(config.get("activation", "relu"))))
        except ValueError:
            return math.nan
    return float(gain)


def theory_applies(config: Mapping[str, Any]) -> bool:
    """True when the closed forms of `theory` hold: ReLU, zero shifts, no norm, no residual."""
    shift_zero = config.get("shift") == "zeros" or _number(config.get("shift_scale")) == 0.0
    return (
        config.get("activation") == "relu"
        and shift_zero
        and config.get("norm", "none") == "none"
        and _number(config.get("residual", 0.0)) == 0.0
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def compact(values, digits: int = 4) -> np.ndarray:
    """float32 values rounded to `digits` significant digits, for small page JSON.

    Plotly writes float32 arrays as base64 typed arrays (4 bytes a value);
    the rounding keeps values stable across platforms and hover text short.
    """
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(a) & (a != 0), np.floor(np.log10(np.abs(a))), 0.0)
        scale = 10.0 ** (digits - 1 - mag)
        rounded = np.round(a * scale) / scale
    out = np.where(np.isfinite(rounded), rounded, a)
    with np.errstate(over="ignore"):
        return out.astype(np.float32)


def sqrt_eps(dtype: str | None) -> float:
    """√eps of the run's dtype: the floor below which a Gram-matrix spectrum is noise."""
    return math.sqrt(float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps))


def slider_steps(figure_id_frames: list[str], labels: list[str], *, duration: int = 0) -> list[dict]:
    """Slider steps that jump to a named frame each, with a full redraw."""
    return [
        {
            "method": "animate",
            "label": label,
            "args": [[name], {"mode": "immediate", "frame": {"duration": duration, "redraw": True},
                              "transition": {"duration": 0}}],
        }
        for name, label in zip(figure_id_frames, labels)
    ]


def play_buttons(*, frame_ms: int = 400) -> dict:
    """A play/pause updatemenu for an animation."""
    return {
        "type": "buttons",
        "direction": "left",
        "showactive": False,
        "x": 0.0,
        "y": 0.0,
        "xanchor": "right",
        "yanchor": "top",
        "pad": {"r": 10, "t": 45},
        "buttons": [
            {"label": "▶ play", "method": "animate",
             "args": [None, {"frame": {"duration": frame_ms, "redraw": True}, "fromcurrent": True,
                             "transition": {"duration": 0}, "mode": "immediate"}]},
            {"label": "❚❚ pause", "method": "animate",
             "args": [[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate",
                               "transition": {"duration": 0}}]},
        ],
    }


def layer_slider(layers: list[int], *, prefix: str = "layer ") -> dict:
    return {
        "active": 0,
        "x": 0.0,
        "len": 1.0,
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": 45, "b": 10},
        "currentvalue": {"prefix": prefix, "visible": True, "xanchor": "left"},
        "steps": slider_steps([str(layer) for layer in layers], [str(layer) for layer in layers]),
    }
