"""Histograms of each neuron's weight-vector 2-norm, with the theoretical density."""

from __future__ import annotations

import numpy as np

from initscope.core.theory import weight_norm_density
from initscope.report._common import (
    as_figure, axis_names, colour, compact, empty_spec, grid, inits_of, label, rgba, template, vline,
)
from initscope.study.overlays import resolved_gain
from initscope.study.records import config_dict

__all__ = ["weight_norm_figure", "weight_norm_spec", "norm_histogram"]

_KINDS = ("input", "internal")
_MAX_BINS = 60
_SPIKE_SPREAD = 1e-4  # relative spread below which the norms are one value (a spike)


def norm_histogram(norms: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A density histogram of `norms`: (edges (b+1,), density (b,)).

    `bins` defaults to √n between 8 and 60, so a few dozen norms do not
    scatter over mostly empty bins.

    When every norm is the same up to rounding (a sphere initializer; float32
    rounding leaves a relative spread near 1e-7), the histogram is one bar 2%
    wide around that value instead of bins of width 1e-9, so the spike stays
    visible on a readable axis.
    """
    norms = norms[np.isfinite(norms)]
    if not norms.size:
        return np.array([0.0, 1.0]), np.array([0.0])
    lo, hi = float(norms.min()), float(norms.max())
    if hi - lo <= _SPIKE_SPREAD * max(abs(hi), 1e-300):
        half = 0.01 * max(abs(hi), 1e-12)
        edges = np.array([hi - half, hi + half])
        return edges, np.array([1.0 / (2 * half)])
    if bins is None:
        bins = int(np.clip(np.sqrt(norms.size), 8, _MAX_BINS))
    density, edges = np.histogram(norms, bins=bins, range=(lo, hi), density=True)
    return edges, density


def _fan_in(config, kind: str) -> int | None:
    value = config.get("input_dim" if kind == "input" else "width")
    return int(value) if value is not None else None


def _theory(config, init: str, kind: str, edges: np.ndarray, top: float):
    """(x, y, label) of the theoretical density, a spike for sphere, or None."""
    fan_in = _fan_in(config, kind)
    width = config.get("width")
    if fan_in is None or width is None or "activation" not in config:
        return None
    gain = resolved_gain(config, init)
    span = edges[-1] - edges[0]
    r = np.linspace(max(edges[0] - 0.1 * span, 0.0), edges[-1] + 0.1 * span, 200)
    density = weight_norm_density(init, fan_in, gain, r, fan_out=int(width))
    if density is not None:
        return r, np.asarray(density, dtype=np.float64), f"theory: {gain:.3g}·χ({fan_in}) scaled"
    if init == "sphere":
        return np.array([gain, gain]), np.array([0.0, top]), f"theory: every norm is {gain:.3g}"
    return None


def weight_norm_figure(weight_norms, *, config=None):
    """Histograms of neuron weight-vector 2-norms, one row per initializer and one column per kind.

    weight_norms: the tidy table (init, trial, layer, kind, norm); "input" is
    W_1 (fan_in = input_dim), "internal" is W_2..W_L (fan_in = width).
    The theoretical density (scaled chi, from `theory.weight_norm_density`) is
    overlaid where one exists, a spike for sphere; a dotted line marks norm 1,
    the norm that neither grows nor shrinks a unit's input.
    Returns a `plotly.graph_objects.Figure` (`weight_norm_spec` as plain data).
    """
    return as_figure(weight_norm_spec(weight_norms, config=config))


def weight_norm_spec(weight_norms, *, config=None) -> dict:
    """`weight_norm_figure` as a plain plotly spec (dicts and numpy arrays)."""
    config = config_dict(config)
    inits = inits_of(weight_norms, config)
    if not inits:
        return empty_spec("No weight norms in this run.")
    kinds = [k for k in _KINDS if (weight_norms["kind"] == k).any()]
    kinds += sorted(set(weight_norms["kind"].astype(str)) - set(kinds))
    titles = [f"{label(init)}, {label(kind)} layer{'s' if kind == 'internal' else ''}"
              for init in inits for kind in kinds]
    layout = grid(len(inits), len(kinds), titles, horizontal_spacing=0.08,
                  vertical_spacing=min(0.3 / max(len(inits) - 1, 1), 0.1))
    groups = {key: part["norm"].to_numpy(dtype=np.float64)
              for key, part in weight_norms.assign(init=weight_norms["init"].astype(str)).groupby(["init", "kind"])}
    data, shapes = [], []
    theory_shown = False
    for i, init in enumerate(inits):
        c = colour(inits, init)
        for j, kind in enumerate(kinds):
            n = i * len(kinds) + j
            xref, yref = axis_names(n)
            edges, density = norm_histogram(groups.get((init, kind), np.zeros(0)))
            data.append({
                "type": "bar", "x": compact((edges[:-1] + edges[1:]) / 2), "y": compact(density),
                "width": compact(np.diff(edges)), "marker": {"color": rgba(c, 0.55), "line": {"width": 0}},
                "name": f"{label(init)} ({label(kind)})", "showlegend": False, "xaxis": xref, "yaxis": yref,
                "hovertemplate": f"{label(init)}, {label(kind)}<br>norm %{{x:.3g}}<br>density %{{y:.3g}}<extra></extra>",
            })
            theory = _theory(config, init, kind, edges, float(density.max()) if density.size else 1.0)
            if theory is not None:
                x, y, t_label = theory
                data.append({
                    "type": "scatter", "x": compact(x), "y": compact(y), "mode": "lines", "name": "theory",
                    "legendgroup": "theory", "showlegend": not theory_shown, "line": {"color": "black", "width": 2},
                    "xaxis": xref, "yaxis": yref,
                    "hovertemplate": f"{t_label}<br>norm %{{x:.3g}}<br>density %{{y:.3g}}<extra></extra>",
                })
                theory_shown = True
            shapes.append(vline(n, 1.0, {"color": "#444", "dash": "dot", "width": 1}))
            if i == len(inits) - 1:
                layout["xaxis" + xref[1:]]["title"] = {"text": "weight-vector 2-norm"}
            if j == 0:
                layout["yaxis" + yref[1:]]["title"] = {"text": "density"}
    count = len(set(zip(weight_norms["init"], weight_norms["trial"]))) // max(len(inits), 1)
    layout.update(
        template=template(),
        height=max(300, 260 * len(inits)) + 80,
        margin={"l": 70, "r": 10, "t": 80, "b": 50},
        title={"text": "Each neuron's weight-vector 2-norm (dotted: norm 1; black: theory) "
                       f"over {count} trial{'s' if count != 1 else ''}", "x": 0.01},
        bargap=0,
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        shapes=shapes,
    )
    return {"data": data, "layout": layout}
