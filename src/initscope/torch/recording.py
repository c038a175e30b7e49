"""Record a torch model's module outputs as state matrices and measure them with the core's metrics.

A recorded output of shape (n, *rest) (n samples) becomes two matrices:

- the **state matrix** S (samples × units) of DESIGN.md. A dense output
  (n, w) is used as it is. A feature map is read as samples × channels with
  the positions folded into the samples: (n, C, *P) -> (n·|P|, C) for
  channels-first modules (Conv, BatchNorm, pooling; PyTorch's NCHW), and
  (n, *P, C) -> (n·|P|, C) for channels-last ones (Linear, LayerNorm,
  Embedding, attention on (n, L, E)). The `state` column says which.
  Scale, spread, spectra, ranks, dead and linear units, cosines and collapse
  are measured on S: one "unit" is one channel.
- the **flat** matrix (n, |rest|), one row per sample, for the metrics that
  compare samples with their inputs: linear_r2, distance_corr, the 3-D
  projections and jacobian_rank (∂ flat output/∂ flat input, per sample).

For a dense output the two are the same array.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from initscope.core import metrics as M

__all__ = ["Layout", "layout_of", "state_matrices", "measure", "Measured", "Layer", "Recorder", "HookError",
           "CHANNELS", "channels_hint", "display_name", "principal_coordinates"]

CHANNELS = ("auto", "first", "last")
FLAT = "samples x units"
FOLDED = "samples*positions x channels"

_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd,
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)
_CHANNELS_LAST = (nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention,
                  nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.RMSNorm)
_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.RReLU, nn.PReLU)


@dataclass(frozen=True)
class Layout:
    """How one recorded output becomes matrices. channels_first is None for a dense output."""

    shape: tuple[int, ...]  # per sample
    channels_first: bool | None

    @property
    def state(self) -> str:
        return FLAT if self.channels_first is None else FOLDED

    @property
    def flat_units(self) -> int:
        return math.prod(self.shape)

    @property
    def units(self) -> int:
        """Columns of the state matrix: units, or channels of a feature map."""
        if self.channels_first is None:
            return self.flat_units
        return self.shape[0] if self.channels_first else self.shape[-1]


def layout_of(module: nn.Module | None, shape: tuple[int, ...], channels: str, previous: bool | None) -> Layout:
    """The layout of an output with per-sample `shape`.

    channels "first"/"last" force the reading of every feature map; "auto"
    goes by the module's type, then the rank: 2-D and 3-D spatial maps
    (n, C, H, W), (n, C, D, H, W) are channels-first; a 3-D output of any
    other module (an activation, Dropout, Identity) and the input keep the
    reading of `previous`: the output recorded before, or for the input the
    model's first Conv-like (first) or Linear-like (last) module; with
    neither, channels-first (Conv1d's (n, C, L)).
    """
    if len(shape) <= 1:
        return Layout(shape, None)
    if channels != "auto":
        return Layout(shape, channels == "first")
    if isinstance(module, _CHANNELS_FIRST):
        return Layout(shape, True)
    if isinstance(module, _CHANNELS_LAST):
        return Layout(shape, False)
    if len(shape) >= 3:
        return Layout(shape, True)
    return Layout(shape, True if previous is None else previous)


def channels_hint(modules) -> bool | None:
    """How the input's feature maps read: like the first module (in registration order) of a known kind."""
    for module in modules:
        if isinstance(module, _CHANNELS_FIRST):
            return True
        if isinstance(module, _CHANNELS_LAST):
            return False
    return None


def activation_of(module: nn.Module | None) -> str:
    """The core's activation name for linear_fraction: ReLU-like modules only, else NaN there."""
    return "relu" if isinstance(module, _RELU_LIKE) else "identity"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU copy in float32 or float64 (half and bfloat16 widen to float32)."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.to("cpu", copy=True).numpy()


def state_matrices(out: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(S (1, n', c), flat (1, n, |rest|)) of one output (n, *rest); see the module docstring."""
    n = out.shape[0]
    flat = out.reshape(n, -1)
    if layout.channels_first is None:
        return flat[None], flat[None]
    c_axis = 1 if layout.channels_first else out.ndim - 1
    S = np.moveaxis(out, c_axis, -1).reshape(-1, out.shape[c_axis])
    return S[None], flat[None]


def principal_coordinates(F_c: np.ndarray, lam: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Coordinates (n, 3) of the samples on the top-3 principal components, as `run` stores them.

    F_c: (n, w) centred flat states; lam (1, k) ascending and V (1, k, k): the
    eigen-decomposition of their smaller Gram matrix. Signs are fixed (largest
    |coordinate| positive) so that frames do not flip; components beyond the
    rank are 0.
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


@dataclass
class Measured:
    values: dict[str, float]
    spectrum: np.ndarray  # (k,) float64, empty when non-finite
    projection: np.ndarray  # (n, 3)
    finite: bool
    collapsed: bool


_RECORDED = frozenset({"state", "centred", "spectrum", "eigh", "input", "distances", "rtol", "activation"})


def measure(S: np.ndarray, flat: np.ndarray, *, want: set[str], activation: str, X_c: np.ndarray,
            ref: M.DistanceReference | None, first: bool) -> Measured:
    """The core's metrics of one state (all but those needing Jacobians or gradients, measured apart).

    S: (1, n', c) state matrix; flat: (1, n, |rest|); X_c: (1, n, d) centred
    flat inputs; first: this is layer 0 (ReLU-only metrics are NaN there, as
    in the core). Metrics that compare with the input (needing "input" or
    "distances") read the flat matrix, one row per sample; the others read S.
    A non-finite state gives NaN metrics and no spectrum.
    """
    names = [m for m in M.METRICS if m in want]
    # Jacobians, gradients and pre-activations are not read from a recorded state: measured apart or NaN.
    apart = {m for m in names if not set(M.METRICS[m].needs) <= _RECORDED}
    nan = dict.fromkeys(set(names) - apart, math.nan)
    n = flat.shape[1]
    if not (np.isfinite(S).all() and np.isfinite(flat).all()):
        return Measured(nan, np.zeros(0), np.full((n, 3), np.nan), False, False)
    rtol = M.rank_rtol(S.dtype)
    with np.errstate(all="ignore"):
        S_c = M.centred(S)
        G = M.gram(S_c)
        same = flat.shape == S.shape  # a dense output: S is the flat matrix
        if same:
            sv, eig_flat = M.gram_spectrum(G, vectors=True)
            F_c, sv_flat = S_c, sv
        else:
            sv = M.gram_spectrum(G)
            F_c = M.centred(flat)
            sv_flat, eig_flat = M.gram_spectrum(M.gram(F_c), vectors=True)
        if not np.isfinite(sv).all():
            return Measured(nan, np.zeros(0), np.full((n, 3), np.nan), False, False)
        col = M.collapsed(S, sv)
        by_sample = set(M.needing("input", names)) | set(M.needing("distances", names))
        state_view = {"state": S, "centred": S_c, "spectrum": sv, "eigh": None, "rtol": rtol, "activation": activation}
        flat_view = {"state": flat, "centred": F_c, "spectrum": sv_flat, "eigh": eig_flat, "input": X_c,
                     "distances": ref, "rtol": M.rank_rtol(flat.dtype), "activation": activation}
        values = M.layer_values([m for m in names if m not in apart | by_sample], state_view, col=col, is_input=first)
        values.update(M.layer_values([m for m in names if m in by_sample and m not in apart], flat_view,
                                     col=M.collapsed(flat, sv_flat) if not same else col, is_input=first))
        values = {name: float(values[name][0]) for name in names if name in values}
        projection = principal_coordinates(F_c[0], *eig_flat)
    return Measured(values, sv[0].astype(np.float64), projection, True, bool(col[0]))


def display_name(name: str) -> str:
    """A module's qualified name as shown in tables; the root module has the empty name."""
    return name or "(model)"


@dataclass
class Layer:
    """One recorded state: layer 0 is the input (module None), then module calls in execution order."""

    index: int
    name: str
    module: nn.Module | None
    call: int  # 0 for a module's first call in the forward pass, 1 for its second, ...
    layout: Layout
    state_samples: int
    measured: Measured
    jacobian_samples: int = 0

    @property
    def module_type(self) -> str:
        return "input" if self.module is None else type(self.module).__name__


class HookError(Exception):
    """An error in initscope's own hook (its cause), kept apart from the model's own errors."""


class Recorder:
    """The main pass: measure each selected module's output as soon as it is produced.

    Outputs that are not floating tensors with the n samples on the first
    axis are skipped (with a note); nothing but the measurements is kept.
    """

    def __init__(self, names: dict[int, str], n: int, *, want: set[str], channels: str, X_c: np.ndarray,
                 ref: M.DistanceReference | None, notes: list[str]):
        self.names, self.n, self.want, self.channels = names, n, want, channels
        self.X_c, self.ref, self.notes = X_c, ref, notes
        self.layers: list[Layer] = []
        self.calls: Counter[int] = Counter()
        self.skipped: set[str] = set()
        self.previous: bool | None = None

    def add(self, module: nn.Module | None, name: str, out: torch.Tensor) -> None:
        call = 0
        if module is not None:
            call = self.calls[id(module)]
            self.calls[id(module)] += 1
        layout = layout_of(module, tuple(out.shape[1:]), self.channels, self.previous)
        if layout.channels_first is not None:
            self.previous = layout.channels_first
        S, flat = state_matrices(to_numpy(out), layout)
        got = measure(S, flat, want=self.want, activation=activation_of(module), X_c=self.X_c, ref=self.ref,
                      first=module is None)
        self.layers.append(Layer(len(self.layers), name, module, call, layout, S.shape[1], got))

    def hook(self, module: nn.Module, args, output) -> None:
        try:
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            name = self.names[id(module)]
            if output.ndim == 0 or output.shape[0] != self.n:
                if name not in self.skipped:
                    self.skipped.add(name)
                    self.notes.append(f"{display_name(name)} ({type(module).__name__}) not recorded: its output "
                                      f"{tuple(output.shape)} does not start with the {self.n} samples.")
                return
            self.add(module, name, output)
        except Exception as exc:  # noqa: BLE001 - re-raised as itself by the caller
            raise HookError() from exc
