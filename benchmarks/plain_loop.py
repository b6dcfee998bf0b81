"""The baseline of sweep_overhead.py: the same trainings as the benchmark's grid, in a plain
Python loop: no Hydra, no MLflow, no checkpoints or plots. Prints the best val_loss per job."""

from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf

from hypersweep.core.data import load
from hypersweep.core.fit import EarlyStopping, fit
from hypersweep.core.models import MLP
from hypersweep.core.optim import adam, build_optimizer

DIGITS = OmegaConf.create(
    {
        "name": "digits",
        "source": "digits",
        "task": "classification",
        "kind": "image",
        "shape": [1, 8, 8],
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "split_seed": 0,
        "standardize": True,
    }
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-units", type=int, default=64)
    args = parser.parse_args()
    data = load(DIGITS)
    ends = [time.perf_counter()]
    for lr in args.lrs:
        torch.manual_seed(0)
        model = MLP(data.input_shape, data.output_size, hidden_units=args.hidden_units, depth=2)
        optimizer = build_optimizer(lambda groups, lr=lr: adam(groups, lr=lr), model, 0.0)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=1)
        result = fit(
            model,
            optimizer,
            scheduler,
            data,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            stopper=EarlyStopping("min", 10),
        )
        print(f"lr={lr} val_loss={result.best_value:.4f}")
        ends.append(time.perf_counter())
    # Jobs 2..N, as the sweep's gaps between jobs: the first pays one-off lazy imports.
    per_job = (ends[-1] - ends[1]) / max(len(args.lrs) - 1, 1)
    print(f"training seconds per job: {per_job:.4f}")


if __name__ == "__main__":
    main()
