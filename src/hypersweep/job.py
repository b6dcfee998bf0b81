"""One job: validate, build, fit, log, return the objective. The only module that knows Hydra,
MLflow and Optuna at once."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hypersweep import trust
from hypersweep.config import ConfigError, metric_mode, objective_metric, validate
from hypersweep.core import data as data_module
from hypersweep.core import preemption
from hypersweep.core.checkpoint import load_checkpoint, save_checkpoint, save_resume_state
from hypersweep.core.data import Splits
from hypersweep.core.fit import (
    EarlyStopping,
    FitResult,
    Interrupted,
    Member,
    Scheduler,
    StackedMembers,
    fit_members,
    refit,
)
from hypersweep.core.optim import build_optimizer
from hypersweep.core.stacking import ELEMENTWISE_OPTIMIZERS, Stacked, stackable
from hypersweep.errors import exit_with
from hypersweep.progress import Progress
from hypersweep.tracking import callback, ranking, runs, store

log = logging.getLogger("hypersweep")
# Set by `hypersweep reproduce`: the run a job reproduces (its tag `reproduced_from`).
REPRODUCED_FROM_ENV = "HYPERSWEEP_REPRODUCED_FROM"


def select_device(requested: str) -> torch.device:
    """`auto` picks CUDA, else MPS, else CPU; an explicit device that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ConfigError(
            f"trainer.device={requested!r} is not available on this machine: "
            f"expected auto or cpu{', cuda' if cuda else ''}{', mps' if mps else ''}"
        )
    return torch.device(requested)


class TimedOut(Exception):
    """The job ran past `trainer.time_limit_s`."""

    status_reason = "timed_out"  # its MLflow run's and its trial's


def main(cfg: DictConfig) -> float:
    """Hydra task function: a bad config is one line on stderr and exit status 2; SIGTERM or
    Ctrl-C saves the run's state and stops (`hypersweep.core.preemption`); training past
    `trainer.time_limit_s` fails with TimedOut."""
    preemption.install()
    try:
        return run(cfg)
    except ConfigError as e:
        raise exit_with(e) from None


