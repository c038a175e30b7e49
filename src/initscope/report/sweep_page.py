"""The sweep report: heat maps over two config fields and metric-vs-layer curves, from a results store.

Figure functions take the store's tidy metrics table (`Store.metrics`) and
return a `plotly.graph_objects.Figure`; `write_sweep_report` is the only
writer (one offline HTML page, plotly.js inline once). plotly is imported
inside the functions that need it.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from initscope import __version__
from initscope.study.atomic import atomic_write
from initscope.study.store import CONFIG_COLUMNS, Store, StoreSummary

__all__ = [
    "sweep_heatmap_figure",
    "sweep_curves_figure",
    "default_axes",
    "build_sweep_page",
    "write_sweep_report",
    "FIELDS",
]

FIELDS = tuple(name for name, _ in CONFIG_COLUMNS if name != "metrics")
_AXIS_PREFERENCE = ("depth", "width", "input_dim", "samples", "residual", "shift_scale", "gain", "init",
                    "activation", "norm", "shift", "data", "seed")
_TEMPLATE = "plotly_white"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def _check_field(name: str, value: str) -> str:
    if value not in FIELDS:
        raise ValueError(f"The '{name}' parameter must be a config field, one of {list(FIELDS)}. Got {value!r} instead.")
    return value


def _labels(values: pd.Series, field: str) -> pd.Series:
    """Values as display labels; an unset gain (NaN) is the initializer's 'default'."""
    def one(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "default" if field == "gain" else "nan"
            return f"{v:g}"
        return str(v)
    return values.map(one)


def _order(values: pd.Series) -> list[Any]:
    """Distinct values sorted (numbers numerically, NaN last), as they appear otherwise."""
    distinct = list(dict.fromkeys(values.tolist()))
    try:
        return sorted(distinct, key=lambda v: (isinstance(v, float) and math.isnan(v), v))
    except TypeError:
        return distinct


def default_axes(summary_axes: dict[str, list[Any]]) -> tuple[str, str]:
    """Two fields for the heat map: the first varying ones in a sensible order (depth, width, ...)."""
    varying = [f for f in _AXIS_PREFERENCE if f in summary_axes]
    picks = varying + [f for f in ("depth", "width") if f not in varying]
    return picks[0], picks[1]


def sweep_heatmap_figure(table: pd.DataFrame, *, x: str = "depth", y: str = "width",
                         metric: str = "effective_rank", facet: str | None = None):
    """Median over trials of `metric` at each configuration's last layer, on an x × y grid.

    table: tidy metrics (Store.metrics) with at least the last layer of
    `metric`. Everything not on the axes (or the facet) is pooled into the
    cell's median; the hover gives the number of trials in the cell. One
    panel per value of `facet`, with one colour scale for all panels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_field("x", x)
    _check_field("y", y)
    if facet is not None:
        _check_field("facet", facet)
    rows = table[(table["metric"] == metric) & (table["layer"] == table["depth"])]
    panels = _order(rows[facet]) if facet is not None and len(rows) else [None]
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    titles = [f"{facet} = {_labels(pd.Series([p]), facet).iloc[0]}" for p in panels] if facet else None
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.18 if n_rows > 1 else 0.1)
    x_order, y_order = _order(rows[x]), _order(rows[y])
    x_labels = _labels(pd.Series(x_order, dtype=object), x).tolist()
    y_labels = _labels(pd.Series(y_order, dtype=object), y).tolist()
    finite = rows["value"][np.isfinite(rows["value"])]
    zmin, zmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for i, panel in enumerate(panels):
        part = rows if panel is None else rows[_same(rows[facet], panel)]
        grid = np.full((len(y_order), len(x_order)), np.nan)
        count = np.zeros((len(y_order), len(x_order)), dtype=int)
        for (xv, yv), cell in part.groupby([x, y], dropna=False)["value"]:
            xi, yi = _index(x_order, xv), _index(y_order, yv)
            grid[yi, xi] = cell.median()
            count[yi, xi] = len(cell)
        fig.add_trace(go.Heatmap(
            z=grid, x=x_labels, y=y_labels, zmin=zmin, zmax=zmax, colorscale="Viridis",
            customdata=count, showscale=i == 0, colorbar={"title": {"text": metric}},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>median {metric}=%{{z:.4g}}<br>trials=%{{customdata}}"
                          "<extra></extra>",
        ), row=i // cols + 1, col=i % cols + 1)
        fig.update_xaxes(title_text=x, type="category", row=i // cols + 1, col=i % cols + 1)
        fig.update_yaxes(title_text=y, type="category", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(template=_TEMPLATE, height=380 * n_rows + 60,
                      title=f"{metric} at the last layer: median over trials",
                      meta={"x": x, "y": y, "metric": metric, "facet": facet, "panels": len(panels)})
    return fig


def _same(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, float) and math.isnan(value):
        return series.isna()
    return series == value


def _index(order: list[Any], value: Any) -> int:
    for i, v in enumerate(order):
        if v == value or (isinstance(v, float) and isinstance(value, float) and math.isnan(v) and math.isnan(value)):
            return i
    raise KeyError(value)


def sweep_curves_figure(table: pd.DataFrame, *, metric: str = "effective_rank", group: str = "init"):
    """`metric` against layer (0 = input), one line per value of the config field `group`.

    Each line is the median over every trial of the configurations with that
    value (pooling the other fields), with a 10–90% band. A line ends at the
    largest depth its configurations have.
    """
    import plotly.graph_objects as go

    _check_field("group_by", group)
    rows = table[table["metric"] == metric]
    fig = go.Figure()
    for i, value in enumerate(_order(rows[group]) if len(rows) else []):
        part = rows[_same(rows[group], value)]
        g = part.groupby("layer")["value"]
        stats = pd.DataFrame({"median": g.median(), "lo": g.quantile(0.1), "hi": g.quantile(0.9),
                              "n": g.size()}).reset_index()
        colour = _PALETTE[i % len(_PALETTE)]
        name = f"{group}={_labels(pd.Series([value], dtype=object), group).iloc[0]}"
        r, gg, b = (int(colour[j:j + 2], 16) for j in (1, 3, 5))
        fig.add_trace(go.Scatter(
            x=np.concatenate([stats["layer"], stats["layer"][::-1]]),
            y=np.concatenate([stats["hi"], stats["lo"][::-1]]), fill="toself", line={"width": 0},
            fillcolor=f"rgba({r},{gg},{b},0.15)", hoverinfo="skip", showlegend=False, legendgroup=name,
        ))
        fig.add_trace(go.Scatter(
            x=stats["layer"], y=stats["median"], mode="lines+markers", name=name, legendgroup=name,
            line={"color": colour}, customdata=stats["n"],
            hovertemplate=f"{name}<br>layer %{{x}}<br>median %{{y:.4g}}<br>values=%{{customdata}}<extra></extra>",
        ))
    fig.update_layout(template=_TEMPLATE, height=440, xaxis_title="layer (0 = input)", yaxis_title=metric,
                      title=f"{metric} across depth, by {group}: median and 10–90% band over trials",
                      meta={"metric": metric, "group": group})
    return fig


from initscope.report.page import _CSS  # noqa: E402  (one stylesheet for run and sweep pages)


def _summary_html(summary: StoreSummary) -> str:
    axes = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(', '.join(_labels(pd.Series(v, dtype=object), k)))}</td></tr>"
        for k, v in summary.axes.items()
    ) or "<tr><td colspan=2>no field varies</td></tr>"
    out = (
        f'<section id="summary"><h2>Sweep</h2><p>{summary.configs:,} configurations '
        f"({summary.configs_complete:,} complete), {summary.trials_ok:,} trials ok, "
        f"{summary.trials_failed:,} failed.</p><table><tr><th>field</th><th>values</th></tr>{axes}</table>"
    )
    if len(summary.failures):
        rows = "".join(
            f"<tr><td>{html.escape(str(r.config_id))}</td><td>{html.escape(str(r.init))}</td>"
            f"<td>{html.escape(str(r.error))}</td></tr>" for r in summary.failures.itertuples()
        )
        out += ("<h2>Failed configurations</h2><table><tr><th>config_id</th><th>init</th><th>error</th></tr>"
                f"{rows}</table>")
    return out + "</section>"


def _figure_html(fig, div_id: str) -> str:
    return fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"responsive": True, "displaylogo": False})


def build_sweep_page(table: pd.DataFrame, summary: StoreSummary, *, metrics: list[str], x: str, y: str,
                     group: str, facet: str | None, title: str = "initscope sweep report") -> str:
    """The report as one HTML string: summary, then per metric a heat map and a curves figure."""
    from plotly.offline import get_plotlyjs

    sections = [_summary_html(summary)]
    for metric in metrics:
        heat = sweep_heatmap_figure(table, x=x, y=y, metric=metric, facet=facet)
        curves = sweep_curves_figure(table, metric=metric, group=group)
        sid = html.escape(metric)
        sections.append(
            f'<section id="heatmap-{sid}"><h2>{sid}: {html.escape(x)} × {html.escape(y)}</h2>'
            f'<p class="note">Each cell is the median of {sid} at the last layer over every trial of the '
            f"configurations with those values; the other fields are pooled"
            + (f", one panel per {html.escape(facet)}" if facet else "") + ".</p>"
            f'<div class="figure">{_figure_html(heat, f"fig-heatmap-{sid}")}</div></section>'
            f'<section id="curves-{sid}"><h2>{sid} across depth, by {html.escape(group)}</h2>'
            f'<p class="note">Median and 10–90% band over trials at each layer.</p>'
            f'<div class="figure">{_figure_html(curves, f"fig-curves-{sid}")}</div></section>'
        )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1><p>initscope {html.escape(__version__)}, written {stamp}.</p>"
        "</header>" + "".join(sections) + "</body></html>\n"
    )


def write_sweep_report(store_path: str | os.PathLike, path: str | os.PathLike, *, metrics: str | list[str] | None = None,
                       x: str | None = None, y: str | None = None, group_by: str = "init",
                       facet: str | None = "auto") -> Path:
    """Write the sweep report of a results store to `path` (.html) and return it.

    metrics: names (or comma-separated) to show; default effective_rank.
    x, y: heat-map axes (default: the first two fields that vary, depth and
    width first). group_by: the field the curves are grouped by. facet: one
    heat map panel per value of this field; 'auto' = init when it varies and
    is not an axis; None = pool everything. Raises ValueError for unknown
    fields or metrics, and for a store without finished trials.
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"The 'out' parameter must end in .html. Got {str(path)!r} instead.")
    with Store(store_path, create=False) as store:
        summary = store.summary()
        names = _metric_names(metrics, summary)
        dx, dy = default_axes(summary.axes)
        x = _check_field("x", x or (dx if dx != y else dy))
        y = _check_field("y", y or (dy if dy != x else dx))
        group_by = _check_field("group_by", group_by)
        if x == y:
            raise ValueError(f"The 'x' and 'y' parameters must be two different config fields. Got {x!r} for both.")
        if facet == "auto":
            facet = "init" if "init" in summary.axes and "init" not in (x, y) else None
        elif facet is not None:
            _check_field("facet", facet)
        table = store.metrics(metric=names)
    if not len(table):
        raise ValueError(f"The store {str(store_path)!r} holds no finished trials of {names}.")
    page = build_sweep_page(table, summary, metrics=names, x=x, y=y, group=group_by, facet=facet)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, page.encode("utf-8"))
    return path


def _metric_names(metrics: str | list[str] | None, summary: StoreSummary) -> list[str]:
    stored = summary.metric_rows["metric"].tolist()
    if metrics is None:
        return ["effective_rank"] if "effective_rank" in stored or not stored else stored[:1]
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    for m in names:
        if m not in stored:
            raise ValueError(f"The 'metric' parameter must be a metric in the store, one of {stored}. Got {m!r} instead.")
    return names
