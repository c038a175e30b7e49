"""Metrics of what a layer keeps of its input: linear_r2 and distance_corr (jacobian_rank is in `metrics`).

Each compares a layer's states with the network's input (T trials at once) and
returns one value per trial, (T,). Their registry entries are in `metrics`.
Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ridge_factor", "linear_r2", "DistanceReference", "distance_reference", "distance_corr",
           "DISTANCE_MAX_SAMPLES"]

DISTANCE_MAX_SAMPLES = 2000


def ridge_factor(rtol: float) -> float:
    """linear_r2's ridge relative to σ_1²: 1e-6, in float64 and float32 (rtol is not used).

    Directions with σ_k ≥ 0.03·σ_1 are fitted to within 0.1%; weaker ones
    are shrunk. A ridge at the rounding level (1e-9·σ_1² was used before)
    leaves leave-one-out at the mercy of near-null directions: at the seed's
    sphere init, trial 3, layer 8 (20 of 40 directions numerically alive) the
    LOO R² read −3.4 between 0.97 and 0.94 at the layers around it, and
    brute-force least-squares refits gave 0.68 or −9.8 depending only on the
    truncation rcond (1e-6 or 1e-9). With 1e-6 it reads 0.89, and moving the
    ridge tenfold either way moves it by < 0.06. Still far above the Gram
    matrix's rounding (eps·σ_1²), so 1 − h_ii is resolved.
    """
    return 1e-6


def linear_r2(S_c: np.ndarray, X_c: np.ndarray, eig, rtol: float) -> np.ndarray:
    """Leave-one-out R² of recovering the input linearly (with intercept) from S.

    S_c (T, n, w) and X_c (T, n, d) are centred states and centred inputs; eig
    is `gram_spectrum(gram(S_c), vectors=True)[1]`. The hat matrix is
    H = 11ᵀ/n + Σ_k f_k u_k u_kᵀ over the left singular vectors u_k of S_c, and
    PRESS residuals are e_i/(1 − h_ii) (Allen 1974), exact without refitting.
    f_k = σ_k²/(σ_k² + ρ) with a tiny ridge ρ = `ridge_factor(rtol)`·σ_1²
    (1e-6·σ_1²), and f_k = 0 below the numerical-rank threshold.
    The ridge is what makes PRESS exact where least squares has h_ii = 1:
    always when n ≤ w + 1, and whenever a unit is active on one sample only
    (common after ReLU). There e_i = 0 and 1 − h_ii = 0, and the ridge's ratio
    tends to the refit's (minimum-norm) leave-one-out residual as ρ → 0.
    Computed in float64. R² = 1 − PRESS/SST; 1 = nothing lost linearly,
    ≤ 0 = nothing recoverable. NaN for n < 3.
    """
    lam, V = eig
    T, n, w = S_c.shape
    gram_is_units = n >= w
    if n < 3 or X_c.shape[2] == 0:
        return np.full(T, np.nan)
    S64 = S_c.astype(np.float64, copy=False)
    X64 = X_c.astype(np.float64, copy=False)
    lam = lam.astype(np.float64, copy=False)
    top = np.clip(lam[:, -1:], 0.0, None)
    # Eigenvalues under the numerical-rank threshold are rounding noise of the Gram
    # matrix (the centring direction among them); they carry no signal and, near
    # h_ii = 1, even their tiny filter factors would move 1 − h_ii.
    keep = lam > (rtol * rtol) * top
    f = np.where(keep, lam / (lam + ridge_factor(rtol) * top), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # U_f = U·diag(√f): the hat matrix is 11ᵀ/n + U_f U_fᵀ, so h_ii is a row's squared
        # norm and the fit is U_f (U_fᵀ X); √f is folded into V before the one big product.
        if gram_is_units:
            # V are right singular vectors; u_k = S_c v_k / σ_k.
            scale = np.where(keep, np.sqrt(f / np.where(keep, lam, 1.0)), 0.0)
            U = np.matmul(S64, V.astype(np.float64, copy=False) * scale[:, None, :])
        else:
            U = V.astype(np.float64, copy=False) * np.sqrt(f)[:, None, :]
        resid = X64 - np.matmul(U, np.matmul(U.transpose(0, 2, 1), X64))
        h = 1.0 / n + np.einsum("tnk,tnk->tn", U, U)
        one_minus_h = np.maximum(1.0 - h, 1e-12)
        press = ((resid / one_minus_h[:, :, None]) ** 2).sum(axis=(1, 2))
        sst = (X64 * X64).sum(axis=(1, 2))
        out = 1.0 - press / sst
    return np.where(sst > 0, out, np.nan)


class DistanceReference:
    """The input's pairwise distances for distance_corr, computed once per trial.

    idx: the samples used (all up to 2,000; a fixed random subset beyond).
    D0: (T, m, m) distances with a zero diagonal; sums are over pairs i < j.
    """

    def __init__(self, X: np.ndarray, idx: np.ndarray):
        self.idx = idx
        sub = X[:, idx, :].astype(np.float64, copy=False)
        self.D0 = np.stack([np.sqrt(_squared_distances(s)) for s in sub]) if len(sub) else np.zeros((0, 0, 0))
        m = len(idx)
        self.pairs = m * (m - 1) / 2.0
        # Per trial, on (m, m) arrays: a reduction over (T, m, m) adds in an order that
        # depends on T, and T is the chunk size, i.e. the number of workers (issue 14).
        self.sum0 = np.array([D.sum() for D in self.D0]) / 2.0
        self.sumsq0 = np.array([np.einsum("ij,ij->", D, D) for D in self.D0]) / 2.0


def distance_reference(X: np.ndarray, *, rng: np.random.Generator) -> DistanceReference:
    """Reference distances of the input X (T, n, d); rng picks the subset when n > 2,000."""
    n = X.shape[1]
    if n > DISTANCE_MAX_SAMPLES:
        idx = np.sort(rng.choice(n, DISTANCE_MAX_SAMPLES, replace=False))
    else:
        idx = np.arange(n)
    return DistanceReference(X, idx)


def _squared_distances(s: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, n) of the rows of s (n, w), via the Gram matrix.

    Clipped at 0 (rounding) with an exact zero diagonal; done in place on one
    n×n buffer so that the elementwise passes stay in cache.
    """
    K = s @ s.T
    sq = np.diagonal(K).copy()
    K *= -2.0
    K += sq[:, None]
    K += sq[None, :]
    np.maximum(K, 0.0, out=K)
    np.fill_diagonal(K, 0.0)
    return K


