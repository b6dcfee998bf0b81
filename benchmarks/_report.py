"""What the benchmarks share: the header every result file starts with (when, where and how
it was measured), and the MLflow store and environment each timed `train.py` command gets."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def header(load_average_before: float) -> dict:
    """The date, the machine, the load before the run, and the command as it was typed."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": load_average_before,
        "command": f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
    }


def train_env() -> dict[str, str]:
    """The caller's environment without MLFLOW_TRACKING_URI: each command tracks to the store
    in its own directory."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


@contextlib.contextmanager
def migrated_store() -> Iterator[Path]:
    """An MLflow SQLite store with its tables created, to copy into each command's directory
    (`copy_store`): what a user's second sweep finds; its creation (~3 s) is not timed."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mlflow.db"
        sys.path.insert(0, str(ROOT / "src"))
        from hypersweep.tracking.store import prepare_store

        prepare_store(f"sqlite:///{store}")
        yield store


def copy_store(store: Path, cwd: Path) -> None:
    """`cwd/mlruns/mlflow.db`, the default store of a command run in `cwd`, as a copy of
    `store`."""
    (cwd / "mlruns").mkdir()
    shutil.copy(store, cwd / "mlruns" / "mlflow.db")
