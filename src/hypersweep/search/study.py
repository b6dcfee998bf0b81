"""A study as a sweep's config defines it: its name, its directions and its search arguments.
Read by the `hypersweep` sweeper (hydra_plugins) and by the tracking of a sweep's parent run, so
that both name the same study."""

from __future__ import annotations

import hashlib
import json
import logging

from omegaconf import DictConfig, ListConfig, OmegaConf

from hypersweep.config import study_direction
from hypersweep.errors import SearchSpaceError

log = logging.getLogger(__name__)

# How a job learns its trial: set per job by the sweeper (`hydra.job.env_set`), read by
# hypersweep.search.pruning wherever the job runs.
TRIAL_ENV = "HYPERSWEEP_TRIAL_ID"
STUDY_ENV = "HYPERSWEEP_STUDY"
STORAGE_ENV = "HYPERSWEEP_STORAGE"


def search_arguments(sweeper_cfg: DictConfig, arguments: list[str]) -> list[str]:
    """`params` (or the legacy `search_space`) from the config, then the command line's."""
    out = []
    if sweeper_cfg.get("params"):
        # null drops a dimension a preset inherits (e.g. model.depth for model=cnn)
        out += [f"{k}={v}" for k, v in sweeper_cfg.params.items() if v is not None]
    elif sweeper_cfg.get("search_space"):
        out += [_legacy_param(k, v) for k, v in sweeper_cfg.search_space.items()]
    return out + list(arguments)


def _legacy_param(key: str, spec: DictConfig) -> str:
    """hydra-optuna-sweeper < 1.2's `search_space` entry as today's grammar: `type` decides
    int or float whatever the bounds are written as; `step` makes it discrete, high included."""
    kind = spec.type
    if kind == "categorical":
        return f"{key}=choice({','.join(map(str, spec.choices))})"
    if kind not in ("int", "float"):
        raise SearchSpaceError(
            f"hydra.sweeper.search_space.{key}.type={kind!r} is not allowed: expected int, "
            "float or categorical"
        )
    number = int if kind == "int" else float
    low, high = number(spec.low), number(spec.high)
    if spec.get("step"):
        step = number(spec.step)
        stop = high + 1 if kind == "int" else high + step / 2  # past high, short of the next
        return f"{key}=range({low!r},{stop!r},{step!r})"
    inner = f"interval({low!r},{high!r})"
    inner = f"int({inner})" if kind == "int" else inner
    return f"{key}=tag(log,{inner})" if spec.get("log") else f"{key}={inner}"


def warn_legacy(sweeper_cfg: DictConfig) -> None:
    if not sweeper_cfg.get("search_space"):
        return
    if sweeper_cfg.get("params"):
        log.warning("hydra.sweeper.search_space is ignored: hydra.sweeper.params is set")
    else:
        log.warning(
            "hydra.sweeper.search_space is hydra-optuna-sweeper < 1.2's form, read as "
            "hydra.sweeper.params (e.g. lr: tag(log, interval(1e-4, 1e-1)))"
        )


def directions_for(config: DictConfig) -> list[str]:
    """The study's directions: `hydra.sweeper.direction` as set, or, unset (null), the one the
    job's objective needs (maximize for a val_acc monitor, minimize for a loss or rmse)."""
    direction = config.hydra.sweeper.direction
    if direction is None:
        monitor = job_monitor(config)
        return [study_direction(monitor) if monitor else "minimize"]
    directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
    return [str(getattr(d, "name", d)) for d in directions]


def job_monitor(config: DictConfig) -> str | None:
    """The job's early-stopping monitor; None for a task that is not hypersweep's train.py (the
    sweeper runs any Hydra task function, as hydra-optuna-sweeper does)."""
    monitor = OmegaConf.select(config, "trainer.early_stopping.monitor", default=None)
    return None if monitor is None else str(monitor)


def default_study_name(config: DictConfig, arguments: list[str]) -> str:
    """Task name + a hash of everything that defines the search: the same command gives the
    same study, so re-running it resumes."""
    sweeper = config.hydra.sweeper
    directions = directions_for(config)
    key = {
        "search": sorted(search_arguments(sweeper, arguments)),
        # a single direction hashes as a string, as it did when it was always spelled out
        "direction": directions if isinstance(sweeper.direction, ListConfig) else directions[0],
        "sampler": OmegaConf.to_container(sweeper.sampler, resolve=True),
        "pruner": OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.pruner else None,
        "objective_attrs": OmegaConf.to_container(sweeper.objective_attrs)
        if sweeper.get("objective_attrs")
        else None,
        "coarse_to_fine": OmegaConf.to_container(sweeper.coarse_to_fine),
    }
    if sweeper.get("conditions"):  # only when set: older studies keep their names
        key["conditions"] = OmegaConf.to_container(sweeper.conditions, resolve=True)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"{config.hydra.job.name}-{digest[:8]}"


def study_name_for(config: DictConfig) -> str:
    return config.hydra.sweeper.study_name or default_study_name(
        config, list(config.hydra.overrides.task)
    )
