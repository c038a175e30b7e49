"""The order-to-chaos phase diagram: theory (core.phase) and measured depth scales (study.phase)."""

import math

import numpy as np
import pytest
from scipy import stats

from initscope.core import phase as P
from initscope.core import theory as th
from initscope.study.phase import PhaseConfig, measure_depth_scale, parse_grid, phase_study


@pytest.mark.slow
def test_edge_of_chaos_for_tanh_is_at_schoenholz_value():
    # Schoenholz et al. 2017, Fig. 1: tanh at σ_b² = 0.05 is critical at σ_w² ≈ 1.76.
    critical = P.critical_sigma_w2("tanh", 0.05)
    assert critical == pytest.approx(1.761, abs=1e-3)
    q = th.q_star("tanh", sigma_w2=critical, sigma_b2=0.05)
    assert th.chi_1("tanh", sigma_w2=critical, sigma_b2=0.05, q=q) == pytest.approx(1.0, abs=1e-9)
    # Without shifts q* → 0 below the line and χ₁ → σ_w²·tanh'(0)² = σ_w²: critical at exactly 1.
    assert P.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    # ReLU without shifts: χ₁ = σ_w²/2, the He line.
    assert P.critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, abs=1e-9)


def test_theory_grid_has_ordered_and_chaotic_sides_of_the_line():
    rows = P.theory_grid("tanh", [1.2, 1.7, 1.85, 3.0], [0.05])
    assert [r["phase"] for r in rows] == ["ordered", "ordered", "chaotic", "chaotic"]
    assert rows[0]["c_star"] == 1.0 and rows[-1]["c_star"] < 1.0
    # ξ_c grows towards the line from both sides.
    xi = [r["xi_c"] for r in rows]
    assert xi[0] < xi[1] and xi[2] > xi[3]
    assert set(rows[0]) == set(P.PHASE_COLUMNS)
    # No shifts, ordered: q* = 0, no length to speak of.
    assert P.phase_point("tanh", 0.8, 0.0)["phase"] == "undefined"


@pytest.mark.parametrize("activation, sigma_w2, sigma_b2", [("tanh", 1.5, 0.1), ("tanh", 3.0, 0.05),
                                                            ("gelu", 1.5, 0.2)])
