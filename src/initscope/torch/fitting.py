"""The layer-wise initializers (`initscope.core.fitted`: lsuv, well-spaced, looks-linear) on torch modules.

Layers are initialized one at a time in the order the forward pass calls
them, as LSUV prescribes (Mishkin & Matas 2016): layer k is fitted to the
inputs it receives once layers 1..k−1 have their new weights. Each pass stops
right after it has captured layer k's input, so L layers cost about L²/2
layer evaluations, not L full passes.

A layer's input becomes the data matrix S (rows, fan_in) that the core's
fit functions take: a Linear's input (…, in) is S = input.reshape(−1, in);
a Conv1d/Conv2d's input is unfolded into its receptive-field patches
(`torch.nn.functional.unfold`), one row per (sample, output position),
with the patch flattened in the (in, *kernel) order of the weight, so that
column j of the fitted W (fan_in, units) is output channel j's filter. At
most `max_rows` rows (seeded) are used. Layers this cannot describe
(transposed or grouped convolutions, Conv3d, modules the forward pass never
calls as modules) raise one ValueError naming all of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from initscope.core.initializers import LAYER_INITIALIZERS

__all__ = ["fit_layers", "fit_rows", "is_hf_conv1d"]

MAX_ROWS = 8192


class _Stop(BaseException):
    """Ends a pass once the layer's input is captured. Not an Exception, so that user code does not catch it."""


def is_hf_conv1d(module: nn.Module) -> bool:
    """HuggingFace's `transformers.pytorch_utils.Conv1D`: a Linear whose weight is stored (in, out).

    Recognised by its class name and `nf` attribute, so transformers is never imported.
    """
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(weight, torch.Tensor)
            and weight.ndim == 2 and weight.shape[1] == module.nf)


def _is_rows(module: nn.Module) -> bool:
    """A Linear or HF Conv1D: its input's rows are the last axis."""
    return isinstance(module, nn.Linear) or is_hf_conv1d(module)


def _unsupported(module: nn.Module) -> str | None:
    if _is_rows(module):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            return "a transposed convolution"
        if module.groups != 1:
            return f"a grouped convolution (groups={module.groups})"
        if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
            return "a Conv3d (patches are unfolded for Conv1d and Conv2d only)"
        if isinstance(module.padding, str) and module.padding != "valid" or module.padding_mode != "zeros":
            return f"padding {module.padding!r}/{module.padding_mode!r} (only explicit zero padding)"
        return None
    return "not a Linear or Conv layer"


def fit_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The data matrix S (rows, fan_in) of a Linear or Conv1d/Conv2d input x, in the weight's column order."""
    if _is_rows(module):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, stride = (1, module.kernel_size[0]), (1, module.stride[0])
        padding, dilation = (0, module.padding[0]), (1, module.dilation[0])
    else:
        kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (n, in·k, positions)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _capture(model: nn.Module, inputs: torch.Tensor, module: nn.Module) -> torch.Tensor:
    got: dict[str, torch.Tensor] = {}

    def hook(_module, args):
        got["x"] = args[0].detach()
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        model(inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["x"]


def _order(model: nn.Module, inputs: torch.Tensor, modules: list[nn.Module]) -> tuple[list, list]:
    """(modules in the order of their first call in one forward pass, modules never called as modules)."""
    seen: list[int] = []

    def hook(module, _args):
        if id(module) not in seen:
            seen.append(id(module))

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
    by_id = {id(m): m for m in modules}
    return [by_id[i] for i in seen], [m for m in modules if id(m) not in seen]


def fit_layers(model: nn.Module, init: str, inputs, layers: list[nn.Module], *, gain: float, seed: int, to_layout,
               fans_of, max_rows: int = MAX_ROWS) -> None:
    """Fit the weights of `layers` (modules of `model`) with the layer-wise initializer `init`, in execution order.

    inputs: the batch the fit reads (None for looks-linear, which needs no
    data but still reads the call order from a pass when given). layers:
    the modules `initializers.initialization_plan` draws, each weight once.
    to_layout, fans_of: `initializers._to_layout` and `weight_fans`.
    """
    entry = LAYER_INITIALIZERS[init]
    names = {id(m): name for name, m in model.named_modules()}
    bad = [f"{names[id(m)]} ({type(m).__name__}: {why})" for m in layers if (why := _unsupported(m))]
    if entry.sets_shifts:
        bad += [f"{names[id(m)]} ({type(m).__name__}: no bias for the shifts it sets)" for m in layers
                if getattr(m, "bias", None) is None and not _unsupported(m)]
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        order, never = _order(model, inputs, layers) if inputs is not None else (layers, [])
        bad += [f"{names[id(m)]} ({type(m).__name__}: never called as a module in the forward pass)" for m in never]
        if init == "looks-linear":  # mirrored pairs: units in pairs, and every layer after the first reads pairs
            bad += [f"{names[id(m)]} ({type(m).__name__}: {fans_of(m).units} outputs, {fans_of(m).fan_in} inputs; "
                    f"mirroring needs an even number{' of both' if k else ' of outputs'})"
                    for k, m in enumerate(order) if not _unsupported(m) and
                    (fans_of(m).units % 2 or (k and fans_of(m).fan_in % 2))]
        if bad:
            raise ValueError(f"The 'init' parameter {init!r} is layer-wise and cannot initialize these layers: "
                             f"{'; '.join(bad)}. Initialize such models with a registry initializer instead.")
        for index, module in enumerate(order, start=1):
            fans = fans_of(module)
            if entry.needs_data:
                S = fit_rows(module, _capture(model, inputs, module))
                if S.shape[0] > max_rows:
                    S = S[torch.from_numpy(np.sort(rng.choice(S.shape[0], max_rows, replace=False)))]
                S = S.to("cpu", torch.float64).numpy()
            else:
                S = np.zeros((0, fans.fan_in))
            bias = getattr(module, "bias", None)
            b = bias.detach().to("cpu", torch.float64).numpy() if bias is not None else np.zeros(fans.units)
            drawn = entry.fit(S, fans.units, gain=gain, rng=rng, layer=index, b=b)
            weight = module.weight
            weight.copy_(torch.from_numpy(to_layout(drawn.W, tuple(weight.shape), fans)).to(weight.dtype))
            if drawn.b is not None and bias is not None:
                bias.copy_(torch.from_numpy(np.asarray(drawn.b)).to(bias.dtype))


