"""One job, as a recipe of named phases: set up, fit, the refit policy, record. The only module
that knows Hydra, MLflow and Optuna at once; what it learns from outside its config comes in one
`context.JobContext`, read at its start.

    job = Job(cfg, JobContext.of(cfg))   # set up: device, data, members, the run's name and tags
    with job.mlflow_run():                # created, or a preempted run reopened
        result = job.fit()                # the epochs: early stopping, pruning, preemption
        kept = job.refit_policy(result)   # cross-validation: refit on train+val, or not
        job.record(result, kept)          # summary, config, checkpoint, learning curve
    return job.finish(result, kept)       # the trial's outcome, the objective
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hypersweep import build
from hypersweep.config import ConfigError, metric_mode, objective_metric, validate
from hypersweep.context import JobContext
from hypersweep.core import data as data_module
from hypersweep.core import population, preemption
from hypersweep.core.checkpoint import load_checkpoint, save_checkpoint, save_resume_state
from hypersweep.core.fit import (
    EarlyStopping,
    FitResult,
    Interrupted,
    StackedMembers,
    fit_members,
    refit,
)
from hypersweep.errors import exit_with
from hypersweep.progress import Progress
from hypersweep.tracking import ranking, runs, store

log = logging.getLogger("hypersweep")


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


def run(cfg: DictConfig) -> float:
    preemption.raise_if_requested("before the job started: nothing to save")
    validate(cfg)
    job = Job(cfg, JobContext.of(cfg))
    with job.mlflow_run():
        result = job.fit()
        kept = job.refit_policy(result)
        job.record(result, kept)
    return job.finish(result, kept)


@dataclasses.dataclass
class Kept:
    """What the run keeps: the weights of its checkpoint (None: none, e.g. a pruned
    cross-validation), its summary metrics and its outcome tags."""

    state: dict[str, torch.Tensor] | None
    summary: dict[str, float]
    tags: dict[str, str]


class Job:
    def __init__(self, cfg: DictConfig, ctx: JobContext) -> None:
        """Set up: everything checked, loaded and built before the run is created."""
        self.cfg, self.ctx = cfg, ctx
        self.device = build.device(cfg)
        if cfg.trainer.num_threads:
            torch.set_num_threads(cfg.trainer.num_threads)
        self.uri = cfg.tracking.uri
        if not ctx.multirun:  # a sweep checked its store as it started
            store.check_store(self.uri, cfg.tracking.artifact_root)
        self.cv_folds = cfg.data.get("cv_folds")
        loaded = data_module.load_folds(cfg.data) if self.cv_folds else [data_module.load(cfg.data)]
        datasets = build.placed(cfg, loaded, self.device)
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.resume_path, self.saved = _preempted_state(cfg, self.resolved)
        self.warm = None
        if cfg.get("resume_from") and self.saved is None:
            self.warm = _warm_state(self.uri, str(cfg.resume_from))
        self.members = build.members(cfg, datasets, self.warm)
        es = cfg.trainer.early_stopping
        self.monitor = es.monitor
        self.stopper = EarlyStopping(es.resolved_mode, es.patience, es.min_delta)
        self.objective = objective_metric(es.monitor)  # what the sweep scores and prunes on
        self.reporter = _trial_reporter(ctx, self.objective)
        self.run_name = (
            f"trial-{self.reporter.trial.number}"
            if self.reporter is not None
            else ",".join(o for o in ctx.overrides if not o.startswith("hydra.")) or "defaults"
        )
        self.limit = TimeLimit(cfg.trainer.get("time_limit_s"))
        self.train = {
            "batch_size": cfg.trainer.batch_size,
            "l1": cfg.regularization.l1,
            "seed": cfg.trainer.seed,
            "precision": cfg.trainer.precision,
        }
        self.job_run: runs.JobRun | None = None

    # -- the MLflow run -------------------------------------------------------------------

    def _experiment_id(self) -> str:
        if self.ctx.sweep is not None:
            return self.ctx.sweep["experiment_id"]
        store.prepare_store(self.uri)
        store.close_orphaned_runs(self.uri)
        return store.experiment_id(self.uri, self.ctx.experiment, self.cfg.tracking.artifact_root)

    def _tags(self) -> dict[str, str]:
        ctx = self.ctx
        tags = {
            "overrides": " ".join(ctx.overrides),
            "output_dir": str(ctx.output_dir),
            "job_num": str(ctx.job_num),
            "device": str(self.device),
            **runs.run_tags_static(),
        }
        if ctx.sweep_dir is not None:
            tags["sweep_dir"] = str(ctx.sweep_dir)
        if ctx.sweep is not None:
            tags[store.PARENT_TAG] = ctx.sweep["parent_run_id"]
        if self.reporter is not None:
            tags.update(self.reporter.tags)
        if self.cfg.get("resume_from") and self.saved is None:
            tags["resumed_from"] = str(self.cfg.resume_from)
        if ctx.reproduced_from:
            tags["reproduced_from"] = ctx.reproduced_from
        return tags

    def _params(self) -> dict[str, str]:
        params = runs.flatten(self.resolved)
        # Params show what the run used: no β for plain SGD. A reproduction's config is resolved
        # (no interpolation left): it logs the knobs its source logged.
        source = self.ctx.reproduced_from
        source_params = store.run_params(self.uri, source) if source else None
        unused = (
            [k for k in KNOBS if k not in source_params]
            if source_params is not None
            else _unused_knobs(self.cfg)
        )
        for knob in unused:
            params.pop(knob, None)
        # Which option of each group the job used (`choice.optimizer=adam`): the column to compare.
        params.update(
            {
                f"choice.{group}": option
                for group, option in self.ctx.choices.items()
                if not group.startswith("hydra/") and (group, option) != NO_SEARCH_PRESET
            }
        )
        if self.reporter is not None:
            params.update(self.reporter.params())
        if source_params is not None:  # a reproduction has no groups: keep the source's
            params.update({k: v for k, v in source_params.items() if k.startswith("choice.")})
        return params

    @contextlib.contextmanager
    def mlflow_run(self) -> Iterator[runs.JobRun]:
        """The job's MLflow run, created with its params and tags (or the preempted run this
        job continues, reopened); always terminated (`runs.JobRun`)."""
        exp_id = self._experiment_id()
        tags, params = self._tags(), self._params()
        if self.reporter is not None:
            self.reporter.attach_tracking(self.uri)
        continued = self.saved["run_id"] if self.saved else None
        flush_every_s = self.cfg.tracking.get("flush_every_s", 2.0)
        with runs.JobRun(
            self.uri, exp_id, self.run_name, tags, params, continued, flush_every_s
        ) as job_run:
            self.job_run = job_run
            if self.saved is not None:
                log.info(
                    "%s: continuing run %s from epoch %d, as it was preempted (%s)",
                    self.run_name,
                    continued,
                    self.saved["epoch"],
                    self.resume_path,
                )
                if self.reporter is not None:  # the pruner sees the whole curve
                    self.reporter.replay(self.saved["history"])
            yield job_run
            if self.saved is not None:
                job_run.continued()

    # -- fit --------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """The epochs, each logged and reported to the trial; stopped by early stopping, the
        pruner, divergence, the time limit, or a signal (the state saved: `_preempted`)."""
        assert self.job_run is not None
        job_run, reporter, saved = self.job_run, self.reporter, self.saved
        progress = Progress(self.cfg.trainer.max_epochs, self.monitor, leave=not self.ctx.multirun)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
            with self.limit.paused():
                job_run.log_epoch(epoch, metrics)
                progress.update(epoch, metrics)
                return reporter.report(epoch, metrics) if reporter is not None else None

        try:
            if saved is not None and saved["phase"] == "refit":
                return FitResult(**saved["state"]["result"])
            if (seat := population.seat()) is not None and saved is None and not self.cv_folds:
                result = self._in_population(seat, on_epoch)
                if result is not None:
                    return result
            with self.limit.running():
                return fit_members(
                    self.members,
                    max_epochs=self.cfg.trainer.max_epochs,
                    stopper=self.stopper,
                    monitor=self.monitor,
                    on_epoch=on_epoch,
                    interrupted=preemption.requested,
                    resume=saved["state"] if saved is not None else None,
                    **self.train,
                )
        except Interrupted as stop:
            raise self._preempted("fit", stop.state, stop.epoch) from None
        finally:
            progress.close()

    def _in_population(self, seat: population.Seat, on_epoch: Any) -> FitResult | None:
        """Train as a member of the population the launcher gathers (None: alone). Stopped by
        a signal, a member has no state of its own to save: its run is KILLED and its trial
        runs again from the start."""
        assert self.job_run is not None
        (member,) = self.members
        entrant = population.Entrant(
            member,
            max_epochs=self.cfg.trainer.max_epochs,
            stopper=self.stopper,
            monitor=self.monitor,
            on_epoch=on_epoch,
            name=self.run_name,
            **self.train,
        )
        try:
            return seat.join(entrant)
        except Interrupted:
            self.job_run.log_summary({}, {"status_reason": "preempted"})
            if self.reporter is not None:
                self.reporter.preempted(saved=False)
            raise preemption.stop(None) from None  # the launcher says it for them all

    def _preempted(self, phase: str, state: dict[str, Any], epoch: int) -> preemption.Preempted:
        """Save the state a signal stopped, for the same command to continue."""
        assert self.job_run is not None
        payload = {"run_id": self.job_run.run_id, "config": self.resolved, "phase": phase}
        payload.update(epoch=epoch, history=result_history(phase, state), state=state)
        save_resume_state(self.resume_path, payload)
        if self.saved is not None and self.saved["source"] != str(self.resume_path):
            Path(self.saved["source"]).unlink(missing_ok=True)  # superseded
        self.job_run.mark_preempted(self.resume_path, epoch)
        if self.reporter is not None:
            self.reporter.preempted()
        return preemption.stop(
            f"{self.run_name} stopped in epoch {epoch}; run {self.job_run.run_id} is KILLED and "
            f"its state saved: the same command continues it ({self.resume_path})"
        )

    # -- the refit policy -------------------------------------------------------------------

    def refit_policy(self, result: FitResult) -> Kept:
        """Without cross-validation the run keeps its best weights. With it, the folds' models
        are not the run's: a run that can still be selected refits a fresh model on all of
        train+val and keeps that; a pruned one, or (trainer.refit=best) one that a finished run
        of its sweep already outranks, keeps none."""
        best_state = result.best_state if result.best_metrics else None
        summary = _summary(result, build.models(self.members)[0])
        tags = {"status_reason": result.status_reason}
        if not self.cv_folds:
            return Kept(best_state, summary, tags)
        tags["cv_stacked"] = str(isinstance(self.members[0], StackedMembers)).lower()
        summary.update(_fold_spread(result))
        if best_state is None or result.status_reason == "pruned":
            return Kept(None, summary, tags)
        if (rival := self._outranked_by(summary)) is not None:
            tags.update({"refit": "skipped", "refit_outranked_by": rival})
            return Kept(None, summary, tags)
        try:
            with self.limit.running():
                best_state, refit_summary = self._refit(result)
        except Interrupted:  # the refit starts again; the folds' work is kept
            state = {"result": dataclasses.asdict(result)}
            raise self._preempted("refit", state, result.epochs_run) from None
        summary.update(refit_summary)
        tags["refit"] = "done" if best_state is not None else "diverged"
        return Kept(best_state, summary, tags)

    def _refit(self, result: FitResult) -> tuple[dict[str, torch.Tensor] | None, dict[str, float]]:
        """Train a fresh model on all of train+val for the best epoch count, with the learning
        rates the folds used epoch by epoch. Returns its weights (None if it diverged) and the
        refit's metrics."""
        assert self.job_run is not None
        [data] = build.placed(self.cfg, [data_module.load(self.cfg.data)], self.device)
        member = build.member(self.cfg, data, self.warm)
        lrs = [h["lr"] for h in result.history[: result.best_epoch]]
        started = time.perf_counter()
        losses = refit(
            member,
            lrs,
            on_epoch=lambda e, m: _paused(self.limit, self.job_run.log_epoch, e, m),
            interrupted=preemption.requested,
            **self.train,
        )
        # The last refit_train_loss is the per-epoch series' own.
        summary = {"refit_epochs": len(losses), "refit_seconds": time.perf_counter() - started}
        if not math.isfinite(losses[-1]):
            log.warning("refit on train+val diverged at epoch %d: no checkpoint", len(losses))
            return None, summary
        return member.model.state_dict(), summary  # the refit model trains no further

    def _outranked_by(self, summary: dict[str, float]) -> str | None:
        """Under `trainer.refit=best`, in a sweep: the id of a finished run of the sweep, with a
        model, that ranks above this cross-validation as `hypersweep best` ranks. This run can
        then never be the one selected, and its refit would be wasted. None: refit."""
        sweep = self.ctx.sweep
        if self.cfg.trainer.get("refit", "best") != "best" or sweep is None:
            return None
        return ranking.outranking_run(
            self.uri,
            sweep["experiment_id"],
            sweep["parent_run_id"],
            summary,
            f"best_{self.objective}",
            metric_mode(self.objective),
        )

    # -- record and finish ----------------------------------------------------------------

    def record(self, result: FitResult, kept: Kept) -> None:
        """Summary metrics and tags, `config.yaml`, `overrides.yaml`, the checkpoint and the
        learning curve: in the output dir and on the run."""
        from hypersweep.tracking.plots import learning_curve

        assert self.job_run is not None
        job_run, out_dir = self.job_run, self.ctx.output_dir
        job_run.log_summary(kept.summary, kept.tags)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.resolved))
        (out_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(self.ctx.overrides))
        job_run.log_artifact(out_dir / "config.yaml")
        job_run.log_artifact(out_dir / "overrides.yaml")
        # None: diverged in its first epoch, or a cross-validation that was pruned or whose
        # refit diverged or was skipped.
        if kept.state is not None:
            ckpt = save_checkpoint(
                out_dir / "checkpoints" / "best.pt",
                kept.state,
                self.resolved,
                result.best_epoch,
                result.best_metrics,
            )
            job_run.log_artifact(ckpt, "checkpoints")
        if self.cfg.tracking.get("learning_curve", True):
            curve = learning_curve(
                result.history, self.monitor, result.best_epoch, out_dir / "plots"
            )
            job_run.log_artifact(curve, "plots")

    def finish(self, result: FitResult, kept: Kept) -> float:
        """After the run ended: no resume state left, the outcome on the trial; the objective
        at the epoch early stopping kept (the monitored value itself, unless the monitor is
        train_loss; NaN when no epoch was finite)."""
        assert self.job_run is not None
        if self.saved is not None:  # done: nothing left to continue
            self.resume_path.unlink(missing_ok=True)
            Path(self.saved["source"]).unlink(missing_ok=True)
        if self.reporter is not None:
            self.reporter.finish(result.status_reason, kept.summary)
        objective = result.best_metrics.get(self.objective, math.nan)
        log.info(
            "%s: %s=%s (best epoch %d of %d, %s%s%s) run %s",
            self.run_name,
            self.objective,
            _fmt(objective),
            result.best_epoch,
            result.epochs_run,
            result.status_reason,
            f", mean of {self.cv_folds} folds" if self.cv_folds else "",
            ", outranked: no refit" if kept.tags.get("refit") == "skipped" else "",
            self.job_run.run_id,
        )
        return objective


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


def _fold_spread(result: FitResult) -> dict[str, float]:
    """Standard deviation across the folds of each validation metric at the best epoch."""
    folds = result.member_metrics
    names = [k for k in folds[0] if k.startswith("val_")] if folds else []
    return {f"cv_{k}_std": statistics.pstdev(f[k] for f in folds) for k in names}


def _paused(limit: TimeLimit, log: Any, *args: Any) -> None:
    with limit.paused():
        log(*args)


def _trial_reporter(ctx: JobContext, monitor: str) -> Any:
    """The reporter of the Optuna trial this job runs, or None outside a `hypersweep` sweep
    (hypersweep.search.pruning imports Optuna: a job that is no trial does not)."""
    if ctx.trial is None:
        return None
    from hypersweep.search.pruning import trial_reporter

    t = ctx.trial
    return trial_reporter(t.trial_id, t.study_name, t.storage, monitor)


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
