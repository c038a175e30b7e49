"""The main pass: each selected module's output tensors become states, measured as soon as they exist.

Layer 0 is the model's input; then every tensor of every recorded module
call, in execution order (`initscope.torch.outputs` names them and says
which are not states). Each state gets a layout (`initscope.torch.layouts`)
and is measured at once (`initscope.torch.measures`), so no state is kept.

The reference state is what scale and rank flags compare with: the input
when it is floating point and not an image, else the first recorded state
(the embedding's output for token ids, the first layer for images), or the
first state of the module named by `reference`. linear_r2 and
distance_corr compare with the input when it is floating point, and with the
reference state when the input is integer ids (ids carry no geometry);
states recorded before it get NaN there.
"""

from __future__ import annotations

from collections import Counter
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.torch.gradients import is_norm
from initscope.torch.kernels import one_thread
from initscope.study.recorder import Layout
from initscope.torch.layouts import LayoutRules, contents_kind, infer_layout, module_kind
from initscope.torch.measures import Comparison, Measured, measure_state
from initscope.torch.providers import BACKEND, to_numpy
from initscope.torch.outputs import constant_over_samples, recordable, tensors_of

__all__ = ["Layer", "Recorder", "HookError", "display_name", "input_hint"]

_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.RReLU, nn.PReLU)


def display_name(name: str) -> str:
    """A module's qualified name as shown in tables; the root module has the empty name."""
    return name or "(model)"


def activation_of(module: nn.Module | None) -> str:
    """The core's activation name for linear_fraction: ReLU-like modules only, else NaN there."""
    return "relu" if isinstance(module, _RELU_LIKE) else "identity"


def input_hint(modules) -> str | None:
    """How a multi-axis input reads: like the first of `modules` (registration order) of a known kind or contents."""
    for module in modules:
        kind = module_kind(module, 2) or contents_kind(module)
        if kind is not None:
            return kind
    return None


@dataclass
class Layer:
    """One recorded state: layer 0 is the input (module None), then module output tensors in execution order."""

    index: int
    name: str  # the module's qualified name
    output: str  # the tensor's path in the module's output: "" for a tensor, "[0]", ".last_hidden_state", ...
    module: nn.Module | None
    call: int  # 0 for a module's first call in the forward pass, 1 for its second, ...
    layout: Layout
    state_samples: int
    measured: Measured
    constant_input: bool = False
    jacobian_samples: int = 0
    normalised_by: str = ""  # the norm module that reads this very tensor next, for an affine map's output

    @property
    def label(self) -> str:
        """The state's name: the module's name and the tensor's path, e.g. `attn.3[0]`; "input" for layer 0."""
        return "input" if self.module is None else display_name(self.name) + self.output

    @property
    def module_type(self) -> str:
        return "input" if self.module is None else type(self.module).__name__


# Modules whose output is an affine map of their input: its scale is the weights' until a norm resets it.
_AFFINE = (nn.Linear, nn.modules.conv._ConvNd)


