"""Compose a sweep's jobs from what its first jobs already worked out.

Hydra composes every job's config from scratch (`load_sweep_config`): it re-parses every YAML
file of the defaults list, rebuilds the defaults list from the overrides, and merges the files
again, although the jobs of a sweep differ mostly in values (`lr=...`), which only come in after
that. `share_parsed_configs` keeps, for the whole sweep:

- each parsed config file: Hydra wraps the loader's repository in a fresh
  `CachingConfigRepository` (a deep copy of it) per composition; the repository put in between
  is its own deep copy, so each file is parsed once per sweep;
- each defaults list, by the overrides that choose configs (`optimizer=sgd`, `+model/x=y`): the
  value overrides of a job are set apart by Hydra's own rule (not a group, or a dict);
- each merge of a defaults list's files, by that defaults list.

Hydra does the rest as for any job: the job's value overrides are applied to its own copy of the
merge, and its `hydra` node is written. Composing one job: 195 -> 145 ms with the parse kept
(the slow CPU of BENCHMARKS.md), 50 -> 13 ms with all three (benchmarks/compose_cache.py).

It works on Hydra 1.3 and 1.4 alike (the same test passes on both; 1.4: 180 -> 39 ms per job,
BENCHMARKS.md).

It also makes a sweep consistent: every job composes from the files as they were when they were
first read, not as they are when the job starts (an edit during a long sweep used to reach the
later jobs only). Each composition gets its own copy of what was parsed or merged, so the jobs
share no mutable state through it (tests/test_compose_cache.py).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from hydra._internal import config_loader_impl
from hydra._internal.config_repository import CachingConfigRepository, IConfigRepository
from hydra._internal.defaults_list import DefaultsList
from hydra._internal.defaults_list import create_defaults_list as _hydra_create_defaults_list
from hydra.plugins.config_source import ConfigResult

log = logging.getLogger(__name__)


class SharedParsedConfigs(CachingConfigRepository):
    """A caching repository that survives Hydra's per-composition deep copy, and hands each
    composition its own copy of a parsed file: Hydra merges loaded configs into the job's config
    without copying their nodes (`no_deepcopy_set_nodes`), so a shared node would carry one
    job's changes into the next. It also holds the sweep's defaults lists and merges."""

    def __init__(self, delegate: IConfigRepository) -> None:
        super().__init__(delegate)
        self.defaults_lists: dict[tuple, DefaultsList] = {}
        self.merged: dict[tuple, Any] = {}

    def __deepcopy__(self, memo: dict) -> SharedParsedConfigs:
        return self

    def load_config(self, config_path: str) -> ConfigResult | None:
        parsed = super().load_config(config_path)
        return None if parsed is None else copy.deepcopy(parsed)


def _shared(repo: object) -> SharedParsedConfigs | None:
    """The sweep's shared repository behind a composition's caching repository, if any."""
    delegate = getattr(repo, "delegate", None)
    return delegate if isinstance(delegate, SharedParsedConfigs) else None


def _create_defaults_list(repo, config_name, overrides_list, prepend_hydra, skip_missing):
    """Hydra's `create_defaults_list`, kept per sweep by the overrides that choose configs. The
    value overrides are set apart as Hydra's `Overrides` does: a dict, or a key that is no
    config group. A composition through any other repository is Hydra's own."""
    shared = _shared(repo)
    if shared is None:
        return _hydra_create_defaults_list(
            repo, config_name, overrides_list, prepend_hydra, skip_missing
        )
    choosing, values = [], []
    for override in overrides_list:
        is_value = not override.is_sweep_override() and (
            isinstance(override.value(), dict) or not repo.group_exists(override.key_or_group)
        )
        (values if is_value else choosing).append(override)
    key = (config_name, prepend_hydra, skip_missing, tuple(o.input_line for o in choosing))
    known = shared.defaults_lists.get(key)
    if known is None:
        known = _hydra_create_defaults_list(
            repo, config_name, overrides_list, prepend_hydra, skip_missing
        )
        # Kept only where Hydra set the same values apart: a later Hydra with another rule
        # composes every job itself.
        if [o.input_line for o in known.config_overrides] == [o.input_line for o in values]:
            shared.defaults_lists[key] = known
        else:
            log.debug("defaults list not kept: Hydra set apart other value overrides")
        return known
    overrides = copy.copy(known.overrides)  # its choices are the key's; its values this job's
    overrides.config_overrides = values
    return DefaultsList(
        defaults=known.defaults,
        defaults_tree=known.defaults_tree,
        config_overrides=values,
        overrides=overrides,
    )


def _merge_once(compose, shared: SharedParsedConfigs):
    """Wrap a loader's `_compose_config_from_defaults_list`: one merge per defaults list, each
    composition its own copy (Hydra goes on to change it: struct flag, overrides, hydra node)."""

    def compose_config_from_defaults_list(defaults, repo):
        key = tuple((d.config_path, d.parent, d.package, d.is_self, d.primary) for d in defaults)
        merged = shared.merged.get(key)
        if merged is None:
            merged = shared.merged[key] = compose(defaults=defaults, repo=repo)
        return copy.deepcopy(merged)

    return compose_config_from_defaults_list


def share_parsed_configs(config_loader: object) -> None:
    """Let every later composition through `config_loader` reuse the sweep's parsed files,
    defaults lists and merges. Does nothing when the loader is not Hydra's (no `repository`
    attribute of the expected type): composition then stays as Hydra does it."""
    repository = getattr(config_loader, "repository", None)
    if isinstance(repository, SharedParsedConfigs):
        return
    if not isinstance(repository, IConfigRepository) or not hasattr(
        config_loader, "_compose_config_from_defaults_list"
    ):
        log.debug("config loader %r has no repository to share", type(config_loader).__name__)
        return
    shared = SharedParsedConfigs(repository)
    config_loader.repository = shared  # type: ignore[attr-defined]
    config_loader._compose_config_from_defaults_list = _merge_once(  # type: ignore[attr-defined]
        config_loader._compose_config_from_defaults_list, shared
    )
    config_loader_impl.create_defaults_list = _create_defaults_list
