"""Per-layer metrics of batched state matrices, with DESIGN.md's definitions.

Every function takes states for T trials at once, S: (T, n, w) (n samples, w
units), and returns one value per trial, (T,), unless it says otherwise.
S_c is S minus its column (per-unit) means. σ_1 ≥ σ_2 ≥ … are the singular
values of S_c, computed from the smaller Gram matrix with batched `eigvalsh`
(or `eigh` when linear_r2 also needs the vectors): one LAPACK call per batch,
never a per-trial SVD. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from initscope.core.numerics import relative_singular_values, safe_eigh, unit_scaled

__all__ = [
    "METRICS",
    "DEFAULT_METRICS",
    "SPECTRAL_METRICS",
    "RELU_LIKE",
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
    "state_metrics",
]

METRICS = (
    "rms",
    "std",
    "effective_rank",
    "stable_rank",
    "numerical_rank",
    "dead_fraction",
    "linear_fraction",
    "mean_cosine",
    "linear_r2",
    "distance_corr",
    "jacobian_rank",
    "grad_norm",
)
DEFAULT_METRICS = METRICS
SPECTRAL_METRICS = ("effective_rank", "stable_rank", "numerical_rank")
RELU_LIKE = ("relu", "leaky_relu")
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


def rank_rtol(dtype) -> float:
    """Relative threshold for numerical_rank: 1e-6 (float64) or 1e-3 (float32).

    Well above √eps, because a spectrum computed through a Gram matrix cannot
    resolve σ_k below σ_1·√eps.
    """
    return 1e-3 if np.dtype(dtype) == np.float32 else 1e-6


def centred(S: np.ndarray) -> np.ndarray:
    """S minus its per-unit mean over samples. (T, n, w) -> (T, n, w)."""
    return S - S.mean(axis=1, keepdims=True)


def gram(S_c: np.ndarray) -> np.ndarray:
    """The smaller Gram matrix of S_c: (T, w, w) if n ≥ w else (T, n, n)."""
    if S_c.shape[1] >= S_c.shape[2]:
        return np.matmul(S_c.transpose(0, 2, 1), S_c)
    return np.matmul(S_c, S_c.transpose(0, 2, 1))


def gram_spectrum(G: np.ndarray, *, vectors: bool = False):
    """Singular values of S_c, descending, length min(n, w), from its Gram matrix G = gram(S_c).

    Eigenvalues of the smaller Gram matrix; tiny negative eigenvalues
    (rounding) are clipped to 0. Values below σ_1·√eps are at the noise floor
    and are returned as computed; a non-finite G gives a NaN row. With vectors=True also returns
    (eigenvalues ascending (T, k), eigenvectors (T, k, k)): what linear_r2 and
    the 3-D projections need, from one `eigh` call instead of a second pass.
    """
    finite = np.isfinite(G).all(axis=(1, 2))
    try:
        if not finite.all():
            raise np.linalg.LinAlgError("non-finite Gram matrix")
        if vectors:
            lam, V = np.linalg.eigh(G)
        else:
            lam = np.linalg.eigvalsh(G)
    except np.linalg.LinAlgError:
        # Overflow is a result: a non-finite Gram matrix (or one LAPACK cannot converge
        # on) gives a NaN spectrum for its trial, and the others are computed scaled.
        res = safe_eigh(G, vectors=vectors)
        lam, V = res if vectors else (res, None)
    sv = np.sqrt(np.clip(lam[:, ::-1], 0.0, None))
    if vectors:
        return sv, (lam, V)
    return sv


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
    if activation not in RELU_LIKE or S.shape[2] == 0:
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


def state_metrics(S: np.ndarray, S_c: np.ndarray, sv: np.ndarray, want, *, activation: str,
                  rtol: float, is_input: bool, col: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The metrics that read only a state and its spectrum, each (T,), for those named in `want`.

    S, S_c: (T, n, w) states and centred states; sv: (T, k) their spectrum.
    Collapsed states (see `collapsed`; pass `col` when already computed) get
    rank 0; linear_fraction is NaN for the input (is_input), which no
    activation produced.
    """
    col = collapsed(S, sv) if col is None else col
    rules = {
        "rms": lambda: rms(S),
        "std": lambda: std(S_c),
        "effective_rank": lambda: np.where(col, 0.0, effective_rank(sv)),
        "stable_rank": lambda: np.where(col, 0.0, stable_rank(sv)),
        "numerical_rank": lambda: np.where(col, 0.0, numerical_rank(sv, rtol)),
        "dead_fraction": lambda: dead_fraction(S),
        "linear_fraction": lambda: np.full(S.shape[0], np.nan) if is_input else linear_fraction(S, activation),
        "mean_cosine": lambda: mean_cosine(S),
    }
    return {name: fn() for name, fn in rules.items() if name in want}


def jacobian_rank(J: np.ndarray) -> np.ndarray:
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
    """
    T, m, d, w = J.shape
    out = np.full(T, np.nan)
    if d == 0 or m == 0:
        return out
    finite = np.isfinite(J).all(axis=(1, 2, 3))
    if not finite.any():
        return out
    if min(d, w) == 0:
        out[finite] = 0.0
        return out
    Jf, _ = unit_scaled(J[finite])
    ranks = np.full(Jf.shape[:2], min(d, w), dtype=np.float64)
    unsure = ~_certified_full_rank(Jf)
    if unsure.any():
        ranks[unsure] = _exact_ranks(Jf[unsure])
    out[finite] = ranks.mean(axis=1) / d
    return out


def _exact_ranks(J: np.ndarray) -> np.ndarray:
    """`matrix_rank` of each (d, w) matrix in J (k, d, w), via QR then the triangle's SVD.

    (k,) float; NaN where LAPACK failed even on the scaled matrix.
    """
    d, w = J.shape[-2:]
    tall = J.transpose(0, 2, 1) if w >= d else J  # (k, max, min)
    sv = relative_singular_values(tall)  # NaN rows where LAPACK failed even after scaling
    tol = sv.max(axis=-1, keepdims=True) * max(d, w) * np.finfo(J.dtype).eps
    return np.where(np.isnan(sv).any(axis=-1), np.nan, (sv > tol).sum(axis=-1))


def _certified_full_rank(J: np.ndarray) -> np.ndarray:
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
    delta = max(1e-10, 100 * (max(d, w) + k * k) * eps64, (10 * max(d, w) * np.finfo(J.dtype).eps) ** 2)
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
