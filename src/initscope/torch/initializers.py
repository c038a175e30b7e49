"""Registry initializers applied to torch modules, with torch's weight layouts.

initscope draws ``W: (fan_in, units)``: one output unit's incoming weight
vector per column (`initscope.init`). torch stores the same weights as

- ``nn.Linear``: ``(out, in)``;
- ``nn.ConvNd``: ``(out, in/groups, *kernel)``;
- ``nn.ConvTransposeNd``: ``(in, out/groups, *kernel)``.

so the drawn matrix is transposed and reshaped into place, and each output
unit's (channel's) incoming vector is one column of W: ``sphere`` makes every
output channel's filter unit-norm, ``orthogonal`` is (semi-)orthogonal on the
``(out, in/groups·k)`` flattening that ``torch.nn.init.orthogonal_`` uses.

Fans (k = the product of the kernel size, 1 for Linear):

- Linear and Conv: fan_in = in/groups·k, fan_out = out·k, exactly
  ``torch.nn.init._calculate_fan_in_and_fan_out`` (size(1)·k, size(0)·k).
- ConvTranspose: fan_in = in/groups·k, fan_out = out·k, the fans of the Conv
  with the same channels, groups and kernel. torch's rule reads size(1)·k and
  size(0)·k of the ``(in, out/groups, *k)`` weight, i.e. (out/groups·k, in·k):
  it swaps the fans of a transposed conv (pytorch/pytorch#7865, open since
  2018). initscope uses the length of each output channel's incoming vector,
  in/groups·k, as fan_in, so that kaiming keeps the second moment of the
  layer it is applied to, and the drawn column is that vector. For a stride s
  each output position sees on average k/s of the kernel's taps; like torch,
  the fans do not count the stride.

Only xavier reads fan_out apart from the shape of W. W has ``units`` columns
(out channels), not fan_out = out·k, so xavier's gain is rescaled by
sqrt((fan_in + units)/(fan_in + fan_out)): its std is then torch's
gain·sqrt(2/(fan_in + fan_out)) (draws are exactly linear in the gain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from initscope.core.initializers import ACTIVATIONS, INITIALIZERS, LAYER_INITIALIZERS, default_gain, draw
from initscope.torch.fitting import fit_layers

__all__ = ["Fans", "weight_fans", "initialize", "INITIALIZABLE", "BIAS_MODES"]

INITIALIZABLE = (nn.Linear, nn.modules.conv._ConvNd)
BIAS_MODES = ("keep", "zeros")
_READS_FAN_OUT = frozenset({"xavier-normal", "xavier-uniform"})


@dataclass(frozen=True)
class Fans:
    """The fans of one torch weight and how it maps to initscope's W: (fan_in, units)."""

    fan_in: int
    fan_out: int
    units: int  # output units (channels): the columns of W
    transposed: bool  # a ConvTranspose weight (in, out/groups, *k)
    groups: int = 1


