"""Linear algebra that treats overflow as a result: scaled, batched, never raising on huge input.

LAPACK's SVD and eigensolvers square their input's scale internally, so a
finite matrix with entries near 1e154 (float64) or 1e19 (float32) can fail to
converge ("SVD did not converge", "Eigenvalues did not converge") although
nothing in it is infinite. Ranks, ratios σ_k/σ_1 and eigenvectors do not
depend on the scale, so each matrix is first divided by a power of two close
to its largest entry: exact (only the exponents change, short of values
already far below rounding relative to that entry) and it keeps every entry
≤ 1. A matrix that is not finite, or that LAPACK still rejects, gives NaN
rather than an exception. Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unit_scaled", "relative_singular_values", "finite_matrices", "safe_eigh", "qr_triangle", "centred",
           "gram", "gram_spectrum"]


def finite_matrices(A: np.ndarray) -> np.ndarray:
    """True where a matrix of the batch A (..., p, q) has only finite entries. (...,) bool."""
    return np.isfinite(A).all(axis=(-2, -1))


def unit_scaled(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (..., p, q) with each matrix divided by a power of two near its largest |entry|; and those exponents.

    Returns (A · 2^−e, e) with e (...,) int such that every scaled matrix
    has max |entry| in [0.5, 1) (or is all zero, e = 0). Non-finite matrices
    are set to zero in the result: callers mask them with `finite_matrices`.
    """
    if A.shape[-1] * A.shape[-2] == 0:
        return A.copy(), np.zeros(A.shape[:-2], dtype=np.int64)
    # max and min, not abs().max(): no copy of a Jacobian batch that can be hundreds of MB, and a
    # NaN or inf shows in one of them, so they also tell which matrices are finite.
    with np.errstate(invalid="ignore", over="ignore"):
        hi, lo = A.max(axis=(-2, -1)), A.min(axis=(-2, -1))
        finite = np.isfinite(hi) & np.isfinite(lo)
        top = np.where(finite, np.maximum(hi, -lo), 0.0)
    _, e = np.frexp(top)
    e = np.where(top > 0, e, 0).astype(np.int64)
    src = A if finite.all() else np.where(finite[..., None, None], A, 0)
    with np.errstate(over="ignore"):
        factor = np.ldexp(np.ones((), dtype=A.dtype), -e)[..., None, None]
    if np.isfinite(factor).all() and (factor > 0).all():
        return np.multiply(src, factor), e  # exact: a power of two, 3x faster than ldexp on big batches
    return np.ldexp(src, -e[..., None, None]).astype(A.dtype, copy=False), e  # near subnormals 2^-e does not fit


def relative_singular_values(A: np.ndarray) -> np.ndarray:
    """Singular values (..., min(p, q)), descending, of each matrix of A (..., p, q) divided by 2^e.

    e is `unit_scaled`'s exponent: the values are exact up to that common
    factor per matrix, which ranks and σ_k/σ_1 do not see. A thin QR first
    shrinks the tall orientation to its min(p, q)² triangle, whose singular
    values are the same. NaN rows for non-finite matrices and for any that
    LAPACK fails on.
    """
    scaled, _ = unit_scaled(A)
    finite = finite_matrices(A)
    p, q = A.shape[-2:]
    tall = scaled if p >= q else np.swapaxes(scaled, -1, -2)
    k = min(p, q)
    if k == 0:
        return np.zeros(A.shape[:-2] + (0,), dtype=A.dtype)
    try:
        sv = np.linalg.svd(np.linalg.qr(tall, mode="r"), compute_uv=False)
    except np.linalg.LinAlgError:
        # One matrix failed; find it (and only it) one at a time.
        flat = tall.reshape((-1,) + tall.shape[-2:])
        out = np.full((flat.shape[0], k), np.nan, dtype=A.dtype)
        for i, M in enumerate(flat):
            try:
                out[i] = np.linalg.svd(np.linalg.qr(M, mode="r"), compute_uv=False)
            except np.linalg.LinAlgError:
                pass
        sv = out.reshape(A.shape[:-2] + (k,))
    return np.where(finite[..., None], sv, np.nan)


def safe_eigh(C: np.ndarray, *, vectors: bool = True):
    """Eigenvalues (ascending, (..., k)) and eigenvectors of symmetric C (..., k, k), never raising.

    Each matrix is scaled by a power of two first and the eigenvalues scaled
    back (they may then overflow to inf: that is the result). Non-finite
    matrices, or any LAPACK rejects, give NaN eigenvalues and vectors.
    """
    scaled, e = unit_scaled(C)
    finite = finite_matrices(C)
    solve = np.linalg.eigh if vectors else np.linalg.eigvalsh
    try:
        res = solve(scaled)
        lam, V = (res[0], res[1]) if vectors else (res, None)
    except np.linalg.LinAlgError:
        flat = scaled.reshape((-1,) + scaled.shape[-2:])
        k = C.shape[-1]
        lam = np.full((flat.shape[0], k), np.nan, dtype=C.dtype)
        V = np.full(flat.shape, np.nan, dtype=C.dtype) if vectors else None
        for i, M in enumerate(flat):
            try:
                if vectors:
                    lam[i], V[i] = np.linalg.eigh(M)
                else:
                    lam[i] = np.linalg.eigvalsh(M)
            except np.linalg.LinAlgError:
                pass
        lam = lam.reshape(C.shape[:-1])
        V = V.reshape(C.shape) if vectors else None
    with np.errstate(over="ignore"):
        lam = np.where(finite[..., None], np.ldexp(lam, e[..., None]).astype(C.dtype, copy=False), np.nan)
    if vectors:
        return lam, np.where(finite[..., None, None], V, np.nan)
    return lam


def qr_triangle(E: np.ndarray) -> np.ndarray:
    """R (..., q, q) of the thin QR factorization E = Q·R of each tall matrix of E (..., p, q), p > q.

    E and R have the same singular values, hence the same rank, and E·M has
    those of R·M for any M: a forward-mode tangent (m, d, w) with d ≫ w can be
    pushed through later layers as its (w, w) triangle, d/w times cheaper.
    Non-finite matrices give NaN triangles.
    """
    finite = finite_matrices(E)
    R = np.linalg.qr(np.where(finite[..., None, None], E, 0), mode="r")
    return np.where(finite[..., None, None], R, np.nan).astype(E.dtype, copy=False)


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
