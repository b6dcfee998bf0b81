"""Where a sweep's wall time goes: runs `train.py` in this process with a wall-clock timer around
each function named below (Hydra's per-job steps, the job's set-up, training and recording, the
MLflow writes, the sweeper's asks, the sweep's start and end), and prints each one's total, its
calls and its time per call. Timers are inclusive (a function's time contains the timed
functions it calls) and cost ~1 µs a call, so the command runs at its own speed, unlike under
a profiler.

    python benchmarks/wall_breakdown.py -- -m search=hyperband hydra.sweeper.n_trials=100 \\
        hydra.sweeper.study_name=cost-0 [hydra/launcher=population hydra.launcher.size=16]

Run it in a fresh directory (the sweep writes mlruns/ and multirun/ where it runs); `--out F`
writes the table as JSON too.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import functools
import importlib
import json
import os
import runpy
import sys
import time
from pathlib import Path

from _report import header

ROOT = Path(__file__).resolve().parents[1]
TIMED = (
    # Hydra: composing each job, and run_job's own steps
    "hydra._internal.config_loader_impl:ConfigLoaderImpl.load_sweep_config",
    "hydra.core.utils:run_job",
    "hydra.core.hydra_config:HydraConfig.set_config",
    "hydra.core.utils:_save_config",
    "hydra.core.utils:configure_log",
    # the job
    "hypersweep.config:validate",
    "hypersweep.job:Job.__init__",
    "hypersweep.build:members",
    "hypersweep.job:Job.fit",
    "hypersweep.core.fit:fit_members",
    "hypersweep.core.population:fit_population",
    "hypersweep.core.population:Population.epoch",
    "hypersweep.core.population:Population.add",
    "hypersweep.core.population:Population.admits",
    "hypersweep.job:Job.record",
    "hypersweep.core.checkpoint:save_checkpoint",
    # its MLflow run
    "hypersweep.tracking.runs:JobRun.__init__",
    "hypersweep.tracking.runs:JobRun.flush",
    "hypersweep.tracking.runs:JobRun.log_summary",
    "hypersweep.tracking.runs:JobRun.log_artifact",
    "hypersweep.tracking.runs:JobRun.__exit__",
    # the sweep
    "hydra_plugins.hypersweep_sweeper._impl:HypersweepSweeperImpl._ask_batch",
    "hydra_plugins.hypersweep_sweeper._impl:HypersweepSweeperImpl._ask_like",
    "hydra_plugins.hypersweep_sweeper._impl:HypersweepSweeperImpl._tell_and_check",
    "hydra_plugins.hypersweep_sweeper.population:PopulationLauncher._end",
    "hypersweep.tracking.callback:SweepTracking.on_multirun_start",
    "hypersweep.tracking.callback:SweepTracking.on_multirun_end",
)


def timer(spec: str, totals: dict[str, float], calls: collections.Counter) -> None:
    """Replace `module:Class.function` by the same function with a timer around it."""
    module, qualname = spec.split(":")
    *path, name = qualname.split(".")
    owner = importlib.import_module(module)
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[spec] += time.perf_counter() - started
            calls[spec] += 1

    setattr(owner, name, timed)
    if not path:  # a function imported by name elsewhere (`from m import f`) is timed there too
        for other in list(sys.modules.values()):
            if other is not None and getattr(other, name, None) is original:
                setattr(other, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, help="also write the table here, as JSON")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's args")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    load = os.getloadavg()[0]
    sys.path.insert(0, str(ROOT))
    totals: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    started = time.perf_counter()

    @atexit.register  # Hydra ends the command with sys.exit
    def report() -> None:
        wall = time.perf_counter() - started
        rows = [
            {"function": k, "total_s": v, "calls": calls[k], "ms_per_call": 1e3 * v / calls[k]}
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
        ]
        print(f"\nwall {wall:.2f} s for train.py {' '.join(train_args)}", file=sys.stderr)
        for r in rows:
            print(
                f"{r['total_s']:8.2f} s {r['calls']:6d} calls {r['ms_per_call']:9.2f} ms  "
                f"{r['function']}",
                file=sys.stderr,
            )
        if args.out:
            report = {**header(load), "wall_s": wall, "train_args": train_args, "rows": rows}
            args.out.write_text(json.dumps(report, indent=1) + "\n")

    for spec in TIMED:
        timer(spec, totals, calls)
    sys.argv = [str(ROOT / "train.py"), *train_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
