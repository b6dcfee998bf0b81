"""The MLflow store: checked and set up once per command, experiments, and the runs a dead
process left RUNNING (closed KILLED, status_reason=interrupted).

The launching process creates the store, the experiment and the parent run before any job
starts (`callback.SweepTracking.on_multirun_start`): parallel writers that race to migrate a
fresh SQLite store corrupt it, and a concurrent set_experiment silently falls back to the Default
experiment.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypersweep.errors import ConfigError

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri() -> str:
    """The store commands use when none is named: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db
    (what conf/tracking/local.yaml gives a job run from here)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlruns/mlflow.db')}"
    )


def mlflow_client(uri: str):
    """An MlflowClient for `uri` (MLflow is imported on first use, off the start-up path)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Commands started together on one fresh SQLite store take turns creating its tables and
    experiments (MLflow's migrations and create_experiment race: "table ... already exists")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# How long a tracking server gets to accept a connection before the command gives up on it.
STORE_TIMEOUT_S = 5.0


def check_store(uri: str, artifact_root: str | None) -> None:
    """Fail in seconds, in one line, where the store cannot work: a server that does not
    answer (MLflow itself would retry for minutes), or a store or artifact directory that
    cannot be written (MLflow would fail deep inside a migration or an upload)."""
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=STORE_TIMEOUT_S).close()
        except OSError as e:
            raise ConfigError(
                f"tracking.uri={uri!r} is not reachable ({e.strerror or e}): expected a "
                "running MLflow server there (`mlflow server`), or tracking=local"
            ) from None
        return
    if uri.startswith("sqlite:///"):
        _check_writable("tracking.uri", uri, Path(uri[len("sqlite:///") :]), is_file=True)
    if artifact_root:
        _check_writable("tracking.artifact_root", artifact_root, Path(artifact_root))


def _check_writable(key: str, value: str, path: Path, is_file: bool = False) -> None:
    """Create the directory if needed and write a scratch file in it: what the store will do
    (a permission check alone would pass for root on a read-only file system)."""
    directory = path.parent if is_file else path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        if is_file and path.exists():
            with open(path, "r+b"):
                pass
    except OSError as e:
        where = e.filename or directory
        raise ConfigError(
            f"{key}={value!r} is not writable ({e.strerror or e}: {where}): expected a place "
            "this user can create and write files in"
        ) from None


def prepare_store(uri: str, artifact_root: str | None = None) -> None:
    """Check the store (`check_store`), create it (runs migrations once) and switch SQLite to
    WAL for concurrent writers."""
    check_store(uri, artifact_root)
    with _store_lock(uri):
        mlflow_client(uri).search_experiments(max_results=1)
        if uri.startswith("sqlite:///"):
            with sqlite3.connect(uri[len("sqlite:///") :]) as con:
                con.execute("PRAGMA journal_mode=WAL")


def experiment_id(uri: str, name: str, artifact_root: str | None) -> str:
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    with _store_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = Path(artifact_root, name.replace("/", "_")).as_uri() if artifact_root else None
        # MLflow 3's UI opens experiments of this kind on the runs table, not the GenAI overview.
        kind = {"mlflow.experimentKind": "custom_model_development"}
        try:
            return client.create_experiment(name, artifact_location=location, tags=kind)
        except MlflowException:  # another command's, just created (a server or RDB store)
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def close_interrupted_trial_runs(uri: str, study_name: str, trial_number: int) -> None:
    """Mark KILLED the RUNNING runs of a trial whose process died (a killed sweep)."""
    _close_running(
        uri, f"tags.study_name = '{study_name}' and tags.trial_number = '{trial_number}'"
    )


def _close_running(
    uri: str, filter_string: str, keep: Callable[[Any], bool] = lambda run: False
) -> list[str]:
    """Set KILLED with status_reason=interrupted the RUNNING runs (of any experiment) that match
    `filter_string`, except those `keep` spares. Returns the ids closed."""
    client = mlflow_client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments,
        filter_string=f"attributes.status = 'RUNNING' and {filter_string}",
        max_results=5000,
    )
    from mlflow.exceptions import MlflowException

    closed = []
    for run in runs:
        if keep(run):
            continue
        try:
            client.set_tag(run.info.run_id, "status_reason", "interrupted")
        except MlflowException:  # its job, interrupted too, is tagging it at this moment
            log.debug("run %s: its job tagged it first", run.info.run_id)
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


HOST_TAG, PID_TAG = "hypersweep.host", "hypersweep.pid"
# A preempted run: where its state is; when another process took it up again (ms).
RESUME_TAG, CONTINUED_TAG = "resume_state", "hypersweep.continued_ms"


def process_tags() -> dict[str, str]:
    """Which process owns a run: lets a later command close it if that process died."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_alive(pid: int, since_ms: int) -> bool:
    """Whether process `pid` runs and started before `since_ms` (a later one reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started_s = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc (macOS): trust the pid
    return started_s * 1000 <= since_ms + 2000


def close_orphaned_runs(uri: str) -> list[str]:
    """Mark KILLED (status_reason=interrupted) the RUNNING runs that a process on this machine
    created and that process is gone: a sweep or job killed with SIGKILL, or a machine that
    went down, cannot close its own runs. Runs of live processes and of other machines are left
    alone. Returns the ids closed."""
    host = socket.gethostname().replace("'", "")

    def owner_lives(run: Any) -> bool:
        pid = run.data.tags.get(PID_TAG, "")
        # A preempted run that another process continues: that process started later.
        since = max(run.info.start_time, int(run.data.tags.get(CONTINUED_TAG, "0") or 0))
        return not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid), since)

    closed = _close_running(uri, f"tags.`{HOST_TAG}` = '{host}'", keep=owner_lives)
    if closed:
        log.warning("Closed %d run(s) left RUNNING by a process that died: KILLED", len(closed))
    return closed


def preempted_state_path(uri: str, run_id: str) -> str | None:
    """Where a preempted run (KILLED, status_reason=preempted) left its state; None for any
    other run."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client(uri).get_run(run_id)
    except MlflowException:
        return None
    tags = run.data.tags
    if run.info.status != "KILLED" or tags.get("status_reason") != "preempted":
        return None
    return tags.get(RESUME_TAG)


def run_exists(uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def run_params(uri: str, run_id: str) -> dict[str, str]:
    """A run's params."""
    return dict(mlflow_client(uri).get_run(run_id).data.params)
