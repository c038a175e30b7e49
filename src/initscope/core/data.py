"""Synthetic input data and regression targets.

Every sampler returns ``x: (n, d)``, one sample per row, as the network takes
them. Randomness comes only from the keyword-only ``rng``.
"""

from __future__ import annotations

import operator

import numpy as np

SYNTHETIC = ("ball", "sphere", "box", "normal", "ball-spaced", "box-spaced")
TARGETS = ("cos-norm", "norm", "sin-sum", "gaussian-bump")


def sample(name: str, n: int, d: int, *, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Draw ``n`` points in ``d`` dimensions from the synthetic distribution ``name``.

    - ``ball``: uniform in the unit ball. A Gaussian direction is normalised
      (uniform on the sphere, Muller 1959) and scaled by radius ``u**(1/d)``,
      ``u ~ U(0, 1)``, because the volume within radius r is r**d.
    - ``sphere``: uniform on the unit sphere (normalised Gaussian).
    - ``box``: uniform in ``[-1, 1]**d``.
    - ``normal``: standard normal entries.
    - ``box-spaced``: a Latin hypercube sample of ``[-1, 1]**d`` (McKay,
      Beckman & Conover 1979): each coordinate has exactly one point in each
      of its ``n`` equal strata.
    - ``ball-spaced``: well-spaced points in the unit ball, see
      :func:`_ball_spaced`: the radial distribution is stratified, so exactly
      one point falls in each of the ``n`` shells of equal volume.

    Returns ``x: (n, d)`` of ``dtype``. ``n = 0`` or ``d = 0`` gives an empty
    array of that shape.
    """
    sampler = _SAMPLERS.get(name)
    if sampler is None:
        raise ValueError(f"The 'data' parameter must be one of {list(SYNTHETIC)}. Got {name!r} instead.")
    n = _count("n", n)
    d = _count("d", d)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"The 'dtype' parameter must be a floating dtype such as float64 or float32. Got {dtype} instead.")
    if n == 0 or d == 0:
        return np.zeros((n, d), dtype=dtype)
    return sampler(n, d, rng).astype(dtype, copy=False)


def sample_trials(name: str, n: int, d: int, *, rngs, dtype=np.float64) -> np.ndarray:
    """``sample(name, n, d, rng=r)`` for every generator r in ``rngs``, stacked: ``(T, n, d)`` of ``dtype``.

    The same numbers, bit for bit. For ball, sphere, box and normal each
    generator fills its trial's raw numbers straight into the batch (numpy's
    fills release the GIL, so worker threads drawing data overlap) and one
    vectorised transform finishes them all; per trial, the small-array
    arithmetic held the GIL and two threads drew no faster than one.
    """
    empty = sample(name, 0, d, rng=None, dtype=dtype)  # validates name, d and dtype; draws nothing
    batched = _BATCHED.get(name)
    if batched is None or _count("n", n) == 0 or d == 0 or not len(rngs):
        return np.stack([sample(name, n, d, rng=r, dtype=dtype) for r in rngs]) if len(rngs) else \
            np.zeros((0, n, d), dtype=empty.dtype)
    draws, transform = batched
    raw = [(getattr(np.random.Generator, method), np.empty((len(rngs), n, cols))) for method, cols in draws(d)]
    for t, rng in enumerate(rngs):
        for fill, out in raw:
            fill(rng, out=out[t])
    return transform(*(out for _, out in raw)).astype(dtype, copy=False)


def targets(name: str, X: np.ndarray) -> np.ndarray:
    """``target(name, x)`` for every trial's ``x`` in ``X: (T, n, d)`` at once: ``(T, n)``, the same numbers."""
    return _evaluate(name, X, "'X' argument of targets", "(T, n, d)")


def target(name: str, x: np.ndarray) -> np.ndarray:
    """Evaluate the regression target ``name`` at ``x: (n, d)``; returns ``(n,)``.

    - ``cos-norm``: ``cos(||x||)``, the seed post's test function.
    - ``norm``: ``||x||``.
    - ``sin-sum``: ``sin(pi * sum_i x_i / sqrt(d))``, in ``[-1, 1]``. Dividing
      by ``sqrt(d)`` keeps the argument's spread independent of ``d`` for data
      with independent coordinates, so the target does not turn into noise
      as ``d`` grows. ``d = 0`` gives 0.
    - ``gaussian-bump``: ``exp(-||x||**2)``.
    """
    return _evaluate(name, x, "'x' argument of target", "(n, d)")


def _evaluate(name: str, x, what: str, axes: str) -> np.ndarray:
    fn = _TARGETS.get(name)
    if fn is None:
        raise ValueError(f"The 'target' parameter must be one of {list(TARGETS)}. Got {name!r} instead.")
    x, dims = np.asarray(x), axes.count(",") + 1
    if x.ndim != dims:
        raise ValueError(f"The {what} must be a {dims}-D array {axes}. Got shape {x.shape} instead.")
    return fn(x)


