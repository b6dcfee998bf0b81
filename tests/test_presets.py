"""conf/experiment presets (`+experiment=NAME`): each composes into a valid job whose searched
keys all exist, and runs as a sweep with `-m`."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hypersweep.config import validate
from hypersweep.search.study import search_arguments

from conftest import CONF, ROOT, compose_cfg, train

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_readme_lists_every_preset():
    readme = (ROOT / "README.md").read_text()
    assert len(PRESETS) == 5
    assert all(f"+experiment={name}" in readme for name in PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_composes_into_a_valid_sweep(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # csv_regression's table is a path from the project root
    cfg = compose_cfg([f"+experiment={name}"], hydra_config=True)
    sweeper = cfg.hydra.sweeper
    keys = [a.split("=", 1)[0] for a in search_arguments(sweeper, [])]
    assert keys, "a preset searches something"
    job = compose_cfg([f"+experiment={name}"])
    validate(job)
    for key in keys:  # every searched key exists in the job's config
        assert OmegaConf.select(job, key) is not None, key
    if name == "cnn_tpe":  # the MLP's depth inherited from search=tpe is dropped by its null
        assert "model.depth" not in keys and "model.channels" in keys


@pytest.mark.slow
def test_a_preset_runs_as_a_sweep(tmp_path):
    result = train(
        ["-m", "+experiment=cnn_tpe", "hydra.sweeper.n_trials=3", "trainer.max_epochs=2"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-cnn")
    runs = client.search_runs([experiment.experiment_id])
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(jobs) == 3 and all(r.info.status == "FINISHED" for r in jobs)
    assert all("model.channels" in r.data.params for r in jobs)
    assert "hypersweep best --sweep" in result.stdout + result.stderr
