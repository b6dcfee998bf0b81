"""Several models of one architecture trained as one: the first step of population training.

`Stacked` holds each parameter and buffer of k identical-architecture models stacked along a new
first dimension, and runs their forward passes as one (torch.func.vmap over functional_call):
one batched kernel per layer instead of k small ones. Each model's gradient comes from its own
loss only, and an elementwise optimizer (SGD, Adam, RMSprop, ...) updates each model's slice of
a stacked tensor exactly as it would update the model alone, so k models with one optimizer are
k independent trainings. Used for the folds of a cross-validation (same hyperparameters, same
initial weights, different data); it knows nothing of the training loop.

A model that is a chain of linear layers, batch norm and elementwise modules (our MLP) runs
through batched matrix products directly (`torch.baddbmm`, batch norm over the k models' channels
side by side): twice as fast as vmap's generic path on a CPU (`benchmarks/cv_stack.py`). Others
(the CNN) take vmap.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

# Modules that act on each element alone: on a stacked (k, batch, features) tensor they do what
# they do for each model (dropout draws an independent mask for every element, so every model).
ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.Dropout,
    nn.AlphaDropout,
    nn.Identity,
)

# Optimizers whose update of a parameter element depends on that element's own history only;
# one with per-tensor statistics (LBFGS, LAMB-style trust ratios) would mix the models.
ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
)


def stackable(models: list[nn.Module]) -> bool:
    """Whether vmap can run these models as one: two or more, one architecture, and no recurrent
    layer (torch has no batching rule for the fused LSTM/GRU/RNN kernels)."""
    if len(models) < 2 or any(isinstance(m, nn.RNNBase) for m in models[0].modules()):
        return False
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in models]
    return all(s == shapes[0] for s in shapes[1:])


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The layers of a model that is an `nn.Sequential` (or holds one as `net` and calls only
    it, as `models.MLP` does) of flatten, linear, batch norm (affine, with running statistics)
    and elementwise modules, with their name prefixes; None for any other model."""
    from hypersweep.core.models import MLP

    if isinstance(model, MLP):
        chain, prefix = model.net, "net."
    elif type(model) is nn.Sequential:
        chain, prefix = model, ""
    else:
        return None
    layers = []
    for name, layer in chain.named_children():
        norm = isinstance(layer, nn.BatchNorm1d) and layer.affine and layer.track_running_stats
        if not (norm or isinstance(layer, (nn.Flatten, nn.Linear, *ELEMENTWISE_MODULES))):
            return None
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return None
        layers.append((f"{prefix}{name}.", layer))
    return layers


