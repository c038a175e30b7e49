"""Gaussian expectations: the Golub–Welsch rule at any node count, and the arc-cosine closed forms.

The closed forms are checked against an independent computation to 1e-12:
one Gaussian integral done in closed form (E[relu(m + σZ)] = m·Φ(m/σ) + σ·ϕ(m/σ)),
the other by adaptive quadrature (scipy.integrate.quad, split at the kink),
so neither the arc-cosine formula nor the Hermite rule enters the reference.
Monte Carlo tolerances are 5 standard errors of the draws.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special

from initscope.core import kernels as K
from initscope.core import theory as th

NODE_COUNTS = [20, 21, 64, 99, 100, 150, 151, 256, 399, 400, 401, 777, 1000]
MC_DRAWS = 400_000


def _double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2))


@pytest.mark.parametrize("nodes", NODE_COUNTS)
def test_gauss_hermite_is_finite_and_integrates_moments_at_any_node_count(nodes):
    x, w = K.gauss_hermite(nodes)
    assert x.shape == w.shape == (nodes,)
    assert np.isfinite(x).all() and np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_array_equal(x, -x[::-1])  # symmetric to the last bit
    # E[z^2k] = (2k−1)!! for every 2k < 2·nodes; checked for k ≤ 5, relative to rounding.
    for k in range(0, 6):
        assert (w * x ** (2 * k)).sum() == pytest.approx(_double_factorial(2 * k - 1), rel=1e-13, abs=1e-15)
    assert abs((w * x**3).sum()) < 1e-12


@pytest.mark.parametrize("nodes", NODE_COUNTS)
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_smooth_maps_are_finite_and_converged_at_any_node_count(activation, nodes):
    # Analytic φ at q ≤ 1.3: converged to rounding by 100 nodes (tanh's poles at ±iπ/2 slow the
    # rule as q grows: see theory.DEFAULT_NODES), so every larger count agrees with 1000.
    kw = dict(sigma_w2=1.7, sigma_b2=0.2)
    q = np.array([0.1, 0.5, 1.0])
    c = np.array([-0.7, 0.0, 0.5, 0.99])
    q_ref = th.q_map(q, activation, **kw, nodes=1000)
    c_ref = th.correlation_map(c, activation, **kw, q=1.3, nodes=1000)
    q_new = th.q_map(q, activation, **kw, nodes=nodes)
    c_new = th.correlation_map(c, activation, **kw, q=1.3, nodes=nodes)
    assert np.isfinite(q_new).all() and np.isfinite(c_new).all()
    tol = 1e-12 if nodes >= 150 else 1e-3  # measured: 1e-4 at 20 nodes, 1e-11 at 100
    np.testing.assert_allclose(q_new, q_ref, atol=tol, rtol=0)
    np.testing.assert_allclose(c_new, c_ref, atol=tol, rtol=0)
    chi = th.chi_1(activation, **kw, nodes=nodes)
    assert math.isfinite(chi)


@pytest.mark.parametrize("nodes", [0, -4, 2.5, True, "100", K.MAX_NODES + 1])
def test_impossible_node_counts_raise_naming_the_parameter(nodes):
    with pytest.raises(ValueError, match=r"The 'nodes' parameter must be an integer between 1 and \d+\. Got"):
        K.gauss_hermite(nodes)
    with pytest.raises(ValueError, match="'nodes'"):
        th.correlation_map(0.5, "relu", sigma_w2=2.0, nodes=nodes)  # refused even where a closed form needs none
    with pytest.raises(ValueError, match="'nodes'"):
        th.q_map(1.0, "tanh", sigma_w2=1.0, nodes=nodes)


def test_one_node_is_the_point_mass_at_zero():
    x, w = K.gauss_hermite(1)
    assert x.tolist() == [0.0] and w.tolist() == [1.0]


def _relu_mean(m, s):
    """E[relu(m + s·Z)], Z ~ N(0, 1), in closed form."""
    return m * special.ndtr(m / s) + s * math.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)


def _split_quad(integrand):
    # ±40: the Gaussian factor is e^-800 beyond, far below rounding; split at the kink at 0.
    opts = dict(epsabs=1e-15, epsrel=1e-13, limit=200)
    return integrate.quad(integrand, -40, 0, **opts)[0] + integrate.quad(integrand, 0, 40, **opts)[0]


def _leaky_cross_reference(c, q, a):
    """E[φ(u1)φ(u2)] by adaptive 1-D quadrature over z1 of φ(u1)·E[φ(u2) | z1], split at u1's kink."""
    r, s = math.sqrt(q), math.sqrt(q * (1 - c * c))

    def integrand(z1):
        m = r * c * z1  # u2 | z1 ~ N(m, s²); φ(y) = relu(y) − a·relu(−y)
        inner = _relu_mean(m, s) - a * _relu_mean(-m, s)
        u1 = r * z1
        return (u1 if u1 > 0 else a * u1) * inner * math.exp(-0.5 * z1 * z1) / math.sqrt(2 * math.pi)

    return _split_quad(integrand)


