"""Optimizers and regularization penalties built from config.

Optimizer configs are `_partial_` targets; `build_optimizer` supplies the parameters, split so
that L2 (weight decay) applies to weights only, never to biases or normalization parameters.
Adam and AdamW are wrapped so that β1 and β2 are separate, searchable keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import nn


def adam(
    params: Iterable,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    amsgrad: bool = False,
    fused: bool | None = None,
) -> torch.optim.Adam:
    return torch.optim.Adam(
        params, lr=lr, betas=(beta1, beta2), eps=eps, amsgrad=amsgrad, fused=fused
    )


def adamw(
    params: Iterable,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, fused=fused)


def decayed_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weight matrices and conv kernels: what L1 and L2 penalize. A model that stacks several
    (`stacking.Stacked`) says which of its parameters those are."""
    own = getattr(model, "decayed_parameters", None)
    if own is not None:
        return own()
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def build_optimizer(
    make: Callable[..., torch.optim.Optimizer], model: nn.Module, l2: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if l2 > 0:
        decay = {id(p) for p in decayed_weights(model)}
        groups = [
            {"params": [p for p in params if id(p) in decay], "weight_decay": l2},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
        ]
    else:  # one group: each group costs its own optimizer kernels per step on a GPU
        groups = [{"params": params, "weight_decay": 0.0}]
    kwargs = {}
    # Fused kernels: one kernel per step for all parameters instead of several per tensor. Small
    # models are launch-bound on a GPU, and on a CPU fused Adam/SGD made a digits epoch ~20%
    # faster (BENCHMARKS.md). Adam's and SGD's defaults are the unfused loops; RMSprop has none.
    on = params[0].device.type if params else ""
    if on in ("cuda", "cpu") and "fused" in inspect.signature(make).parameters:
        kwargs["fused"] = True
    return make(groups, **kwargs)


def l1_penalty(weights: list[nn.Parameter]) -> torch.Tensor:
    return torch.stack([w.abs().sum() for w in weights]).sum()
