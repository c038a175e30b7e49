"""Singular-value spectra across depth: an animation over layers and a layer × component heat map."""

from __future__ import annotations

import math

import numpy as np

from initscope.report._common import (
    as_figure, axis_names, colorscale, colour, compact, empty_spec, grid, inits_of, label, layer_slider, play_buttons, sqrt_eps,
    template,
)
from initscope.report.modules import LayerNames, spaced_ticks
from initscope.study.records import config_dict

__all__ = ["spectrum_animation_figure", "spectrum_heatmap_figure", "spectrum_animation_spec", "spectrum_heatmap_spec",
           "median_spectra", "all_median_spectra"]



def median_spectra(spectra, init: str):
    """One initializer's spectra, median over trials per (layer, k).

    Returns (layers (L+1,), k (K,), sigma (L+1, K), trials) with NaN where a
    layer has fewer components or overflowed. The median of the k-th values
    keeps each curve descending.
    """
    rows = spectra[spectra["init"].astype(str) == init]
    table = rows.groupby(["layer", "k"])["singular_value"].median().unstack("k")
    table = table.sort_index().sort_index(axis=1)
    trials = int(rows["trial"].nunique())
    return (table.index.to_numpy(dtype=int), table.columns.to_numpy(dtype=int),
            table.to_numpy(dtype=np.float64), trials)


def all_median_spectra(spectra, inits: list[str]) -> dict:
    """`median_spectra` of every initializer, from one group-by over the whole table."""
    frame = spectra[["init", "trial", "layer", "k", "singular_value"]].copy()
    frame["init"] = frame["init"].astype(str)
    medians = frame.groupby(["init", "layer", "k"], sort=True)["singular_value"].median()
    trials = frame.groupby("init")["trial"].nunique()
    out = {}
    for init in inits:
        if init not in trials.index:
            out[init] = (np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros((0, 0)), 0)
            continue
        table = medians.xs(init, level="init").unstack("k").sort_index().sort_index(axis=1)
        out[init] = (table.index.to_numpy(dtype=int), table.columns.to_numpy(dtype=int),
                     table.to_numpy(dtype=np.float64), int(trials[init]))
    return out


def _floor(sigma: np.ndarray, dtype: str | None) -> np.ndarray:
    """σ_1·√eps per layer: below it a Gram-matrix spectrum is noise (DESIGN.md)."""
    top = sigma[:, 0] if sigma.shape[1] else np.full(sigma.shape[0], np.nan)
    return top * sqrt_eps(dtype)


def _positive(a: np.ndarray) -> np.ndarray:
    # A log axis cannot show 0; a gap reads as "nothing here", which is the truth.
    return np.where(a > 0, a, np.nan)


def _first_lost_layer(layers: np.ndarray, sigma: np.ndarray, all_layers: list[int]) -> int | None:
    """The first layer from which an initializer has no finite singular value (overflow), or None."""
    finite = np.isfinite(sigma).any(axis=1) if sigma.size else np.zeros(len(layers), dtype=bool)
    have = {int(layer) for layer, ok in zip(layers, finite) if ok}
    missing = [layer for layer in all_layers if layer not in have]
    if not missing or any(layer > missing[0] for layer in have):
        return None
    return missing[0]


def spectrum_animation_figure(spectra, *, config=None):
    """Singular values σ_k against k, animated over layers, one curve per initializer.

    spectra: the tidy table (init, trial, layer, k, singular_value).
    Each frame is named by layer and holds exactly the figure's traces (one
    spectrum and one noise-floor line per initializer), so a frame replaces
    every series and none lingers from the previous layer. The y axis is
    logarithmic and fixed across layers so that changes of scale show.
    `config` (a Config or mapping) gives the dtype for the floor σ_1·√eps.
    Returns a `plotly.graph_objects.Figure` (`spectrum_animation_spec` as plain data).
    """
    return as_figure(spectrum_animation_spec(spectra, config=config))


