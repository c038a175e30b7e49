"""The tensors inside a module's output, whatever its structure, each with a name.

A module may return a tensor, a tuple or list (MultiheadAttention returns
(output, weights)), a dict, a dataclass, a named tuple or a HuggingFace
ModelOutput (an ordered dict that is also a dataclass). Each tensor inside is
one candidate state, named by its path: ``attn.3[0]``, ``encoder.last_hidden_state``,
``head.extras[1][0]``. Which candidates become states, and why the others do
not (integer tensors, tensors without the samples on their first axis,
MultiheadAttention's attention weights), is decided here once, for the main
pass and the Jacobian pass alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from initscope.torch.layouts import sequence_first

__all__ = ["tensors_of", "recordable", "constant_over_samples", "MAX_DEPTH"]

MAX_DEPTH = 8  # nesting levels searched; deeper structures are not data a model passes between layers


def tensors_of(output: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in `output`, in order. Non-tensor leaves (None, numbers) are not data."""
    if isinstance(output, torch.Tensor):
        yield path, output
    elif depth >= MAX_DEPTH:
        return
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from tensors_of(value, f"{path}.{key}", depth + 1)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            yield from tensors_of(getattr(output, f.name), f"{path}.{f.name}", depth + 1)
    elif isinstance(output, tuple) and hasattr(output, "_fields"):  # a named tuple
        for key, value in zip(output._fields, output, strict=True):
            yield from tensors_of(value, f"{path}.{key}", depth + 1)
    elif isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            yield from tensors_of(value, f"{path}[{i}]", depth + 1)


def recordable(module: nn.Module, output: Any, n: int, *, attention_weights: bool = False
               ) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, str]]]:
    """(states, skipped): the tensors of `output` that are states of n samples, and (path, reason) for the rest.

    States are floating tensors with n on the first axis, batch-major
    (sequence-first attention outputs are transposed) and padded when nested.
    """
    states, skipped = [], []
    for path, t in tensors_of(output):
        if isinstance(module, nn.MultiheadAttention) and path == "[1]" and not attention_weights:
            skipped.append((path, "attention weights (pass attention_weights=True to record them)"))
            continue
        if not t.is_floating_point():
            skipped.append((path, f"a {str(t.dtype).removeprefix('torch.')} tensor, not floating point"))
            continue
        if t.is_nested:  # TransformerEncoder's nested-tensor fast path: positions padded with zeros
            t = torch.nested.to_padded_tensor(t, 0.0)
        if t.ndim == 3 and sequence_first(module) and not path.startswith("[1]"):
            t = t.transpose(0, 1)
        if t.ndim == 0 or t.shape[0] != n:
            skipped.append((path, f"its shape {tuple(t.shape)} does not start with the {n} samples"))
            continue
        states.append((path, t))
    return states, skipped


def constant_over_samples(args: tuple, kwargs: Mapping | None, n: int) -> bool:
    """True when a module's inputs are the same for every sample by construction, not by an upstream collapse.

    That is: no floating tensor argument carries the n samples on its first
    axis (a floating one that is constant is a collapsed state upstream, and
    stays a collapse), and every other tensor with n first (ids, masks) is
    the same for every sample: BERT's token-type ids when all are 0. Tensors
    without n first (position ids (1, L), buffers) are broadcast over samples.
    """
    for _, t in tensors_of((tuple(args), dict(kwargs or {}))):
        if t.ndim >= 1 and t.shape[0] == n and n > 1:
            if t.is_floating_point() or t.is_nested or not bool((t == t[:1]).all()):
                return False
    return True
