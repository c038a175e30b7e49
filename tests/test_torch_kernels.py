"""The torch adapter's fast measuring kernels against the core's numpy definitions on the same tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")

from initscope.core import metrics as M  # noqa: E402
from initscope.torch.kernels import CHUNK, centred_row_gram, gram64, one_thread, row_basis, row_stats  # noqa: E402
from initscope.study.recorder import Layout  # noqa: E402
from initscope.torch.measures import Comparison, measure_state  # noqa: E402


def _state(shape, dtype, seed, offset=0.0):
    """ReLU of correlated Gaussian maps plus a per-channel offset: dead units, a large common mean, zero rows."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    x = torch.relu(x + 0.2 * x.roll(1, dims=1)) + offset
    x[:, 0] = 0.0  # a dead unit
    x[0] = 0.0  # a sample whose rows are all zero: no direction
    return x.to(dtype)


def _matrix(x: torch.Tensor, kind: str) -> np.ndarray:
    """The state matrix S (1, rows, units) as the core reads it."""
    if kind == "channels-first":
        S = x.reshape(x.shape[0], x.shape[1], -1).movedim(1, -1).reshape(-1, x.shape[1])
    else:
        S = x.reshape(-1, x.shape[-1])
    return S.numpy()[None]


CASES = [((6, 5, 7, 9), "channels-first"), ((5, 11, 13), "tokens"), ((300, 40), "units"),
         ((3, 8, 200, 300), "channels-first")]  # the last spans several blocks of CHUNK elements


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,kind", CASES)
def test_row_stats_are_the_core_one_pass_metrics(shape, kind, dtype):
    x = _state(shape, dtype, seed=len(shape), offset=30.0 if dtype == torch.float64 else 0.0)
    if kind == "channels-first":
        x3 = x.reshape(shape[0], shape[1], -1)
    else:
        x3 = x.reshape(-1, shape[-1], 1)
    if shape[0] * math.prod(shape[1:]) > CHUNK:
        assert shape[1] * math.prod(shape[2:]) < CHUNK < x.numel()  # several blocks
    S = _matrix(x, kind)
    got = row_stats(x3, extremes=True, cosine=True)
    rows = S.shape[1]
    # float64: to rounding; float32: to a few ulps of the sums (the core sums in float32 too)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    rms = math.sqrt(float((got.var + got.mean ** 2).mean()))
    std = math.sqrt(float(got.var.mean()))
    S64 = S.astype(np.float64)
    assert rms == pytest.approx(float(M.rms(S64)[0]), rel=tol)
    assert std == pytest.approx(float(M.std(M.centred(S64))[0]), rel=tol)
    np.testing.assert_allclose(got.mean.numpy(), S64[0].mean(axis=0), rtol=tol, atol=tol * 30)
    np.testing.assert_array_equal(got.hi.numpy(), S[0].max(axis=0))
    np.testing.assert_array_equal(got.lo.numpy(), S[0].min(axis=0))
    m = float(got.nonzero)
    assert got.nonzero == int((np.abs(S[0]).sum(axis=1) > 0).sum()) < rows
    v = got.unit_sum
    cos = float((v @ v - m) / (m * (m - 1.0)))
    assert cos == pytest.approx(float(M.mean_cosine(S64)[0]), rel=10 * tol)


@pytest.mark.parametrize("rows,cols", [(500, 40), (30, 200)])
def test_gram64_is_the_core_gram_and_spectrum(rows, cols):
    gen = torch.Generator().manual_seed(1)
    S = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    S_c = S - S.mean(dim=0)
    G = gram64(S_c)
    core = M.gram(S_c.numpy()[None])[0]
    np.testing.assert_allclose(G, core, rtol=1e-12, atol=1e-12 * np.abs(core).max())
    np.testing.assert_allclose(M.gram_spectrum(G[None])[0], M.gram_spectrum(core[None])[0], rtol=1e-10)
    assert gram64(S_c.float()).dtype == np.float64


