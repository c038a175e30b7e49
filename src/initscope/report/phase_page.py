"""The phase-diagram page of `initscope phase`: figures and one self-contained HTML string.

Figures are plotly objects built lazily (plotly is imported inside the
functions); the page reuses the run report's stylesheet and embeds plotly.js
once, inline, so it opens offline. Writing files is the CLI's job.
"""

from __future__ import annotations

import html
import math

import numpy as np

from initscope import __version__
from initscope.report._common import PALETTE, TEMPLATE, label
from initscope.report.page import _CSS
from initscope.study.predictors import best_predictors

__all__ = ["phase_figure", "measured_figure", "decay_figure", "build_phase_page"]

_MAX_SCALE = 1000.0  # ξ above this (or infinite, on the χ₁ = 1 line) is drawn at this value
_LOG2 = math.log10(2.0)  # contours of log10 ξ every doubling: ξ = 2, 4, 8, 16, 32, 64 layers


def _log_scale(values) -> np.ndarray:
    """log10 of depth scales clipped to [1e-1, _MAX_SCALE]; NaN stays NaN (a gap in the heat map)."""
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isnan(a), np.nan, np.log10(np.clip(a, 0.1, _MAX_SCALE)))


def _grid(theory, column: str):
    """(σ_w² values, σ_b² values, Z (b, a)) of a theory column over the grid."""
    table = theory.pivot_table(index="sigma_b2", columns="sigma_w2", values=column, dropna=False)
    return table.columns.to_numpy(float), table.index.to_numpy(float), table.to_numpy(float)


