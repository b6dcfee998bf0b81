"""A model of your own for `model=custom`: any nn.Module whose constructor takes
`input_shape` and `output_size`. Its other arguments are `model.<arg>` keys (sweep them like any
other); it gets `regularization.dropout` because it takes `dropout`.

    PYTHONPATH=examples/custom python train.py model=custom model._target_=mynet.ResidualMLP \\
        hypersweep.trusted_targets=[mynet] +model.width=64 +model.blocks=2
"""

from __future__ import annotations

import math

from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout)
        )

    def forward(self, x):
        return x + self.body(x)


class ResidualMLP(nn.Module):
    """A stem, `blocks` residual blocks of `width` units, and a head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        width: int = 64,
        blocks: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout) for _ in range(blocks)))
        self.head = nn.Linear(width, output_size)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))