class TimeLimit:
    """`trainer.time_limit_s`: a budget of wall-clock seconds for the job's training (its fit
    and refit; not its start-up nor its logging after). SIGALRM at the end of the budget raises
    TimedOut wherever training is, a hung model's Python code too; never inside the per-epoch
    logging (`paused`), where it would interrupt the MLflow store's own bookkeeping. Main
    thread only (elsewhere: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        on = bool(seconds) and threading.current_thread() is threading.main_thread()
        self.left = float(seconds) if on else None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self.left is None:
            yield
            return

        def expire(signum: int, frame: object) -> None:
            raise TimedOut(f"trainer.time_limit_s={self.seconds} passed")

        previous = signal.signal(signal.SIGALRM, expire)
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(self.left, 1e-3))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self.left = max(self.left - (time.monotonic() - started), 0.0)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The alarm held back (delivered when the block ends)."""
        if self.left is None:
            yield
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def run(cfg: DictConfig) -> float:
    preemption.raise_if_requested("before the job started: nothing to save")
    validate(cfg)
    device = select_device(cfg.trainer.device)
    if cfg.trainer.precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"trainer.precision='fp16' needs CUDA, but the device is {device.type}: "
            "expected fp32 or bf16"
        )
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    hydra_cfg = HydraConfig.get()
    if not _multirun(hydra_cfg):  # a sweep checked its store as it started
        store.check_store(cfg.tracking.uri, cfg.tracking.artifact_root)
    out_dir = Path(hydra_cfg.runtime.output_dir)

    cv_folds = cfg.data.get("cv_folds")
    if cv_folds:
        datasets = [fold.to(device) for fold in data_module.load_folds(cfg.data)]
    else:
        datasets = [data_module.load(cfg.data).to(device)]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    uri = cfg.tracking.uri
    resume_path, saved = _preempted_state(cfg, resolved)
    warm = None
    if cfg.get("resume_from") and saved is None:
        warm = _warm_state(uri, str(cfg.resume_from))
    members = _members(cfg, datasets, warm)
    es = cfg.trainer.early_stopping
    stopper = EarlyStopping(es.resolved_mode, es.patience, es.min_delta)

    overrides = list(hydra_cfg.overrides.task)
    sweep = callback.read_sweep_file(hydra_cfg.sweep.dir) if _multirun(hydra_cfg) else None
    if sweep is None:
        store.prepare_store(uri)
        store.close_orphaned_runs(uri)
        exp_id = store.experiment_id(uri, callback.experiment_name(cfg), cfg.tracking.artifact_root)
    else:
        exp_id = sweep["experiment_id"]
    objective_name = objective_metric(es.monitor)  # what the sweep scores and prunes on
    reporter = _trial_reporter(objective_name)
    tags = {
        "overrides": " ".join(overrides),
        "output_dir": str(out_dir),
        "job_num": str(hydra_cfg.job.get("num", 0)),
        "device": str(device),
        **runs.run_tags_static(),
    }
    if _multirun(hydra_cfg):
        tags["sweep_dir"] = str(Path(hydra_cfg.sweep.dir).resolve())
    if sweep is not None:
        tags[store.PARENT_TAG] = sweep["parent_run_id"]
    if reporter is not None:
        tags.update(reporter.tags)
    if cfg.get("resume_from") and saved is None:
        tags["resumed_from"] = str(cfg.resume_from)
    reproduced_from = os.environ.get(REPRODUCED_FROM_ENV)
    if reproduced_from:
        tags["reproduced_from"] = reproduced_from
    if reporter is not None:
        run_name = f"trial-{reporter.trial.number}"
    else:
        run_name = ",".join(o for o in overrides if not o.startswith("hydra.")) or "defaults"

    progress = Progress(cfg.trainer.max_epochs, es.monitor, leave=not _multirun(hydra_cfg))
    limit = TimeLimit(cfg.trainer.get("time_limit_s"))
    params = runs.flatten(resolved)
    # Params show what the run used: no β for plain SGD. A reproduction's config is resolved
    # (no interpolation left): it logs the knobs its source logged.
    source = store.run_params(uri, reproduced_from) if reproduced_from else None
    unused = [k for k in KNOBS if k not in source] if source is not None else _unused_knobs(cfg)
    for knob in unused:
        params.pop(knob, None)
    # Which option of each group the job used (`choice.optimizer=adam`): the column to compare.
    params.update(
        {
            f"choice.{group}": str(option)
            for group, option in hydra_cfg.runtime.choices.items()
            if not group.startswith("hydra/") and option and (group, option) != NO_SEARCH_PRESET
        }
    )
    if reporter is not None:
        params.update(reporter.params())
    if source is not None:  # a reproduction has no groups: keep the source's
        params.update({k: v for k, v in source.items() if k.startswith("choice.")})
    if reporter is not None:
        reporter.attach_tracking(uri)
    continued = saved["run_id"] if saved else None
    with runs.JobRun(uri, exp_id, run_name, tags, params, continued) as job_run:
        if saved is not None:
            log.info(
                "%s: continuing run %s from epoch %d, as it was preempted (%s)",
                run_name,
                continued,
                saved["epoch"],
                resume_path,
            )
            if reporter is not None:  # the pruner sees the whole curve
                reporter.replay(saved["history"])

        def preempted(phase: str, state: dict[str, Any], epoch: int) -> preemption.Preempted:
            payload = {"run_id": job_run.run_id, "config": resolved, "phase": phase}
            payload.update(epoch=epoch, history=result_history(phase, state), state=state)
            save_resume_state(resume_path, payload)
            if saved is not None and saved["source"] != str(resume_path):
                Path(saved["source"]).unlink(missing_ok=True)  # superseded
            job_run.mark_preempted(resume_path, epoch)
            if reporter is not None:
                reporter.preempted()
            return preemption.stop(
                f"{run_name} stopped in epoch {epoch}; run {job_run.run_id} is KILLED and its "
                f"state saved: the same command continues it ({resume_path})"
            )

        def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
            with limit.paused():
                job_run.log_epoch(epoch, metrics)
                progress.update(epoch, metrics)
                return reporter.report(epoch, metrics) if reporter is not None else None

        train = {
            "batch_size": cfg.trainer.batch_size,
            "l1": cfg.regularization.l1,
            "seed": cfg.trainer.seed,
            "precision": cfg.trainer.precision,
        }
        try:
            if saved is not None and saved["phase"] == "refit":
                result = FitResult(**saved["state"]["result"])
            else:
                with limit.running():
                    result = fit_members(
                        members,
                        max_epochs=cfg.trainer.max_epochs,
                        stopper=stopper,
                        monitor=es.monitor,
                        on_epoch=on_epoch,
                        interrupted=preemption.requested,
                        resume=saved["state"] if saved is not None else None,
                        **train,
                    )
        except Interrupted as stop:
            raise preempted("fit", stop.state, stop.epoch) from None
        finally:
            progress.close()
        best_state = result.best_state if result.best_metrics else None
        summary = _summary(result, _models(members)[0])
        status = {"status_reason": result.status_reason}
        if cv_folds:
            status["cv_stacked"] = str(isinstance(members[0], StackedMembers)).lower()
            summary.update(_fold_spread(result))
            # A pruned trial is never selected: no refit, no checkpoint; nor, under
            # trainer.refit=best, one that a finished run of its sweep already outranks.
            if best_state is None or result.status_reason == "pruned":
                best_state = None
            elif (rival := _outranked_by(cfg, sweep, summary)) is not None:
                best_state = None
                status.update({"refit": "skipped", "refit_outranked_by": rival})
            else:
                try:
                    with limit.running():
                        best_state, refit_summary = _refit(
                            cfg, result, device, warm, job_run, train, limit
                        )
                except Interrupted:  # the refit starts again; the folds' work is kept
                    state = {"result": dataclasses.asdict(result)}
                    raise preempted("refit", state, result.epochs_run) from None
                summary.update(refit_summary)
                status["refit"] = "done" if best_state is not None else "diverged"
        _log_outcome(
            job_run,
            result,
            best_state,
            summary,
            status,
            resolved,
            overrides,
            out_dir,
            es.monitor,
            cfg.tracking.get("learning_curve", True),
        )
        if saved is not None:
            job_run.continued()
    if saved is not None:  # done: nothing left to continue
        resume_path.unlink(missing_ok=True)
        Path(saved["source"]).unlink(missing_ok=True)
    if reporter is not None:
        reporter.finish(result.status_reason, summary)

    # The objective at the epoch early stopping kept: the monitored value itself, unless the
    # monitor is train_loss. NaN when no epoch was finite.
    objective = result.best_metrics.get(objective_name, math.nan)
    log.info(
        "%s: %s=%s (best epoch %d of %d, %s%s%s) run %s",
        run_name,
        objective_name,
        _fmt(objective),
        result.best_epoch,
        result.epochs_run,
        result.status_reason,
        f", mean of {cv_folds} folds" if cv_folds else "",
        ", outranked: no refit" if status.get("refit") == "skipped" else "",
        job_run.run_id,
    )
    return objective


