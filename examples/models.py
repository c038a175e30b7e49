"""Model factories for the worked example and for `initscope inspect` (each returns a fresh model).

    initscope inspect examples/models.py:plain --input-shape 256,32
    initscope inspect examples/models.py:plain --input-shape 256,32 --init kaiming-normal
    initscope inspect examples/models.py:residual --input-shape 256,32 --init kaiming-normal --layers Block
    initscope inspect examples/models.py:classifier --input examples/x.npy --loss cross-entropy --targets examples/labels.npy
    initscope inspect examples/models.py:tiny_gpt --input examples/ids.npy --layout TinyBlock=tokens --reference wte

The .npy inputs beside this file are written by `python examples/make_inputs.py` (seeded: the same bytes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

INPUT_DIM = 32
WIDTH = 256
DEPTH = 32


class Block(nn.Module):
    """s + alpha·LayerNorm(ReLU(Linear(s))): DESIGN.md's layer with norm "layer" and residual alpha.

    A residual branch scaled by 1/sqrt(depth) keeps the sum's variance bounded
    over depth (as in Fixup, Zhang et al. 2019, and SkipInit, De & Smith 2020).
    """

    def __init__(self, width: int, alpha: float):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.ReLU()
        self.norm = nn.LayerNorm(width)
        self.alpha = alpha

    def forward(self, x):
        return x + self.alpha * self.norm(self.act(self.fc(x)))


def plain(depth: int = DEPTH, width: int = WIDTH, input_dim: int = INPUT_DIM) -> nn.Sequential:
    """A deep plain ReLU MLP with PyTorch's default init: Linear, ReLU, ..., Linear(width, 1)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(input_dim if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def residual(depth: int = DEPTH, width: int = WIDTH, input_dim: int = INPUT_DIM) -> nn.Sequential:
    """The same depth and width with LayerNorm and residual connections: stem, depth - 1 blocks, readout.

    Record the blocks' outputs (the states) with `layers=["Block"]` or `--layers Block`.
    """
    alpha = 1.0 / math.sqrt(depth)
    blocks = [Block(width, alpha) for _ in range(depth - 1)]
    return nn.Sequential(nn.Linear(input_dim, width), *blocks, nn.Linear(width, 1))


def classifier(input_dim: int = INPUT_DIM, width: int = 128, depth: int = 6, classes: int = 10) -> nn.Sequential:
    """An MLP classifier, (N, input_dim) -> (N, classes) logits, for `--loss cross-entropy --targets labels.npy`."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(input_dim if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


class TinyBlock(nn.Module):
    """A pre-norm transformer block on (N, T, width): self-attention then an MLP, each added back."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """Token ids (N, T) -> next-token logits (N, T, vocab): embeddings `wte` and `wpe`, TinyBlocks, a head."""

    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[TinyBlock(width, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.head(self.ln_f(self.blocks(self.wte(ids) + self.wpe(positions))))


def tiny_gpt(vocab: int = 100, width: int = 64, depth: int = 4, heads: int = 4, context: int = 32) -> TinyGPT:
    """A small GPT-like model for `--layout TinyBlock=tokens --reference wte` (token ids from examples/ids.npy)."""
    return TinyGPT(vocab, width, depth, heads, context)
