"""Models built from config: an MLP, a small CNN and an LSTM/GRU/RNN classifier-regressor.

Each takes `input_shape` and `output_size` from the data at build time; everything else comes
from its `conf/model/*.yaml`. `input_kinds` says which data layouts a model accepts, so that a
CNN on tabular data is rejected before any work starts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def _dropout(p: float, activation: str) -> nn.Module:
    # SELU's self-normalization needs alpha dropout, which keeps mean and variance.
    return nn.AlphaDropout(p) if activation == "selu" else nn.Dropout(p)


def _init(module: nn.Module, activation: str) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if activation == "selu":  # LeCun normal, as SELU assumes
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight[0].numel()))
            elif activation in ("relu", "leaky_relu", "elu", "gelu"):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _hidden_block(
    layer: nn.Module, width: int, activation: str, dropout: float, batchnorm: bool, conv=False
) -> list[nn.Module]:
    block = [layer]
    if batchnorm:
        block.append(nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width))
    block.append(_ACTIVATIONS[activation]())
    if dropout > 0:
        block.append(_dropout(dropout, activation))
    return block


class MLP(nn.Module):
    """`depth` hidden layers of `hidden_units`: linear → [batch norm] → activation → [dropout]."""

    input_kinds = ("tabular", "image", "sequence")

    def __init__(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        hidden_units: int = 64,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for _ in range(depth):
            layers += _hidden_block(
                nn.Linear(width, hidden_units), hidden_units, activation, dropout, batchnorm
            )
            width = hidden_units
        layers.append(nn.Linear(width, output_size))
        self.net = nn.Sequential(*layers)
        _init(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv blocks (channels doubling from `channels`, 2x2 max-pool while the map allows) + head."""

    input_kinds = ("image",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        channels: int = 16,
        layers: int = 2,
        kernel_size: int = 3,
        hidden_units: int = 64,
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for i in range(layers):
            out = channels * 2**i
            conv = nn.Conv2d(c, out, kernel_size, padding=kernel_size // 2)
            blocks += _hidden_block(conv, out, activation, 0.0, batchnorm, conv=True)
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        blocks.append(nn.Flatten())
        blocks += _hidden_block(
            nn.Linear(c * h * w, hidden_units), hidden_units, activation, dropout, batchnorm
        )
        blocks.append(nn.Linear(hidden_units, output_size))
        self.net = nn.Sequential(*blocks)
        _init(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNN(nn.Module):
    """An LSTM, GRU or Elman RNN over a (time, features) sequence; the last step feeds the head."""

    input_kinds = ("sequence",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        cell: str = "lstm",
        hidden_units: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn_cls(
            input_shape[-1],
            hidden_units,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        width = hidden_units * (2 if bidirectional else 1)
        self.norm = nn.LayerNorm(width) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(self.drop(self.norm(out[:, -1])))
