"""Initializers that need to know where they are: the layer index or the layer's input data.

`looks-linear` mirrors weights so that a ReLU layer acts linearly at init, which
needs to know whether its input is already a mirrored pair (every layer but
the first). `lsuv` and `well-spaced` are data-driven: they look at a batch of
the layer's input states. Each maps one trial's input states S (n, fan_in)
to weights W (fan_in, fan_out), optionally shifts b (fan_out,), and a small
dict of what it did (e.g. LSUV's iteration count); their registry entries
(`fit`) are in `initializers`. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from initscope.core.rules import orthogonal as _orthogonal

__all__ = ["LayerDraw", "looks_linear", "lsuv", "well_spaced", "quantile_shifts", "LSUV_TOL", "LSUV_MAX_ITER"]

LSUV_TOL = 0.01
LSUV_MAX_ITER = 10
QUANTILE_RANGE = (0.05, 0.95)


@dataclass
class LayerDraw:
    W: np.ndarray  # (fan_in, fan_out)
    b: np.ndarray | None = None  # (fan_out,) when the initializer sets the shifts
    info: dict[str, float] = field(default_factory=dict)


def looks_linear(S, fan_out, *, gain, rng, layer, b, **_) -> LayerDraw:
    """Balduzzi et al. 2017 ("The shattered gradients problem"), mirrored weights.

    Units come in pairs (u, −u). The first layer maps x to [xV, −xV]; later
    layers read the pair difference, relu(u) − relu(−u) = u, through
    W = [[V, −V], [−V, V]], so with zero shifts the whole ReLU net is the
    linear map x ↦ x·V_1·V_2·… at init. V is Haar orthogonal times gain.
    """
    fan_in = S.shape[1]
    half_out = fan_out // 2
    if layer == 1:
        V = _orthogonal(fan_in, half_out, gain, rng)
        return LayerDraw(np.concatenate([V, -V], axis=1))
    half_in = fan_in // 2
    V = _orthogonal(half_in, half_out, gain, rng)
    top = np.concatenate([V, -V], axis=1)
    return LayerDraw(np.concatenate([top, -top], axis=0))


def lsuv(S, fan_out, *, gain, rng, layer, b, tol=LSUV_TOL, max_iter=LSUV_MAX_ITER, **_) -> LayerDraw:
    """Mishkin & Matas 2016 ("All you need is a good init"), LSUV.

    Orthogonal weights (times gain), then W ← W/sqrt(Var(z)) with z = S·W + b,
    the layer's output blob (all samples × units, the paper's Var(B_L)), until
    |Var(z) − 1| < tol or max_iter rescalings. The shifts' spread across units
    is part of Var(z) and does not scale with W, hence the iterations;
    info["iterations"] says how many were used.
    """
    fan_in = S.shape[1]
    W = _orthogonal(fan_in, fan_out, gain, rng)
    iterations = 0
    var = float("nan")
    for iterations in range(max_iter + 1):
        z = S @ W + b
        var = float(z.var())
        if not math.isfinite(var) or var == 0 or abs(var - 1.0) < tol or iterations == max_iter:
            break
        W = W / math.sqrt(var)
    return LayerDraw(W, info={"iterations": float(iterations), "variance": var})


def well_spaced(S, fan_out, *, gain, rng, layer, b, **_) -> LayerDraw:
    """Data-driven: directions spread over the data's principal components, shifts at quantiles.

    The input's principal directions V (fan_in, k) and spreads σ (k,) whiten the
    data; a Haar semi-orthogonal frame Q (k, fan_out) with unit columns spreads
    the units' directions evenly over that whitened space, W = V·diag(1/σ)·Q·gain,
    so every unit sees a unit-variance projection. Each unit's shift is then
    minus a quantile of its projection, at levels spaced evenly over
    [0.05, 0.95] in a random order: every unit is active on between 5% and
    95% of the batch. Falls back to orthogonal weights when S is constant.
    """
    n, fan_in = S.shape
    S_c = S - S.mean(axis=0)
    lam, V = np.linalg.eigh(S_c.T @ S_c)
    top = lam[-1] if lam.size else 0.0
    keep = lam > 1e-12 * top if top > 0 else np.zeros_like(lam, dtype=bool)
    k = int(keep.sum())
    if k == 0 or n < 2:
        return LayerDraw(_orthogonal(fan_in, fan_out, gain, rng), np.zeros(fan_out))
    V, sigma = V[:, keep], np.sqrt(lam[keep] / n)
    Q = _orthogonal(k, fan_out, 1.0, rng)
    norms = np.linalg.norm(Q, axis=0, keepdims=True)
    Q = Q / np.where(norms > 0, norms, 1.0)
    W = gain * (V / sigma) @ Q
    levels = rng.permutation(np.linspace(*QUANTILE_RANGE, fan_out))
    return LayerDraw(W, -_column_quantiles(S @ W, levels))


def _column_quantiles(Z: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per column j, the levels[j] quantile of Z[:, j]. Z: (n, w) -> (w,)."""
    Zs = np.sort(Z, axis=0)
    pos = levels * (Z.shape[0] - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, Z.shape[0] - 1)
    cols = np.arange(Z.shape[1])
    frac = pos - lo
    return Zs[lo, cols] * (1 - frac) + Zs[hi, cols] * frac


def quantile_shifts(Z: np.ndarray) -> np.ndarray:
    """The `quantile` shift scheme: b_j = −(quantile of unit j's pre-activation).

    Z: (T, n, w) pre-activations without shifts. Unit j gets the level
    linspace(0.05, 0.95, w)[j], the data-adapted version of the seed's
    linspace shifts: unit j is then active on 95%…5% of the batch.
    Returns (T, w).
    """
    T, n, w = Z.shape
    if n == 0 or w == 0:
        return np.zeros((T, w), dtype=Z.dtype)
    levels = np.linspace(*QUANTILE_RANGE, w)
    return np.stack([-_column_quantiles(Z[t], levels) for t in range(T)]).astype(Z.dtype, copy=False)