def _model(cfg: DictConfig, data: Splits, warm: dict | None) -> torch.nn.Module:
    """A freshly initialized model (the training seed: every fold starts from the same weights,
    or from the warm-start checkpoint's)."""
    torch.manual_seed(cfg.trainer.seed)
    model = trust.instantiate(
        cfg.model, _trusted(cfg), input_shape=data.input_shape, output_size=data.output_size
    )
    model = model.to(data.x_train.device)
    if warm is not None:
        _warm_start(model, warm, str(cfg.resume_from))
    return model


def _optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Scheduler]:
    trusted = _trusted(cfg)
    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trusted), model, cfg.regularization.l2
    )
    return optimizer, trust.instantiate(cfg.scheduler, trusted)(optimizer)


def _trusted(cfg: DictConfig) -> tuple[str, ...]:
    return trust.patterns(trust.user_modules(cfg))


def _member(cfg: DictConfig, data: Splits, warm: dict | None) -> Member:
    """A fresh model with its optimizer and scheduler."""
    model = _model(cfg, data, warm)
    return Member(model, *_optimizer(cfg, model), data)


def _members(
    cfg: DictConfig, datasets: list[Splits], warm: dict | None
) -> list[Member] | list[StackedMembers]:
    """One member per dataset (fold). With `trainer.stack_folds` the folds train as one stacked
    model where that is exact (see `hypersweep.core.stacking`): not for recurrent models, fp16 (one
    loss scale would couple the folds) or an optimizer that is not elementwise; those train
    one after another."""
    models = [_model(cfg, data, warm) for data in datasets]
    if cfg.trainer.get("stack_folds", True) and cfg.trainer.precision != "fp16":
        if stackable(models):
            stacked = Stacked(models)
            optimizer, scheduler = _optimizer(cfg, stacked)
            if isinstance(optimizer, ELEMENTWISE_OPTIMIZERS):
                return [StackedMembers(stacked, optimizer, scheduler, datasets, models)]
    return [
        Member(model, *_optimizer(cfg, model), data)
        for model, data in zip(models, datasets, strict=True)
    ]


