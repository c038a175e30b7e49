"""The initializer registry.

A weight matrix ``W: (fan_in, fan_out)`` maps row vectors ``s: (n, fan_in)``
to ``s @ W: (n, fan_out)``, so ``fan_in`` is the number of rows and one
neuron's weight vector is a column. ``gain`` is the factor in each rule
(std = gain * ...); :func:`default_gain` gives the value used when none is
chosen.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "gelu", "identity")

# torch.nn.init.calculate_gain. GELU has no entry there; 1 is what torch
# falls back to for unlisted functions ("linear").
_RECOMMENDED_GAIN = {
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1.0 + 0.01**2)),
    "tanh": 5.0 / 3.0,
    "gelu": 1.0,
    "identity": 1.0,
}

_KAIMING = frozenset({"kaiming-normal", "kaiming-uniform"})


@dataclass(frozen=True)
class Initializer:
    """One registry entry.

    ``draw(fan_in, fan_out, gain, rng)`` returns a float64 ``(fan_in, fan_out)``
    array for positive fans; use the module-level :func:`draw`, which
    validates, handles empty fans and casts. ``rule`` is one line for docs.
    """

    name: str
    draw: Callable[[int, int, float, np.random.Generator], np.ndarray]
    rule: str
    random: bool = True  # False: the same matrix every time (ZerO)


def recommended_gain(activation: str) -> float:
    """The gain that keeps the second moment through ``activation``.

    The values of PyTorch's ``torch.nn.init.calculate_gain`` (He et al. 2015
    for ReLU): relu sqrt(2), leaky_relu sqrt(2 / (1 + 0.01**2)) at negative
    slope 0.01, tanh 5/3, identity 1. torch has no GELU entry; GELU gets 1.
    """
    gain = _RECOMMENDED_GAIN.get(activation)
    if gain is None:
        raise ValueError(f"The 'activation' parameter must be one of {list(ACTIVATIONS)}. Got {activation!r} instead.")
    return gain


def default_gain(init: str, activation: str) -> float:
    """The gain ``init`` uses when none is given.

    Kaiming takes :func:`recommended_gain` of the activation; every other
    initializer takes 1, xavier included, as in ``torch.nn.init``.
    """
    _initializer(init)
    gain = recommended_gain(activation)
    return gain if init in _KAIMING else 1.0


def draw(
    init: str,
    fan_in: int,
    fan_out: int,
    *,
    gain: float,
    rng: np.random.Generator,
    dtype=np.float64,
) -> np.ndarray:
    """Draw ``W: (fan_in, fan_out)`` of ``dtype`` from the initializer ``init``.

    The result depends only on the state of ``rng``, which it advances. A fan
    of 0 gives an empty array of that shape.
    """
    initializer = _initializer(init)
    fan_in = _fan("fan_in", fan_in)
    fan_out = _fan("fan_out", fan_out)
    if not (isinstance(gain, (int, float, np.integer, np.floating)) and math.isfinite(gain) and gain > 0):
        raise ValueError(f"The 'gain' parameter must be a finite number > 0. Got {gain!r} instead.")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"The 'dtype' parameter must be a floating dtype such as float64 or float32. Got {dtype} instead.")
    if fan_in == 0 or fan_out == 0:
        return np.zeros((fan_in, fan_out), dtype=dtype)
    return initializer.draw(fan_in, fan_out, float(gain), rng).astype(dtype, copy=False)


def _initializer(init: str) -> Initializer:
    initializer = INITIALIZERS.get(init)
    if initializer is None:
        raise ValueError(f"The 'init' parameter must be one of {list(INITIALIZERS)}. Got {init!r} instead.")
    return initializer


def _fan(label: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"The '{label}' parameter must be an integer >= 0. Got {value!r} instead.") from None
    if value < 0:
        raise ValueError(f"The '{label}' parameter must be an integer >= 0. Got {value} instead.")
    return value


def _normal(fan_in, fan_out, gain, rng):
    # In place: the same numbers as gain * w, without a second array per draw.
    w = rng.standard_normal((fan_in, fan_out))
    return np.multiply(w, gain, out=w)


def _uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain, rng)


def _sphere(fan_in, fan_out, gain, rng):
    w = rng.standard_normal((fan_in, fan_out))
    norms = np.sqrt(np.einsum("ij,ij->j", w, w))
    return np.multiply(w, gain / norms, out=w)


def _sphere_rows(fan_in, fan_out, gain, rng):
    w = rng.standard_normal((fan_in, fan_out))
    return w * (gain / np.linalg.norm(w, axis=1, keepdims=True))


def _xavier_normal(fan_in, fan_out, gain, rng):
    return (gain * math.sqrt(2.0 / (fan_in + fan_out))) * rng.standard_normal((fan_in, fan_out))


def _xavier_uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain * math.sqrt(6.0 / (fan_in + fan_out)), rng)


def _kaiming_normal(fan_in, fan_out, gain, rng):
    return (gain / math.sqrt(fan_in)) * rng.standard_normal((fan_in, fan_out))


def _kaiming_uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain * math.sqrt(3.0 / fan_in), rng)


def _orthogonal(fan_in, fan_out, gain, rng):
    """Haar-distributed (semi-)orthogonal ``W``, all singular values ``gain``.

    The Q of a Gaussian matrix's QR is Haar-distributed only after each column
    is multiplied by the sign of R's diagonal entry (Mezzadri 2007); LAPACK's
    own sign convention would bias it.
    """
    tall = fan_in >= fan_out
    a = rng.standard_normal((fan_in, fan_out) if tall else (fan_out, fan_in))
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diagonal(r))
    signs[signs == 0] = 1.0
    q *= gain * signs
    return q if tall else q.T


def _torch_default(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain / math.sqrt(fan_in), rng)


def _zero(fan_in, fan_out, gain, rng):
    """ZerO (Zhao et al. 2021, "ZerO initialization", Algorithm 1): deterministic.

    Shrinking or square layers get the partial identity (input i feeds unit i);
    growing layers get a scaled Hadamard block c·H[:fan_in, :fan_out] with
    H of size 2^m ≥ fan_out and c = 2^(−(m−1)/2), whose columns spread every
    input over all new units. `rng` is not used.
    """
    if fan_in >= fan_out:
        return gain * np.eye(fan_in, fan_out)
    from scipy.linalg import hadamard

    m = max(1, math.ceil(math.log2(fan_out)))
    c = 2.0 ** (-(m - 1) / 2.0)
    return (gain * c) * hadamard(2**m)[:fan_in, :fan_out].astype(np.float64)


def _symmetric_uniform(fan_in, fan_out, bound, rng):
    # bound * U(-1, 1) rather than rng.uniform(-bound, bound), so that a draw
    # is exactly linear in the gain.
    return bound * (2.0 * rng.random((fan_in, fan_out)) - 1.0)


INITIALIZERS: dict[str, Initializer] = {
    entry.name: entry
    for entry in (
        Initializer("normal", _normal, "N(0, gain²) entries"),
        Initializer("uniform", _uniform, "U(−gain, gain) entries"),
        Initializer("sphere", _sphere, "each column (one neuron's weights) uniform on the sphere of radius gain"),
        Initializer("sphere-rows", _sphere_rows, "each row uniform on the sphere of radius gain"),
        Initializer("xavier-normal", _xavier_normal, "N(0, gain²·2/(fan_in+fan_out)) (Glorot & Bengio 2010)"),
        Initializer("xavier-uniform", _xavier_uniform, "U(±gain·sqrt(6/(fan_in+fan_out))) (Glorot & Bengio 2010)"),
        Initializer("kaiming-normal", _kaiming_normal, "N(0, gain²/fan_in) (He et al. 2015)"),
        Initializer("kaiming-uniform", _kaiming_uniform, "U(±gain·sqrt(3/fan_in)) (He et al. 2015)"),
        Initializer("lecun-normal", _kaiming_normal, "N(0, gain²/fan_in) (LeCun et al. 1998)"),
        Initializer("orthogonal", _orthogonal, "Haar (semi-)orthogonal, every singular value gain (Saxe et al. 2014)"),
        Initializer("torch-default", _torch_default, "U(±gain/sqrt(fan_in)), torch.nn.Linear's default at gain 1"),
        Initializer("zero", _zero, "ZerO: partial identity, or scaled Hadamard when growing (Zhao et al. 2021)",
                    random=False),
    )
}
