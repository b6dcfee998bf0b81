"""`hydra/sweeper=hypersweep_grid` (the default for `-m`): Hydra's BasicSweeper, whose grid,
batching and output layout it keeps, with cheaper validation of each batch.

BasicSweeper composes every job's config twice: once to validate the batch before launching
anything, once more in the launcher. Composing costs ~65 ms here, a third of a short job's
overhead. Only the overrides of config groups and of `hydra.*` keys change the structure of a
composed config or meet a typed schema; the rest are plain values of keys that either exist or
do not. So one job per distinct structure is composed (hypersweep.search.space.jobs_to_compose):
a bad option, a missing key or a bad `hydra.*` value still stops the sweep before its first job.
Each of those jobs' configs is validated, and each distinct value of the other keys on one of
them (hypersweep.search.checks): `-m lr=0.1,-1` fails before the job with lr=0.1 trains.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hypersweep.errors import ConfigError, exit_with
from hypersweep.search.checks import check_jobs, is_hypersweep_job, plain
from hypersweep.search.compose_cache import share_parsed_configs


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.hypersweep_sweeper.grid.GridSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="hypersweep_grid", node=GridSweeperConf, provider="hypersweep"
)


class GridSweeper(BasicSweeper):
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        share_parsed_configs(hydra_context.config_loader)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not is_hypersweep_job(self.config):  # another task: composing is the check
            super().validate_batch_is_legal(batch)
            return
        from hypersweep.search.space import job_structures  # with Optuna: not at start-up

        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        groups: dict[str, bool] = {}

        def is_group(key: str) -> bool:
            if key not in groups:
                groups[key] = bool(loader.get_group_options(key))
            return groups[key]

        jobs = [
            (structure, job, [(o.key_or_group, plain(o.value()), _adds(o), None) for o in values])
            for structure, job, values in job_structures(batch, parser, is_group)
        ]

        def compose(overrides: Sequence[str]) -> DictConfig:
            return loader.load_sweep_config(self.config, list(overrides))

        try:
            check_jobs(jobs, compose)
        except ConfigError as e:
            raise exit_with(e) from None


def _adds(override: Override) -> bool:
    """`+key=value` or `++key=value`: the key may be new."""
    return override.is_add() or override.is_force_add()
