"""`hydra/launcher=population`: a sweep's jobs that share an architecture train as one stacked
population (`hypersweep.core.population`), each still a job of its own.

Whatever sweeper hands the batch (Hydra's grid, the `hypersweep` sweeper, the official Optuna
sweeper), each job's config is composed here and the jobs are grouped by everything a member
cannot have of its own (`structure`): the model's architecture and sizes, the data, the batch
size, the optimizer family, precision and device. Each group, `size` jobs at most, trains as
one population in this process; a job that cannot join (cross-validation, a time limit, fp16,
`hydra.job.chdir`, or a group of one) runs as Hydra's basic launcher runs it, in the same sweep.

Each member is a job run by Hydra's own `run_job` in a thread of its own: the same output
directory, `.hydra/` files, job log, callbacks, MLflow run and return value as when it runs
alone. The threads take turns with the launcher (`core.population.Seat`): every job sets up
(its data, its model from its own seed, its run) and hands over its training; the launcher
trains the population, calling each job's per-epoch logging and pruning; then each job, the
last one first, records and ends as it would alone.
"""

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.hypersweep_sweeper.population.PopulationLauncher"
    size: int = 16  # members of one population at most


ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="hypersweep"
)

# Keys of a job's config that each member of a population has of its own; every other key is
# structural: members of one population have equal values there.
PER_MEMBER = (
    "lr",
    "momentum",
    "resume_from",
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.beta1",
    "optimizer.beta2",
    "optimizer.eps",
    "optimizer.alpha",
    "optimizer.dampening",
    "regularization.l1",
    "regularization.l2",
    "regularization.dropout",
    "model.dropout",
    "scheduler",
    "trainer.seed",
    "trainer.max_epochs",
    "trainer.early_stopping",
)


def per_member(key: str) -> bool:
    """Whether a config key (`optimizer.lr`) may differ between a population's members."""
    key = key.lstrip("+~")
    return any(key == k or key.startswith(k + ".") for k in PER_MEMBER)


def why_alone(cfg: DictConfig) -> str | None:
    """Why a job, by its config, cannot join a population (None: it can)."""
    if cfg.hydra.job.get("chdir"):
        return "hydra.job.chdir=true (the members share one working directory)"
    if cfg.data.get("cv_folds"):
        return "data.cv_folds (its folds train stacked already)"
    if cfg.trainer.get("time_limit_s"):
        return "trainer.time_limit_s (a member's time cannot be told apart)"
    if cfg.trainer.get("precision") == "fp16":
        return "trainer.precision=fp16 (one loss scale would couple the members)"
    return None


