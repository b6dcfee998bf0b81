"""`hydra/launcher=population`: a sweep's jobs that share an architecture train as stacked
populations (`hypersweep.core.population`), each still a job of its own.

Up to `size` jobs train at once. Whatever sweeper hands the jobs (Hydra's grid, the official
Optuna sweeper: a batch; the `hypersweep` sweeper: one trial per free slot, `launch_fed`), each
job's config is composed here, and a job joins a training population of its structure or
starts one: what a member cannot have of its own (`structure`) is the model's architecture and
sizes, the data, the batch size, the optimizer family, precision and device. A job that cannot
join (cross-validation, a time limit, fp16, `hydra.job.chdir`, a recurrent model) runs as
Hydra's basic launcher runs it, in the same sweep.

Each member is a job run by Hydra's own `run_job` in a thread of its own: the same output
directory, `.hydra/` files, job log, callbacks, MLflow run and return value as when it runs
alone. The threads take turns with the launcher (`core.population.Seat`): a job sets up (its
data, its model from its own seed, its run) and hands over its training; the launcher trains
every population an epoch at a time, calling each job's per-epoch logging and pruning; a job
whose member stops records and ends as it would alone, and its slot takes the next job."""

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
    size: int = 16  # members training at once, at most
    # The hypersweep sweeper hands a freed slot its next trial at once (true), or hands trials
    # in batches of `size`, each batch waiting for its last member (false).
    refill: bool = True
    # Trials that share one structure, the first sampled in full (null: `size`).
    trials_per_structure: int | None = None


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


def _timed(entrant: Any, spent: list[float]) -> None:
    """Wrap the entrant's per-epoch callback to add its seconds to `spent[0]`."""
    callback = entrant.on_epoch
    if callback is None:
        return

    def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
        started = time.perf_counter()
        try:
            return callback(epoch, metrics)
        finally:
            spent[0] += time.perf_counter() - started

    entrant.on_epoch = on_epoch


class Feed:
    """Where the launcher gets its jobs and gives their returns. `ask(like)`: the next job
    (its number and overrides), or None when no more are due; `like` is the number of a job
    whose structure the next one takes (None: any structure). `tell(number, ret)`: a job's
    return, as soon as it has ended. The `hypersweep` sweeper's feed asks its study (one
    trial per freed slot); Hydra's `launch` hands a list."""

    def ask(self, like: int | None) -> tuple[int, Sequence[str]] | None:
        raise NotImplementedError

    def tell(self, number: int, ret: JobReturn) -> None:
        raise NotImplementedError

    def pending(self) -> int:
        """Jobs the feed holds that were never asked (a stop says how many did not start)."""
        return 0


class _ListFeed(Feed):
    """A batch Hydra's `launch` hands: its jobs in order of structure (the jobs of one
    structure follow each other, so they meet in one population), their returns in the
    batch's order."""

    def __init__(self, jobs: list[tuple[int, Sequence[str], DictConfig]]) -> None:
        self.configs = {number: cfg for number, _, cfg in jobs}
        order = {}
        for number, _, cfg in jobs:
            order.setdefault(structure(cfg) if why_alone(cfg) is None else f"#{number}", []).append(
                number
            )
        self.queue = [number for numbers in order.values() for number in numbers]
        self.overrides = {number: overrides for number, overrides, _ in jobs}
        self.returns: dict[int, JobReturn] = {}

    def ask(self, like: int | None) -> tuple[int, Sequence[str]] | None:
        if not self.queue:
            return None
        number = self.queue.pop(0)
        return number, self.overrides[number]

    def tell(self, number: int, ret: JobReturn) -> None:
        self.returns[number] = ret

    def pending(self) -> int:
        return len(self.queue)


@dataclass
class _Stack:
    """A population being trained and its jobs' seats (by member index)."""

    population: Any  # core.population.Population
    seats: dict[int, Any]
    numbers: dict[int, int]  # job number by member index
    spent: list[float]  # seconds in the members' per-epoch callbacks
    started: float = 0.0  # its first epoch
    announced: bool = False
    epochs: int = 0


