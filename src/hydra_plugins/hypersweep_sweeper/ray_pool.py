"""`hydra/launcher=hypersweep_ray`: a sweep's jobs as Ray tasks, on a local Ray instance started
for the sweep or on an existing cluster (`hydra.launcher.address`), each trial with the
resources its config asks (`num_cpus`, `num_gpus`; a fraction of a GPU lets several small trials
share one).

As with `hypersweep_pool`, each job's config is composed in the sweep's process, and the
`hypersweep` sweeper submits one trial per free slot and asks the next as soon as any one ends
(`submit`): no batch waits for its slowest trial. The slots are `hydra.launcher.n_jobs`, or
what the cluster holds when it is null (its CPUs / `num_cpus`, and its GPUs / `num_gpus`).
Hydra's own sweepers hand a batch to `launch`, and Ray schedules it as resources free up.

Each job runs Hydra's `run_job` in a Ray worker, with the sweep's working directory (a local
instance; on a cluster, give `hydra.sweep.dir` on a filesystem the nodes share), the same
output directory, `.hydra/` files, logging and callbacks as with Hydra's launchers. A task is
never retried by Ray: a worker lost mid-trial (killed, out of memory, its node gone) is an
interrupted trial, as with the pool, and the same command runs it again. SIGTERM or Ctrl-C to
the sweep reaches the jobs of a local instance as SIGTERM (their pids are known to the sweep),
and they save their state as the pool's do.
"""

import contextlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.hypersweep_sweeper.pool import _singletons, compose_job

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.hypersweep_sweeper.ray_pool.RayLauncher"
    # null: start a local Ray instance for the sweep; "auto" or "ray://HOST:10001": a cluster.
    address: str | None = None
    n_jobs: int | None = None  # trials at once; null: as many as the cluster's resources hold
    num_cpus: float = 1  # per trial
    num_gpus: float = 0  # per trial; 0.25: four trials share a GPU
    # Further ray.init arguments, e.g. {num_cpus: 8} for the local instance.
    init: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/launcher", name="hypersweep_ray", node=RayLauncherConf, provider="hypersweep"
)


class WorkerLost(Exception):
    """The Ray worker or node running a trial died before the trial ended."""


# Ray's errors for a task whose worker or node died (OutOfMemoryError: Ray's memory monitor
# killed the worker), by name: not every Ray release has all of them.
_LOST = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError")