def phase_figure(theory, critical, measured=None, *, activation: str):
    """Two heat maps over (σ_w², σ_b²): ξ_c and ξ_q (log colour), with the χ₁ = 1 line and ξ contours.

    theory: the `phase_theory` table; critical: (sigma_b2, sigma_w2_critical) rows, the exact
    χ₁ = 1 line by root finding; measured: optional `phase_measured` rows, drawn as circles
    coloured on the ξ_c scale.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("ξ_c: depth scale of correlations", "ξ_q: depth scale of lengths"))
    ticks = [math.log10(v) for v in (1, 2, 5, 10, 20, 50, 100, 1000)]
    coloraxis = dict(colorscale="Viridis", cmin=-0.5, cmax=math.log10(_MAX_SCALE),
                     colorbar=dict(title="ξ (layers)", tickvals=ticks, ticktext=["1", "2", "5", "10", "20", "50",
                                                                                 "100", "≥1000"]))
    for col, column in ((1, "xi_c"), (2, "xi_q")):
        x, y, z = _grid(theory, column)
        fig.add_trace(go.Heatmap(x=x, y=y, z=_log_scale(z), coloraxis="coloraxis", name=column,
                                 customdata=z, hovertemplate=f"σ_w² %{{x}}<br>σ_b² %{{y}}<br>{column} %{{customdata:.3g}}"
                                                             "<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Contour(x=x, y=y, z=_log_scale(z), showscale=False, hoverinfo="skip", autocontour=False,
                                 contours=dict(coloring="none", showlabels=False, start=_LOG2, end=6 * _LOG2,
                                               size=_LOG2,),
                                 line=dict(color="rgba(255,255,255,0.7)", width=1, dash="dot"),
                                 name=f"{column} contours", showlegend=False), row=1, col=col)
        ok = np.isfinite(critical["sigma_w2_critical"].to_numpy(float))
        fig.add_trace(go.Scatter(x=critical["sigma_w2_critical"][ok], y=critical["sigma_b2"][ok], mode="lines",
                                 line=dict(color="black", width=3), name="χ₁ = 1 (edge of chaos)",
                                 legendgroup="chi1", showlegend=col == 1,
                                 hovertemplate="χ₁ = 1 at σ_w² %{x:.4f}, σ_b² %{y}<extra></extra>"), row=1, col=col)
    if measured is not None and len(measured):
        for col, scale in ((1, "xi_c"), (2, "xi_q")):
            if f"{scale}_measured" not in measured:  # tables written before ξ_q was measured
                continue
            name = {"xi_c": "ξ_c", "xi_q": "ξ_q"}[scale]
            fig.add_trace(go.Scatter(
                x=measured["sigma_w2"], y=measured["sigma_b2"], mode="markers", name=f"measured {name}",
                marker=dict(size=15, color=_log_scale(measured[f"{scale}_measured"]), colorscale="Viridis",
                            cmin=coloraxis["cmin"], cmax=coloraxis["cmax"], showscale=False,
                            line=dict(color="white", width=2)),
                customdata=np.stack([measured[f"{scale}_measured"], measured[f"{scale}_theory"]], axis=-1),
                hovertemplate=f"σ_w² %{{x}}, σ_b² %{{y}}<br>measured {name} %{{customdata[0]:.3g}}"
                              "<br>theory %{customdata[1]:.3g}<extra></extra>"), row=1, col=col)
    fig.update_layout(template=TEMPLATE, coloraxis=coloraxis, height=480,
                      title=label(f"Order-to-chaos phase diagram, {activation}"),
                      legend=dict(orientation="h", y=-0.18))
    fig.update_xaxes(title_text="σ_w² (weight variance × fan_in)")
    fig.update_yaxes(title_text="σ_b² (shift variance)", col=1)
    return fig


def measured_figure(measured, *, depth: int):
    """Measured against theory ξ_c (circles) and ξ_q (diamonds), log-log, with the identity line; NaN left out."""
    import plotly.graph_objects as go

    scales = [s for s in ("xi_c", "xi_q") if f"{s}_measured" in measured]
    values = np.concatenate([measured[f"{s}_{k}"].to_numpy(float) for s in scales for k in ("measured", "theory")])
    values = values[np.isfinite(values)]
    lo = max(0.5, float(np.min(np.r_[values, 1.0])) / 1.5)
    hi = min(_MAX_SCALE, float(np.max(np.r_[values.clip(max=_MAX_SCALE), 10.0])) * 1.5)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="grey", dash="dash"),
                             name="measured = theory"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[depth, depth], mode="lines", line=dict(color="#d62728", dash="dot"),
                             name=f"network depth ({depth}): longer ξ is not resolved"))
    for scale, symbol in zip(scales, ("circle", "diamond")):
        name = {"xi_c": "ξ_c", "xi_q": "ξ_q"}[scale]
        rows = measured[np.isfinite(measured[f"{scale}_measured"]) & np.isfinite(measured[f"{scale}_theory"])]
        text = [f"σ_w² {w:g}, σ_b² {b:g}" for w, b in zip(rows["sigma_w2"], rows["sigma_b2"])]
        fig.add_trace(go.Scatter(
            x=rows[f"{scale}_theory"].clip(upper=_MAX_SCALE), y=rows[f"{scale}_measured"].clip(upper=_MAX_SCALE),
            mode="markers", marker=dict(size=10, symbol=symbol, color=rows["sigma_b2"], colorscale="Plasma",
                                        colorbar=dict(title="σ_b²"), showscale=scale == "xi_c"),
            text=text, name=name, hovertemplate=f"%{{text}}<br>{name} theory %{{x:.3g}}<br>measured %{{y:.3g}}"
                                                "<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=440, title="Measured depth scales against mean-field theory",
                      xaxis=dict(type="log", title="ξ, theory (layers)"),
                      yaxis=dict(type="log", title="ξ, measured (layers)"), legend=dict(orientation="h", y=-0.2))
    return fig


_DECAYS = {"xi_c": ("pre_cosine", "A", "Correlation decay"), "xi_q": ("pre_q", "C", "Length decay")}


def decay_figure(decay, measured, *, scale: str = "xi_c"):
    """Mean over networks of pre_cosine_A − pre_cosine_B (scale "xi_c") or pre_q_C − pre_q_B ("xi_q") by
    layer (log y), with theory e^{−l/ξ} through layer 1."""
    import plotly.graph_objects as go

    metric, group, title = _DECAYS[scale]
    fig = go.Figure()
    for i, ((sw, sb), rows) in enumerate(decay.groupby(["sigma_w2", "sigma_b2"], sort=True)):
        wide = rows.pivot_table(index=["network", "layer"], columns="group", values=metric)
        diff = (wide[group] - wide["B"]).groupby(level="layer").mean()
        colour = PALETTE[i % len(PALETTE)]
        name = f"σ_w² {sw:g}, σ_b² {sb:g}"
        fig.add_trace(go.Scatter(x=diff.index, y=diff.where(diff > 0), mode="lines+markers", name=name,
                                 line=dict(color=colour), legendgroup=name))
        xi = measured[(measured["sigma_w2"] == sw) & (measured["sigma_b2"] == sb)][f"{scale}_theory"]
        if len(xi) and np.isfinite(xi.iloc[0]) and len(diff) and diff.iloc[0] > 0:
            layers = diff.index.to_numpy(float)
            curve = diff.iloc[0] * np.exp(-(layers - layers[0]) / xi.iloc[0])
            shown = curve >= diff[diff > 0].min() / 10  # not far below the noise floor, which sets the y range
            fig.add_trace(go.Scatter(x=layers[shown], y=curve[shown],
                                     mode="lines", line=dict(color=colour, dash="dash"), legendgroup=name,
                                     showlegend=False, name=f"{name}: theory", hoverinfo="name+y"))
    fig.update_layout(template=TEMPLATE, height=480, title=f"{title} in the networks (dashed: theory)",
                      xaxis_title="layer", yaxis=dict(type="log", title=f"{metric}_{group} − {metric}_B"))
    return fig


def build_phase_page(result, critical, *, command: str, toml: str) -> str:
    """The whole page as an HTML string: the figures, the χ₁ = 1 table, the reproduction command."""
    from plotly.offline import get_plotlyjs

    config = result.config
    sections = [("phase", "Phase diagram",
                 "Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) for i.i.d. weights of variance σ_w²/fan_in "
                 "and i.i.d. shifts of variance σ_b². Left of the black χ₁ = 1 line the network is ordered (every pair of "
                 "inputs ends up with correlation 1), right of it chaotic (correlations settle at c* &lt; 1). ξ_c, the depth "
                 "over which correlations reach their limit, diverges on the line: only there can deep networks carry "
                 "input differences to the output. Dotted: ξ contours at 2, 4, 8, 16, 32 and 64 layers. Circles (with --measure): the measured ξ_c and ξ_q on the same colour scale.",
                 phase_figure(result.theory, critical, result.measured if config.measure else None,
                              activation=config.activation))]
    if config.measure and len(result.measured):
        sections.append(("measured", "Measured depth scales",
                         f"{config.networks} random networks of width {config.width} and depth {config.depth} per point "
                         "(kaiming-normal weights with gain σ_w, normal shifts of std σ_b). Two groups of inputs start at "
                         "correlations near c* and pass through the same weights; the mean cosine of their "
                         "pre-activations (pre_cosine) differs by an amount that decays like e^{−l/ξ_c}, and its fitted "
                         "slope is the measured ξ_c. A third group, the second scaled so that its first pre-activations "
                         "have second moment 1.1·q*, gives ξ_q the same way from pre_q's approach to q*. Depth scales "
                         "beyond the network's depth are not resolved; ξ_q below about 0.9 layers reaches the "
                         "finite-width noise too soon to be fitted.",
                         measured_figure(result.measured, depth=config.depth)))
        sections.append(("decay", "Correlation decay", "The decay each measured ξ_c was fitted to.",
                         decay_figure(result.decay, result.measured)))
        if "pre_q" in result.decay:
            sections.append(("length-decay", "Length decay", "The decay each measured ξ_q was fitted to.",
                             decay_figure(result.decay, result.measured, scale="xi_q")))
    nav = " ".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2><p class="note">{note}</p><div class="figure">'
        + fig.to_html(include_plotlyjs=False, full_html=False, div_id=f"fig-{sid}",
                      config={"responsive": True, "displaylogo": False})
        + "</div></section>"
        for sid, title, note, fig in sections)
    rows = "".join(f"<tr><td>{b:g}</td><td>{'—' if not math.isfinite(w) else f'{w:.4f}'}</td></tr>"
                   for b, w in zip(critical["sigma_b2"], critical["sigma_w2_critical"]))
    table = ('<section id="critical"><h2>Edge of chaos</h2><p class="note">σ_w² where χ₁ = 1 at each σ_b² '
             "(Brent's method on χ₁ − 1; — where there is no crossing).</p>"
             f"<table><thead><tr><th>σ_b²</th><th>σ_w² at χ₁ = 1</th></tr></thead><tbody>{rows}</tbody></table></section>")
    repro = (f'<section id="config"><h2>Reproduction</h2><pre>{html.escape(command)}</pre>'
             f"<p>phase.toml:</p><pre>{html.escape(toml)}</pre></section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>initscope phase diagram: {html.escape(config.activation)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>initscope phase diagram: {html.escape(config.activation)}</h1>"
        f"<p>initscope {html.escape(__version__)}, seed {config.seed}.</p><nav>{nav}</nav></header>"
        + body + table + repro + "</body></html>\n"
    )


def trainability_figure(trained, lines, measured=None, *, value: str = "test_accuracy"):
    """Heat map of the median `value` over networks per (σ_w², depth), with the theory's ξ_c and 6ξ_c lines
    and (when given) the measured ξ_c at σ_w² points."""
    import plotly.graph_objects as go

    med = trained.groupby(["depth", "sigma_w2"])[value].median().unstack("sigma_w2").sort_index()
    fig = go.Figure(go.Heatmap(x=med.columns.to_numpy(), y=med.index.to_numpy(), z=med.to_numpy(),
                               colorscale="Viridis", colorbar=dict(title=label(value)),
                               hovertemplate="σ_w² %{x}<br>depth %{y}<br>" + value + " %{z:.3g}<extra></extra>"))
    top = float(med.index.max()) * 1.05
    for column, name, dash in (("xi_c", "ξ_c (theory)", "dot"), ("six_xi_c", "6ξ_c (theory)", "solid")):
        y = np.minimum(lines[column].to_numpy(dtype=np.float64), top)
        fig.add_trace(go.Scatter(x=lines["sigma_w2"], y=y, mode="lines", name=name,
                                 line=dict(color="white", dash=dash, width=2)))
    if measured is not None and len(measured):
        fig.add_trace(go.Scatter(x=measured["sigma_w2"], y=np.minimum(measured["xi_c_measured"], top),
                                 mode="markers", name="ξ_c (measured)",
                                 marker=dict(color="white", symbol="circle-open", size=10, line=dict(width=2))))
    fig.update_layout(template=TEMPLATE, height=520, xaxis_title="σ_w²", yaxis_title="depth",
                      yaxis=dict(range=[float(med.index.min()) - 1, top]), legend=dict(orientation="h", y=-0.2))
    return fig


def predictors_figure(predictors):
    """Spearman's ρ of each step-0 feature with the final loss, with its bootstrap interval (top 20 by |ρ|)."""
    import plotly.graph_objects as go

    top = predictors.head(20).iloc[::-1]
    fig = go.Figure(go.Scatter(
        x=top["spearman_rho"], y=top["feature"], mode="markers",
        error_x=dict(type="data", symmetric=False, array=top["rho_hi"] - top["spearman_rho"],
                     arrayminus=top["spearman_rho"] - top["rho_lo"]),
        customdata=np.c_[top["auc"], top["auc_lo"], top["auc_hi"]],
        hovertemplate="%{y}: ρ %{x:.2f}<br>AUC %{customdata[0]:.2f} [%{customdata[1]:.2f}, "
                      "%{customdata[2]:.2f}]<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=max(300, 24 * len(top) + 120), xaxis=dict(range=[-1, 1],
                      title="Spearman ρ with the final loss (90% bootstrap interval)"), margin=dict(l=200))
    return fig


