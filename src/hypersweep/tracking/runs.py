"""One job's MLflow run (`JobRun`) and what goes on it.

Names logged here are an interface (README, "What MLflow holds"): params are the flattened resolved
config; per-epoch metrics are train_loss, val_loss, val_acc|val_rmse, lr, epoch_seconds; summary
metrics are best_*, best_epoch, epochs_run; the tag status_reason says why a job stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypersweep.tracking.store import CONTINUED_TAG, RESUME_TAG, mlflow_client, process_tags

log = logging.getLogger(__name__)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Resolved config as {"optimizer.lr": "0.01", ...}."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(node)}


@lru_cache(maxsize=1)
def run_tags_static() -> dict[str, str]:
    """Git commit and package versions: the same for every job of a process."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {}
    for pkg in ("hypersweep", "torch", "hydra-core", "optuna", "mlflow", "scikit-learn"):
        try:
            tags[f"version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        tags["git_commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        tags["git_commit"] = "unknown"
    return tags


class FlushBudget:
    """How much of a process's time its runs' buffered metric writes may take: a token bucket
    that refills at `share` seconds per second (at most `burst` seconds banked). A run flushes
    its buffer when its interval has passed and the bucket is not empty; each write spends its
    own duration. One job at a time never waits (a write of ~20 ms every 2 s is 1%); a
    population of hundreds of runs, each due every 2 s, writes in turn, each less often, so
    that logging stays near `share` of the wall time. A run's last flush (at its summary) is
    never held back."""

    def __init__(self, share: float = 0.05, burst: float = 0.5) -> None:
        self.share, self.burst = share, burst
        self.tokens, self.at = burst, time.monotonic()

    def allows(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.share)
        self.at = now
        return self.tokens > 0

    def spend(self, seconds: float) -> None:
        self.tokens -= seconds


FLUSHES = FlushBudget()


class JobRun:
    """One job's MLflow run: params and tags up front, per-epoch metrics buffered, artifacts at
    the end; the run is always terminated, FAILED or KILLED when the job does not finish."""

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        continue_run: str | None = None,
        flush_every_s: float = 2.0,
    ) -> None:
        """`continue_run`: the id of a preempted run this job continues (its params and the
        metrics of its finished epochs are there already): RUNNING again, under this job's
        name and tags."""
        from mlflow.entities import Param, RunTag

        self.client = mlflow_client(uri)
        if continue_run is None:
            self.run_id = self.client.create_run(
                experiment_id, run_name=run_name, tags={**tags, **process_tags()}
            ).info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        else:
            self.run_id = continue_run
            self.client.update_run(continue_run, status="RUNNING", name=run_name)
            now = {CONTINUED_TAG: str(int(time.time() * 1000))}
            tags = {**tags, **process_tags(), **now}
            self.client.log_batch(continue_run, tags=[RunTag(k, v) for k, v in tags.items()])
        self.flush_every_s = flush_every_s
        self._buffer: list = []
        self._last_flush = time.monotonic()

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_every_s and FLUSHES.allows():
            self.flush()

    def flush(self) -> None:
        started = time.monotonic()
        if self._buffer:
            self.client.log_batch(self.run_id, metrics=self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()
        FLUSHES.spend(self._last_flush - started)

    def log_summary(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        summary = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        # What is buffered goes with the summary: one write where the run ends (MLflow splits
        # a batch past its limits).
        self.client.log_batch(
            self.run_id,
            metrics=self._buffer + summary,
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        self._buffer = []

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def mark_preempted(self, state: Path, epoch: int) -> None:
        """Stopped by a signal with its state saved at `state`: what `hypersweep` and the same
        command need to continue it."""
        from mlflow.entities import RunTag

        self.flush()
        tags = {"status_reason": "preempted", RESUME_TAG: str(state), "preempted_epoch": str(epoch)}
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def continued(self) -> None:
        """A continued run finished: no state is left to continue from."""
        self.client.delete_tag(self.run_id, RESUME_TAG)

    def __enter__(self) -> JobRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from hypersweep.core.preemption import Preempted

        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, Preempted):  # mark_preempted said why
            status = "KILLED"
        else:
            killed = issubclass(exc_type, KeyboardInterrupt)
            status = "KILLED" if killed else "FAILED"
            try:
                self.flush()
                # a job's error may say why itself (job.TimedOut: timed_out)
                reason = "interrupted" if killed else getattr(exc, "status_reason", "failed")
                self.client.set_tag(self.run_id, "status_reason", reason)
                if exc is not None:
                    self.client.set_tag(self.run_id, "error", f"{exc_type.__name__}: {exc}"[:5000])
            except Exception:  # noqa: BLE001 - never mask the job's own error
                log.exception("could not record the failure in MLflow")
        self.client.set_terminated(self.run_id, status)


def download_checkpoint(tracking_uri: str, run_id: str, dest: str | os.PathLike) -> Path:
    """Fetch a run's `checkpoints/best.pt` from MLflow into `dest`."""
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(
        run_id=run_id,
        artifact_path="checkpoints/best.pt",
        dst_path=str(dest),
        tracking_uri=tracking_uri,
    )
    return Path(local)


def load_run_checkpoint(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """A run's best checkpoint, fetched from MLflow and loaded (nothing left on disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        from hypersweep.core.checkpoint import load_checkpoint

        return load_checkpoint(download_checkpoint(tracking_uri, run_id, tmp))