def _run(
    singletons: dict,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    sweep_config: DictConfig,
    cwd: str,
    pid_file: str,
) -> JobReturn | tuple[str, int]:
    """In a Ray worker: one job through Hydra's `run_job`. A preempted job returns
    ("preempted", signum): raising SystemExit in a Ray task would end the worker."""
    from hypersweep.core import preemption

    if os.path.isdir(cwd):
        os.chdir(cwd)
    setup_globals()
    import hypersweep  # noqa: F401 - its resolvers

    Singleton._instances.update(singletons)
    HydraConfig.instance().set_config(sweep_config)
    with contextlib.suppress(OSError):  # a node that does not share the sweep dir
        Path(pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(pid_file).write_text(str(os.getpid()))
    busy = [True]
    preemption.as_worker(lambda: not busy[0])
    try:
        return run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except preemption.Preempted as e:
        return ("preempted", e.signum)
    finally:
        busy[0] = False
        preemption.reset()
        Path(pid_file).unlink(missing_ok=True)


class RayLauncher(Launcher):
    def __init__(
        self,
        address: str | None = None,
        n_jobs: int | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.address, self.n_jobs = address, n_jobs
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.init = dict(init or {})
        self.worker_lost = (WorkerLost,)  # the sweeper reports these as a lost worker
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self._started_ray = False
        self._remote: Any = None
        self._running: dict[Any, Future] = {}
        self._announced = False

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hypersweep.errors import exit_with

        self._check()
        try:
            import ray
        except ImportError:
            from hypersweep.errors import ConfigError

            raise exit_with(
                ConfigError(
                    "hydra/launcher=hypersweep_ray needs Ray: expected pip install -e '.[ray]'"
                )
            ) from None
        self.config, self.hydra_context = config, hydra_context
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, **self.init}
            ray.init(address=self.address, **options)
            self._started_ray = True
        resources = ray.cluster_resources()
        self._check_resources(resources)
        if self.n_jobs is None:
            slots = int(resources.get("CPU", 0) // self.num_cpus) if self.num_cpus else 1 << 30
            if self.num_gpus:
                slots = min(slots, int(resources.get("GPU", 0) // self.num_gpus))
            self.n_jobs = max(slots, 1)
        # The workers need the callbacks only: the config loader stays here.
        self._context = HydraContext(config_loader=None, callbacks=hydra_context.callbacks)
        self._task = task_function
        self._remote = ray.remote(_run).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0
        )
        self._singletons = ray.put(_singletons())
        from hypersweep.core import preemption

        preemption.forward_to(self._worker_pids)

    def _check(self) -> None:
        from hypersweep.errors import ConfigError, exit_with

        def number(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        bad = None
        if self.n_jobs is not None and (
            not isinstance(self.n_jobs, int) or isinstance(self.n_jobs, bool) or self.n_jobs < 1
        ):
            bad = ("n_jobs", self.n_jobs, "null or an integer >= 1")
        elif not number(self.num_cpus) or self.num_cpus < 0:
            bad = ("num_cpus", self.num_cpus, "a number >= 0")
        elif not number(self.num_gpus) or self.num_gpus < 0:
            bad = ("num_gpus", self.num_gpus, "a number >= 0 (0.25: a quarter of a GPU)")
        elif self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            bad = ("num_gpus", self.num_gpus, "a fraction below 1 or a whole number")
        if bad:
            key, value, allowed = bad
            raise exit_with(
                ConfigError(f"hydra.launcher.{key}={value!r} is not allowed: expected {allowed}")
            )

    def _check_resources(self, resources: dict[str, float]) -> None:
        from hypersweep.errors import ConfigError, exit_with

        for key, kind in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            asked, held = getattr(self, key), resources.get(kind, 0)
            if asked > held:
                self.shutdown(terminate=True)
                raise exit_with(
                    ConfigError(
                        f"hydra.launcher.{key}={asked:g} is more than the Ray cluster has "
                        f"({held:g} {kind}): expected at most {held:g}"
                    )
                )

    def _pid_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir)).absolute() / ".ray_jobs"

    def _worker_pids(self) -> list[int]:
        pids = []
        for path in self._pid_dir().glob("*.pid"):
            try:
                pids.append(int(path.read_text()))
            except (OSError, ValueError):
                pass
        return pids

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        """Compose job `job_idx` here and run it as a Ray task."""
        assert self.config is not None and self.hydra_context is not None
        if self._remote is None:
            raise RuntimeError("the Ray launcher was shut down")
        first = None if self._announced else f"Launching jobs on Ray, {self.n_jobs} at a time"
        self._announced = True
        sweep_config = compose_job(self.config, self.hydra_context, overrides, job_idx, first)
        pid_file = str(self._pid_dir() / f"{job_idx}.pid")
        ref = self._remote.remote(
            self._singletons, self._context, self._task, sweep_config, os.getcwd(), pid_file
        )
        out: Future = Future()
        self._running[ref] = out
        ref.future().add_done_callback(lambda done: self._settle(ref, done, out))
        return out

    def _settle(self, ref: Any, done: Future, out: Future) -> None:
        """The Ray task's outcome as the sweeper reads a pool job's: its JobReturn, Preempted,
        or WorkerLost for a worker or node that died."""
        import ray.exceptions

        from hypersweep.core import preemption

        lost = tuple(getattr(ray.exceptions, n) for n in _LOST if hasattr(ray.exceptions, n))
        self._running.pop(ref, None)
        if out.cancelled():
            return
        error = done.exception()
        if error is None:
            result = done.result()
            if isinstance(result, tuple) and result[:1] == ("preempted",):
                out.set_exception(preemption.Preempted(result[1]))
            else:
                out.set_result(result)
        elif isinstance(error, lost):
            out.set_exception(WorkerLost(str(error).splitlines()[0]))
        elif isinstance(error, ray.exceptions.TaskCancelledError):
            out.cancel()
        else:
            out.set_exception(error)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        futures = [self.submit(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            self.shutdown(terminate=True)
            raise
        return results

    def shutdown(self, terminate: bool = False) -> None:
        """Stop: with `terminate`, the running tasks are killed (the sweep has marked their
        trials interrupted); a local instance started for the sweep ends with it."""
        import ray

        if terminate:
            for ref in list(self._running):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already ended
                    pass
        self._remote = None
        if self.config is not None:
            with contextlib.suppress(OSError):  # gone, or a job of a killed worker left its pid
                self._pid_dir().rmdir()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
