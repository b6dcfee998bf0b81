"""A random search trained as populations against the same search one trial at a time and on
the pool: whole `train.py -m` commands, the same trials (random sampler, one seed: the batches do
not change what it samples), each with its MLflow run, checkpoint and plots.

64 trials of the digits MLP over lr (log), momentum (1-β on a log scale), L2 and dropout, SGD
with momentum, early stopping; variants: one at a time (Hydra's basic launcher),
`hydra/launcher=hypersweep_pool` with n_jobs=2, and `hydra/launcher=population` with size=16
and 64. Each command runs in a fresh directory against a copy of one migrated MLflow store (the
store's creation is not timed). Rounds alternate the variants.

    python benchmarks/population_search.py [--trials 64] [--epochs 30] [--repeats 1]
        [--variants one,pool,k16,k64] [--device cpu] [--no-dropout]

Reported per variant: the median wall time, trials per minute, the ratio to the pool, and the
best validation loss and its trial (dropout masks differ between the variants, so the best
scores agree within noise, not exactly; with --no-dropout the search leaves dropout out and every
variant finds the same best trial and value). Results go to
benchmarks/results/population_search_<device>[_no_dropout].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _report import copy_store, header, migrated_store, train_env

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "one": ("one at a time", []),
    "pool": ("pool, n_jobs=2", ["hydra/launcher=hypersweep_pool", "hydra.launcher.n_jobs=2"]),
    "k16": ("population, size=16", ["hydra/launcher=population", "hydra.launcher.size=16"]),
    "k64": ("population, size=64", ["hydra/launcher=population", "hydra.launcher.size=64"]),
    "k16b": (
        "population, 16, batches",
        ["hydra/launcher=population", "hydra.launcher.size=16", "hydra.launcher.refill=false"],
    ),
    "k256": ("population, size=256", ["hydra/launcher=population", "hydra.launcher.size=256"]),
}


def search(trials: int, epochs: int, device: str, dropout: bool = True) -> list[str]:
    return [
        "-m",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=bench",
        "data=digits",
        "optimizer=momentum",
        "lr=tag(log, interval(1e-3, 3e-1))",
        "momentum=tag(one_minus_log, interval(0.5, 0.99))",
        "regularization.l2=tag(log, interval(1e-6, 1e-2))",
        "regularization.dropout=interval(0.0, 0.5)" if dropout else "regularization.dropout=0",
        f"trainer.max_epochs={epochs}",
        "trainer.early_stopping.patience=10",
        f"trainer.device={device}",
        "tracking.experiment=bench",
    ]


def run(args: list[str], store: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="hs-popbench-") as tmp:
        cwd = Path(tmp)
        copy_store(store, cwd)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=cwd,
            env=train_env(),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
        (results,) = cwd.glob("multirun/*/*/optimization_results.yaml")
        found = yaml.safe_load(results.read_text())
    return {
        "wall_s": wall,
        "best_value": found["best_value"],
        "best_trial": found["best_trial"],
        "trials": found["trials"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default="one,pool,k16,k64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-dropout", action="store_true")
    args = parser.parse_args()
    names = args.variants.split(",")
    with migrated_store() as store:
        load = os.getloadavg()[0]
        rounds: dict[str, list[dict]] = {n: [] for n in names}
        for _ in range(args.repeats):
            for name in names:
                extra = VARIANTS[name][1]
                rounds[name].append(
                    run(
                        [
                            *search(args.trials, args.epochs, args.device, not args.no_dropout),
                            *extra,
                        ],
                        store,
                    )
                )
                r = rounds[name][-1]
                print(f"{VARIANTS[name][0]:>22}: {r['wall_s']:7.1f} s  best {r['best_value']:.4f}")
    wall = {n: statistics.median(r["wall_s"] for r in rounds[n]) for n in names}
    base = wall.get("pool")
    report = {
        **header(load),
        "trials": args.trials,
        "epochs": args.epochs,
        "variants": {
            n: {
                "label": VARIANTS[n][0],
                "wall_s": wall[n],
                "trials_per_min": 60 * args.trials / wall[n],
                "pool_over_this": base / wall[n] if base else None,
                "rounds": rounds[n],
            }
            for n in names
        },
    }
    print(f"\n{'variant':>22}  {'wall s':>7}  {'trials/min':>10}  {'x pool':>6}  best val_loss")
    for n in names:
        v = report["variants"][n]
        ratio = f"{v['pool_over_this']:.2f}" if base else "-"
        print(
            f"{v['label']:>22}  {v['wall_s']:7.1f}  {v['trials_per_min']:10.1f}  {ratio:>6}  "
            f"{statistics.median(r['best_value'] for r in v['rounds']):.4f}"
        )
    suffix = "_no_dropout" if args.no_dropout else ""
    out = ROOT / "benchmarks" / "results" / f"population_search_{args.device}{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
