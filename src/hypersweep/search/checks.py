"""Every value of a sweep checked before its first job: a grid's values (`-m lr=0.1,-1`) and a
search space's reach (`regularization.dropout=interval(0.5, 1.5)` includes 1.5) fail in a second
with the line `hypersweep.config.validate` writes, instead of after the jobs before them trained.

Composing a job costs tens of milliseconds and a grid is a product, so not every job is
composed: one job per structure (its config-group and `hydra.*` choices) is, and each distinct
plain value of the others is set on that job's config and checked there (`validate` is a few
milliseconds). A check that involves two swept keys at once (batch norm with a batch size of 1,
each swept) is still made by the job that meets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from hypersweep.config import validate
from hypersweep.errors import ConfigError

# A job's config from its overrides, without the `hydra` node.
Compose = Callable[[Sequence[str]], DictConfig]
_ABSENT = object()


def is_hypersweep_job(config: DictConfig) -> bool:
    """Whether the sweep's task is a hypersweep job (train.py's config): the sweepers serve any
    Hydra task, and only ours has values `validate` knows."""
    return all(group in config for group in ("data", "model", "optimizer", "trainer"))


def task_config(config: DictConfig) -> DictConfig:
    with open_dict(config):
        config.pop("hydra", None)
    return config


# A plain value of a job: (key, value, whether the override adds the key (`+key=`), and how the
# sweep wrote it when that is not `key=value`, e.g. "the search space lr=interval(0, 1)").
Value = tuple[str, Any, bool, "str | None"]


def check_jobs(jobs: Sequence[tuple[tuple, Sequence[str], list[Value]]], compose: Compose) -> None:
    """`jobs`: (structure, overrides, plain values) per job, where `structure` is what decides
    its composition and `overrides` compose it. The first job of each structure is composed and
    validated; each distinct plain value is then set on the first composed config that has its
    key (or on its own job's, for a key it adds) and validated there. Raises the ConfigError of
    the first bad value."""
    configs: dict[tuple, DictConfig] = {}
    checked: set[tuple[str, str]] = set()
    for structure, overrides, _ in jobs:
        if structure not in configs:
            configs[structure] = task_config(_composed(compose, overrides))
            validate(configs[structure])
    for structure, _, values in jobs:
        for key, value, add, context in values:
            seen = (key, repr(value))
            if seen in checked:
                continue
            order = [configs[structure], *(c for s, c in configs.items() if s != structure)]
            for cfg in order:
                if check_value(cfg, key, value, add, context):
                    checked.add(seen)
                    break


def _composed(compose: Compose, overrides: Sequence[str]) -> DictConfig:
    """Hydra's composition errors (an option that does not exist, a key not in a schema) as
    one line: the message without its config search path."""
    from hydra.errors import HydraException

    try:
        return compose(overrides)
    except HydraException as e:
        lines = [line.strip() for line in str(e).splitlines()]
        if "Config search path:" in lines:
            lines = lines[: lines.index("Config search path:")]
        parts: list[str] = []
        for line in filter(None, lines):
            if line.startswith("Set the environment variable HYDRA_FULL_ERROR"):
                continue
            if parts and parts[-1].endswith(":"):
                parts[-1] += " " + line
            elif parts and parts[-1].startswith("Available options"):
                parts[-1] += ", " + line
            else:
                parts.append(line)
        raise ConfigError("; ".join(parts)) from None


def check_value(cfg: DictConfig, key: str, value: Any, add: bool, context: str | None) -> bool:
    """Validate `cfg` with `key` set to `value`, and leave `cfg` as it was. False: `cfg` has no
    such key to set (and the value does not add it), nothing checked."""
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return False
    raw = OmegaConf.to_container(parent, resolve=False).get(name, _ABSENT)
    if isinstance(raw, (dict, list)) or (raw is _ABSENT and not add):
        return False  # a whole node swept (composed per job), or a key of another structure
    with open_dict(parent):
        parent[name] = value
        try:
            validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"{context}: {e}" if context else str(e)) from None
        finally:
            if raw is _ABSENT:
                del parent[name]
            else:
                parent[name] = raw
    return True


def plain(value: Any) -> Any:
    """A parsed override value as a config value."""
    if isinstance(value, (list, tuple)):
        return ListConfig(list(value))
    return value
