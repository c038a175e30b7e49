"""Per-layer metrics of batched state matrices, with DESIGN.md's definitions, and their registry.

Every function takes states for T trials at once, S: (T, n, w) (n samples, w
units), and returns one value per trial, (T,), unless it says otherwise.
S_c is S minus its column (per-unit) means. σ_1 ≥ σ_2 ≥ … are the singular
values of S_c, computed from the smaller Gram matrix with batched `eigvalsh`
(or `eigh` when linear_r2 also needs the vectors): one LAPACK call per batch,
never a per-trial SVD. Pure numpy; no I/O.

The registry (`METRICS`) holds one `Metric` per name: its function, what it
reads (`NEEDS`: pieces, `core.pieces`), and how it is shown. The engine
(`core.engine`) builds the pieces the wanted metrics read, once per layer,
and hands each metric its pieces, whatever recorded the states (the numpy
study, torch). `register_metric` adds a user's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from initscope.core.activations import ACTIVATIONS, activation as activation_entry
from initscope.core.information import (
    DISTANCE_MAX_SAMPLES,
    DistanceReference,
    distance_corr,
    distance_reference,
    linear_r2,
    ridge_factor,
)
from initscope.core.numerics import centred, gram, gram_spectrum, relative_singular_values, unit_scaled
from initscope.core.pieces import PIECES
from initscope.core.propagation import jacobian_log_spread, jacobian_sq_mean, log_spread, pre_q
from initscope.core.tokens import token_cosine, token_effective_rank

__all__ = [
    "Metric",
    "METRICS",
    "NEEDS",
    "DEFAULT_METRICS",
    "SPECTRAL_METRICS",
    "RELU_LIKE",
    "register_metric",
    "metric",
    "default_metrics",
    "Form",
    "add_form",
    "rank_rtol",
    "ridge_factor",
    "centred",
    "gram",
    "gram_spectrum",
    "collapsed",
    "rms",
    "std",
    "effective_rank",
    "stable_rank",
    "numerical_rank",
    "dead_fraction",
    "linear_fraction",
    "mean_cosine",
    "linear_r2",
    "DistanceReference",
    "distance_reference",
    "distance_corr",
    "jacobian_rank",
    "DISTANCE_MAX_SAMPLES",
]

# What a metric can read, passed to its function positionally in the order of its `needs` (`core.pieces`).
NEEDS: dict[str, str] = {name: entry.description for name, entry in PIECES.items() if name != "gram"}
_USER_NEEDS = tuple(k for k, e in PIECES.items() if e.user)


@dataclass(frozen=True)
class Form:
    """Another way to compute a metric: fn reads `needs` (pieces) instead of the entry's own.

    backend: the backend whose pieces it reads ("torch": its row statistics),
    tried before the entry's own function there; None: any backend, tried
    after it. The engine uses the first form whose pieces the backend has
    without a copy (`core.engine`).
    """

    needs: tuple[str, ...]
    fn: Callable[..., object]
    backend: str | None = None


@dataclass(frozen=True)
class Metric:
    """One registry entry: a named per-layer measurement.

    fn: called with one positional argument per entry of `needs` (see `NEEDS`),
    returns one value per trial (T,). relu_only: NaN at the input and for
    activations that are not ReLU-like. rank_like: 0 for collapsed states
    (a constant state has no directions). linear_scale: shares, cosines and
    correlations (the report never puts them on a log axis). display_floor:
    the report clips values below it. short: the CLI table's column label.
    summary: a column of `initscope run`'s table. default: measured when a
    config names no metrics. degree: the value scales as c**degree when the
    state is scaled by c (rms: 1), so a backend that measures an exactly
    rescaled state (torch, against overflow) can scale it back. forms:
    other ways to compute it (`Form`, `add_form`).
    """

    name: str
    fn: Callable[..., np.ndarray] | None
    needs: tuple[str, ...] = ("state",)
    description: str = ""
    relu_only: bool = False
    rank_like: bool = False
    linear_scale: bool = False
    display_floor: float | None = None
    short: str = ""
    summary: bool = True
    default: bool = True
    degree: int = 0
    forms: tuple[Form, ...] = ()

    @property
    def label(self) -> str:
        return self.short or self.name


METRICS: dict[str, Metric] = {}


def metric(name: str) -> Metric:
    """The registry entry of `name`; ValueError listing the valid names otherwise."""
    entry = METRICS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"The 'metrics' parameter must be a list of names from {list(METRICS)}. Got {name!r} instead.")
    return entry


def register_metric(name: str, fn: Callable[..., np.ndarray], *, needs: Iterable[str] | str = ("state",),
                    description: str = "", relu_only: bool = False, rank_like: bool = False,
                    linear_scale: bool = False, display_floor: float | None = None, short: str = "",
                    summary: bool = True, default: bool = True, degree: int = 0) -> Metric:
    """Add a metric under `name`: `--metrics`, metrics.csv, the CLI table, the report and sweeps then show it.

    The contract: fn(S) takes one layer's states S (trials × samples × width,
    float) and returns one value per trial, (T,). With `needs` naming other
    pieces (see `NEEDS`: "centred", "spectrum", "input", "tangents", ...),
    fn gets them instead, one positional argument each, in that order.
    default=True measures it in every run that does not list its metrics.
    degree: how the value scales with the state (see `Metric`). The same
    function measures states recorded from torch models: `initscope inspect`
    hands it the same pieces (`core.engine`). Raises ValueError for a taken name or an unknown need, TypeError for a
    non-callable fn.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"The 'name' parameter must be an identifier-like string (it becomes a column name). "
                         f"Got {name!r} instead.")
    if name in METRICS:
        raise ValueError(f"The 'name' parameter must be a new metric name; {name!r} is already registered.")
    if not callable(fn):
        raise TypeError(f"The 'fn' parameter must be callable. Got {fn!r} instead.")
    needs = (needs,) if isinstance(needs, str) else tuple(needs) if isinstance(needs, Iterable) else needs
    if not isinstance(needs, tuple) or not needs or any(n not in _USER_NEEDS for n in needs) or len(set(needs)) < len(needs):
        raise ValueError(f"The 'needs' parameter must be a non-empty list of distinct names from {list(_USER_NEEDS)}. "
                         f"Got {needs!r} instead.")
    if display_floor is not None and not (isinstance(display_floor, (int, float)) and math.isfinite(display_floor)):
        raise ValueError(f"The 'display_floor' parameter must be a finite number or None. Got {display_floor!r} instead.")
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise ValueError(f"The 'degree' parameter must be an integer. Got {degree!r} instead.")
    return _add(Metric(name, fn, needs, description, bool(relu_only), bool(rank_like), bool(linear_scale),
                       display_floor, str(short), bool(summary), bool(default), degree))


