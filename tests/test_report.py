"""The report's structure: sections, figures, animations, theory overlays, escaping, files.

These check structure (which sections, how many figures and frames, which
traces), not whole HTML. `test_report_browser.py` opens the page in Chromium.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest_report import FIGURE_SECTIONS, large_tables, parse_page, small_run

from initscope import report
from initscope.report.tables import TABLE_COLUMNS, as_tables

DEPTH = 4


@pytest.fixture(scope="module")
def seed_result():
    """The seed's study, small: ReLU, linspace shifts, zero readout, normal vs sphere."""
    return small_run(depth=DEPTH)


@pytest.fixture(scope="module")
def theory_result():
    """A study where the closed forms hold: ReLU, zero shifts, no norm, no residual."""
    return small_run(depth=DEPTH, shift="zeros", init=("kaiming-normal", "sphere", "orthogonal"))


@pytest.fixture(scope="module")
def page(seed_result, tmp_path_factory):
    path = report.write_report(seed_result, tmp_path_factory.mktemp("page") / "report.html")
    return path.read_text(encoding="utf-8")


def _frame_layers(fig) -> list[int]:
    return [int(frame.name) for frame in fig.frames]


# ---- the page -----------------------------------------------------------------


def test_page_has_every_section_with_one_figure_each(page):
    parsed = parse_page(page)
    assert parsed.sections[:2] == ["verdict", "flags"]
    assert parsed.sections[-1] == "config"
    for section in FIGURE_SECTIONS:
        assert section in parsed.sections
        assert parsed.figures[section] == 1, section
    assert parsed.figures.get("flags", 0) == parsed.figures.get("verdict", 0) == 0
    assert sum(parsed.figures.values()) == len(FIGURE_SECTIONS)


def test_plotly_js_is_inline_exactly_once_and_nothing_is_fetched(page):
    from plotly.offline import get_plotlyjs

    plotlyjs = get_plotlyjs()
    assert page.count(plotlyjs[:200]) == 1
    assert page.count(plotlyjs) == 1
    parsed = parse_page(page)
    assert parsed.script_srcs == []
    ours = page.replace(plotlyjs, "")  # plotly.js itself holds map-tile URLs it never loads here
    assert not re.search(r"<script[^>]*\bsrc\s*=", ours, flags=re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours, flags=re.I)
    assert "cdn.plot.ly" not in ours


def test_page_states_version_seed_and_command(page, seed_result):
    from initscope import __version__

    config = seed_result.config
    assert f"initscope {__version__}" in page
    assert f"seed {config.seed}" in page
    assert "initscope run --config config.toml" in page
    assert f"--init {','.join(config.init)}" in page
    assert f"--depth {config.depth}" in page


def test_verdict_then_flags_come_first_and_the_zero_readout_is_neutral(page):
    verdict, flags = page.index('id="verdict"'), page.index('id="flags"')
    assert verdict < flags < page.index('id="layers-3d"')
    assert re.search(r"<section[^>]*>", page).group(0) == '<section id="verdict">'
    cell = '<td class="">not measured: the readout is zero, as in the post; use --readout init</td>'
    assert cell in page  # neutral: no "hit" colour for the post's own setting


def test_write_report_is_atomic_and_replaces_its_own_page(seed_result, tmp_path):
    path = tmp_path / "report.html"
    assert report.write_report(seed_result, path) == path
    first = path.read_text(encoding="utf-8")
    assert report.write_report(seed_result, path, png=False) == path  # its own page: replaced
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>") and first.startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".initscope", "report.html"]  # the marker lists it


def test_write_report_rejects_a_non_html_path(seed_result, tmp_path):
    with pytest.raises(ValueError, match="'path' parameter of write_report"):
        report.write_report(seed_result, tmp_path / "report.txt")


def test_write_report_rejects_something_without_tables(tmp_path):
    with pytest.raises(TypeError, match="'result_or_tables' parameter"):
        report.write_report(object(), tmp_path / "report.html")


# ---- animations ----------------------------------------------------------------


def test_layer_projection_has_one_frame_per_layer_and_a_colour_bar(seed_result):
    fig = report.layer_projection_figure(seed_result.projections)
    assert _frame_layers(fig) == list(range(DEPTH + 1))
    inits = list(seed_result.config.init)
    assert len(fig.data) == len(inits)
    assert all(trace.type == "scatter3d" for trace in fig.data)
    for frame in fig.frames:
        assert len(frame.data) == len(fig.data)
        assert list(frame.traces) == list(range(len(fig.data)))
    assert fig.layout.coloraxis.colorbar.title.text == "target"
    assert all(trace.marker.coloraxis == "coloraxis" for trace in fig.data)
    steps = fig.layout.sliders[0].steps
    assert [step.args[0][0] for step in steps] == [str(layer) for layer in range(DEPTH + 1)]
    hover = fig.data[0].hovertemplate
    assert "sample" in hover and "target" in hover and "layer 0" in hover


