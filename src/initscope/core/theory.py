"""Closed forms that the measurements are checked against and overlaid with.

Everything here is the infinite-width / expectation-over-weights answer for the
model in DESIGN.md with no normalization and no residual branch: the He/Xavier
recursion, and the mean-field maps of Poole et al. 2016 and Schoenholz et al.
2017 (i.i.d. shifts of variance σ_b²) for any activation. For ReLU, leaky ReLU
and the identity every map is the exact arc-cosine closed form (Cho & Saul
2009), with or without shifts; other activations use a Golub–Welsch
Gauss–Hermite rule (`core.kernels`). Pure numpy and scipy; no I/O.

Mean-field notation. A unit's pre-activation z = s·w + b has second moment
q = σ_w²·mean(s²) + σ_b², with σ_w² = fan_in·E[w²] (`weight_sigma2`) and
σ_b² = E[b²] (`shift_sigma2`); over the weights, z is Gaussian at large width.
So q_{l+1} = σ_w²·E[φ(√q_l·z)²] + σ_b² with z ~ N(0, 1), and two inputs whose
pre-activations have correlation c map to c_{l+1} = (σ_w²·E[φ(u1)φ(u2)] + σ_b²)/q_{l+1},
(u1, u2) centred Gaussian with variances q and correlation c.
"""

from __future__ import annotations

import math

import numpy as np

from initscope.core.activations import ACTIVATIONS, LEAKY_SLOPE, activation as activation_entry
from initscope.core.initializers import REGISTRY as INIT_REGISTRY, variance as init_variance
from initscope.core.kernels import (
    check_nodes,
    gaussian_expectation,
    gaussian_pair_expectation,
    piecewise_linear_cross_moment,
    piecewise_linear_derivative_cross,
    piecewise_linear_second_moment,
)
from initscope.core.network import activate, activation_derivative

__all__ = [
    "DEFAULT_NODES",
    "weight_sigma2",
    "shift_sigma2",
    "q_map",
    "q_star",
    "correlation_map",
    "c_star",
    "chi_1",
    "chi_c",
    "correlation_depth_scale",
    "weight_norm_distribution",
    "activation_second_moment_factor",
    "weight_variance",
    "expected_rms",
    "weight_norm_density",
]


def activation_second_moment_factor(activation: str, negative_slope: float = LEAKY_SLOPE) -> float:
    """E[φ(z)²] / E[z²] for symmetric z, where that ratio is a constant: the registry entry's.

    ReLU keeps half of a symmetric variable's second moment, leaky ReLU keeps
    (1 + a²)/2 of it, the identity all of it. For tanh and GELU (and unknown
    names) the ratio depends on the scale, so there is no constant and NaN is
    returned. negative_slope: leaky ReLU's a, when not torch's 0.01.
    """
    if activation == "leaky_relu" and negative_slope != LEAKY_SLOPE:
        return 0.5 * (1.0 + negative_slope**2)
    entry = ACTIVATIONS.get(activation)
    return math.nan if entry is None else entry.second_moment


def weight_variance(init: str, fan_in: int, fan_out: int, gain: float) -> float:
    """E[w_ij²] of one entry of W (fan_in, fan_out) under an initializer: its registry entry's `variance`.

    All built-in rules have zero-mean entries that are uncorrelated within a
    column, so a unit's pre-activation second moment is fan_in·E[w²]·(mean s²).
    `sphere` puts a column on the sphere of radius gain, so E[w²] = gain²/fan_in;
    `sphere-rows` does the same for rows (gain²/fan_out); `orthogonal` has
    orthonormal columns (fan_in ≥ fan_out) or rows (fan_in < fan_out).
    NaN for entries without a variance (zero, the layer-aware ones) and unknown names.
    """
    if init not in INIT_REGISTRY:
        return math.nan
    return init_variance(init, fan_in, fan_out, gain)