def _dropout(h: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Inverted dropout of (k, batch, ...) with model i's own rate `rates[i]`: what
    `nn.Dropout(rates[i])` does to each model's slice, with masks of their own."""
    keep = (1 - rates).view(-1, *[1] * (h.dim() - 1))
    return h * (torch.rand_like(h) < keep) / keep


class Stacked(nn.Module):
    """k models as one module: input (k, batch, ...) -> output (k, batch, ...), model i on
    slice i. Dropout draws different masks per model (at each model's own rate, for a chain);
    batch norm keeps each model's statistics."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(models)  # new tensors: the models stay apart
        self.k = len(models)
        # Module attribute names cannot hold dots; keep the models' own names for the states.
        self._names = {name: name.replace(".", "__") for name in [*params, *buffers]}
        for name, p in params.items():
            self.register_parameter(self._names[name], nn.Parameter(p.detach()))
        for name, b in buffers.items():
            self.register_buffer(self._names[name], b.detach())
        self._param_names, self._buffer_names = list(params), list(buffers)
        # A weightless copy to call with the stacked tensors (in a tuple: not a submodule).
        self._template = (copy.deepcopy(models[0]).to("meta"),)
        self._chain = _chain(self._template[0])
        self._forward = vmap(self._one, randomness="different")
        # Dropout layers of the chain whose rate differs between the models (population
        # training): each model's own rate, (k,). Elsewhere the template's layer applies.
        self._rates: dict[str, torch.Tensor] = {}
        if self._chain is not None:
            chains = [_chain(m) for m in models]
            for j, (prefix, layer) in enumerate(self._chain):
                if type(layer) is nn.Dropout:
                    rates = [c[j][1].p for c in chains]
                    if len(set(rates)) > 1:
                        device = next(iter(params.values())).device
                        self._rates[prefix] = torch.tensor(rates, device=device)

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template[0], (params, buffers), (x,))

    def _tensors(self, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: getattr(self, self._names[name]) for name in names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._chain is not None:
            return self._forward_chain(x)
        return self._forward(self._tensors(self._param_names), self._tensors(self._buffer_names), x)

    def _stacked(self, prefix: str, name: str) -> torch.Tensor:
        return getattr(self, self._names[f"{prefix}{name}"])

    def _forward_chain(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's layers on (k, batch, ...) without vmap: a linear layer is one batched
        matrix product; batch norm treats the k models' features as k times the channels."""
        h = x
        for prefix, layer in self._chain:
            if isinstance(layer, nn.Flatten):
                h = h.flatten(2)
            elif isinstance(layer, nn.Linear):
                w, b = self._stacked(prefix, "weight"), self._stacked(prefix, "bias")
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif isinstance(layer, nn.BatchNorm1d):
                h = self._batch_norm(prefix, layer, h)
            elif prefix in self._rates:
                h = _dropout(h, self._rates[prefix]) if self.training else h
            else:
                h = layer(h)
        return h

    def _batch_norm(self, prefix: str, layer: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        k, rows, width = h.shape
        mean, var = self._stacked(prefix, "running_mean"), self._stacked(prefix, "running_var")
        momentum = layer.momentum
        if layer.training:
            count = self._stacked(prefix, "num_batches_tracked")
            count.add_(1)
            if momentum is None:  # a cumulative average, as nn.BatchNorm1d does
                momentum = 1.0 / float(count[0])
        out = nn.functional.batch_norm(
            h.transpose(0, 1).reshape(rows, k * width),
            mean.view(-1),  # views: the update lands in the stacked buffers
            var.view(-1),
            self._stacked(prefix, "weight").reshape(-1),
            self._stacked(prefix, "bias").reshape(-1),
            layer.training,
            momentum or 0.0,
            layer.eps,
        )
        return out.reshape(rows, k, width).transpose(0, 1)

    def train(self, mode: bool = True) -> Stacked:
        self._template[0].train(mode)  # dropout and batch norm read the template's mode
        return super().train(mode)

    def decayed_parameters(self) -> list[nn.Parameter]:
        """What L1 and L2 penalize: the stacked weight matrices and conv kernels (a stacked
        bias has two dimensions, but each model's has one)."""
        return [p for p in self.parameters() if p.requires_grad and p.dim() >= 3]

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every stacked tensor, under the models' own names."""
        return {
            name: t.detach().clone()
            for name, t in self._tensors([*self._param_names, *self._buffer_names]).items()
        }

    def keep(self, index: list[int]) -> None:
        """Keep only the models at `index` (in that order): the others' slices of every
        stacked tensor are dropped (a population's members that stopped)."""
        rows = torch.tensor(index, device=next(self.parameters()).device)
        for name in self._param_names:
            attr = self._names[name]
            self._parameters[attr] = nn.Parameter(self._parameters[attr].detach()[rows])
        for name in self._buffer_names:
            attr = self._names[name]
            self._buffers[attr] = self._buffers[attr][rows]
        self._rates = {prefix: rates[rows] for prefix, rates in self._rates.items()}
        self.k = len(index)

    def add(self, models: list[nn.Module]) -> None:
        """Stack `models` (of this architecture) after the ones held: rows k, k+1, ... (a
        population's members that join it while the others train)."""
        params, buffers = stack_module_state(models)
        for name, p in params.items():
            attr = self._names[name]
            held = self._parameters[attr].detach()
            self._parameters[attr] = nn.Parameter(torch.cat([held, p.detach().to(held.device)]))
        for name, b in buffers.items():
            attr = self._names[name]
            held = self._buffers[attr]
            self._buffers[attr] = torch.cat([held, b.detach().to(held.device)])
        if self._chain is not None:
            chains = [_chain(m) for m in models]
            device = next(self.parameters()).device
            for j, (prefix, layer) in enumerate(self._chain):
                if type(layer) is nn.Dropout:
                    held = self._rates.get(prefix, torch.full((self.k,), layer.p, device=device))
                    new = torch.tensor([c[j][1].p for c in chains], device=device)
                    if prefix in self._rates or not bool((new == layer.p).all()):
                        self._rates[prefix] = torch.cat([held, new])
        self.k += len(models)

    @staticmethod
    def member_state(snapshot: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Model i's state dict from a snapshot: loads into one of the original models."""
        return {name: t[i] for name, t in snapshot.items()}
