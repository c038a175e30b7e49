"""Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) against Monte Carlo and simulation.

Every tolerance is derived from the number of draws (Monte Carlo: 5 standard
errors), from the quadrature's known convergence, from rounding (the closed
forms of piecewise-linear φ), or from the width and number of networks of a simulation.
"""

import math

import numpy as np
import pytest
from scipy import stats

from initscope.core import theory as th
from initscope.core.initializers import ACTIVATIONS, draw, recommended_gain
from initscope.core.network import LEAKY_SLOPE, Architecture, activate, draw_shifts, layer_forward

MC_DRAWS = 400_000


def _mc_mean(values: np.ndarray) -> tuple[float, float]:
    """Monte Carlo mean and its standard error."""
    return float(values.mean()), float(values.std() / math.sqrt(values.size))


def _correlated_pair(c: float, q: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    z1, z2 = rng.standard_normal((2, n))
    return math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("q, sigma_w2, sigma_b2", [(0.3, 1.0, 0.0), (1.0, 2.0, 0.1), (4.0, 1.5, 0.5)])
def test_q_map_matches_monte_carlo(activation, q, sigma_w2, sigma_b2, rng):
    z = rng.standard_normal(MC_DRAWS)
    mean, se = _mc_mean(sigma_w2 * activate(activation, math.sqrt(q) * z) ** 2)
    predicted = float(th.q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2))
    assert abs(predicted - (mean + sigma_b2)) <= 5 * se, (predicted, mean + sigma_b2, se)


