"""Kernels that read every row of a recorded state: in blocks that stay in cache, on one thread.

Why blocks. A ResNet stem state is 32 × 64 × 112² floats (103 MB). torch's
own reductions over its (sample, position) axes (`var_mean`, a norm over
channels) and whole-state temporaries (`x - mean`) each cost 60–140 ms on
it, mostly page faults of fresh 100 MB buffers and strided access; the same
sums over blocks of `CHUNK` elements reuse one cache-sized buffer (measured:
var_mean 134 ms, blocked 59 ms; norm over channels plus its weighted sum
142 ms, blocked well under half that). Memory stays bounded by a block.

Why one thread (`one_thread`). Measuring runs between module calls. On the
2-core machine this was tuned on, shared with other jobs, torch's OpenMP
pool and numpy's BLAS pool each spin 2 threads: 32 eigvalsh of 128² took
317 ms with 2 threads and 19 ms with 1, and a numpy 1024² eigvalsh right
after a torch product 2.5 s instead of 0.19 s. The matrix products that
would gain from threads are halved instead: Gram matrices go through
numpy, whose `a.T @ a` is a symmetric rank-k update (half a product).

Pure functions of tensors; no state, no I/O.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CHUNK", "RowStats", "row_stats", "gram64", "centred_row_gram", "row_basis", "one_thread"]

CHUNK = 1 << 20  # elements per block: 4 MiB of float32


@functools.cache
def _pools():
    """A threadpoolctl controller of the loaded thread pools (numpy's BLAS, torch's), made once.

    threadpool_limits() would rescan the loaded libraries on every call (139
    times for a BERT); study.parallel's controller also imports scipy.linalg
    (0.3–0.9 s), which nothing here calls.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_thread():
    """Torch's and numpy's thread pools at one thread each inside, as they were after (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _pools().limit(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class RowStats:
    """Per-unit statistics over all rows of a state. Shapes (C,), float64 unless said."""

    mean: torch.Tensor
    var: torch.Tensor  # population variance (divided by the row count)
    hi: torch.Tensor | None  # per-unit max and min, in the state's dtype
    lo: torch.Tensor | None
    unit_sum: torch.Tensor | None  # Σ over nonzero rows of row/‖row‖ (mean_cosine's sum)
    nonzero: int  # rows with a nonzero norm


def row_stats(x3: torch.Tensor, *, extremes: bool, cosine: bool) -> RowStats:
    """Mean, variance, extremes and the normalised row sum of the rows of x3 (A, C, B).

    Rows are the (a, b) pairs, units the C columns (`providers.Recorded.x3`).
    The variance is a two-pass one about a shift (a first mean in the
    state's dtype), so a large common offset costs no accuracy; block sums
    are added in float64.
    """
    A, C, B = x3.shape
    rows = A * B
    shift = x3.sum(dim=(0, 2)) / rows
    step = max(1, CHUNK // max(1, C * B))
    s1 = torch.zeros(C, dtype=torch.float64)
    s2 = torch.zeros(C, dtype=torch.float64)
    hi = lo = unit_sum = None
    nonzero = 0
    if extremes:
        hi = torch.full((C,), -torch.inf, dtype=x3.dtype)
        lo = torch.full((C,), torch.inf, dtype=x3.dtype)
    if cosine:
        unit_sum = torch.zeros(C, dtype=torch.float64)
    shift_b = shift[:, None]
    for a in range(0, A, step):
        blk = x3[a:a + step]
        if extremes:
            torch.maximum(hi, blk.amax(dim=(0, 2)), out=hi)
            torch.minimum(lo, blk.amin(dim=(0, 2)), out=lo)
        if cosine:
            norms = blk.square().sum(dim=1).sqrt_()  # (k, B): a sum over C of contiguous rows when B > 1
            ok = norms > 0
            nonzero += int(ok.sum())
            inv = torch.where(ok, 1.0 / torch.where(ok, norms, 1.0), 0.0)
            if B == 1:
                unit_sum += inv[:, 0] @ blk[:, :, 0]
            else:
                unit_sum += torch.bmm(blk, inv[:, :, None]).sum(dim=0)[:, 0]
        d = blk - shift_b
        s1 += d.sum(dim=(0, 2))
        s2 += d.square_().sum(dim=(0, 2))
    dev = s1 / rows
    var = (s2 / rows - dev * dev).clamp_min(0.0)
    return RowStats(shift.to(torch.float64) + dev, var, hi, lo, unit_sum, nonzero)


def gram64(S_c: torch.Tensor) -> np.ndarray:
    """The smaller Gram matrix of S_c (R, C) in float64: (C, C) if R >= C else (R, R).

    numpy runs `a.T @ a` as a symmetric rank-k update (half a product's
    work; torch runs a full product); in S_c's dtype, as the core's `gram`.
    """
    a = S_c.numpy()
    G = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    return G.astype(np.float64, copy=False)


def centred_row_gram(F: torch.Tensor) -> np.ndarray:
    """F_c·F_cᵀ (n, n) float64 for F (n, W), F_c = F minus its column means, in column blocks.

    The same products as one (n, W) centred copy, without the copy: blocks
    of `CHUNK` elements are centred, multiplied in F's dtype and added up
    in float64.
    """
    n, W = F.shape
    mean = F.mean(dim=0)
    G = np.zeros((n, n))
    step = max(1, CHUNK // max(1, n))
    for s in range(0, W, step):
        c = (F[:, s:s + step] - mean[s:s + step]).numpy()
        G += c @ c.T
    return G


def row_basis(X_c: np.ndarray) -> np.ndarray:
    """L (n, n) with L·Lᵀ = X_c·X_cᵀ, for X_c (n, d) with d > n: Rᵀ of the QR of X_cᵀ (Householder).

    linear_r2 reads its comparison X_c only through X_c·X_cᵀ (residuals
    (I − P)X_c and their row norms): L gives the same residual norms from
    (n, n) arrays, exactly in arithmetic, to rounding in floating point
    (an orthogonal change of basis), and without squaring X_c's condition
    number as a Gram matrix would.
    """
    return np.linalg.qr(X_c.T, mode="r").T.copy()