def weight_fans(module: nn.Module) -> Fans:
    """The fans initscope uses for a Linear or (transposed) Conv module's weight (module docstring)."""
    if not isinstance(module, INITIALIZABLE):
        raise TypeError(
            f"The 'module' parameter must be an nn.Linear or a Conv/ConvTranspose module. "
            f"Got {type(module).__name__} instead."
        )
    weight = module.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"The weight of {type(module).__name__} is not materialized yet (a lazy module). "
            "Run one forward pass before initializing it."
        )
    shape = tuple(weight.shape)
    k = math.prod(shape[2:])
    if isinstance(module, nn.Linear):
        return Fans(fan_in=shape[1], fan_out=shape[0], units=shape[0], transposed=False)
    groups = int(module.groups)
    if module.transposed:
        in_ch, out_per_group = shape[0], shape[1]
        out_ch = out_per_group * groups
        return Fans(fan_in=in_ch // groups * k, fan_out=out_ch * k, units=out_ch, transposed=True, groups=groups)
    return Fans(fan_in=shape[1] * k, fan_out=shape[0] * k, units=shape[0], transposed=False, groups=groups)


def _to_layout(W: np.ndarray, shape: tuple[int, ...], fans: Fans) -> np.ndarray:
    """W (fan_in, units) -> the torch weight of `shape`, column j = unit j's incoming vector."""
    kernel = shape[2:]
    if not fans.transposed:
        return W.T.reshape(shape)
    g = fans.groups
    in_ch, out_per_group = shape[0], shape[1]
    # Column o = g_i·(out/g) + j holds weight[g_i·(in/g):(g_i+1)·(in/g), j, ...].
    per_unit = W.T.reshape(g, out_per_group, in_ch // g, *kernel)
    return np.swapaxes(per_unit, 1, 2).reshape(shape)


def initialize(
    model: nn.Module,
    init: str,
    *,
    gain: float | None = None,
    activation: str = "relu",
    bias: str = "keep",
    seed: int = 0,
    inputs=None,
) -> nn.Module:
    """Draw every Linear/Conv/ConvTranspose weight of `model` from the registry initializer `init`.

    The layer-wise initializers of `initscope.core.fitted` (lsuv, well-spaced:
    data-driven, and looks-linear) are fitted layer by layer in execution
    order on `inputs` (a batch the model takes; required for the data-driven
    ones), see `initscope.torch.fitting`; layers they cannot fit raise a
    ValueError naming each of them.

    gain: the rule's factor; default `initscope.init.default_gain(init, activation)`
    (kaiming: the activation's recommended gain, √2 for ReLU; all others 1, as
    in torch.nn.init). bias: "keep" leaves biases as they are, "zeros" zeroes
    them. Modules are drawn in `model.modules()` order from one
    `numpy.random.Generator` seeded with `seed`, in float64, then cast to
    each weight's dtype and device. The weights change in place, under
    `torch.no_grad()`; returns `model`. Fans and layouts: the module docstring.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of initialize must be a torch.nn.Module. Got {type(model).__name__} instead.")
    if init not in INITIALIZERS and init not in LAYER_INITIALIZERS:
        raise ValueError(f"The 'init' parameter must be one of {list(INITIALIZERS) + list(LAYER_INITIALIZERS)}. "
                         f"Got {init!r} instead.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"The 'activation' parameter must be one of {list(ACTIVATIONS)}. Got {activation!r} instead.")
    if bias not in BIAS_MODES:
        raise ValueError(f"The 'bias' parameter must be one of {list(BIAS_MODES)}. Got {bias!r} instead.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be an integer >= 0. Got {seed!r} instead.")
    if init in LAYER_INITIALIZERS:
        return _fit(model, init, inputs, gain=1.0 if gain is None else gain, bias=bias, seed=int(seed))
    gain = default_gain(init, activation) if gain is None else gain
    rng = np.random.default_rng(int(seed))
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, INITIALIZABLE) or id(module.weight) in seen:
                continue
            seen.add(id(module.weight))  # a weight tied between modules is drawn once
            fans = weight_fans(module)
            layer_gain = gain
            if init in _READS_FAN_OUT and fans.units != fans.fan_out:
                layer_gain = gain * math.sqrt((fans.fan_in + fans.units) / (fans.fan_in + fans.fan_out))
            W = draw(init, fans.fan_in, fans.units, gain=layer_gain, rng=rng)
            weight = module.weight
            weight.copy_(torch.from_numpy(_to_layout(W, tuple(weight.shape), fans)).to(weight.dtype))
            if bias == "zeros" and getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return model


def _fit(model: nn.Module, init: str, inputs, *, gain: float, bias: str, seed: int) -> nn.Module:
    if LAYER_INITIALIZERS[init].needs_data and inputs is None:
        raise ValueError(f"The 'inputs' parameter must be a batch of the model's inputs for {init!r}, which fits each "
                         "layer to the data it receives. Got None instead.")
    if inputs is not None:
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(np.ascontiguousarray(inputs))
        if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0 or inputs.shape[0] == 0:
            raise TypeError(f"The 'inputs' parameter must be a tensor or array with samples first. "
                            f"Got {type(inputs).__name__} instead.")
        reference = next(model.parameters(), None)
        if reference is not None:
            inputs = inputs.to(reference.device)
            if inputs.is_floating_point():
                inputs = inputs.to(reference.dtype)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]  # BatchNorm statistics: as they were
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if bias == "zeros":
            for module in model.modules():
                if isinstance(module, INITIALIZABLE) and getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        try:
            fit_layers(model, init, inputs, gain=gain, seed=seed, to_layout=_to_layout, fans_of=weight_fans)
        finally:
            for buffer, value in buffers:
                buffer.copy_(value)
    return model