def test_centred_row_gram_in_blocks_equals_the_centred_product():
    gen = torch.Generator().manual_seed(2)
    F = torch.randn(7, 3 * CHUNK // 7 + 5, generator=gen, dtype=torch.float64) + 100.0  # several blocks, big offset
    F_c = (F - F.mean(dim=0)).numpy()
    np.testing.assert_allclose(centred_row_gram(F), F_c @ F_c.T, rtol=1e-10, atol=1e-9 * np.abs(F_c @ F_c.T).max())


def test_linear_r2_against_the_row_basis_is_linear_r2_against_the_input():
    """linear_r2 reads the comparison only through X_c·X_cᵀ: the (n, n) basis gives the same value."""
    rng = np.random.default_rng(3)
    n, d, w = 12, 500, 30
    X = rng.standard_normal((1, n, d))
    X_c = M.centred(X)
    L = row_basis(X_c[0])[None]
    assert L.shape == (1, n, n)
    np.testing.assert_allclose(L[0] @ L[0].T, X_c[0] @ X_c[0].T, rtol=1e-10, atol=1e-10 * d)
    for S in (np.maximum(X[:, :, :w] @ rng.standard_normal((w, w)), 0.0), X[:, :, :5] ** 2):
        S_c = M.centred(S)
        eig = M.gram_spectrum(M.gram(S_c), vectors=True)[1]
        rtol = M.rank_rtol(np.float64)
        want = M.linear_r2(S_c, X_c, eig, rtol)[0]
        assert M.linear_r2(S_c, L, eig, rtol)[0] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert Comparison(X_c, None).basis.shape == (1, n, n)
    narrow = M.centred(rng.standard_normal((1, n, 3)))
    assert Comparison(narrow, None).basis is narrow  # nothing to gain when d <= n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_measure_state_matches_the_core_on_every_row(dtype):
    """The whole fast path (all rows: rows <= max_rows) against the core's metrics on the same state matrix."""
    x = _state((4, 6, 9, 9), dtype, seed=5)
    layout = Layout((6, 9, 9), "channels-first", "module type")
    X = _state((4, 3, 9, 9), torch.float64, seed=6).reshape(4, -1).numpy()[None]
    comparison = Comparison(M.centred(X), M.distance_reference(X, rng=np.random.default_rng(0)))
    want = {"rms", "std", "dead_fraction", "linear_fraction", "mean_cosine", "effective_rank", "stable_rank",
            "numerical_rank", "linear_r2", "distance_corr"}
    got = measure_state(x, layout, want=want, activation="relu", comparison=comparison, first=False,
                        rng=np.random.default_rng(0))
    S = _matrix(x, "channels-first")
    S_c = M.centred(S)
    sv = M.gram_spectrum(M.gram(S_c))
    rtol = M.rank_rtol(S.dtype)
    F = x.reshape(4, -1).numpy()[None]
    F_c = M.centred(F)
    eig = M.gram_spectrum(M.gram(F_c.astype(np.float64)), vectors=True)[1]
    expected = {"rms": M.rms(S), "std": M.std(S_c), "dead_fraction": M.dead_fraction(S),
                "linear_fraction": M.linear_fraction(S, "relu"), "mean_cosine": M.mean_cosine(S),
                "effective_rank": M.effective_rank(sv), "stable_rank": M.stable_rank(sv),
                "numerical_rank": M.numerical_rank(sv, rtol),
                "linear_r2": M.linear_r2(F_c, comparison.X_c, eig, rtol),
                "distance_corr": M.distance_corr(F, comparison.ref)}
    tol = 1e-10 if dtype == torch.float64 else 1e-4  # float32: the core's own float32 sums and Gram matrix
    for name, value in expected.items():
        if name == "linear_r2" and dtype == torch.float32:
            # n <= w + 1: leave-one-out R² divides by 1 − h_ii near 0, so float32 rounding of the Gram matrix
            # moves it at the 1e-2 level in any pipeline (here the core's float32 Gram gives -0.725, a float64
            # Gram of the same float32 state -0.711). Ask for no more than twice the core's own float32 error.
            core32 = M.linear_r2(F_c, comparison.X_c, M.gram_spectrum(M.gram(F_c), vectors=True)[1], rtol)[0]
            assert abs(got.values[name] - value[0]) <= 2 * abs(core32 - value[0]) + 1e-3
            continue
        if name == "linear_r2":
            # Even in float64 the same conditioning (1 − h_ii near 0) magnifies the two pipelines' different
            # summation orders (torch's Gram vs numpy's) to ~2e-10 on some BLAS builds: allow 1e-8.
            assert got.values[name] == pytest.approx(float(value[0]), rel=1e-8, abs=1e-8), name
            continue
        assert got.values[name] == pytest.approx(float(value[0]), rel=tol, abs=tol), name
    np.testing.assert_allclose(got.spectrum, sv[0], rtol=tol, atol=tol * sv[0, 0])


def test_one_thread_restores_both_pools_even_after_an_error():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    blas_before = [p["num_threads"] for p in threadpool_info()]
    with pytest.raises(RuntimeError, match="inside"):
        with one_thread():
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info())
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpool_info()] == blas_before