def spectrum_animation_spec(spectra, *, config=None, modules: LayerNames | None = None) -> dict:
    """`spectrum_animation_figure` as a plain plotly spec (dicts and numpy arrays); `modules` (a model's
    `report.modules`) label the slider, the title and the hovers with module names."""
    config = config_dict(config)
    inits = inits_of(spectra, config)
    if not inits:
        return empty_spec("No spectra in this run.")
    data = all_median_spectra(spectra, inits)
    layers = sorted({int(layer) for d in data.values() for layer in d[0]})
    dtype = config.get("dtype")
    trials = max(d[3] for d in data.values())
    heading = f"Singular values of the centred states (median over {trials} trial{'s' if trials != 1 else ''})"

    def title(layer: int) -> dict:
        lost = [label(init) for init in inits
                if not np.isfinite(data[init][2][data[init][0] == layer]).any()]
        note = f"; non-finite or absent: {', '.join(lost)}" if lost else ""
        where = f"layer {layer}" if modules is None else label(modules.where(layer))
        return {"text": f"{heading}, {where}{note}", "x": 0.01}

    frames = [{"name": str(layer), "data": _spectrum_traces(data, inits, layer, dtype, modules),
               "traces": list(range(2 * len(inits))), "layout": {"title": title(layer)}}
              for layer in layers]
    values = np.concatenate([_positive(d[2]).ravel() for d in data.values()])
    floors = np.concatenate([_floor(d[2], dtype) for d in data.values()])
    finite = np.concatenate([values, floors])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    y_range = ([math.log10(finite.min()) - 0.3, math.log10(finite.max()) + 0.3] if finite.size else None)
    layout = {
        "template": template(),
        "height": 520,
        "margin": {"l": 70, "r": 10, "t": 60, "b": 110},
        "title": title(layers[0]),
        "xaxis": {"title": {"text": "component k"}},
        "yaxis": {"title": {"text": "singular value σ_k"}, "type": "log", "range": y_range, "autorange": False},
        "sliders": [layer_slider(layers, labels=None if modules is None else [modules.step(layer) for layer in layers])],
        "updatemenus": [play_buttons()],
        "meta": {"layers": layers},
    }
    return {"data": frames[0]["data"], "layout": layout, "frames": frames}


def _spectrum_traces(data: dict, inits: list[str], layer: int, dtype, modules: LayerNames | None = None) -> list[dict]:
    """One layer's traces: each initializer's spectrum and its noise floor σ₁·√eps."""
    where = f"layer {layer}" if modules is None else label(modules.where(layer))
    out = []
    for init in inits:
        d_layers, ks, sigma, trials = data[init]
        where = np.flatnonzero(d_layers == layer)
        row = sigma[where[0]] if len(where) else np.full(len(ks), np.nan)
        floor = _floor(row[None, :], dtype)[0] if len(ks) else math.nan
        c = colour(inits, init)
        out.append({
            "type": "scatter", "x": ks.astype(np.int32), "y": compact(_positive(row)), "mode": "lines+markers",
            "name": label(init), "legendgroup": init, "line": {"color": c, "width": 2},
            "marker": {"size": 4, "color": c},
            "hovertemplate": f"{label(init)}<br>{where}<br>k %{{x}}<br>σ %{{y:.4g}}<extra></extra>",
        })
        out.append({
            "type": "scatter", "x": [1, int(ks.max()) if len(ks) else 1], "y": compact([floor, floor]),
            "mode": "lines", "name": f"{label(init)}: noise floor σ₁·√eps", "legendgroup": init,
            "showlegend": True, "line": {"color": c, "width": 1, "dash": "dot"},
            "hovertemplate": f"{label(init)} noise floor σ₁·√eps = %{{y:.3g}}<extra></extra>",
        })
    return out


def spectrum_heatmap_figure(spectra, *, config=None):
    """log10 σ over layer × component, one panel per initializer, with the noise floor marked.

    The white line marks, at each layer, how many components lie above the
    Gram-matrix noise floor σ_1·√eps (DESIGN.md): the cells above it are noise.
    Returns a `plotly.graph_objects.Figure` (`spectrum_heatmap_spec` as plain data).
    """
    return as_figure(spectrum_heatmap_spec(spectra, config=config))


def _shade_lost(layout: dict, shapes: list, lost: int, last: int, xref: str, yref: str) -> None:
    """Grey out one panel from its first non-finite layer on, with a note saying so."""
    shapes.append({"type": "rect", "x0": lost - 0.5, "x1": last + 0.5, "xref": xref, "y0": 0,
                   "y1": 1, "yref": f"{yref} domain", "fillcolor": "#bbb", "opacity": 0.35,
                   "line": {"width": 0}})
    layout["annotations"].append({"text": f"non-finite from layer {lost}", "font": {"size": 10},
                                  "showarrow": False, "x": lost - 0.5, "xanchor": "left", "xref": xref,
                                  "y": 1, "yanchor": "top", "yref": f"{yref} domain"})


