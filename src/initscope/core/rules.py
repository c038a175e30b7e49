"""Weight rules: draw(fan_in, fan_out, gain, rng) -> W (fan_in, fan_out), float64, for positive fans.

The rules behind the built-in registry entries of `initscope.core.initializers`
(and the orthogonal frames the layer-aware ones in `fitted` start from). They
do not validate: `initializers.draw` does that once, at the entry point.
A weight matrix maps row vectors s (n, fan_in) to s @ W, so one neuron's
weights are a column.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normal", "uniform", "sphere", "sphere_rows", "xavier_normal", "xavier_uniform", "kaiming_normal",
           "kaiming_uniform", "orthogonal", "torch_default", "zero"]


def normal(fan_in, fan_out, gain, rng):
    # In place: the same numbers as gain * w, without a second array per draw.
    w = rng.standard_normal((fan_in, fan_out))
    return np.multiply(w, gain, out=w)


def uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain, rng)


def sphere(fan_in, fan_out, gain, rng):
    w = rng.standard_normal((fan_in, fan_out))
    norms = np.sqrt(np.einsum("ij,ij->j", w, w))
    return np.multiply(w, gain / norms, out=w)


def sphere_rows(fan_in, fan_out, gain, rng):
    w = rng.standard_normal((fan_in, fan_out))
    return w * (gain / np.linalg.norm(w, axis=1, keepdims=True))


def xavier_normal(fan_in, fan_out, gain, rng):
    return (gain * math.sqrt(2.0 / (fan_in + fan_out))) * rng.standard_normal((fan_in, fan_out))


def xavier_uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain * math.sqrt(6.0 / (fan_in + fan_out)), rng)


def kaiming_normal(fan_in, fan_out, gain, rng):
    return (gain / math.sqrt(fan_in)) * rng.standard_normal((fan_in, fan_out))


def kaiming_uniform(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain * math.sqrt(3.0 / fan_in), rng)


def orthogonal(fan_in, fan_out, gain, rng):
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


def torch_default(fan_in, fan_out, gain, rng):
    return _symmetric_uniform(fan_in, fan_out, gain / math.sqrt(fan_in), rng)


def zero(fan_in, fan_out, gain, rng):
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


# Batched forms of the rules that transform one standard-normal or one uniform draw of shape (fan_in, fan_out).
# `network.draw_layer` fills each trial's numbers from its own generator straight into the batch (a numpy fill,
# which releases the GIL) and then transforms every trial at once with these: the same numbers as the rule per
# trial, bit for bit (tests/test_network.py). Per trial, the rules' small-array arithmetic holds the GIL, so
# two worker threads drawing seed-scale layers ran at 0.9–1.3× the speed of one.
# Each entry: (the generator method that fills, transform(W (T, fan_in, fan_out) float64, gain) in place).

def _times(factor):
    def transform(W: np.ndarray, gain: float) -> None:
        np.multiply(W, factor(W.shape[1], W.shape[2], gain), out=W)
    return transform


def _symmetric(bound):
    def transform(U: np.ndarray, gain: float) -> None:  # bound * (2u - 1), in _symmetric_uniform's order
        np.multiply(U, 2.0, out=U)
        np.subtract(U, 1.0, out=U)
        np.multiply(U, bound(U.shape[1], U.shape[2], gain), out=U)
    return transform


def _sphere_batch(W: np.ndarray, gain: float) -> None:
    norms = np.sqrt(np.einsum("tij,tij->tj", W, W))
    np.multiply(W, (gain / norms)[:, None, :], out=W)


def _sphere_rows_batch(W: np.ndarray, gain: float) -> None:
    np.multiply(W, gain / np.linalg.norm(W, axis=2, keepdims=True), out=W)


BATCHED = {
    normal: ("standard_normal", _times(lambda i, o, g: g)),
    sphere: ("standard_normal", _sphere_batch),
    sphere_rows: ("standard_normal", _sphere_rows_batch),
    xavier_normal: ("standard_normal", _times(lambda i, o, g: g * math.sqrt(2.0 / (i + o)))),
    kaiming_normal: ("standard_normal", _times(lambda i, o, g: g / math.sqrt(i))),
    uniform: ("random", _symmetric(lambda i, o, g: g)),
    xavier_uniform: ("random", _symmetric(lambda i, o, g: g * math.sqrt(6.0 / (i + o)))),
    kaiming_uniform: ("random", _symmetric(lambda i, o, g: g * math.sqrt(3.0 / i))),
    torch_default: ("random", _symmetric(lambda i, o, g: g / math.sqrt(i))),
}