def structure(cfg: DictConfig) -> str:
    """The job's structural config: what members of one population share."""
    job = {  # the job's own keys, resolved against the whole config
        key: OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif not per_member(prefix[:-1]):
            flat[prefix[:-1]] = node

    walk(job, "")
    dropout = OmegaConf.select(cfg, "model.dropout", default=0) or 0
    flat["has dropout layers"] = float(dropout) > 0  # a rate of 0 builds none
    return repr(sorted(flat.items()))


def _time_callbacks(entrants: list[Any]) -> list[float]:
    """Wrap each entrant's per-epoch callback to add its seconds to the returned total."""
    spent = [0.0]

    def timed(callback: Any) -> Any:
        def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
            started = time.perf_counter()
            try:
                return callback(epoch, metrics)
            finally:
                spent[0] += time.perf_counter() - started

        return on_epoch

    for e in entrants:
        if e.on_epoch is not None:
            e.on_epoch = timed(e.on_epoch)
    return spent


class PopulationLauncher(Launcher):
    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    @property
    def batch_size(self) -> int:
        """How many trials the `hypersweep` sweeper hands at once."""
        return self.size

    @staticmethod
    def per_member(key: str) -> bool:
        """Whether a swept key may differ within a population (the `hypersweep` sweeper fixes
        the others across a batch: see `_impl._ask_batch`)."""
        return per_member(key)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            from hypersweep.errors import ConfigError, exit_with

            raise exit_with(
                ConfigError(
                    f"hydra.launcher.size={self.size!r} is not allowed: expected an integer >= 1"
                )
            )
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        from hypersweep.core import preemption

        preemption.install()  # the members' threads cannot: SIGTERM stops the population

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(
            "Launching %d jobs in populations of up to %d, sweep output dir : %s",
            len(job_overrides),
            self.size,
            self.config.hydra.sweep.dir,
        )
        configs = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = str(idx)
                cfg.hydra.job.num = idx
            configs.append(cfg)
        returns: list[JobReturn | None] = [None] * len(configs)
        from hypersweep.core import preemption

        for chunk in self._chunks(configs):
            if preemption.requested():  # stopped between two chunks: run no more
                left = len(configs) - sum(r is not None for r in returns)
                raise preemption.stop(f"{left} job(s) not started: the same command runs them")
            if len(chunk) == 1:
                returns[chunk[0]] = self._run(configs[chunk[0]])
            else:
                done = self._population([configs[i] for i in chunk])
                for i, ret in zip(chunk, done, strict=True):
                    returns[i] = ret
        return returns  # type: ignore[return-value]

    def _chunks(self, configs: list[DictConfig]) -> list[list[int]]:
        """The jobs (by index) as populations of one structure, `size` at most, and the jobs
        that run alone (chunks of one)."""
        groups: dict[str, list[int]] = {}
        alone: list[list[int]] = []
        for i, cfg in enumerate(configs):
            reason = why_alone(cfg)
            if reason is not None:
                log.info("#%d runs alone: %s", int(cfg.hydra.job.num), reason)
                alone.append([i])
            else:
                groups.setdefault(structure(cfg), []).append(i)
        size = self.size
        return alone + [g[s : s + size] for g in groups.values() for s in range(0, len(g), size)]

    def _run(self, cfg: DictConfig) -> JobReturn:
        """One job, as Hydra's basic launcher runs it."""
        assert self.hydra_context is not None and self.task_function is not None
        ret = run_job(  # sets Hydra's runtime config to the job's
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _population(self, configs: list[DictConfig]) -> list[JobReturn]:
        from hypersweep.core import preemption
        from hypersweep.core.fit import Interrupted
        from hypersweep.core.population import Seat, fit_population, populations
        from hypersweep.core.population import why_alone as why_member_alone

        environment = dict(os.environ)
        seats: list[Seat] = []
        for cfg in configs:  # each sets up and hands over its training, or ends
            if preemption.requested():  # stopped while the others set up: start no more
                break
            seat = Seat()
            seat.start(partial(self._run, cfg))
            seats.append(seat)
        not_started = len(configs) - len(seats)
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        number = {
            id(s): int(c.hydra.job.num) for s, c in zip(seats, configs[: len(seats)], strict=True)
        }
        joined = [s for s in seats if s.joined]
        entrants = [s.entrant for s in joined]
        outcome: dict[int, tuple[Any, BaseException | None]] = {}  # by id(seat)
        stopped: Interrupted | None = None
        for group in populations(entrants):  # type: ignore[arg-type]
            members = [joined[i] for i in group]
            if len(group) == 1 and stopped is None:
                (s,) = members
                reason = why_member_alone(s.entrant) or "no other job has its structure"
                log.info("#%d trains alone: %s", number[id(s)], reason)
            if len(group) == 1 or stopped is not None:
                for s in members:  # alone (None), or not trained: stopped first
                    outcome[id(s)] = (None, stopped)
                continue
            jobs = ", ".join(f"#{number[id(s)]}" for s in members)
            log.info("\tpopulation of %d: %s", len(group), jobs)
            entrants_of = [s.entrant for s in members]
            spent = _time_callbacks(entrants_of)  # type: ignore[arg-type]
            started = time.perf_counter()
            try:
                results = fit_population(entrants_of, interrupted=preemption.requested)  # type: ignore[arg-type]
            except Interrupted as stop:
                stopped = stop
                results = [None] * len(members)
            except Exception as e:  # noqa: BLE001 - each member fails with it
                results = [None] * len(members)
                for s in members:
                    outcome[id(s)] = (None, e)
                continue
            for s, result in zip(members, results, strict=True):
                outcome[id(s)] = (result, stopped)
            if stopped is None:
                wall = time.perf_counter() - started
                epochs = sum(r.epochs_run for r in results if r is not None)
                log.info(
                    "\tpopulation of %d: %d member-epochs in %.1f s, %.0f%% of it the members' "
                    "per-epoch logging and pruning",
                    len(group),
                    epochs,
                    wall,
                    100 * spent[0] / max(wall, 1e-9),
                )
        # The last job first: Hydra's per-job state (the environment, the runtime config) is
        # restored as each one ends, in the reverse order of their starts.
        for seat, cfg in reversed(list(zip(seats, configs[: len(seats)], strict=True))):
            if seat.joined:
                configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)  # its own job log
                HydraConfig.instance().set_config(cfg)
                result, error = outcome[id(seat)]
                seat.resume(result, error)
        os.environ.clear()
        os.environ.update(environment)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        raise_now = None
        if stopped is not None or not_started:
            # One line for the population: the jobs stopped in training, and those never started.
            said = []
            if stopped is not None:
                said.append(
                    f"{sum(e is stopped for _, e in outcome.values())} job(s) stopped in epoch "
                    f"{stopped.epoch} of their population, their runs KILLED"
                )
            if not_started:
                said.append(f"{not_started} job(s) not started")
            raise_now = preemption.stop(", ".join(said) + ": the same command runs them again")
        for seat in seats:
            if seat.raised is not None:  # a preemption (SystemExit), or Hydra's own error
                raise seat.raised
        if raise_now is not None:
            raise raise_now
        return [seat.returned for seat in seats]
