"""One recorded state measured with the core's metrics, in time and memory that real models allow.

A state x: (n, *shape) with a `Layout` gives three readings:

- the **state matrix** S (rows × units): (n, w) for units; one row per
  (sample, position) and one column per channel or feature otherwise. rms,
  std, spectra, ranks, dead and linear units, mean_cosine and collapse are
  read on S.
- the **flat** matrix (n, |shape|), one row per sample, for linear_r2,
  distance_corr and the 3-D projections, compared with the comparison state
  (`Comparison`: the input, or for integer inputs the reference state).
- for ``tokens``, each sequence's positions × features matrix X_i, for the
  token metrics (`token_cosine`, `token_effective_rank`), averaged over sequences.

Cost. The metrics that read every row once (rms, std, dead and linear
units, mean_cosine) use every row, in torch, without copying the state.
Spectra cost O(rows·w²), so when S has more than `max_rows` rows (e.g.
32 images × 112² positions = 401,408 rows) they are computed from a fixed,
seeded subset of `max_rows` rows; their `sample_size` is then that count and
their `std_error` is a delete-a-group jackknife over 4 random groups of the
subset (the spread of the subset's value around the all-rows value), and the
stored singular values are rescaled by sqrt(rows/max_rows) to estimate the
all-rows ones. The flat matrix of a wide state (n < |shape|) is reduced to
its n × n Gram matrix in torch: linear_r2, distance_corr and the
projections need nothing else, so no float64 copy of the state is made.
Token metrics use at most `max_sequences` sequences (seeded); their
std_error is the standard error of the mean over sequences, sd/√m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from initscope.core import metrics as M
from initscope.torch.kernels import RowStats, centred_row_gram, gram64, one_thread, row_basis, row_stats
from initscope.torch.layouts import Layout

__all__ = ["Measured", "Comparison", "measure_state", "to_numpy", "principal_coordinates", "TOKEN_METRICS",
           "MAX_ROWS", "MAX_SEQUENCES", "JACKKNIFE_GROUPS", "token_cosine", "token_effective_rank"]

TOKEN_METRICS = ("token_cosine", "token_effective_rank")  # core registry entries needing "tokens"
BUILT_IN = ("rms", "std", "effective_rank", "stable_rank", "numerical_rank", "dead_fraction", "linear_fraction",
            "mean_cosine", "linear_r2", "distance_corr", "jacobian_rank", "grad_norm", *TOKEN_METRICS)
token_cosine, token_effective_rank = M.token_cosine, M.token_effective_rank  # the definitions (numpy, per trial)
MAX_ROWS = 8192
MAX_SEQUENCES = 256
JACKKNIFE_GROUPS = 4
# What a registered metric may read from a recorded state; others (pre-activations, Jacobians) are NaN here.
_RECORDED = frozenset({"state", "centred", "spectrum", "eigh", "input", "distances", "rtol", "activation"})
_SPECTRAL = ("effective_rank", "stable_rank", "numerical_rank")
_ONE_PASS = ("rms", "std", "dead_fraction", "linear_fraction", "mean_cosine")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU copy in float32 or float64 (half and bfloat16 widen to float32)."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.to("cpu", copy=True).numpy()


@dataclass
class Comparison:
    """The state linear_r2 and distance_corr compare with: X_c (1, n, d) centred flat, and its distances.

    basis: what linear_r2 reads instead of X_c when d > n, (1, n, n) with the
    same X_c·X_cᵀ (`kernels.row_basis`); made here, once per comparison.
    """

    X_c: np.ndarray
    ref: M.DistanceReference | None
    basis: np.ndarray = field(init=False)

    def __post_init__(self):
        _, n, d = self.X_c.shape
        with one_thread():
            self.basis = row_basis(self.X_c[0])[None] if d > n else self.X_c


@dataclass
class Measured:
    values: dict[str, float]
    spectrum: np.ndarray  # (k,) float64, empty when non-finite
    projection: np.ndarray  # (n, 3)
    finite: bool
    collapsed: bool
    sizes: dict[str, int] = field(default_factory=dict)  # rows (or sequences) behind a value, where fewer than all
    errors: dict[str, float] = field(default_factory=dict)  # its standard error, where estimated


def _rows_view(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(A, C, B) view of x (n, *shape) whose rows are (a, b) pairs and columns the C units; no copy."""
    n = x.shape[0]
    if layout.kind == "channels-first":
        return x.reshape(n, layout.units, -1)
    return x.reshape(n * layout.positions, layout.units, 1)


