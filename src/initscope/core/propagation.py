"""Signal-propagation metrics: the input-output Jacobian's spectrum and the pre-activations' q and c.

These are the quantities mean-field theory predicts (Poole et al. 2016;
Schoenholz et al. 2017; Pennington, Schoenholz & Ganguli 2017, 2018):

- `jacobian_sq_mean`: the per-unit gain of a small input perturbation,
  mean over samples of ‖∂s_l/∂x‖_F² / w_l (w_l units at layer l). Equivalently the
  mean over input directions u of (‖J u‖²/w_l)/(‖u‖²/d): how much a
  perturbation's per-unit second moment grows from the input to layer l. For a
  square Jacobian (d = w_l) it is the mean of σ² over its components. Theory: χ₁ per layer, so
  ∏ χ₁(q_l) = χ₁^l at the fixed point (for weights with fan_in·E[w²] = σ_w² at
  every layer, the first included).
- `jacobian_log_spread`: the standard deviation of ln σ over samples and
  singular values, counting only σ above `matrix_rank`'s threshold
  (σ_max·max(d, w)·eps, `jacobian_singular_values`; the count of the others
  is what jacobian_rank reports).
  0 for an isometry up to scale; dynamical isometry (orthogonal weights at the
  edge of chaos) keeps it O(1) as depth grows, Gaussian weights make it grow.
- `pre_q`: mean over samples and units of z², z the pre-activations x W + b of the layer
  (the mean-field q); pre_cosine is `metrics.mean_cosine` of z: the mean over
  pairs of samples i ≠ j of cos(z_i, z_j) (the mean-field c; uncentred).
  Layer 0 has no affine map: there both read the input itself (its mean
  square and mean cosine), which is where the mean-field maps start.

J: (T, m, d, w) per-sample Jacobians rows ∂s_l/∂x_i; z: (T, n, w). Each
function returns (T,), NaN for a trial whose input is not finite. Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["jacobian_singular_values", "jacobian_sq_mean", "jacobian_log_spread", "log_spread", "log_histogram",
           "pre_q", "log10_histogram", "JACOBIAN_LOG10_EDGES", "JACOBIAN_SAMPLES"]

# Samples per trial (a run) or per model (an inspection) whose input Jacobian ∂s_l/∂x is measured by default:
# the Jacobian metrics average over them, and the memory plans count them.
JACOBIAN_SAMPLES = 64

# Bins for the report's density of log10 σ (normalised as in jacobian_sq_mean): 0.1 decades
# from 1e-8 to 1e8; values outside land in the end bins, zeros (below the rank threshold) are left out.
JACOBIAN_LOG10_EDGES = np.round(np.arange(-8.0, 8.0001, 0.1), 10)


def _finite_trials(J: np.ndarray) -> np.ndarray:
    return np.isfinite(J).all(axis=tuple(range(1, J.ndim)))


def jacobian_sq_mean(J: np.ndarray) -> np.ndarray:
    """Mean over samples of ‖J_i‖_F²/w: the per-unit gain of input perturbations. (T, m, d, w) -> (T,)."""
    T, m, d, w = J.shape
    out = np.full(T, np.nan)
    finite = _finite_trials(J)
    if m == 0 or d == 0 or w == 0 or not finite.any():
        return out
    Jf = J[finite].reshape(int(finite.sum()), -1)
    if len(Jf) == 1:
        # einsum takes another summation path for a single row (last bits differ): a zero row beside it
        # keeps a trial's value the same whether it is measured alone or with others (memory chunking).
        Jf = np.concatenate([Jf, np.zeros_like(Jf)])
    with np.errstate(over="ignore"):
        out[finite] = (np.einsum("tk,tk->t", Jf, Jf) / (m * w))[:int(finite.sum())]
    return out


def jacobian_singular_values(J: np.ndarray, input_dim: int | None = None) -> np.ndarray:
    """Singular values of each sample's Jacobian, descending, with those at or below `matrix_rank`'s
    threshold (σ_max·max(d, w)·eps of J's dtype) set to 0: (T, m, d, w) -> (T, m, min(d, w)).

    input_dim: the true d when J stands for a wider Jacobian (the measuring
    loop passes wide inputs' tangents as their (w, w) QR triangle, which has
    the same singular values); it sets the threshold as `matrix_rank` would.

    A thin QR of the tall orientation shrinks each d×w matrix to its
    min(d, w)² triangle, whose singular values are the same, then one batched
    SVD without vectors (jacobian_rank's exact path). Trials with a
    non-finite Jacobian get NaN.
    """
    T, m, d, w = J.shape
    k = min(d, w)
    out = np.full((T, m, k), np.nan)
    finite = _finite_trials(J)
    if m == 0 or k == 0 or not finite.any():
        return out
    Jf = J[finite]
    tall = Jf.transpose(0, 1, 3, 2) if w >= d else Jf  # (t, m, max, min)
    with np.errstate(all="ignore"):
        R = np.linalg.qr(tall, mode="r")
        sv = np.linalg.svd(R, compute_uv=False)
    tol = sv[..., :1] * max(input_dim or d, d, w) * np.finfo(J.dtype).eps
    out[finite] = np.where(sv > tol, sv, 0.0)
    return out


def jacobian_log_spread(sv: np.ndarray) -> np.ndarray:
    """Std of ln σ pooled over samples and the non-zero σ of `jacobian_singular_values`. (T, m, k) -> (T,).

    NaN for a trial with fewer than two non-zero values or a non-finite spectrum.
    """
    finite = np.isfinite(sv).all(axis=(1, 2))
    keep = finite[:, None, None] & (np.where(np.isfinite(sv), sv, 0.0) > 0)
    logs = np.where(keep, np.log(np.where(keep, sv, 1.0)), np.nan)
    return log_spread(logs, finite)


def log_spread(logs: np.ndarray, finite: np.ndarray | None = None) -> np.ndarray:
    """Std of the finite values of logs (T, m, k) pooled per trial -> (T,): ln σ values, NaN where left out.

    The re-orthogonalised stretches of `core.lyapunov` (no float64 window) and
    the logs of a formed Jacobian's σ share it. NaN for a trial with fewer than
    two values, or not `finite` (T,) bool.
    """
    T = logs.shape[0]
    out = np.full(T, np.nan)
    keep = np.isfinite(logs)
    if finite is not None:
        keep &= finite[:, None, None]
    count = keep.sum(axis=(1, 2))
    ok = count >= 2
    if ok.any():
        vals = np.where(keep[ok], logs[ok], 0.0)
        mean = vals.sum(axis=(1, 2)) / count[ok]
        dev = np.where(keep[ok], vals - mean[:, None, None], 0.0)
        out[ok] = np.sqrt((dev * dev).sum(axis=(1, 2)) / count[ok])
    return out


def log10_histogram(sv: np.ndarray, d: int, w: int, edges=JACOBIAN_LOG10_EDGES) -> np.ndarray:
    """Counts of log10(σ·√(min(d, w)/w)) per bin for each trial: (T, m, k) -> (T, len(edges) − 1).

    The factor makes the values' mean square jacobian_sq_mean when d ≤ w, so
    the density and the theory χ₁^l share an axis. Zeros (at or below the rank
    threshold; jacobian_rank counts them) and NaN are left out; values beyond
    the edges are counted in the end bins.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(np.isfinite(sv) & (sv > 0), np.log(np.where(sv > 0, sv, 1.0)), np.nan)
    return log_histogram(logs, d, w, edges)


def log_histogram(logs: np.ndarray, d: int, w: int, edges=JACOBIAN_LOG10_EDGES) -> np.ndarray:
    """`log10_histogram` of natural-log values logs (T, m, k) (NaN left out): what re-orthogonalised
    stretches give, whose σ = e^logs may not be representable."""
    T = logs.shape[0]
    counts = np.zeros((T, len(edges) - 1), dtype=np.int64)
    if w == 0 or logs.size == 0:
        return counts
    shift = 0.5 * np.log10(min(d, w) / w)
    for t in range(T):
        values = logs[t][np.isfinite(logs[t])] / np.log(10.0)
        counts[t] = np.histogram(np.clip(values + shift, edges[0], edges[-1]), bins=edges)[0]
    return counts


def pre_q(z: np.ndarray) -> np.ndarray:
    """Mean over samples and units of z²: the mean-field q of the pre-activations. (T, n, w) -> (T,)."""
    if z.shape[1] == 0 or z.shape[2] == 0:
        return np.full(z.shape[0], np.nan)
    with np.errstate(over="ignore"):
        return np.einsum("tnw,tnw->t", z, z) / (z.shape[1] * z.shape[2])
