"""Model factories for the worked example and for `initscope inspect` (each returns a fresh model).

    initscope inspect examples/models.py:plain --input-shape 256,32
    initscope inspect examples/models.py:plain --input-shape 256,32 --init kaiming-normal
    initscope inspect examples/models.py:residual --input-shape 256,32 --init kaiming-normal --layers Block
"""

from __future__ import annotations

import math

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