def _one_pass(stats: RowStats | None, want: set[str], activation: str, first: bool) -> dict[str, float]:
    """rms, std, dead and linear units, mean_cosine of all rows, as the core defines them, from `row_stats`.

    rms² is the mean over units of variance + mean², the same sum the core
    takes. stats None: no rows or no units.
    """
    if stats is None:
        return {k: (0.0 if k in ("rms", "std") else math.nan) for k in _ONE_PASS if k in want}
    out: dict[str, float] = {}
    var, mean = stats.var, stats.mean
    out["rms"] = math.sqrt(float((var + mean * mean).mean()))
    out["std"] = math.sqrt(float(var.mean()))
    if stats.hi is not None:
        hi, lo = stats.hi, stats.lo
        out["dead_fraction"] = float(((hi == 0) & (lo == 0)).double().mean())
        relu_like = activation in M.RELU_LIKE and not first
        out["linear_fraction"] = float((lo > 0).double().mean()) if relu_like else math.nan
    if stats.unit_sum is not None:
        v, m = stats.unit_sum, float(stats.nonzero)
        out["mean_cosine"] = float((v @ v - m) / (m * (m - 1.0))) if m >= 2 else math.nan
    return {k: v for k, v in out.items() if k in want}


def _spectrum(G) -> np.ndarray:
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


def _collapsed(frob: float, sv: np.ndarray, dtype: torch.dtype) -> bool:
    """The core's `collapsed`: all zero, or σ_1 below 100·eps of the uncentred norm (nothing varies)."""
    eps = torch.finfo(dtype).eps
    top = float(sv[0]) if sv.shape[0] else 0.0
    return frob == 0 or top <= 100 * eps * frob


def _spectral(sv: np.ndarray, col: bool, rtol: float, want: set[str]) -> dict[str, np.ndarray]:
    """effective, stable and numerical rank of spectra sv (T, k); 0 for a collapsed state."""
    rules = {"effective_rank": M.effective_rank, "stable_rank": M.stable_rank,
             "numerical_rank": lambda s: M.numerical_rank(s, rtol)}
    return {k: np.where(col, 0.0, fn(sv)) for k, fn in rules.items() if k in want}


def _jackknife(S_c: torch.Tensor, rtol: float, want: set[str], rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, float]]:
    """(the spectrum of S_c (R, C), C <= R, and delete-a-group jackknife standard errors of its ranks).

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
    sv = np.stack([_spectrum(G[k]) for k in range(g + 1)])
    stats = _spectral(sv[1:], np.zeros(g, bool), rtol, want)
    errors = {k: float(math.sqrt((g - 1) / g * ((v - v.mean()) ** 2).sum())) for k, v in stats.items()}
    return sv[0], errors


def _state_part(x: torch.Tensor, layout: Layout, *, want: set[str], activation: str, first: bool,
                max_rows: int, rng: np.random.Generator) -> tuple[dict, dict, dict, np.ndarray, bool]:
    """(values, sizes, errors, spectrum (k,), collapsed) of the state matrix S of x."""
    x3 = _rows_view(x, layout)
    rows = x3.shape[0] * x3.shape[2]
    rtol = M.rank_rtol(np.float64 if x.dtype == torch.float64 else np.float32)
    stats = None
    if rows and x3.shape[1]:
        stats = row_stats(x3, extremes=bool(want & {"dead_fraction", "linear_fraction"}),
                          cosine="mean_cosine" in want)
    values = _one_pass(stats, want, activation, first)
    sizes, errors = {}, {}
    spectral = [k for k in _SPECTRAL if k in want]
    if rows <= max_rows:
        S = x3.movedim(1, -1).reshape(rows, -1)
        sv = _spectrum(gram64(S - S.mean(dim=0, keepdim=True)))
        # ‖S‖² = rows·Σ(variance + mean²): rms's own sum, without another pass
        frob = math.sqrt(rows * float((stats.var + stats.mean * stats.mean).sum())) if stats is not None else 0.0
        col = _collapsed(frob, sv, x.dtype)
        values.update({k: float(v[0]) for k, v in _spectral(sv[None], col, rtol, want).items()})
        return values, sizes, errors, sv, col
    S = x3[torch.from_numpy(np.sort(rng.choice(rows, max_rows, replace=False)))] if x3.shape[2] == 1 else None
    if S is None:
        idx = np.sort(rng.choice(rows, max_rows, replace=False))
        S = x3[torch.from_numpy(idx // x3.shape[2]), :, torch.from_numpy(idx % x3.shape[2])]
    else:
        S = S[:, :, 0]
    S_c = S - S.mean(dim=0, keepdim=True)
    jack = bool(spectral) and S.shape[1] <= max_rows // 2
    if jack:
        sv, errs = _jackknife(S_c, rtol, want, rng)
    else:
        sv, errs = _spectrum(gram64(S_c)), {}
    col = _collapsed(float(torch.linalg.vector_norm(S, dtype=torch.float64)), sv, x.dtype)
    values.update({k: float(v[0]) for k, v in _spectral(sv[None], col, rtol, want).items()})
    for k in spectral:
        sizes[k] = max_rows
        if not col and k in errs:
            errors[k] = errs[k]
    return values, sizes, errors, sv * math.sqrt(rows / max_rows), col


def _flat_eig(x: torch.Tensor):
    """(F_c (1, n, W) or a zero-cost stand-in, eig of its smaller Gram, centred Gram (n, n) or None).

    Narrow states (n >= W) go through the core's numpy path. Wide ones are
    reduced to F_c·F_cᵀ (`kernels.centred_row_gram`): linear_r2 (n < W) and
    the projections read only its eigen-decomposition, distance_corr only the
    Gram matrix.
    """
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


def principal_coordinates(F_c: np.ndarray, lam: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Coordinates (n, 3) of the samples on the top-3 principal components, as `run` stores them.

    F_c: (n, w) centred flat states (only its shape is read when n < w); lam
    (1, k) ascending and V (1, k, k): the eigen-decomposition of their smaller
    Gram matrix. Signs are fixed (largest |coordinate| positive) so that
    frames do not flip; components beyond the rank are 0.
    """
    n, w = F_c.shape
    out = np.zeros((n, 3))
    k = min(3, lam.shape[1])
    if n == 0 or w == 0 or k == 0:
        return out
    top = V[0][:, ::-1][:, :k].astype(np.float64)
    if n >= w:
        coords = F_c.astype(np.float64) @ top
    else:  # V holds left singular vectors: coordinates are u_k·σ_k
        coords = top * np.sqrt(np.clip(lam[0][::-1][:k], 0.0, None))
    big = np.abs(coords).argmax(axis=0)
    coords *= np.where(coords[big, np.arange(k)] < 0, -1.0, 1.0)
    out[:, :k] = coords
    return out


