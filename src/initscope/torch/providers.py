"""torch's fast kernels as providers of the core's pieces, and the metric forms that read them.

Registered on import into the registries below (`core.pieces`,
`core.metrics.add_form`), under the backend name "torch". A recorded state
x (n, *shape) is read through two `Pieces` views (`measures.measure_state`):

- the **rows** view: the state matrix S, one row per (sample, position),
  one column per unit. Its torch-native pieces: the per-unit row moments,
  extremes and normalised row sum (`kernels.row_stats`, one blocked pass over
  every row, for rms, std, dead and linear units, mean_cosine and, on an
  affine map's output, pre_q and pre_cosine), the spectrum (all rows, or a
  seeded subset of `max_rows` with delete-a-group jackknife replicates:
  the engine turns them into standard errors of every metric that reads
  the spectrum), the token sequences (per-sequence token metrics in torch).
  "state", "centred", "tokens" and "pre" are numpy copies here (not native):
  a user's metric that reads them gets them, at most `max_rows` rows.
- the **samples** view: the flat matrix (n, |shape|), one row per sample,
  which metrics comparing samples read (linear_r2, distance_corr, and any
  metric reading "input", "distances" or "eigh"). Its native piece "flat" is
  the eigen-decomposition of its smaller Gram matrix, formed in torch blocks
  for wide states, so no float64 copy of the state is made.

Each provider is a function of the view; `view.context` is the `Recorded`
state (tensor, layout, row budget, seeded generator, comparison state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from initscope.core import metrics as M
from initscope.core.pieces import Joint, Piece, Pieces, Sampled, register_piece, register_provider
from initscope.torch.kernels import RowStats, centred_row_gram, gram64, row_stats
from initscope.study.recorder import Layout

__all__ = ["Recorded", "JACKKNIFE_GROUPS", "BACKEND", "spectrum_of_gram", "to_numpy", "distance_corr_from_gram"]

BACKEND = "torch"
JACKKNIFE_GROUPS = 4


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU copy in float32 or float64 (half and bfloat16 widen to float32)."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.to("cpu", copy=True).numpy()


@dataclass
class Recorded:
    """One recorded state as the providers read it (see the module docstring).

    x: (n, *shape) on the CPU, float32 or float64, already rescaled against
    overflow; comparison: the state linear_r2 and distance_corr compare with
    (`measures.Comparison`) or None; affine: x is an affine map's output (a
    Linear's or Conv's z, or a floating input). jackknife: some wanted metric
    reads the spectrum, so a subsampled spectrum gets jackknife replicates.
    S and collapsed are set by the spectrum's provider.
    """

    x: torch.Tensor
    layout: Layout
    max_rows: int
    max_sequences: int
    rng: np.random.Generator
    comparison: object
    affine: bool
    jackknife: bool
    S: torch.Tensor | None = None  # the rows the spectrum was computed from (all, or a seeded subset)
    collapsed: bool = False
    sv_scale: float = 1.0  # sqrt(rows/max_rows): the all-rows estimate of a subset's singular values

    @property
    def x3(self) -> torch.Tensor:
        """(A, C, B) view of x whose rows are (a, b) pairs and columns the C units; no copy."""
        n = self.x.shape[0]
        if self.layout.kind == "channels-first":
            return self.x.reshape(n, self.layout.units, -1)
        return self.x.reshape(n * self.layout.positions, self.layout.units, 1)


def _rows(view: Pieces) -> bool:
    return view.samples is not None


def _samples(view: Pieces) -> bool:
    return view.samples is None


def spectrum_of_gram(G) -> np.ndarray:
    """Singular values (..., k) descending, float64, from Gram matrices (..., k, k): the core's `gram_spectrum`.

    One matrix (numpy float64, or a torch (k, k)) goes to numpy's float64
    eigvalsh, a torch batch of small ones to torch's in their dtype. On one
    thread (`kernels.one_thread`) a 1024² matrix took 62 ms in numpy float64
    (84 ms in torch float64), 32 matrices of 128² 10 ms in torch float32
    (14 ms in numpy).
    """
    if isinstance(G, np.ndarray) or G.ndim == 2:
        G = G if isinstance(G, np.ndarray) else G.to(torch.float64).numpy()
        lam = np.linalg.eigvalsh(G)
        return np.sqrt(np.clip(lam[::-1], 0.0, None))
    lam = torch.linalg.eigvalsh(G)
    return lam.flip(-1).clamp_min(0).sqrt().to(torch.float64).numpy()


# ---- the rows view ----------------------------------------------------------------------------------


def _row_stats(view: Pieces) -> Joint:
    """Row moments, extremes and normalised row sum in one blocked pass; None for a state without rows or units."""
    r: Recorded = view.context
    x3 = r.x3
    stats = None
    if x3.shape[0] * x3.shape[2] and x3.shape[1]:
        stats = row_stats(x3, extremes="extremes" in view.wanted, cosine="row_directions" in view.wanted)
    return Joint({"moments": stats, "extremes": stats, "row_directions": stats})


def _collapsed(frob: float, sv: np.ndarray, dtype: torch.dtype) -> bool:
    """The core's `collapsed`: all zero, or σ_1 below 100·eps of the uncentred norm (nothing varies)."""
    eps = torch.finfo(dtype).eps
    top = float(sv[0]) if sv.shape[0] else 0.0
    return frob == 0 or top <= 100 * eps * frob


