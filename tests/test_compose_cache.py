"""The sweepers' shared parse of config files (hypersweep.search.compose_cache): every job
composes the config Hydra would compose, each file is parsed once per sweep, and the jobs share
nothing mutable through it."""

from __future__ import annotations

import shutil

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from hypersweep.search.compose_cache import SharedParsedConfigs, share_parsed_configs

from conftest import CONF

SWEEP = ["hydra/sweeper=hypersweep", "hydra/sweeper/sampler=tpe", "data=digits"]
JOBS = [
    ["lr=0.01", "model.hidden_units=32"],
    ["optimizer=sgd", "lr=0.1", "model=cnn", "regularization=all"],
    ["scheduler=plateau", "+extra.key=1", "trainer.batch_size=32", "data.cv_folds=3"],
    ["lr=0.01", "model.hidden_units=32"],  # a repeat: everything from the cache
    # The structures above again with other values: the defaults list and the merge are kept,
    # the values are this job's.
    ["lr=0.2", "model.hidden_units=64", "trainer.early_stopping={patience: 2}"],
    ["optimizer=sgd", "lr=0.3", "model=cnn", "regularization=all", "model.channels=[4, 8]"],
    ["scheduler=plateau", "+extra.key=2", "trainer.batch_size=64", "~data.standardize"],
    ["scheduler=plateau", "++extra.key=3", "hydra.job.chdir=true", "trainer.max_epochs=7"],
    # Choosing configs in other ways: each its own defaults list.
    # (a hydra group other than the sweeper's and launcher's: Hydra 1.4 lets no job change those)
    ["hydra/job_logging=disabled", "lr=0.5"],
    ["~scheduler", "lr=0.6"],
    ["lr=0.7", "model.hidden_units=16"],
]
STRUCTURES = 5  # distinct sets of config-choosing overrides in JOBS


def loader_and_master(conf, shared: bool):
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(f"file://{conf}"))
    master = loader.load_configuration("config", overrides=SWEEP, run_mode=RunMode.MULTIRUN)
    if shared:
        share_parsed_configs(loader)
    return loader, master


def as_yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg)


def test_jobs_compose_as_hydra_composes_them_and_parse_each_file_once():
    plain, plain_master = loader_and_master(CONF, shared=False)
    shared, shared_master = loader_and_master(CONF, shared=True)
    parses: list[str] = []
    delegate = shared.repository.delegate
    parse = delegate.load_config
    delegate.load_config = lambda config_path: parses.append(config_path) or parse(config_path)

    for overrides in JOBS:
        expected = plain.load_sweep_config(plain_master, overrides)
        got = shared.load_sweep_config(shared_master, overrides)
        assert as_yaml(got) == as_yaml(expected), overrides
        # A job changes its own config (run_job does): the next job must not see it.
        with open_dict(got):
            got.hydra.job.id = 99
            got.lr = -1.0
            got.model.hidden_units = -1
            got.hydra.sweeper.sampler.seed = -1
    assert parses, "the shared repository was not used"
    assert len(parses) == len(set(parses)), "a config file was parsed twice"
    assert isinstance(shared.repository, SharedParsedConfigs)
    assert len(shared.repository.defaults_lists) == STRUCTURES
    assert len(shared.repository.merged) == STRUCTURES
    share_parsed_configs(shared)  # idempotent: no second layer
    assert not isinstance(shared.repository.delegate, SharedParsedConfigs)


def test_a_sweep_composes_from_the_files_as_first_read(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    loader, master = loader_and_master(conf, shared=True)
    first = loader.load_sweep_config(master, ["optimizer=sgd"])
    sgd = conf / "optimizer" / "sgd.yaml"
    sgd.write_text(sgd.read_text().replace("_target_:", "weight_decay_typo: 1\n_target_:"))
    later = loader.load_sweep_config(master, ["optimizer=sgd"])
    assert as_yaml(later) == as_yaml(first)
    assert "weight_decay_typo" not in later.optimizer
    # Without the shared parse, a later job would read the edited file.
    plain, plain_master = loader_and_master(conf, shared=False)
    assert "weight_decay_typo" in plain.load_sweep_config(plain_master, ["optimizer=sgd"]).optimizer


def test_a_loader_without_a_repository_is_left_alone():
    class Other:
        pass

    other = Other()
    share_parsed_configs(other)
    assert not hasattr(other, "repository")


@pytest.mark.parametrize("sweeper", ["hypersweep", "hypersweep_grid"])
def test_both_sweepers_share_the_parse(sweeper):
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext

    from hypersweep.config import register_resolvers

    setup_globals()  # as hydra.main does: the `now` resolver of the sweep dir
    register_resolvers()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(f"file://{CONF}"))
    master = loader.load_configuration(
        "config", overrides=[f"hydra/sweeper={sweeper}"], run_mode=RunMode.MULTIRUN
    )
    Plugins.instance().instantiate_sweeper(
        config=master,
        hydra_context=HydraContext(config_loader=loader, callbacks=None),
        task_function=lambda cfg: None,
    )
    assert isinstance(loader.repository, SharedParsedConfigs)
