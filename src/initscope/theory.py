"""Closed forms that the measurements are checked against and overlaid with.

Everything here is the infinite-width / expectation-over-weights answer for the
model in DESIGN.md with zero shifts, no normalization and no residual branch.
Pure numpy; no I/O.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "relu_correlation_map",
    "activation_second_moment_factor",
    "weight_variance",
    "expected_rms",
    "weight_norm_density",
]


def relu_correlation_map(c: np.ndarray | float) -> np.ndarray:
    """The ReLU arc-cosine kernel map of correlations, one layer deep.

    If two inputs have cosine c, their ReLU features under Gaussian weights and
    zero bias have cosine (sqrt(1 - c²) + (π - arccos c)·c) / π
    (Cho & Saul 2009, the degree-1 arc-cosine kernel, normalised).
    It does not depend on the weight variance, so it holds for any scale.

    c: any shape, values in [-1, 1] (clipped there). Returns the same shape.
    """
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    return (np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi


def activation_second_moment_factor(activation: str, negative_slope: float = 0.01) -> float:
    """E[φ(z)²] / E[z²] for symmetric z, where that ratio is a constant.

    ReLU keeps half of a symmetric variable's second moment, leaky ReLU keeps
    (1 + a²)/2 of it, the identity all of it. For tanh and GELU the ratio
    depends on the scale, so there is no constant and NaN is returned.
    """
    if activation == "relu":
        return 0.5
    if activation == "leaky_relu":
        return 0.5 * (1.0 + negative_slope**2)
    if activation == "identity":
        return 1.0
    return math.nan


def weight_variance(init: str, fan_in: int, fan_out: int, gain: float) -> float:
    """E[w_ij²] of one entry of W (fan_in, fan_out) under an initializer.

    All registry rules have zero-mean entries that are uncorrelated within a
    column, so a unit's pre-activation second moment is fan_in·E[w²]·(mean s²).
    `sphere` puts a column on the sphere of radius gain, so E[w²] = gain²/fan_in;
    `sphere-rows` does the same for rows (gain²/fan_out); `orthogonal` has
    orthonormal columns (fan_in ≥ fan_out) or rows (fan_in < fan_out).
    """
    if fan_in <= 0 or fan_out <= 0:
        return math.nan
    g2 = gain * gain
    rules = {
        "normal": g2,
        "uniform": g2 / 3.0,
        "sphere": g2 / fan_in,
        "sphere-rows": g2 / fan_out,
        "xavier-normal": g2 * 2.0 / (fan_in + fan_out),
        "xavier-uniform": g2 * 2.0 / (fan_in + fan_out),
        "kaiming-normal": g2 / fan_in,
        "kaiming-uniform": g2 / fan_in,
        "lecun-normal": g2 / fan_in,
        "orthogonal": g2 / max(fan_in, fan_out),
        "torch-default": g2 / (3.0 * fan_in),
    }
    return rules.get(init, math.nan)


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

    For i.i.d. N(0, σ²) entries the norm is σ times a chi variable with fan_in
    degrees of freedom. That covers normal (σ = gain), kaiming-normal and
    lecun-normal (σ = gain/sqrt(fan_in)), and xavier-normal when fan_out is
    given (σ = gain·sqrt(2/(fan_in+fan_out))).
    Returns None where the norm has no such closed form (sphere: a spike at gain).
    """
    from scipy.stats import chi

    sigma = {
        "normal": gain,
        "kaiming-normal": gain / math.sqrt(fan_in) if fan_in > 0 else math.nan,
        "lecun-normal": gain / math.sqrt(fan_in) if fan_in > 0 else math.nan,
    }.get(init)
    if init == "xavier-normal" and fan_out is not None and fan_in + fan_out > 0:
        sigma = gain * math.sqrt(2.0 / (fan_in + fan_out))
    if sigma is None or not math.isfinite(sigma) or fan_in <= 0:
        return None
    r = np.asarray(r, dtype=np.float64)
    return chi.pdf(r / sigma, df=fan_in) / sigma