def test_q_map_is_vectorised_and_exact_for_relu_like_maps():
    q = np.array([[0.0, 0.5], [2.0, 7.0]])
    # ReLU keeps half the second moment, leaky ReLU (1 + a²)/2, the identity all:
    # an even node count integrates these exactly (symmetric nodes, quadratics on each side).
    np.testing.assert_allclose(th.q_map(q, "relu", sigma_w2=2.0, sigma_b2=0.25), q + 0.25, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(th.q_map(q, "leaky_relu", sigma_w2=1.0),
                               0.5 * (1 + LEAKY_SLOPE**2) * q, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(th.q_map(q, "identity", sigma_w2=0.5, sigma_b2=1.0), 0.5 * q + 1.0, rtol=1e-13)


@pytest.mark.parametrize("nodes", [50, 100, 200])
def test_general_correlation_map_is_the_relu_arc_cosine_map(nodes):
    c = np.linspace(-1, 1, 41)
    # The closed form (Cho & Saul 2009), not a quadrature: the node count changes nothing.
    quad = th.correlation_map(c, "relu", sigma_w2=2.0, nodes=nodes)
    np.testing.assert_allclose(quad, th.relu_correlation_map(c), atol=1e-12, rtol=0)
    # Independent of the weight scale and of q, as the closed form says.
    np.testing.assert_allclose(th.correlation_map(c, "relu", sigma_w2=0.7, q=5.0, nodes=nodes), quad, atol=1e-12)


def test_general_correlation_map_matches_the_leaky_closed_form():
    c = np.linspace(-1, 1, 41)
    for a in (LEAKY_SLOPE, 0.2):
        closed = th.leaky_relu_correlation_map(c, negative_slope=a)
        if a == LEAKY_SLOPE:
            quad = th.correlation_map(c, "leaky_relu", sigma_w2=2.0, nodes=200)
            np.testing.assert_allclose(quad, closed, atol=1e-12, rtol=0)
        # Limits: ReLU at a = 0, identity at a = 1, fixed point at c = 1.
        assert th.leaky_relu_correlation_map(1.0, negative_slope=a) == pytest.approx(1.0)
    np.testing.assert_allclose(th.leaky_relu_correlation_map(c, 0.0), th.relu_correlation_map(c), atol=1e-15)
    np.testing.assert_allclose(th.leaky_relu_correlation_map(c, 1.0), c, atol=1e-15)


@pytest.mark.parametrize("a", [LEAKY_SLOPE, 0.2, 0.5])
@pytest.mark.parametrize("c", [-0.8, 0.0, 0.4, 0.95])
def test_leaky_relu_correlation_map_matches_monte_carlo(a, c, rng):
    u, v = _correlated_pair(c, 1.0, MC_DRAWS, rng)
    phi_u, phi_v = (np.where(x > 0, x, a * x) for x in (u, v))
    second = 0.5 * (1 + a * a)  # E[φ(u)²], exact
    mean, se = _mc_mean(phi_u * phi_v / second)
    assert abs(th.leaky_relu_correlation_map(c, negative_slope=a) - mean) <= 5 * se


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
@pytest.mark.parametrize("c", [-0.5, 0.3, 0.9])
def test_smooth_correlation_map_matches_monte_carlo(activation, c, rng):
    sigma_w2, sigma_b2, q = 1.8, 0.2, 0.9
    u, v = _correlated_pair(c, q, MC_DRAWS, rng)
    mean, se = _mc_mean(sigma_w2 * activate(activation, u) * activate(activation, v))
    q_next = float(th.q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2))
    predicted = float(th.correlation_map(c, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q))
    assert abs(predicted - (mean + sigma_b2) / q_next) <= 5 * se / q_next


def test_chi_1_is_one_at_criticality_for_relu():
    assert th.chi_1("relu", sigma_w2=2.0, sigma_b2=0.0) == pytest.approx(1.0, abs=1e-13)
    gain2 = recommended_gain("leaky_relu") ** 2
    assert th.chi_1("leaky_relu", sigma_w2=gain2) == pytest.approx(1.0, abs=1e-13)
    assert th.chi_1("relu", sigma_w2=1.0) == pytest.approx(0.5)  # xavier: ordered, gradients vanish
    assert th.correlation_depth_scale("relu", sigma_w2=2.0) == math.inf
    assert th.c_star("relu", sigma_w2=2.0) == 1.0


def test_chi_1_matches_monte_carlo_for_tanh(rng):
    sigma_w2, sigma_b2 = 2.5, 0.1
    q = th.q_star("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    z = rng.standard_normal(MC_DRAWS)
    mean, se = _mc_mean(sigma_w2 / np.cosh(math.sqrt(q) * z) ** 4)
    assert abs(th.chi_1("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2) - mean) <= 5 * se


def test_fixed_points():
    for activation, sigma_w2, sigma_b2 in [("tanh", 1.2, 0.3), ("tanh", 4.0, 0.05), ("gelu", 2.0, 0.1),
                                           ("identity", 0.5, 1.0)]:
        q = th.q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        assert float(th.q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)) == pytest.approx(q, rel=1e-10)
        c = th.c_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        assert float(th.correlation_map(c, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)) == pytest.approx(
            c, abs=1e-10)
    assert th.q_star("identity", sigma_w2=0.5, sigma_b2=1.0) == pytest.approx(2.0, rel=1e-10)
    assert th.q_star("relu", sigma_w2=3.0) == math.inf
    assert th.q_star("tanh", sigma_w2=0.9) == 0.0
    # Chaotic tanh: c* < 1 and the slope there is below 1; ordered: c* = 1 and χ_c = χ₁.
    assert th.c_star("tanh", sigma_w2=4.0, sigma_b2=0.05) < 1.0
    assert 0 < th.chi_c("tanh", sigma_w2=4.0, sigma_b2=0.05) < 1.0
    assert th.chi_c("tanh", sigma_w2=1.2, sigma_b2=0.3) == pytest.approx(th.chi_1("tanh", sigma_w2=1.2, sigma_b2=0.3))


def _correlation_decay_rate(sigma_w2, sigma_b2, *, width, networks, pairs, depth, first, rng):
    """Fitted e-fold rate of |c_l − c*| over layers first..depth, from simulated tanh networks.

    Pairs of inputs start with pre-activation second moment q* and correlation
    c* − 0.05 at layer 1; weights are kaiming-normal with gain σ_w (so fan_in·E[w²] = σ_w²),
    shifts normal with std σ_b. c_l is the pre-activations' cosine over units.
    Returns the slope of ln(mean over pairs of |c_l − c*|) against l, one per network.
    """
    q = th.q_star("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    c_star = th.c_star("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    assert c_star == 1.0  # the ordered phase; c_l − c* then shrinks in proportion to itself
    c1 = c_star - 0.05
    c0 = (c1 * q - sigma_b2) / (q - sigma_b2)  # the input cosine that gives c1 after layer 1
    g = rng.standard_normal((networks, pairs, 2, width))
    u1 = g[:, :, 0] / np.linalg.norm(g[:, :, 0], axis=-1, keepdims=True)
    v = g[:, :, 1] - (g[:, :, 1] * u1).sum(-1, keepdims=True) * u1
    u2 = v / np.linalg.norm(v, axis=-1, keepdims=True)
    radius = math.sqrt(width * (q - sigma_b2) / sigma_w2)
    S = radius * np.stack([u1, c0 * u1 + math.sqrt(1 - c0 * c0) * u2], axis=2).reshape(networks, 2 * pairs, width)
    arch = Architecture("tanh")
    deviation = np.empty((networks, depth))
    for layer in range(depth):
        W = np.stack([draw("kaiming-normal", width, width, gain=math.sqrt(sigma_w2), rng=rng) for _ in range(networks)])
        b = np.stack([draw_shifts("normal", width, scale=math.sqrt(sigma_b2), rng=rng) for _ in range(networks)])
        S, z = layer_forward(S, W, b, arch)
        z1, z2 = z[:, 0::2], z[:, 1::2]
        c = (z1 * z2).sum(-1) / np.sqrt((z1 * z1).sum(-1) * (z2 * z2).sum(-1))
        deviation[:, layer] = np.abs((c - c_star).mean(axis=1))
    layers = np.arange(first, depth + 1)
    return np.array([np.polyfit(layers, np.log(d[first - 1:]), 1)[0] for d in deviation])


@pytest.mark.slow
@pytest.mark.parametrize("sigma_w2, sigma_b2", [(1.2, 0.3), (1.0, 0.05)])
def test_correlation_depth_scale_matches_simulated_tanh_networks(sigma_w2, sigma_b2, rng):
    width, networks = 500, 8
    xi = th.correlation_depth_scale("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    assert 1.5 < xi < 5  # off criticality, so the decay is visible within 12 layers
    slopes = _correlation_decay_rate(sigma_w2, sigma_b2, width=width, networks=networks, pairs=16, depth=12,
                                     first=3, rng=rng)
    # Mean field says slope = −1/ξ_c. The infinite-width map iterated from the same start fits
    # the same window to within 0.002 (layer 3 on is linear enough). At finite width each layer's
    # cosine fluctuates by O(1/sqrt(width)) relative to 1 − c, and networks are independent, so the
    # fitted slope has standard error ≈ k/sqrt(width·networks); k ≈ 0.6 was measured as the
    # spread over 11 seeds (std 0.0085 at width 500, 8 networks). Five standard errors:
    tolerance = 5 * 0.6 / math.sqrt(width * networks)
    assert abs(slopes.mean() + 1 / xi) <= tolerance, (slopes.mean(), -1 / xi, tolerance)
    # and the tolerance tells apart neighbouring depth scales (here ~0.45 and ~0.28 per layer)
    assert tolerance < 0.1


def test_weight_norm_distribution_is_chi(rng):
    fan_in, fan_out, gain = 40, 30, 1.3
    for init in ("normal", "kaiming-normal", "lecun-normal", "xavier-normal"):
        dist = th.weight_norm_distribution(init, fan_in, fan_out, gain)
        norms = np.concatenate([np.linalg.norm(draw(init, fan_in, fan_out, gain=gain, rng=rng), axis=0)
                                for _ in range(200)])
        assert stats.kstest(norms, dist.cdf).pvalue > 1e-4
        r = np.linspace(0.01, 3 * dist.mean(), 7)
        np.testing.assert_allclose(th.weight_norm_density(init, fan_in, gain, r, fan_out=fan_out), dist.pdf(r))
    # The seed's normal weights: norms ≈ sqrt(fan_in − 1/2), far above 1.
    assert th.weight_norm_distribution("normal", 40, 40, 1.0).mean() == pytest.approx(math.sqrt(39.5), rel=1e-3)
    assert th.weight_norm_distribution("sphere", 40, 40, 1.0) is None
    assert th.weight_norm_distribution("xavier-normal", 40, None, 1.0) is None
    assert th.weight_norm_density("sphere", 40, 1.0, np.ones(3)) is None


def test_sigma_helpers_follow_the_model():
    assert th.weight_sigma2("kaiming-normal", 40, 40, math.sqrt(2)) == pytest.approx(2.0)
    assert th.weight_sigma2("normal", 40, 10, 1.0) == pytest.approx(40.0)
    assert th.shift_sigma2("normal", 0.5) == pytest.approx(0.25)
    assert th.shift_sigma2("uniform", 0.5) == pytest.approx(0.25 / 3)
    assert th.shift_sigma2("zeros", 3.0) == 0.0
    assert math.isnan(th.shift_sigma2("linspace", 1.0))


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="'nodes'"):
        th.q_map(1.0, "tanh", sigma_w2=1.0, nodes=0)
    with pytest.raises(ValueError, match="'activation'"):
        th.q_map(1.0, "swish", sigma_w2=1.0)
    with pytest.raises(ValueError, match="'activation'"):
        th.correlation_map(0.5, "swish", sigma_w2=1.0)
