"""Data of your own for `data=custom`: any function that returns (x, y), (x, y, task) or a
map-style torch Dataset of (x, y) items. hypersweep splits, standardizes and caches it as it
does its built-in sets.

    PYTHONPATH=examples/custom python train.py data=custom data._target_=mydata.spirals \\
        hypersweep.trusted_targets=[mydata] +data.turns=2.0
"""

from __future__ import annotations

import numpy as np
import torch


def spirals(n_rows: int = 900, turns: float = 1.5, noise: float = 0.15, seed: int = 0):
    """Three interleaved spirals in the plane: a classification no linear model solves."""
    rng = np.random.default_rng(seed)
    per_class = n_rows // 3
    xs, ys = [], []
    for label in range(3):
        t = np.sqrt(rng.uniform(0.05, 1.0, per_class)) * turns * 2 * np.pi
        angle = t + label * 2 * np.pi / 3
        points = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (turns * 2 * np.pi)
        xs.append(points + rng.normal(0.0, noise / 10, points.shape))
        ys.append(np.full(per_class, label))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


class Waves(torch.utils.data.Dataset):
    """A regression set as a torch Dataset: 16 samples of a noisy sine per row, the target its
    frequency."""

    def __init__(self, n_rows: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.freq = torch.rand(n_rows, generator=generator) * 3 + 0.5
        steps = torch.linspace(0, 2 * torch.pi, 16)
        noise = torch.randn(n_rows, 16, generator=generator) * 0.05
        self.x = torch.sin(self.freq[:, None] * steps) + noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.freq[i]


def waves(n_rows: int = 600, seed: int = 0):
    """`data=custom data._target_=mydata.waves data.task=regression`."""
    return Waves(n_rows, seed), "regression"
