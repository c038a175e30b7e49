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

HuggingFace's ``Conv1D`` (GPT-2's projections) is a Linear that stores its
weight as ``(in, out)`` and computes ``x @ weight + bias``: W itself, with
fan_in = in and fan_out = units = out. It is recognised by its class name and
its ``nf`` attribute, so transformers is never imported here.

A weight shared by several modules is drawn once. A weight shared with a
module that no initializer draws (GPT-2's ``lm_head`` is tied to the token
embedding ``wte``) is left as that module made it: redrawing it as a Linear
would rescale the embedding (std 0.02 → 0.07 under kaiming). Every parameter
that is not drawn is named, with the reason, by `initialization_plan`.

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
from initscope.torch.fitting import fit_layers, is_hf_conv1d

__all__ = ["Fans", "weight_fans", "initialize", "initialization_plan", "plan_notes", "is_initializable",
           "is_hf_conv1d",
           "ParameterPlan", "INITIALIZABLE", "BIAS_MODES"]

INITIALIZABLE = (nn.Linear, nn.modules.conv._ConvNd)  # and HuggingFace's Conv1D (`is_hf_conv1d`)
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
    in_out: bool = False  # the weight is stored as W itself, (in, out): HuggingFace's Conv1D


def is_initializable(module: nn.Module) -> bool:
    """A module whose weight the registry initializers draw: Linear, (transposed) Conv, HF Conv1D."""
    return isinstance(module, INITIALIZABLE) or is_hf_conv1d(module)


