"""Metrics over depth: one small multiple per metric, with theory where it applies."""

from __future__ import annotations

import math

import numpy as np

from initscope.core.activations import ACTIVATIONS
from initscope.core.metrics import METRICS
from initscope.report._common import TEMPLATE, colour, compact, inits_of, label, layer_summary, resolved_gain, rgba, theory_applies
from initscope.report.tables import config_dict

__all__ = ["metric_depth_figure", "METRIC_ORDER", "metric_order", "display_floor", "theory_curves", "display_summary"]

# The built-in metric names of DESIGN.md, in the order the panels appear; registered
# metrics follow in registration order (`metric_order`).
METRIC_ORDER = tuple(name for name, entry in METRICS.items())
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
    summary = layer_summary(metrics, metric)
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


def theory_curves(summary, metric: str, init: str, config, metrics=None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(layers, values, label) of the closed form for `metric`, or None where none applies.

    pre_q, pre_cosine, jacobian_sq_mean: the mean-field maps started from the
    measured layer 0 (`report.meanfield`; needs `metrics`, the tidy table, for
    layer 0's pre_q and pre_cosine), wherever `meanfield.overlay_reason` is None.

    rms: the He/Xavier second-moment recursion from the measured input rms
    (`theory.expected_rms`). mean_cosine: the activation's closed-form
    correlation map iterated from the measured median at layer 1 (for ReLU the
    arc-cosine map, `theory.relu_correlation_map`; Cho & Saul 2009). Both need
    an activation whose registry entry has these closed forms, zero shifts, no
    norm and no residual (`theory_applies`).
    """
    from initscope.core import theory
    from initscope.report.meanfield import OVERLAID

    if metric in OVERLAID:
        return _mean_field_curve(metric, init, config, metrics)
    if not theory_applies(config):
        return None
    act = ACTIVATIONS[str(config["activation"])]
    rows = summary[summary["init"].astype(str) == init].set_index("layer")["median"]
    if metric == "rms" and 0 in rows.index and math.isfinite(rows[0]):
        depth = int(config.get("depth") or rows.index.max())
        if config.get("input_dim") is None or config.get("width") is None:
            return None
        curve = theory.expected_rms(
            float(rows[0]), init=init, gain=resolved_gain(config, init), activation=act.name,
            input_dim=int(config["input_dim"]), width=int(config["width"]), depth=depth,
        )
        if not np.isfinite(curve[1:]).any():
            return None
        return np.arange(depth + 1), np.asarray(curve, dtype=np.float64), "theory: second-moment recursion"
    if metric == "mean_cosine" and 1 in rows.index and math.isfinite(rows[1]):
        layers = np.sort(rows.index[rows.index >= 1].to_numpy(dtype=int))
        values = [float(rows[1])]
        for _ in layers[1:]:
            values.append(float(act.correlation_map(values[-1])))
        return layers, np.array(values), f"theory: {'arc-cosine' if act.relu_like else 'correlation'} map from layer 1"
    return None


def _layer0(metrics, init: str, metric: str) -> float:
    rows = metrics[(metrics["init"].astype(str) == init) & (metrics["layer"] == 0) & (metrics["metric"] == metric)]
    return float(rows["value"].median()) if len(rows) else math.nan


def _mean_field_curve(metric: str, init: str, config, metrics):
    from initscope.report.meanfield import mean_field_curves, overlay_reason

    if metrics is None or overlay_reason(config, init) is not None:
        return None
    q0, c0 = _layer0(metrics, init, "pre_q"), _layer0(metrics, init, "pre_cosine")
    if not math.isfinite(q0) or (metric == "pre_cosine" and not math.isfinite(c0)):
        return None
    curve = mean_field_curves(config, init, q0, c0 if math.isfinite(c0) else 0.0)[metric]
    if not np.isfinite(curve[1:]).any():
        return None
    what = {"pre_q": "q-map", "pre_cosine": "c-map", "jacobian_sq_mean": "∏χ₁"}[metric]
    return np.arange(len(curve)), curve, f"theory: mean-field {what} from layer 0"


def mean_field_notes(metrics, config) -> list[str]:
    """One line per initializer whose pre_q/pre_cosine/jacobian_sq_mean panels get no mean-field overlay, and why."""
    from initscope.report.meanfield import OVERLAID, overlay_reason

    present = set(metrics["metric"].astype(str)) & set(OVERLAID)
    if not present:
        return []
    notes = []
    for init in inits_of(metrics, config):
        reason = overlay_reason(config, init)
        if reason is None and not math.isfinite(_layer0(metrics, init, "pre_q")):
            reason = "pre_q was not measured, so the maps have no start"
        if reason is not None:
            notes.append(f"{init}: no mean-field overlay ({reason})")
    return notes


def metric_depth_figure(metrics, *, config=None, columns: int = 3):
    """Each metric against layer: median over trials with a 10–90% band, one line per initializer.

    metrics: the tidy table (init, trial, layer, metric, value, config columns).
    One panel per metric present, in registry order (`metric_order`). A panel
    whose values span more than two decades gets a log y axis. Dashed lines
    are theory (`theory_curves`), drawn only where its assumptions hold.
    `config` defaults to the config columns of `metrics`.
    Returns a `plotly.graph_objects.Figure`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    config = config_dict(config, metrics)
    names = _metrics_present(metrics)
    if not names:
        from initscope.report.geometry import _empty

        return _empty("No metrics in this run.")
    inits = inits_of(metrics, config)
    cols = min(columns, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[label(panel_title(m)) for m in names],
                        horizontal_spacing=0.07,
                        vertical_spacing=min(0.5 / max(rows - 1, 1), 0.12))
    theory_shown = False
    for n, metric in enumerate(names):
        row, col = n // cols + 1, n % cols + 1
        summary = display_summary(metrics, metric)
        for init in inits:
            part = summary[summary["init"].astype(str) == init].sort_values("layer")
            c = colour(inits, init)
            x = part["layer"].to_numpy(dtype=np.int32)
            name = label(init)
            for edge, fill in (("hi", None), ("lo", "tonexty")):
                fig.add_trace(go.Scatter(
                    x=x, y=compact(part[edge]), mode="lines", line={"width": 0, "color": c}, fill=fill,
                    fillcolor=rgba(c, 0.18), legendgroup=init, showlegend=False, hoverinfo="skip",
                    name=f"{name} {'90%' if edge == 'hi' else '10%'}",
                ), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=compact(part["median"]), mode="lines+markers", name=name, legendgroup=init,
                showlegend=n == 0, line={"color": c, "width": 2}, marker={"size": 4},
                hovertemplate=f"{name}<br>{metric}<br>layer %{{x}}: %{{y:.4g}}<extra></extra>",
            ), row=row, col=col)
            theory = theory_curves(summary, metric, init, config, metrics)
            if theory is not None:
                t_layers, t_values, t_label = theory
                fig.add_trace(go.Scatter(
                    x=t_layers.astype(np.int32), y=compact(t_values), mode="lines", name=f"{name}: theory",
                    legendgroup=init, showlegend=False,
                    line={"color": c, "width": 2, "dash": "dash"},
                    hovertemplate=f"{name}<br>{t_label}<br>layer %{{x}}: %{{y:.4g}}<extra></extra>",
                ), row=row, col=col)
                theory_shown = True
        values = summary[["median", "lo", "hi"]].to_numpy(dtype=np.float64)
        if log_axis(metric, values):
            fig.update_yaxes(type="log", row=row, col=col)
        fig.update_xaxes(title_text="layer" if row == rows else None, row=row, col=col)
    if theory_shown:
        # One neutral legend entry explains the dashes; each init's theory line toggles with its init.
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="theory (dashed)",
                                 line={"color": "#555", "dash": "dash", "width": 2}, hoverinfo="skip"))
    trials = int(metrics.groupby("init")["trial"].nunique().max())
    notes = mean_field_notes(metrics, config)
    if notes:  # the reader learns why a theory line is missing, not only that it is
        fig.add_annotation(text=label("; ".join(notes)), showarrow=False, xref="paper", yref="paper", x=0, y=0,
                           yshift=-45, xanchor="left", yanchor="top", font={"size": 11, "color": "#555"})
    fig.update_layout(meta={"mean_field_notes": notes})
    fig.update_layout(
        template=TEMPLATE,
        height=260 * rows + 110,
        margin={"l": 60, "r": 10, "t": 80, "b": 100 if notes else 50},
        title={"text": f"Metrics over depth: median over {trials} trial{'s' if trials != 1 else ''}, "
                       "band 10–90% (dashed: theory)", "x": 0.01},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
    )
    return fig
