"""`hydra/launcher=hypersweep_pool`: a sweep's jobs on long-lived worker processes of this
machine, each job sent to the first worker that is free ("caviar": several models at once).

Hydra's joblib launcher runs each batch of jobs to its end before the sweeper asks for the next,
and re-creates each job's Hydra state in its worker (the config loader and all registered
configs, pickled per job, then the job's config composed there). Here each job's config is
composed in the sweep's process (with the sweep's composing cache, hypersweep.search.compose_cache),
the workers receive Hydra's state once, and a job is sent as soon as a worker is free: Hydra's
sweepers hand a whole batch (a grid) and it is spread over the workers without waiting on its
slowest job; the `hypersweep` sweeper submits one trial per free worker and asks the next trial
when any one ends (`submit`), so a short trial never waits for a long one.

Each job runs through Hydra's own `run_job` in its worker: the same output directory, `.hydra/`
files, job logging and callbacks as with Hydra's launchers. Unless the job sets
`trainer.num_threads`, each worker gives torch an equal share of the machine's cores.

Stopping: SIGTERM or Ctrl-C to the sweep reaches each worker as one SIGTERM (workers ignore
Ctrl-C themselves), and their jobs save their state and end (hypersweep.core.preemption). A worker
whose sweep is gone (SIGKILL) notices within a second: its job is preempted likewise, and the
worker exits instead of waiting for work that never comes.
"""

import gc
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.hypersweep_sweeper.pool.PoolLauncher"
    n_jobs: int = 2  # worker processes, jobs running at once
    # Imported by each worker as it starts, while the sweep creates its study and composes the
    # first jobs: what every training job needs (torch, MLflow; torch's optimizers import
    # torch._dynamo on first use).
    preload: list[str] = field(default_factory=lambda: ["hypersweep.job", "torch._dynamo"])


ConfigStore.instance().store(
    group="hydra/launcher", name="hypersweep_pool", node=PoolLauncherConf, provider="hypersweep"
)

# A worker's state, set once by _start_worker.
_worker: dict[str, Any] = {}
ORPHAN_POLL_S = 1.0


def _watch_parent(parent: int) -> None:
    """In a worker: once the sweep's process is gone, preempt the job running here (SIGTERM to
    itself), or exit if none is."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    _worker["orphaned"] = True
    os.kill(os.getpid(), signal.SIGTERM)  # exits at once if idle (preemption.as_worker)


def _start_worker(
    instances: dict,
    hydra_context: HydraContext,
    task: tuple[str, str],
    threads: int,
    preload: list[str],
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # read when torch is imported
    from hypersweep.core import preemption

    preemption.as_worker(lambda: not _worker.get("busy"))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # Hydra's resolvers, and hypersweep's (registered on import); the main module, which
    # registers any of its own, was imported again by the spawn.
    setup_globals()
    import hypersweep  # noqa: F401

    Singleton._instances.update(instances)
    # The task function by name: in the sweep's `__main__` (train.py) it is what `hydra.main`
    # decorated, and the spawn imported that module again; unwrapped, it is the function itself.
    module, name = task
    task_function = inspect.unwrap(getattr(sys.modules[module], name))
    _worker.update(hydra_context=hydra_context, task_function=task_function)
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError as e:  # a job that needs it fails with its own error
            log.warning("hydra.launcher.preload: cannot import %s: %s", module, e)
    # As in train.py: the worker's exit need not collect what it imported (~1 s).
    gc.freeze()


def _started() -> int:
    return os.getpid()


def _singletons() -> dict:
    """Hydra's singletons for a worker: not the plugins (each process discovers its own, as
    Hydra's joblib launcher does) nor GlobalHydra (its config loader stays with the sweep)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    instances = Singleton.get_state()["instances"]
    for cls in (Plugins, GlobalHydra):
        instances.pop(cls, None)
    return instances


def _run(sweep_config: DictConfig) -> JobReturn:
    HydraConfig.instance().set_config(sweep_config)
    _worker["busy"] = True
    try:
        return run_job(
            hydra_context=_worker["hydra_context"],
            task_function=_worker["task_function"],
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        _worker["busy"] = False
        if _worker.get("orphaned"):  # nobody will read the result
            logging.shutdown()
            os._exit(0)


def compose_job(
    config: DictConfig,
    hydra_context: HydraContext,
    overrides: Sequence[str],
    job_idx: int,
    first_line: str | None,
) -> DictConfig:
    """Job `job_idx`'s config, composed in the sweep's process for a launcher that sends it
    elsewhere to run. `first_line`: before the first job, the launch line (with the sweep's
    output dir, created now) and Hydra's logging set up; None for the jobs after it."""
    if first_line is not None:
        setup_globals()
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("%s, sweep output dir : %s", first_line, config.hydra.sweep.dir)
    log.info("\t#%d : %s", job_idx, " ".join(filter_overrides(overrides)))
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = str(job_idx)
        sweep_config.hydra.job.num = job_idx
    return sweep_config


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: int = 2, preload: Sequence[str] = ()) -> None:
        self.n_jobs = n_jobs
        self.preload = list(preload)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._announced = False  # the first job logs where the sweep's output goes

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Start the workers now: they import while the sweep creates its study."""
        if not isinstance(self.n_jobs, int) or isinstance(self.n_jobs, bool) or self.n_jobs < 1:
            from hypersweep.errors import ConfigError, exit_with

            raise exit_with(
                ConfigError(
                    f"hydra.launcher.n_jobs={self.n_jobs!r} is not allowed: "
                    "expected an integer >= 1"
                )
            )
        self.config = config
        self.hydra_context = hydra_context
        # The workers need the callbacks only: the config loader (and its composing cache)
        # stays here, where the jobs are composed.
        context = HydraContext(config_loader=None, callbacks=hydra_context.callbacks)
        task = (task_function.__module__, task_function.__qualname__)
        threads = max(1, (os.cpu_count() or 1) // self.n_jobs)
        self._pool = ProcessPoolExecutor(
            max_workers=self.n_jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(_singletons(), context, task, threads, self.preload),
        )
        for _ in range(self.n_jobs):  # each spawns a worker
            self._pool.submit(_started)
        from hypersweep.core import preemption

        preemption.forward_to(self._worker_pids)

    def _worker_pids(self) -> list[int]:
        pool = self._pool
        return [p.pid for p in (getattr(pool, "_processes", None) or {}).values() if p.pid]

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        """Compose job `job_idx` here and run it on the first free worker."""
        assert self.config is not None and self.hydra_context is not None
        if self._pool is None:
            raise RuntimeError("the pool launcher was shut down")
        first = None if self._announced else f"Launching jobs on {self.n_jobs} worker processes"
        self._announced = True
        sweep_config = compose_job(self.config, self.hydra_context, overrides, job_idx, first)
        return self._pool.submit(_run, sweep_config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        futures: list[Future] = []
        try:
            for i, overrides in enumerate(job_overrides):
                futures.append(self.submit(overrides, initial_job_idx + i))
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def shutdown(self, terminate: bool = False) -> None:
        """Let the workers stop once their jobs are done, without waiting on them (the sweep
        writes its results meanwhile; its process joins them as it exits). `terminate`: stop
        them now, after a failure, whatever they are running (SIGKILL: the sweep has already
        marked their trials interrupted and closed their runs; after a preemption their jobs
        have saved their state and ended)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if terminate:
            for process in (getattr(pool, "_processes", None) or {}).values():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