def distance_corr(S: np.ndarray, ref: DistanceReference) -> np.ndarray:
    """Pearson correlation of pairwise distances, layer vs input, over pairs i < j.

    S: (T, n, w). Sums over the full symmetric matrices are twice the sums
    over pairs (the diagonals are 0). NaN when there are fewer than two pairs
    or the distances do not vary (e.g. a collapsed state).

    Per trial this is one n×n matrix product (numpy runs c·cᵀ as a symmetric
    rank-k update: half a product's work) and a few passes over it. Rows are
    centred first: distances do not change, and ‖a‖² + ‖b‖² − 2a·b loses far
    less to cancellation once a shared offset is gone. Σ_{i<j} d_ij² is
    m·Σ_i ‖c_i‖² for centred rows, so it needs no pass.
    """
    T = S.shape[0]
    out = np.full(T, np.nan)
    P = ref.pairs
    if P < 2:
        return out
    m = len(ref.idx)
    var0 = P * ref.sumsq0 - ref.sum0 ** 2
    for t in range(T):
        c = (S[t] if m == S.shape[1] else S[t, ref.idx, :]).astype(np.float64)  # a copy either way
        c -= c.mean(axis=0)
        c *= np.sqrt(2.0)  # so that the product below is 2·c_i·c_j, saving a pass over D
        D = c @ c.T
        sq = np.diagonal(D) / 2.0  # exact halves: D²_ii = sq_i + sq_i − D_ii is exactly 0
        np.subtract(sq[:, None], D, out=D)
        D += sq[None, :]
        np.maximum(D, 0.0, out=D)
        np.sqrt(D, out=D)
        s1 = D.sum() / 2.0
        # Not vdot: BLAS ddot splits long vectors over threads, so its last bits
        # would depend on how many BLAS threads a worker has (issue 14).
        cross = np.einsum("ij,ij->", D, ref.D0[t]) / 2.0
        var = P * (m * sq.sum()) - s1 * s1
        if var > 0 and var0[t] > 0:
            out[t] = (P * cross - s1 * ref.sum0[t]) / np.sqrt(var * var0[t])
    return out
