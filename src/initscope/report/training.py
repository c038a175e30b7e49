"""The report's "Training" section: loss curves per initializer, divergence, and the metrics over steps.

Drawn from a trained run's training.csv (init, trial, step, loss, test_loss[, accuracy, test_accuracy]) and
its metrics with a `step` column. A diverged trial's loss is +inf from its divergence step on: the median
and band include it (a median at +inf is drawn as a gap and the divergence counts say why).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from initscope.report._common import BAND, colour, figure_html, rgba, template
from initscope.study.train_summary import summary_lines

__all__ = ["TRAINING_SECTION", "loss_spec", "metrics_over_steps_spec", "training_html"]

TRAINING_SECTION = ("training", "Training")
# The depth panels' metrics shown over steps: scale, rank, information and the gradient.
STEP_METRICS = ("rms", "effective_rank", "linear_r2", "distance_corr", "grad_norm", "dead_fraction")
LOG_METRICS = ("rms", "grad_norm")  # scales: they span decades


def _curve(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and BAND quantiles over trials (axis 1) of (steps, trials); +inf (diverged) stays in the ranks."""
    finite_or_inf = np.where(np.isnan(values), np.inf, values)
    with np.errstate(invalid="ignore"):  # interpolating between two +inf ranks gives NaN: drawn as a gap
        q = np.quantile(finite_or_inf, [0.5, BAND[0], BAND[1]], axis=1, method="nearest")
    q[~np.isfinite(q)] = np.nan  # plotly cannot draw inf: a gap, explained by the divergence panel
    return q[0], q[1], q[2]


def loss_spec(training: pd.DataFrame) -> dict:
    """Training loss (solid) and held-out loss (dotted) per initializer, median with a 10–90% band, log scale;
    beside it, the share of trials diverged by each step."""
    inits = list(dict.fromkeys(training["init"].astype(str)))
    data = []
    for init in inits:
        rows = training[training["init"].astype(str) == init]
        wide = rows.pivot(index="step", columns="trial", values="loss").sort_index()
        steps = wide.index.to_numpy()
        med, lo, hi = _curve(wide.to_numpy(dtype=np.float64))
        c = colour(inits, init)
        data += [
            dict(type="scatter", x=steps, y=hi, mode="lines", line=dict(width=0), showlegend=False,
                 hoverinfo="skip", legendgroup=init, xaxis="x", yaxis="y"),
            dict(type="scatter", x=steps, y=lo, mode="lines", line=dict(width=0), fill="tonexty",
                 fillcolor=rgba(c, 0.2), showlegend=False, hoverinfo="skip", legendgroup=init, xaxis="x", yaxis="y"),
            dict(type="scatter", x=steps, y=med, mode="lines", name=f"{init} (train)", line=dict(color=c),
                 legendgroup=init, xaxis="x", yaxis="y"),
        ]
        test = rows.pivot(index="step", columns="trial", values="test_loss").sort_index()
        data.append(dict(type="scatter", x=steps, y=_curve(test.to_numpy(dtype=np.float64))[0], mode="lines",
                         name=f"{init} (held out)", line=dict(color=c, dash="dot"), legendgroup=init,
                         xaxis="x", yaxis="y"))
        gone = np.isinf(wide.to_numpy(dtype=np.float64)).mean(axis=1)
        data.append(dict(type="scatter", x=steps, y=gone, mode="lines", name=f"{init} diverged",
                         line=dict(color=c, shape="hv"), legendgroup=init, showlegend=False, xaxis="x2", yaxis="y2"))
    layout = dict(
        template=template(), height=420, margin=dict(t=40, l=60, r=20, b=50),
        xaxis=dict(domain=[0, 0.62], title="step"), yaxis=dict(type="log", title="loss (median, 10–90%)"),
        xaxis2=dict(domain=[0.72, 1], title="step", anchor="y2"),
        yaxis2=dict(anchor="x2", range=[0, 1.05], title="share of trials diverged", tickformat=".0%"),
        legend=dict(orientation="h", y=-0.2),
    )
    return dict(data=data, layout=layout)


def _axis_type(metric: str) -> str:
    return "log" if metric in LOG_METRICS else "linear"


def metrics_over_steps_spec(metrics: pd.DataFrame, *, names=STEP_METRICS) -> dict:
    """The depth panels over training: each metric's median over trials against the layer, one curve per
    measured step (light: early, dark: late), one initializer's colour each; a menu picks the metric."""
    names = [m for m in names if (metrics["metric"] == m).any()]
    if not names:
        return dict(data=[], layout=dict(template=template(), title="no metric to show over steps"))
    inits = list(dict.fromkeys(metrics["init"].astype(str)))
    steps = sorted(int(s) for s in metrics["step"].unique())
    med = (metrics[metrics["metric"].isin(names)].groupby(["metric", "init", "step", "layer"], sort=False)["value"]
           .median().sort_index())
    data, owner = [], []
    for metric in names:
        for init in inits:
            for k, step in enumerate(steps):
                try:
                    curve = med.loc[(metric, init, step)].sort_index()
                except KeyError:
                    continue
                shade = 0.25 + 0.75 * (k / max(len(steps) - 1, 1))
                data.append(dict(type="scatter", x=curve.index.to_numpy(), y=curve.to_numpy(dtype=np.float64),
                                 mode="lines+markers", marker=dict(size=4),
                                 line=dict(color=rgba(colour(inits, init), shade)), name=f"{init}, step {step}",
                                 legendgroup=init, visible=metric == names[0]))
                owner.append(metric)
    buttons = [dict(label=m, method="update", args=[{"visible": [o == m for o in owner]},
                                                    {"yaxis.title": m, "yaxis.type": _axis_type(m)}])
               for m in names]
    layout = dict(template=template(), height=460, margin=dict(t=50, l=60, r=20, b=50),
                  xaxis=dict(title="layer"), yaxis=dict(title=names[0], type=_axis_type(names[0])),
                  updatemenus=[dict(buttons=buttons, x=0, y=1.15, xanchor="left", yanchor="top")])
    return dict(data=data, layout=layout)


def training_html(training: pd.DataFrame, stepped_metrics: pd.DataFrame | None) -> str:
    """The section: the summary lines, the loss figure and the metrics over steps."""
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(training))
    parts = [f'<section id="{TRAINING_SECTION[0]}"><h2>{TRAINING_SECTION[1]}</h2>',
             '<p class="note">Every trial\'s network trained on the task (all weights, shifts and the readout). '
             "Median over trials with a 10–90% band; dotted: held-out loss. A trial whose loss or gradient "
             "overflows has diverged: it stops there and counts as +inf from that step on (right panel).</p>",
             f"<ul>{lines}</ul>", f'<div class="figure">{figure_html(loss_spec(training), "fig-training-loss")}</div>']
    if stepped_metrics is not None and len(stepped_metrics) and "step" in stepped_metrics:
        parts += ['<p class="note">The depth panels over training: each metric\'s median over trials per layer, '
                  "one curve per measured step, darker later.</p>",
                  f'<div class="figure">{figure_html(metrics_over_steps_spec(stepped_metrics), "fig-training-steps")}'
                  "</div>"]
    return "".join(parts) + "</section>"
