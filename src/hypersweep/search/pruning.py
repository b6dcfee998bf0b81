"""The job's side of an Optuna trial: report the monitored value each epoch, stop when pruned.

The sweeper passes the trial to the job through environment variables (set per job with
`hydra.job.env_set`), so this works wherever the job runs: in the sweeper's process, in joblib
workers, or on other machines that reach the same persistent storage. In the sweeper's own
process the live study object is reused, which also covers in-memory storage.
"""

from __future__ import annotations

import math
import os
import re
import time

import optuna

from hypersweep import trust
from hypersweep.errors import ConfigError, one_line

# Studies opened by the sweeper in this process, by (storage, study name).
_LIVE: dict[tuple[str, str], optuna.Study] = {}


def open_storage(spec: str | None) -> optuna.storages.BaseStorage:
    """A storage from a spec: None → in memory; a URL with '://' → SQLAlchemy (e.g. PostgreSQL,
    SQLite); anything else is a path to an Optuna journal file (safe for several processes on one
    machine)."""
    if not spec:
        return optuna.storages.InMemoryStorage()
    if "://" in spec and not spec.startswith("file://"):
        return _rdb_storage(spec)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = spec.removeprefix("file://")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def _rdb_storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage (SQLAlchemy URL). `postgresql://` means psycopg 3 (the `postgres`
    extra) unless psycopg2 is installed. Commands started together on a fresh database (several
    machines on one PostgreSQL study) race to create its tables: the loser's CREATE fails on the
    winner's table. Once the winner is done the tables are there, so the loser tries again, a
    few times with a growing pause. A database that cannot be opened is a ConfigError naming
    the URL, its password hidden."""
    import importlib.util

    import sqlalchemy.exc

    given = url
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    pause = 0.1
    while True:
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=None)
        except sqlalchemy.exc.DBAPIError as e:
            attempts -= 1
            if attempts == 0:
                raise _unopened(given, e) from None
            time.sleep(pause)
            pause *= 2
        except (ImportError, sqlalchemy.exc.ArgumentError) as e:
            raise _unopened(given, e) from None


def _unopened(url: str, error: Exception) -> ConfigError:
    shown = re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)  # no password in a message
    return ConfigError(
        f"hydra.sweeper.storage={shown!r} cannot be opened ({one_line(error)}): expected a "
        "reachable database's SQLAlchemy URL (PostgreSQL: postgresql://USER@HOST:PORT/DB with "
        "pip install 'hypersweep[postgres]'), a journal file path, or null"
    )


def register_live_study(storage_spec: str, study: optuna.Study) -> None:
    _LIVE[(storage_spec, study.study_name)] = study


def live_or_loaded_study(storage_spec: str, name: str) -> optuna.Study:
    """The sweeper's own study object in its process, else the study loaded from storage."""
    key = (storage_spec, name)
    if key not in _LIVE:
        storage = open_storage(storage_spec)
        # The sweeper leaves its pruner's config on the study: a job in another process must
        # prune with the same rule, not with load_study's default MedianPruner.
        pruner_cfg = optuna.load_study(study_name=name, storage=storage).user_attrs.get("pruner")
        # a shared study's stored config names only Optuna's pruners
        pruner = (
            trust.instantiate(pruner_cfg, trust.SEARCH)
            if pruner_cfg
            else optuna.pruners.NopPruner()
        )
        _LIVE[key] = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    return _LIVE[key]


class TrialReporter:
    def __init__(self, study: optuna.Study, trial_id: int, monitor: str) -> None:
        self.study, self.trial_id, self.monitor = study, trial_id, monitor
        self.trial = optuna.trial.Trial(study, trial_id)
        self.tags = {"trial_number": str(self.trial.number), "study_name": study.study_name}
        # Optuna prunes single-objective studies only.
        self.prunable = len(study.directions) == 1

    def params(self) -> dict[str, str]:
        """How each searched key was sampled (`search.<key>.scale`), and the raw sample where a
        transform sits between it and the config value (`search.<key>.sampled`, e.g. 1-β)."""
        frozen = self.study._storage.get_trial(self.trial_id)
        out = {}
        for key, scale in frozen.user_attrs.get("scales", {}).items():
            out[f"search.{key}.scale"] = scale
            name = f"1-{key}" if scale == "one_minus_log" else key
            if scale == "one_minus_log" and name in frozen.params:
                out[f"search.{key}.sampled"] = repr(frozen.params[name])
        return out

    def attach_tracking(self, tracking_uri: str) -> None:
        """Left on the trial before the job's MLflow run exists, so that a resumed sweep can
        find and close that run (by its study_name/trial_number tags) if this job is killed."""
        self.study._storage.set_trial_user_attr(self.trial_id, "mlflow_uri", tracking_uri)

    def report(self, epoch: int, metrics: dict[str, float]) -> str | None:
        value = metrics[self.monitor]
        if not self.prunable or not math.isfinite(value):
            return None  # the fit loop stops a diverged run itself
        self.trial.report(value, epoch)
        return "pruned" if self.trial.should_prune() else None

    def replay(self, history: list[dict[str, float]]) -> None:
        """A preempted run continued in this trial: the epochs it had finished, as reports."""
        for epoch, metrics in enumerate(history, 1):
            value = metrics[self.monitor]
            if self.prunable and math.isfinite(value):
                self.trial.report(value, epoch)

    def preempted(self, saved: bool = True) -> None:
        """Stopped by a signal: the sweeper runs it again (`_recover`), from the state it saved
        or, without one (`saved=False`: a population's member), from its start."""
        try:
            if not saved:
                self.study._storage.set_trial_user_attr(self.trial_id, "state_saved", False)
            self.study._storage.set_trial_user_attr(self.trial_id, "status_reason", "preempted")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the sweep gave up on it first (it stopped on another error): run afresh

    def finish(self, status_reason: str, summary: dict[str, float]) -> None:
        """Leave the outcome on the trial, for the sweeper (which may be another process)."""
        storage = self.study._storage
        storage.set_trial_user_attr(self.trial_id, "summary", summary)
        storage.set_trial_user_attr(self.trial_id, "status_reason", status_reason)


def trial_reporter(trial_id: int, study_name: str, storage: str, monitor: str) -> TrialReporter:
    """The reporter for trial `trial_id` of the study, as the sweeper named them to the job."""
    return TrialReporter(live_or_loaded_study(storage, study_name), trial_id, monitor)