def build_trainability_page(trained, lines, grid, measured=None, *, command: str, toml: str, predictors=None,
                            threshold: float | None = None) -> str:
    """The `initscope phase --train` page: the trainability heat map, its table and the reproduction."""
    from plotly.offline import get_plotlyjs

    value = "test_accuracy" if trained["test_accuracy"].notna().any() else "test_loss"
    fig = trainability_figure(trained, lines, measured, value=value)
    note = (f"Median {value.replace('_', ' ')} over {grid.networks} networks after {grid.steps} {grid.optimizer} "
            f"steps (lr {grid.lr:g}) on {html.escape(grid.data)}, width {grid.width}, {grid.activation}, "
            f"σ_b² = {grid.sigma_b2:g}; weights of variance σ_w²/fan_in. Schoenholz et al. (2017): random networks "
            "train while depth stays within about 6ξ_c (solid line) and not beyond; ξ_c diverges at the edge of chaos.")
    body = (f'<section id="trainability"><h2>Trainability</h2><p class="note">{note}</p><div class="figure">'
            + fig.to_html(include_plotlyjs=False, full_html=False, div_id="fig-trainability",
                          config={"responsive": True, "displaylogo": False}) + "</div></section>")
    if predictors is not None and len(predictors):
        body += ('<section id="predictors"><h2>What predicts training</h2><p class="note">'
                 + html.escape(best_predictors(predictors)) + f" 'Trained': final loss below {threshold:.3g}. Each "
                 "feature is a step-0 measurement of every network (a metric at the last layer, at its worst layer, "
                 "or a flag); ρ &lt; 0: higher values, lower final loss.</p><div class=\"figure\">"
                 + predictors_figure(predictors).to_html(include_plotlyjs=False, full_html=False,
                                                         div_id="fig-predictors",
                                                         config={"responsive": True, "displaylogo": False})
                 + "</div></section>")
    repro = (f'<section id="config"><h2>Reproduction</h2><pre>{html.escape(command)}</pre>'
             f"<p>phase.toml:</p><pre>{html.escape(toml)}</pre></section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>initscope trainability: {html.escape(grid.activation)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>initscope trainability diagram: {html.escape(grid.activation)}</h1>"
        f"<p>initscope {html.escape(__version__)}, seed {grid.seed}.</p></header>" + body + repro + "</body></html>\n"
    )
