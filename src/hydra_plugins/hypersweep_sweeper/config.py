"""Config schema of the `hypersweep` sweeper, registered in Hydra's ConfigStore.

Keys and sampler option names follow hydra-optuna-sweeper (1.4) so that its users' configs carry
over by changing only the sweeper's name (`override hydra/sweeper: hypersweep`). Added: `pruner`,
persistent `storage` by default, `objective_attrs`, `coarse_to_fine`.
"""

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

import hypersweep  # noqa: F401  (registers the hs.* resolvers used below)
from hypersweep.hydra_compat import store

# Journal file shared by all studies on this machine; any SQLAlchemy URL works instead.
DEFAULT_STORAGE = "${hs.abspath:multirun/optuna.journal}"


# The sampler nodes are hydra-optuna-sweeper 1.4's, key for key and default for default, so a
# sampler config means the same under either sweeper, with or without that plugin installed.
@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    warn_independent_sampling: bool | None = None
    # Parallel trials (n_jobs > 1, the pool) want true; the sweeper says so when it is false.
    constant_liar: bool = False
    constraints_func: Any | None = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any | None = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Any | None = None


@dataclass
class GPSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Any | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any | None = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any | None = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "hydra_plugins.hypersweep_sweeper.samplers.nsgaii"
    population_size: int = 50
    mutation_prob: float | None = None
    mutation: Any | None = None
    crossover: Any | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any | None = None


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    _target_: str = "hydra_plugins.hypersweep_sweeper.samplers.nsgaiii"
    reference_points: list[list[float]] | None = None
    dividing_parameter: int = 3


@dataclass
class MOTPESamplerConfig:
    # Optuna 4 removed MOTPESampler; choosing it is an error that names its replacement.
    _target_: str = "hydra_plugins.hypersweep_sweeper.samplers.motpe_removed"


@dataclass
class GridSamplerConfig(SamplerConfig):
    # The search space is filled in by the sweeper from `params` (discrete values only).
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True


@dataclass
class NopPrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 3
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 1  # int or "auto"
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # int (max epochs) or "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class CoarseToFineConfig:
    """After the trials of one stage, narrow every numeric interval to the span of the best
    `top_fraction` of trials (widened by `margin` of that span), for `stages` stages in all."""

    stages: int = 1
    top_fraction: float = 0.25
    margin: float = 0.1


@dataclass
class HypersweepSweeperConf:
    _target_: str = "hydra_plugins.hypersweep_sweeper.sweeper.HypersweepSweeper"
    # The sweeper builds its sampler and pruner itself, from trusted targets only, on both
    # Hydra lines (1.4 no longer instantiates a plugin's nested configs; 1.3 would, unchecked).
    _recursive_: bool = False
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}]
    )
    sampler: Any = MISSING
    pruner: Any = None
    # "minimize" / "maximize", or a list of them for several objectives (with objective_attrs);
    # null: what the job's objective needs (maximize for a val_acc monitor, else minimize).
    direction: Any = None
    storage: str | None = DEFAULT_STORAGE
    # null: derived from the command (task name + a hash of the search), so re-running the same
    # command resumes the same study.
    study_name: str | None = None
    n_trials: int = 20
    # Trials launched together per batch (the launcher may run them in parallel).
    n_jobs: int = 1
    # Fraction of n_trials that may fail before the sweep stops.
    max_failure_rate: float = 0.0
    search_space: dict[str, Any] | None = None  # hydra-optuna-sweeper < 1.2, still read
    params: dict[str, Any] | None = None
    custom_search_space: str | None = None
    # Names of the job's summary metrics to return instead of the monitored value (for several
    # objectives, e.g. [best_val_acc, n_params]); null: the job's own return value.
    objective_attrs: list[str] | None = None
    coarse_to_fine: CoarseToFineConfig = field(default_factory=CoarseToFineConfig)
    # A searched key sampled only where other keys hold given values, e.g.
    # {momentum: {optimizer: [adam, momentum, nesterov]}}: elsewhere it is no dimension of the
    # search and the job keeps the config's value.
    conditions: dict[str, Any] = field(default_factory=dict)


store("hydra/sweeper", "hypersweep", HypersweepSweeperConf, provider="hypersweep")
# hydra-optuna-sweeper registers the same sampler names. Where it is installed its nodes stand
# and both sweepers use them (ours are the same, key for key), so nothing collides in the
# ConfigStore and neither plugin changes the other's configs.
OFFICIAL_PLUGIN = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
SAMPLERS = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "gp": GPSamplerConfig,
    "qmc": QMCSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsgaiii": NSGAIIISamplerConfig,
    "motpe": MOTPESamplerConfig,
    "grid": GridSamplerConfig,
}
if not OFFICIAL_PLUGIN:
    for _name, _node in SAMPLERS.items():
        store("hydra/sweeper/sampler", _name, _node, provider="hypersweep")
for _name, _node in {
    "none": NopPrunerConfig,
    "median": MedianPrunerConfig,
    "asha": SuccessiveHalvingPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
}.items():
    store("hydra/sweeper/pruner", _name, _node, provider="hypersweep")