def _leaky_derivative_reference(c, a):
    """E[φ'(u1)φ'(u2)] by adaptive quadrature: ∫ φ'(z1)·(Φ(m/s) + a·(1 − Φ(m/s)))·ϕ(z1) dz1."""
    s = math.sqrt(1 - c * c)

    def integrand(z1):
        p = special.ndtr(c * z1 / s)
        return (1.0 if z1 > 0 else a) * (p + a * (1 - p)) * math.exp(-0.5 * z1 * z1) / math.sqrt(2 * math.pi)

    return _split_quad(integrand)


@pytest.mark.parametrize("activation, a", [("relu", 0.0), ("leaky_relu", th.LEAKY_SLOPE), ("identity", 1.0)])
@pytest.mark.parametrize("sigma_w2, sigma_b2, q", [(2.0, 0.0, 1.0), (1.5, 0.05, 0.7), (2.0, 0.3, 2.5)])
def test_piecewise_linear_maps_are_the_exact_closed_forms(activation, a, sigma_w2, sigma_b2, q):
    cs = [-0.95, -0.5, 0.0, 0.3, 0.8, 0.999]
    kw = dict(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    bottom = sigma_w2 * q * (1 + a * a) / 2 + sigma_b2  # E[φ(u)²] = q(1 + a²)/2 exactly
    assert float(th.q_map(q, activation, **kw)) == pytest.approx(bottom, rel=1e-14)
    expected = np.array([(sigma_w2 * _leaky_cross_reference(c, q, a) + sigma_b2) / bottom for c in cs])
    for nodes in (2, 100, 1000):  # the closed form: the node count changes nothing
        np.testing.assert_allclose(th.correlation_map(np.array(cs), activation, **kw, q=q, nodes=nodes),
                                   expected, atol=1e-12, rtol=0)
    chi_expected = [sigma_w2 * _leaky_derivative_reference(c, a) for c in cs]
    np.testing.assert_allclose([th.chi_c(activation, **kw, q=q, c=c) for c in cs], chi_expected, atol=1e-12, rtol=0)
    assert th.chi_1(activation, **kw) == pytest.approx(sigma_w2 * (1 + a * a) / 2, rel=1e-14)


def test_relu_with_bias_matches_cho_saul_kernel_plus_bias_variance():
    # Pre-activation covariance σ_w²·K(s, s') + σ_b², K the degree-1 arc-cosine kernel of the
    # previous pre-activations: K = q·J1(θ)/(2π). Written out from Cho & Saul's J1 here.
    sigma_w2, sigma_b2, q = 1.8, 0.05, 0.9
    theta = np.linspace(0, np.pi, 17)
    j1 = np.sin(theta) + (np.pi - theta) * np.cos(theta)
    top = sigma_w2 * q * j1 / (2 * np.pi) + sigma_b2
    got = th.correlation_map(np.cos(theta), "relu", sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q)
    np.testing.assert_allclose(got, top / (sigma_w2 * q / 2 + sigma_b2), atol=1e-12, rtol=0)
    assert got[0] == pytest.approx(1.0, abs=1e-15)


def test_piecewise_linear_fixed_points_are_closed_form():
    # q ↦ A·q + σ_b² with A = σ_w²(1 + a²)/2.
    assert th.q_star("relu", sigma_w2=1.0, sigma_b2=0.5) == pytest.approx(1.0, rel=1e-15)
    a2 = th.LEAKY_SLOPE**2
    assert th.q_star("leaky_relu", sigma_w2=1.5, sigma_b2=0.1) == pytest.approx(0.1 / (1 - 0.75 * (1 + a2)), rel=1e-14)
    assert th.q_star("relu", sigma_w2=2.0, q0=3.7) == 3.7  # every q is fixed
    assert th.q_star("relu", sigma_w2=2.0, sigma_b2=0.1) == math.inf
    assert th.q_star("relu", sigma_w2=1.0) == 0.0
    # χ₁ of ReLU does not depend on q, even where q* is infinite.
    assert th.chi_1("relu", sigma_w2=3.0, sigma_b2=0.1) == pytest.approx(1.5)


def test_relu_quadrature_converges_like_one_over_nodes_which_is_why_closed_forms_are_used():
    c = np.linspace(-1, 1, 21)
    relu = lambda u: np.maximum(u, 0)  # noqa: E731
    for nodes in (50, 200):
        quad = K.gaussian_pair_expectation(relu, relu, c, 1.0, nodes) * 2  # normalised by E[relu²] = 1/2
        err = np.abs(quad - K.relu_correlation_map(c)).max()
        assert 1e-6 < err < 0.3 / nodes  # visibly inexact, and within the 1/nodes bound


@pytest.mark.parametrize("q", [0.2, 1.0, 4.0])
def test_erf_pair_expectation_matches_williams_closed_form(q):
    # Williams 1997: E[erf(u1)erf(u2)] = (2/π)·arcsin(2·q·c / (1 + 2q)) for variances q, correlation c.
    c = np.array([-0.9, -0.3, 0.0, 0.4, 0.95, 1.0])
    # Saturating φ at large q is step-like on the z scale: rounding-level needs about 40·q nodes
    # (measured at q = 4: 2e-7 with 100 nodes, 8e-13 with 200, 1e-15 with 400).
    nodes = 100 if q <= 1 else 400
    got = K.gaussian_pair_expectation(special.erf, special.erf, c, q, nodes)
    np.testing.assert_allclose(got, 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q)), atol=1e-12, rtol=0)
    second = K.gaussian_expectation(lambda u: special.erf(u) ** 2, q, nodes)
    assert float(second) == pytest.approx(2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)), abs=1e-12)


@pytest.mark.parametrize("name, f", [("tanh", np.tanh), ("erf", special.erf),
                                     ("gelu", lambda u: u * special.ndtr(u))])
@pytest.mark.parametrize("c", [-0.6, 0.5])
def test_pair_expectation_matches_monte_carlo(name, f, c, rng):
    q = 1.4
    z1, z2 = rng.standard_normal((2, MC_DRAWS))
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    values = f(u1) * f(u2)
    se = values.std() / math.sqrt(MC_DRAWS)
    assert abs(float(K.gaussian_pair_expectation(f, f, c, q, 100)) - values.mean()) <= 5 * se, name


def test_pair_expectation_blocks_large_grids_without_changing_values():
    c = np.linspace(-0.9, 0.9, 7).reshape(7, 1)  # 7 correlations × 1000² points: blocked evaluation
    big = K.gaussian_pair_expectation(np.tanh, np.tanh, c, 0.8, 1000)
    small = K.gaussian_pair_expectation(np.tanh, np.tanh, c, 0.8, 100)
    assert big.shape == (7, 1)
    np.testing.assert_allclose(big, small, atol=1e-13, rtol=0)