class PopulationLauncher(Launcher):
    def __init__(
        self, size: int = 16, refill: bool = True, trials_per_structure: int | None = None
    ) -> None:
        self.size = size
        self.refill = refill
        self.trials_per_structure = trials_per_structure
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    @property
    def batch_size(self) -> int:
        """How many trials the `hypersweep` sweeper hands at once (without refill)."""
        return self.size

    @staticmethod
    def per_member(key: str) -> bool:
        """Whether a swept key may differ within a population (the `hypersweep` sweeper fixes
        the others across the trials of one structure: see `_impl._ask_like`)."""
        return per_member(key)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hypersweep.errors import ConfigError, exit_with

        for key in ("size", "trials_per_structure"):
            value = getattr(self, key)
            if key == "trials_per_structure" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise exit_with(
                    ConfigError(
                        f"hydra.launcher.{key}={value!r} is not allowed: expected an integer >= 1"
                        + (" or null (size)" if key == "trials_per_structure" else "")
                    )
                )
        if not isinstance(self.refill, bool):
            raise exit_with(
                ConfigError(
                    f"hydra.launcher.refill={self.refill!r} is not allowed: expected true or false"
                )
            )
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        from hypersweep.core import preemption

        preemption.install()  # the members' threads cannot: SIGTERM stops the population

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Hydra's batch: every job composed first, then trained in populations of one
        structure, a freed slot taking the batch's next job."""
        assert self.config is not None and self.hydra_context is not None
        self._start(len(job_overrides))
        jobs = []
        for number, overrides in enumerate(job_overrides, initial_job_idx):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
            jobs.append((number, overrides, self._compose(overrides, number)))
        feed = _ListFeed(jobs)
        self._train(feed, composed=feed.configs)
        return [feed.returns[number] for number, _, _ in jobs]

    def launch_fed(self, feed: Feed) -> None:
        """The `hypersweep` sweeper's jobs, asked one per free slot: `size` members train at
        most, the first of each `trials_per_structure` trials sampled in full and the others
        with its structure (`like`), so a population stays full while its members stop."""
        self._start(None)
        self._train(feed, composed={})

    def _start(self, jobs: int | None) -> None:
        assert self.config is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(
            "Launching %s in populations of up to %d, sweep output dir : %s",
            f"{jobs} jobs" if jobs is not None else "jobs",
            self.size,
            self.config.hydra.sweep.dir,
        )

    def _compose(self, overrides: Sequence[str], number: int) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = str(number)
            cfg.hydra.job.num = number
        return cfg

    def _run(self, cfg: DictConfig) -> JobReturn:
        """One job, as Hydra's basic launcher runs it."""
        assert self.hydra_context is not None and self.task_function is not None
        try:
            return run_job(  # sets Hydra's runtime config to the job's
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=cfg,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        finally:
            self._back()

    def _back(self) -> None:
        """The launcher's own logging and environment again, after a job's turn."""
        assert self.config is not None
        os.environ.clear()
        os.environ.update(self._environment)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

    def _train(self, feed: Feed, composed: dict[int, DictConfig]) -> None:
        """Fill `size` slots from the feed, train every population an epoch at a time, end
        each job as its member stops and fill its slot again, until the feed has no more."""
        from hypersweep.core import preemption
        from hypersweep.core.fit import Interrupted

        self._environment = dict(os.environ)
        self._configs: dict[int, DictConfig] = {}
        self._env: dict[int, dict[str, str]] = {}  # each job's environment (its env_set)
        stacks: list[_Stack] = []
        structures: list[list[int]] = []  # [first job, trials asked] per structure, in order
        per_structure = self.trials_per_structure or self.size
        try:
            while True:
                self._fill(feed, composed, stacks, structures, per_structure)
                stacks = [s for s in stacks if s.population.live]
                if not stacks:
                    break
                for stack in stacks:
                    self._epoch(stack, feed)
        except Interrupted as stop:
            not_started = feed.pending()
            stopped = self._stop_all(stacks, stop)
            said = [
                f"{stopped} job(s) stopped in epoch {stop.epoch} of their population, "
                "their runs KILLED"
            ]
            if not_started:
                said.append(f"{not_started} job(s) not started")
            raise preemption.stop(", ".join(said) + ": the same command runs them again") from None
        except BaseException:
            # The sweep stopping (its failure budget), or the launcher's own crash: the members
            # still training end as interrupted jobs do (runs KILLED, status_reason=
            # interrupted), and the sweeper marks their trials to run again.
            self._stop_all(stacks, KeyboardInterrupt())
            raise
        finally:
            self._back()
        if preemption.requested() and (left := feed.pending()):  # stopped before any trained
            raise preemption.stop(f"{left} job(s) not started: the same command runs them")

    def _fill(
        self,
        feed: Feed,
        composed: dict[int, DictConfig],
        stacks: list[_Stack],
        structures: list[list[int]],
        per_structure: int,
    ) -> None:
        """Start jobs until `size` members train: each sets up and joins a population of its
        structure (or starts one), or runs alone."""
        from hypersweep.core import preemption
        from hypersweep.core.population import Population, Seat
        from hypersweep.core.population import why_alone as why_member_alone

        while sum(len(s.population.live) for s in stacks) < self.size:
            if preemption.requested():
                return
            shared = structures[-1] if structures and structures[-1][1] < per_structure else None
            asked = feed.ask(shared[0] if shared else None)
            if asked is None:
                return
            number, overrides = asked
            if shared:
                shared[1] += 1
            else:
                structures.append([number, 1])
            cfg = composed.get(number)
            if cfg is None:
                log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
                cfg = self._compose(overrides, number)
            reason = why_alone(cfg)
            if reason is not None:
                log.info("#%d runs alone: %s", number, reason)
                feed.tell(number, self._run(cfg))
                continue
            seat = Seat()
            seat.start(partial(self._run, cfg))  # it sets up and hands over its training
            if not seat.joined:  # it ended in its set-up
                self._raise_from(seat)
                feed.tell(number, seat.returned)
                continue
            self._configs[number], self._env[number] = cfg, dict(os.environ)
            self._back()
            entrant = seat.entrant
            reason = why_member_alone(entrant)
            if reason is not None:
                log.info("#%d trains alone: %s", number, reason)
                feed.tell(number, self._end(seat, number, None, None))
                continue
            stack = next((s for s in stacks if s.population.admits(entrant)), None)
            spent = stack.spent if stack is not None else [0.0]
            _timed(entrant, spent)
            if stack is None:
                population = Population([entrant], interrupted=preemption.requested)
                stack = _Stack(population, {0: seat}, {0: number}, spent)
                stacks.append(stack)
            else:
                (i,) = stack.population.add([entrant])
                stack.seats[i], stack.numbers[i] = seat, number
                if stack.announced:
                    log.info(
                        "\t#%d joins the population of #%d (%d members training)",
                        number,
                        stack.numbers[0],
                        len(stack.population.live),
                    )

    def _epoch(self, stack: _Stack, feed: Feed) -> None:
        """One epoch of a population; each job whose member stopped ends, and its return goes
        to the feed."""
        from hypersweep.core.fit import Interrupted

        if not stack.announced:
            stack.announced, stack.started = True, time.perf_counter()
            jobs = ", ".join(f"#{stack.numbers[i]}" for i in stack.population.live)
            log.info("\tpopulation of %d: %s", len(stack.population.live), jobs)
        try:
            ended = stack.population.epoch()
        except Interrupted:
            raise
        except Exception as e:  # noqa: BLE001 - each member fails with it
            for i in list(stack.population.live):
                feed.tell(
                    stack.numbers[i], self._end(stack.seats.pop(i), stack.numbers[i], None, e)
                )
            stack.population.live.clear()
            return
        for i, result in ended:
            stack.epochs += result.epochs_run
            feed.tell(
                stack.numbers[i], self._end(stack.seats.pop(i), stack.numbers[i], result, None)
            )
        if not stack.population.live:
            wall = time.perf_counter() - stack.started
            log.info(
                "\tpopulation of #%d: %d members, %d member-epochs in %.1f s, %.0f%% of it the "
                "members' per-epoch logging and pruning",
                stack.numbers[0],
                len(stack.numbers),
                stack.epochs,
                wall,
                100 * stack.spent[0] / max(wall, 1e-9),
            )

    def _end(self, seat: Any, number: int, result: Any, error: BaseException | None) -> JobReturn:
        """Give a job its training's result (None: train alone; or the error to raise) and let
        it run to its end in its own logging, runtime config and environment."""
        cfg = self._configs.pop(number)
        configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)  # its own job log
        HydraConfig.instance().set_config(cfg)
        os.environ.clear()
        os.environ.update(self._env.pop(number))
        seat.resume(result, error)  # the job ends in `_run`, which takes the launcher's back
        self._raise_from(seat)
        return seat.returned

    @staticmethod
    def _raise_from(seat: Any) -> None:
        if seat.raised is not None:  # a preemption (SystemExit), or Hydra's own error
            raise seat.raised

    def _stop_all(self, stacks: list[_Stack], error: BaseException) -> int:
        """End every job still training with `error` (Interrupted: a signal's stop, its run
        KILLED as preempted; KeyboardInterrupt: KILLED as interrupted); how many."""
        stopped = 0
        for stack in stacks:
            for i in list(stack.population.live):
                seat = stack.seats.pop(i, None)
                if seat is None:
                    continue
                stopped += 1
                try:
                    self._end(seat, stack.numbers[i], None, error)
                except BaseException:  # noqa: BLE001, S110 - the stop itself: said once, by the caller
                    pass
            stack.population.live.clear()
        return stopped