def expected_rms(
    rms0: float,
    *,
    init: str,
    gain: float,
    activation: str,
    input_dim: int,
    width: int,
    depth: int,
) -> np.ndarray:
    """The He/Xavier second-moment recursion, as rms per layer.

    With zero shifts, the pre-activation of a unit has E[z²] = fan_in·E[w²]·m_{l-1}
    where m = mean of s² over units, and z is symmetric because the weights
    are; so m_l = fan_in·E[w²]·κ·m_{l-1} with κ from
    `activation_second_moment_factor` (He et al. 2015, eq. 9; Glorot & Bengio
    2010). Kaiming + ReLU gives m_l = m_0; Xavier (gain 1) + ReLU on square
    layers halves m each layer. The expectation is over weights for the given
    data, so it holds at any width; finite width only adds spread.

    Returns (depth + 1,) rms values, layer 0 = rms0; NaN when no closed form.
    """
    kappa = activation_second_moment_factor(activation)
    out = np.full(depth + 1, math.nan)
    out[0] = rms0
    m = rms0 * rms0
    for layer in range(1, depth + 1):
        fan_in = input_dim if layer == 1 else width
        m = m * fan_in * weight_variance(init, fan_in, width, gain) * kappa
        out[layer] = math.sqrt(m) if m >= 0 else math.nan
    return out


def weight_norm_density(
    init: str, fan_in: int, gain: float, r: np.ndarray, fan_out: int | None = None
) -> np.ndarray | None:
    """Density of one neuron's weight-vector 2-norm at the points r.

    For i.i.d. N(0, σ²) entries the norm is σ times a chi variable with k =
    fan_in degrees of freedom. That covers normal (σ = gain), kaiming-normal and
    lecun-normal (σ = gain/sqrt(fan_in)), and xavier-normal when fan_out is
    given (σ = gain·sqrt(2/(fan_in+fan_out))); see `weight_norm_distribution`.
    The chi density in closed form, in logs so that k in the thousands does not
    overflow: f(r) = (r/σ)^(k−1)·exp(−(r/σ)²/2) / (2^(k/2−1)·Γ(k/2)·σ), r ≥ 0
    (no scipy.stats: importing it took over a second of every report).
    Returns None where the norm has no such closed form (sphere: a spike at gain).
    """
    sigma = _chi_scale(init, fan_in, fan_out, gain)
    if sigma is None:
        return None
    x = np.asarray(r, dtype=np.float64) / sigma
    k = float(fan_in)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = (k - 1.0) * np.log(x) - 0.5 * x * x - (0.5 * k - 1.0) * math.log(2.0) - math.lgamma(0.5 * k)
        density = np.exp(log_f) / sigma
    density = np.where(x > 0, density, (1.0 if k == 1 else 0.0) * math.sqrt(2.0 / math.pi) / sigma)
    return np.where(x >= 0, density, 0.0)


def weight_norm_distribution(init: str, fan_in: int, fan_out: int | None, gain: float):
    """The distribution of one neuron's weight-vector 2-norm, as a frozen scipy.stats chi.

    A neuron's weights are a column of W (fan_in, fan_out): fan_in i.i.d.
    N(0, σ²) entries, so its norm is σ·χ(fan_in), σ² = `weight_variance`
    (normal, kaiming-normal, lecun-normal; xavier-normal needs fan_out).
    Its mean is σ·√2·Γ((k+1)/2)/Γ(k/2) ≈ σ·√(k − 1/2): the seed's normal
    weights (σ = 1, k = 40) have norms ≈ 6.3, which is why its states explode.
    Returns None where the norm is not chi: a point mass at gain (sphere,
    orthogonal with fan_in ≥ fan_out) or no closed form (uniform entries,
    sphere-rows, other rules).
    """
    sigma = _chi_scale(init, fan_in, fan_out, gain)
    if sigma is None:
        return None
    from scipy.stats import chi

    return chi(df=fan_in, scale=sigma)


def _chi_scale(init: str, fan_in: int, fan_out: int | None, gain: float) -> float | None:
    """σ of i.i.d. N(0, σ²) weights, or None where the initializer's norms are not σ·χ(fan_in)."""
    if init not in ("normal", "kaiming-normal", "lecun-normal", "xavier-normal"):
        return None
    if fan_in is None or fan_in <= 0 or (init == "xavier-normal" and (fan_out is None or fan_out <= 0)):
        return None
    variance = weight_variance(init, fan_in, fan_out if fan_out is not None else 1, gain)
    if not (math.isfinite(variance) and variance > 0):
        return None
    return math.sqrt(variance)


# ---------------------------------------------------------------------------
# Mean field (Poole et al. 2016; Schoenholz et al. 2017)

