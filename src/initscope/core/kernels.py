"""Gaussian expectations the mean-field maps are made of: closed forms where they exist, a stable quadrature otherwise.

Two pieces, both pure numpy/scipy:

- `gauss_hermite(nodes)`: the probabilists' Gauss–Hermite rule, E[f(z)] ≈ Σ w·f(x)
  for z ~ N(0, 1), by Golub & Welsch (1969): the nodes are the eigenvalues of
  the symmetric tridiagonal Jacobi matrix of the normalised Hermite
  recurrence (zero diagonal, off-diagonal √k), the weights the squared first
  components of its eigenvectors. Unlike numpy's `hermegauss`, which
  evaluates the polynomials themselves and overflows to NaN at about 400
  nodes, nothing here exceeds the eigenvectors' unit norm: at any node count
  the rule is finite (the outermost weights underflow to 0, which costs
  nothing) and integrates z², z⁴, z⁶ to within a few ulps.
- Piecewise-linear activations φ(u) = max(u, 0) + a·min(u, 0) (ReLU a = 0,
  leaky ReLU, the identity a = 1): every Gaussian expectation the maps need
  has a closed form, from the degree-1 and degree-0 arc-cosine kernels of
  Cho & Saul (2009). With (u1, u2) centred Gaussian, variances q and
  correlation c, θ = arccos c:

      E[relu(u1)·relu(u2)] = q·J1(θ)/(2π),   J1(θ) = sin θ + (π − θ)·cos θ
      P(u1 > 0, u2 > 0)    = (π − θ)/(2π)  (= J0(θ)/(2π))

  and, writing φ = relu(u) − a·relu(−u) and using E[relu(u1)·u2] = q·c/2,
  E[φ(u1)φ(u2)] = q·((1 − a)²·J1(θ)/(2π) + a·c), E[φ(u)²] = q·(1 + a²)/2,
  E[φ'(u1)φ'(u2)] = ((1 + a²)(π − θ) + 2a·θ)/(2π).
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "LEAKY_SLOPE",
    "MAX_NODES",
    "check_nodes",
    "gauss_hermite",
    "gaussian_expectation",
    "gaussian_pair_expectation",
    "arc_cosine_j1",
    "piecewise_linear_second_moment",
    "piecewise_linear_cross_moment",
    "piecewise_linear_derivative_cross",
    "relu_correlation_map",
    "leaky_relu_correlation_map",
]

# Golub–Welsch forms all n eigenvectors (n² doubles: 128 MB at 4096 nodes, seconds of
# LAPACK), and a tensor rule over a pair has n² points per correlation. Beyond a few
# hundred nodes nothing that the maps integrate changes in double precision, so a larger
# count is refused rather than left to exhaust memory.
MAX_NODES = 4096
# torch.nn.LeakyReLU's default negative slope, so gains and results match torch. Defined here,
# the lowest module that needs it; the activation registry (and network) re-export it.
LEAKY_SLOPE = 0.01
_PAIR_CHUNK = 1 << 21  # points per block of the 2-D rule: ~16 MB of float64 at a time


def check_nodes(nodes) -> int:
    """nodes as an int, or the ValueError naming 'nodes' when it is not an integer in [1, MAX_NODES]."""
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"The 'nodes' parameter must be an integer between 1 and {MAX_NODES}. Got {nodes!r} instead.")
    return int(nodes)


def gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes x (nodes,) ascending and weights w (nodes,) summing to 1.

    E[f(z)] ≈ Σ w·f(x) for z ~ N(0, 1), exact for polynomials of degree
    < 2·nodes. Golub–Welsch on the normalised recurrence (see the module
    docstring), symmetrised so that x = −x[::-1] and w = w[::-1] hold exactly:
    an odd integrand then integrates to 0 to the last bit, and an even node count
    puts no node on a kink at 0. The arrays are read-only (they are cached).
    """
    return _gauss_hermite(check_nodes(nodes))


@functools.lru_cache(maxsize=16)
def _gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    # Cached: fixed-point iterations evaluate the maps thousands of times at one node count.
    from scipy.linalg import eigh_tridiagonal

    if nodes == 1:
        x, w = np.zeros(1), np.ones(1)
    else:
        x, v = eigh_tridiagonal(np.zeros(nodes), np.sqrt(np.arange(1.0, nodes)))
        w = v[0] ** 2
        x = 0.5 * (x - x[::-1])
        w = 0.5 * (w + w[::-1])
        w = w / w.sum()
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def gaussian_expectation(f, q: np.ndarray | float, nodes: int) -> np.ndarray:
    """E[f(u)] for u ~ N(0, q), by `gauss_hermite`; f maps arrays elementwise.

    q: any shape (values < 0 are taken as 0). Returns q's shape.
    """
    x, w = gauss_hermite(nodes)
    q = np.asarray(q, dtype=np.float64)
    u = np.sqrt(np.clip(q, 0.0, None))[..., None] * x
    return f(u) @ w


