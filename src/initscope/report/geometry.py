"""The data at every layer, in 3D: samples on each layer's top three principal components."""

from __future__ import annotations

import math

import numpy as np

from initscope.report._common import (
    as_figure, colorscale, compact, empty_spec, grid, inits_of, label, layer_slider, play_buttons, template,
)
from initscope.report.modules import LayerNames
from initscope.study.records import config_dict

__all__ = ["layer_projection_figure", "layer_projection_spec", "projection_cube"]

MAX_POINTS = 2000
_PCS = ("pc1", "pc2", "pc3")


def projection_cube(projections, init: str, samples: np.ndarray | None = None):
    """One initializer's projections as arrays.

    Returns (layers (L+1,), sample ids (n,), coords (L+1, n, 3), target (n,)),
    trial 0 only (the lowest trial present). Missing entries are NaN.
    `samples` restricts to those sample ids.
    """
    import pandas as pd

    rows = projections[projections["init"].astype(str) == init]
    rows = rows[rows["trial"] == rows["trial"].min()]
    layers = np.sort(rows["layer"].unique()).astype(int)
    ids = np.sort(rows["sample"].unique()).astype(int) if samples is None else np.asarray(samples, dtype=int)
    index = pd.MultiIndex.from_product([layers, ids], names=["layer", "sample"])
    coords = rows.set_index(["layer", "sample"])[list(_PCS)].reindex(index).to_numpy(dtype=np.float64)
    by_sample = rows.groupby("sample")["target"].first().reindex(ids)
    return layers, ids, coords.reshape(len(layers), len(ids), 3), by_sample.to_numpy(dtype=np.float64)


def chosen_samples(projections, max_points: int, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """A fixed random subset of at most `max_points` sample ids, the same at every layer.

    Returns (ids, total number of samples).
    """
    ids = np.sort(projections["sample"].unique()).astype(int)
    if len(ids) <= max_points:
        return ids, len(ids)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=max_points, replace=False)), len(ids)


def layer_projection_figure(projections, *, max_points: int = MAX_POINTS, seed: int = 0, config=None):
    """Samples on each layer's top-3 PCs, one 3D view per initializer, with a layer slider.

    projections: the tidy table (init, trial, layer, sample, pc1, pc2, pc3, target).
    Points are coloured by target (one shared colour bar). Frames are named by
    layer (one per layer, 0..L) and each replaces every view's points. Two
    buttons switch the axes between fitting each layer and one fixed range
    across all layers, so that growth or shrinkage of scale shows.
    At most `max_points` samples are drawn (a fixed random subset drawn with
    `seed`); `layout.meta` records how many were shown of how many.
    `config` (a Config or mapping) orders the initializers.
    Returns a `plotly.graph_objects.Figure` (`layer_projection_spec` as plain data).
    """
    return as_figure(layer_projection_spec(projections, max_points=max_points, seed=seed, config=config))


def layer_projection_spec(projections, *, max_points: int = MAX_POINTS, seed: int = 0, config=None,
                          modules: LayerNames | None = None) -> dict:
    """`layer_projection_figure` as a plain plotly spec; a model's `modules` name the slider's, titles' layers."""
    if max_points < 1:
        raise ValueError(
            f"The 'max_points' parameter of layer_projection_figure must be >= 1. Got {max_points!r} instead."
        )
    config = config_dict(config)
    inits = inits_of(projections, config)
    if not inits:
        return empty_spec("No projections in this run.")
    ids, total = chosen_samples(projections, max_points, seed=seed)
    cubes = {init: projection_cube(projections, init, ids) for init in inits}
    layers = sorted({int(layer) for cube in cubes.values() for layer in cube[0]})
    cols = min(len(inits), 3)
    rows = math.ceil(len(inits) / cols)
    layout = grid(rows, cols, [label(i) for i in inits], horizontal_spacing=0.02, vertical_spacing=0.06, scene=True)
    targets = np.concatenate([cube[3] for cube in cubes.values()])
    data = []
    for i, init in enumerate(inits):
        trace = _frame_trace(init, cubes[init], layers[0], modules)
        trace.update(type="scatter3d", mode="markers", name=label(init), showlegend=False,
                     scene="scene" if i == 0 else f"scene{i + 1}",
                     marker={"size": 3, "color": compact(cubes[init][3]), "coloraxis": "coloraxis", "opacity": 0.85},
                     customdata=np.column_stack([ids, compact(cubes[init][3])]).astype(np.float32))
        data.append(trace)
    subplot_titles = layout["annotations"]
    frames = [{"name": str(layer), "data": [_frame_trace(init, cubes[init], layer, modules) for init in inits],
               "traces": list(range(len(inits))),
               "layout": {"annotations": _titles(subplot_titles, inits, cubes, layer, modules)}}
              for layer in layers]
    layout["annotations"] = _titles(subplot_titles, inits, cubes, layers[0], modules)
    fixed, fitted = _scene_ranges(inits, cubes)
    for key, value in fitted.items():  # what `update_layout(fitted)` does with its dotted keys
        _set_path(layout, key, value)
    finite = np.isfinite(targets).any()
    shown = f"showing {len(ids):,} of {total:,} samples (a fixed random subset), " if len(ids) < total else ""
    layout.update(
        template=template(),
        height=460 * rows + 90,
        margin={"l": 10, "r": 10, "t": 70, "b": 110},
        title={"text": f"Samples on each layer's top 3 principal components ({shown}trial 0)", "x": 0.01},
        coloraxis={"colorscale": colorscale("Viridis"), "cmin": float(np.nanmin(targets)) if finite else None,
                   "cmax": float(np.nanmax(targets)) if finite else None,
                   "colorbar": {"title": {"text": "target"}, "len": 0.8}},
        sliders=[layer_slider(layers, labels=None if modules is None else [modules.step(layer) for layer in layers])],
        updatemenus=[
            play_buttons(),
            {
                "type": "buttons", "direction": "left", "showactive": True, "active": 0,
                "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom", "pad": {"b": 18},
                "buttons": [
                    {"label": "axes: fit each layer", "method": "relayout", "args": [fitted]},
                    {"label": "axes: one range for all layers", "method": "relayout", "args": [fixed]},
                ],
            },
        ],
        meta={"shown": int(len(ids)), "samples": int(total), "layers": layers},
    )
    return {"data": data, "layout": layout, "frames": frames}