def add_form(name: str, needs: Iterable[str], fn: Callable[..., object], *, backend: str | None = None) -> Metric:
    """Give the metric `name` another way to be computed (`Form`): a backend's fast kernels register theirs."""
    entry = metric(name)
    needs = tuple(needs)
    if any(n not in PIECES for n in needs):
        raise ValueError(f"The 'needs' parameter must name registered pieces from {list(PIECES)}. Got {needs!r} instead.")
    return _add(replace(entry, forms=(*entry.forms, Form(needs, fn, backend))))


def _add(entry: Metric) -> Metric:
    METRICS[entry.name] = entry
    return entry


def default_metrics() -> tuple[str, ...]:
    """The metrics a config measures when it names none: every entry marked default, in registry order."""
    return tuple(name for name, entry in METRICS.items() if entry.default)


def rank_rtol(dtype) -> float:
    """Relative threshold for numerical_rank: 1e-6 (float64) or 1e-3 (float32).

    Well above √eps, because a spectrum computed through a Gram matrix cannot
    resolve σ_k below σ_1·√eps.
    """
    return 1e-3 if np.dtype(dtype) == np.float32 else 1e-6


def collapsed(S: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """True where a trial's state is all zero or the same row for every sample. (T,) bool.

    A constant state centres to rounding noise, so σ_1 is compared with the
    uncentred norm: below 100·eps of it, nothing varies across samples.
    """
    eps = np.finfo(S.dtype).eps
    frob = np.sqrt(np.einsum("tnw,tnw->t", S, S))
    huge = np.isinf(frob)
    if huge.any():
        # The sum of squares overflowed although S is finite (its Gram entries may not
        # be): measure those trials' norms scaled, or a huge state would read "collapsed".
        frob = frob.astype(np.float64)
        for t in np.flatnonzero(huge):
            top = float(np.abs(S[t]).max())
            frob[t] = top * np.sqrt(np.einsum("nw,nw->", S[t] / top, S[t] / top, dtype=np.float64))
    top = sv[:, 0] if sv.shape[1] else np.zeros(S.shape[0], S.dtype)
    return (frob == 0) | (top <= 100 * eps * frob)


def rms(S: np.ndarray) -> np.ndarray:
    """sqrt(mean of S²): the uncentred per-unit second moment (mean-field q)."""
    return np.sqrt(np.einsum("tnw,tnw->t", S, S) / max(S.shape[1] * S.shape[2], 1))


def std(S_c: np.ndarray) -> np.ndarray:
    """sqrt(mean over units of the variance over samples), from centred states."""
    return np.sqrt(np.einsum("tnw,tnw->t", S_c, S_c) / max(S_c.shape[1] * S_c.shape[2], 1))


def effective_rank(sv: np.ndarray) -> np.ndarray:
    """exp(−Σ p_k ln p_k), p_k = σ_k/Σσ (Roy & Vetterli 2007). 0 for a zero spectrum. sv: (T, k)."""
    total = sv.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, sv / total, 0.0)
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, np.exp(-plogp.sum(axis=1)), 0.0)


