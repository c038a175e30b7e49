"""Metric definitions against direct reference computations, and the edge sizes."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from initscope import make_config
from initscope.core import metrics as M


def _spectrum(S):
    return M.gram_spectrum(M.gram(M.centred(S)))


@pytest.mark.parametrize("shape", [(3, 50, 8), (2, 6, 20), (1, 10, 10), (2, 1, 5), (2, 7, 1)])
def test_spectrum_matches_svd_of_centred_states(rng, shape):
    S = rng.standard_normal(shape)
    sv = _spectrum(S)
    assert sv.shape == (shape[0], min(shape[1:]))
    ref = np.linalg.svd(S - S.mean(axis=1, keepdims=True), compute_uv=False)
    top = ref[:, :1] if ref.size else 1.0
    # Through the Gram matrix, singular values are exact down to σ_1·√eps.
    np.testing.assert_allclose(sv, ref, atol=float(np.max(top, initial=1.0)) * 1e-7)


def test_spectrum_matches_sklearn_pca(rng):
    from sklearn.decomposition import PCA

    S = rng.standard_normal((1, 60, 12)) @ rng.standard_normal((1, 12, 12))
    ref = PCA(n_components=12).fit(S[0]).singular_values_
    np.testing.assert_allclose(_spectrum(S)[0], ref, rtol=1e-10)


def test_rank_metrics_from_a_known_spectrum():
    sv = np.array([[4.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    p = np.array([0.5, 0.25, 0.25])
    assert M.effective_rank(sv)[0] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert M.stable_rank(sv)[0] == pytest.approx((16 + 4 + 4) / 16)
    assert M.numerical_rank(sv, 1e-6)[0] == 3
    assert M.effective_rank(sv)[1] == 0 and M.stable_rank(sv)[1] == 0 and M.numerical_rank(sv, 1e-6)[1] == 0


def test_rank_rtol_by_dtype():
    assert M.rank_rtol(np.float64) == 1e-6
    assert M.rank_rtol(np.float32) == 1e-3


def test_scale_metrics(rng):
    S = rng.standard_normal((2, 30, 5)) + 3.0
    np.testing.assert_allclose(M.rms(S), np.sqrt((S**2).mean(axis=(1, 2))))
    np.testing.assert_allclose(M.std(M.centred(S)), np.sqrt(S.var(axis=1).mean(axis=1)))


def test_dead_and_linear_fractions():
    S = np.zeros((1, 4, 4))
    S[0, :, 1] = [1, 2, 3, 4]  # active on every sample: linear
    S[0, :2, 2] = [1, 1]  # active on some
    # units 0 and 3 are dead
    assert M.dead_fraction(S)[0] == 0.5
    assert M.linear_fraction(S, "relu")[0] == 0.25
    assert np.isnan(M.linear_fraction(S, "tanh")[0])


def test_mean_cosine_against_pairwise(rng):
    S = rng.standard_normal((2, 15, 6))
    U = S / np.linalg.norm(S, axis=2, keepdims=True)
    C = np.einsum("tid,tjd->tij", U, U)
    off = ~np.eye(15, dtype=bool)
    np.testing.assert_allclose(M.mean_cosine(S), C[:, off].mean(axis=1), rtol=1e-12)


def test_mean_cosine_skips_zero_rows_and_is_nan_when_collapsed(rng):
    S = rng.standard_normal((1, 5, 3))
    S[0, 0] = 0
    U = S[0, 1:] / np.linalg.norm(S[0, 1:], axis=1, keepdims=True)
    C = U @ U.T
    assert M.mean_cosine(S)[0] == pytest.approx(C[~np.eye(4, dtype=bool)].mean())
    assert np.isnan(M.mean_cosine(np.zeros((1, 5, 3)))[0])
    assert np.isnan(M.mean_cosine(rng.standard_normal((1, 1, 3)))[0])


def _loo_r2_bruteforce(S, X, ridge=0.0):
    """Refit without each sample: least squares (or ridge with unpenalised intercept)."""
    n = S.shape[0]
    press = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        s, x = S[keep], X[keep]
        mu_s, mu_x = s.mean(0), x.mean(0)
        sc, xc = s - mu_s, x - mu_x
        if ridge:
            B = np.linalg.solve(sc.T @ sc + ridge * np.eye(S.shape[1]), sc.T @ xc)
        else:
            B = np.linalg.lstsq(sc, xc, rcond=None)[0]
        pred = (S[i] - mu_s) @ B + mu_x
        press += ((X[i] - pred) ** 2).sum()
    return 1 - press / ((X - X.mean(0)) ** 2).sum()


def test_linear_r2_is_exact_leave_one_out(rng):
    n, w, d = 40, 6, 3
    X = rng.standard_normal((1, n, d))
    S = np.tanh(X @ rng.standard_normal((1, d, w))) + 0.1 * rng.standard_normal((1, n, w))
    S_c, X_c = M.centred(S), M.centred(X)
    eig = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
    got = M.linear_r2(S_c, X_c, eig, 1e-6)[0]
    # the tiny ridge (1e-6 σ_1²) moves a well-conditioned fit by ~1e-6·σ_1²/σ_min² relative
    assert got == pytest.approx(_loo_r2_bruteforce(S[0], X[0]), rel=2e-5)
    rho = M.ridge_factor(1e-6) * eig[0].max()
    assert got == pytest.approx(_loo_r2_bruteforce(S[0], X[0], ridge=rho), rel=1e-9)


def test_linear_r2_unit_active_on_one_sample_is_finite_and_exact(rng):
    """h_ii = 1 in least squares (ReLU unit alive on one sample): PRESS's 0/0 must not blow up."""
    n, d = 30, 2
    X = rng.standard_normal((1, n, d))
    S = np.concatenate([X @ rng.standard_normal((1, d, 3)) + 0.3 * rng.standard_normal((1, n, 3)),
                        np.zeros((1, n, 1))], axis=2)
    S[0, 7, 3] = 0.5  # only sample 7 activates the last unit
    S_c, X_c = M.centred(S), M.centred(X)
    eig = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
    got = M.linear_r2(S_c, X_c, eig, 1e-6)[0]
    assert got == pytest.approx(_loo_r2_bruteforce(S[0], X[0]), rel=1e-6)


