"""Per-job overhead of a sweep: a 20-job grid through `train.py -m` (Hydra, MLflow run per job,
checkpoint, plot) against the same 20 trainings in a plain Python loop (plain_loop.py), both as
whole commands, alternated over --repeats rounds.

    python benchmarks/sweep_overhead.py [--repeats 3] [--epochs 5] [--baseline TREE]

Reported: median wall time of each command and (sweep - plain) / 20 = added seconds per job,
which spreads the per-command costs (imports, MLflow store check, analysis plots) over the 20
jobs; and the marginal cost of one more job, from the gaps between consecutive job summary lines
in the sweep's log (jobs 2..20) minus the plain loop's time per training. Both with and without
the per-job learning-curve plot, and without the sweep's analysis plots; and the same 20
trainings as 20 trials of our Optuna sweeper (grid sampler over the same lr values: study
storage, ask/tell and per-epoch reports included).
The sweeps run against an MLflow store that already exists (a user's second sweep); creating a
store the first time is reported on its own. With --baseline, a checkout of another commit (e.g.
`git worktree add ../before <commit>`) runs the grid and the Optuna-sweeper commands too, in the
same rounds, with its own train.py and sources first on PYTHONPATH: before and after side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _report import train_env

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, tree: Path | None = None) -> tuple[float, float]:
    """Wall time, and the mean gap between consecutive job summary lines (0 if none). With
    `tree`, the command runs that checkout's sources."""
    start = time.perf_counter()
    env = train_env()
    if tree is not None:
        env["PYTHONPATH"] = str(tree / "src")
    out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in (out.stdout + out.stderr).splitlines()
        if "][hypersweep][" in line
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    if not gaps:  # the plain loop prints its own training time per job
        last = (out.stdout.strip().splitlines() or ["0"])[-1]
        return wall, float(last.rsplit(" ", 1)[-1]) if "per job" in last else 0.0
    return wall, statistics.mean(gaps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="a checkout of the commit to compare with")
    args = parser.parse_args()
    lrs = [round(10 ** (-4 + 3 * i / (args.jobs - 1)), 6) for i in range(args.jobs)]
    common = [
        f"trainer.max_epochs={args.epochs}",
        "trainer.batch_size=64",
        "model.hidden_units=64",
        "trainer.early_stopping.patience=10",
    ]
    sweep = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "lr=" + ",".join(map(str, lrs)),
        *common,
        "tracking.experiment=bench",
    ]
    plain = [
        sys.executable,
        str(ROOT / "benchmarks" / "plain_loop.py"),
        "--lrs",
        *map(str, lrs),
        "--epochs",
        str(args.epochs),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from hypersweep.tracking.store import prepare_store;"
                f"prepare_store('sqlite:///{cwd}/mlruns/mlflow.db')",
            ],
            check=True,
        )
        create = time.perf_counter() - start
        optuna = [
            *sweep[:3],
            "hydra/sweeper=hypersweep",
            "hydra/sweeper/sampler=grid",
            f"hydra.sweeper.n_trials={args.jobs}",
            f"lr=choice({','.join(map(str, lrs))})",
            *sweep[4:],
        ]
        variants: dict[str, tuple[list[str], Path | None]] = {
            "plain": (plain, None),
            "sweep": (sweep, None),
            "sweep, no learning-curve plot": ([*sweep, "tracking.learning_curve=false"], None),
            "sweep, no analysis plots": ([*sweep, "tracking.analysis_plots=false"], None),
            "optuna sweeper, grid sampler": (optuna, None),
        }
        if args.baseline is not None:
            tree = args.baseline.resolve()
            old_train = str(tree / "train.py")
            variants["sweep (baseline)"] = ([sys.executable, old_train, *sweep[2:]], tree)
            variants["optuna sweeper (baseline)"] = ([sys.executable, old_train, *optuna[2:]], tree)
        walls: dict[str, list[float]] = {k: [] for k in variants}
        gaps: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, (cmd, tree) in variants.items():
                wall, gap = timed(cmd, cwd, tree)
                walls[name].append(wall)
                gaps[name].append(gap)
                shutil.rmtree(cwd / "multirun", ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    train_each = statistics.median(gaps["plain"])  # seconds of training per job, no imports
    print(
        f"# {args.jobs} jobs x {args.epochs} epochs, digits MLP 64x2, batch 64; "
        f"{args.repeats} rounds, medians; creating a new MLflow store once: {create:.2f} s"
    )
    if args.baseline is not None:
        print(f"# baseline: {args.baseline.resolve()}")
    print(f"{'command':32s} {'wall s':>8s} {'added/job s':>12s} {'marginal/job s':>15s}")
    for name in variants:
        added = (med[name] - med["plain"]) / args.jobs
        marginal = statistics.median(gaps[name]) - train_each if name != "plain" else 0.0
        print(
            f"{name:32s} {med[name]:8.2f} {added:12.3f} {marginal:15.3f}   "
            f"(all: {', '.join(f'{t:.2f}' for t in walls[name])})"
        )
    print(
        f"marginal/job: gap between consecutive jobs' summary lines minus the plain loop's "
        f"{train_each:.3f} s of training per job"
    )


if __name__ == "__main__":
    main()
