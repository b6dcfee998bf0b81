"""`hydra/sweeper=hypersweep`. Hydra imports every plugin module of `hydra_plugins` when it starts
(`--help` and a single run too); this one stays light, and its implementation, with Optuna
(`_impl`, ~0.3 s to import), is imported only when a sweep is set up."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class HypersweepSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from hydra_plugins.hypersweep_sweeper._impl import HypersweepSweeperImpl

        self._impl = HypersweepSweeperImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)