def test_linear_r2_is_stable_where_least_squares_leave_one_out_is_not():
    # The seed's sphere init, trial 3, layer 8: 20 of 40 directions numerically alive.
    # Least-squares refits give 0.68 or −9.8 depending on the truncation alone; the ridge
    # LOO must equal its own brute force and sit with the layers around it.
    from initscope.core.network import Architecture, layer_forward
    from initscope.study.model import materialize

    cfg = make_config(metrics="linear_r2")
    X, _, params = materialize(cfg, "sphere")
    S = X[3:4]
    for W, b in params[:8]:
        S, _ = layer_forward(S, W[3:4], b[3:4], Architecture("relu"))
    S_c, X_c = M.centred(S), M.centred(X[3:4])
    eig = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
    got = M.linear_r2(S_c, X_c, eig, 1e-6)[0]
    rho = M.ridge_factor(1e-6) * eig[0].max()
    assert got == pytest.approx(_loo_r2_bruteforce(S[0], X[3], ridge=rho), rel=1e-6)
    assert got > 0.8
    lsq = [_loo_r2_bruteforce_truncated(S[0], X[3], rcond) for rcond in (1e-6, 1e-9)]
    assert lsq[0] < 0.8 and lsq[1] < -5  # what a rounding-level ridge inherits


def _loo_r2_bruteforce_truncated(S, X, rcond):
    n = S.shape[0]
    press = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        A = np.c_[S[keep], np.ones(n - 1)]
        coef = np.linalg.lstsq(A, X[keep], rcond=rcond)[0]
        press += ((X[i] - np.r_[S[i], 1.0] @ coef) ** 2).sum()
    return 1 - press / ((X - X.mean(0)) ** 2).sum()