def weight_fans(module: nn.Module) -> Fans:
    """The fans initscope uses for a Linear, HF Conv1D or (transposed) Conv module's weight (module docstring)."""
    if not is_initializable(module):
        raise TypeError(
            f"The 'module' parameter must be an nn.Linear, a Conv/ConvTranspose module or HuggingFace's Conv1D. "
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
    if is_hf_conv1d(module):
        return Fans(fan_in=shape[0], fan_out=shape[1], units=shape[1], transposed=False, in_out=True)
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
    if fans.in_out:
        return W.reshape(shape)
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
    notes: list[str] | None = None,
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
    notes: a list that receives sentences naming what was drawn, the tied
    weights kept, and every parameter left alone (`plan_notes`).
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
    plan = initialization_plan(model, bias=bias)
    if notes is not None:
        notes.extend(plan_notes(plan, init))
    drawn = _drawn_modules(model, plan)
    if init in LAYER_INITIALIZERS:
        return _fit(model, init, inputs, drawn, gain=1.0 if gain is None else gain, bias=bias, seed=int(seed))
    gain = default_gain(init, activation) if gain is None else gain
    rng = np.random.default_rng(int(seed))
    with torch.no_grad():
        for module in drawn:
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


@dataclass(frozen=True)
class ParameterPlan:
    """What `initialize` does to one parameter: action "drawn", "zeroed" or "left", and why."""

    parameter: str  # its path in the model, e.g. "transformer.h.0.attn.c_attn.weight"
    module: str  # the module's class name
    action: str
    reason: str = ""


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """Every (module path, module, attribute) that holds each parameter tensor, in module order."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        for attr, param in module.named_parameters(recurse=False, remove_duplicate=False):
            owners.setdefault(id(param), []).append((path, module, attr))
    return owners


def initialization_plan(model: nn.Module, *, bias: str = "keep") -> list[ParameterPlan]:
    """What `initialize(model, ..., bias=bias)` does to each parameter, one entry per distinct tensor.

    A weight is drawn when its first initializable owner holds it as `weight`
    and no owner is a module that no initializer draws (a weight tied to an
    Embedding is left as the embedding made it); a weight tied between
    initializable modules is drawn once, under its first name. Biases of drawn
    modules are zeroed with bias="zeros", else left. Everything else (norms'
    scales and shifts, embeddings, a module's extra parameters) is left, with
    the module type in the reason.
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"The 'bias' parameter must be one of {list(BIAS_MODES)}. Got {bias!r} instead.")
    plan: list[ParameterPlan] = []
    for owners in _owners(model).values():
        path, module, attr = owners[0]
        name = f"{path}.{attr}" if path else attr
        kind = type(module).__name__
        weights = [(p, m) for p, m, a in owners if a == "weight" and is_initializable(m)]
        others = [(p, m) for p, m, a in owners if not (a == "weight" and is_initializable(m))]
        if weights and not others:
            wpath, wmodule = weights[0]
            ties = ", ".join(p for p, _ in weights[1:])
            plan.append(ParameterPlan(f"{wpath}.weight" if wpath else "weight", type(wmodule).__name__, "drawn",
                                      f"drawn once for the modules tied to it ({ties})" if ties else ""))
        elif weights:
            opath, omodule = others[0]
            oattr = next(a for p, m, a in owners if m is omodule)
            plan.append(ParameterPlan(f"{opath}.{oattr}" if opath else oattr, type(omodule).__name__, "left",
                                      f"{oattr} of a {type(omodule).__name__}, which no initializer draws"))
            for wpath, wmodule in weights:
                plan.append(ParameterPlan(
                    f"{wpath}.weight" if wpath else "weight", type(wmodule).__name__, "left",
                    f"tied to {opath or 'the model'}'s {type(omodule).__name__} parameter: kept as that module "
                    "made it, which a redraw would rescale"))
        elif attr == "bias" and is_initializable(module):
            plan.append(ParameterPlan(name, kind, "zeroed" if bias == "zeros" else "left",
                                      "" if bias == "zeros" else "a bias (bias='keep')"))
        else:
            plan.append(ParameterPlan(name, kind, "left", f"{attr} of a {kind}, which no initializer draws"))
    return plan


def _drawn_modules(model: nn.Module, plan: list[ParameterPlan]) -> list[nn.Module]:
    """The modules whose weights the plan draws, in `model.modules()` order, each tensor once."""
    drawn = {p.parameter for p in plan if p.action == "drawn"}
    out, seen = [], set()
    for path, module in model.named_modules(remove_duplicate=False):
        name = f"{path}.weight" if path else "weight"
        if name in drawn and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append(module)
    return out


def plan_notes(plan: list[ParameterPlan], init: str) -> list[str]:
    """Sentences for the user: what `init` drew, which tied weights it kept, and every parameter it left alone.

    Names that differ only in a block index are grouped (``transformer.h.*.ln_1.weight (12)``), so that every
    parameter is named in a few lines even for a deep model.
    """
    import re
    from collections import Counter

    drawn = Counter(p.module for p in plan if p.action == "drawn")
    notes = []
    if drawn:
        notes.append(f"--init {init} drew {sum(drawn.values())} weight(s) ("
                     + ", ".join(f"{n} {kind}" for kind, n in drawn.items()) + ").")
    else:
        notes.append(f"--init {init} found no Linear, Conv or Conv1D weight to draw: the model is unchanged.")
    notes += [f"{p.parameter} was not redrawn: {p.reason}." for p in plan if p.action == "left" and "tied" in p.reason]
    groups: dict[tuple[str, str], list[str]] = {}
    for p in plan:
        if p.action == "left" and "tied" not in p.reason:
            pattern = re.sub(r"\.\d+(?=\.)", ".*", p.parameter)
            groups.setdefault((pattern, p.module), []).append(p.parameter)
    if groups:
        parts = [f"{pattern} ({len(names)})" if len(names) > 1 else names[0] for (pattern, _), names in groups.items()]
        kinds = Counter(module for (_, module), names in groups.items() for _ in names)
        notes.append(f"--init {init} left {sum(kinds.values())} parameter(s) as they were ("
                     + ", ".join(f"{n} of {kind}" for kind, n in kinds.items()) + "): " + ", ".join(parts) + ".")
    return notes


def _fit(model: nn.Module, init: str, inputs, layers: list[nn.Module], *, gain: float, bias: str,
         seed: int) -> nn.Module:
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
            for module in layers:
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        try:
            fit_layers(model, init, inputs, layers, gain=gain, seed=seed, to_layout=_to_layout, fans_of=weight_fans)
        finally:
            for buffer, value in buffers:
                buffer.copy_(value)
    return model
