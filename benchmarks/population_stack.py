"""Exploratory: the lever for cross-validation and population training that is not built yet.

k digits-size MLPs (64 inputs, 64x2 hidden, 10 classes, ~1,000 rows each, batch 32, fused Adam)
trained one after another, as `data.cv_folds=k` trains its folds today, against the same k
models with stacked weights (torch.func.stack_module_state + vmap: one batched kernel per layer,
one Adam over the stacked parameters, which is k independent Adams since Adam is elementwise).
Synthetic data; milliseconds per epoch of all k models, median of interleaved rounds.

    python benchmarks/population_stack.py --members 3 32 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

ROWS, FEATURES, CLASSES, BATCH = 1017, 64, 10, 32


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES)
    )


def one_after_another(k: int, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    models = [mlp().to(device) for _ in range(k)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in models]
    loss_fn = nn.CrossEntropyLoss()

    def epoch() -> None:
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            order = torch.randperm(ROWS, device=device)
            for start in range(0, ROWS, BATCH):
                idx = order[start : start + BATCH]
                loss = loss_fn(model(x[i, idx]), y[i, idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    return epoch


def stacked(k: int, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    params, buffers = stack_module_state([mlp().to(device) for _ in range(k)])
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    skeleton = copy.deepcopy(mlp()).to("meta")
    optimizer = torch.optim.Adam(params.values(), lr=1e-3, fused=True)
    forward = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)))
    loss_fn = nn.CrossEntropyLoss()
    rows = torch.arange(k, device=device)[:, None]

    def epoch() -> None:
        orders = torch.stack([torch.randperm(ROWS, device=device) for _ in range(k)])
        for start in range(0, ROWS, BATCH):
            idx = orders[:, start : start + BATCH]
            out = forward(params, buffers, x[rows, idx])
            # the mean over all members' rows, times k: each member's gradient is its own mean's
            loss = loss_fn(out.reshape(-1, CLASSES), y[rows, idx].reshape(-1)) * k
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def timed(epoch, device: torch.device, epochs: int) -> float:
    epoch()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[3, 32])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for k in args.members:
        torch.manual_seed(0)
        x = torch.randn(k, ROWS, FEATURES, device=device)
        y = torch.randint(0, CLASSES, (k, ROWS), device=device)
        variants = {"one after another": one_after_another, "stacked": stacked}
        epochs = {name: build(k, x, y, device) for name, build in variants.items()}
        ms: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, epoch in epochs.items():
                ms[name].append(timed(epoch, device, args.epochs))
        seq, stack = (statistics.median(ms[name]) for name in variants)
        print(
            f"{k:4d} models: one after another {seq:8.1f} ms/epoch   stacked {stack:8.1f} "
            f"ms/epoch   speed-up {seq / stack:5.2f}x"
        )


if __name__ == "__main__":
    main()