# Piecewise-linear φ use closed forms and no nodes. Saturating φ (tanh, erf) are step-like on the
# rule's scale when q is large, so Gauss–Hermite converges slower as q grows: with 100 nodes the
# error of E[tanh(√q·z)²] is 7e-12 at q = 1, 6e-7 at q = 3, 5e-4 at q = 10 (against adaptive
# quadrature); about 40·q nodes reach rounding. GELU converges faster (4e-14 at q = 3).
DEFAULT_NODES = 100


def _slope(activation: str) -> float | None:
    """The negative-side slope a of a piecewise-linear φ = max(u, 0) + a·min(u, 0), else None.

    These φ have exact Gaussian expectations (`core.kernels`), so their maps
    use no quadrature at all. The registry entry says (`Activation.slope`).
    """
    entry = ACTIVATIONS.get(activation)
    return None if entry is None else entry.slope


def weight_sigma2(init: str, fan_in: int, fan_out: int, gain: float) -> float:
    """σ_w² = fan_in·E[w²] of an initializer: the factor on mean(s²) in a unit's q."""
    return fan_in * weight_variance(init, fan_in, fan_out, gain)


def shift_sigma2(shift: str, shift_scale: float) -> float:
    """σ_b² = E[b²] of i.i.d. shifts: 0 (zeros), s² (normal), s²/3 (uniform).

    The seed's linspace shifts (and data-dependent ones) are not i.i.d.
    across units, so the mean-field maps do not apply to them: NaN.
    """
    s2 = float(shift_scale) ** 2
    return {"zeros": 0.0, "normal": s2, "uniform": s2 / 3.0}.get(shift, math.nan)


def _check_activation(activation: str) -> None:
    activation_entry(activation)  # raises the registry's ValueError for unknown names


def q_map(
    q: np.ndarray | float,
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    nodes: int = DEFAULT_NODES,
) -> np.ndarray:
    """One layer of the mean-field second-moment map, q ↦ σ_w²·E[φ(√q·z)²] + σ_b².

    Poole et al. 2016 (the length map). ReLU, leaky ReLU and the identity:
    the closed form σ_w²·q·(1 + a²)/2 + σ_b². Others: a `nodes`-point
    Gauss–Hermite rule, converged to rounding for smooth φ at moderate q.
    q: pre-activation second moments, any shape (≥ 0). Returns q's shape.
    """
    _check_activation(activation)
    check_nodes(nodes)
    slope = _slope(activation)
    if slope is not None:
        return sigma_w2 * piecewise_linear_second_moment(np.clip(np.asarray(q, dtype=np.float64), 0.0, None),
                                                         slope) + sigma_b2
    return sigma_w2 * gaussian_expectation(lambda u: activate(activation, u) ** 2, q, nodes) + sigma_b2


def q_star(
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q0: float = 1.0,
    nodes: int = DEFAULT_NODES,
    tol: float = 1e-13,
    max_iter: int = 10_000,
) -> float:
    """The fixed point q* of `q_map`, by iterating it from q0.

    Returns inf where q grows without bound (e.g. ReLU with σ_w² > 2), 0 where
    it dies out (tanh with σ_b = 0 and σ_w² ≤ 1), and q0 where every q is
    fixed (ReLU at σ_w² = 2, σ_b = 0: the map is the identity). Should the
    iteration not settle within max_iter steps, q* is bracketed on a log grid
    over [1e-12, 1e12] and refined by Brent's method instead.
    """
    _check_activation(activation)
    check_nodes(nodes)
    if _slope(activation) is not None:
        return _q_star_piecewise_linear(_slope(activation), sigma_w2, sigma_b2, float(q0))
    q = float(q0)
    for _ in range(max_iter):
        nxt = float(q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes))
        if not math.isfinite(nxt) or nxt > 1e150:
            return math.inf
        if abs(nxt - q) <= tol * max(q, nxt) or nxt < 1e-300:
            return nxt if nxt >= 1e-300 else 0.0
        q = nxt
    return _q_star_bracketed(activation, sigma_w2, sigma_b2, nodes)


def _q_star_piecewise_linear(slope: float, sigma_w2: float, sigma_b2: float, q0: float) -> float:
    """q* of the affine map q ↦ A·q + σ_b², A = σ_w²·(1 + a²)/2, reached from q0.

    A < 1: σ_b²/(1 − A). A = 1: q0 without shifts (every q is fixed), inf with
    them. A > 1: inf, unless q0 = σ_b² = 0 (0 stays 0).
    """
    gain = sigma_w2 * 0.5 * (1.0 + slope * slope)
    if gain < 1.0:
        return sigma_b2 / (1.0 - gain)
    if sigma_b2 == 0.0 and (gain == 1.0 or q0 == 0.0):
        return q0
    return math.inf


