"""A certificate that no information is lost: is the map input → layer l injective on the data?

For each trial and each layer l = 0..L (layer 0 is the input itself), two checks:

(a) local injectivity: for every sample, the Jacobian ∂s_l/∂x (d × w_l) has
    rank d, the input dimension, with rank as numpy's `matrix_rank` counts it
    (σ > σ_max·max(d, w)·eps), as `metrics.jacobian_rank` does for a subset;
(b) separation: no two distinct samples land on the same state, i.e.
    ‖s_i − s_j‖ > tol with tol = rtol·rms(S_l)·sqrt(w_l), the typical norm of
    a state row times rtol. Pairs whose inputs already coincide within the
    same rule at layer 0 are one sample, not two, and are not checked.

A layer is certified for a trial when both hold. (a) alone misses two
samples folded onto each other by a ReLU; (b) alone misses a map that is
locally degenerate between the samples. Together they certify injectivity on
the data, not on the whole input space.

Batch norm: the Jacobian is the per-sample map with the batch statistics held
fixed, as in `network.layer_jvp`. Pure numpy and pandas; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from initscope.core.metrics import rank_rtol
from initscope.core.network import Architecture, batch_norm_sigma, layer_forward, layer_jvp
from initscope.core.numerics import relative_singular_values

__all__ = ["Certificate", "certify", "LAYER_COLUMNS", "FAILURE_COLUMNS", "MAX_LISTED"]

LAYER_COLUMNS = ("trial", "layer", "width", "certified", "min_rank", "rank_failures", "collisions",
                 "min_separation", "jacobian_margin", "samples", "reason")
FAILURE_COLUMNS = ("trial", "layer", "kind", "i", "j", "rank", "detail")
MAX_LISTED = 10  # failing samples / pairs named per trial and layer; the counts are always complete
_MAX_ELEMENTS = 1 << 24  # Jacobian entries held at once (128 MiB in float64)


@dataclass(frozen=True)
class Certificate:
    """The answer per trial and layer.

    layers: one row per (trial, layer), columns `LAYER_COLUMNS`:
      certified (bool); min_rank, the smallest Jacobian rank over samples (of
      input_dim); rank_failures, how many samples have rank < input_dim;
      collisions, how many distinct pairs are within tol; min_separation, the
      smallest distance between distinct samples over rms·sqrt(width) (compare
      with rtol); jacobian_margin, the smallest σ_min/σ_max of a Jacobian over
      samples (0 when rank-deficient); samples, the failing samples (at most
      MAX_LISTED, then a count); reason, '' or e.g.
      'jacobian rank 2 < 3 at sample 5; samples 3 and 7 collide'.
    failures: one row per named failure, columns `FAILURE_COLUMNS`: kind is
      'rank' (sample i, its rank), 'collision' (samples i and j) or 'non-finite'.
    duplicates: input pairs that coincide within tol, per trial, which are not
      distinct samples and are left out of (b).
    """

    layers: pd.DataFrame
    failures: pd.DataFrame
    input_dim: int
    rtol: float
    duplicates: tuple[int, ...]

    @property
    def certified(self) -> bool:
        """True when every layer of every trial is certified."""
        return bool(self.layers["certified"].all())

    def by_layer(self) -> pd.DataFrame:
        """One row per layer: trials certified out of all, and the first failing trial's reason."""
        rows = []
        for layer, g in self.layers.groupby("layer", sort=True):
            bad = g[~g["certified"]]
            rows.append({
                "layer": int(layer),
                "width": int(g["width"].iloc[0]),
                "certified": bool(bad.empty),
                "trials_certified": int(g["certified"].sum()),
                "trials": int(len(g)),
                "min_rank": int(g["min_rank"].min()),
                "collisions": int(g["collisions"].sum()),
                "min_separation": float(g["min_separation"].min()),
                "reason": "" if bad.empty else f"trial {int(bad['trial'].iloc[0])}: {bad['reason'].iloc[0]}",
            })
        return pd.DataFrame(rows)