def stable_rank(sv: np.ndarray) -> np.ndarray:
    """Σσ²/σ_1². 0 for a zero spectrum."""
    if sv.shape[1] == 0:
        return np.zeros(sv.shape[0])
    top = sv[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, (sv * sv).sum(axis=1) / (top * top), 0.0)


def numerical_rank(sv: np.ndarray, rtol: float) -> np.ndarray:
    """Count of σ_k > σ_1·rtol. 0 for a zero spectrum."""
    if sv.shape[1] == 0:
        return np.zeros(sv.shape[0])
    top = sv[:, :1]
    return ((sv > top * rtol) & (top > 0)).sum(axis=1).astype(np.float64)


def dead_fraction(S: np.ndarray) -> np.ndarray:
    """Fraction of units exactly 0 for every sample. NaN with no units."""
    if S.shape[2] == 0:
        return np.full(S.shape[0], np.nan)
    return (~np.any(S != 0, axis=1)).mean(axis=1)


def linear_fraction(S: np.ndarray, activation: str) -> np.ndarray:
    """Fraction of units > 0 for every sample: units a ReLU-like layer passes linearly.

    NaN for activations that are not ReLU-like, where "active" has no meaning.
    """
    if not activation_entry(activation).relu_like or S.shape[2] == 0:
        return np.full(S.shape[0], np.nan)
    return np.all(S > 0, axis=1).mean(axis=1)


def mean_cosine(S: np.ndarray) -> np.ndarray:
    """Mean over pairs i ≠ j of cos(s_i, s_j), uncentred: the kernel correlation c.

    Uses Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − m for unit rows u_i, so it costs O(n·w)
    rather than O(n²·w). Rows of zero norm have no direction and are left
    out; fewer than two rows with a direction give NaN (e.g. a collapsed state).
    """
    norms = np.sqrt(np.einsum("tnw,tnw->tn", S, S))
    valid = norms > 0
    m = valid.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(valid, 1.0 / np.where(valid, norms, 1.0), 0.0)
        # Σ_i u_i = Σ_i s_i/‖s_i‖ as one matrix-vector product: no normalised copy of S.
        v = np.matmul(inv[:, None, :].astype(S.dtype, copy=False), S)[:, 0, :]
        total = np.einsum("tw,tw->t", v, v) - m
        out = total / (m * (m - 1.0))
    return np.where(m >= 2, out, np.nan)