def test_layer_projection_frames_move_the_points(seed_result):
    fig = report.layer_projection_figure(seed_result.projections)
    first, last = np.asarray(fig.frames[0].data[0].x), np.asarray(fig.frames[-1].data[0].x)
    assert first.shape == last.shape
    assert not np.allclose(first, last)


def test_layer_projection_axis_buttons_switch_between_fit_and_one_range(seed_result):
    fig = report.layer_projection_figure(seed_result.projections)
    buttons = {b.label: b.args[0] for menu in fig.layout.updatemenus for b in menu.buttons}
    fixed = buttons["axes: one range for all layers"]
    fitted = buttons["axes: fit each layer"]
    assert fixed["scene.xaxis.autorange"] is False
    lo, hi = fixed["scene.xaxis.range"]
    assert lo < 0 < hi
    assert fitted["scene.xaxis.autorange"] is True
    assert "▶ play" in buttons


def test_layer_projection_downsamples_large_runs_and_says_so(seed_result):
    fig = report.layer_projection_figure(seed_result.projections, max_points=10)
    assert all(len(trace.x) == 10 for trace in fig.data)
    assert fig.layout.meta["shown"] == 10
    assert fig.layout.meta["samples"] == seed_result.config.samples
    assert "showing 10 of" in fig.layout.title.text


def test_spectrum_animation_frames_replace_every_trace(seed_result):
    fig = report.spectrum_animation_figure(seed_result.spectra, config=seed_result.config)
    assert _frame_layers(fig) == list(range(DEPTH + 1))
    n = len(fig.data)
    assert n == 2 * len(seed_result.config.init)  # a spectrum and a noise floor per init
    for frame in fig.frames:
        assert len(frame.data) == n
        assert list(frame.traces) == list(range(n))
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.autorange is False  # one scale for every layer
    assert any("noise floor" in trace.name for trace in fig.data)


def test_spectrum_heatmap_has_a_log_colour_bar_and_the_noise_floor(seed_result):
    fig = report.spectrum_heatmap_figure(seed_result.spectra, config=seed_result.config)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    floors = [t for t in fig.data if t.type == "scatter" and "noise floor" in t.name]
    assert len(heatmaps) == len(floors) == len(seed_result.config.init)
    colorbar = fig.layout.coloraxis.colorbar
    assert all(text.startswith("1e") for text in colorbar.ticktext)
    assert len(heatmaps[0].x) == DEPTH + 1


def test_noise_floor_uses_the_dtype():
    from initscope.report._common import sqrt_eps

    assert sqrt_eps("float32") == pytest.approx(math.sqrt(np.finfo(np.float32).eps))
    assert sqrt_eps("float64") == pytest.approx(math.sqrt(np.finfo(np.float64).eps))


# ---- theory overlays -----------------------------------------------------------


def _theory_traces(fig) -> list[str]:
    return [t.name for t in fig.data if t.name and t.name.endswith(": theory")]


def test_metric_depth_has_a_panel_per_metric_and_theory_when_it_applies(theory_result):
    fig = report.metric_depth_figure(theory_result.metrics, config=theory_result.config)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["rms", "std"]
    assert len(titles) == len(theory_result.config.metrics)
    theory = _theory_traces(fig)
    # rms recursion for every init with a closed form, arc-cosine map for every init, and the mean-field
    # q-map, c-map and χ₁ product on pre_q, pre_cosine and jacobian_sq_mean
    assert theory.count("kaiming-normal: theory") == 5
    assert "theory (dashed)" in [t.name for t in fig.data]
    rms_theory = next(t for t in fig.data if t.name == "kaiming-normal: theory")
    assert len(rms_theory.x) == DEPTH + 1
    # kaiming + ReLU keeps the second moment: the recursion is flat
    assert np.allclose(rms_theory.y, rms_theory.y[0], rtol=1e-3)


def test_no_theory_trace_when_its_assumptions_fail(seed_result):
    fig = report.metric_depth_figure(seed_result.metrics, config=seed_result.config)
    assert _theory_traces(fig) == []  # the seed's linspace shifts break the closed forms
    assert "theory (dashed)" not in [t.name for t in fig.data]


