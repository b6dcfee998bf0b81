"""What a tracked search costs beyond its training: whole commands, side by side on the same
trials. For each sampler seed:

1. `python train.py -m search=hyperband hydra.sweeper.n_trials=N` (one trial at a time, every
   run in MLflow with its checkpoint, the study in its journal), then `hypersweep best` (rank on
   validation, test the best once, register it);
2. `python benchmarks/plain_optuna.py` with the sweep's study name: the same search by hand,
   Optuna and PyTorch only, in memory.

Then it checks that both ran the same trials: params, states, objective values and every
per-epoch value reported to the pruner, exactly. Each command runs in a fresh directory (the
sweep against a copy of one migrated MLflow store, whose creation is not timed).

    python benchmarks/search_cost.py [--trials 100] [--seeds 0 1]

Results: benchmarks/results/search_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(command: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return wall


def sweep_trials(cwd: Path, study_name: str) -> list[dict]:
    sys.path.insert(0, str(ROOT / "src"))
    import optuna

    from hypersweep.search.pruning import open_storage

    storage = open_storage(str(cwd / "multirun" / "optuna.journal"))
    study = optuna.load_study(study_name=study_name, storage=storage)
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        }
        for t in study.trials
    ]


def differences(ours: list[dict], plain: list[dict]) -> list[str]:
    if len(ours) != len(plain):
        return [f"{len(ours)} trials against {len(plain)}"]
    found = []
    for a, b in zip(ours, plain, strict=True):
        for key in ("params", "state", "value", "intermediate"):
            if a[key] != b[key]:
                found.append(f"trial {a['number']}: {key} {a[key]!r} != {b[key]!r}")
    return found


def one_seed(seed: int, trials: int, store: Path) -> dict:
    name = f"cost-{seed}"
    with tempfile.TemporaryDirectory(prefix="hs-cost-") as tmp:
        cwd = Path(tmp)
        (cwd / "mlruns").mkdir()
        shutil.copy(store, cwd / "mlruns" / "mlflow.db")
        sweep = [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "search=hyperband",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.study_name={name}",
        ]
        sweep_s = timed(sweep, cwd)
        best_s = timed([str(BIN / "hypersweep"), "best"], cwd)
        ours = sweep_trials(cwd, name)
        out = cwd / "plain.json"
        plain_cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_optuna.py")]
        plain_cmd += ["--study-name", name, "--trials", str(trials), "--seed", str(seed)]
        plain_s = timed([*plain_cmd, "--out", str(out)], cwd)
        plain = json.loads(out.read_text())
    diff = differences(ours, plain)
    states = {s: sum(t["state"] == s for t in ours) for s in ("COMPLETE", "PRUNED", "FAIL")}
    result = {
        "seed": seed,
        "sweep_s": sweep_s,
        "best_s": best_s,
        "plain_s": plain_s,
        "sweep_over_plain": sweep_s / plain_s,
        "sweep_and_best_over_plain": (sweep_s + best_s) / plain_s,
        "states": states,
        "epochs": sum(len(t["intermediate"]) for t in ours),
        "same_trials": not diff,
        "differences": diff[:10],
    }
    print(
        f"seed {seed}: sweep {sweep_s:.1f} s, best {best_s:.1f} s, plain {plain_s:.1f} s: "
        f"{result['sweep_over_plain']:.2f}x ({result['sweep_and_best_over_plain']:.2f}x with "
        f"best); {states}, {result['epochs']} epochs; same trials: {not diff}"
    )
    for line in diff[:5]:
        print("   ", line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mlflow.db"
        sys.path.insert(0, str(ROOT / "src"))
        from hypersweep.tracking.store import prepare_store

        prepare_store(f"sqlite:///{store}")
        results = [one_seed(seed, args.trials, store) for seed in args.seeds]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": load,
        "command": "python benchmarks/search_cost.py " + " ".join(sys.argv[1:]),
        "trials": args.trials,
        "seeds": results,
    }
    out = ROOT / "benchmarks" / "results" / "search_cost.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
