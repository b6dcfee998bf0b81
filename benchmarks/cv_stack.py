"""Cross-validation folds trained stacked (`trainer.stack_folds=true`, the default) against one
after another (`trainer.stack_folds=false`), in one process, on the same folds, config and
initial weights: milliseconds per epoch of all k folds (training and validation), as the job
builds the members (`hypersweep.build.members`) and `fit_members` trains them. Median of
interleaved rounds.

    python benchmarks/cv_stack.py [--repeats 5] [--epochs 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from hypersweep.build import members as build_members
from hypersweep.core.data import load_folds
from hypersweep.core.fit import EarlyStopping, StackedMembers, fit_members
from hypersweep.hydra_compat import initialize_kwargs

CONF = Path(__file__).resolve().parents[1] / "conf"
CASES = {
    "MLP 64x2, batch 32, 3 folds": ["trainer.batch_size=32"],
    "MLP 256x2, batch 128, 3 folds": ["model.hidden_units=256", "trainer.batch_size=128"],
    "MLP 64x2 + batch norm, batch 64, 5 folds": ["regularization=batchnorm", "data.cv_folds=5"],
    "MLP 64x2 + dropout, batch 64, 10 folds": ["regularization=dropout", "data.cv_folds=10"],
    "CNN 16ch, batch 64, 3 folds (vmap)": ["model=cnn"],
}


def epoch_ms(cfg, device: torch.device, epochs: int, stack: bool) -> tuple[float, bool]:
    with open_dict(cfg):
        cfg.trainer.stack_folds = stack
    folds = [f.to(device) for f in load_folds(cfg.data)]
    members = build_members(cfg, folds, None)
    stacked = isinstance(members[0], StackedMembers)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit_members(
        members,
        max_epochs=epochs,
        batch_size=cfg.trainer.batch_size,
        stopper=EarlyStopping("min", epochs + 1),
        seed=0,
        precision=cfg.trainer.precision,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs * 1000, stacked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    os.environ.setdefault("HYPERSWEEP_CACHE_DIR", str(Path.home() / ".cache" / "hypersweep"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'case':44s} {'one by one ms':>14s} {'stacked ms':>11s} {'speed-up':>9s}")
    with initialize_config_dir(str(CONF), **initialize_kwargs()):
        for name, overrides in CASES.items():
            cfg = compose("config", overrides=["data=digits", "data.cv_folds=3", *overrides])
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for stack in (False, True):
                    ms, stacked = epoch_ms(cfg, device, args.epochs, stack)
                    assert stacked == stack, f"{name}: the job did not stack"
                    times[stack].append(ms)
            alone, together = statistics.median(times[False]), statistics.median(times[True])
            print(f"{name:44s} {alone:14.1f} {together:11.1f} {alone / together:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