def test_rms_gets_a_log_axis_and_cosines_never_do():
    tables = large_tables(inits=("normal",), depth=6, samples=20, width=8, trials=2)
    metrics = tables["metrics"].copy()
    rms = metrics["metric"] == "rms"
    metrics.loc[rms, "value"] = 10.0 ** metrics.loc[rms, "layer"]
    cos = metrics["metric"] == "mean_cosine"
    metrics.loc[cos, "value"] = 10.0 ** -metrics.loc[cos, "layer"]
    fig = report.metric_depth_figure(metrics)
    present = set(metrics["metric"])
    titles = [a.text for a in fig.layout.annotations if a.text.split(" ")[0] in present]  # panel titles, not notes
    axis_of = {title: fig.layout[f"yaxis{'' if i == 0 else i + 1}"] for i, title in enumerate(titles)}
    assert axis_of["rms"].type == "log"
    assert axis_of["mean_cosine"].type != "log"


def test_weight_norms_overlay_theory_and_mark_norm_one(seed_result):
    fig = report.weight_norm_figure(seed_result.weight_norms, config=seed_result.config)
    theory = [t for t in fig.data if t.name == "theory"]
    # normal: a chi density for input and internal; sphere: a spike at 1 for both
    assert len(theory) == 4
    spikes = [t for t in theory if len(t.x) == 2]
    assert len(spikes) == 2 and all(np.allclose(t.x, 1.0) for t in spikes)
    vlines = [s for s in fig.layout.shapes if s.x0 == 1 and s.x1 == 1]
    assert len(vlines) == 4


def test_weight_norms_without_a_closed_form_have_no_theory(theory_result):
    fig = report.weight_norm_figure(theory_result.weight_norms, config=theory_result.config)
    names = [(t.name, t.xaxis) for t in fig.data if t.name == "theory"]
    # kaiming-normal: chi; sphere: spike; orthogonal: none → 4 of the 6 panels
    assert len(names) == 4


def test_sphere_norms_are_one_spike_even_after_float32_rounding():
    from initscope.report.weights import norm_histogram

    norms = 1.0 + np.random.default_rng(0).normal(0, 1e-7, size=500)
    edges, density = norm_histogram(norms)
    assert len(density) == 1 and edges[0] < 1 < edges[1]
    assert len(norm_histogram(1.0 + np.linspace(-0.01, 0.01, 500))[1]) > 1


def test_theory_density_matches_the_histogram_of_normal_weights(seed_result):
    fig = report.weight_norm_figure(seed_result.weight_norms, config=seed_result.config)
    bars = [t for t in fig.data if t.type == "bar"]
    assert all(np.isclose(np.sum(np.asarray(b.y) * np.asarray(b.width)), 1.0, atol=1e-3) for b in bars)


# ---- flags ---------------------------------------------------------------------


def _metrics_table(rows, **config):
    table = pd.DataFrame(rows, columns=["init", "trial", "layer", "metric", "value"])
    for name, value in dict(readout="zeros", **config).items():
        table[name] = value
    return table


def test_flags_table_in_plain_words():
    rows = []
    for trial in (0, 1):
        for layer, (rms, rank, dead, grad) in enumerate(
            [(1.0, 4.0, 0.0, math.nan), (3.0, 3.5, 0.1, 0.0), (20.0, 1.5, 0.7, 0.0), (500.0, 1.0, 0.9, 0.0)]
        ):
            rows += [("normal", trial, layer, "rms", rms), ("normal", trial, layer, "effective_rank", rank),
                     ("normal", trial, layer, "dead_fraction", dead), ("normal", trial, layer, "grad_norm", grad)]
            rows += [("sphere", trial, layer, "rms", 1.0), ("sphere", trial, layer, "effective_rank", 4.0),
                     ("sphere", trial, layer, "dead_fraction", 0.0),
                     ("sphere", trial, layer, "grad_norm", math.nan if layer == 0 else 0.5 / layer)]
    flags = pd.DataFrame({"init": ["normal", "normal"], "trial": [0, 1], "layer": [3, 3],
                          "flag": ["overflow", "collapsed"]})
    table = report.flags_table(_metrics_table(rows), flags).set_index("init")
    normal, sphere = table.loc["normal"], table.loc["sphere"]
    assert normal["scale (rms) left [0.1, 10]× the input's"] == "layer 2 (rms 20× the input's)"
    assert normal["effective rank below half the input's"] == "layer 2 (1.5 of the input's 4)"
    assert normal["over half the units dead"] == "layer 2 (70% of units dead)"
    assert normal["overflow"] == "layer 3 (in 1 of 2 trials)"
    assert normal["collapse"] == "layer 3 (in 1 of 2 trials)"
    assert normal["hidden-layer gradients"] == "not measured: the readout is zero, as in the post; use --readout init"
    assert (sphere.iloc[:5] == "never").all()
    assert sphere["hidden-layer gradients"] == "nonzero (smallest median 0.167, at layer 3)"


