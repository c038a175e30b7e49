"""Static PNGs and GIFs of the report's figures, drawn with matplotlib (no browser, no kaleido).

Figures are built on `matplotlib.figure.Figure` directly rather than pyplot,
so nothing here touches matplotlib's global state or backend.

An inspected model's figures name its modules (`report.modules`, as the HTML
report does): layer axes are ticked with the module names of the readable
selection (a deep model's block outputs), spaced so slanted names do not
overprint, and titles say "layer 12 (layer1.0.conv1, Conv2d)". A deep model's
depth panels draw the block outputs boldly and every layer faintly, since a
PNG has no switch between them. A run of the MLP keeps its layer numbers.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np

from initscope.report._common import PALETTE, inits_of, sqrt_eps
from initscope.report.depth import _metrics_present, display_summary, log_axis, panel_title
from initscope.report.geometry import MAX_POINTS, chosen_samples, projection_cube
from initscope.report.jacobian import bin_grid, density_by_layer, measured_log_rms, theory_rms
from initscope.report.modules import LayerNames, layer_names, shown_layers, spaced_ticks
from initscope.report.spectra import _floor, _positive, median_spectra
from initscope.report.tables import RunTables
from initscope.study.overlays import theory_lines
from initscope.study.records import config_dict
from initscope.report.weights import _theory, norm_histogram
from initscope.study.atomic import atomic_file, atomic_write

__all__ = ["write_static"]

_DPI = 100
_GIF_DPI = 72
_GIF_FPS = 2
# Slanted names need their ticks a font height / sin(45°) apart: ≥ 16 px of a 4.2-inch panel's ~330 px.
_TICK_SHARE = 1 / 20
_TICK_ANGLE = 45
_TICK_POINTS = 6.5


def _colour(inits: list[str], init: str) -> str:
    return PALETTE[inits.index(init) % len(PALETTE)]


def _save_png(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    atomic_write(path, buf.getvalue())
    return path


def _save_gif(fig, path: Path, frames: list, draw, animated: tuple = ()) -> Path:
    """Draw each frame with `draw(frame)` and write an animated GIF.

    With `animated` artists (the only ones `draw` changes), the rest of the
    figure is rendered once, layout included, and each frame repaints only
    those over it; a full redraw re-lays out every tick label (log axes parse
    their labels as mathtext), ~0.1–0.2 s a frame. Otherwise every frame is a
    full redraw (PillowWriter).
    """
    if animated:
        return _save_blitted_gif(fig, path, frames, draw, animated)
    from matplotlib.animation import PillowWriter

    writer = PillowWriter(fps=_GIF_FPS)
    with atomic_file(path) as tmp, writer.saving(fig, tmp, dpi=_GIF_DPI):
        for frame in frames:
            draw(frame)
            writer.grab_frame()
    return path


def _save_blitted_gif(fig, path: Path, frames: list, draw, animated: tuple) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(_GIF_DPI)
    for artist in animated:
        artist.set_animated(True)  # left out of the full draw: the background holds the static parts only
    draw(frames[0])
    canvas.draw()
    fig.set_layout_engine("none")  # keep the layout of that draw
    background = canvas.copy_from_bbox(fig.bbox)
    images = []
    for frame in frames:
        draw(frame)
        canvas.restore_region(background)
        for artist in animated:
            fig.draw_artist(artist)
        width, height = canvas.get_width_height()
        images.append(Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).copy())
    with atomic_file(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / _GIF_FPS),
                       loop=0)
    return path


def _where(modules: LayerNames | None, layer: int) -> str:
    """A title's layer: "layer 12", or for a model "layer 12 (layer1.0.conv1, Conv2d)"."""
    return f"layer {int(layer)}" if modules is None else modules.where(layer)


def _name_ticks(ax, modules: LayerNames | None) -> None:
    """Tick a layer x axis (drawn already) with the module names of the readable selection; a run keeps numbers."""
    if modules is None:
        return
    lo, hi = sorted(ax.get_xlim())
    ticks = [(at, text) for at, text in zip(*spaced_ticks(modules, _TICK_SHARE)) if lo <= at <= hi]
    ax.set_xticks([at for at, _ in ticks], [text for _, text in ticks], rotation=_TICK_ANGLE, ha="right",
                  rotation_mode="anchor", fontsize=_TICK_POINTS)  # outside the limits: set_xticks would widen them


