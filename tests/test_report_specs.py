"""The report's figures as plain specs: valid plotly, laid out as make_subplots, serialised once.

The page never builds plotly objects (their validation took most of a
report's time); these tests hold the plain specs to plotly's own validator
and layout, so the page stays what it was.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest_report import FIGURE_SECTIONS, small_run

from initscope.report._common import compact, grid, typed_arrays
from initscope.report.depth import metric_depth_figure
from initscope.report.geometry import layer_projection_figure
from initscope.report.page import build_page, report_specs
from initscope.report.spectra import spectrum_animation_figure, spectrum_heatmap_figure
from initscope.report.tables import as_tables
from initscope.report.weights import weight_norm_figure

FIGURES = {
    "layers-3d": (layer_projection_figure, "projections"),
    "weight-norms": (weight_norm_figure, "weight_norms"),
    "spectra": (spectrum_animation_figure, "spectra"),
    "spectrum-heatmap": (spectrum_heatmap_figure, "spectra"),
    "metrics-depth": (metric_depth_figure, "metrics"),
}


@pytest.fixture(scope="module", params=["seed", "theory", "overflow"])
def result(request):
    if request.param == "overflow":  # normal weights at width 40 overflow float32: NaN layers in every table
        with pytest.warns(Warning, match="overflow"):
            return small_run(depth=30, width=40, dtype="float32", init=("normal", "kaiming-normal"))
    return {
        "seed": lambda: small_run(),
        "theory": lambda: small_run(shift="zeros", init=("kaiming-normal", "sphere", "orthogonal", "xavier-normal")),
    }[request.param]()


@pytest.mark.parametrize(("rows", "cols", "h", "v", "scene"), [
    (4, 3, 0.07, 0.12, False), (2, 3, 0.06, 0.12, False), (5, 2, 0.08, 0.075, False), (1, 3, 0.07, 0.5, False),
    (2, 3, 0.02, 0.06, True), (1, 2, 0.02, 0.06, True), (1, 1, 0.02, 0.06, True),
])
def test_grid_lays_out_subplots_exactly_as_make_subplots(rows, cols, h, v, scene):
    from plotly.subplots import make_subplots

    titles = [f"panel {i}" for i in range(rows * cols - (rows * cols > 1))]
    specs = [[{"type": "scene"}] * cols for _ in range(rows)] if scene else None
    expected = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=h,
                             vertical_spacing=v, specs=specs).to_plotly_json()["layout"]
    expected.pop("template")
    assert grid(rows, cols, titles, horizontal_spacing=h, vertical_spacing=v, scene=scene) == expected


@pytest.mark.slow
def test_every_spec_is_a_valid_plotly_figure(result):
    """plotly's validator, off on the page's path, accepts every property the builders write."""
    import plotly.graph_objects as go

    for sid, spec in report_specs(as_tables(result)).items():
        figure = go.Figure(spec)  # raises on any invalid property or value
        assert len(figure.data) == len(spec["data"]), sid
        assert len(figure.frames) == len(spec.get("frames", ())), sid


def test_typed_arrays_round_trip_and_leave_plain_values():
    spec = {"data": [{"x": np.arange(5), "y": compact([1.5, np.nan, 3e-8]), "z": np.eye(2, 3), "t": [1, None],
                      "e": np.zeros(0)}], "layout": {"yaxis": {"range": np.array([0.0, 1.0])}, "meta": (1, 2)}}
    out = typed_arrays(spec)
    x, y, z = (out["data"][0][k] for k in "xyz")
    assert (x["dtype"], y["dtype"], z["dtype"], z["shape"]) == ("i4", "f4", "f8", "2, 3")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(x["bdata"]), np.int32), np.arange(5))
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(y["bdata"]), np.float32), spec["data"][0]["y"])
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(z["bdata"])).reshape(2, 3), np.eye(2, 3))
    assert out["data"][0]["t"] == [1, None] and out["layout"]["meta"] == [1, 2]
    assert isinstance(out["layout"]["yaxis"]["range"], np.ndarray)  # plotly.js wants plain ranges
    assert isinstance(spec["data"][0]["x"], np.ndarray)  # the input is not changed


@pytest.mark.slow
def test_the_page_carries_each_spec_once_with_every_trace_and_frame(result):
    tables = as_tables(result)
    page = build_page(tables)
    specs = report_specs(tables)
    for sid in FIGURE_SECTIONS:
        script = re.search(rf'Plotly\.newPlot\(\s*"fig-{sid}",\s*(\[.*?\]),\s*(\{{.*?\}}),\s*\{{"responsive"', page,
                           re.S)
        assert script, sid
        data = json.loads(script.group(1))
        assert len(data) == len(specs[sid]["data"]), sid
        frames = re.search(rf"Plotly\.addFrames\('fig-{sid}', (\[.*?\])\);", page, re.S)
        assert (frames is not None) == bool(specs[sid].get("frames")), sid
        if frames:
            assert len(json.loads(frames.group(1))) == len(specs[sid]["frames"])
        assert len(re.findall(rf'Plotly\.newPlot\(\s*"fig-{sid}"', page)) == 1  # serialised once


@pytest.mark.slow
def test_building_a_report_imports_neither_scipy_stats_nor_plotly_objects(tmp_path):
    code = (
        "import sys\n"
        "from initscope.study.runner import run\n"
        "from initscope.report import write_report\n"
        f"write_report(run(trials=3, depth=4, samples=40, width=12), {str(tmp_path / 'r.html')!r})\n"
        "print([m for m in ('scipy.stats', 'plotly.graph_objects', 'plotly.subplots') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("sid", list(FIGURES))
def test_every_figure_function_takes_a_config_a_dict_or_nothing(result, sid):
    function, table = FIGURES[sid]
    cfg = result.config
    as_dict = {"init": list(reversed(cfg.init)), "dtype": cfg.dtype, "seed": cfg.seed, "activation": cfg.activation,
               "input_dim": cfg.input_dim, "width": cfg.width, "depth": cfg.depth, "shift": cfg.shift,
               "gain": cfg.gain}
    figures = [function(getattr(result, table), config=c) for c in (cfg, as_dict, None)]
    assert len(figures[0].data) == len(figures[1].data) >= len(cfg.init)
    assert len(figures[2].data) >= len(cfg.init)  # without a config: no theory needing one, the rest drawn
    if sid in ("layers-3d", "spectrum-heatmap"):  # one panel per initializer, in the config's order
        first = [a.text for a in figures[1].layout.annotations][0]
        assert cfg.init[-1] in first