def test_flags_table_says_what_was_not_measured():
    rows = [("normal", 0, layer, "rms", 1.0) for layer in range(3)]
    table = report.flags_table(_metrics_table(rows), None)
    row = table.iloc[0]
    assert row["effective rank below half the input's"] == "not measured"
    assert row["hidden-layer gradients"] == "not measured"
    assert row["overflow"] == "never"


def test_overflowed_layers_are_flagged_and_drawn():
    """Non-finite values from an overflowed layer on: figures build, the flag shows."""
    tables = large_tables(inits=("normal", "sphere"), depth=5, samples=30, width=8, trials=2)
    proj, spectra, metrics = tables["projections"], tables["spectra"], tables["metrics"]
    proj.loc[(proj["init"] == "normal") & (proj["layer"] >= 4), ["pc1", "pc2", "pc3"]] = np.nan
    spectra.loc[(spectra["init"] == "normal") & (spectra["layer"] >= 4), "singular_value"] = np.nan
    metrics.loc[(metrics["init"] == "normal") & (metrics["layer"] >= 4), "value"] = np.nan
    tables["flags"] = pd.DataFrame({"init": ["normal"] * 2, "trial": [0, 1], "layer": [4, 4],
                                    "flag": ["overflow"] * 2})
    fig = report.layer_projection_figure(proj)
    assert "non-finite (overflow)" in fig.frames[-1].layout.annotations[0].text
    animation = report.spectrum_animation_figure(spectra)
    assert "non-finite or absent: normal" in animation.frames[-1].layout.title.text
    assert "non-finite" not in animation.frames[0].layout.title.text
    heatmap = report.spectrum_heatmap_figure(spectra)
    assert any(a.text == "non-finite from layer 4" for a in heatmap.layout.annotations)
    report.metric_depth_figure(metrics)
    assert report.flags_table(metrics, tables["flags"]).iloc[0]["overflow"] == "layer 4 (in 2 of 2 trials)"


# ---- escaping, files, round trip -----------------------------------------------


def test_config_strings_and_labels_are_escaped(seed_result, tmp_path):
    evil = "<script>alert(1)</script>"
    tables = as_tables(seed_result)
    rename = {"normal": evil}
    swapped = {name: getattr(tables, name).replace({"init": rename}) for name in TABLE_COLUMNS}
    config = dict(tables.config, init=(evil, "sphere"), data=evil, target=f"column:{evil}")
    page = report.write_report(dict(swapped, config=config), tmp_path / "report.html").read_text(encoding="utf-8")
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == page.count("</script>")


@pytest.mark.slow
def test_png_true_writes_static_figures_and_gifs(tmp_path):
    from PIL import Image

    depth = 2  # matplotlib's 3D views are slow; the contract does not need more layers
    result = small_run(depth=depth, samples=20, width=6, trials=2)
    path = report.write_report(result, tmp_path / "report.html", png=True)
    folder = tmp_path / "figures"
    expected = {"layers_3d.png", "layers_3d.gif", "weight_norms.png", "spectra.png", "spectra.gif",
                "spectrum_heatmap.png", "metrics_depth.png"}
    assert {p.name for p in folder.iterdir()} == expected
    for name in expected:
        assert (folder / name).stat().st_size > 1000, name
        with Image.open(folder / name) as image:
            assert image.format == ("GIF" if name.endswith(".gif") else "PNG")
            if name.endswith(".gif"):
                assert image.n_frames == depth + 1
    assert 'href="figures/layers_3d.gif"' in path.read_text(encoding="utf-8")


def _write_run_folder(result, folder):
    from initscope.study.config import config_to_toml

    folder.mkdir()
    for name in TABLE_COLUMNS:
        getattr(result, name).to_csv(folder / f"{name}.csv", index=False)
    (folder / "config.toml").write_text(config_to_toml(result.config))


