"""Metrics over depth: one small multiple per metric, with theory where it applies."""

from __future__ import annotations

import math

import numpy as np

from initscope.core.metrics import METRICS
from initscope.report._common import (
    Summary, all_summaries, as_figure, axis_names, colour, compact, empty_spec, grid, inits_of, label, layer_summary,
    rgba, template,
)
from initscope.report.modules import LayerNames, shown_layers, spaced_ticks
from initscope.study.overlays import Curve, mean_field_notes, theory_lines, theory_table
from initscope.study.records import config_dict

__all__ = ["metric_depth_figure", "metric_depth_spec", "METRIC_ORDER", "metric_order", "display_floor",
           "display_summary"]

# The built-in metric names of DESIGN.md, in the order the panels appear; registered
# metrics follow in registration order (`metric_order`).
METRIC_ORDER = tuple(METRICS)
_LOG_DECADES = 2.0


def metric_order() -> list[str]:
    """Every registered metric, in registry order: the order of the depth panels."""
    return list(METRICS)


def display_floor(metric: str) -> float | None:
    """The metric's display floor, if its registry entry has one.

    linear_r2's is −1: leave-one-out R² can reach −1e4 when a layer's states
    are nearly collinear, and anything ≤ 0 already means "nothing recoverable".
    """
    entry = METRICS.get(metric)
    return None if entry is None else entry.display_floor


def display_summary(metrics, metric: str):
    """`layer_summary` with values clipped at the metric's display floor, if it has one."""
    return _clipped(layer_summary(metrics, metric), metric)


def _clipped_arrays(summary: Summary, metric: str) -> Summary:
    floor = display_floor(metric)
    if floor is None:
        return summary
    return Summary(summary.layers, *(np.maximum(a, floor, where=~np.isnan(a), out=a.copy())
                                     for a in (summary.median, summary.lo, summary.hi)))


def _clipped(summary, metric: str):
    floor = display_floor(metric)
    if floor is not None:
        for column in ("median", "lo", "hi"):
            summary[column] = summary[column].clip(lower=floor)
    return summary


def panel_title(metric: str) -> str:
    floor = display_floor(metric)
    return f"{metric} (clipped at {floor:g})" if floor is not None else metric


def _metrics_present(metrics) -> list[str]:
    present = list(dict.fromkeys(metrics["metric"].astype(str)))
    order = metric_order()
    return [m for m in order if m in present] + [m for m in present if m not in order]


def log_axis(metric: str, values: np.ndarray) -> bool:
    """True for a scale-like metric whose positive values span more than two decades.

    Shares, cosines and correlations (registry entries with `linear_scale`)
    live on a fixed linear scale; a log axis would only stretch their noise near 0.
    """
    entry = METRICS.get(metric)
    return not (entry is not None and entry.linear_scale) and _spans_decades(values)