def _q_star_bracketed(activation: str, sigma_w2: float, sigma_b2: float, nodes: int) -> float:
    """q* where q_map(q) − q changes from + to −, on a log grid, refined by Brent's method.

    For maps whose slope at q* is so close to 1 that iteration crawls (near
    criticality, or a homogeneous φ whose q drifts geometrically at a rate ≈ 1).
    """
    from scipy.optimize import brentq

    def gap(q):
        return q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes) - q

    grid = np.logspace(-12, 12, 241)
    g = gap(grid)
    down = np.flatnonzero((g[:-1] > 0) & (g[1:] <= 0))
    if len(down):
        a, b = grid[down[-1]], grid[down[-1] + 1]
        return float(brentq(lambda t: float(gap(t)), a, b, xtol=1e-300, rtol=1e-14))
    if np.all(g > 0):
        return math.inf
    if np.all(g < 0):
        return 0.0
    return math.nan


def _pair_expectation(fn, activation: str, c: np.ndarray, q: float, nodes: int) -> np.ndarray:
    """E[f(u1)·f(u2)], f = fn(activation, ·), for (u1, u2) centred Gaussian, variances q, correlation c."""
    return gaussian_pair_expectation(lambda u: fn(activation, u), lambda u: fn(activation, u), c, q, nodes)


def _default_q(activation: str, sigma_w2: float, sigma_b2: float, nodes: int) -> float:
    q = q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes)
    if not (math.isfinite(q) and q > 0) and sigma_b2 == 0 and activation_entry(activation).homogeneous:
        return 1.0  # a positively homogeneous φ's correlation map is the same at every scale
    return q


def correlation_map(
    c: np.ndarray | float,
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q: float | None = None,
    nodes: int = DEFAULT_NODES,
) -> np.ndarray:
    """One layer of the mean-field correlation map (Poole et al. 2016), any activation.

    c ↦ (σ_w²·E[φ(u1)φ(u2)] + σ_b²) / (σ_w²·E[φ(u)²] + σ_b²), both inputs'
    pre-activations having second moment q (default: the fixed point `q_star`;
    for ReLU, leaky ReLU and the identity with σ_b = 0 the map does not depend
    on q, and q = 1 stands in where q* is 0 or infinite), so the denominator
    is q_map(q), which equals q at q*.

    ReLU, leaky ReLU and the identity: exact, the arc-cosine kernel
    (Cho & Saul 2009) with the shifts added to the pre-activation covariance,
    c' = (σ_w²·q·((1 − a)²·J1(θ)/(2π) + a·c) + σ_b²) / (σ_w²·q·(1 + a²)/2 + σ_b²);
    with σ_b = 0 that is `kernels.relu_correlation_map` / `kernels.leaky_relu_correlation_map`
    at any q. Others: a 2-D Gauss–Hermite rule (`kernels.gaussian_pair_expectation`).
    c: any shape; returns that shape.
    """
    _check_activation(activation)
    check_nodes(nodes)
    if q is None:
        q = _default_q(activation, sigma_w2, sigma_b2, nodes)
    c = np.asarray(c, dtype=np.float64)
    if not (math.isfinite(q) and q > 0):
        return np.full(c.shape, math.nan)
    slope = _slope(activation)
    if slope is not None:
        cross = piecewise_linear_cross_moment(c, q, slope)
    else:
        cross = _pair_expectation(activate, activation, c, q, nodes)
    top = sigma_w2 * cross + sigma_b2
    bottom = float(q_map(q, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes))
    return top / bottom