def test_load_run_round_trips_a_run_folder(seed_result, tmp_path):
    folder = tmp_path / "run"
    _write_run_folder(seed_result, folder)
    tables = report.load_run(folder)
    for name in TABLE_COLUMNS:
        pd.testing.assert_frame_equal(
            getattr(tables, name).reset_index(drop=True), getattr(seed_result, name).reset_index(drop=True),
            check_dtype=False, check_exact=False, rtol=1e-12,
        )
    assert tables.config == {f.name: getattr(seed_result.config, f.name)
                             for f in dataclasses.fields(seed_result.config)}
    path = report.write_report(tables, folder / "report.html")
    assert parse_page(path.read_text(encoding="utf-8")).figures["layers-3d"] == 1


def test_load_run_tolerates_missing_optional_tables(seed_result, tmp_path):
    folder = tmp_path / "run"
    _write_run_folder(seed_result, folder)
    (folder / "projections.csv").unlink()
    (folder / "flags.csv").write_text("")
    tables = report.load_run(folder)
    assert list(tables.projections.columns) == list(TABLE_COLUMNS["projections"])
    assert tables.flags.empty
    report.write_report(tables, folder / "report.html")


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="must be a run folder"):
        report.load_run(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="metrics.csv"):
        report.load_run(tmp_path)


def test_figure_functions_neither_print_nor_write(seed_result, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figures = [
        report.layer_projection_figure(seed_result.projections),
        report.weight_norm_figure(seed_result.weight_norms, config=seed_result.config),
        report.spectrum_animation_figure(seed_result.spectra, config=seed_result.config),
        report.spectrum_heatmap_figure(seed_result.spectra, config=seed_result.config),
        report.metric_depth_figure(seed_result.metrics),
    ]
    import plotly.graph_objects as go

    assert all(isinstance(fig, go.Figure) for fig in figures)
    assert isinstance(report.flags_table(seed_result.metrics, seed_result.flags), pd.DataFrame)
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_a_subset_of_metrics_gets_only_those_panels():
    result = small_run(depth=3, metrics="rms,mean_cosine")
    fig = report.metric_depth_figure(result.metrics)
    assert [a.text for a in fig.layout.annotations] == ["rms", "mean_cosine"]
    table = report.flags_table(result.metrics, result.flags)
    assert table.iloc[0]["over half the units dead"] == "not measured"


@pytest.mark.slow
def test_importing_initscope_and_its_report_stays_light():
    code = ("import sys, initscope, initscope.report; "
            "print(sorted(m for m in ('plotly', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_page_command_line_reproduces_the_run_config(tmp_path):
    import shlex

    from initscope.cli.app import main
    from initscope.report.page import command_line

    result = small_run(depth=2, samples=20, width=6, trials=2, init=("orthogonal", "sphere"), gain=1.5,
                       shift="zeros", metrics="rms,effective_rank")
    original = as_tables(result).config
    args = shlex.split(command_line(original))
    assert args[:2] == ["initscope", "run"]
    assert main(args[1:] + ["--out", str(tmp_path / "again"), "--quiet", "--no-report"]) == 0
    assert report.load_run(tmp_path / "again").config == original


def test_an_inspection_made_in_python_shows_a_python_snippet_that_reruns_it(tmp_path):
    """No `initscope run --model ...` (there is no such command): the page gives the API call, and it runs."""
    import html as html_mod

    import torch

    import initscope.torch as it

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    inputs = torch.randn(32, 4)
    page = report.write_report(it.inspect(model, inputs, mode="eval"), tmp_path / "report.html").read_text()
    assert "initscope run" not in page and "Rerun from Python:" in page
    snippet = html_mod.unescape(re.search(r"Rerun from Python:</p><pre>(.*?)</pre>", page, re.S).group(1))
    assert "it.inspect(model, inputs, label='model', mode='eval', seed=0)" in snippet
    # The two placeholder lines (model = ..., inputs = ...) are what the reader fills in; here they exist.
    code = "\n".join(line for line in snippet.splitlines() if not line.startswith(("model = ...", "inputs = ...")))
    namespace = {"model": model, "inputs": inputs}
    work = tmp_path / "rerun"
    work.mkdir()
    import os

    here = os.getcwd()
    os.chdir(work)
    try:
        exec(compile(code, "snippet", "exec"), namespace)  # noqa: S102 - the page's own snippet, on our model
    finally:
        os.chdir(here)
    assert (work / "report.html").is_file()
    assert namespace["result"].metrics["value"].equals(it.inspect(model, inputs, mode="eval").metrics["value"])
