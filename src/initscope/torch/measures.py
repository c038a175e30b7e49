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

How. The pieces each metric reads come from torch's providers
(`initscope.torch.providers`) and the core's engine measures the wanted
metrics from them (`core.engine`), as it does for the numpy study: a metric
registered with `register_metric` is measured here with no other edit.

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

from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core.pieces import Pieces
from initscope.torch.kernels import one_thread, row_basis
from initscope.study.recorder import Layout
from initscope.torch.providers import BACKEND, Recorded, to_numpy

__all__ = ["Measured", "Comparison", "measure_state", "to_numpy", "principal_coordinates", "MAX_ROWS",
           "MAX_SEQUENCES"]

MAX_ROWS = 8192
MAX_SEQUENCES = 256


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


def measure_state(out: torch.Tensor, layout: Layout, *, want, activation: str, comparison: Comparison | None,
                  first: bool, affine: bool = False, max_rows: int = MAX_ROWS, max_sequences: int = MAX_SEQUENCES,
                  rng: np.random.Generator) -> Measured:
    """Every metric of `want` that the forward pass measures (not the Jacobian's or the gradient's) for one state
    out (n, *shape).

    comparison: what linear_r2 and distance_corr compare with (None: NaN).
    first: this is the input (linear_fraction NaN). affine: the state is an
    affine map's output z, which pre_q and pre_cosine read (else NaN). Token
    metrics are NaN unless the layout is tokens. A non-finite state gives NaN
    and no spectrum.
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
                # measure x/2^k, exactly representable, and scale values, spectra and projections back.
                scale = 2.0 ** math.frexp(top)[1]
                x = x / scale
        names = E.reading_metrics([m for m in M.METRICS if m in want], "")
        got = _measure_scaled(x, layout, names, activation=activation, comparison=comparison, first=first,
                              affine=affine, max_rows=max_rows, max_sequences=max_sequences, rng=rng, finite=finite)
    if scale != 1.0 and got.finite:
        for name in got.values:
            degree = M.METRICS[name].degree
            if degree:
                got.values[name] *= scale ** degree
        got.spectrum = got.spectrum * scale
        got.projection = got.projection * scale
    return got


def _measure_scaled(x: torch.Tensor, layout: Layout, names: list[str], *, activation: str,
                    comparison: Comparison | None, first: bool, affine: bool, max_rows: int, max_sequences: int,
                    rng: np.random.Generator, finite: bool) -> Measured:
    n = x.shape[0]
    nan = dict.fromkeys(names, math.nan)
    if not finite:
        return Measured(nan, np.zeros(0), np.full((n, 3), np.nan), False, False)
    wanted = E.read_by(names, BACKEND)
    recorded = Recorded(x, layout, max_rows, max_sequences, rng, comparison, affine,
                        jackknife=bool(E.reads("spectrum", names, BACKEND)))
    rtol = M.rank_rtol(np.float64 if x.dtype == torch.float64 else np.float32)
    common = {"rtol": rtol, "activation": activation}
    samples = Pieces(common, backend=BACKEND, wanted=wanted, context=recorded)
    view = Pieces(common, backend=BACKEND, wanted=wanted, samples=samples, context=recorded)
    sv = view["spectrum"][0]  # first: it draws the subset of a large state's rows from rng
    with np.errstate(all="ignore"):
        reading = E.evaluate(names, view, col=np.array([recorded.collapsed]), is_input=first)
        F_c, eig, _ = samples["flat"]
        projection = principal_coordinates(F_c[0], *eig)
    values = {k: float(v[0]) for k, v in reading.values.items()}
    errors = {k: float(e[0]) for k, e in reading.errors.items()}
    return Measured(dict(nan, **values), sv * recorded.sv_scale, projection, True, recorded.collapsed,
                    dict(reading.sizes), errors)