def jacobian_rank(J: np.ndarray, *, input_dim: int | None = None) -> np.ndarray:
    """Mean over samples of rank(∂s_l/∂x)/d, rank as numpy's `matrix_rank` counts it.

    J: (T, m, d, w) per-sample Jacobians. Most samples are plainly full rank,
    and a Cholesky test on the small Gram matrix certifies that (see
    `_certified_full_rank`) at a quarter of the exact path's cost.
    The others get the exact count: a thin QR of the tall orientation shrinks
    each d×w matrix to its min(d, w)² triangle, whose singular values are the
    same, then σ > σ_max·max(d, w)·eps is counted, `matrix_rank`'s default
    tolerance. Non-finite Jacobians give NaN. Each sample's matrix is first
    scaled by a power of two near its largest entry (`numerics.unit_scaled`):
    the rank does not change, and LAPACK no longer fails on huge finite
    Jacobians (deep normal init), whose squares overflow inside the SVD.
    input_dim: the true d when J holds, instead of each (d, w) Jacobian E, the
    triangle R of its QR factorization E = QR (w, w) (d > w: `tangent_triangle`);
    ranks are the same, and d sets the normalization and the tolerance.
    """
    T, m, d, w = J.shape
    d_true = d if input_dim is None else int(input_dim)
    out = np.full(T, np.nan)
    if d == 0 or m == 0:
        return out
    finite = np.isfinite(J).all(axis=(1, 2, 3))
    if not finite.any():
        return out
    if min(d, w) == 0:
        out[finite] = 0.0
        return out
    Jf, _ = unit_scaled(J if finite.all() else J[finite])  # no copy of an all-finite batch
    ranks = np.full(Jf.shape[:2], min(d, w), dtype=np.float64)
    unsure = ~_certified_full_rank(Jf, tol_dim=max(d_true, w))
    if unsure.any():
        ranks[unsure] = _exact_ranks(Jf[unsure], tol_dim=max(d_true, w))
    out[finite] = ranks.mean(axis=1) / d_true
    return out


def _exact_ranks(J: np.ndarray, *, tol_dim: int | None = None) -> np.ndarray:
    """`matrix_rank` of each (d, w) matrix in J (k, d, w), via QR then the triangle's SVD.

    (k,) float; NaN where LAPACK failed even on the scaled matrix.
    """
    d, w = J.shape[-2:]
    tall = J.transpose(0, 2, 1) if w >= d else J  # (k, max, min)
    sv = relative_singular_values(tall)  # NaN rows where LAPACK failed even after scaling
    tol = sv.max(axis=-1, keepdims=True) * (tol_dim or max(d, w)) * np.finfo(J.dtype).eps
    return np.where(np.isnan(sv).any(axis=-1), np.nan, (sv > tol).sum(axis=-1))


def _certified_full_rank(J: np.ndarray, *, tol_dim: int | None = None) -> np.ndarray:
    """True where a (d, w) matrix in J (T, m, d, w) surely has matrix_rank k = min(d, w). (T, m) bool.

    A = J Jᵀ (or JᵀJ, the smaller side) is formed in float64. If Cholesky
    factorizes A − δ·tr(A)·I, then λ_min(J Jᵀ) ≥ (δ − e)·tr(A), where
    e ≈ (max(d, w) + k²)·eps₆₄ bounds the rounding of forming A and of the
    factorization (Higham, ch. 3 and 10). δ is 100·e, at least 1e-10, so the
    certified σ_min/σ_max ≥ 1e-5, and at least (10·max(d, w)·eps_J)², so that
    it also clears matrix_rank's threshold max(d, w)·eps_J tenfold for J's
    own dtype. A failed factorization proves nothing: that sample takes the
    exact path. Gram matrices that overflow or reach float64's underflow
    range are never certified.
    """
    from scipy.linalg.lapack import dpotrf

    T, m, d, w = J.shape
    k = min(d, w)
    eps64 = np.finfo(np.float64).eps
    big = tol_dim or max(d, w)  # matrix_rank's max(d, w), of the Jacobian J stands for (see jacobian_rank)
    delta = max(1e-10, 100 * (big + k * k) * eps64, (10 * big * np.finfo(J.dtype).eps) ** 2)
    J64 = J.astype(np.float64, copy=False)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        A = np.matmul(J64, J64.swapaxes(-1, -2)) if d <= w else np.matmul(J64.swapaxes(-1, -2), J64)
        trace = np.trace(A, axis1=-2, axis2=-1)
        usable = np.isfinite(trace) & (trace > np.finfo(np.float64).tiny * 1e16) & (delta * k < 1)
        idx = np.arange(k)
        A[..., idx, idx] -= (delta * trace)[..., None]
    ok = np.zeros((T, m), dtype=bool)
    for t, i in zip(*np.nonzero(usable)):
        # A is symmetric, so its C-order buffer read as Fortran order is A itself: no copy.
        _, info = dpotrf(A[t, i].T, lower=0, clean=0, overwrite_a=1)
        ok[t, i] = info == 0
    return ok

