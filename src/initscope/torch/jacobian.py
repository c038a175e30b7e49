"""The Jacobian metrics of every recorded layer, by forward-mode AD: one forward pass per input direction.

jacobian_rank, jacobian_sq_mean and jacobian_log_spread are the core's
functions (`core.metrics`, `core.propagation`) applied to the same
per-sample Jacobians, so their definitions are the numpy network's; with
jacobian_log_spread each layer also gets the counts of its log10 normalised
singular values (`propagation.log10_histogram`), the report's Jacobian figure.

Each pass perturbs every sample's input along the same direction e_k, so a
layer's output tangent row i is ∂s_i/∂x_i · e_k: d passes give each sample's
Jacobian of its flattened output with respect to its flattened input.
Models whose samples interact (BatchNorm in training mode) add the O(1/m)
cross-sample terms Σ_{j≠i} ∂s_j/∂x_i · e_k. A pass stops right after the
last layer it needs. Layers whose Jacobians exceed a budget use fewer
samples, or none (NaN, with a note). Layer 0's Jacobian is the identity,
read as the numpy network reads it: m samples' (1 × 1) identities.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core import propagation as P
from initscope.core.pieces import Pieces
from initscope.core.propagation import JACOBIAN_SAMPLES
from initscope.torch.loading import _quote, ignore_torch_deprecations
from initscope.torch.outputs import recordable
from initscope.torch.providers import to_numpy
from initscope.torch.recording import Layer

__all__ = ["jacobian_values", "jacobian_samples", "JacobianReadings", "JACOBIAN_BUDGET"]

JACOBIAN_BUDGET = 2**24  # Jacobian entries kept per layer (samples·d·w): 128 MiB in float64
_RANK_FLOPS = 64  # and samples·d·w·min(d, w) <= 64·budget: the cost of its rank (or its SVD)


@dataclass
class JacobianReadings:
    """values: layer index -> {metric: value} for the Jacobian metrics asked for (layers left out: NaN);
    histograms: layer index -> (bins,) counts of log10 normalised σ, when a metric reads the singular values."""

    values: dict[int, dict[str, float]] = field(default_factory=dict)
    histograms: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, index: int, J: np.ndarray, names: tuple[str, ...], *, input_dim: int | None = None) -> None:
        """Measure one layer's Jacobians J (1, m, d, w) with the core's engine: the metrics in `names`.

        input_dim: the d that jacobian_rank divides by, when J stands for
        another (layer 0: 1 × 1 identities for the d × d one).
        """
        _, _, d, w = J.shape
        d = d if input_dim is None else input_dim
        view = Pieces({"tangents": J, "input_dim": d, "rtol": M.rank_rtol(J.dtype), "activation": "identity"},
                      wanted=E.read_by(names))
        with np.errstate(all="ignore"):
            values = E.layer_values(names, view, col=np.zeros(1, bool), is_input=index == 0)
            if "jacobian_spectrum" in view.values:
                self.histograms[index] = P.log10_histogram(view["jacobian_spectrum"], d, w)[0]
        self.values[index] = {k: float(v[0]) for k, v in values.items()}


class _Stop(BaseException):
    """Ends a pass after the last layer it needs. Not an Exception, so that user code does not catch it."""


def jacobian_samples(d: int, w: int, samples: int, budget: int) -> int:
    """How many samples' (d × w) Jacobians fit the budget: entries and the cost of their rank."""
    size = d * w
    if size == 0:
        return samples
    return min(samples, budget // size, budget * _RANK_FLOPS // (size * min(d, w)))


class _Tangents:
    """Hooks of one pass: copy the tangent of each needed layer's output into its Jacobian."""

    def __init__(self, sequence: list[tuple[int, int, str]], J: dict[int, np.ndarray], m: int,
                 attention_weights: bool):
        self.sequence, self.J, self.m = sequence, J, m
        self.attention_weights = attention_weights
        self.last = max(J)
        self.k = 0
        self.pos = 0
        self.calls: Counter[int] = Counter()
        self.mismatch = False

    def start(self, k: int) -> None:
        self.k, self.pos = k, 0
        self.calls.clear()

    def hook(self, module: nn.Module, args, output) -> None:
        states, _ = recordable(module, output, self.m, attention_weights=self.attention_weights)
        if not states:
            return
        call = self.calls[id(module)]
        self.calls[id(module)] += 1
        for path, out in states:
            self.pos += 1
            if self.pos >= len(self.sequence) or self.sequence[self.pos] != (id(module), call, path):
                self.mismatch = True
                raise _Stop
            Ji = self.J.get(self.pos)
            if Ji is not None:
                tangent = fwAD.unpack_dual(out).tangent
                if tangent is not None:  # None: the output does not depend on the input
                    m_l = Ji.shape[0]
                    Ji[:, self.k, :] = to_numpy(tangent[:m_l].reshape(m_l, -1))
            if self.pos == self.last:
                raise _Stop


def _buffers(layers: list[Layer], d: int, m: int, budget: int, dtype, what: str,
             notes: list[str]) -> dict[int, np.ndarray]:
    """Zeroed (m_l, d, w) Jacobians of each finite layer that fits the budget; sets each layer's jacobian_samples."""
    J: dict[int, np.ndarray] = {}
    over = []
    for layer in layers[1:]:
        if not layer.measured.finite:
            continue
        w = layer.layout.flat_units
        layer.jacobian_samples = jacobian_samples(d, w, m, budget)
        if layer.jacobian_samples:
            J[layer.index] = np.zeros((layer.jacobian_samples, d, w), dtype=dtype)
        else:
            over.append(layer)
    if over:
        notes.append(f"{what} not measured for {len(over)} layer(s) whose Jacobian (d={d} inputs × their "
                     f"units) exceeds the budget of {budget:,} entries, e.g. {over[0].label}.")
    return J


# long: one forward-mode pass per input direction inside one try/finally that removes the hooks,
# each way out leaving a note on why the Jacobian metrics are missing
def jacobian_values(model: nn.Module, x: torch.Tensor, layers: list[Layer], modules: list[nn.Module], *,
                    names: tuple[str, ...], samples: int, budget: int, seed: int, notes: list[str],
                    attention_weights: bool = False) -> JacobianReadings:
    """The metrics in `names` (those reading per-sample Jacobians) by layer index; sets each layer's
    jacobian_samples.

    x: the inputs (n, *shape); layers: the main pass's recording, whose
    module calls this pass must repeat in the same order; modules: those to
    hook. Layer 0 (the input) has jacobian_rank 1, jacobian_sq_mean 1 and
    jacobian_log_spread 0 (NaN with one sample), as in the numpy network.
    """
    names = tuple(names)
    what = ", ".join(names)
    readings = JacobianReadings()
    if not x.is_floating_point():
        notes.append(f"{what} not measured: the inputs are not floating point, so not differentiable.")
        return readings
    m = min(samples, x.shape[0])
    layers[0].jacobian_samples = m
    dtype = np.float64 if x.dtype == torch.float64 else np.float32
    readings.add(0, np.ones((1, m, 1, 1), dtype=dtype), names, input_dim=1)
    d = math.prod(x.shape[1:])
    J = _buffers(layers, d, m, budget, dtype, what, notes)
    if not J:
        return readings
    sequence = [(-1, 0, "")] + [(id(layer.module), layer.call, layer.output) for layer in layers[1:]]
    tangents = _Tangents(sequence, J, m, attention_weights)
    x_m = x[:m].detach()
    handles = [module.register_forward_hook(tangents.hook) for module in modules]
    try:
        with warnings.catch_warnings():
            # torch scripts its forward-AD decompositions on first use, with a deprecation notice of its own.
            ignore_torch_deprecations()
            for k in range(d):
                tangents.start(k)
                direction = torch.zeros((m, d), dtype=x.dtype, device=x.device)
                direction[:, k] = 1.0
                torch.manual_seed(seed)  # the same dropout masks in every direction
                with fwAD.dual_level(), torch.no_grad():
                    try:
                        model(fwAD.make_dual(x_m, direction.reshape(x_m.shape)))
                    except _Stop:
                        pass
                if tangents.mismatch:
                    notes.append(f"{what} not measured: the model called its modules in a different "
                                 f"order on {m} samples than on all {x.shape[0]}.")
                    return readings
    except Exception as exc:  # noqa: BLE001 - e.g. an op without a forward-mode derivative
        notes.append(f"{what} not measured: forward-mode AD through the model raised {_quote(exc)}.")
        return readings
    finally:
        for h in handles:
            h.remove()
    for i, Ji in J.items():
        readings.add(i, Ji[None], names)
    return readings