def test_linear_r2_recovers_a_linear_map_and_not_noise(rng):
    n, d = 200, 4
    X = rng.standard_normal((1, n, d))
    S = X @ rng.standard_normal((1, d, 10))
    S_c, X_c = M.centred(S), M.centred(X)
    eig = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
    assert M.linear_r2(S_c, X_c, eig, 1e-6)[0] == pytest.approx(1.0, abs=1e-8)
    noise = rng.standard_normal((1, n, 10))
    N_c = M.centred(noise)
    eig = M.gram_spectrum(M.gram(N_c), vectors=True)[1]
    # Out of sample, pure noise recovers nothing: R² ≤ 0 up to sampling error ~ 1/sqrt(n).
    assert M.linear_r2(N_c, X_c, eig, 1e-6)[0] < 3 / math.sqrt(n)


def test_linear_r2_uses_tiny_ridge_when_n_le_w_plus_1(rng):
    n, w, d = 10, 30, 2
    X = rng.standard_normal((1, n, d))
    S = rng.standard_normal((1, n, w))
    S_c, X_c = M.centred(S), M.centred(X)
    lam, V = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
    rho = M.ridge_factor(1e-6) * lam.max()
    got = M.linear_r2(S_c, X_c, (lam, V), 1e-6)[0]
    assert np.isfinite(got)
    assert got == pytest.approx(_loo_r2_bruteforce(S[0], X[0], ridge=rho), rel=1e-6)


def test_distance_corr_matches_pdist(rng):
    X = rng.standard_normal((2, 30, 3))
    S = np.maximum(X @ rng.standard_normal((2, 3, 8)) + 0.3, 0)
    ref = M.distance_reference(X, rng=rng)
    got = M.distance_corr(S, ref)
    for t in range(2):
        want = np.corrcoef(pdist(S[t]), pdist(X[t]))[0, 1]
        assert got[t] == pytest.approx(want, rel=1e-10)
    assert M.distance_corr(X, ref) == pytest.approx([1.0, 1.0])


def test_distance_corr_subsamples_beyond_2000(rng):
    X = rng.standard_normal((1, 2100, 2))
    ref = M.distance_reference(X, rng=rng)
    assert len(ref.idx) == 2000 and len(np.unique(ref.idx)) == 2000


def test_distance_corr_nan_when_collapsed_or_too_few(rng):
    X = rng.standard_normal((1, 6, 2))
    ref = M.distance_reference(X, rng=rng)
    assert np.isnan(M.distance_corr(np.ones((1, 6, 4)), ref)[0])
    X2 = rng.standard_normal((1, 2, 2))
    assert np.isnan(M.distance_corr(X2, M.distance_reference(X2, rng=rng))[0])


def test_jacobian_rank_matches_matrix_rank(rng):
    J = rng.standard_normal((2, 5, 3, 7))
    J[0, 1, 2] = J[0, 1, 0] + J[0, 1, 1]  # rank 2 for that sample
    J[1, :, :, 3:] = 0
    J[1, 0] = 0  # rank 0
    J[1, 2, :, :] = np.outer(rng.standard_normal(3), rng.standard_normal(7))  # rank 1
    want = [np.mean([np.linalg.matrix_rank(J[t, i]) for i in range(5)]) / 3 for t in range(2)]
    np.testing.assert_allclose(M.jacobian_rank(J), want)


def test_jacobian_rank_wide_input_and_nonfinite(rng):
    J = rng.standard_normal((2, 4, 6, 2))  # d > w: rank at most w
    J[1, 0, 0, 0] = np.nan
    got = M.jacobian_rank(J)
    assert got[0] == pytest.approx(2 / 6)
    assert np.isnan(got[1])


