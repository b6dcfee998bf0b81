"""Which `_target_`s a config may name: the code `instantiate()` is allowed to call.

A config can arrive from elsewhere: a config.yaml fetched from a shared MLflow server by
`hypersweep reproduce`, a pruner stored on a shared Optuna study, a checkpoint's config in
`hypersweep best`, a command-line override. Only trusted targets are instantiated: torch's
optimizers and schedulers, this package, Optuna's samplers and pruners, our sweeper's own
factories, and the modules the user lists in `hypersweep.trusted_targets`. Anything else is
refused with one line before anything runs, on both Hydra lines: by this module's own check,
and on Hydra 1.4 also by Hydra's execution whitelist, to which the same patterns are passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hypersweep.errors import ConfigError
from hypersweep.hydra_compat import HYDRA_14

# hydra-optuna-sweeper's sampler factories: its sampler nodes stand in for ours where it is
# installed (hydra_plugins/hypersweep_sweeper/config.py).
OFFICIAL_SAMPLERS = (
    "hydra_plugins.hydra_optuna_sweeper._impl.create_nsgaii_sampler",
    "hydra_plugins.hydra_optuna_sweeper._impl.create_nsgaiii_sampler",
    "hydra_plugins.hydra_optuna_sweeper.config.raise_motpe_removed",
)
SEARCH = (
    "optuna.samplers.*",
    "optuna.pruners.*",
    "hydra_plugins.hypersweep_sweeper.*",
    *OFFICIAL_SAMPLERS,
)
BUILTIN = (
    "torch.optim.*",  # optimizers and torch.optim.lr_scheduler
    "hypersweep.*",
    *SEARCH,
)


def patterns(modules: Iterable[str] = (), builtin: Sequence[str] = BUILTIN) -> tuple[str, ...]:
    """The built-in patterns plus one `module.*` per module the user trusts."""
    return (*builtin, *(f"{m.removesuffix('.*')}.*" for m in modules))


def user_modules(cfg: Any, key: str = "hypersweep.trusted_targets") -> list[str]:
    """The modules a config trusts (`hypersweep.trusted_targets`), checked: a list of dotted
    module names."""
    value = OmegaConf.select(cfg, key, default=None) if isinstance(cfg, DictConfig) else None
    if value is None:
        return []
    modules = list(value) if isinstance(value, (list, ListConfig)) else None
    if modules is None or not all(isinstance(m, str) and _dotted(m) for m in modules):
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        raise ConfigError(
            f"{key}={shown!r} is not allowed: expected a list of module names, e.g. "
            "[mypackage.models]"
        )
    return modules


def _dotted(name: str) -> bool:
    parts = name.removesuffix(".*").split(".")
    return all(p.isidentifier() for p in parts)


def allowed(target: str, trusted: Sequence[str]) -> bool:
    for pattern in trusted:
        if pattern.endswith(".*"):
            if target.startswith(pattern[:-1]):
                return True
        elif target == pattern:
            return True
    return False


def check(node: Any, trusted: Sequence[str], prefix: str = "", hint: str = "") -> None:
    """Raise ConfigError, naming the key, for the first `_target_` under `node` that no
    pattern of `trusted` allows. Nothing is imported."""
    for key, target in _targets(node, prefix):
        if not isinstance(target, str) or not allowed(target, trusted):
            raise ConfigError(
                f"{key}={target!r} is not a trusted target: expected one under "
                f"{', '.join(p.removesuffix('.*') for p in trusted if p.endswith('.*'))}, or a "
                f"module listed in hypersweep.trusted_targets{hint}"
            )


def _targets(node: Any, prefix: str):
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()):
        return  # a typed node holding null (e.g. NSGA-III's reference_points): nothing to call
    if isinstance(node, (DictConfig, dict)):
        keys = node.keys()
        for key in keys:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":
                value = node[key] if not isinstance(node, DictConfig) else _raw(node, key)
                yield path, value
            else:
                child = _raw(node, key) if isinstance(node, DictConfig) else node[key]
                yield from _targets(child, path)
    elif isinstance(node, ListConfig):  # items unresolved, as a DictConfig's children
        for i in range(len(node)):
            yield from _targets(_raw(node, i), f"{prefix}[{i}]")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _targets(item, f"{prefix}[{i}]")


def _raw(node: DictConfig | ListConfig, key: Any) -> Any:
    """A child without resolving interpolations elsewhere in the config (a `_target_` given as
    an interpolation is resolved; a broken one elsewhere is not this check's business)."""
    child = node._get_node(key)
    if isinstance(child, (DictConfig, ListConfig)):
        return child
    try:
        return node[key]
    except Exception:  # noqa: BLE001 - an unresolvable value: validation names it later
        return None if key != "_target_" else child._value()


def instantiate(node: Any, trusted: Sequence[str], *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` for a node whose targets are checked first; on Hydra 1.4 the
    same patterns are its execution whitelist."""
    from hydra.utils import instantiate as hydra_instantiate

    check(node, trusted)
    if HYDRA_14:
        kwargs["_execution_whitelist_"] = list(trusted)
    return hydra_instantiate(node, *args, **kwargs)
