"""The Hydra callback of a multirun: one experiment and one parent run per sweep, created before
any job; at the end the parent gets the best job and the analysis plots."""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hypersweep import errors
from hypersweep.errors import ConfigError, exit_with
from hypersweep.tracking.ranking import finished_children, ranked_runs
from hypersweep.tracking.runs import run_tags_static
from hypersweep.tracking.store import (
    PARENT_TAG,
    close_orphaned_runs,
    default_tracking_uri,
    experiment_id,
    mlflow_client,
    prepare_store,
    process_tags,
)

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in the sweep dir: where jobs find the experiment and parent


def read_sweep_file(sweep_dir: str | os.PathLike) -> dict[str, str] | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def experiment_name(cfg: DictConfig, hydra_cfg: DictConfig) -> str:
    """tracking.experiment if set; else the problem: `<data>-<model>` (`digits-mlp`), so that
    every sweep and single run on one problem lands in one experiment, each sweep under a
    parent run of its own, and compares in one table."""
    explicit = cfg.tracking.get("experiment")
    if explicit:
        return str(explicit)
    return problem_name(cfg, hydra_cfg)


GENERIC_DATA = ("csv", "parquet", "custom")


def problem_name(cfg: DictConfig, hydra_cfg: DictConfig) -> str:
    """`<data>-<model>`: the data's name (a table's file name, a custom function's name) and
    the model group's option (a custom model's class); a group the sweep searches over is the
    options it searches, joined by `+` (`digits-cnn+mlp`)."""
    from hypersweep.search.space import swept_keys

    swept = swept_keys(list(hydra_cfg.overrides.task)) if "overrides" in hydra_cfg else {}
    data = cfg.get("data") or {}
    name = str(data.get("name", "data"))
    if name in GENERIC_DATA:
        if data.get("path"):
            name = Path(str(data.path)).stem
        elif data.get("_target_"):
            name = str(data._target_).rsplit(".", 1)[-1]
    choices = hydra_cfg.runtime.choices if "runtime" in hydra_cfg else {}
    model = str(choices.get("model") or "model")
    if model == "custom" and cfg.get("model") and cfg.model.get("_target_"):
        model = str(cfg.model._target_).rsplit(".", 1)[-1]
    parts = {"data": name, "model": model}
    for group in parts:
        if group in swept:
            words = re.findall(r"[A-Za-z_][\w.]*", swept[group])
            options = sorted({w for w in words if w not in SEARCH_FUNCTIONS})
            parts[group] = "+".join(options) or parts[group]
    return f"{parts['data']}-{parts['model']}"


# Hydra's sweep grammar around a group's options (`choice(mlp, cnn)`): not option names.
SEARCH_FUNCTIONS = frozenset(("choice", "range", "interval", "tag", "glob", "sort", "shuffle"))


class SweepTracking(Callback):
    """Hydra callback: one experiment and one parent run per multirun, created before any job;
    at the end the parent gets the best job and the analysis plots."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None
        self._frozen = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = config.tracking.uri
        try:
            prepare_store(uri, config.tracking.artifact_root)
        except ConfigError as e:
            raise exit_with(e) from None
        close_orphaned_runs(uri)
        name = experiment_name(config, config.hydra)
        exp_id = experiment_id(uri, name, config.tracking.artifact_root)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        client = mlflow_client(uri)
        run = client.create_run(
            exp_id,
            run_name=f"sweep {sweep_dir.parent.name} {sweep_dir.name}",
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

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # After the first job everything a job needs is imported (torch, MLflow's store,
        # Optuna): frozen, those millions of objects are no longer scanned by every full
        # garbage collection of the jobs that follow (benchmarks/search_cost.py).
        if not self._frozen:
            self._frozen = True
            gc.collect()
            gc.freeze()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra 1.4 calls this from a `finally`, also when the sweep raised (1.3 does not): a
        # sweep that stopped on an error or Ctrl-C is FAILED, as on 1.3 (atexit), unsummarized.
        if sys.exc_info()[0] is not None:
            self._close("FAILED")
            return
        if self._parent:
            uri, run_id = self._parent
            try:
                best = summarize_sweep(uri, run_id, config)
            finally:
                self._close("FINISHED")
            if best is not None:
                _say_what_next(uri, run_id, best, config)

    def _close(self, status: str, rejected: bool = False) -> None:
        """End the parent run; KILLED with status_reason=preempted after SIGTERM or Ctrl-C
        (hypersweep.core.preemption), whatever `status` the caller meant."""
        from hypersweep.core import preemption

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
    from hypersweep.search.space import swept_keys

    sweeper = config.hydra.sweeper
    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    params = {"sweeper": str(sweeper.get("_target_", "")).rsplit(".", 1)[-1]}
    if _is_hypersweep(config):
        from hypersweep.search.study import directions_for, search_arguments, study_name_for

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


def _say_what_next(uri: str, parent_run_id: str, best: Any, config: DictConfig) -> None:
    """The sweep's last lines: which run won, on what score, with which overrides, and the two
    commands a user runs next."""
    from hypersweep.config import objective_metric

    metric = f"best_{objective_metric(config.trainer.early_stopping.monitor)}"
    own = " ".join(o for o in best.data.tags.get("overrides", "").split() if "hydra." not in o)
    name = best.info.run_name or ""
    log.info(
        "Best run %s%s: %s=%.4g with %s",
        best.info.run_id,
        f" ({name})" if name.startswith("trial-") else "",
        metric,
        best.data.metrics[metric],
        own or "the defaults",
    )
    store = "" if uri == default_tracking_uri() else f"--tracking-uri {uri} "
    if uri.startswith(("http://", "https://")):  # a server: its UI, on the sweep's runs
        from hypersweep.tracking.view import share

        client = mlflow_client(uri)
        ui = f"open {uri.rstrip('/')}/#{share(client, client.get_run(parent_run_id))}"
    else:
        ui = f"hypersweep {store}ui --sweep {parent_run_id}"
    log.info(
        "Next: hypersweep %sbest --sweep %s   (test it once, register it)", store, parent_run_id
    )
    log.info("      %s   (compare the runs)", ui)


def summarize_sweep(uri: str, parent_run_id: str, config: DictConfig) -> Any:
    """The best child (by the monitored validation metric), its params and the analysis plots
    on the parent run; the plots also go to <sweep dir>/analysis/. Returns the best child run
    (None: no job finished)."""
    from hypersweep.config import metric_mode, objective_metric
    from hypersweep.tracking import analysis

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
        plots = bool(config.tracking.get("analysis_plots", True))
        for path in analysis.write_report(study, rows, out_dir, importance, plots):
            client.log_artifact(parent_run_id, str(path), "analysis")
        for key, value in importance.items():
            client.log_metric(parent_run_id, f"importance.{key}", value)
    except Exception:  # noqa: BLE001 - the sweep's results stand without its plots
        log.exception("Could not write the sweep analysis")
    return ranked[0] if ranked else None


def _sweep_study(config: DictConfig):
    import optuna

    from hypersweep.search.pruning import live_or_loaded_study
    from hypersweep.search.study import study_name_for

    try:
        return live_or_loaded_study(config.hydra.sweeper.storage or "", study_name_for(config))
    except (KeyError, optuna.exceptions.OptunaError):
        return None