def _set_path(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _axis(coords: np.ndarray, cube_layers: np.ndarray, layer: int, pc: int) -> np.ndarray:
    where = np.flatnonzero(cube_layers == layer)
    if not len(where):
        return np.full(coords.shape[1], np.nan, dtype=np.float32)
    return compact(coords[where[0], :, pc])


def _frame_trace(init: str, cube, layer: int, modules: LayerNames | None = None) -> dict:
    cube_layers, _, coords, _ = cube
    return {"type": "scatter3d", "x": _axis(coords, cube_layers, layer, 0), "y": _axis(coords, cube_layers, layer, 1),
            "z": _axis(coords, cube_layers, layer, 2), "hovertemplate": _hover(init, layer, modules)}


def _hover(init: str, layer: int, modules: LayerNames | None = None) -> str:
    where = f"layer {layer}" if modules is None else label(modules.where(layer))
    return (
        "sample %{customdata[0]:d}<br>target %{customdata[1]:.4g}<br>"
        f"{where}<br>pc1 %{{x:.4g}}, pc2 %{{y:.4g}}, pc3 %{{z:.4g}}<extra>{label(init)}</extra>"
    )


def _spread(coords: np.ndarray) -> float:
    """Root mean square distance from the origin of the projected points."""
    finite = np.isfinite(coords).all(axis=-1)
    if not finite.any():
        return math.nan
    return float(np.sqrt(np.mean(np.sum(coords[finite] ** 2, axis=-1))))


def _titles(subplot_titles: list[dict], inits, cubes, layer: int, modules: LayerNames | None = None) -> list[dict]:
    """Subplot titles for one layer: the initializer and its spread against the input's."""
    out = []
    for annotation, init in zip(subplot_titles[: len(inits)], inits):
        cube_layers, _, coords, _ = cubes[init]
        where = np.flatnonzero(cube_layers == layer)
        base = _spread(coords[0]) if len(cube_layers) else math.nan
        spread = _spread(coords[where[0]]) if len(where) else math.nan
        if layer == 0:
            note = "the input"
        elif not math.isfinite(spread):
            note = "non-finite (overflow)"
        elif base > 0:
            note = f"spread {spread / base:.3g}× the input's"
        else:
            note = f"spread {spread:.3g}"
        entry = dict(annotation)
        where = f"layer {layer}" if modules is None else label(modules.where(layer))
        entry["text"] = f"<b>{label(init)}</b>, {where}: {note}"
        out.append(entry)
    return out


def _scene_ranges(inits, cubes) -> tuple[dict, dict]:
    """Layout updates for (one cube range per initializer over all layers, per-layer fit)."""
    fixed, fitted = {}, {}
    for i, init in enumerate(inits):
        scene = "scene" if i == 0 else f"scene{i + 1}"
        coords = cubes[init][2]
        finite = coords[np.isfinite(coords)]
        half = float(np.max(np.abs(finite))) * 1.05 if finite.size and np.max(np.abs(finite)) > 0 else 1.0
        fixed[f"{scene}.aspectmode"] = "cube"
        fitted[f"{scene}.aspectmode"] = "data"
        for axis, title in zip("xyz", _PCS):
            fixed[f"{scene}.{axis}axis.range"] = [-half, half]
            fixed[f"{scene}.{axis}axis.autorange"] = False
            fitted[f"{scene}.{axis}axis.autorange"] = True
            fitted[f"{scene}.{axis}axis.title.text"] = title
            fixed[f"{scene}.{axis}axis.title.text"] = title
    return fixed, fitted


def _empty(message: str):
    """A figure that only says `message`."""
    return as_figure(empty_spec(message))
