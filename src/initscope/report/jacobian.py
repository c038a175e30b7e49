"""The input-output Jacobian's singular values by layer: a density heat map per initializer, with χ₁^l.

Dynamical isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017,
2018) is a narrow band that stays narrow with depth: orthogonal weights at
the edge of chaos. Gaussian weights widen it layer by layer, and ReLU cannot
keep it narrow. The theory line is √(χ₁^l): the root mean square of the
normalised singular values (`core.propagation.log10_histogram`) that mean-field
theory predicts, from the measured layer 0: the run's theory table
(`initscope.study.overlays`), which this figure only draws.
"""

from __future__ import annotations

import math

import numpy as np

from initscope.core.propagation import JACOBIAN_LOG10_EDGES
from initscope.report._common import TEMPLATE, colour, inits_of, label
from initscope.report.geometry import _empty
from initscope.study.overlays import overlay_reason, theory_table

__all__ = ["jacobian_spectrum_figure", "JACOBIAN_SECTION", "bin_grid", "density_by_layer", "measured_log_rms",
           "theory_rms"]

JACOBIAN_SECTION = (
    "jacobian-spectrum", "Jacobian singular values",
    "The distribution of the singular values of each sample's Jacobian ∂s_l/∂x (at most 64 samples per trial), "
    "normalised by √(min(d, w)/w) so that their mean square is jacobian_sq_mean; colour is the share of values "
    "at that height in each layer. A band that stays narrow is dynamical isometry. Dashed: the mean-field "
    "√(χ₁^l) from the measured layer 0, where it applies; solid: the measured √jacobian_sq_mean (median over trials).",
)


def bin_grid(histogram) -> np.ndarray:
    """Every bin centre from the lowest to the highest occupied one, so heat-map rows are evenly spaced."""
    centres = np.round(0.5 * (JACOBIAN_LOG10_EDGES[1:] + JACOBIAN_LOG10_EDGES[:-1]), 6)
    if not len(histogram):
        return centres[:0]
    lo, hi = float(histogram["log10_sv"].min()), float(histogram["log10_sv"].max())
    return centres[(centres >= lo - 1e-9) & (centres <= hi + 1e-9)]


def theory_rms(theory, metrics, config, init: str) -> tuple[np.ndarray | None, str | None]:
    """√(theory jacobian_sq_mean) per layer 0..depth from the run's theory table, or (None, reason)."""
    reason = overlay_reason(config, init)
    if reason is not None:
        return None, reason
    rows = theory[(theory["init"].astype(str) == init) & (theory["metric"] == "jacobian_sq_mean")]
    if not len(rows):
        start = metrics[(metrics["init"].astype(str) == init) & (metrics["layer"] == 0) & (metrics["metric"] == "pre_q")]
        if not math.isfinite(start["value"].median() if len(start) else math.nan):
            return None, "pre_q was not measured, so the maps have no start"
        return None, "the q-map leaves the finite numbers from layer 1"
    return np.sqrt(rows.sort_values("layer")["value"].to_numpy(dtype=np.float64)), None


def measured_log_rms(metrics, init: str) -> tuple[np.ndarray, np.ndarray]:
    """(layers, log10 √jacobian_sq_mean) of `init`, the median over trials; empty when not measured."""
    measured = metrics[(metrics["init"].astype(str) == init) & (metrics["metric"] == "jacobian_sq_mean")]
    med = measured.groupby("layer")["value"].median()
    with np.errstate(divide="ignore", invalid="ignore"):
        return med.index.to_numpy(int), 0.5 * np.log10(med.to_numpy(float))


def density_by_layer(histogram, init: str, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layers (L,), share (len(bins), L)): each layer's counts of `init` over all trials as a share per bin."""
    part = histogram[histogram["init"].astype(str) == init]
    table = part.pivot_table(index="log10_sv", columns="layer", values="count", aggfunc="sum", fill_value=0)
    counts = table.reindex(np.round(bins, 6), fill_value=0).to_numpy(float)
    return table.columns.to_numpy(int), counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)


def _add_lines(fig, theory, metrics, config, init: str, line_colour: str, n: int) -> str | None:
    """Measured √jacobian_sq_mean (median over trials) and theory √(χ₁^l) on panel n; the reason if no theory."""
    import plotly.graph_objects as go

    x, y = measured_log_rms(metrics, init)
    if len(x):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color="white", width=2),
                                 name="measured √jacobian_sq_mean", legendgroup="measured", showlegend=n == 0),
                      row=1, col=n + 1)
    rms, reason = theory_rms(theory, metrics, config, init)
    if rms is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            fig.add_trace(go.Scatter(x=np.arange(len(rms)), y=np.log10(rms), mode="lines",
                                     line=dict(color=line_colour, width=2, dash="dash"),
                                     name=label(f"theory √(χ₁^l), {init}"), legendgroup="theory"), row=1, col=n + 1)
    return reason


def jacobian_spectrum_figure(histogram, metrics, *, config, theory=None):
    """One density heat map per initializer: x layer, y log10 of the normalised singular value.

    histogram: rows (init, trial, layer, log10_sv, count) — bin centres and
    counts from `core.propagation.log10_histogram`; metrics: the tidy metrics
    table (for jacobian_sq_mean and layer 0's pre_q, pre_cosine); theory: the
    run's theory table (default: derived from `metrics`). Returns a
    plotly Figure; `layout.meta["theory"]` maps each init to None or the reason
    its theory line is missing.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    inits = inits_of(histogram, config)
    if not inits:
        return _empty("No Jacobian spectra in this run: add jacobian_log_spread to --metrics.")
    theory = theory_table(metrics, config) if theory is None else theory
    fig = make_subplots(rows=1, cols=len(inits), shared_yaxes=True, subplot_titles=[label(i) for i in inits],
                        horizontal_spacing=0.04)
    reasons = {}
    hidden = histogram[histogram["layer"] > 0]  # layer 0's Jacobian is the identity: one bin, no information
    bins = bin_grid(hidden if len(hidden) else histogram)
    for n, init in enumerate(inits):
        layers, density = density_by_layer(hidden, init, bins)
        with np.errstate(divide="ignore"):  # log colour: a narrow band and a spread-out tail both show
            shade = np.where(density > 0, np.log10(np.where(density > 0, density, 1.0)), np.nan)
        fig.add_trace(go.Heatmap(x=layers, y=bins, z=shade, customdata=density,
                                 coloraxis="coloraxis", name=label(init),
                                 hovertemplate="layer %{x}<br>log10 σ %{y:.2f}<br>share %{customdata:.3g}"
                                               "<extra></extra>"), row=1, col=n + 1)
        reasons[init] = _add_lines(fig, theory, metrics, config, init, colour(inits, init), n)
    notes = [f"{init}: no theory line ({why})" for init, why in reasons.items() if why]
    if notes:
        fig.add_annotation(text=label("; ".join(notes)), showarrow=False, xref="paper", yref="paper", x=0, y=-0.02,
                           yshift=-50, xanchor="left", yanchor="top", font=dict(size=11, color="#555"))
    fig.update_layout(template=TEMPLATE, height=480,
                      coloraxis=dict(colorscale="Viridis", cmin=-4, cmax=0,
                                     colorbar=dict(title="share", tickvals=[-4, -3, -2, -1, 0],
                                                   ticktext=["≤1e-4", "0.001", "0.01", "0.1", "1"])),
                      meta={"theory": reasons}, legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
                      margin=dict(t=110, b=110))
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="log10 singular value (normalised)", col=1)
    return fig