def _spans_decades(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and math.log10(positive.max() / positive.min()) > _LOG_DECADES


def metric_depth_figure(metrics, *, config=None, theory=None, columns: int = 3):
    """Each metric against layer: median over trials with a 10–90% band, one line per initializer.

    metrics: the tidy table (init, trial, layer, metric, value, config columns).
    One panel per metric present, in registry order (`metric_order`). A panel
    whose values span more than two decades gets a log y axis. Dashed lines
    are theory, drawn only where its assumptions hold: the run's theory table
    (`theory`, as `initscope.study.overlays.theory_table` gives it; by default
    derived from `metrics`). `config` (a Config or mapping) defaults to the
    config columns of `metrics`.
    Returns a `plotly.graph_objects.Figure` (`metric_depth_spec` as plain data).
    """
    return as_figure(metric_depth_spec(metrics, config=config, theory=theory, columns=columns))


# long: one loop over panels, initializers and (for a deep model) the two layer sets, then the layout
def metric_depth_spec(metrics, *, config=None, theory=None, columns: int = 3,
                      modules: LayerNames | None = None) -> dict:
    """`metric_depth_figure` as a plain plotly spec (dicts and numpy arrays).

    modules: a model's layer names (`report.modules`): hovers and x ticks name
    the modules; a deep model shows its block outputs, with buttons to switch
    every panel to all layers and back (`layout.meta["layer_sets"]`).
    theory: the run's theory table (default: derived from `metrics`).
    """
    config = config_dict(config, metrics)
    lines = theory_lines(theory_table(metrics, config) if theory is None else theory)
    names = _metrics_present(metrics)
    if not names:
        return empty_spec("No metrics in this run.")
    inits = inits_of(metrics, config)
    cols = min(columns, len(names))
    rows = math.ceil(len(names) / cols)
    below = _tick_room(modules)
    height = (260 + below) * rows + 110
    layout = grid(rows, cols, [label(panel_title(m)) for m in names], horizontal_spacing=0.07,
                  vertical_spacing=min(0.5 / max(rows - 1, 1), 0.12 if not below else (below + 45) / height))
    sets = ("selection", "all") if modules is not None and modules.deep else ("all",)
    data: list[dict] = []
    shown_in: list[str] = []  # the layer set of each trace: "selection", "all" or "" (both)
    theory_shown = False
    summaries = all_summaries(metrics)
    for n, metric in enumerate(names):
        xref, yref = axis_names(n)
        by_init = {init: _clipped_arrays(s, metric) for init, s in summaries.get(metric, {}).items()}
        for init in inits:
            if init not in by_init:
                continue
            for which in sets:
                summary = by_init[init] if modules is None else _model_points(by_init[init], modules, which)
                traces, drew_theory = _init_traces(summary, metric, init, inits, lines.get(metric, {}).get(init),
                                                   first=n == 0, modules=modules)
                switch = {"visible": which == sets[0]} if len(sets) == 2 else {}
                data += [dict(t, xaxis=xref, yaxis=yref, **switch) for t in traces]
                shown_in += [which] * len(traces)
                theory_shown |= drew_theory
        values = np.concatenate([np.concatenate(s[1:]) for s in by_init.values()]) if by_init else np.zeros(0)
        if log_axis(metric, values):
            layout["yaxis" + yref[1:]]["type"] = "log"
        if modules is not None:
            layout["xaxis" + xref[1:]].update(_name_ticks(modules))
        if n // cols + 1 == rows:
            layout["xaxis" + xref[1:]]["title"] = {"text": "layer"}
    if theory_shown:
        # One neutral legend entry explains the dashes; each init's theory line toggles with its init.
        data.append({"type": "scatter", "x": [None], "y": [None], "mode": "lines", "name": "theory (dashed)",
                     "line": {"color": "#555", "dash": "dash", "width": 2}, "hoverinfo": "skip"})
        shown_in.append("")
    trials = int(metrics.groupby("init")["trial"].nunique().max())
    notes = mean_field_notes(metrics, config)
    if notes:  # the reader learns why a theory line is missing, not only that it is
        layout.setdefault("annotations", []).append(
            {"text": label("; ".join(notes)), "showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": 0,
             "yshift": -45, "xanchor": "left", "yanchor": "top", "font": {"size": 11, "color": "#555"}})
    shown = ""
    if len(sets) == 2:
        layout["updatemenus"] = [_layer_set_buttons(modules, shown_in)]
        shown = f"; showing the {len(modules.selection)} block outputs of {len(modules.names)} layers"
    layout.update(
        template=template(),
        meta={"mean_field_notes": notes, **({"layer_sets": shown_in} if shown else {})},
        height=height,
        margin={"l": 60, "r": 10, "t": 80 + (40 if shown else 0), "b": (100 if notes else 50) + below},
        title={"text": f"Metrics over depth: median over {trials} trial{'s' if trials != 1 else ''}, "
                       f"band 10–90% (dashed: theory){shown}", "x": 0.01},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
    )
    return {"data": data, "layout": layout}


def _tick_room(modules: LayerNames | None) -> int:
    """Pixels under each panel for slanted module names (0 for a run's plain layer numbers)."""
    if modules is None:
        return 0
    return int(6.5 * max((len(t) for t in modules.ticks), default=0) * math.sin(math.radians(50))) + 10


def _name_ticks(modules: LayerNames) -> dict:
    at, texts = spaced_ticks(modules, 1 / 30)
    return {"tickmode": "array", "tickvals": np.asarray(at, dtype=np.int32), "ticktext": [label(t) for t in texts],
            "tickangle": -50, "tickfont": {"size": 9}}


def _subset(summary: Summary, keep) -> Summary:
    mask = np.isin(summary.layers, np.asarray(keep, dtype=np.int64))
    return Summary(*(a[mask] for a in summary))


def _model_points(summary: Summary, modules: LayerNames, which: str) -> Summary:
    """A model's points in one panel: its finite values, at the block outputs ("selection") or every layer.

    A metric undefined at most block outputs (grad_norm: a block ends in a
    parameter-free ReLU) shows its weight layers instead, one kind of module.
    """
    finite = _subset(summary, summary.layers[np.isfinite(summary.median)])
    return finite if which != "selection" else _subset(finite, shown_layers(modules, finite.layers))


def _layer_set_buttons(modules: LayerNames, shown_in: list[str]) -> dict:
    """Buttons that switch every panel between the block outputs and all layers (restyle of `visible`)."""
    def visible(which: str) -> list[bool]:
        return [s in ("", which) for s in shown_in]

    return {"type": "buttons", "direction": "left", "showactive": True, "active": 0, "x": 0.0, "xanchor": "left",
            "y": 1.0, "yanchor": "bottom", "pad": {"b": 30},
            "buttons": [{"label": f"block outputs ({len(modules.selection)} layers)", "method": "restyle",
                         "args": [{"visible": visible("selection")}]},
                        {"label": f"all {len(modules.names)} layers", "method": "restyle",
                         "args": [{"visible": visible("all")}]}]}


def _init_traces(summary: Summary, metric: str, init: str, inits: list[str], theory: Curve | None, *,
                 first: bool, modules: LayerNames | None = None) -> tuple[list[dict], bool]:
    """One initializer's band, median line and (where one holds) its theory line in one panel."""
    c = colour(inits, init)
    x = summary.layers.astype(np.int32)
    name = label(init)
    where = "layer %{x}" if modules is None else "%{text}"
    out = [
        {"type": "scatter", "x": x, "y": compact(getattr(summary, edge)), "mode": "lines", "line": {"width": 0, "color": c},
         **({"fill": "tonexty"} if edge == "lo" else {}), "fillcolor": rgba(c, 0.18), "legendgroup": init,
         "showlegend": False, "hoverinfo": "skip", "name": f"{name} {'90%' if edge == 'hi' else '10%'}"}
        for edge in ("hi", "lo")
    ]
    out.append({"type": "scatter", "x": x, "y": compact(summary.median), "mode": "lines+markers", "name": name,
                "legendgroup": init, "showlegend": first, "line": {"color": c, "width": 2}, "marker": {"size": 4},
                "hovertemplate": f"{name}<br>{metric}<br>{where}: %{{y:.4g}}<extra></extra>"})
    if modules is not None:
        out[-1]["text"] = [label(modules.where(layer)) for layer in x]
    if theory is None:
        return out, False
    t_layers, t_values, t_label = theory
    out.append({"type": "scatter", "x": t_layers.astype(np.int32), "y": compact(t_values), "mode": "lines",
                "name": f"{name}: theory", "legendgroup": init, "showlegend": False,
                "line": {"color": c, "width": 2, "dash": "dash"},
                "hovertemplate": f"{name}<br>{t_label}<br>layer %{{x}}: %{{y:.4g}}<extra></extra>"})
    return out, True