def certify(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    rtol: float | None = None,
) -> Certificate:
    """Certify, per trial and layer, that the map from the input to the layer is injective on X.

    X: (T, n, d) inputs; params: [(W_l (T, fan_in, w_l), b_l (T, w_l)) for
    l = 1..L]; arch: activation, norm, residual. rtol: the collision tolerance
    relative to the state scale, default `metrics.rank_rtol` of X's dtype
    (1e-6 float64, 1e-3 float32), well above the √eps at which distances
    computed through a Gram matrix stop being resolved.
    """
    X, params = _validated(X, params)
    rtol = rank_rtol(X.dtype) if rtol is None else _rtol(rtol)
    T, n, d = X.shape
    widths = [d] + [W.shape[-1] for W, _ in params]
    per_sample = d * max(widths)
    chunk = max(1, min(n, _MAX_ELEMENTS // max(per_sample * T, 1)))
    ranks = [np.zeros((T, n), dtype=np.int64) for _ in widths]
    margins = [np.ones((T, n)) for _ in widths]
    finite_J = [np.ones((T, n), dtype=bool) for _ in widths]
    sep = _Separations(T, n, rtol)
    with np.errstate(all="ignore"):
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            _propagate(X, params, arch, rows, ranks, margins, finite_J, sep if start == 0 else None)
    layers, failures = _tables(sep, ranks, margins, finite_J, widths, d)
    return Certificate(layers, failures, d, rtol, tuple(int(k) for k in sep.duplicates))


def _validated(X, params) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    X = np.asarray(X)
    if X.ndim != 3 or X.dtype.kind != "f":
        raise ValueError(f"The 'X' parameter must be a float array (trials, samples, input_dim). "
                         f"Got shape {X.shape} and dtype {X.dtype} instead.")
    T, n, d = X.shape
    if T == 0 or n == 0 or d == 0:
        raise ValueError(f"The 'X' parameter must have at least one trial, sample and input dimension. "
                         f"Got shape {X.shape} instead.")
    if not np.isfinite(X).all():
        raise ValueError("The 'X' parameter must be finite. Got NaN or Inf entries instead.")
    out = []
    fan_in = d
    for layer, pair in enumerate(params, start=1):
        try:
            W, b = (np.asarray(a) for a in pair)
        except (TypeError, ValueError):
            raise ValueError(f"The 'params' parameter must be a list of (W, b) pairs. "
                             f"Got {type(pair).__name__} at layer {layer} instead.") from None
        if W.ndim != 3 or W.shape[:2] != (T, fan_in) or b.shape != (T, W.shape[2]):
            raise ValueError(f"The 'params' parameter must hold W ({T}, {fan_in}, w) and b ({T}, w) at layer "
                             f"{layer}. Got W {W.shape} and b {b.shape} instead.")
        out.append((W, b))
        fan_in = W.shape[2]
    return X, out


def _rtol(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    # Below 1: a tolerance as large as a state row's typical norm calls every pair a collision, and
    # one far above it overflows (1e300 times the state's scale).
    if isinstance(value, bool) or not math.isfinite(out) or not 0 <= out < 1:
        raise ValueError(f"The 'rtol' parameter must be a finite number >= 0 and < 1. Got {value!r} instead.")
    return out


def _propagate(X, params, arch, rows, ranks, margins, finite_J, sep: _Separations | None) -> None:
    """Forward all samples through every layer, pushing the identity tangent of `rows` along.

    Fills ranks/margins/finite_J[layer][:, rows], and feeds every layer's
    states to `sep` when given (the separation check runs once, not per chunk).
    """
    T, _, d = X.shape
    m = rows.stop - rows.start
    tangent = np.broadcast_to(np.eye(d, dtype=X.dtype), (T, m, d, d)).copy()
    _record(tangent, 0, rows, ranks, margins, finite_J)
    if sep is not None:
        sep.add(0, X)
    S = X
    for layer, (W, b) in enumerate(params, start=1):
        S, z = layer_forward(S, W, b, arch)
        tangent = layer_jvp(tangent, W, z[:, rows], arch, batch_norm_sigma(z, arch))
        _record(tangent, layer, rows, ranks, margins, finite_J)
        if sep is not None:
            sep.add(layer, S)


def _record(J: np.ndarray, layer: int, rows: slice, ranks, margins, finite_J) -> None:
    """Per-sample rank and σ_min/σ_max of J (T, m, d, w), numpy `matrix_rank`'s tolerance."""
    T, m, d, w = J.shape
    finite = np.isfinite(J).all(axis=(2, 3))
    finite_J[layer][:, rows] = finite
    if min(d, w) == 0:
        ranks[layer][:, rows] = 0
        margins[layer][:, rows] = 0.0
        return
    # Scaled per sample by a power of two (numerics.relative_singular_values): ranks and
    # σ_min/σ_max do not change, and huge finite Jacobians (deep normal init) no longer
    # make LAPACK's SVD fail to converge. Samples it still fails on count as non-finite.
    sv = relative_singular_values(J)  # (T, m, min(d, w)), descending; NaN rows: non-finite
    finite &= ~np.isnan(sv).any(axis=-1)
    finite_J[layer][:, rows] = finite
    sv = np.where(finite[..., None], sv, 0.0)
    top = sv[..., 0]
    tol = top * max(d, w) * np.finfo(J.dtype).eps
    rank = (sv > tol[..., None]).sum(axis=-1)
    ranks[layer][:, rows] = np.where(finite, rank, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(top > 0, sv[..., -1] / np.where(top > 0, top, 1.0), 0.0)
    margins[layer][:, rows] = np.where(finite & (rank >= d), ratio if w >= d else 0.0, 0.0)


def _pair_distances(S: np.ndarray) -> np.ndarray:
    """Squared distances (n, n) of the rows of S (n, w) through the Gram matrix, in float64."""
    S = S.astype(np.float64, copy=False)
    K = S @ S.T
    sq = np.diagonal(K).copy()
    D2 = sq[:, None] + sq[None, :] - 2.0 * K
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


def _close_pairs(S: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pairs i < j with ‖s_i − s_j‖ ≤ tol, and the smallest distance of any pair.

    The Gram matrix screens every pair; pairs within a factor 4 of tol are
    measured again directly (‖s_i − s_j‖ from the difference), because the
    Gram route loses distances below about √eps·‖s‖.
    """
    n = S.shape[0]
    D2 = _pair_distances(S)
    iu, ju = np.triu_indices(n, k=1)
    d2 = D2[iu, ju]
    band = d2 <= (4.0 * tol) ** 2
    if band.any():
        S64 = S.astype(np.float64, copy=False)
        diff = S64[iu[band]] - S64[ju[band]]
        d2 = d2.copy()
        d2[band] = np.einsum("kw,kw->k", diff, diff)
    dist = np.sqrt(d2)
    close = dist <= tol
    return iu[close], ju[close], dist


class _Separations:
    """Collisions and the smallest relative separation per layer and trial, fed one layer at a time.

    Layer 0 decides which input pairs are distinct: those farther apart than
    its own tolerance. Later layers report only distinct pairs.
    """

    def __init__(self, T: int, n: int, rtol: float):
        self.n, self.rtol = n, rtol
        self.iu, self.ju = np.triu_indices(n, k=1)
        self.same: list[np.ndarray] = []  # per trial (n, n) bool: input pairs that are one sample
        self.duplicates = np.zeros(T, dtype=np.int64)
        self.collide: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.min_sep: list[np.ndarray] = []
        self.finite: list[np.ndarray] = []

    def add(self, layer: int, S: np.ndarray) -> None:
        T, n, w = S.shape
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        collide, min_sep, finite = [], np.full(T, np.nan), np.isfinite(S).all(axis=(1, 2))
        for t in range(T):
            if not finite[t] or n < 2:
                collide.append(empty)
                if layer == 0:
                    self.same.append(np.zeros((n, n), dtype=bool))
                continue
            St = S[t].astype(np.float64, copy=False)
            scale = math.sqrt(float(np.mean(St * St)) * w) if St.size else 0.0
            top = float(np.abs(St).max(initial=0.0))
            if not math.isfinite(scale) or top > math.sqrt(np.finfo(np.float64).max / (4.0 * max(w, 1))):
                # Finite states whose squared distances overflow cannot be compared: that
                # layer overflowed (a result: the certificate says "non-finite state").
                finite[t] = False
                collide.append(empty)
                if layer == 0:
                    self.same.append(np.zeros((n, n), dtype=bool))
                continue
            i, j, dist = _close_pairs(St, self.rtol * scale)
            if layer == 0:
                same = np.zeros((n, n), dtype=bool)
                same[i, j] = True
                self.same.append(same)
                self.duplicates[t] = len(i)
                i, j = empty
            else:
                ok = ~self.same[t][i, j]
                i, j = i[ok], j[ok]
            collide.append((i, j))
            kept = dist[~self.same[t][self.iu, self.ju]]
            if kept.size:
                min_sep[t] = float(kept.min() / scale) if scale > 0 else 0.0
        self.collide.append(collide)
        self.min_sep.append(min_sep)
        self.finite.append(finite)


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if k == 1 else "s")


def _listed(items: list, limit: int = MAX_LISTED) -> str:
    text = ", ".join(str(x) for x in items[:limit])
    return text + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def _tables(sep, ranks, margins, finite_J, widths, d) -> tuple[pd.DataFrame, pd.DataFrame]:
    T = ranks[0].shape[0]
    layer_rows, failure_rows = [], []
    for layer, w in enumerate(widths):
        for t in range(T):
            rank = ranks[layer][t]
            nonfinite = (~finite_J[layer][t]).nonzero()[0].tolist()
            low = ((rank < d) & finite_J[layer][t]).nonzero()[0].tolist()
            ci, cj = sep.collide[layer][t]
            reasons, bad_samples = [], set(low) | set(nonfinite)
            if not sep.finite[layer][t] or nonfinite:
                reasons.append("overflow: non-finite state" + (f" at sample {nonfinite[0]}" if nonfinite else ""))
                failure_rows.append((t, layer, "non-finite", nonfinite[0] if nonfinite else -1, -1, -1,
                                     reasons[-1]))
            if low:
                first = low[0]
                more = f" (and {_count(len(low) - 1, 'more sample')})" if len(low) > 1 else ""
                reasons.append(f"jacobian rank {int(rank[first])} < {d} at sample {first}{more}")
                for i in low[:MAX_LISTED]:
                    failure_rows.append((t, layer, "rank", i, -1, int(rank[i]),
                                         f"jacobian rank {int(rank[i])} < {d} at sample {i}"))
            if len(ci):
                more = f" (and {_count(len(ci) - 1, 'more pair')})" if len(ci) > 1 else ""
                reasons.append(f"samples {int(ci[0])} and {int(cj[0])} collide{more}")
                bad_samples |= set(ci.tolist()) | set(cj.tolist())
                for i, j in zip(ci[:MAX_LISTED].tolist(), cj[:MAX_LISTED].tolist()):
                    failure_rows.append((t, layer, "collision", i, j, -1, f"samples {i} and {j} collide"))
            finite_margin = margins[layer][t][finite_J[layer][t]]
            layer_rows.append((
                t, layer, w, not reasons, int(rank.min()) if rank.size else 0, len(low), int(len(ci)),
                float(sep.min_sep[layer][t]),
                float(finite_margin.min()) if finite_margin.size else math.nan,
                _listed(sorted(bad_samples)), "; ".join(reasons),
            ))
    layers = pd.DataFrame(layer_rows, columns=list(LAYER_COLUMNS))
    layers = layers.sort_values(["trial", "layer"], kind="stable").reset_index(drop=True)
    failures = pd.DataFrame(failure_rows, columns=list(FAILURE_COLUMNS))
    return layers, failures
