"""Activation checkpointing for inspect's one backward pass: gradients of a deep model without holding every activation.

autograd keeps every intermediate tensor of the forward pass until the
backward pass has used it, so a ResNet-50 forward+backward at 32×3×224²
peaks at ~3.5 GB, almost all of it saved activations. grad_norm needs only
the parameters' gradients, so inspect recomputes each repeated block's
interior during the backward pass instead (torch.utils.checkpoint,
non-reentrant): only block inputs are kept, and one block's interior at a
time. The cost is one more forward pass of the blocks; the gradients are
the same to rounding (the recomputation replays the same operations, with
the RNG state of the first pass for dropout).

A repeated block is a module with submodules that sits, with at least one
sibling of the same class, in an nn.Sequential or nn.ModuleList: ResNet
stages' blocks, a transformer's layers, an attention stack's attention
modules. Only the outermost such modules are checkpointed (nesting would
recompute the inner ones twice). Plain stacks of leaf layers (an MLP) have
none, and run as before.

Recomputation calls the blocks' children again, so the caller removes its
recording hooks before the backward pass, and restores buffers (BatchNorm
running statistics move again) afterwards; inspect does both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["repeated_blocks", "checkpointed"]


def _is_repeated(container: nn.Module) -> list[nn.Module]:
    """The children of a Sequential/ModuleList that have submodules and share their class with a sibling."""
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        return []
    inner = [m for m in container.children() if next(m.children(), None) is not None]
    counts = Counter(type(m) for m in inner)
    return [m for m in inner if counts[type(m)] > 1]


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost repeated blocks of `model` (module docstring), in definition order, each once."""
    blocks: list[nn.Module] = []
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        found = {id(m) for m in _is_repeated(module)}
        for child in module.children():
            if id(child) in found:
                if id(child) not in seen:
                    seen.add(id(child))
                    blocks.append(child)
            else:
                visit(child)  # blocks are outermost: nothing inside a found block is visited

    visit(model)
    return blocks


@contextmanager
def checkpointed(blocks: list[nn.Module]) -> Iterator[None]:
    """Run each block's forward under non-reentrant checkpointing inside the context; the blocks' own forward
    hooks still see their outputs (they run in __call__, around the patched forward). Restored on exit."""
    patched = []
    try:
        for block in blocks:
            own = block.__dict__.get("forward")  # an instance-level forward the user set, put back on exit
            original = block.forward

            def forward(*args, _original=original, **kwargs):
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)

            block.forward = forward
            patched.append((block, own))
        yield
    finally:
        for block, own in patched:
            if own is None:
                del block.__dict__["forward"]
            else:
                block.forward = own
