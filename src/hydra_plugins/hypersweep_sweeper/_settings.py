"""The `hypersweep` sweeper's own settings (`hydra.sweeper.*` of `config.HypersweepSweeperConf`),
typed and checked in one place. Imports nothing heavy: no Optuna."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hypersweep.errors import SearchSpaceError


@dataclass
class Settings:
    """What the sweeper runs and how much of it. The sampler and the pruner are built by the
    sweeper (trusted targets only); the direction and the search space (`direction`, `params`,
    `search_space`) are read from the composed config when the sweep starts
    (`hypersweep.search.study`), as Hydra's own config holds them."""

    n_trials: int = 20
    n_jobs: int = 1  # trials at once: a batch, or the pool's free slots
    max_failure_rate: float = 0.0
    storage: str | None = None
    study_name: str | None = None
    custom_search_space: str | None = None  # a function's path: it samples more of a trial
    objective_attrs: list[str] | None = None  # summary metrics returned instead of the value
    stages: int = 1  # coarse to fine: stages of n_trials each
    top_fraction: float = 0.25
    margin: float = 0.1
    conditions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        coarse_to_fine: Any = None,
        conditions: Any = None,
        objective_attrs: Any = None,
        direction: Any = None,  # read from the config: directions_for
        search_space: Any = None,  # read from the config: search_arguments
        params: Any = None,  # read from the config: search_arguments
        **rest: Any,
    ) -> Settings:
        """From the keyword arguments Hydra instantiates the sweeper with."""
        stages = coarse_to_fine or {}
        return cls(
            **rest,
            objective_attrs=list(objective_attrs) if objective_attrs else None,
            stages=int(stages.get("stages", 1)),
            top_fraction=float(stages.get("top_fraction", 0.25)),
            margin=float(stages.get("margin", 0.1)),
            conditions=(
                OmegaConf.to_container(conditions, resolve=True)
                if isinstance(conditions, DictConfig)
                else conditions or {}
            ),
        )

    def check(self, directions: list[str]) -> None:
        """One line naming the key, the value and what is allowed, for the first bad one."""
        for d in directions:
            if d not in ("minimize", "maximize"):
                raise SearchSpaceError(
                    f"hydra.sweeper.direction={d!r} is not allowed: expected minimize, maximize "
                    "or a list of them"
                )
        checks = [
            ("n_trials", self.n_trials, self.n_trials >= 1, "an integer >= 1"),
            ("n_jobs", self.n_jobs, self.n_jobs >= 1, "an integer >= 1"),
            (
                "max_failure_rate",
                self.max_failure_rate,
                0 <= self.max_failure_rate <= 1,
                "a number in [0, 1]",
            ),
            ("coarse_to_fine.stages", self.stages, self.stages >= 1, "an integer >= 1"),
            (
                "coarse_to_fine.top_fraction",
                self.top_fraction,
                0 < self.top_fraction <= 1,
                "a number in (0, 1]",
            ),
        ]
        for key, value, ok, allowed in checks:
            if not ok:
                raise SearchSpaceError(
                    f"hydra.sweeper.{key}={value!r} is not allowed: expected {allowed}"
                )
        if self.objective_attrs and len(self.objective_attrs) != len(directions):
            raise SearchSpaceError(
                f"hydra.sweeper.objective_attrs={self.objective_attrs} has "
                f"{len(self.objective_attrs)} names for {len(directions)} directions"
            )