def test_chi_q_is_the_slope_of_the_length_map(activation, sigma_w2, sigma_b2):
    q = th.q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    h = 1e-5 * q  # central difference: error O(h²·q_map''') ≈ 1e-10, rounding ≈ 1e-16/h ≈ 1e-11
    kw = dict(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    slope = float(th.q_map(q + h, activation, **kw) - th.q_map(q - h, activation, **kw)) / (2 * h)
    assert P.chi_q(activation, **kw) == pytest.approx(slope, abs=1e-8)
    assert P.length_depth_scale(activation, **kw) == pytest.approx(-1 / math.log(slope), rel=1e-6)


def test_chi_q_of_piecewise_linear_maps_is_chi_1():
    assert P.chi_q("relu", sigma_w2=1.5, sigma_b2=0.2) == pytest.approx(0.75, abs=1e-13)
    assert P.depth_scale(1.0) == math.inf and P.depth_scale(0.0) == 0.0 and math.isnan(P.depth_scale(-1.0))


@pytest.mark.slow
def test_measured_depth_scales_follow_theory_on_a_small_grid():
    """ξ_c measured in wide tanh networks against mean-field theory, ordered and chaotic points.

    The fitted decay rate 1/ξ_c has a standard error k/√(width·networks); k ≤ 0.56 was measured
    as the spread over 8 seeds at each of these points (largest at σ_w² = 4, chaotic), and the
    finite-width bias was within 2 standard errors. Five standard errors with k = 0.6:
    """
    width, networks, depth = 256, 8, 20
    points = [(1.2, 0.05), (2.5, 0.05), (4.0, 0.05), (1.2, 0.3), (1.5, 0.3)]
    theory, measured = [], []
    for i, (sw, sb) in enumerate(points):
        row, cosines, lengths = measure_depth_scale("tanh", sw, sb, width=width, depth=depth, networks=networks,
                                                    samples=32, rng=np.random.default_rng(100 + i))
        assert cosines.shape == lengths.shape == (3, networks, depth) and np.isfinite(cosines).all()
        assert row["layers_fitted"] >= 8, row
        theory.append(row["xi_c_theory"])
        measured.append(row["xi_c_measured"])
    theory, measured = np.array(theory), np.array(measured)
    assert len(set(np.round(theory, 1))) == len(points)  # theory tells all five apart: 2.2 ... 11.8 layers
    tolerance = 5 * 0.6 / math.sqrt(width * networks)
    np.testing.assert_allclose(1 / measured, 1 / theory, atol=tolerance, rtol=0)
    assert stats.spearmanr(theory, measured).statistic >= 0.9


@pytest.mark.slow
def test_measured_length_scales_follow_theory_on_a_small_grid():
    """ξ_q from pre_q's approach to q* in wide tanh networks, against mean-field theory (−1/ln χ_q).

    As for ξ_c, the fitted rate 1/ξ_q has a standard error k/√(width·networks): over 8 seeds at
    each of these points (depth 12) k was 1.8, 2.2, 2.1, 2.3 and the finite-width bias within one
    standard error (measured rates 0.537, 0.688, 0.959, 1.138 against 0.553, 0.720, 0.960, 1.145).
    Five standard errors with k = 3; the theory rates are 0.17 or more apart, so the order must hold.
    """
    width, networks, depth = 256, 8, 12
    points = [(1.2, 0.05), (2.0, 0.05), (3.0, 0.05), (4.0, 0.05)]
    theory, measured = [], []
    for i, (sw, sb) in enumerate(points):
        row, _, lengths = measure_depth_scale("tanh", sw, sb, width=width, depth=depth, networks=networks,
                                              samples=32, rng=np.random.default_rng(200 + i))
        assert np.isfinite(lengths).all() and row["q_layers_fitted"] >= 3, row
        theory.append(row["xi_q_theory"])
        measured.append(row["xi_q_measured"])
    theory, measured = np.array(theory), np.array(measured)
    assert np.all(np.diff(theory) < 0)  # 1.81, 1.39, 1.04, 0.87 layers
    np.testing.assert_allclose(1 / measured, 1 / theory, atol=5 * 3.0 / math.sqrt(width * networks), rtol=0)
    assert stats.spearmanr(theory, measured).statistic == pytest.approx(1.0)


def test_measurement_reports_why_it_has_no_value():
    row, cosines, lengths = measure_depth_scale("tanh", 0.8, 0.0, width=32, depth=5, networks=2, samples=4,
                                                rng=np.random.default_rng(0))
    assert math.isnan(row["xi_c_measured"]) and math.isnan(row["xi_q_measured"]) and "q*" in row["note"]
    assert np.isnan(cosines).all() and np.isnan(lengths).all()
    # ξ_q far below a layer: the length difference reaches the noise at once, and the note says so
    row, _, _ = measure_depth_scale("tanh", 2.0, 0.3, width=32, depth=6, networks=2, samples=4,
                                    rng=np.random.default_rng(0))
    assert math.isnan(row["xi_q_measured"]) and "ξ_q too short to measure" in row["note"]


def test_phase_study_tables_and_validation():
    config = PhaseConfig(sigma_w2=(1.5, 2.5), sigma_b2=(0.05, 0.1), measure=True, measure_sigma_w2=(1.2,),
                         measure_sigma_b2=(0.3,), width=64, depth=6, networks=2, samples=8)
    result = phase_study(config)
    assert list(result.theory.columns) == list(P.PHASE_COLUMNS) and len(result.theory) == 4
    assert len(result.measured) == 1 and len(result.decay) == 3 * 2 * 6
    assert set(result.decay["group"]) == {"A", "B", "C"} and {"pre_cosine", "pre_q"} <= set(result.decay.columns)
    assert {"xi_q_theory", "xi_q_measured", "q_layers_fitted"} <= set(result.measured.columns)
    with pytest.raises(ValueError, match="'samples'"):
        phase_study(PhaseConfig(samples=64, width=64))
    with pytest.raises(ValueError, match="'depth'"):
        phase_study(PhaseConfig(depth=2))
    with pytest.raises(ValueError, match="'activation'"):
        phase_study(PhaseConfig(activation="swish"))


def test_parse_grid():
    assert parse_grid("0:0.3:4", "sigma_b2") == (0.0, 0.1, 0.2, 0.3)
    assert parse_grid("1, 2.5", "sigma_w2") == (1.0, 2.5)
    for bad in ("", "a", "1:2", "1:2:0", "-1", "nan"):
        with pytest.raises(ValueError, match="The 'sigma_w2' parameter must be"):
            parse_grid(bad, "sigma_w2")