def gaussian_pair_expectation(f, g, c: np.ndarray | float, q: float, nodes: int) -> np.ndarray:
    """E[f(u1)·g(u2)] for (u1, u2) centred Gaussian with variances q and correlation c.

    A tensor Gauss–Hermite rule on u1 = √q·z1, u2 = √q·(c·z1 + √(1−c²)·z2),
    nodes² points per correlation, evaluated in blocks so memory stays near
    16 MB at any node count. Smooth f, g converge exponentially in nodes; a
    kink (ReLU) that cuts across the grid makes the error fall only like
    1/nodes, which is why piecewise-linear φ use the closed forms below.
    c: any shape, clipped to [-1, 1]. Returns c's shape.
    """
    x, w = gauss_hermite(nodes)
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    r = math.sqrt(max(float(q), 0.0))
    fw = w * f(r * x)  # (k,)
    flat = c.reshape(-1)
    out = np.empty(flat.shape)
    step = max(1, _PAIR_CHUNK // (len(x) * len(x)))
    for start in range(0, flat.size, step):
        cc = flat[start:start + step, None, None]
        u2 = r * (cc * x[:, None] + np.sqrt(1.0 - cc * cc) * x[None, :])  # (b, k, k)
        out[start:start + step] = (g(u2) @ w) @ fw  # inner: E over z2 given z1
    return out.reshape(c.shape)


def arc_cosine_j1(c: np.ndarray | float) -> np.ndarray:
    """Cho & Saul's J1(θ) = sin θ + (π − θ)·cos θ at θ = arccos c (c clipped to [-1, 1]).

    E[relu(u1)relu(u2)] = q·J1/(2π) for unit-correlation-c Gaussians of variance q;
    J1(0) = π, so J1/π is the normalised ReLU correlation map.
    """
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    return np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c


def piecewise_linear_second_moment(q: np.ndarray | float, slope: float) -> np.ndarray:
    """E[φ(u)²] = q·(1 + a²)/2 for u ~ N(0, q), φ(u) = max(u, 0) + a·min(u, 0); q any shape."""
    return np.asarray(q, dtype=np.float64) * (0.5 * (1.0 + slope * slope))


def piecewise_linear_cross_moment(c: np.ndarray | float, q: float, slope: float) -> np.ndarray:
    """E[φ(u1)φ(u2)] = q·((1 − a)²·J1(θ)/(2π) + a·c): variances q, correlation c (any shape)."""
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    return q * ((1.0 - slope) ** 2 * arc_cosine_j1(c) / (2.0 * np.pi) + slope * c)


def piecewise_linear_derivative_cross(c: np.ndarray | float, slope: float) -> np.ndarray:
    """E[φ'(u1)φ'(u2)] = ((1 + a²)(π − θ) + 2a·θ)/(2π), θ = arccos c; any q > 0, c any shape.

    φ' is 1 on u > 0 and a on u < 0, and P(u1 > 0, u2 > 0) = (π − θ)/(2π)
    (the degree-0 arc-cosine kernel); at c = 1 this is (1 + a²)/2.
    """
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    theta = np.arccos(c)
    return ((1.0 + slope * slope) * (np.pi - theta) + 2.0 * slope * theta) / (2.0 * np.pi)


def relu_correlation_map(c: np.ndarray | float) -> np.ndarray:
    """The ReLU arc-cosine kernel map of correlations, one layer deep.

    If two inputs have cosine c, their ReLU features under Gaussian weights and
    zero bias have cosine (sqrt(1 - c²) + (π - arccos c)·c) / π
    (Cho & Saul 2009, the degree-1 arc-cosine kernel, normalised).
    It does not depend on the weight variance, so it holds for any scale.

    c: any shape, values in [-1, 1] (clipped there). Returns the same shape.
    """
    return arc_cosine_j1(c) / np.pi


def leaky_relu_correlation_map(c: np.ndarray | float, negative_slope: float = LEAKY_SLOPE) -> np.ndarray:
    """The leaky-ReLU arc-cosine map of correlations, one layer deep, zero bias.

    φ(z) = max(z, 0) + a·min(z, 0) = relu(z) − a·relu(−z). For (u, v) standard
    Gaussian with correlation c, let k(c) = E[relu(u)relu(v)] = ρ(c)/2 with ρ
    the normalised degree-1 arc-cosine kernel (`relu_correlation_map`, Cho &
    Saul 2009). By symmetry E[relu(−u)relu(−v)] = k(c) and
    E[relu(u)relu(−v)] = k(−c) = k(c) − c/2 (because relu(v) − relu(−v) = v and
    E[relu(u)·v] = c/2). Hence E[φ(u)φ(v)] = (1 − a)²·k(c) + a·c, and with
    E[φ(u)²] = (1 + a²)/2 the map is

        c' = ((1 − a)²·ρ(c) + 2a·c) / (1 + a²),

    which is ρ at a = 0 and the identity at a = 1. It does not depend on the
    weight variance. c: any shape, clipped to [-1, 1]; returns the same shape.
    """
    a = float(negative_slope)
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    return ((1.0 - a) ** 2 * relu_correlation_map(c) + 2.0 * a * c) / (1.0 + a * a)