def _name_colour_bar(bar, modules: LayerNames | None) -> None:
    """A colour bar of layers ticked with module names, as many as its height holds (horizontal text)."""
    if modules is None:
        return
    at, texts = spaced_ticks(modules, 1 / 12)
    bar.set_ticks(at, labels=texts, fontsize=_TICK_POINTS)


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def _layer_points(cube, layer: int) -> np.ndarray | None:
    """(n, 3) finite-or-NaN coordinates of one layer, or None when the layer is absent or all NaN."""
    cube_layers, _, coords, _ = cube
    where = np.flatnonzero(cube_layers == layer)
    if not len(where) or not np.isfinite(coords[where[0]]).any():
        return None
    return coords[where[0]]


def _projection_axis(fig, position, init: str, cube, layer: int, norm, modules: LayerNames | None):
    """One 3D view; returns (axes, scatter, overflow note) for later frames to update."""
    ax = fig.add_subplot(*position, projection="3d")
    target = cube[3]
    scatter = ax.scatter([], [], [], c=[], cmap="viridis", norm=norm, s=6, depthshade=False)
    scatter.set_array(target)
    note = ax.text2D(0.25, 0.5, "", transform=ax.transAxes)
    for axis, name in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), ("pc1", "pc2", "pc3")):
        axis(name, fontsize=7)
    ax.tick_params(labelsize=6)
    view = (ax, scatter, note)
    _show_layer(view, init, cube, layer, modules)
    return view


def _show_layer(view, init: str, cube, layer: int, modules: LayerNames | None) -> None:
    ax, scatter, note = view
    xyz = _layer_points(cube, layer)
    ax.set_title(textwrap.fill(f"{init}, {_where(modules, layer)}", 40), fontsize=9)  # a long name: two lines
    if xyz is None:
        scatter._offsets3d = (np.array([]), np.array([]), np.array([]))
        note.set_text("non-finite (overflow)")
        return
    note.set_text("")
    scatter._offsets3d = (xyz[:, 0], xyz[:, 1], xyz[:, 2])
    for pc, setter in enumerate((ax.set_xlim, ax.set_ylim, ax.set_zlim)):
        lo, hi = np.nanmin(xyz[:, pc]), np.nanmax(xyz[:, pc])
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-12) * 0.05 + 1e-12
        setter(lo - pad, hi + pad)


