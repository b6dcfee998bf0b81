"""MLflow: the store, one experiment and parent run per sweep, one child run per job.

Names logged here are an interface (README, "What MLflow holds"): params are the flattened resolved
config; per-epoch metrics are train_loss, val_loss, val_acc|val_rmse, lr, epoch_seconds; summary
metrics are best_*, best_epoch, epochs_run; the tag status_reason says why a job stopped.

The launching process creates the store, the experiment and the parent run before any job
starts (`SweepTracking.on_multirun_start`): parallel writers that race to migrate a fresh SQLite
store corrupt it, and a concurrent set_experiment silently falls back to the Default experiment.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hypersweep import errors
from hypersweep.errors import ConfigError, exit_with

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in the sweep dir: where jobs find the experiment and parent
PARENT_TAG = "mlflow.parentRunId"


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


def selection_key(metrics: dict[str, float], metric: str, mode: str) -> tuple[float, float]:
    """Sort key, best first: the metric, then the validation loss at the best epoch. Accuracy
    on a validation split of a few hundred rows moves in steps of one row, so ties are common;
    the loss of the same predictions tells them apart."""
    value = metrics[metric] if mode == "min" else -metrics[metric]
    return value, tie_break(metrics)


def tie_break(metrics: dict[str, float]) -> float:
    """What decides between runs tied on the selection metric: the lower validation loss."""
    return metrics.get("best_val_loss", math.inf)


def ranked_runs(runs: list[Any], metric: str, mode: str) -> list[Any]:
    """The runs that have a finite `metric` and a model to select, best first (selection_key):
    not pruned, and not a cross-validation whose refit on train+val diverged or was skipped."""
    scored = [
        r
        for r in runs
        if math.isfinite(r.data.metrics.get(metric, math.nan))
        and r.data.tags.get("status_reason") != "pruned"
        and r.data.tags.get("refit") not in ("diverged", "skipped")
    ]
    return sorted(scored, key=lambda r: selection_key(r.data.metrics, metric, mode))


def finished_children(
    client: Any, experiment_id: str, parent_run_id: str, where: str = ""
) -> list[Any]:
    """The finished job runs of the sweep `parent_run_id`, narrowed by the MLflow filter
    `where` if given."""
    filter_string = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" + (f" and {where}" if where else "")
    runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=50000)
    return [r for r in runs if r.info.status == "FINISHED"]


def outranking_run(
    uri: str,
    experiment_id: str,
    parent_run_id: str,
    metrics: dict[str, float],
    metric: str,
    mode: str,
) -> str | None:
    """The id of a finished run of the sweep `parent_run_id` that has a model and ranks strictly
    above `metrics` as `hypersweep best` ranks (selection_key), or None. Runs still running do
    not count: two jobs finishing together both stay candidates. Only runs at least as good on
    `metric` are fetched (the store filters them: fetching a 100-run sweep took ~0.4 s)."""
    at_least = ">=" if mode == "max" else "<="
    finished = finished_children(
        mlflow_client(uri),
        experiment_id,
        parent_run_id,
        f"metrics.`{metric}` {at_least} {float(metrics[metric])!r}",
    )
    ranked = ranked_runs(finished, metric, mode)
    mine = selection_key(metrics, metric, mode)
    if ranked and selection_key(ranked[0].data.metrics, metric, mode) < mine:
        return ranked[0].info.run_id
    return None


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


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, str] | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def experiment_name(cfg: DictConfig) -> str:
    """tracking.experiment if set; else the study name (Optuna sweeps), the sweep dir (grid
    sweeps) or the job name (single runs)."""
    explicit = cfg.tracking.get("experiment")
    if explicit:
        return str(explicit)
    from hydra.core.hydra_config import HydraConfig

    from hypersweep.study import STUDY_ENV

    if os.environ.get(STUDY_ENV):  # a job of an Optuna sweep
        return os.environ[STUDY_ENV]
    hydra_cfg = cfg.hydra if "hydra" in cfg else HydraConfig.get()
    if "hydra" in cfg and _is_hypersweep(cfg):
        from hypersweep.study import study_name_for

        return study_name_for(cfg)
    if str(hydra_cfg.mode) == "RunMode.MULTIRUN":
        return os.path.relpath(os.path.abspath(hydra_cfg.sweep.dir))
    return str(hydra_cfg.job.name)


class SweepTracking(Callback):
    """Hydra callback: one experiment and one parent run per multirun, created before any job;
    at the end the parent gets the best job and the analysis plots."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = config.tracking.uri
        try:
            prepare_store(uri, config.tracking.artifact_root)
        except ConfigError as e:
            raise exit_with(e) from None
        close_orphaned_runs(uri)
        exp_id = experiment_id(uri, experiment_name(config), config.tracking.artifact_root)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        client = mlflow_client(uri)
        run = client.create_run(
            exp_id,
            run_name=f"sweep {sweep_dir.name}",
            tags={
                "sweep": "true",
                "sweep_dir": str(sweep_dir.resolve()),
                "overrides": " ".join(overrides),
                **run_tags_static(),
                **process_tags(),
            },
        )
        from mlflow.entities import Param

        params = sweep_params(config)
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        info = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": run.info.run_id}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))
        self._parent = (uri, run.info.run_id)
        atexit.register(self._close, "FAILED")
        errors.on_reject(lambda: self._close("FAILED", rejected=True))
        log.info("MLflow experiment %s, sweep run %s", exp_id, run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra 1.4 calls this from a `finally`, also when the sweep raised (1.3 does not): a
        # sweep that stopped on an error or Ctrl-C is FAILED, as on 1.3 (atexit), unsummarized.
        if sys.exc_info()[0] is not None:
            self._close("FAILED")
            return
        if self._parent:
            uri, run_id = self._parent
            try:
                summarize_sweep(uri, run_id, config)
            finally:
                self._close("FINISHED")

    def _close(self, status: str, rejected: bool = False) -> None:
        """End the parent run; KILLED with status_reason=preempted after SIGTERM or Ctrl-C
        (hypersweep.preemption), whatever `status` the caller meant."""
        from hypersweep import preemption

        if self._parent:
            uri, run_id = self._parent
            self._parent = None
            client = mlflow_client(uri)
            if rejected:
                experiment = client.get_run(run_id).info.experiment_id
                children = f"tags.`{PARENT_TAG}` = '{run_id}'"
                if not client.search_runs([experiment], filter_string=children, max_results=1):
                    client.set_terminated(run_id, "FAILED")
                    client.delete_run(run_id)  # a bad setting, seen before any job: no sweep
                    return
            if preemption.requested() is not None:
                client.set_tag(run_id, "status_reason", "preempted")
                status = "KILLED"
            client.set_terminated(run_id, status)


def _is_hypersweep(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")).endswith(".HypersweepSweeper")


def sweep_params(config: DictConfig) -> dict[str, str]:
    """The parent run's params: the sweeper, its sampler/pruner/budget, the search space."""
    from hypersweep.search_space import swept_keys

    sweeper = config.hydra.sweeper
    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    params = {"sweeper": str(sweeper.get("_target_", "")).rsplit(".", 1)[-1]}
    if _is_hypersweep(config):
        from hypersweep.study import directions_for, search_arguments, study_name_for

        arguments = search_arguments(sweeper, [])
        params.update(
            {
                "sampler": str(sweeper.sampler._target_).rsplit(".", 1)[-1],
                "pruner": str(sweeper.pruner._target_).rsplit(".", 1)[-1] if sweeper.pruner else "",
                "n_trials": str(sweeper.n_trials),
                "n_jobs": str(sweeper.n_jobs),
                "direction": "/".join(directions_for(config)),
                "study_name": study_name_for(config),
                "storage": str(sweeper.storage),
            }
        )
    arguments += list(config.hydra.overrides.task)
    params.update({f"space.{k}": v for k, v in swept_keys(arguments).items()})
    params["monitor"] = str(config.trainer.early_stopping.monitor)
    return params


def summarize_sweep(uri: str, parent_run_id: str, config: DictConfig) -> None:
    """The best child (by the monitored validation metric), its params and the analysis plots
    on the parent run; the plots also go to <sweep dir>/analysis/."""
    from hypersweep import analysis
    from hypersweep.config import metric_mode, objective_metric

    objective = objective_metric(config.trainer.early_stopping.monitor)
    mode = metric_mode(objective)
    metric = f"best_{objective}"
    client = mlflow_client(uri)
    parent = client.get_run(parent_run_id)
    children = finished_children(client, parent.info.experiment_id, parent_run_id)
    client.log_metric(parent_run_id, "jobs", len(children))
    ranked = ranked_runs(children, metric, mode)
    if ranked:
        best = ranked[0]
        client.log_metric(parent_run_id, metric, best.data.metrics[metric])
        client.set_tag(parent_run_id, "best_run_id", best.info.run_id)
        client.set_tag(parent_run_id, "best_overrides", best.data.tags.get("overrides", ""))
        for key in analysis.varying_params(children):
            client.set_tag(parent_run_id, f"best.{key}", best.data.params.get(key, ""))
    study = _sweep_study(config) if _is_hypersweep(config) else None
    if study is None:
        study = analysis.study_from_runs(client, children, metric, mode)
    out_dir = Path(config.hydra.sweep.dir) / "analysis"
    try:
        importance = analysis.importances(study)
        rows = analysis.trials_table(children, metric)
        for path in analysis.write_report(study, rows, out_dir, importance):
            client.log_artifact(parent_run_id, str(path), "analysis")
        for key, value in importance.items():
            client.log_metric(parent_run_id, f"importance.{key}", value)
    except Exception:  # noqa: BLE001 - the sweep's results stand without its plots
        log.exception("Could not write the sweep analysis")


def _sweep_study(config: DictConfig):
    import optuna

    from hypersweep.pruning import live_or_loaded_study
    from hypersweep.study import study_name_for

    try:
        return live_or_loaded_study(config.hydra.sweeper.storage or "", study_name_for(config))
    except (KeyError, optuna.exceptions.OptunaError):
        return None


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
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self.client.log_batch(self.run_id, metrics=self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def log_summary(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.flush()
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

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
        from hypersweep.preemption import Preempted

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
        from hypersweep.checkpoint import load_checkpoint

        return load_checkpoint(download_checkpoint(tracking_uri, run_id, tmp))
