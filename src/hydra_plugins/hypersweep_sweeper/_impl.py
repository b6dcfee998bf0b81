"""The `hypersweep` Hydra sweeper's implementation (hydra_plugins.hypersweep_sweeper.sweeper
imports it when a sweep starts): ask/tell on current Optuna, with pruning and resume.

Each batch of `n_jobs` trials is asked from the study, turned into override lists and handed to
the configured launcher. Every job learns its trial through environment variables set with
`hydra.job.env_set` and reports to the persistent storage itself (hypersweep.search.pruning),
so pruning works with launchers that run jobs in other processes. Outcomes the job left on the trial
(status_reason, summary metrics) decide how the trial is told: COMPLETE, PRUNED or FAIL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.hypersweep_sweeper._settings import Settings
from hydra_plugins.hypersweep_sweeper.population import Feed
from hypersweep import trust
from hypersweep.config import metric_mode, objective_metric
from hypersweep.core import preemption
from hypersweep.errors import ConfigError, exit_with
from hypersweep.progress import SweepProgress
from hypersweep.search.checks import check_jobs, is_hypersweep_job
from hypersweep.search.compose_cache import share_parsed_configs
from hypersweep.search.pruning import open_storage, register_live_study
from hypersweep.search.space import (
    Param,
    SearchSpaceError,
    grid_values,
    parse,
    structural,
)
from hypersweep.search.study import (
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ENV,
    default_study_name,
    directions_for,
    job_monitor,
    search_arguments,
    warn_legacy,
)
from hypersweep.tracking.ranking import tie_break
from hypersweep.tracking.store import process_alive

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# FAIL trials a later command runs again: an interrupted one afresh, a preempted one from the
# state it saved. Neither counts toward n_trials nor max_failure_rate.
RUN_AGAIN = ("interrupted", "preempted")
# How long the pool's running trials get, after SIGTERM or Ctrl-C, to save their state.
PREEMPT_GRACE_S = 60.0


class RejectedResult(ValueError):
    """A job ended well but returned what the study cannot take (NaN, a wrong number of values,
    no number): its trial is FAIL, as hydra-optuna-sweeper tells it, and does not count toward
    max_failure_rate (the job did not fail; the task's return value is its own business)."""


class SweepFailed(RuntimeError):
    """Too many trials failed; the message says how many and the last error."""


def _was_run(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished, failures included, but not left behind by an interrupted sweep (a resumed
    sweep runs it again)."""
    return trial.state in FINISHED and trial.user_attrs.get("status_reason") not in RUN_AGAIN


def trials_run(study: optuna.Study) -> int:
    """Trials that count toward n_trials."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if _was_run(t))


def failures_counted(study: optuna.Study) -> int:
    """FAIL trials that count toward max_failure_rate: not the interrupted ones (run again) nor
    those whose result was rejected (the job itself did not fail)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.user_attrs.get("status_reason") not in (*RUN_AGAIN, "rejected")
    )


class FailureBudget:
    """`hydra.sweeper.max_failure_rate` over a whole sweep: once a trial of this command failed
    and more of the study's trials failed (`failures_counted`) than the rate allows of all it
    runs, the sweep stops, naming the last error. A failed trial is told FAIL first
    (`HypersweepSweeperImpl._tell`); a crash of the sweep fails the trials it was running
    (`_fail_running`), and the next command runs those again (`_recover`)."""

    def __init__(self, rate: float, total: int) -> None:
        self.rate, self.total = rate, total
        self.errors: list[str] = []

    def spend(self, study: optuna.Study, error: str | None) -> None:
        if error:
            self.errors.append(error)
        failed = failures_counted(study)
        if self.errors and failed > self.rate * self.total:
            raise SweepFailed(
                f"{failed} of {self.total} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.rate} allows; "
                f"last error: {self.errors[-1]}"
            )


# Which command runs a trial: the sweeper that asked it writes its host and pid on it, and a
# heartbeat every HEARTBEAT_S while it runs, so that another command on the same study (several
# workers on one study, on one machine or several) tells a live trial from one a dead command
# left RUNNING.
HEARTBEAT_S = 10.0
STALE_S = 6 * HEARTBEAT_S
HOST = socket.gethostname()


def _owned_here(trial: optuna.trial.FrozenTrial) -> bool:
    owner = trial.user_attrs.get("owner") or {}
    return owner.get("host") == HOST and owner.get("pid") == os.getpid()


def _alive(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    """Whether the command that asked a RUNNING trial still runs it: a fresh heartbeat and, on
    this machine, its process. A trial with no owner yet is one another command has just asked
    (`ask` stamps it a moment after Optuna creates it) while it is younger than STALE_S; older,
    it is an older sweep's, and dead."""
    owner = trial.user_attrs.get("owner") or {}
    if not owner:
        started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        return now - started <= STALE_S
    if now - float(trial.user_attrs.get("heartbeat", 0)) > STALE_S:
        return False
    if owner.get("host") != HOST:
        return True
    started_ms = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else 0
    return owner.get("pid") == os.getpid() or process_alive(int(owner.get("pid", 0)), started_ms)


def _running_elsewhere(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    return trial.state == TrialState.RUNNING and not _owned_here(trial) and _alive(trial, now)


def running_elsewhere(study: optuna.Study) -> int:
    """RUNNING trials that another live command runs."""
    now = time.time()
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for t in trials if _running_elsewhere(t, now))


def trials_counted(study: optuna.Study) -> int:
    """What counts toward n_trials before this command asks another trial: the trials run
    (`trials_run`) and those another live command is running; one read of the study."""
    now = time.time()
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if _was_run(t) or _running_elsewhere(t, now))


class Heartbeat:
    """A daemon thread that stamps this command's RUNNING trials every HEARTBEAT_S."""

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.stop = study, threading.Event()
        self.thread = threading.Thread(target=self._run, name="hypersweep-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if _owned_here(t):
                        beat(self.study, t._trial_id)
            except Exception as e:  # noqa: BLE001 - a storage hiccup: the next beat retries
                log.debug("heartbeat: %s", e)

    def close(self) -> None:
        self.stop.set()


def beat(study: optuna.Study, trial_id: int) -> None:
    with contextlib.suppress(RuntimeError, ValueError):  # told meanwhile: nothing to stamp
        study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())


def ask(study: optuna.Study) -> optuna.Trial:
    """A new trial, marked as this command's."""
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "owner", {"host": HOST, "pid": os.getpid()})
    beat(study, trial._trial_id)
    return trial


