"""One search on each scale-out engine, whole `train.py -m` commands on this machine, 2 trials at
a time: the pool (`hypersweep_pool`, n_jobs=2, the baseline), Ray (`hypersweep_ray` on a local
instance of 2 CPUs), submitit's local executor (`submitit_local`, batches of 2), and two
cooperating commands on one PostgreSQL study (each one trial at a time in its own process).

24 trials of the digits MLP (random sampler, one seed), each with its MLflow run in a local
SQLite store (a copy of one migrated store, shared by the two PostgreSQL commands), checkpoint
and plots; a fresh directory per command, and a fresh database for each PostgreSQL round (the
throwaway cluster of tests/services.py). Reported: the median wall time of each engine, its
ratio to the pool, and its per-trial overhead against the pool, (wall - pool wall) / trials.

    python benchmarks/scale_out.py [--trials 24] [--epochs 5] [--repeats 1]
        [--engines pool,ray,submitit,postgres]
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

from _report import copy_store, header, migrated_store, train_env

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {
    "pool": ("pool, n_jobs=2", ["hydra/launcher=hypersweep_pool", "hydra.launcher.n_jobs=2"]),
    "ray": ("Ray, 2 slots", ["hydra/launcher=hypersweep_ray", "+hydra.launcher.init.num_cpus=2"]),
    "submitit": (
        "submitit_local, 2 at once",
        [
            "hydra/launcher=submitit_local",
            "hydra.sweeper.n_jobs=2",
            "hydra.launcher.cpus_per_task=1",
        ],
    ),
    "postgres": ("2 commands, PostgreSQL", []),
}


def search(trials: int, epochs: int) -> list[str]:
    return [
        "-m",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=bench",
        "data=digits",
        "lr=tag(log, interval(1e-3, 1e-1))",
        "model.hidden_units=choice(32, 64, 128)",
        f"trainer.max_epochs={epochs}",
        "trainer.num_threads=1",
        "trainer.device=cpu",
        "tracking.experiment=bench",
    ]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(engine: str, trials: int, epochs: int, store: Path) -> float:
    """The wall time of one engine's whole command(s), from the first start to the last exit."""
    with tempfile.TemporaryDirectory(prefix="hs-scalebench-") as tmp:
        cwd = Path(tmp)
        copy_store(store, cwd)
        args = [*search(trials, epochs), *ENGINES[engine][1]]
        if engine != "postgres":
            start = time.perf_counter()
            procs = [_start(args, cwd)]
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            from services import postgres_cluster

            cluster = postgres_cluster(["optuna"])
            base = cluster.__enter__()
            tracking = f"tracking.uri=sqlite:///{cwd / 'mlruns' / 'mlflow.db'}"
            shared = [*args, f"hydra.sweeper.storage={base}/optuna", tracking]
            start = time.perf_counter()
            procs = []
            for worker in ("a", "b"):
                (cwd / worker).mkdir()
                procs.append(_start(shared, cwd / worker))
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        if engine == "postgres":
            cluster.__exit__(None, None, None)
        for p, out in zip(procs, outputs, strict=True):
            if p.returncode != 0:
                raise SystemExit(f"{engine} failed:\n{out[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engines", default="pool,ray,submitit,postgres")
    args = parser.parse_args()
    names = args.engines.split(",")
    load = os.getloadavg()[0]
    with migrated_store() as store:
        walls: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeats):
            for name in names:
                walls[name].append(run(name, args.trials, args.epochs, store))
                print(f"{ENGINES[name][0]:>26}: {walls[name][-1]:7.1f} s", flush=True)
    wall = {n: statistics.median(w) for n, w in walls.items()}
    pool = wall.get("pool")
    report = {**header(load), "trials": args.trials, "epochs": args.epochs, "engines": {}}
    print(f"\n{'engine':>26}  {'wall s':>7}  {'x pool':>6}  {'overhead s/trial vs pool':>24}")
    for n in names:
        ratio = wall[n] / pool if pool else None
        extra = (wall[n] - pool) / args.trials if pool else None
        report["engines"][n] = {
            "label": ENGINES[n][0],
            "wall_s": round(wall[n], 1),
            "rounds_s": [round(w, 1) for w in walls[n]],
            "over_pool": round(ratio, 2) if ratio else None,
            "overhead_s_per_trial_vs_pool": round(extra, 3) if extra is not None else None,
        }
        shown = f"{ratio:6.2f}  {extra:24.3f}" if pool else ""
        print(f"{ENGINES[n][0]:>26}  {wall[n]:7.1f}  {shown}")
    out = ROOT / "benchmarks" / "results" / "scale_out.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