def test_jacobian_rank_certified_path_agrees_with_matrix_rank_at_every_scale(rng, monkeypatch):
    # Well-conditioned, nearly singular (σ_min = 1e-7 σ_max: full rank for matrix_rank, but not
    # certifiable), exactly deficient, and scales whose Gram matrix overflows or underflows.
    base = rng.standard_normal((6, 4, 9))
    U, _, Vt = np.linalg.svd(base[1], full_matrices=False)
    base[1] = U @ np.diag([1.0, 0.5, 0.1, 1e-7]) @ Vt
    base[2, 3] = base[2, 0] - 2 * base[2, 1]
    base[3] = 0
    J = np.stack([base, base * 1e170, base * 1e-170])
    want = [np.mean([np.linalg.matrix_rank(J[t, i]) for i in range(6)]) / 4 for t in range(3)]
    exact_calls = []
    real = M._exact_ranks
    monkeypatch.setattr(M, "_exact_ranks", lambda sub, **kw: exact_calls.append(len(sub)) or real(sub, **kw))
    np.testing.assert_allclose(M.jacobian_rank(J), want)
    # Only the three doubtful samples go the exact way, at every scale: each sample's
    # matrix is scaled by a power of two first, so the huge and tiny scales (whose raw
    # Gram matrices overflow / underflow, never certified) are certified like trial 0.
    assert exact_calls == [3 + 3 + 3]
    assert M._certified_full_rank(J)[0].tolist() == [True, False, False, False, True, True]


def test_jacobian_rank_certifies_only_what_matrix_rank_would_count(rng):
    # σ_min/σ_max = 1e-4 clears float64's matrix_rank threshold (5.7e-14 here) by far,
    # and is certified; float32's threshold (3.6e-5) is too close for the margin, so the
    # float32 copy is left to the exact path, whose answer is still full rank.
    U, _ = np.linalg.qr(rng.standard_normal((300, 3)))
    J = (U * [1.0, 0.3, 1e-4]).T[None, None]  # (1, 1, 3, 300)
    assert M._certified_full_rank(J)[0, 0]
    assert not M._certified_full_rank(J.astype(np.float32))[0, 0]
    for dtype in (np.float64, np.float32):
        Jd = J.astype(dtype)
        assert M.jacobian_rank(Jd)[0] == np.linalg.matrix_rank(Jd[0, 0]) / 3 == 1.0


def test_collapsed_detects_zero_and_constant_states(rng):
    zero = np.zeros((1, 5, 3))
    const = np.tile(rng.standard_normal(3), (1, 5, 1))
    live = rng.standard_normal((1, 5, 3))
    for S, want in [(zero, True), (const, True), (live, False)]:
        assert M.collapsed(S, _spectrum(S))[0] == want


def test_edge_sizes_all_metrics(rng):
    """One sample, width 1, n < w: every metric returns finite or NaN, never raises."""
    for shape in [(2, 1, 4), (2, 5, 1), (2, 3, 9)]:
        S = rng.standard_normal(shape)
        X = rng.standard_normal((shape[0], shape[1], 2))
        S_c = M.centred(S)
        sv, eig = M.gram_spectrum(M.gram(S_c), vectors=True)
        assert sv.shape == (shape[0], min(shape[1:]))
        for value in [M.rms(S), M.std(S_c), M.effective_rank(sv), M.stable_rank(sv),
                      M.numerical_rank(sv, 1e-6), M.dead_fraction(S), M.linear_fraction(S, "relu"),
                      M.mean_cosine(S), M.linear_r2(S_c, M.centred(X), eig, 1e-6),
                      M.distance_corr(S, M.distance_reference(X, rng=rng))]:
            assert value.shape == (shape[0],)
        if shape[1] == 1:
            assert np.all(sv == 0) and np.all(M.effective_rank(sv) == 0)
            assert np.isnan(M.mean_cosine(S)).all()
            assert np.isnan(M.linear_r2(S_c, M.centred(X), eig, 1e-6)).all()
