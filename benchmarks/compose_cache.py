"""Composing one job's config as Hydra's launcher does (`load_sweep_config`): as Hydra does it
(baseline: every file parsed, the defaults list built and the files merged per job) and with the
sweepers' cache of parsed files, defaults lists and merges (hypersweep.search.compose_cache),
side by side in one process, rounds interleaved.

    python benchmarks/compose_cache.py --jobs 40 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode

from hypersweep.search.compose_cache import share_parsed_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
SWEEP = [
    "hydra/sweeper=hypersweep",
    "hydra/sweeper/sampler=tpe",
    "data=digits",
    "optimizer=adam",
    "trainer.max_epochs=50",
]


def job(i: int) -> list[str]:
    """A trial's overrides, as the Optuna sweeper writes them."""
    return [
        *SWEEP,
        f"lr={1e-3 * (1 + i % 7)}",
        f"model.hidden_units={16 + i}",
        f"model.depth={1 + i % 2}",
        f"trainer.batch_size={(32, 128)[i % 2]}",
    ]


def seconds_per_job(shared: bool, jobs: int) -> float:
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(f"file://{CONF}"))
    master = loader.load_configuration("config", overrides=SWEEP, run_mode=RunMode.MULTIRUN)
    if shared:
        share_parsed_configs(loader)
    started = time.perf_counter()
    for i in range(jobs):
        loader.load_sweep_config(master, job(i))
    return (time.perf_counter() - started) / jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    seconds_per_job(True, 2)  # warm imports
    times: dict[str, list[float]] = {"hydra": [], "sweep cache": []}
    for _ in range(args.repeats):
        times["hydra"].append(seconds_per_job(False, args.jobs))
        times["sweep cache"].append(seconds_per_job(True, args.jobs))
    base = statistics.median(times["hydra"])
    print(f"# {args.jobs} job configs composed per round, {args.repeats} rounds, medians")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:14s} {median * 1000:6.1f} ms per job  ({base / median:.2f}x)  "
            f"(all: {', '.join(f'{v * 1000:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
