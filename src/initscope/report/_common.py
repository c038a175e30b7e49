"""Helpers shared by the figure builders: colours, trial summaries, theory gating, plain figure specs.

Figures are built as plain plotly specs, `{"data": [...], "layout": {...},
"frames": [...]}` with numpy arrays, by the `*_spec` functions of each
module: no plotly object is created on the page's path, so none of plotly's
per-property validation runs (it took ~1.5 s of the default report). The page
serialises each spec once (`figure_html`); the public `*_figure` functions wrap
the same spec in a `plotly.graph_objects.Figure` (`as_figure`) for notebooks.
`grid` lays out subplots exactly as `plotly.subplots.make_subplots` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np


# Plotly's D3 palette: one fixed colour per initializer across every figure.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
TEMPLATE = "plotly_white"
BAND = (0.1, 0.9)


def template() -> dict:
    """The layout template (plotly_white) as plain JSON, as plotly writes it into every figure."""
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


def colorscale(name: str) -> list:
    """A named plotly colour scale as the [[position, colour], ...] list plotly writes into a page."""
    from plotly.colors import get_colorscale

    return [list(step) for step in get_colorscale(name)]


def axis_names(n: int) -> tuple[str, str]:
    """The trace references of the n-th (0-based) xy subplot: ("x", "y"), ("x2", "y2"), ..."""
    suffix = "" if n == 0 else str(n + 1)
    return f"x{suffix}", f"y{suffix}"


def grid(rows: int, cols: int, titles: list[str], *, horizontal_spacing: float = 0.2,
         vertical_spacing: float = 0.3, scene: bool = False) -> dict:
    """Layout entries of a rows × cols grid of subplots, numbered row by row from the top left.

    xy subplots get xaxis/yaxis (xaxis2/yaxis2, ...) anchored to each other;
    `scene=True` gives 3D scenes (scene, scene2, ...). `titles` become the
    subplot-title annotations. Domains and annotations are those of
    `plotly.subplots.make_subplots` with the same arguments (tests compare them).
    """
    widths = [(1.0 - horizontal_spacing * (cols - 1)) / cols] * cols
    heights = [(1.0 - vertical_spacing * (rows - 1)) / rows] * rows
    layout: dict = {}
    annotations = []
    for n in range(rows * cols):
        row, col = divmod(n, cols)
        up = rows - 1 - row  # make_subplots counts rows from the bottom, then flips them
        x0 = sum(widths[:col]) + col * horizontal_spacing
        y0 = sum(heights[:up]) + up * vertical_spacing
        # Clamped as make_subplots does: rounding can leave -1e-17 or 1 + 1e-16.
        xd = [max(0.0, x0), min(1.0, x0 + widths[col])]
        yd = [max(0.0, y0), min(1.0, y0 + heights[up])]
        if scene:
            layout["scene" if n == 0 else f"scene{n + 1}"] = {"domain": {"x": xd, "y": yd}}
        else:
            x, y = axis_names(n)
            layout["xaxis" + x[1:]] = {"anchor": y, "domain": xd}
            layout["yaxis" + y[1:]] = {"anchor": x, "domain": yd}
        if n < len(titles):
            annotations.append({"font": {"size": 16}, "showarrow": False, "text": titles[n],
                                "x": (xd[0] + xd[1]) / 2, "xanchor": "center", "xref": "paper",
                                "y": yd[1], "yanchor": "bottom", "yref": "paper"})
    layout["annotations"] = annotations
    return layout


def vline(n: int, x: float, line: dict) -> dict:
    """A vertical line across the n-th xy subplot (what `Figure.add_vline(row=, col=)` adds)."""
    xr, yr = axis_names(n)
    return {"type": "line", "x0": x, "x1": x, "xref": xr, "y0": 0, "y1": 1, "yref": f"{yr} domain", "line": line}


def as_figure(spec: dict):
    """The spec as a `plotly.graph_objects.Figure`, without re-validating what the builders made."""
    import plotly.graph_objects as go

    return go.Figure(spec, _validate=False)


def figure_html(spec: dict, div_id: str) -> str:
    """The spec as an HTML div and its script (plotly.js not included), serialised once.

    Numpy arrays become base64 typed arrays (`typed_arrays`), as plotly writes them.
    """
    import plotly.io as pio

    return pio.to_html(typed_arrays(spec), validate=False, include_plotlyjs=False, full_html=False,
                       div_id=div_id, auto_play=False, config={"responsive": True, "displaylogo": False})


# numpy dtype -> plotly.js typed-array name (plotly's own table)
_TYPED = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
          "float32": "f4", "float64": "f8"}
_UNTYPED_KEYS = frozenset({"geojson", "layer", "layers", "range"})  # plotly.js wants plain lists there


def typed_arrays(obj):
    """A copy of a spec with every numpy array as a plotly.js typed array {dtype, bdata[, shape]}.

    What plotly's `convert_to_base64` does, without its per-array dataframe
    checks (a third of the page's build time): int64 is narrowed to int32
    when it fits, other dtypes and empty arrays are left as they are.
    """
    import base64

    if isinstance(obj, dict):
        return {k: (v if k in _UNTYPED_KEYS else typed_arrays(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [typed_arrays(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.size:
        a = obj
        if a.dtype == np.int64 and np.iinfo(np.int32).min <= a.min() and a.max() <= np.iinfo(np.int32).max:
            a = a.astype(np.int32)
        name = _TYPED.get(str(a.dtype))
        if name is None:
            return obj
        out = {"dtype": name, "bdata": base64.b64encode(np.ascontiguousarray(a)).decode("ascii")}
        if a.ndim > 1:
            out["shape"] = str(a.shape)[1:-1]
        return out
    return obj


def inits_of(table, config: Mapping[str, Any] | None = None) -> list[str]:
    """Initializers in config order, then any others in order of appearance."""
    seen = [str(i) for i in table["init"].unique()] if len(table) else []
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


class Summary(NamedTuple):
    """One metric of one initializer over layers: median and 10–90% band over trials, shapes (L+1,)."""

    layers: np.ndarray
    median: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def all_summaries(metrics) -> dict[str, dict[str, Summary]]:
    """`layer_summary` of every metric and initializer at once, as arrays: metric -> init -> Summary.

    One sort and one batched numpy quantile over the groups instead of three
    pandas group-bys per metric and a filter per initializer (together most of
    the report's remaining build time). Quantiles skip NaN, as pandas' do; a
    group with no finite value gives NaN.
    """
    import pandas as pd

    if not len(metrics):
        return {}
    m_codes, m_names = pd.factorize(metrics["metric"], sort=False)
    i_codes, i_names = pd.factorize(metrics["init"], sort=False)
    layers = metrics["layer"].to_numpy(dtype=np.int64)
    order = np.lexsort((layers, i_codes, m_codes))
    m, i, layer = m_codes[order], i_codes[order], layers[order]
    values = metrics["value"].to_numpy(dtype=np.float64)[order]
    change = np.r_[True, (m[1:] != m[:-1]) | (i[1:] != i[:-1]) | (layer[1:] != layer[:-1])]
    starts = np.flatnonzero(change)
    stats = _group_quantiles(values, np.r_[starts, len(values)])
    out: dict[str, dict[str, Summary]] = {}
    pair = m[starts] * len(i_names) + i[starts]
    cuts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1], True])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        g = starts[lo]
        out.setdefault(str(m_names[m[g]]), {})[str(i_names[i[g]])] = Summary(
            layer[starts[lo:hi]], stats[lo:hi, 0], stats[lo:hi, 1], stats[lo:hi, 2])
    return out


def _group_quantiles(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(median, 10%, 90%) of each run values[bounds[g]:bounds[g+1]], NaN skipped: shape (G, 3)."""
    sizes = np.diff(bounds)
    q = (0.5, BAND[0], BAND[1])
    if sizes.min() == sizes.max():  # one value per trial in every group: one batched call
        import warnings

        table = values.reshape(len(sizes), -1)
        if not np.isnan(table).any():  # np.quantile is vectorised; nanquantile loops over rows
            return np.quantile(table, q, axis=1).T
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups (overflow) are NaN, as intended
            return np.nanquantile(table, q, axis=1).T
    stats = np.full((len(sizes), 3), np.nan)
    for g in range(len(sizes)):
        group = values[bounds[g]:bounds[g + 1]]
        group = group[~np.isnan(group)]
        if group.size:
            stats[g] = np.quantile(group, q)
    return stats


def empty_spec(message: str) -> dict:
    """A figure that only says `message` (a run without that table)."""
    note = {"text": message, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}
    return {"data": [], "layout": {"template": template(), "height": 200, "annotations": [note],
                                   "xaxis": {"visible": False}, "yaxis": {"visible": False}}}


def compact(values, digits: int = 4) -> np.ndarray:
    """float32 values rounded to `digits` significant digits, for small page JSON.

    Plotly writes float32 arrays as base64 typed arrays (4 bytes a value);
    the rounding keeps values stable across platforms and hover text short.
    """
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Clipped: 10**(digits − 1 − mag) overflows for subnormal values (mag ≈ −320).
        mag = np.clip(np.where(np.isfinite(a) & (a != 0), np.floor(np.log10(np.abs(a))), 0.0), -290.0, 290.0)
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


def layer_slider(layers: list[int], *, prefix: str = "layer ", labels: list[str] | None = None) -> dict:
    """A slider over frames named by layer; `labels` (e.g. "12 layer1.0.conv1") label the steps and the
    current value, else the layer numbers (plotly.js draws every k-th step's label when they would crowd)."""
    texts = [str(layer) for layer in layers] if labels is None else list(labels)
    return {
        "active": 0,
        "x": 0.0,
        "len": 1.0,
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": 45, "b": 10},
        "currentvalue": {"prefix": prefix, "visible": True, "xanchor": "left"},
        "steps": slider_steps([str(layer) for layer in layers], texts),
    }