def chi_1(
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q: float | None = None,
    nodes: int = DEFAULT_NODES,
) -> float:
    """χ₁ = σ_w²·E[φ'(√q*·z)²]: the slope of the correlation map at c = 1.

    Schoenholz et al. 2017 (and Poole et al. 2016): χ₁ < 1 is the ordered
    phase (correlations go to 1), χ₁ > 1 the chaotic one, χ₁ = 1 the edge of
    chaos, where gradients neither vanish nor explode. ReLU with σ_w² = 2,
    σ_b = 0 (Kaiming) gives exactly 1. q defaults to `q_star`. For ReLU,
    leaky ReLU and the identity χ₁ = σ_w²·(1 + a²)/2 exactly, at any q (even an
    infinite q*, where their maps still have a slope); others use quadrature.
    """
    _check_activation(activation)
    check_nodes(nodes)
    slope = _slope(activation)
    if slope is not None:
        return float(sigma_w2 * piecewise_linear_derivative_cross(1.0, slope))
    if q is None:
        q = _default_q(activation, sigma_w2, sigma_b2, nodes)
    if not math.isfinite(q):
        return math.nan
    return float(sigma_w2 * gaussian_expectation(lambda u: activation_derivative(activation, u) ** 2, q, nodes))


def c_star(
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q: float | None = None,
    nodes: int = DEFAULT_NODES,
) -> float:
    """The stable fixed point c* of `correlation_map` at q (default q*).

    In the ordered phase (χ₁ ≤ 1) c = 1 is stable and attracts every
    correlation: c* = 1. In the chaotic phase (χ₁ > 1) c = 1 repels and c* < 1
    is the largest c where the map crosses the diagonal from above; found on a
    grid of correlations (every 0.05 up to 0.9, then 1 − 10⁻ᵏ for k = 1.5 … 12, so a
    c* just below 1 near the edge of chaos is still bracketed) and refined by
    Brent's method; 1.0 when the map stays above the diagonal up to 1 − 1e-12.
    """
    from scipy.optimize import brentq

    if q is None:
        q = _default_q(activation, sigma_w2, sigma_b2, nodes)
    if not (math.isfinite(q) and q > 0):
        return math.nan
    if chi_1(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q, nodes=nodes) <= 1.0:
        return 1.0

    def gap(c):
        return correlation_map(c, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q, nodes=nodes) - c

    grid = np.concatenate([np.linspace(-1.0, 0.9, 39), 1.0 - np.logspace(-1.5, -12, 22)])
    g = gap(grid)
    down = np.flatnonzero((g[:-1] >= 0) & (g[1:] < 0))
    if len(down) == 0:
        return 1.0 if np.all(g >= 0) else math.nan
    a, b = grid[down[-1]], grid[down[-1] + 1]
    ga, gb = float(gap(a)), float(gap(b))
    if ga * gb > 0 or ga == 0:  # a root at a grid point, rounded differently one by one
        return float(a if abs(ga) <= abs(gb) else b)
    return float(brentq(lambda t: float(gap(t)), a, b, xtol=1e-14, rtol=1e-14))


def chi_c(
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    q: float | None = None,
    c: float | None = None,
    nodes: int = DEFAULT_NODES,
) -> float:
    """χ_c = σ_w²·E[φ'(u1)φ'(u2)] at (q*, c*): the slope of the correlation map at c*.

    Schoenholz et al. 2017, "Deep information propagation": near c*,
    |c_l − c*| ∝ χ_c^l. At c* = 1 it is χ₁. Exact for ReLU, leaky ReLU and the
    identity (the degree-0 arc-cosine kernel, `kernels.piecewise_linear_derivative_cross`).
    """
    check_nodes(nodes)
    if q is None:
        q = _default_q(activation, sigma_w2, sigma_b2, nodes)
    if c is None:
        c = c_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, q=q, nodes=nodes)
    if not (math.isfinite(q) and math.isfinite(c)):
        return math.nan
    slope = _slope(activation)
    if slope is not None:
        return float(sigma_w2 * piecewise_linear_derivative_cross(c, slope))
    return float(sigma_w2 * _pair_expectation(activation_derivative, activation, np.asarray(c), q, nodes))


def correlation_depth_scale(
    activation: str,
    *,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    nodes: int = DEFAULT_NODES,
) -> float:
    """ξ_c = −1/ln χ_c: the depth over which correlations approach c* (|c_l − c*| ∝ e^{−l/ξ_c}).

    Schoenholz et al. 2017 ("Deep information propagation"). It diverges
    (inf) at the edge of chaos, χ_c = 1, where signals propagate to any
    depth; 0 when χ_c = 0.
    """
    x = chi_c(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes)
    if not math.isfinite(x) or x < 0:
        return math.nan
    if x == 0:
        return 0.0
    if x >= 1.0 - 1e-12:  # the edge of chaos, up to the quadrature's rounding
        return math.inf
    return -1.0 / math.log(x)
