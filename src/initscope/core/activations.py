"""The activation registry: one entry per name holds everything about it.

An `Activation` holds φ and φ′ (elementwise, any shape, dtype kept), the gain
that keeps a layer's second moment (PyTorch's `calculate_gain`), whether it is
ReLU-like (units are "on" or "off", so linear_fraction means something), and
its mean-field pieces where they exist in closed form: the second-moment
factor E[φ(z)²]/E[z²] for symmetric z, positive homogeneity (the correlation
map then does not depend on the scale q) and the zero-bias correlation map.
`register_activation` adds a user's own; every part of initscope (network,
initializers' default gains, metrics, theory, report) reads this registry.
Pure numpy (scipy.special for GELU's Φ, loaded on first use); no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from initscope.core.kernels import LEAKY_SLOPE, leaky_relu_correlation_map, relu_correlation_map

__all__ = ["Activation", "ACTIVATIONS", "LEAKY_SLOPE", "activation", "register_activation", "relu_correlation_map",
           "leaky_relu_correlation_map"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

Elementwise = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Activation:
    """One registry entry.

    phi, dphi: z (any shape) -> same shape and dtype. gain: the recommended
    (default) gain of kaiming rules. second_moment: E[φ(z)²]/E[z²] for
    symmetric z where that ratio is a constant, else NaN. homogeneous:
    φ(a·z) = a·φ(z) for a > 0. correlation_map: the closed-form zero-bias
    map of input correlations c ↦ c′ (any shape), or None. inplace: φ written
    into z's own buffer (returns z), the forward pass's fast path, or None.
    slope: a for a piecewise-linear φ = max(z, 0) + a·min(z, 0), whose
    Gaussian expectations the theory takes in closed form (`kernels`); None
    for any other φ (Gauss–Hermite quadrature).
    """

    name: str
    phi: Elementwise
    dphi: Elementwise
    gain: float = 1.0
    relu_like: bool = False
    second_moment: float = math.nan
    homogeneous: bool = False
    correlation_map: Callable[[np.ndarray], np.ndarray] | None = None
    inplace: Elementwise | None = None
    slope: float | None = None
    description: str = ""


ACTIVATIONS: dict[str, Activation] = {}


def activation(name: str) -> Activation:
    """The registry entry of `name`; ValueError listing the valid names otherwise."""
    entry = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"The 'activation' parameter must be one of {list(ACTIVATIONS)}. Got {name!r} instead.")
    return entry


def register_activation(name: str, phi: Elementwise, dphi: Elementwise, *, gain: float = 1.0,
                        relu_like: bool = False, second_moment: float = math.nan, homogeneous: bool = False,
                        correlation_map: Callable | None = None, inplace: Elementwise | None = None,
                        slope: float | None = None, description: str = "") -> Activation:
    """Add an activation under `name`; it is then accepted by `--activation`, make_config and the theory.

    phi and dphi map an array z to φ(z) and φ′(z), elementwise, keeping shape
    and dtype. gain: the recommended gain (what kaiming rules take by default).
    relu_like: units are on (z > 0, φ linear) or off; linear_fraction is only
    measured for these. The rest are optional mean-field pieces (see
    `Activation`). Raises ValueError for a taken name, TypeError for a
    non-callable.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"The 'name' parameter must be a non-empty string without surrounding spaces. Got {name!r} instead.")
    if name in ACTIVATIONS:
        raise ValueError(f"The 'name' parameter must be a new activation name; {name!r} is already registered.")
    for label, fn in (("phi", phi), ("dphi", dphi), ("correlation_map", correlation_map), ("inplace", inplace)):
        if fn is not None and not callable(fn) or (fn is None and label in ("phi", "dphi")):
            raise TypeError(f"The '{label}' parameter must be callable. Got {fn!r} instead.")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"The 'gain' parameter must be a finite number > 0. Got {gain!r} instead.")
    if isinstance(second_moment, bool) or not isinstance(second_moment, (int, float)):
        raise TypeError(f"The 'second_moment' parameter must be a number (NaN: none). Got {second_moment!r} instead.")
    if slope is not None and (isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope)):
        raise ValueError(f"The 'slope' parameter must be a finite number or None. Got {slope!r} instead.")
    entry = Activation(name, phi, dphi, float(gain), bool(relu_like), float(second_moment), bool(homogeneous),
                       correlation_map, inplace, None if slope is None else float(slope), description)
    ACTIVATIONS[name] = entry
    return entry


def _relu(z):
    return np.maximum(z, 0)


def _relu_inplace(z):
    return np.maximum(z, 0, out=z)


def _drelu(z):
    return (z > 0).astype(z.dtype)  # 0 at the kink, as autograd takes it


def _leaky(z):
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def _dleaky(z):
    return np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype)


def _tanh_inplace(z):
    return np.tanh(z, out=z)


def _dtanh(z):
    t = np.tanh(z)
    return 1.0 - t * t


def _ndtr(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF Φ(z); scipy.special is imported here, not at the top (~0.2 s, off start-up)."""
    from scipy.special import ndtr

    return ndtr(z)


def _gelu(z):
    # The exact erf form, z·Φ(z) (Hendrycks & Gimpel 2016).
    return z * _ndtr(z).astype(z.dtype, copy=False)


def _dgelu(z):
    return (_ndtr(z) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)).astype(z.dtype, copy=False)


def _identity(z):
    return z


def _identity_map(c):
    return np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)  # c' = c, as the relu-family maps return it


def _one(z):
    return np.ones_like(z)


# Gains are torch.nn.init.calculate_gain's. GELU has no entry there; 1 is what torch
# falls back to for unlisted functions ("linear"). Second moments: ReLU keeps half of a
# symmetric variable's second moment, leaky ReLU (1 + a²)/2, the identity all of it.
register_activation("relu", _relu, _drelu, gain=math.sqrt(2.0), relu_like=True, second_moment=0.5,
                    homogeneous=True, correlation_map=relu_correlation_map, inplace=_relu_inplace, slope=0.0,
                    description="max(z, 0)")
register_activation("leaky_relu", _leaky, _dleaky, gain=math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2)), relu_like=True,
                    second_moment=0.5 * (1.0 + LEAKY_SLOPE**2), homogeneous=True,
                    correlation_map=leaky_relu_correlation_map, slope=LEAKY_SLOPE, description="max(z, 0.01·z)")
register_activation("tanh", np.tanh, _dtanh, gain=5.0 / 3.0, inplace=_tanh_inplace, description="tanh(z)")
register_activation("gelu", _gelu, _dgelu, gain=1.0, description="z·Φ(z), the exact erf form")
register_activation("identity", _identity, _one, gain=1.0, second_moment=1.0, homogeneous=True,
                    correlation_map=_identity_map, inplace=_identity, slope=1.0, description="z")