def _models(members: list[Member] | list[StackedMembers]) -> list[torch.nn.Module]:
    """The trained models, one per dataset."""
    return [m for member in members for m in getattr(member, "models", [member.model])]


def _refit(
    cfg: DictConfig,
    result: FitResult,
    device: torch.device,
    warm: dict | None,
    job_run: runs.JobRun,
    train: dict,
    limit: TimeLimit,
) -> tuple[dict[str, torch.Tensor] | None, dict[str, float]]:
    """After a cross-validation: train a fresh model on all of train+val for the best epoch
    count, with the learning rates the folds used epoch by epoch. Its weights are the run's
    checkpoint; returns them (None if the refit diverged) and the refit's metrics."""
    member = _member(cfg, data_module.load(cfg.data).to(device), warm)
    lrs = [h["lr"] for h in result.history[: result.best_epoch]]
    started = time.perf_counter()
    losses = refit(
        member,
        lrs,
        on_epoch=lambda e, m: _paused(limit, job_run.log_epoch, e, m),
        interrupted=preemption.requested,
        **train,
    )
    # The last refit_train_loss is the per-epoch series' own.
    summary = {"refit_epochs": len(losses), "refit_seconds": time.perf_counter() - started}
    if not math.isfinite(losses[-1]):
        log.warning("refit on train+val diverged at epoch %d: no checkpoint", len(losses))
        return None, summary
    return member.model.state_dict(), summary  # the refit model trains no further


def _outranked_by(
    cfg: DictConfig, sweep: dict[str, str] | None, summary: dict[str, float]
) -> str | None:
    """Under `trainer.refit=best`, in a sweep: the id of a finished run of the sweep, with a
    model, that ranks above this cross-validation as `hypersweep best` ranks. This run can then
    never be the one selected, and its refit would be wasted. None: refit."""
    if cfg.trainer.get("refit", "best") != "best" or sweep is None:
        return None
    metric = objective_metric(cfg.trainer.early_stopping.monitor)
    return ranking.outranking_run(
        cfg.tracking.uri,
        sweep["experiment_id"],
        sweep["parent_run_id"],
        summary,
        f"best_{metric}",
        metric_mode(metric),
    )


def _fold_spread(result: FitResult) -> dict[str, float]:
    """Standard deviation across the folds of each validation metric at the best epoch."""
    folds = result.member_metrics
    names = [k for k in folds[0] if k.startswith("val_")] if folds else []
    return {f"cv_{k}_std": statistics.pstdev(f[k] for f in folds) for k in names}


def _paused(limit: TimeLimit, log: Any, *args: Any) -> None:
    with limit.paused():
        log(*args)


def _trial_reporter(monitor: str) -> Any:
    """The reporter of the Optuna trial this job runs, or None outside a `hypersweep` sweep
    (hypersweep.search.pruning imports Optuna: a job that is no trial does not)."""
    from hypersweep.search.study import TRIAL_ENV

    if not os.environ.get(TRIAL_ENV):
        return None
    from hypersweep.search.pruning import trial_reporter

    return trial_reporter(monitor)


def result_history(phase: str, state: dict[str, Any]) -> list[dict[str, float]]:
    """The epochs a preempted run had finished."""
    return state["result"]["history"] if phase == "refit" else state["history"]