def spectrum_heatmap_spec(spectra, *, config=None, modules: LayerNames | None = None) -> dict:
    """`spectrum_heatmap_figure` as a plain plotly spec; a model's `modules` name the layer axis and hovers."""
    config = config_dict(config)
    inits = inits_of(spectra, config)
    if not inits:
        return empty_spec("No spectra in this run.")
    dtype = config.get("dtype")
    data = all_median_spectra(spectra, inits)
    logs = {}
    for init, (_, _, sigma, _) in data.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[init] = np.log10(_positive(sigma))
    all_layers = sorted({int(layer) for d in data.values() for layer in d[0]})
    every = np.concatenate([v.ravel() for v in logs.values()])
    every = every[np.isfinite(every)]
    cols = min(len(inits), 3)
    rows = math.ceil(len(inits) / cols)
    layout = grid(rows, cols, [label(i) for i in inits], horizontal_spacing=0.06, vertical_spacing=0.12)
    traces, shapes = [], []
    for i, init in enumerate(inits):
        layers, ks, sigma, _ = data[init]
        xref, yref = axis_names(i)
        traces.append({
            "type": "heatmap", "x": _layer_axis(layers, modules), "y": ks.astype(np.int32), "z": compact(logs[init].T),
            "coloraxis": "coloraxis", "xaxis": xref, "yaxis": yref,
            "hovertemplate": f"{label(init)}<br>layer %{{x}}<br>k %{{y}}<br>σ = 10^%{{z:.2f}}<extra></extra>",
        })

        floor = _floor(sigma, dtype)
        above = np.sum(sigma > floor[:, None], axis=1).astype(np.float64)
        above[~np.isfinite(floor)] = np.nan
        traces.append({
            "type": "scatter", "x": _layer_axis(layers, modules), "y": above + 0.5, "mode": "lines",
            "line": {"color": "white", "width": 2, "dash": "dash", "shape": "hvh"}, "name": "noise floor σ₁·√eps",
            "showlegend": False, "xaxis": xref, "yaxis": yref,
            "hovertemplate": "layer %{x}: components above the noise floor<extra></extra>",
        })
        lost = _first_lost_layer(layers, sigma, all_layers)
        if lost is not None:
            _shade_lost(layout, shapes, lost, all_layers[-1], xref, yref)
        layout["xaxis" + xref[1:]].update(title={"text": "layer"}, range=[all_layers[0] - 0.5, all_layers[-1] + 0.5],
                                          **_name_ticks(modules))
        layout["yaxis" + yref[1:]]["title"] = {"text": "component k"}
    lo, hi = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
    ticks = list(range(math.floor(lo), math.ceil(hi) + 1))
    ticks = ticks[::max(1, len(ticks) // 8)]
    layout.update(
        template=template(),
        height=380 * rows + 80,
        margin={"l": 70, "r": 10, "t": 70, "b": 50},
        title={"text": "Spectrum heat map: log₁₀ σ_k by layer and component (dashed: noise floor σ₁·√eps)",
               "x": 0.01},
        coloraxis={"colorscale": colorscale("Magma"), "cmin": lo, "cmax": hi,
                   "colorbar": {"title": {"text": "σ_k"}, "tickvals": ticks, "ticktext": [f"1e{t}" for t in ticks]}},
    )
    if modules is not None:  # room for the module names, slanted under the axis
        layout.update(height=layout["height"] + 100, margin=dict(layout["margin"], b=150))
    if shapes:
        layout["shapes"] = shapes
    return {"data": traces, "layout": layout}


def _layer_axis(layers: np.ndarray, modules: LayerNames | None):
    """The layer axis' values: layer numbers, or for a model categories "12 layer1.0.conv1" (hovers name the
    module; a category's position is its index, which is the layer, as a model's layers run 0..L)."""
    if modules is None:
        return layers.astype(np.int32)
    return [label(modules.step(layer)) for layer in layers]


def _name_ticks(modules: LayerNames | None) -> dict:
    """A layer axis whose ticks are a model's module names (the readable selection of a deep model)."""
    if modules is None:
        return {}
    at, texts = spaced_ticks(modules, 1 / 60)
    return {"type": "category", "tickmode": "array", "tickvals": [label(modules.step(layer)) for layer in at],
            "ticktext": [label(t) for t in texts], "tickangle": -50, "tickfont": {"size": 10}, "automargin": True}