def _jackknife(S_c: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """The spectra (g + 1, k) of S_c (R, C), C <= R, and of S_c with each of g random groups of rows left out.

    Each group's Gram matrix is formed once: their sum is S_c's own, and
    leaving group g out is a subtraction, re-centred on the remaining rows'
    mean. All g + 1 spectra come from one batched eigvalsh.
    """
    R, C = S_c.shape
    g = JACKKNIFE_GROUPS
    S_p = S_c[torch.from_numpy(rng.permutation(R))]
    bounds = np.linspace(0, R, g + 1).astype(int)
    parts = [S_p[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    grams = torch.from_numpy(np.stack([gram64(p) for p in parts]))
    sums = torch.stack([p.sum(dim=0) for p in parts]).to(torch.float64)
    total, total_sum = grams.sum(dim=0), sums.sum(dim=0)
    G = torch.empty((g + 1, C, C), dtype=torch.float64)
    G[0] = total
    for k, p in enumerate(parts):
        s = total_sum - sums[k]
        G[k + 1] = total - grams[k] - torch.outer(s, s) / (R - p.shape[0])
    return np.stack([spectrum_of_gram(G[k]) for k in range(g + 1)])


def _spectrum(view: Pieces) -> Sampled:
    """The state matrix's spectrum (1, k): from every row, or from a seeded subset of max_rows rows (then with
    jackknife replicates (g, k) when some wanted metric reads it and C <= max_rows / 2)."""
    r: Recorded = view.context
    x3 = r.x3
    rows = x3.shape[0] * x3.shape[2]
    if rows <= r.max_rows:
        S = x3.movedim(1, -1).reshape(rows, -1)
        sv = spectrum_of_gram(gram64(S - S.mean(dim=0, keepdim=True)))
        stats = view["moments"]
        # ‖S‖² = rows·Σ(variance + mean²): rms's own sum, without another pass
        frob = math.sqrt(rows * float((stats.var + stats.mean * stats.mean).sum())) if stats is not None else 0.0
        r.S, r.collapsed = S, _collapsed(frob, sv, r.x.dtype)
        return Sampled(sv[None])
    S = x3[torch.from_numpy(np.sort(r.rng.choice(rows, r.max_rows, replace=False)))] if x3.shape[2] == 1 else None
    if S is None:
        idx = np.sort(r.rng.choice(rows, r.max_rows, replace=False))
        S = x3[torch.from_numpy(idx // x3.shape[2]), :, torch.from_numpy(idx % x3.shape[2])]
    else:
        S = S[:, :, 0]
    S_c = S - S.mean(dim=0, keepdim=True)
    replicates = None
    if r.jackknife and S.shape[1] <= r.max_rows // 2:
        spectra = _jackknife(S_c, r.rng)
        sv, replicates = spectra[0], spectra[1:]
    else:
        sv = spectrum_of_gram(gram64(S_c))
    r.S, r.sv_scale = S, math.sqrt(rows / r.max_rows)
    r.collapsed = _collapsed(float(torch.linalg.vector_norm(S, dtype=torch.float64)), sv, r.x.dtype)
    return Sampled(sv[None], size=r.max_rows, replicates=replicates)


def _state(view: Pieces) -> Sampled:
    """A numpy copy (1, R, C) of the rows the spectrum read (rows view), or of the flat matrix (samples view)."""
    r: Recorded = view.context
    if _samples(view):
        return Sampled(to_numpy(r.x.reshape(r.x.shape[0], -1))[None])
    view["spectrum"]  # noqa: B018 - chooses the rows (a seeded subset of a large state)
    subset = r.S.shape[0] < r.x3.shape[0] * r.x3.shape[2]
    return Sampled(to_numpy(r.S)[None], size=r.max_rows if subset else None)


def _sequences(view: Pieces) -> torch.Tensor:
    """At most max_sequences seeded sequences (m, P, E) of a token state, in torch."""
    r: Recorded = view.context
    n = r.x.shape[0]
    m = min(n, r.max_sequences)
    X = r.x if m == n else r.x[torch.from_numpy(np.sort(r.rng.choice(n, m, replace=False)))]
    return X.reshape(m, r.layout.positions, r.layout.units)


def _is_tokens(view: Pieces) -> bool:
    return _rows(view) and view.context.layout.kind == "tokens"


def _per_sequence(v: np.ndarray) -> Sampled:
    """The mean over sequences of per-sequence values, NaNs left out, with its standard error sd/√m."""
    v = v[np.isfinite(v)]
    value = float(v.mean()) if len(v) else math.nan
    error = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return Sampled(value, size=len(v), error=error)


def _token_cosine(X: torch.Tensor) -> Sampled:
    """The core's token_cosine, in torch: mean_cosine one sequence at a time, Σ_{p≠q} u_p·u_q = ‖Σu_p‖² − P'."""
    norms = torch.linalg.vector_norm(X, dim=2)
    valid = (norms > 0).to(torch.float64).sum(dim=1)
    inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    v = torch.einsum("mp,mpe->me", inv, X).to(torch.float64)
    cos = ((v * v).sum(dim=1) - valid) / (valid * (valid - 1.0))
    return _per_sequence(torch.where(valid >= 2, cos, torch.nan).numpy())


def _token_effective_rank(X: torch.Tensor) -> Sampled:
    """The core's token_effective_rank, in torch: the effective rank of each sequence's uncentred X_i."""
    G = X @ X.transpose(1, 2) if X.shape[1] <= X.shape[2] else X.transpose(1, 2) @ X
    return _per_sequence(M.effective_rank(spectrum_of_gram(G)))


# ---- the samples view --------------------------------------------------------------------------------


def _flat(view: Pieces):
    """(F_c (1, n, W) or a zero-cost stand-in, eig of its smaller Gram, centred Gram (n, n) or None).

    Narrow states (n >= W) go through the core's numpy path. Wide ones are
    reduced to F_c·F_cᵀ (`kernels.centred_row_gram`): linear_r2 (n < W) and
    the projections read only its eigen-decomposition, distance_corr only the
    Gram matrix.
    """
    x = view.context.x
    n = x.shape[0]
    F = x.reshape(n, -1)
    if n >= F.shape[1]:
        F_c = M.centred(to_numpy(F)[None])
        return F_c, M.gram_spectrum(M.gram(F_c), vectors=True)[1], None
    G = centred_row_gram(F)[None]
    lam, V = np.linalg.eigh(G)
    # Only its shape is read when n < W; float64, or linear_r2 would materialise a float64 copy of it.
    stand_in = np.broadcast_to(np.zeros(()), (1, n, F.shape[1]))
    return stand_in, (lam, V), G[0]


def _compared(view: Pieces) -> bool:
    c = view.context.comparison
    return _samples(view) and c is not None and c.X_c.shape[1] == view.context.x.shape[0]


def _has_distances(view: Pieces) -> bool:
    c = view.context.comparison
    return _samples(view) and c is not None and c.ref is not None


def distance_corr_from_gram(G: np.ndarray, ref: M.DistanceReference) -> float:
    """distance_corr (the core's definition) from the centred Gram matrix G (n, n) of a state's flat rows.

    Distances do not depend on centring: d²_ij = G_ii + G_jj − 2G_ij.
    """
    m = len(ref.idx)
    if ref.pairs < 2:
        return math.nan
    g = G if m == G.shape[0] else G[np.ix_(ref.idx, ref.idx)]
    sq = np.diagonal(g).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * g
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    np.sqrt(D, out=D)
    P = ref.pairs
    s1, s2 = D.sum() / 2.0, np.vdot(D, D) / 2.0
    cross = np.vdot(D, ref.D0[0]) / 2.0
    var, var0 = P * s2 - s1 * s1, P * ref.sumsq0[0] - ref.sum0[0] ** 2
    return float((P * cross - s1 * ref.sum0[0]) / math.sqrt(var * var0)) if var > 0 and var0 > 0 else math.nan


def _distance_corr(flat, ref) -> float:
    F_c, _, G = flat
    return distance_corr_from_gram(G, ref) if G is not None else float(M.distance_corr(F_c + 0.0, ref)[0])


# ---- the forms: the core's definitions on these pieces ------------------------------------------------


def _rms(stats: RowStats | None) -> float:
    """rms² is the mean over units of variance + mean², the same sum the core takes; 0 without rows or units."""
    return 0.0 if stats is None else math.sqrt(float((stats.var + stats.mean * stats.mean).mean()))


def _std(stats: RowStats | None) -> float:
    return 0.0 if stats is None else math.sqrt(float(stats.var.mean()))


def _dead(stats: RowStats | None) -> float:
    return math.nan if stats is None else float(((stats.hi == 0) & (stats.lo == 0)).double().mean())


def _linear(stats: RowStats | None, activation: str) -> float:
    return math.nan if stats is None else float((stats.lo > 0).double().mean())


def _cosine(stats: RowStats | None) -> float:
    if stats is None:
        return math.nan
    v, m = stats.unit_sum, float(stats.nonzero)
    return float((v @ v - m) / (m * (m - 1.0))) if m >= 2 else math.nan


def _register() -> None:
    for entry in (
        Piece("moments", "per-unit mean and variance over all rows (`kernels.RowStats`, torch)", user=False),
        Piece("extremes", "per-unit max and min over all rows (`kernels.RowStats`, torch)", user=False),
        Piece("row_directions", "Σ over nonzero rows of row/‖row‖, and their count (`kernels.RowStats`, torch)",
              user=False),
        Piece("sequences", "X (m, P, E): a token state's sequences, in torch", user=False),
        Piece("flat", "(F_c (1, n, W) or a stand-in of its shape, eig of its smaller Gram, centred Gram (n, n) or "
              "None): the one-row-per-sample matrix, reduced in torch", per_sample=True, user=False),
        Piece("input_basis", "what linear_r2 reads for the comparison state: X_c, or (1, n, n) L with "
              "L·Lᵀ = X_c·X_cᵀ when d > n (`kernels.row_basis`)", per_sample=True, user=False),
        Piece("affine", "True: the state is an affine map's output z (its pre-activation)", scalar=True, user=False),
    ):
        register_piece(entry)
    for name in ("moments", "extremes", "row_directions"):
        register_provider(BACKEND, name, _row_stats, available=_rows)
    register_provider(BACKEND, "spectrum", _spectrum, available=_rows)
    register_provider(BACKEND, "state", _state, native=False)
    register_provider(BACKEND, "sequences", _sequences, available=_is_tokens)
    register_provider(BACKEND, "tokens", lambda v: to_numpy(v["sequences"])[None], native=False, available=_is_tokens)
    register_provider(BACKEND, "pre", lambda v: v["state"], native=False,
                      available=lambda v: _rows(v) and v.context.affine)
    register_provider(BACKEND, "affine", lambda v: True, available=lambda v: _rows(v) and v.context.affine)
    register_provider(BACKEND, "flat", _flat, available=_samples)
    register_provider(BACKEND, "eigh", lambda v: v["flat"][1], available=_samples)
    register_provider(BACKEND, "input", lambda v: v.context.comparison.X_c, available=_compared)
    register_provider(BACKEND, "input_basis", lambda v: v.context.comparison.basis, available=_compared)
    register_provider(BACKEND, "distances", lambda v: v.context.comparison.ref, available=_has_distances)
    for name, needs, fn in (
        ("rms", ("moments",), _rms),
        ("std", ("moments",), _std),
        ("dead_fraction", ("extremes",), _dead),
        ("linear_fraction", ("extremes", "activation"), _linear),
        ("mean_cosine", ("row_directions",), _cosine),
        ("pre_q", ("affine", "moments"), lambda _, stats: _rms(stats) ** 2),
        ("pre_cosine", ("affine", "row_directions"), lambda _, stats: _cosine(stats)),
        ("linear_r2", ("flat", "input_basis", "rtol"), lambda flat, basis, rtol: M.linear_r2(flat[0], basis,
                                                                                               flat[1], rtol)),
        ("distance_corr", ("flat", "distances"), _distance_corr),
        ("token_cosine", ("sequences",), _token_cosine),
        ("token_effective_rank", ("sequences",), _token_effective_rank),
    ):
        M.add_form(name, needs, fn, backend=BACKEND)


_register()