def _identity(t: torch.Tensor) -> tuple:
    """The same tensor, unchanged: storage, view and in-place version."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t._version


class HookError(Exception):
    """An error in initscope's own hook (its cause), kept apart from the model's own errors."""


class Recorder:
    """Hooks of the main pass; see the module docstring. Notes collect what was not recorded, and why."""

    def __init__(self, names: dict[int, str], n: int, *, want: set[str], rules: LayoutRules, hint: str | None,
                 reference: str | None, notes: list[str], seed: int, max_rows: int, max_sequences: int,
                 attention_weights: bool = False):
        self.names, self.n, self.want, self.rules, self.hint = names, n, want, rules, hint
        self.reference_name, self.notes, self.seed = reference, notes, seed
        self.max_rows, self.max_sequences, self.attention_weights = max_rows, max_sequences, attention_weights
        self.layers: list[Layer] = []
        self.calls: Counter[int] = Counter()
        self.skipped: dict[str, list[str]] = {}  # reason -> labels of tensors not recorded
        self.previous: Layout | None = None
        self.comparison: Comparison | None = None
        self.reference: int | None = None
        self.compare_with_reference = False
        self.guessed: list[Layer] = []
        self.nested = False
        self.called: set[int] = set()  # modules whose hook ran, with or without a state
        self.last: tuple | None = None  # (identity key, tensor, measurement) of the last state measured
        # (identity, layer) of the last recorded state when a Linear or Conv made it: a norm whose input is that
        # very tensor sets its scale, so the scale rule does not judge it (`initscope.study.flags`).
        self.last_affine: tuple | None = None
        self.move_reference = False
        # the metrics that read a pre-activation (pre_q, pre_cosine): NaN on a state no affine map made
        self.pre_readers = [m for m in want if E.reads("pre", [m]) or E.reads("affine", [m], BACKEND)]

    def _measure(self, out: torch.Tensor, layout: Layout, module: nn.Module | None, affine: bool) -> Measured:
        rng = np.random.default_rng([self.seed, len(self.layers)])
        return measure_state(out, layout, want=self.want, activation=self.activation(module),
                             comparison=self.comparison, first=module is None, affine=affine,
                             max_rows=self.max_rows, max_sequences=self.max_sequences, rng=rng)

    @staticmethod
    def activation(module: nn.Module | None) -> str:
        return activation_of(module)

    def start(self, x: torch.Tensor, input_hint: str | None) -> None:
        """Record the input as layer 0 and choose the comparison state (module docstring)."""
        override = self.rules.lookup("input", "input", None)
        layout = infer_layout(None, tuple(x.shape[1:]), override=override, previous=None, hint=input_hint)
        floating = x.is_floating_point()
        if floating:
            self.set_comparison(x)
        else:
            self.compare_with_reference = True
        self._record(None, "", "", 0, x if floating else x.to(torch.float32), layout)
        image = layout.kind == "channels-first"
        if self.reference_name is None and floating and not image:
            self.reference = 0
        if self.reference_name == "input":
            self.reference = 0

    def set_comparison(self, state: torch.Tensor) -> None:
        with one_thread():  # numpy's BLAS right after torch work: see kernels.one_thread (1 s -> 0.01 s on a BERT)
            flat = to_numpy(state.reshape(self.n, -1))[None]
            ref = None
            if E.reads("distances", self.want, BACKEND):
                ref = M.distance_reference(flat, rng=np.random.default_rng(self.seed))
            self.comparison = Comparison(M.centred(flat).astype(np.float64), ref)  # linear_r2 reads it in float64

    def _record(self, module, name: str, output: str, call: int, out: torch.Tensor, layout: Layout) -> Layer:
        if layout.kind != "units" or len(layout.shape) > 1:
            self.previous = layout
        # Dropout in eval mode, Identity and a Transformer layer's last norm hand on the very same tensor:
        # measure it once. The last tensor is held, so its memory cannot be reused by another tensor at the
        # same address; in-place changes bump _version, so a changed tensor is measured again. Only an affine
        # map's output is a pre-activation: the next module's reading of the same tensor has none.
        affine = isinstance(module, _AFFINE) and not output if module is not None else not self.compare_with_reference
        key = (out.data_ptr(), tuple(out.shape), out.stride(), out._version, out.dtype, layout.kind,
               activation_of(module))
        if self.last is not None and self.last[0] == key and module is not None:
            got = self.last[2]
            if self.last[3] and not affine:
                got = replace(got, values={**got.values, **dict.fromkeys(self.pre_readers, math.nan)})
        else:
            got = self._measure(out, layout, module, affine)
            self.last = (key, out, got, affine)
        layer = Layer(len(self.layers), name, output, module, call, layout, out.shape[0] * layout.positions, got)
        self.layers.append(layer)
        self.last_affine = (_identity(out), layer) if isinstance(module, _AFFINE) else None
        if layout.reason == "guess":
            self.guessed.append(layer)
        return layer

    def hook(self, module: nn.Module, args, kwargs, output) -> None:
        try:
            self._hook(module, args, kwargs, output)
        except Exception as exc:  # noqa: BLE001 - re-raised as itself by the caller
            raise HookError() from exc

    def _hook(self, module: nn.Module, args, kwargs, output) -> None:
        name = self.names[id(module)]
        self.called.add(id(module))
        if self.last_affine is not None and is_norm(module):
            first = next(tensors_of((args, kwargs)), None)
            if first is not None and _identity(first[1]) == self.last_affine[0]:
                read = self.last_affine[1]
                read.normalised_by = display_name(name)
                # An image model's stem conv is the default reference; its scale is the weights' until this norm
                # sets it, so the norm's output is the reference instead (a named --reference stays).
                self.move_reference = self.reference_name is None and self.reference == read.index
        if not self.nested and any(t.is_nested for _, t in tensors_of(output)):
            self.nested = True
            self.notes.append(f"{display_name(name)} ({type(module).__name__}) returned nested tensors (torch's "
                              "padding-mask fast path drops padded positions); they are read padded with zeros "
                              "to the longest sequence, so padding positions count as tokens.")
        states, skipped = recordable(module, output, self.n, attention_weights=self.attention_weights)
        for path, reason in skipped:
            labels = self.skipped.setdefault(f"{type(module).__name__}: {reason}", [])
            if display_name(name) + path not in labels:
                labels.append(display_name(name) + path)
        if not states:
            return
        call = self.calls[id(module)]
        self.calls[id(module)] += 1
        for path, out in states:
            label = display_name(name) + path
            override = self.rules.lookup(label, name, module)
            shape = tuple(out.shape[1:])
            if override not in (None, "units") and len(shape) < 2 and self.rules.explicit(label, name, module):
                raise ValueError(f"The 'layout' parameter gives {override!r} for {label}, whose output has one axis "
                                 f"per sample {shape}; only 'units' fits it.")
            if len(shape) < 2:
                override = None
            layout = infer_layout(module, shape, override=override, previous=self.previous, hint=self.hint)
            is_ref = self.reference is None and self.reference_name in (None, name, label)
            constant = None
            if is_ref and self.reference_name is None:  # the first state that varies with the data
                constant = constant_over_samples(args, kwargs, self.n)
                is_ref = not constant
            if (is_ref or self.move_reference) and self.compare_with_reference:
                self.set_comparison(out)
            layer = self._record(module, name, path, call, out, layout)
            if layer.measured.collapsed:
                layer.constant_input = constant_over_samples(args, kwargs, self.n) if constant is None else constant
            if is_ref or self.move_reference:
                self.reference, self.move_reference = layer.index, False