def _latin_hypercube(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """A Latin hypercube sample of ``[0, 1)**d``: ``(n, d)``, McKay et al. 1979.

    Column j is ``(perm_j + U) / n``, with an independent random permutation
    ``perm_j`` of ``0..n-1`` and uniform jitter ``U``, so each column has
    exactly one value in each stratum ``[k/n, (k+1)/n)``. Each single row is
    exactly uniform in the cube. This is the distribution of
    ``scipy.stats.qmc.LatinHypercube(d).random(n)`` (its default,
    ``scramble=True``), written in numpy so that it draws straight from
    ``rng`` without scipy's ``seed``/``rng`` keyword change (SPEC 7).
    """
    strata = rng.permuted(np.broadcast_to(np.arange(n), (d, n)), axis=1).T
    return (strata + rng.random((n, d))) / n


def _count(label: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"The '{label}' parameter must be an integer >= 0. Got {value!r} instead.") from None
    if value < 0:
        raise ValueError(f"The '{label}' parameter must be an integer >= 0. Got {value} instead.")
    return value


def _directions(gaussian: np.ndarray) -> np.ndarray:
    """Rows of ``gaussian: (n, d)`` scaled to unit norm: uniform on the sphere."""
    return gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True)


def _ball(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    directions = _directions(rng.standard_normal((n, d)))
    radii = rng.random((n, 1)) ** (1.0 / d)
    return radii * directions


def _sphere(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return _directions(rng.standard_normal((n, d)))


def _box(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return 2.0 * rng.random((n, d)) - 1.0


def _normal(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, d))


def _box_spaced(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return 2.0 * _latin_hypercube(n, d, rng) - 1.0


def _ball_spaced(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Well-spaced points in the unit ball, from a ``(n, d + 1)`` Latin hypercube.

    The standard uniform-ball transform is applied row by row: the first
    coordinate ``u`` gives the radius ``u**(1/d)``; the other ``d`` give a
    Gaussian vector through the inverse normal CDF, which is normalised to a
    direction. A direction in ``R^d`` needs ``d`` Gaussian coordinates, hence
    ``d + 1`` columns in all. Each row of a Latin hypercube is exactly
    uniform in the cube, so each point is exactly uniform in the ball; across
    points, ``r**d`` has one value in each of the ``n`` equal-volume shells,
    and each Gaussian coordinate is stratified too.
    """
    from scipy.special import ndtri  # here, not at the top: it takes ~0.2 s to import

    cube = _latin_hypercube(n, d + 1, rng)
    radii = cube[:, :1] ** (1.0 / d)
    # A value rounded onto 0 or 1 would give an infinite Gaussian coordinate.
    gaussian = ndtri(np.clip(cube[:, 1:], np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0)))
    return radii * _directions(gaussian)


# Targets read the last axis, so that (n, d) and (T, n, d) give the same numbers.
def _cos_norm(x: np.ndarray) -> np.ndarray:
    return np.cos(np.linalg.norm(x, axis=-1))


def _norm(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x, axis=-1)


def _sin_sum(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x.sum(axis=-1) / np.sqrt(max(x.shape[-1], 1)))


def _gaussian_bump(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.einsum("...j,...j->...", x, x))


_SAMPLERS = {
    "ball": _ball,
    "sphere": _sphere,
    "box": _box,
    "normal": _normal,
    "ball-spaced": _ball_spaced,
    "box-spaced": _box_spaced,
}

# Batched samplers for sample_trials: (the raw draws per trial as (generator method, columns) given d,
# the transform of the stacked raw arrays (T, n, columns) into the samples (T, n, d)), in each sampler's own order.
def _ball_batch(gaussian: np.ndarray, u: np.ndarray) -> np.ndarray:
    directions = gaussian / np.linalg.norm(gaussian, axis=2, keepdims=True)
    return u ** (1.0 / gaussian.shape[2]) * directions


def _box_batch(u: np.ndarray) -> np.ndarray:
    np.multiply(u, 2.0, out=u)
    return np.subtract(u, 1.0, out=u)


_BATCHED = {
    "ball": (lambda d: (("standard_normal", d), ("random", 1)), _ball_batch),
    "sphere": (lambda d: (("standard_normal", d),), lambda g: g / np.linalg.norm(g, axis=2, keepdims=True)),
    "box": (lambda d: (("random", d),), _box_batch),
    "normal": (lambda d: (("standard_normal", d),), lambda g: g),
}

_TARGETS = {
    "cos-norm": _cos_norm,
    "norm": _norm,
    "sin-sum": _sin_sum,
    "gaussian-bump": _gaussian_bump,
}