_S, _SC, _SV = ("state",), ("centred",), ("spectrum",)
for _entry in (
    Metric("rms", rms, _S, "sqrt(mean of S²): the uncentred per-unit second moment (mean-field q)", degree=1),
    Metric("std", std, _SC, "sqrt(mean over units of the variance over samples)", degree=1),
    Metric("effective_rank", effective_rank, _SV, "exp of the entropy of the normalised spectrum (Roy & Vetterli 2007)",
           rank_like=True, short="eff_rank"),
    Metric("stable_rank", stable_rank, _SV, "Σσ²/σ_1²", rank_like=True, summary=False),
    Metric("numerical_rank", numerical_rank, ("spectrum", "rtol"), "count of σ_k > σ_1·rtol", rank_like=True,
           short="num_rank"),
    Metric("dead_fraction", dead_fraction, _S, "fraction of units exactly 0 for every sample", linear_scale=True,
           short="dead"),
    Metric("linear_fraction", linear_fraction, ("state", "activation"),
           "fraction of units > 0 for every sample (ReLU-like only)", relu_only=True, linear_scale=True, summary=False),
    Metric("mean_cosine", mean_cosine, _S, "mean pairwise cosine of the samples' states", linear_scale=True,
           short="cos"),
    Metric("linear_r2", linear_r2, ("centred", "input", "eigh", "rtol"),
           "leave-one-out R² of recovering the input linearly", linear_scale=True, display_floor=-1.0),
    Metric("distance_corr", distance_corr, ("state", "distances"),
           "correlation of pairwise distances with the input's", linear_scale=True, short="dist_corr"),
    Metric("jacobian_rank", lambda J, d: jacobian_rank(J, input_dim=d), ("tangents", "input_dim"),
           "mean over samples of rank(∂s/∂x)/d", linear_scale=True,
           short="jac_rank"),
    Metric("grad_norm", None, ("gradient",), "‖∂loss/∂W_l‖_F of the readout's MSE"),
    # Signal propagation (core.propagation). pre_q, pre_cosine and jacobian_sq_mean cost one pass over arrays
    # the default run forms anyway (z is kept for the Jacobian pass), so they are default; jacobian_log_spread
    # needs an SVD of every sample's Jacobian (m·min(d, w)²·max(d, w) per trial and layer), so it is asked for.
    Metric("pre_q", pre_q, ("pre",), "mean of z² over samples and units: the mean-field q of the pre-activations "
           "(layer 0: the input's)", short="pre_q", summary=False, degree=2),
    Metric("pre_cosine", mean_cosine, ("pre",), "mean pairwise cosine of the pre-activations: the mean-field c "
           "(layer 0: the input's)", linear_scale=True, short="pre_cos", summary=False),
    Metric("jacobian_sq_mean", jacobian_sq_mean, ("tangents",), "mean over samples of ‖∂s/∂x‖_F²/w: the per-unit "
           "gain of input perturbations, χ₁^l in theory", short="jac_sq", summary=False),
    # jacobian_log_spread reads re-orthogonalised stretches where the recorder pushes frames through its layers
    # (the numpy study: the true spread at any depth), else the formed Jacobians' σ (torch: within float64's
    # ~36-nat window, which the report says).
    Metric("jacobian_log_spread", log_spread, ("jacobian_log_stretches",), "std of ln σ of ∂s/∂x over samples "
           "and non-zero singular values: 0 for an isometry", short="jac_spread", summary=False, default=False,
           forms=(Form(("jacobian_spectrum",), jacobian_log_spread),)),
    Metric("token_cosine", token_cosine, ("tokens",), "mean cosine between a sequence's positions (1: collapse)",
           linear_scale=True, short="tok_cos", default=False),  # token states (torch) only
    Metric("token_effective_rank", token_effective_rank, ("tokens",), "effective rank of a sequence's uncentred "
           "tokens (1: collapse)", short="tok_rank", summary=False, default=False),
):
    _add(_entry)
del _entry

DEFAULT_METRICS = default_metrics()
SPECTRAL_METRICS = tuple(n for n, e in METRICS.items() if e.rank_like)
RELU_LIKE = tuple(n for n, e in ACTIVATIONS.items() if e.relu_like)  # the built-ins; read the registry for others
