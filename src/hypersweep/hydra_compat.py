"""What differs between the two Hydra lines we support, 1.3 and 1.4, in one place.

Hydra 1.4 deprecates `version_base`, takes an execution whitelist for `instantiate()` (in
`hydra.main` and per call), no longer instantiates a plugin's nested configs for it, and asks
ConfigStore registrations that collide to say whether they replace; omegaconf 2.4 renames
`register_new_resolver`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

from omegaconf import OmegaConf


def _major_minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


HYDRA_VERSION = version("hydra-core")
HYDRA_14 = _major_minor(HYDRA_VERSION) >= (1, 4)
OMEGACONF_24 = _major_minor(version("omegaconf")) >= (2, 4)


def main_kwargs(execution_whitelist: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments for `hydra.main` / `initialize*`: 1.3 needs `version_base` (or it
    warns); 1.4 deprecates it and takes the targets `instantiate()` may call."""
    if HYDRA_14:
        return {"execution_whitelist": list(execution_whitelist)}
    return {"version_base": "1.3"}


def initialize_kwargs() -> dict[str, Any]:
    """Keyword arguments for `hydra.initialize_config_dir` (compose API)."""
    return {} if HYDRA_14 else {"version_base": "1.3"}


def register_resolver(name: str, resolver: Callable[..., Any]) -> None:
    if OmegaConf.has_resolver(name):
        return
    if OMEGACONF_24:  # 2.3 has an older register_resolver with other semantics
        OmegaConf.register_resolver(name, resolver)
    else:
        OmegaConf.register_new_resolver(name, resolver)


def store(group: str, name: str, node: Any, provider: str, replace: bool = False) -> None:
    """Register a node in Hydra's ConfigStore. On 1.4 a collision is decided, not warned
    about: `replace=True` replaces the node another provider registered under the same name,
    `replace=False` raises."""
    from hydra.core.config_store import ConfigStore

    extra = {"replace": replace} if HYDRA_14 else {}
    ConfigStore.instance().store(group=group, name=name, node=node, provider=provider, **extra)
