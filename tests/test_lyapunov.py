"""core.lyapunov: log singular values of deep Jacobian products through re-orthogonalised frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import digamma, polygamma

from initscope.core.lyapunov import advance_frame, log_stretches, start_frame


def _gaussian(rng, shape, n):
    return rng.standard_normal(shape) / np.sqrt(n)


def test_gaussian_products_follow_bartlett_at_every_index():
    """i.i.d. N(0, 1/N) layers: each step's ln|R_ii| has mean ½(ln(2/N) + ψ((N−i+1)/2)) and variance ¼ψ'(·)."""
    rng = np.random.default_rng(0)
    N, L, T, m = 16, 40, 4, 16
    frame = start_frame(_gaussian(rng, (T, m, N, N), N))
    for _ in range(L - 1):
        frame = advance_frame(frame, frame.rows @ _gaussian(rng, (T, m, N, N), N), N)
    logs = log_stretches(frame).reshape(T * m, N)
    dof = (N - np.arange(N)) / 2
    mean = L * 0.5 * (np.log(2 / N) + digamma(dof))
    se = np.sqrt(L * 0.25 * polygamma(1, dof) / (T * m))  # the samples are independent
    z = (logs.mean(axis=0) - mean) / se
    assert np.abs(z).max() < 4.0  # 16 z-scores: P(max |z| > 4) < 16·6.3e-5 = 1e-3
    # and the estimated spread (std over samples and indices) is the theory's to the same precision
    theory_var = np.mean(L * 0.25 * polygamma(1, dof)) + np.var(mean)
    assert logs.std() == pytest.approx(np.sqrt(theory_var), rel=0.1)


def test_orthogonal_products_are_isometries_at_any_depth():
    rng = np.random.default_rng(1)
    N, L = 12, 300
    frame = start_frame(np.linalg.qr(rng.standard_normal((1, 2, N, N)))[0])
    for _ in range(L):
        Q = np.linalg.qr(rng.standard_normal((1, 2, N, N)))[0]
        frame = advance_frame(frame, frame.rows @ (3.0 * Q), N)
    np.testing.assert_allclose(log_stretches(frame), L * np.log(3.0), atol=1e-9)


def test_shallow_products_match_the_formed_jacobian():
    """Where float64 holds the product, the stretches' sum is Σ ln σ exactly, and their spread the SVD's."""
    rng = np.random.default_rng(2)
    T, m, d, w, L = 2, 3, 6, 10, 4
    J = rng.standard_normal((T, m, d, w))
    frame = start_frame(J)
    for _ in range(L):
        M = rng.standard_normal((T, 1, w, w)) / np.sqrt(w)
        J = J @ M
        frame = advance_frame(frame, frame.rows @ M, d)
    logs = log_stretches(frame)
    sv = np.linalg.svd(J, compute_uv=False)
    np.testing.assert_allclose(logs.sum(axis=-1), np.log(sv).sum(axis=-1), rtol=1e-10)


def test_deep_products_outrun_the_formed_window():
    """At depth 200 the formed product keeps only ~36 nats of its spectrum; the frame keeps all of it."""
    rng = np.random.default_rng(3)
    N, L = 24, 200
    J = _gaussian(rng, (1, 1, N, N), N)
    frame = start_frame(J)
    for _ in range(L - 1):
        M = _gaussian(rng, (1, 1, N, N), N)
        J = J @ M
        frame = advance_frame(frame, frame.rows @ M, N)
    logs = log_stretches(frame)[0, 0]
    sv = np.linalg.svd(J[0, 0], compute_uv=False)
    formed = np.log(sv[sv > sv[0] * N * np.finfo(float).eps])
    assert formed.max() - formed.min() < 40  # the window
    assert logs.max() - logs.min() > 150  # Lyapunov: L·(μ_1 − μ_N) ≈ 200 × 1.6
    assert logs.max() == pytest.approx(np.log(sv[0]), abs=3.0)  # the top stretch is the top σ, up to O(√L) terms


def test_lost_directions_are_marked_and_a_non_finite_trial_is_nan():
    rng = np.random.default_rng(4)
    N = 8
    frame = start_frame(rng.standard_normal((2, 1, N, N)))
    M = rng.standard_normal((2, 1, N, N))
    M[..., :, :3] = 0.0  # three dead units: rank 5
    M[1] = np.nan
    frame = advance_frame(frame, frame.rows @ M, N)
    logs = log_stretches(frame)
    assert np.isfinite(logs[0]).sum() == 5
    assert np.isnan(logs[1]).all()


def test_a_wide_input_starts_from_its_triangle():
    rng = np.random.default_rng(5)
    J = rng.standard_normal((1, 2, 30, 6))  # d = 30 > w = 6
    a = start_frame(J)
    b = start_frame(np.linalg.qr(J, mode="r"), input_dim=30)
    np.testing.assert_allclose(log_stretches(a), log_stretches(b), atol=1e-12)
    # one step's stretches are R's diagonal, not the σ; their sum is Σ ln σ = ln|det|
    np.testing.assert_allclose(log_stretches(a).sum(-1), np.log(np.linalg.svd(J, compute_uv=False)).sum(-1),
                               rtol=1e-12)