def _preempted_state(cfg: DictConfig, resolved: dict) -> tuple[Path, dict | None]:
    """Where this run's state goes if it is preempted, and the state a preempted run with this
    same config left there (or, with `resume_from=<id of a preempted run>`, the one that run
    left), to continue from; None: start afresh."""
    key = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(cfg.tracking.resume_dir) / f"{key[:24]}.pt"
    source = path
    if not path.exists() and cfg.get("resume_from"):
        found = store.preempted_state_path(cfg.tracking.uri, str(cfg.resume_from))
        if found is None:
            return path, None
        source = Path(found)
    elif not path.exists():
        return path, None
    try:
        saved = load_checkpoint(source)
    except (OSError, RuntimeError, EOFError) as e:
        raise ConfigError(
            f"tracking.resume_dir: {source} cannot be read ({str(e).splitlines()[0][:200]}): "
            "expected a hypersweep resume state; delete it to start the run afresh"
        ) from None
    if source != path:

        def same(config: dict) -> dict:  # what the command's directory does not decide
            tracking_cfg = {k: v for k, v in config["tracking"].items() if k != "resume_dir"}
            return {**config, "resume_from": None, "tracking": tracking_cfg}

        if same(saved["config"]) != same(resolved):
            raise ConfigError(
                f"resume_from={cfg.resume_from!r} is a preempted run with another config: "
                "expected the same overrides as that run to continue it"
            )
    if not store.run_exists(cfg.tracking.uri, saved["run_id"]):
        log.warning(
            "%s: its run %s is gone from the store: starting afresh", source, saved["run_id"]
        )
        return path, None
    saved["source"] = str(source)
    return path, saved


def _warm_state(uri: str, run_id: str) -> dict[str, torch.Tensor]:
    """Babysitting: the best weights of another run, to start from (new settings apply)."""
    from mlflow.exceptions import MlflowException

    from hypersweep.tracking.runs import load_run_checkpoint

    try:
        return load_run_checkpoint(uri, run_id)["state_dict"]
    except (MlflowException, OSError) as e:
        raise ConfigError(
            f"resume_from={run_id!r}: no checkpoint for that run in {uri}: expected the id of a "
            f"finished run ({str(e).splitlines()[0][:200]})"
        ) from None


def _warm_start(model: torch.nn.Module, state: dict, run_id: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"resume_from={run_id!r}: its checkpoint does not fit this model: expected the same "
            f"model and data as that run ({detail})"
        ) from None


# Top-level values that exist to be interpolated into the groups (`lr=0.1` whatever the
# optimizer).
KNOBS = ("lr", "momentum")


def _unused_knobs(cfg: DictConfig) -> list[str]:
    """The knobs that no value of the job's config interpolates: RMSprop and plain SGD do not
    read `momentum`, so a run of theirs does not log one."""
    raw = repr(OmegaConf.to_container(cfg, resolve=False))
    return [k for k in KNOBS if k in cfg and "${" + k + "}" not in raw]


# The search group's default: no preset, `-m key=a,b,c` grids (conf/search/cli_grid.yaml).
NO_SEARCH_PRESET = ("search", "cli_grid")


def _multirun(hydra_cfg: DictConfig) -> bool:
    return str(hydra_cfg.mode) == "RunMode.MULTIRUN"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _summary(result: FitResult, model: torch.nn.Module) -> dict[str, float]:
    summary = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    summary.update(
        {
            f"best_{k}": v
            for k, v in result.best_metrics.items()
            if k in ("train_loss", "val_loss", "val_acc", "val_rmse")
        }
    )
    return summary


def _log_outcome(
    job_run: runs.JobRun,
    result: FitResult,
    best_state: dict[str, torch.Tensor] | None,
    summary: dict[str, float],
    tags: dict[str, str],
    resolved: dict,
    overrides: list[str],
    out_dir: Path,
    monitor: str,
    plot: bool,
) -> None:
    from hypersweep.tracking.plots import learning_curve

    job_run.log_summary(summary, tags)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    (out_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    job_run.log_artifact(out_dir / "config.yaml")
    job_run.log_artifact(out_dir / "overrides.yaml")
    # None: diverged in its first epoch, or a cross-validation that was pruned or whose refit
    # diverged.
    if best_state is not None:
        ckpt = save_checkpoint(
            out_dir / "checkpoints" / "best.pt",
            best_state,
            resolved,
            result.best_epoch,
            result.best_metrics,
        )
        job_run.log_artifact(ckpt, "checkpoints")
    if plot:
        curve = learning_curve(result.history, monitor, result.best_epoch, out_dir / "plots")
        job_run.log_artifact(curve, "plots")