def _flat_part(x: torch.Tensor, want: set[str], comparison: Comparison | None) -> tuple[dict, np.ndarray]:
    """(linear_r2 and distance_corr against the comparison state, projection (n, 3))."""
    F_c, eig, G = _flat_eig(x)
    rtol = M.rank_rtol(np.float64 if x.dtype == torch.float64 else np.float32)
    values = {}
    with np.errstate(all="ignore"):
        if "linear_r2" in want:
            ok = comparison is not None and comparison.X_c.shape[1] == x.shape[0]
            values["linear_r2"] = float(M.linear_r2(F_c, comparison.basis, eig, rtol)[0]) \
                if ok else math.nan
        if "distance_corr" in want:
            if comparison is None or comparison.ref is None:
                values["distance_corr"] = math.nan
            elif G is not None:
                values["distance_corr"] = distance_corr_from_gram(G, comparison.ref)
            else:
                values["distance_corr"] = float(M.distance_corr(F_c + 0.0, comparison.ref)[0])
        projection = principal_coordinates(F_c[0], *eig)
    return values, projection


def _token_part(x: torch.Tensor, layout: Layout, want: set[str], max_sequences: int,
                rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """token_cosine and token_effective_rank (`token_cosine`, `token_effective_rank`), in torch, per sequence."""
    n = x.shape[0]
    m = min(n, max_sequences)
    X = x if m == n else x[torch.from_numpy(np.sort(rng.choice(n, m, replace=False)))]
    X = X.reshape(m, layout.positions, layout.units)
    per: dict[str, np.ndarray] = {}
    if "token_cosine" in want:  # the core's mean_cosine, one sequence at a time: Σ_{p≠q} u_p·u_q = ‖Σu_p‖² − P'
        norms = torch.linalg.vector_norm(X, dim=2)
        valid = (norms > 0).to(torch.float64).sum(dim=1)
        inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
        v = torch.einsum("mp,mpe->me", inv, X).to(torch.float64)
        cos = ((v * v).sum(dim=1) - valid) / (valid * (valid - 1.0))
        per["token_cosine"] = torch.where(valid >= 2, cos, torch.nan).numpy()
    if "token_effective_rank" in want:  # uncentred: X_i's own singular values
        G = X @ X.transpose(1, 2) if layout.positions <= layout.units else X.transpose(1, 2) @ X
        per["token_effective_rank"] = M.effective_rank(_spectrum(G))
    values, sizes, errors = {}, {}, {}
    for name, v in per.items():
        v = v[np.isfinite(v)]
        values[name] = float(v.mean()) if len(v) else math.nan
        sizes[name] = len(v)
        errors[name] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return values, sizes, errors


def _registered(x: torch.Tensor, layout: Layout, names: list[str], *, activation: str, first: bool,
                comparison: Comparison | None, max_rows: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Metrics registered by users (`initscope.register_metric`), through the core's `layer_values`.

    They read S (at most max_rows seeded rows; sizes say so) and its
    spectrum, or, when they need the input or distances, the flat matrix.
    """
    x3 = _rows_view(x, layout)
    rows = x3.shape[0] * x3.shape[2]
    S = x3.movedim(1, -1).reshape(rows, -1)
    sizes = {}
    if rows > max_rows:
        S = S[torch.from_numpy(np.sort(rng.choice(rows, max_rows, replace=False)))]
        sizes = dict.fromkeys(names, max_rows)
    S = to_numpy(S)[None]
    S_c = M.centred(S)
    sv = M.gram_spectrum(M.gram(S_c))
    col = M.collapsed(S, sv)
    rtol = M.rank_rtol(S.dtype)
    view = {"state": S, "centred": S_c, "spectrum": sv, "rtol": rtol, "activation": activation}
    flat_names = [n for n in names if set(M.METRICS[n].needs) & {"input", "distances", "eigh"}]
    values = M.layer_values([n for n in names if n not in flat_names], view, col=col, is_input=first)
    if flat_names:
        F = to_numpy(x.reshape(x.shape[0], -1))[None]
        F_c = M.centred(F)
        sv_f, eig = M.gram_spectrum(M.gram(F_c), vectors=True)
        flat = {"state": F, "centred": F_c, "spectrum": sv_f, "eigh": eig, "rtol": M.rank_rtol(F.dtype),
                "activation": activation, "input": None if comparison is None else comparison.X_c,
                "distances": None if comparison is None else comparison.ref}
        if comparison is None:
            flat = {k: v for k, v in flat.items() if k not in ("input", "distances")}
        values.update(M.layer_values(flat_names, flat, col=M.collapsed(F, sv_f), is_input=first))
    return {k: float(v[0]) for k, v in values.items()}, sizes


def measure_state(out: torch.Tensor, layout: Layout, *, want: set[str], activation: str,
                  comparison: Comparison | None, first: bool, max_rows: int = MAX_ROWS,
                  max_sequences: int = MAX_SEQUENCES, rng: np.random.Generator) -> Measured:
    """Every metric of `want` but jacobian_rank and grad_norm for one state out (n, *shape).

    comparison: what linear_r2 and distance_corr compare with (None: NaN).
    first: this is the input (linear_fraction NaN). Token metrics are NaN
    unless the layout is tokens. A non-finite state gives NaN and no spectrum.
    """
    x = out.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    x = x.to("cpu")
    scale, finite = 1.0, True
    with one_thread():
        if x.numel():
            lo, hi = torch.aminmax(x)
            top = max(abs(float(lo)), abs(float(hi)))
            finite = math.isfinite(top)  # NaN propagates through aminmax
            if finite and top > 0 and not 2.0 ** -40 < top < 2.0 ** 40:
                # Squares of huge finite states overflow (and tiny ones underflow) in Gram matrices and variances
                # (float32 sums of up to 2^20 squares in a block or a Gram entry stay below 2^102 from 2^40):
                # measure x/2^k, exactly representable, and scale rms, std, spectra and projections back.
                scale = 2.0 ** math.frexp(top)[1]
                x = x / scale
        got = _measure_scaled(x, layout, want=want, activation=activation, comparison=comparison, first=first,
                              max_rows=max_rows, max_sequences=max_sequences, rng=rng, finite=finite)
    if scale != 1.0 and got.finite:
        for k in ("rms", "std"):
            if k in got.values:
                got.values[k] *= scale
        got.spectrum = got.spectrum * scale
        got.projection = got.projection * scale
    return got


def _measure_scaled(x: torch.Tensor, layout: Layout, *, want: set[str], activation: str,
                    comparison: Comparison | None, first: bool, max_rows: int, max_sequences: int,
                    rng: np.random.Generator, finite: bool) -> Measured:
    n = x.shape[0]
    names = {m for m in want if not set(M.METRICS[m].needs) & {"tangents", "gradient"}} if want else set()
    nan = dict.fromkeys(names, math.nan)
    if not finite:
        return Measured(nan, np.zeros(0), np.full((n, 3), np.nan), False, False)
    values, sizes, errors, spectrum, col = _state_part(x, layout, want=want, activation=activation, first=first,
                                                       max_rows=max_rows, rng=rng)
    flat, projection = _flat_part(x, want, comparison)
    values.update(flat)
    if layout.kind == "tokens":
        v, s, e = _token_part(x, layout, want, max_sequences, rng)
        values.update(v)
        sizes.update(s)
        errors.update(e)
    extra = [m for m in M.METRICS if m in want and m not in BUILT_IN and set(M.METRICS[m].needs) <= _RECORDED]
    if extra:
        v, s = _registered(x, layout, extra, activation=activation, first=first, comparison=comparison,
                           max_rows=max_rows, rng=rng)
        values.update(v)
        sizes.update(s)
    return Measured(dict(nan, **{k: v for k, v in values.items() if k in want}), spectrum, projection, True, col,
                    sizes, errors)
