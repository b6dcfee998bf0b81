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

    python benchmarks/search_cost.py [--trials 100] [--seeds 0 1] [--baseline TREE]
                                     [--population K ...]

With --population, the same search also runs with `hydra/launcher=population
hydra.launcher.size=K` for each K (then `hypersweep best`): each batch of K trials trains as one
stacked model, a freed slot taking the next trial at once; with --batches, each size runs
in batches too (`hydra.launcher.refill=false`: a batch waits for its last member). Its trials
are not the one-at-a-time search's (K trials at a time share one structure), so it is compared
by its time against the plain script's and by what it selects: the best trial's val_loss and
the test accuracy `hypersweep best` measures.

With --baseline, a checkout of another commit (`git worktree add ../before <commit>`) runs the
sweep and `hypersweep best` too, with its own train.py and sources first on PYTHONPATH, beside
the others for each seed: before and after in one run.

Results: benchmarks/results/search_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import copy_store, header, migrated_store, train_env

ROOT = Path(__file__).resolve().parents[1]
BEST = ["-c", "import sys; from hypersweep.cli import main; sys.exit(main())", "best"]


def timed(command: list[str], cwd: Path, tree: Path | None = None) -> tuple[float, str]:
    env = train_env()
    if tree is not None:
        env["PYTHONPATH"] = str(tree / "src")
    start = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return wall, out.stdout + out.stderr


def sweep_trials(cwd: Path, study_name: str) -> list[dict]:
    sys.path.insert(0, str(ROOT / "src"))
    import optuna

    from hypersweep.search.pruning import open_storage

    storage = open_storage(str(cwd / "multirun" / "optuna.journal"))
    study = optuna.load_study(study_name=study_name, storage=storage)
    from plain_optuna import records

    return records(study.trials)


def differences(ours: list[dict], plain: list[dict]) -> list[str]:
    if len(ours) != len(plain):
        return [f"{len(ours)} trials against {len(plain)}"]
    found = []
    for a, b in zip(ours, plain, strict=True):
        for key in ("params", "state", "value", "intermediate"):
            if a[key] != b[key]:
                found.append(f"trial {a['number']}: {key} {a[key]!r} != {b[key]!r}")
    return found


def sweep_and_best(
    tree: Path, seed: int, trials: int, store: Path, name: str, extra: tuple[str, ...] = ()
) -> tuple[float, float, list[dict], float]:
    """The sweep, then `hypersweep best`, of the checkout `tree`, in a fresh directory; with
    the trials and the test accuracy `best` printed."""
    with tempfile.TemporaryDirectory(prefix="hs-cost-") as tmp:
        cwd = Path(tmp)
        copy_store(store, cwd)
        sweep = [
            sys.executable,
            str(tree / "train.py"),
            "-m",
            "search=hyperband",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.study_name={name}",
            *extra,
        ]
        sweep_s, _ = timed(sweep, cwd, tree)
        best_s, said = timed([sys.executable, *BEST], cwd, tree)
        return sweep_s, best_s, sweep_trials(cwd, name), test_accuracy(said)


def test_accuracy(said: str) -> float:
    """The test accuracy in `hypersweep best`'s line `best run ...; test_acc=0.98  ...`."""
    found = re.search(r"test_acc=([0-9.]+)", said)
    if found is None:
        raise SystemExit(f"no test_acc in the output of hypersweep best:\n{said[-2000:]}")
    return float(found.group(1))


def states_of(trials: list[dict]) -> dict[str, int]:
    return {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}


def best_value(trials: list[dict]) -> float:
    return min(t["value"] for t in trials if t["state"] == "COMPLETE")


def one_seed(
    seed: int,
    trials: int,
    store: Path,
    baseline: Path | None,
    sizes: list[int],
    batches: bool = False,
) -> dict:
    name = f"cost-{seed}"
    sweep_s, best_s, ours, test_acc = sweep_and_best(ROOT, seed, trials, store, name)
    with tempfile.TemporaryDirectory(prefix="hs-plain-") as tmp:
        out = Path(tmp) / "plain.json"
        plain_cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_optuna.py")]
        plain_cmd += ["--study-name", name, "--trials", str(trials), "--seed", str(seed)]
        plain_s, _ = timed([*plain_cmd, "--out", str(out)], Path(tmp))
        plain = json.loads(out.read_text())
    diff = differences(ours, plain)
    states = states_of(ours)
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
        "best_val_loss": best_value(ours),
        "test_acc": test_acc,
    }
    print(
        f"seed {seed}: sweep {sweep_s:.1f} s, best {best_s:.1f} s, plain {plain_s:.1f} s: "
        f"{result['sweep_over_plain']:.2f}x ({result['sweep_and_best_over_plain']:.2f}x with "
        f"best); {states}, {result['epochs']} epochs; same trials: {not diff}"
    )
    for line in diff[:5]:
        print("   ", line)
    result["population"] = []
    for size, refill in [(k, r) for k in sizes for r in ((True, False) if batches else (True,))]:
        extra = ("hydra/launcher=population", f"hydra.launcher.size={size}")
        if not refill:
            extra = (*extra, "hydra.launcher.refill=false")
        pop_s, pop_best_s, pop, pop_acc = sweep_and_best(ROOT, seed, trials, store, name, extra)
        row = {
            "size": size,
            "refill": refill,
            "sweep_s": pop_s,
            "best_s": pop_best_s,
            "sweep_over_plain": pop_s / plain_s,
            "states": states_of(pop),
            "epochs": sum(len(t["intermediate"]) for t in pop),
            "best_val_loss": best_value(pop),
            "test_acc": pop_acc,
        }
        result["population"].append(row)
        print(
            f"   population of {size}{'' if refill else ' in batches'}: sweep {pop_s:.1f} s "
            f"({row['sweep_over_plain']:.2f}x the "
            f"plain script), best {pop_best_s:.1f} s; {row['states']}, {row['epochs']} epochs; "
            f"best val_loss {row['best_val_loss']:.4f} (one at a time "
            f"{result['best_val_loss']:.4f}), test_acc {pop_acc:.4f} ({test_acc:.4f})"
        )
    if baseline is not None:
        old_sweep, old_best, old, _ = sweep_and_best(baseline, seed, trials, store, name)
        result.update(
            baseline_sweep_s=old_sweep,
            baseline_best_s=old_best,
            baseline_sweep_over_plain=old_sweep / plain_s,
            baseline_same_trials=not differences(old, plain),
        )
        print(
            f"   baseline: sweep {old_sweep:.1f} s ({old_sweep / plain_s:.2f}x), best "
            f"{old_best:.1f} s; same trials: {result['baseline_same_trials']}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--baseline", type=Path, help="a checkout of the commit to compare with")
    parser.add_argument(
        "--population", type=int, nargs="*", default=[], help="population sizes to run as well"
    )
    parser.add_argument(
        "--batches",
        action="store_true",
        help="each population size also in batches (hydra.launcher.refill=false)",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with migrated_store() as store:
        baseline = args.baseline.resolve() if args.baseline else None
        results = [
            one_seed(seed, args.trials, store, baseline, args.population, args.batches)
            for seed in args.seeds
        ]
    report = {
        **header(load),
        "trials": args.trials,
        "baseline": str(args.baseline) if args.baseline else None,
        "seeds": results,
    }
    out = ROOT / "benchmarks" / "results" / "search_cost.json"
    if args.population:
        out = out.with_name("search_cost_population.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
