"""The report's theory pieces: mean-field overlays (report.meanfield) and the Jacobian spectrum figure."""

import math

import numpy as np
import pytest

from initscope import report
from initscope.report.depth import metric_depth_figure
from initscope.report.jacobian import jacobian_spectrum_figure
from initscope.report.meanfield import mean_field_curves, overlay_reason
from initscope.report.tables import as_tables, config_dict
from initscope.study.runner import run

METRICS = ("pre_q", "pre_cosine", "jacobian_sq_mean", "jacobian_log_spread")


@pytest.fixture(scope="module")
def tanh_run():
    return run(init=("orthogonal", "lsuv"), activation="tanh", shift="normal", shift_scale=0.2, width=16,
               input_dim=16, depth=3, samples=10, trials=2, metrics=METRICS, seed=0)


def test_overlay_reasons_name_what_rules_the_maps_out():
    base = dict(activation="tanh", shift="normal", shift_scale=0.1, norm="none", residual=0.0, width=8,
                input_dim=4, depth=2, gain=None, init_train="none")
    assert overlay_reason(base, "kaiming-normal") is None
    assert "norm" in overlay_reason(dict(base, norm="layer"), "kaiming-normal")
    assert "residual" in overlay_reason(dict(base, residual=0.5), "kaiming-normal")
    assert "σ_b²" in overlay_reason(dict(base, shift="linspace"), "kaiming-normal")
    assert "data-driven" in overlay_reason(base, "lsuv")
    assert "trained" in overlay_reason(dict(base, init_train="backprop"), "kaiming-normal")


def test_mean_field_curves_for_kaiming_relu_keep_q_and_follow_the_arc_cosine_map():
    from initscope.core.theory import relu_correlation_map

    config = dict(activation="relu", shift="zeros", shift_scale=1.0, width=8, input_dim=4, depth=4, gain=None)
    curves = mean_field_curves(config, "kaiming-normal", 0.3, 0.2)
    np.testing.assert_allclose(curves["pre_q"], [0.3, 0.6, 0.6, 0.6, 0.6])  # σ_w² = 2: q_1 = 2·q0, then fixed
    np.testing.assert_allclose(curves["jacobian_sq_mean"], 1.0)
    c = [0.2, 0.2]  # the first layer is linear in the input: its correlation is the input's
    for _ in range(3):
        c.append(float(relu_correlation_map(c[-1])))
    np.testing.assert_allclose(curves["pre_cosine"], c, atol=1e-12)


def test_run_writes_jacobian_histograms_that_count_every_kept_singular_value(tanh_run):
    table = tanh_run.jacobian_spectra
    assert list(table.columns) == ["init", "trial", "layer", "log10_sv", "count"]
    per = table.groupby(["init", "trial", "layer"])["count"].sum()
    hidden = per[per.index.get_level_values("layer") > 0]
    assert (hidden == 10 * 16).all()  # 10 samples × min(d, w) = 16 values, none at the rank threshold here
    # layer 0's Jacobian, the identity, is carried as a 1×1 identity per sample: one value of 1 each
    assert (per[per.index.get_level_values("layer") == 0] == 10).all()
    assert set(table["layer"]) == {0, 1, 2, 3}


def test_report_draws_the_jacobian_figure_and_says_where_theory_is_missing(tanh_run, tmp_path):
    tables = as_tables(tanh_run)
    fig = jacobian_spectrum_figure(tables.jacobian_spectra, tables.metrics, config=tables.config)
    assert fig.layout.meta["theory"]["orthogonal"] is None
    assert "data-driven" in fig.layout.meta["theory"]["lsuv"]
    names = [t.name for t in fig.data]
    assert "theory √(χ₁^l), orthogonal" in names and not any("lsuv" in (n or "") and "theory" in n for n in names)
    depth_fig = metric_depth_figure(tables.metrics, config=tables.config)
    assert any("lsuv" in note for note in depth_fig.layout.meta["mean_field_notes"])
    overlays = {t.name for t in depth_fig.data if t.name and t.name.endswith(": theory")}
    assert overlays == {"orthogonal: theory"}
    page = report.write_report(tanh_run, tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="fig-jacobian-spectrum"' in page and 'href="#jacobian-spectrum"' in page


def test_jacobian_table_round_trips_through_a_run_folder(tanh_run, tmp_path):
    from initscope.study.config import config_to_toml
    from initscope.report.tables import TABLE_COLUMNS

    folder = tmp_path / "run"
    folder.mkdir()
    for name in TABLE_COLUMNS:
        getattr(tanh_run, name).to_csv(folder / f"{name}.csv", index=False)
    (folder / "config.toml").write_text(config_to_toml(tanh_run.config))
    tables = report.load_run(folder)
    assert len(tables.jacobian_spectra) == len(tanh_run.jacobian_spectra)
    assert tables.jacobian_spectra["count"].sum() == tanh_run.jacobian_spectra["count"].sum()


def test_the_overlay_starts_from_layer_zero_where_layer_one_is_exact():
    # Square orthogonal weights (gain 1) keep every input's norm, and with zero shifts the first
    # pre-activation's q is exactly the input's: the overlay's q_1 = σ_w²·q0 + σ_b² with σ_w² = 1, σ_b² = 0.
    result = run(init=("orthogonal",), activation="tanh", shift="zeros", width=12, input_dim=12, depth=2,
                 samples=9, trials=2, metrics=("pre_q", "pre_cosine"), seed=0)
    m = result.metrics
    q = m[m["metric"] == "pre_q"].pivot(index="trial", columns="layer", values="value")
    c = m[m["metric"] == "pre_cosine"].pivot(index="trial", columns="layer", values="value")
    np.testing.assert_allclose(q[1], q[0], rtol=1e-12)
    np.testing.assert_allclose(c[1], c[0], rtol=1e-12)  # an orthogonal map keeps every cosine too
    curves = mean_field_curves(config_dict(result.config), "orthogonal", q[0].mean(), c[0].mean())
    assert curves["pre_q"][1] == pytest.approx(q[0].mean(), rel=1e-14)
    assert curves["pre_cosine"][1] == pytest.approx(c[0].mean(), rel=1e-14)


@pytest.mark.slow
def test_png_draws_the_jacobian_figure(tanh_run, tmp_path):
    import dataclasses

    from PIL import Image

    tables = as_tables(tanh_run)
    no_3d = dataclasses.replace(tables, projections=tables.projections.iloc[:0])  # the 3D views are slow to draw
    path = report.write_report(no_3d, tmp_path / "report.html", png=True)
    figure = tmp_path / "figures" / "jacobian_spectrum.png"
    assert figure.stat().st_size > 10_000
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > image.height > 300
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # a density in many shades, not a blank canvas
    assert 'href="figures/jacobian_spectrum.png"' in path.read_text(encoding="utf-8")
    # without jacobian_log_spread there is no table and no figure
    plain = as_tables(run(init="orthogonal", activation="tanh", width=8, input_dim=4, depth=2, samples=6, trials=1,
                          metrics=("rms", "jacobian_sq_mean")))
    report.write_report(dataclasses.replace(plain, projections=plain.projections.iloc[:0]),
                        tmp_path / "plain" / "report.html", png=True)
    assert not (tmp_path / "plain" / "figures" / "jacobian_spectrum.png").exists()