def _built(cfg: Any, key: str) -> Any:
    """A sampler or pruner from its config; what its factory refuses is one line."""
    try:
        return trust.instantiate(cfg, trust.SEARCH)
    except Exception as e:  # noqa: BLE001 - Hydra wraps the factory's own error
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):
            raise cause from None
        target = cfg.get("_target_") if hasattr(cfg, "get") else None
        raise SearchSpaceError(
            f"hydra.sweeper.{key}._target_={target!r}: {str(cause).splitlines()[0]}"
        ) from None


class HypersweepSweeperImpl(Sweeper):
    def __init__(self, sampler: Any, pruner: Any = None, **settings: Any) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner  # built in sweep(): trusted only
        self.sampler: Any = None
        self.pruner: Any = None
        self.directions: list[str] = []  # set in setup(): the default follows the job's monitor
        self.settings = Settings.of(**settings)
        self.custom_search_space: Any = None  # the function settings.custom_search_space names
        self._progress: SweepProgress | None = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.directions = directions_for(config)
        share_parsed_configs(hydra_context.config_loader)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # -- checks -----------------------------------------------------------------------------
    def _build(self) -> None:
        """The sampler and pruner from their configs, and the custom search-space function:
        only trusted targets (Optuna's samplers and pruners, this plugin's factories, and the
        config's `hypersweep.trusted_targets` for the search-space function)."""
        self.sampler = _built(self.sampler_cfg, "sampler")
        self.pruner = _built(self.pruner_cfg, "pruner") if self.pruner_cfg else None
        parallel = max(self.settings.n_jobs, getattr(self.launcher, "n_jobs", 1) or 1)
        tpe = isinstance(self.sampler, optuna.samplers.TPESampler)
        if tpe and parallel > 1 and not self.sampler_cfg.get("constant_liar"):
            log.info(
                "TPE with %d trials at once: hydra.sweeper.sampler.constant_liar=true keeps "
                "them from sampling alike",
                parallel,
            )
        if self.settings.custom_search_space:
            path = self.settings.custom_search_space
            trusted = trust.patterns(trust.user_modules(self.config))
            if not trust.allowed(path, trusted):
                raise SearchSpaceError(
                    f"hydra.sweeper.custom_search_space={path!r} is not a trusted target: "
                    "expected a function in a module listed in hypersweep.trusted_targets"
                )
            self.custom_search_space = get_method(path)

    def _check(self) -> None:
        self.settings.check(self.directions)
        self._check_directions_match_the_objective()
        if len(self.directions) > 1 and not isinstance(self.pruner, optuna.pruners.NopPruner):
            if self.pruner is not None:
                raise SearchSpaceError(
                    "hydra.sweeper.pruner: Optuna cannot prune multi-objective studies: "
                    "expected hydra/sweeper/pruner=none"
                )

    def _check_directions_match_the_objective(self) -> None:
        """A direction that contradicts what the job returns would report the worst trial as
        the best and steer the sampler and pruner toward bad configurations."""
        monitor = job_monitor(self.config)
        if monitor is None:
            return  # another task's return value: its directions are the user's to choose
        if self.settings.objective_attrs:
            named = list(zip(self.settings.objective_attrs, self.directions, strict=True))
            key = "objective_attrs"
        else:
            named = [(f"best_{objective_metric(monitor)}", self.directions[0])]
            key = "trainer.early_stopping.monitor"
            if len(self.directions) > 1:
                raise SearchSpaceError(
                    f"hydra.sweeper.direction={self.directions} has {len(self.directions)} "
                    "directions, but the job returns one value: expected one direction, or "
                    "hydra.sweeper.objective_attrs naming a summary metric per direction"
                )
        for metric, direction in named:
            if not metric.startswith(("best_val_", "best_train_")):
                continue  # n_params and other summary metrics: either direction makes sense
            expected = "maximize" if metric_mode(metric) == "max" else "minimize"
            if direction != expected:
                value = monitor if key.startswith("trainer") else self.settings.objective_attrs
                raise SearchSpaceError(
                    f"hydra.sweeper.direction={direction!r} contradicts {key}={value!r} (the "
                    f"job returns {metric}): expected {expected}, or leave direction unset"
                )

    # -- the sweep --------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        """Run the study; the outcome is in optimization_results.yaml (and MLflow), and the
        return value is None, as Hydra's sweepers return."""
        ended = False
        preemption.install()
        try:
            self._sweep(arguments)
            ended = True
        except (SearchSpaceError, ConfigError) as e:
            raise exit_with(e) from None
        except SweepFailed as e:
            raise exit_with(e, status=1, what="sweep stopped") from None
        finally:
            # A pool of workers: let them stop (the sweep's analysis runs meanwhile), or stop
            # them now when the sweep did not end, whatever they were doing.
            if hasattr(self.launcher, "shutdown"):
                self.launcher.shutdown(terminate=not ended)

    def _sweep(self, arguments: list[str]) -> None:
        self._build()
        self._check()
        warn_legacy(self.config.hydra.sweeper)
        params, fixed = parse(search_arguments(self.config.hydra.sweeper, arguments))
        for key in fixed:
            for p in [p for p in params if p.key == key]:
                params.remove(p)
        self._check_conditions(params)
        if is_hypersweep_job(self.config):
            self._check_space(params, fixed)
        sampler = self._with_space(self.sampler, params)
        if isinstance(sampler, optuna.samplers.GridSampler):
            size = math.prod(len(v) for v in sampler._search_space.values())
            if size < self.settings.n_trials:
                log.info("Grid of %d points: n_trials %d -> %d", size, self.settings.n_trials, size)
                self.settings.n_trials = size
        name = self.settings.study_name or default_study_name(self.config, arguments)
        storage = open_storage(self.settings.storage)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=self.pruner,
            directions=self.directions,
            load_if_exists=True,
        )
        pruner_cfg = self.config.hydra.sweeper.get("pruner")
        study.set_user_attr(
            "pruner", OmegaConf.to_container(pruner_cfg, resolve=True) if pruner_cfg else None
        )
        register_live_study(self.settings.storage or "", study)
        resumed = self._recover(study, params)
        sampler = study.sampler = self._reseeded(study, params)
        log.info(
            "Study %s (%s), storage %s, sampler %s, pruner %s%s",
            name,
            "/".join(self.directions),
            self.settings.storage or "in memory",
            type(sampler).__name__,
            type(self.pruner).__name__ if self.pruner else "none",
            f", resuming with {resumed} trials done" if resumed else "",
        )

        total = self.settings.n_trials * self.settings.stages
        budget = FailureBudget(self.settings.max_failure_rate, total)
        heartbeat = Heartbeat(study)
        self._progress = SweepProgress(total, trials_counted(study))
        try:
            for stage in range(1, self.settings.stages + 1):
                if stage > 1:
                    params = self._narrow(study, params)
                target = self.settings.n_trials * stage
                self._run_stage(study, params, fixed, target, budget)
        finally:
            self._progress.close()
            heartbeat.close()
        self._write_results(study, params)

    def _check_space(self, params: list[Param], fixed: dict[str, str | None]) -> None:
        """Every value the search space reaches, checked before the first trial
        (hypersweep.search.checks): each option of a swept config group (the others at their
        first), and the bounds or choices of every other key."""
        loader = self.hydra_context.config_loader
        groups = [
            p for p in params if structural(p.key, lambda k: bool(loader.get_group_options(k)))
        ]
        base = [k if v is None else f"{k}={v}" for k, v in fixed.items()]

        def job(choices: dict[str, Any]) -> list[str]:
            return base + [
                p.override(choices.get(p.key, p.distribution.choices[0])) for p in groups
            ]

        jobs: list = [((), job({}), [])]
        for p in groups:
            jobs += [((p.key, c), job({p.key: c}), []) for c in p.distribution.choices[1:]]
        jobs[0][2].extend(
            (
                p.key,
                p.value(s),
                False,
                f"the search space of {p.key} ({_reach_text(p)}) has {p.value(s)!r}",
            )
            for p in params
            if p not in groups
            for s in _reach(p)
        )

        def compose(overrides: Sequence[str]) -> DictConfig:
            return loader.load_sweep_config(self.config, list(overrides))

        check_jobs(jobs, compose)

    def _with_space(self, sampler: Any, params: list[Param]) -> Any:
        """The grid sampler is built partially: it takes the search space here."""
        if isinstance(sampler, functools.partial):
            return sampler({p.name: grid_values(p) for p in params})
        return sampler

    def _reseeded(self, study: optuna.Study, params: list[Param]) -> Any:
        """The sampler for a study that already has trials. A seeded sampler restarted with its
        seed would draw again what the first command drew (a resumed or extended random study
        repeated its configurations), so it continues with a seed derived from the seed and
        the number of trials the study holds: still reproducible, never the same draws. QMC
        keeps its seed: it continues its sequence from the study's own count."""
        seed = self.sampler_cfg.get("seed") if hasattr(self.sampler_cfg, "get") else None
        done = len(study.get_trials(deepcopy=False))
        if seed is None or not done or isinstance(study.sampler, optuna.samplers.QMCSampler):
            return study.sampler
        # Another command working on the study now would draw what this one draws: each its own.
        shared = f":{HOST}:{os.getpid()}" if running_elsewhere(study) else ""
        digest = hashlib.sha256(f"{seed}:{done}{shared}".encode()).digest()
        cfg = OmegaConf.merge(self.sampler_cfg, {"seed": int.from_bytes(digest[:4], "big")})
        log.info("Sampler reseeded for a study with %d trials (seed %s and that count)", done, seed)
        return self._with_space(_built(cfg, "sampler"), params)

    def _recover(self, study: optuna.Study, params: list[Param]) -> int:
        """Trials left RUNNING by an interrupted sweep are marked FAIL; those another live
        command runs are left to it. An interrupted or preempted trial is enqueued with its
        parameters (where the search space still holds them), so that none is lost: the next
        trials asked run them again, a preempted one from the state its job saved (found by
        its config, hypersweep.job). Returns trials done."""
        storage, now = study._storage, time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _alive(trial, now):
                owner = trial.user_attrs.get("owner") or {}
                log.info(
                    "Trial %d is running in another command (%s): left to it",
                    trial.number,
                    f"{owner['host']}, pid {owner['pid']}" if owner else "just asked",
                )
                continue
            if trial.user_attrs.get("status_reason") != "preempted":
                storage.set_trial_user_attr(trial._trial_id, "status_reason", "interrupted")
                log.warning(
                    "Trial %d was interrupted in an earlier sweep: marked FAIL", trial.number
                )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            _close_mlflow_run(study, trial)
        trials = study.get_trials(deepcopy=False)
        space = {p.name: p.distribution for p in params}
        taken = {t.user_attrs.get(k) for t in trials for k in ("continues_trial", "reruns_trial")}
        for trial in trials:
            reason = trial.user_attrs.get("status_reason")
            if trial.state != TrialState.FAIL or reason not in RUN_AGAIN or trial.number in taken:
                continue
            if not all(
                name in space and space[name]._contains(space[name].to_internal_repr(value))
                for name, value in trial.params.items()
            ):
                continue  # the search space changed since: not this sweep's to run again
            # A population's member saves no state (hypersweep.job): it runs again afresh.
            preempted = reason == "preempted" and trial.user_attrs.get("state_saved", True)
            key = "continues_trial" if preempted else "reruns_trial"
            study.enqueue_trial(trial.params, user_attrs={key: trial.number})
            log.info(
                "Trial %d was %s: it runs again%s",
                trial.number,
                reason,
                " from its saved state" if preempted else " from its start",
            )
        return trials_run(study)

    def _run_stage(
        self,
        study: optuna.Study,
        params: list[Param],
        fixed: dict[str, str | None],
        target: int,
        budget: FailureBudget,
    ) -> None:
        if hasattr(self.launcher, "submit"):
            return self._run_stage_async(study, params, fixed, target, budget)
        if getattr(self.launcher, "refill", False) and hasattr(self.launcher, "launch_fed"):
            return self._run_stage_fed(study, params, fixed, target, budget)
        # A launcher that trains a batch together (`hydra/launcher=population`) takes its size.
        per_batch = max(self.settings.n_jobs, getattr(self.launcher, "batch_size", 1))
        while (done := trials_counted(study)) < target:
            preemption.raise_if_requested("between trials: the same command continues the study")
            batch: list[optuna.Trial] = []
            try:
                with _sigint_held():  # every trial asked is in `batch`
                    size = min(per_batch, target - done)
                    overrides = self._ask_batch(study, batch, size, params, fixed)
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException as e:
                # No lost trial: a crash of the batch fails its trials; a stopped one is run
                # again by the next command (from its saved state when it was preempted).
                stopped = isinstance(e, (KeyboardInterrupt, preemption.Preempted))
                _fail_running(study, batch, reason="interrupted" if stopped else None)
                raise
            self.job_idx += len(returns)
            for trial, ret in zip(batch, returns, strict=True):
                self._tell_and_check(study, trial, ret, budget)

    def _ask_batch(
        self,
        study: optuna.Study,
        batch: list[optuna.Trial],
        size: int,
        params: list[Param],
        fixed: dict[str, str | None],
    ) -> list[list[str]]:
        """Ask `size` trials into `batch`; their overrides. For a launcher that trains a batch
        as populations, the batch is homogeneous (`_ask_like`: the first trial's structure)."""
        overrides = []
        for i in range(size):
            batch.append(self._ask_like(study, params, batch[0].params if i else None))
            overrides.append(self._trial_overrides(study, batch[-1], params, fixed))
        return overrides

    def _ask_like(
        self, study: optuna.Study, params: list[Param], like: dict[str, Any] | None
    ) -> optuna.Trial:
        """Ask a trial; with `like` (a trial's params) and a launcher that trains populations
        (`per_member`), one with like's structural params (enqueued partial params), so the
        sampler chooses the structure once for a population and each member's own values."""
        per_member = getattr(self.launcher, "per_member", None)
        grid = isinstance(study.sampler, optuna.samplers.GridSampler)  # the grid decides
        if like is None or per_member is None or grid:
            return ask(study)
        shared = {p.name: like[p.name] for p in params if p.name in like and not per_member(p.key)}
        # Optuna asks a waiting trial first (one a stopped command left, enqueued again):
        # enqueuing now would leave this one waiting past the sweep's end.
        if shared and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.enqueue_trial(shared, skip_if_exists=False)
        return ask(study)

    def _run_stage_fed(
        self,
        study: optuna.Study,
        params: list[Param],
        fixed: dict[str, str | None],
        target: int,
        budget: FailureBudget,
    ) -> None:
        """With a launcher that asks for its jobs (`hydra/launcher=population`, `launch_fed`):
        a trial is asked as soon as a slot is free, like a trial of its choice (its
        structure), and told as soon as its job ends."""
        asked: dict[int, optuna.Trial] = {}  # by job number: asked, not yet told
        chosen: dict[int, dict[str, Any]] = {}  # every asked trial's params, by job number
        sweeper = self

        class StudyFeed(Feed):
            def ask(self, like: int | None) -> tuple[int, list[str]] | None:
                if preemption.requested() or trials_counted(study) + len(asked) >= target:
                    return None
                with _sigint_held():  # every trial asked is in `asked`
                    trial = sweeper._ask_like(study, params, chosen.get(like))  # type: ignore[arg-type]
                    number = sweeper.job_idx
                    sweeper.job_idx += 1
                    asked[number] = trial
                    overrides = sweeper._trial_overrides(study, trial, params, fixed)
                    chosen[number] = trial.params  # suggested now
                return number, overrides

            def tell(self, number: int, ret: Any) -> None:
                sweeper._tell_and_check(study, asked[number], ret, budget)
                del asked[number]  # told: no longer the sweep's to fail

        try:
            self.launcher.launch_fed(StudyFeed())
        except BaseException:
            # No lost trial: the trials not told were stopped with the sweep (a signal, its
            # failure budget, a crash of the launcher), and the next command runs them again.
            _fail_running(study, list(asked.values()), reason="interrupted")
            raise
        preemption.raise_if_requested("between trials: the same command continues the study")

    def _run_stage_async(
        self,
        study: optuna.Study,
        params: list[Param],
        fixed: dict[str, str | None],
        target: int,
        budget: FailureBudget,
    ) -> None:
        """With a launcher that takes one job at a time (`hydra/launcher=hypersweep_pool`):
        n_jobs trials run at once (by default the launcher's), and the next trial is asked as
        soon as any one ends."""
        n_jobs = self.settings.n_jobs
        slots = n_jobs if n_jobs > 1 else getattr(self.launcher, "n_jobs", 1)
        running: dict[Future, optuna.Trial] = {}
        stopped: list[optuna.Trial] = []  # preempted: their jobs saved their state
        # Asked but not yet running: a submit can fail (the pool broke while the last trial
        # ended), and the trial must not stay RUNNING in the study.
        asked: list[optuna.Trial] = []
        grace_ends = math.inf
        try:
            while True:
                while (
                    not preemption.requested()
                    and len(running) < slots
                    and trials_counted(study) + len(running) < target
                ):
                    with _sigint_held():  # every trial asked is in `running`
                        asked = [ask(study)]
                        overrides = self._trial_overrides(study, asked[0], params, fixed)
                        future = self.launcher.submit(overrides, self.job_idx)
                        running[future] = asked.pop()
                    self.job_idx += 1
                if preemption.requested():
                    # The workers got SIGTERM too (preemption.forward_to): their jobs save
                    # their state and end; wait for them, then stop.
                    grace_ends = min(grace_ends, time.monotonic() + PREEMPT_GRACE_S)
                    if not running or time.monotonic() > grace_ends:
                        break
                if not running:
                    return
                ended, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in sorted(ended, key=lambda f: running[f].number):
                    if isinstance(future.exception(), preemption.Preempted):
                        stopped.append(running.pop(future))
                        continue
                    ret = future.result()  # a worker that died raises here
                    self._tell_and_check(study, running[future], ret, budget)
                    del running[future]  # told: no longer the sweep's to fail
            _fail_running(study, stopped, reason="interrupted")
            saved = sum(
                study._storage.get_trial(t._trial_id).user_attrs.get("status_reason") == "preempted"
                for t in stopped
            )
            raise preemption.stop(
                f"{saved} running trial(s) saved their state"
                + (f", {len(running)} did not in {PREEMPT_GRACE_S:.0f} s" if running else "")
                + ": the same command continues the study"
            )
        except BaseException as e:
            # No lost trial: the trials still running (a worker died, or the sweep was
            # interrupted) are marked as an interrupted sweep's are, and their runs closed; the
            # same command resumes the study and runs them again.
            for future in running:
                future.cancel()
            trials = list(running.values()) + stopped
            _fail_running(study, trials + asked, close_runs=True, reason="interrupted")
            if isinstance(e, (BrokenProcessPool, *getattr(self.launcher, "worker_lost", ()))):
                numbers = ", ".join(str(t.number) for t in sorted(trials + asked, key=_number))
                raise SweepFailed(
                    f"a worker process died while running trial {numbers} (killed, or out of "
                    "memory?); marked interrupted: the same command resumes the sweep"
                ) from None
            raise

    def _tell_and_check(
        self, study: optuna.Study, trial: optuna.Trial, ret: Any, budget: FailureBudget
    ) -> None:
        """Tell a trial's outcome, and stop the sweep past its failure budget."""
        error = self._tell(study, trial, ret)
        if self._progress is not None:
            self._progress.told(trials_counted(study), study)
        budget.spend(study, error)

    def _check_conditions(self, params: list[Param]) -> None:
        searched = {p.key for p in params}
        for key, condition in self.settings.conditions.items():
            if not isinstance(condition, dict) or not all(
                isinstance(v, list) and v for v in condition.values()
            ):
                raise SearchSpaceError(
                    f"hydra.sweeper.conditions.{key}={condition!r} is not allowed: expected "
                    "{other_key: [values, ...]}, e.g. {optimizer: [adam, momentum]}"
                )
            if key not in searched:
                raise SearchSpaceError(
                    f"hydra.sweeper.conditions.{key}: {key} is not searched: expected a key of "
                    f"the search space ({', '.join(sorted(searched)) or 'none'})"
                )
            if key in condition:
                raise SearchSpaceError(f"hydra.sweeper.conditions.{key} depends on itself")
        if self.settings.conditions and isinstance(self.sampler, functools.partial):
            raise SearchSpaceError(
                "hydra.sweeper.conditions: the grid sampler tries every combination: expected "
                "no conditions with hydra/sweeper/sampler=grid"
            )

    def _suggest(
        self, trial: optuna.Trial, params: list[Param], fixed: dict[str, str | None]
    ) -> None:
        """Sample the trial's params, define-by-run: a param with a condition
        (`hydra.sweeper.conditions`) only where the keys it names, sampled in this trial, fixed
        on the command line or in the config, hold one of the listed values (momentum only for
        optimizers that use it). A param left out is not a dimension of the sampler's model for
        that trial, and the job keeps the config's value."""
        by_key = {p.key: p for p in params}
        values: dict[str, Any] = {}  # config key -> value, for the params decided so far
        pending = list(params)
        conditions = self.settings.conditions
        while pending:
            ready = [
                p
                for p in pending
                if not any(k in by_key and k not in values for k in conditions.get(p.key, {}))
            ]
            if not ready:
                raise SearchSpaceError(
                    "hydra.sweeper.conditions form a cycle: "
                    + ", ".join(sorted(p.key for p in pending))
                )
            for p in ready:
                pending.remove(p)
                if self._condition_holds(p.key, values, fixed):
                    values[p.key] = p.value(trial._suggest(p.name, p.distribution))
                else:
                    values[p.key] = _SKIPPED

    def _condition_holds(
        self, key: str, values: dict[str, Any], fixed: dict[str, str | None]
    ) -> bool:
        for other, allowed in self.settings.conditions.get(key, {}).items():
            if other in values:
                value = values[other]
            elif other in fixed:
                value = fixed[other]
            elif other in self.config.hydra.runtime.choices:
                value = self.config.hydra.runtime.choices[other]
            else:
                value = OmegaConf.select(self.config, other, default=None)
            if value is _SKIPPED or str(value) not in {str(a) for a in allowed}:
                return False
        return True

    def _trial_overrides(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        params: list[Param],
        fixed: dict[str, str | None],
    ) -> list[str]:
        self._suggest(trial, params, fixed)
        if self.custom_search_space:
            self.custom_search_space(self.config, trial)
        by_name = {p.name: p for p in params}
        overrides = [k if v is None else f"{k}={v}" for k, v in fixed.items()]
        for name, value in trial.params.items():
            p = by_name.get(name)
            overrides.append(p.override(value) if p else f"{name}={value!r}")
        trial.set_user_attr("scales", {p.key: p.scale for p in params if p.name in trial.params})
        env = {
            TRIAL_ENV: str(trial._trial_id),
            STUDY_ENV: study.study_name,
            STORAGE_ENV: self.settings.storage or "",
        }
        overrides += [f"++hydra.job.env_set.{k}='{v}'" for k, v in env.items()]
        return overrides

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> str | None:
        """Tell the trial's outcome; returns an error message for a failed trial."""
        attrs = study._storage.get_trial(trial._trial_id).user_attrs
        try:
            value = ret.return_value  # raises the job's exception if it failed
            if attrs.get("status_reason") in ("pruned", "diverged"):
                # A diverged trial is PRUNED: samplers learn from its last reported value, and
                # it does not count toward max_failure_rate (the config was valid, just bad).
                _tell(study, trial, state=TrialState.PRUNED)
                return None
            values = self._values(value, attrs)
        except RejectedResult as e:
            study._storage.set_trial_user_attr(trial._trial_id, "status_reason", "rejected")
            _tell(study, trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: its result was rejected: %s", trial.number, e)
            return None
        except Exception as e:  # noqa: BLE001 - the job's own error, whatever it is
            reason = getattr(e, "status_reason", "failed")  # timed_out: trainer.time_limit_s
            study._storage.set_trial_user_attr(trial._trial_id, "status_reason", reason)
            _tell(study, trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: %s: %s", trial.number, type(e).__name__, e)
            return f"trial {trial.number}: {type(e).__name__}: {e}"
        _tell(study, trial, values=values)
        return None

    def _values(self, value: Any, attrs: dict[str, Any]) -> list[float]:
        if self.settings.objective_attrs:
            summary = attrs.get("summary", {})
            missing = [a for a in self.settings.objective_attrs if a not in summary]
            if missing:
                raise KeyError(
                    f"the job left no summary metric {missing[0]!r} "
                    f"(has: {', '.join(sorted(summary))})"
                )
            values = [float(summary[a]) for a in self.settings.objective_attrs]
        else:
            try:
                several = len(self.directions) > 1
                values = [float(v) for v in value] if several else [float(value)]
            except (TypeError, ValueError):
                expected = "a list of numbers" if several else "a number"
                raise RejectedResult(f"the job returned {value!r}: expected {expected}") from None
        if len(values) != len(self.directions):
            raise RejectedResult(
                f"{len(values)} objective values for {len(self.directions)} directions"
            )
        if not all(math.isfinite(v) for v in values):
            raise RejectedResult(f"non-finite objective {values}")
        return values

    # -- coarse to fine ---------------------------------------------------------------------
    def _narrow(self, study: optuna.Study, params: list[Param]) -> list[Param]:
        """Numeric intervals shrink to the span of the best trials so far (plus a margin)."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(self.directions) > 1 or not done:
            return params
        reverse = self.directions[0] == "maximize"
        ranked = sorted(done, key=lambda t: t.value, reverse=reverse)
        top = ranked[: max(2, math.ceil(len(ranked) * self.settings.top_fraction))]
        narrowed, margin = [], self.settings.margin
        for p in params:
            d = p.distribution
            values = [t.params[p.name] for t in top if p.name in t.params]
            if isinstance(d, CategoricalDistribution) or not values:
                narrowed.append(p)
                continue
            lo, hi = min(values), max(values)
            if d.log:
                span = math.log(hi) - math.log(lo)
                lo, hi = lo * math.exp(-margin * span), hi * math.exp(margin * span)
            else:
                span = hi - lo
                lo, hi = lo - margin * span, hi + margin * span
            lo, hi = max(lo, d.low), min(hi, d.high)
            if isinstance(d, IntDistribution):
                lo, hi = math.floor(lo), math.ceil(hi)
                lo = d.low + (lo - d.low) // d.step * d.step
                hi = lo + (hi - lo) // d.step * d.step
                new = IntDistribution(lo, max(hi, lo), log=d.log, step=d.step)
            elif d.step is not None:
                lo = d.low + math.floor((lo - d.low) / d.step) * d.step
                hi = lo + math.floor((hi - lo) / d.step + 1e-9) * d.step
                new = FloatDistribution(lo, max(hi, lo), step=d.step)
            else:
                new = FloatDistribution(lo, max(hi, lo * (1 + 1e-9) if d.log else lo), log=d.log)
            log.info("coarse-to-fine: %s %s -> [%.4g, %.4g]", p.name, p.scale, new.low, new.high)
            narrowed.append(Param(p.key, p.name, new, p.scale))
        return narrowed

    # -- results ----------------------------------------------------------------------------
    def _write_results(self, study: optuna.Study, params: list[Param]) -> None:
        by_name = {p.name: p for p in params}
        counts = {
            s.name: len(study.get_trials(deepcopy=False, states=(s,)))
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }

        def overrides(trial: optuna.trial.FrozenTrial) -> list[str]:
            return [
                by_name[n].override(v) if n in by_name else f"{n}={v}"
                for n, v in trial.params.items()
            ]

        results: dict[str, Any] = {
            "name": "optuna",  # hydra-optuna-sweeper's, so that tools reading its file read ours
            "study_name": study.study_name,
            "storage": self.settings.storage,
            "trials": counts,
        }
        if counts["COMPLETE"] == 0:
            log.warning("No trial completed; no best trial to report")
        elif len(self.directions) == 1:
            best = best_trial(study)
            results.update(
                best_params=dict(best.params),
                best_value=best.value,
                best_trial=best.number,
                best_overrides=overrides(best),
            )
            log.info("Best trial %d: %s = %s", best.number, " ".join(overrides(best)), best.value)
        else:
            results["solutions"] = [
                {
                    "params": dict(t.params),
                    "values": list(t.values),
                    "trial": t.number,
                    "overrides": overrides(t),
                }
                for t in study.best_trials
            ]
            log.info("Pareto front: %d trials", len(results["solutions"]))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")


_SKIPPED = object()  # a param whose condition did not hold in a trial


def _reach(p: Param) -> list[Any]:
    """The samples that bound what a param can give: its choices, or its interval's ends."""
    d = p.distribution
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    step = d.step if isinstance(d, IntDistribution) or d.step is not None else None
    high = d.low + (d.high - d.low) // step * step if step else d.high
    return [d.low, high]


def _reach_text(p: Param) -> str:
    d = p.distribution
    if isinstance(d, CategoricalDistribution):
        return "choice of " + ", ".join(map(repr, d.choices))
    return f"{p.scale} over [{d.low}, {d.high}]"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's best trial, a tie broken as `hypersweep best` breaks it: by the lower
    validation loss the job left on the trial (accuracy on a few hundred rows moves in steps of
    one row, so ties are common), then the earlier trial. Optuna's own `best_trial` takes the
    first of a tie, which need not be the run that `hypersweep best` selects."""
    value = study.best_trial.value
    tied = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value == value
    ]
    return min(tied, key=lambda t: (tie_break(t.user_attrs.get("summary", {})), t.number))


def _tell(study: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> None:
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is exhausted, which only works inside
        # study.optimize; the trial is told by then and the loop ends on n_trials anyway.
        if "Study.stop" not in str(e):
            raise


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise it: a trial is never asked from
    the study without the sweep knowing it (in the main thread; elsewhere a plain block)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *received: held.append(received))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(*held[0])  # Python's own handler: raises KeyboardInterrupt
        elif held and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def _number(trial: optuna.Trial) -> int:
    return trial.number


def _fail_running(
    study: optuna.Study, trials: list, close_runs: bool = False, reason: str | None = None
) -> None:
    """Mark FAIL those of `trials` still RUNNING (a crash, an interrupt), with `reason` as
    their status_reason; with `close_runs`, also close their MLflow runs, which a worker that
    died could not."""
    failed = []
    for t in trials:  # the study first: every trial is marked before any run is touched
        frozen = study._storage.get_trial(t._trial_id)
        if frozen.state == TrialState.RUNNING:
            if reason and frozen.user_attrs.get("status_reason") != "preempted":
                study._storage.set_trial_user_attr(t._trial_id, "status_reason", reason)
            _tell(study, t, state=TrialState.FAIL)
            failed.append(frozen)
    for frozen in failed if close_runs else []:
        try:
            _close_mlflow_run(study, frozen)
        except Exception as e:  # noqa: BLE001 - e.g. its job closing the run at the same time
            # A run left RUNNING is closed by the next command (tracking.close_orphaned_runs).
            log.warning("Trial %d: could not close its MLflow run: %s", frozen.number, e)


def _close_mlflow_run(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("mlflow_uri"):
        from hypersweep.tracking.store import close_interrupted_trial_runs

        close_interrupted_trial_runs(trial.user_attrs["mlflow_uri"], study.study_name, trial.number)
