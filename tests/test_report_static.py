"""initscope.report.static: the --png figures, read back from the matplotlib figures that were saved.

An inspected model's figures name its modules on every layer axis and title
(a deep model's at its block outputs, spaced so slanted names do not
overprint); a run of the MLP keeps its layer numbers.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest_report import small_run

from initscope.report import static
from initscope.report.static import write_static
from initscope.report.tables import as_tables

pytest.importorskip("matplotlib", reason="the static figures need matplotlib")

_NUMBER = re.compile(r"[−-]?\d+(\.\d+)?")


@pytest.fixture
def drawn(monkeypatch):
    """({file name: saved Figure}, {GIF name: [each frame's axes titles]}) of the next write_static.

    GIFs keep their first two and last frames (matplotlib's 3D frames are
    slow; the titles' contract does not need every layer).
    """
    figures: dict[str, object] = {}
    titles: dict[str, list[list[str]]] = {}
    save_png, save_gif = static._save_png, static._save_gif

    def png(fig, path):
        figures[path.name] = fig
        return save_png(fig, path)

    def gif(fig, path, frames, draw, **kwargs):
        def frame_drawn(frame):
            draw(frame)
            titles.setdefault(path.name, []).append([ax.get_title().strip() for ax in fig.axes if ax.get_title()])

        return save_gif(fig, path, frames[:2] + frames[-1:], frame_drawn, **kwargs)

    monkeypatch.setattr(static, "_save_png", png)
    monkeypatch.setattr(static, "_save_gif", gif)
    return figures, titles


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _ticks(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _overprinting(ax) -> list[tuple[str, str]]:
    """Neighbouring tick labels closer than their font's height across their slant (in the saved pixels)."""
    labels = ax.get_xticklabels()
    x = [ax.transData.transform((t.get_position()[0], 0))[0] for t in labels]
    out = []
    for (a, xa), (b, xb) in zip(zip(labels, x), zip(labels[1:], x[1:])):
        height = a.get_size() * ax.figure.dpi / 72
        if abs(xb - xa) * math.sin(math.radians(a.get_rotation())) < height:
            out.append((a.get_text(), b.get_text()))
    return out


@pytest.fixture(scope="module")
def resnet(torch_one_thread):
    """The tables of a ResNet-18-layout model (60 recorded layers, deep enough for block outputs)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_models as tm

    from initscope.torch import inspect

    torch.manual_seed(0)
    result = inspect(tm.tiny_resnet(), torch.randn(12, 3, 16, 16), metrics=["rms", "effective_rank", "grad_norm"])
    return as_tables(result), result.layers


@pytest.mark.slow
def test_a_deep_models_depth_panels_name_its_block_outputs(resnet, drawn, tmp_path):
    tables, layers = resnet
    figures, _ = drawn
    write_static(tables, tmp_path)
    module = dict(zip(layers["layer"], layers["module"]))
    kind = dict(zip(layers["layer"], layers["module_type"]))
    depth = figures["metrics_depth.png"]
    panels = {ax.get_title(): ax for ax in _panels(depth)}
    assert set(panels) == {"rms", "effective_rank", "grad_norm"}
    for title, ax in panels.items():
        ticks = _ticks(ax)
        assert {"input", "layer1.0", "layer4.0", "fc"} <= set(ticks), title
        assert not any(_NUMBER.fullmatch(t) for t in ticks) and len(ticks) <= 16, ticks
        assert _overprinting(ax) == [], title
    # bold: the 15 block outputs (stem, 8 blocks, head); faint behind them: all 61 layers
    bold, faint = (next(line for line in panels["rms"].get_lines() if (line.get_marker() == ".") == marked)
                   for marked in (True, False))
    assert [module[x] for x in bold.get_xdata()][:6] == ["input", "conv1", "bn1", "relu", "maxpool",
                                                           "layer1.0.relu"]
    assert len(bold.get_xdata()) == 15 and len(faint.get_xdata()) == len(layers)
    # grad_norm is undefined at a block's ReLU output: its bold line shows the weight layers instead
    grads = next(line for line in panels["grad_norm"].get_lines() if line.get_marker() == ".")
    assert {kind[x] for x in grads.get_xdata()} == {"Conv2d", "Linear"}
    assert "block outputs of 61 layers" in depth._suptitle.get_text()


@pytest.mark.slow
def test_a_deep_models_spectra_and_views_name_modules(resnet, drawn, tmp_path):
    tables, _ = resnet
    figures, titles = drawn
    write_static(tables, tmp_path)
    heat = _panels(figures["spectrum_heatmap.png"])[0]
    assert {"input", "layer2.0", "fc"} <= set(_ticks(heat)) and _overprinting(heat) == []
    bar = next(ax for ax in figures["spectra.png"].axes if ax.get_label() == "<colorbar>")
    assert {"input", "layer3.1", "fc"} <= {t.get_text() for t in bar.get_yticklabels()}
    views = [ax.get_title() for ax in figures["layers_3d.png"].axes if ax.get_title()]
    assert views[:2] == ["model, layer 0 (input)", "model, layer 1 (conv1, Conv2d)"]
    assert views[-1] == "model, layer 60 (fc, Linear)" and "(layer2.0.relu, ReLU)" in views[2]
    assert titles["layers_3d.gif"][1] == ["model, layer 1 (conv1, Conv2d)"]
    assert titles["spectra.gif"][-1] == ["layer 60 (fc, Linear); dotted: noise floor"]


@pytest.mark.slow
def test_a_small_models_figures_name_every_layer(drawn, tmp_path, torch_one_thread):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from collections import OrderedDict

    from initscope.torch import inspect

    torch.manual_seed(0)
    model = torch.nn.Sequential(OrderedDict([("stem", torch.nn.Linear(6, 16)), ("act", torch.nn.Tanh()),
                                             ("head", torch.nn.Linear(16, 16))]))
    result = inspect(model, torch.randn(20, 6), metrics=["rms", "jacobian_sq_mean", "jacobian_log_spread"])
    figures, _ = drawn
    write_static(as_tables(result), tmp_path)
    panels = {ax.get_title(): ax for ax in _panels(figures["metrics_depth.png"])}
    assert all(_ticks(ax) == ["input", "stem", "act", "head"] for ax in panels.values())
    assert [len(line.get_xdata()) for line in panels["rms"].get_lines()] == [4]  # every layer, no faint copy
    jacobian = _panels(figures["jacobian_spectrum.png"])[0]
    assert _ticks(jacobian) == ["stem", "act", "head"]  # its layers start at 1: no tick at the input


@pytest.mark.slow
def test_an_mlp_runs_figures_keep_layer_numbers(drawn, tmp_path):
    figures, titles = drawn
    write_static(as_tables(small_run(depth=3, samples=20, width=6, trials=2, init=("normal",))), tmp_path)
    for name in ("metrics_depth.png", "spectrum_heatmap.png"):
        for ax in _panels(figures[name]):
            ticks = [t for t in _ticks(ax) if t]
            assert ticks and all(_NUMBER.fullmatch(t) for t in ticks), (name, ticks)
    bar = next(ax for ax in figures["spectra.png"].axes if ax.get_label() == "<colorbar>")
    assert all(_NUMBER.fullmatch(t.get_text()) for t in bar.get_yticklabels() if t.get_text())
    assert [ax.get_title() for ax in figures["layers_3d.png"].axes if ax.get_title()][0] == "normal, layer 0"
    assert titles["spectra.gif"][0] == ["layer 0 (dotted: noise floor)"]


@pytest.mark.slow
def test_the_spectra_gif_painted_over_one_background_equals_full_redraws(tmp_path, monkeypatch):
    """spectra.gif renders its axes once and repaints only the curves and title per frame: every frame must be
    the picture a full redraw of that frame gives (the slow way, PillowWriter), pixel for pixel up to antialiasing."""
    from PIL import Image

    result = small_run(depth=4, samples=20, width=6, trials=2, init=("normal", "orthogonal"))
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    fast.mkdir(), slow.mkdir()
    static.write_static(as_tables(result), fast)
    save_gif = static._save_gif
    monkeypatch.setattr(static, "_save_gif", lambda fig, path, frames, draw, animated=(): save_gif(fig, path, frames,
                                                                                                    draw))
    static.write_static(as_tables(result), slow)
    with Image.open(fast / "spectra.gif") as a, Image.open(slow / "spectra.gif") as b:
        assert a.n_frames == b.n_frames == 5 and a.size == b.size
        previous = None
        for i in range(a.n_frames):
            a.seek(i), b.seek(i)
            x, y = (np.asarray(im.convert("RGB"), dtype=float) for im in (a, b))
            # The GIF palette shifts colours a little everywhere; a stale curve or title is hundreds of pixels off.
            assert (np.abs(x - y).max(axis=2) > 60).sum() <= 20, (i, (np.abs(x - y).max(axis=2) > 60).sum())
            assert previous is None or np.abs(x - previous).mean() > 0.05  # the curves and the title move
            previous = x