def _projections(tables: RunTables, folder: Path, modules: LayerNames | None) -> list[Path]:
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    proj = tables.projections
    inits = inits_of(proj, tables.config)
    if not inits:
        return []
    ids, _ = chosen_samples(proj, MAX_POINTS, seed=int(tables.config.get("seed") or 0))
    cubes = {init: projection_cube(proj, init, ids) for init in inits}
    layers = sorted({int(layer) for cube in cubes.values() for layer in cube[0]})
    targets = np.concatenate([c[3] for c in cubes.values()])
    finite = targets[np.isfinite(targets)]
    norm = Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    # A deep model's middle layer is likely inside a block; its block outputs are the states worth a view.
    among = [layer for layer in modules.selection if layer in layers] if modules is not None else []
    among = among if len(among) >= 2 else layers
    shown = sorted({among[0], among[min(1, len(among) - 1)], among[len(among) // 2], among[-1]})

    fig = Figure(figsize=(3.2 * len(shown) + 0.8, 3.0 * len(inits)))
    for r, init in enumerate(inits):
        for c, layer in enumerate(shown):
            _projection_axis(fig, (len(inits), len(shown), r * len(shown) + c + 1), init, cubes[init], layer, norm,
                             modules)
    _colour_bar(fig, norm)
    fig.suptitle("Samples on each layer's top 3 principal components (colour: target)")
    out = [_save_png(fig, folder / "layers_3d.png")]

    # The GIF keeps its axes and updates the points: rebuilding 3D axes per frame is slow.
    rows, cols = _grid(len(inits), 3)
    gif = Figure(figsize=(4.2 * cols + 0.8, 4.0 * rows))
    views = [_projection_axis(gif, (rows, cols, i + 1), init, cubes[init], layers[0], norm, modules)
             for i, init in enumerate(inits)]
    _colour_bar(gif, norm)

    def draw(layer: int) -> None:  # each view's title names the layer
        for view, init in zip(views, inits):
            _show_layer(view, init, cubes[init], layer, modules)

    out.append(_save_gif(gif, folder / "layers_3d.gif", layers, draw))
    return out


def _colour_bar(fig, norm) -> None:
    # ~0.65 inch above the top row holds the suptitle and the views' (up to two-line) titles apart
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.04, top=1 - 0.65 / fig.get_figheight(), wspace=0.12,
                        hspace=0.18)
    fig.colorbar(_mappable("viridis", norm), cax=fig.add_axes((0.925, 0.25, 0.015, 0.5)), label="target")


def _weight_norms(tables: RunTables, folder: Path, modules: LayerNames | None) -> list[Path]:
    from matplotlib.figure import Figure

    wn = tables.weight_norms
    inits = inits_of(wn, tables.config)
    if not inits:
        return []
    kinds = [k for k in ("input", "internal") if (wn["kind"] == k).any()] or sorted(set(wn["kind"]))
    fig = Figure(figsize=(4.5 * len(kinds), 2.6 * len(inits)), layout="constrained")
    axes = fig.subplots(len(inits), len(kinds), squeeze=False)
    for i, init in enumerate(inits):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            norms = wn.loc[(wn["init"].astype(str) == init) & (wn["kind"] == kind), "norm"].to_numpy(float)
            edges, density = norm_histogram(norms)
            ax.bar(edges[:-1], density, width=np.diff(edges), align="edge", color=_colour(inits, init), alpha=0.6)
            theory = _theory(tables.config, init, kind, edges, float(density.max()) if density.size else 1.0)
            if theory is not None:
                ax.plot(theory[0], theory[1], color="black", lw=1.5, label="theory")
                ax.legend(fontsize=7)
            ax.axvline(1.0, color="#444", ls=":", lw=1)
            ax.set_title(f"{init}, {kind}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[i][0].set_ylabel("density", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("weight-vector 2-norm", fontsize=8)
    fig.suptitle("Each neuron's weight-vector 2-norm (dotted: norm 1)")
    return [_save_png(fig, folder / "weight_norms.png")]


def _spectra(tables: RunTables, folder: Path, modules: LayerNames | None) -> list[Path]:
    """spectra.png, spectrum_heatmap.png and spectra.gif, on one y range (median spectra over trials)."""
    sp = tables.spectra
    inits = inits_of(sp, tables.config)
    if not inits:
        return []
    dtype = tables.config.get("dtype")
    data = {init: median_spectra(sp, init) for init in inits}
    every = np.concatenate([_positive(d[2]).ravel() for d in data.values()])
    every = every[np.isfinite(every)]
    ylim = (every.min() / 2, every.max() * 2) if every.size else (1e-3, 1)
    return [_spectra_png(inits, data, ylim, folder, modules),
            _spectrum_heatmap_png(inits, data, ylim, dtype, folder, modules),
            _spectra_gif(inits, data, ylim, dtype, folder, modules)]


def _spectra_png(inits: list[str], data: dict, ylim: tuple, folder: Path, modules: LayerNames | None) -> Path:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    rows, cols = _grid(len(inits), 3)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, init in zip(axes, inits):
        layers, ks, sigma, _ = data[init]
        cmap, lnorm = colormaps["viridis"], Normalize(layers.min(), max(layers.max(), layers.min() + 1))
        for layer, row in zip(layers, sigma):
            ax.plot(ks, _positive(row), color=cmap(lnorm(layer)), lw=1)
        ax.set_yscale("log")
        ax.set_ylim(*ylim)
        ax.set_title(init, fontsize=9)
        ax.set_xlabel("component k", fontsize=8)
        ax.set_ylabel("σ_k", fontsize=8)
        _name_colour_bar(fig.colorbar(_mappable(cmap, lnorm), ax=ax, label="layer"), modules)
    for ax in axes[len(inits):]:
        ax.set_visible(False)
    fig.suptitle("Singular values at every layer (median over trials)")
    return _save_png(fig, folder / "spectra.png")


def _spectrum_heatmap_png(inits: list[str], data: dict, ylim: tuple, dtype, folder: Path,
                          modules: LayerNames | None) -> Path:
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    rows, cols = _grid(len(inits), 3)
    heat = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    haxes = heat.subplots(rows, cols, squeeze=False).ravel()
    lognorm = LogNorm(*ylim)
    for ax, init in zip(haxes, inits):
        layers, ks, sigma, _ = data[init]
        mesh = ax.pcolormesh(layers, ks, np.ma.masked_invalid(_positive(sigma).T), norm=lognorm,
                             cmap="magma", shading="nearest")
        above = np.sum(sigma > _floor(sigma, dtype)[:, None], axis=1)
        ax.step(layers, above + 0.5, where="mid", color="white", ls="--", lw=1.2, label="noise floor σ₁·√eps")
        ax.set_title(init, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("component k", fontsize=8)
        _name_ticks(ax, modules)
        heat.colorbar(mesh, ax=ax, label="σ_k")
    for ax in haxes[len(inits):]:
        ax.set_visible(False)
    heat.suptitle("Spectrum heat map (dashed: noise floor)")
    return _save_png(heat, folder / "spectrum_heatmap.png")


def _spectra_gif(inits: list[str], data: dict, ylim: tuple, dtype, folder: Path, modules: LayerNames | None) -> Path:
    from matplotlib.figure import Figure

    all_layers = sorted({int(layer) for d in data.values() for layer in d[0]})
    anim = Figure(figsize=(6, 4), layout="constrained")
    ax = anim.add_subplot()
    ax.set_yscale("log")
    ax.set_ylim(*ylim)
    ax.set_xlim(0.5, max(len(d[1]) for d in data.values()) + 0.5)
    ax.set_xlabel("component k")
    ax.set_ylabel("σ_k")
    # The artists are made once and only their data change per frame (drawn over a background rendered once,
    # `_save_gif`): clearing and redrawing the axes took ~0.2 s a frame, 14 s for a ResNet-18's 61 layers.
    curves = {init: ax.plot([], [], color=_colour(inits, init), lw=1.5, marker=".", label=init)[0] for init in inits}
    floors = {init: ax.axhline(1.0, color=_colour(inits, init), ls=":", lw=1) for init in inits}
    ax.legend(fontsize=8, loc="upper right")
    title = ax.set_title(" ")

    def draw(layer: int) -> None:
        for init in inits:
            layers, ks, sigma, _ = data[init]
            where = np.flatnonzero(layers == layer)
            shown = bool(len(where))
            curves[init].set_visible(shown)
            floors[init].set_visible(shown)
            if shown:
                row = sigma[where[0]]
                curves[init].set_data(ks, _positive(row))
                floors[init].set_ydata([row[0] * sqrt_eps(dtype)] * 2)
        title.set_text(titles[layer])

    # Every title as tall as the tallest (blank lines above it): the layout, made once, leaves room for them all.
    titles = {layer: f"layer {layer} (dotted: noise floor)" if modules is None
              else textwrap.fill(f"{modules.where(layer)}; dotted: noise floor", 60) for layer in all_layers}
    lines = max(t.count("\n") for t in titles.values())
    titles = {layer: "\n" * (lines - t.count("\n")) + t for layer, t in titles.items()}
    return _save_gif(anim, folder / "spectra.gif", all_layers, draw,
                     animated=(*curves.values(), *floors.values(), title))


def _mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def _model_part(ax, part, modules: LayerNames | None, colour: str):
    """The rows of one initializer's summary a panel draws boldly: every layer for a run or a small model; for a
    deep model its default selection (`shown_layers`), with every finite layer drawn faintly behind it."""
    if modules is None or not modules.deep:
        return part
    finite = part[np.isfinite(part["median"].to_numpy(dtype=float))]
    ax.plot(finite["layer"], finite["median"], color=colour, lw=0.8, alpha=0.35)
    return finite[finite["layer"].isin(shown_layers(modules, finite["layer"]))]


def _metrics(tables: RunTables, folder: Path, modules: LayerNames | None) -> list[Path]:
    from matplotlib.figure import Figure

    metrics = tables.metrics
    names = _metrics_present(metrics)
    if not names:
        return []
    config = config_dict(tables.config, metrics)
    inits = inits_of(metrics, config)
    lines = theory_lines(tables.theory)
    rows, cols = _grid(len(names), 3)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, names):
        summary = display_summary(metrics, metric)
        for init in inits:
            c = _colour(inits, init)
            part = _model_part(ax, summary[summary["init"].astype(str) == init].sort_values("layer"), modules, c)
            ax.fill_between(part["layer"], part["lo"], part["hi"], color=c, alpha=0.2, lw=0)
            ax.plot(part["layer"], part["median"], color=c, marker=".", lw=1.5, label=init)
            theory = lines.get(metric, {}).get(init)
            if theory is not None:
                ax.plot(theory[0], theory[1], color=c, ls="--", lw=1.2)
        if log_axis(metric, summary[["median", "lo", "hi"]].to_numpy(dtype=float)):
            ax.set_yscale("log")
        ax.set_title(panel_title(metric), fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
        _name_ticks(ax, modules)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    shown = ""
    if modules is not None and modules.deep:
        shown = (f"\nbold: the {len(modules.selection)} block outputs of {len(modules.names)} layers "
                 "(or the weight layers where a metric skips most of them), faint: every layer")
    fig.suptitle("Metrics over depth: median, 10–90% band, dashed: theory" + shown)
    return [_save_png(fig, folder / "metrics_depth.png")]


def _jacobian_panel(ax, tables: RunTables, hidden, bins: np.ndarray, init: str, line_colour: str, norm,
                    modules: LayerNames | None):
    """One initializer's share of log10 σ per layer (log colour), measured √jacobian_sq_mean and theory √χ₁^l.

    Returns (the mesh, the reason there is no theory line or None).
    """
    from matplotlib.patheffects import withStroke
    from matplotlib.ticker import MaxNLocator

    layers, share = density_by_layer(hidden, init, bins)
    full = np.arange(max(1, int(hidden["layer"].min())), int(hidden["layer"].max()) + 1)  # gaps: blank columns
    grid = np.full((len(bins), len(full)), np.nan)
    with np.errstate(divide="ignore"):
        grid[:, np.searchsorted(full, layers)] = np.where(share > 0, np.log10(np.where(share > 0, share, 1)), np.nan)
    step = float(bins[1] - bins[0]) if len(bins) > 1 else 0.1
    mesh = ax.pcolormesh(np.append(full, full[-1] + 1) - 0.5, np.append(bins, bins[-1] + step) - step / 2, grid,
                         cmap="viridis", norm=norm, shading="flat")
    x, y = measured_log_rms(tables.metrics, init)
    keep = (x > 0) & np.isfinite(y)
    ax.plot(x[keep], y[keep], color="white", lw=2, label="measured √jacobian_sq_mean",
            path_effects=[withStroke(linewidth=3.5, foreground="black")])  # visible on light and dark cells
    rms, reason = theory_rms(tables.theory, tables.metrics, tables.config, init)
    if rms is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ax.plot(np.arange(len(rms))[1:], np.log10(rms)[1:], color=line_colour, ls="--", lw=2,
                    label="theory √(χ₁^l)")
    ax.set_title(init, fontsize=10)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _name_ticks(ax, modules)
    ax.set_facecolor("#f4f4f4")
    return mesh, reason


def _jacobian(tables: RunTables, folder: Path, modules: LayerNames | None) -> list[Path]:
    """jacobian_spectrum.png: the report's Jacobian singular-value figure, when the run measured it."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    histogram = getattr(tables, "jacobian_spectra", None)
    if histogram is None or not len(histogram) or not (histogram["layer"] > 0).any():
        return []
    hidden = histogram[histogram["layer"] > 0]  # layer 0's Jacobian is the identity: one bin, no information
    inits = inits_of(hidden, tables.config)
    bins = bin_grid(hidden)
    fig = Figure(figsize=(4.0 * len(inits) + 1.2, 4.4), layout="constrained")
    axes = fig.subplots(1, len(inits), squeeze=False, sharey=True).ravel()
    norm = Normalize(-4, 0)
    reasons = {}
    for ax, init in zip(axes, inits):
        mesh, reasons[init] = _jacobian_panel(ax, tables, hidden, bins, init, _colour(inits, init), norm, modules)
    axes[0].set_ylabel("log10 singular value (normalised)")
    axes[0].legend(fontsize=7, loc="lower left")
    bar = fig.colorbar(mesh, ax=list(axes), ticks=[-4, -3, -2, -1, 0])
    bar.ax.set_yticklabels(["≤1e-4", "0.001", "0.01", "0.1", "1"])
    bar.set_label("share of singular values")
    by_reason: dict[str, list[str]] = {}
    for init, why in reasons.items():
        if why:
            by_reason.setdefault(why, []).append(init)
    notes = "; ".join(f"{', '.join(names)}: no theory line ({why})" for why, names in by_reason.items())
    wrapped = textwrap.fill(notes, width=int(fig.get_figwidth() * 14)) if notes else ""
    fig.suptitle("Jacobian singular values by layer" + (f"\n{wrapped}" if wrapped else ""), fontsize=10)
    return [_save_png(fig, folder / "jacobian_spectrum.png")]


def write_static(tables: RunTables, folder) -> list[Path]:
    """Write PNGs of every figure and GIFs of the layer views and spectra into `folder`.

    Returns the paths written: layers_3d.png/.gif, weight_norms.png,
    spectra.png/.gif, spectrum_heatmap.png, metrics_depth.png and, with
    jacobian_log_spread, jacobian_spectrum.png (those whose tables are not empty).
    An inspected model's figures name its modules (see the module docstring).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = layer_names(tables.metrics)  # None for a run: its figures keep layer numbers
    out: list[Path] = []
    for part in (_projections, _weight_norms, _spectra, _metrics, _jacobian):
        out += part(tables, folder, modules)
    return out
