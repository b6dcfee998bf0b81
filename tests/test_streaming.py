"""The streaming path (`trainer.loader=stream`): the data stays in host memory and a DataLoader
feeds the device batch by batch. It must train exactly as the resident path does (same batches,
same order, same validation), continue an interrupted epoch where it stopped, end its worker
processes however the fit ends, and be chosen by the rule README states."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from test_population import _entrant
from test_preemption import SERIES, _after, _saved
from test_sweeper import child_runs

from hypersweep import build
from hypersweep.core import data as data_module
from hypersweep.core.fit import Interrupted, fit_members
from hypersweep.core.population import why_alone

from conftest import TINY, compose_cfg, fit_options, train

CPU = torch.device("cpu")
BASE = [*TINY, "trainer.max_epochs=4", "trainer.batch_size=100", "data=digits"]


def _fit(cfg, loader: str, workers: int = 0, **kw):
    datasets = (
        data_module.load_folds(cfg.data)
        if cfg.data.get("cv_folds")
        else [data_module.load(cfg.data)]
    )
    cfg.trainer.loader, cfg.trainer.loader_workers = loader, workers
    placed = build.placed(cfg, datasets, CPU)
    assert all((d.stream is not None) == (loader == "stream") for d in placed)
    members = build.members(cfg, placed, None)
    return fit_members(members, **fit_options(cfg), **kw)


def _same(a, b) -> None:
    assert a.epochs_run == b.epochs_run and a.best_epoch == b.best_epoch
    assert a.status_reason == b.status_reason
    for epoch, (x, y) in enumerate(zip(a.history, b.history, strict=True), 1):
        assert {k: x.get(k) for k in SERIES} == {k: y.get(k) for k in SERIES}, epoch
        assert x.get("val_rmse") == y.get("val_rmse"), epoch
    for k, v in a.best_state.items():
        assert torch.equal(v, b.best_state[k]), k


CASES = {
    "adam": [],
    # The global RNG (dropout) is drawn in the main process, as when resident.
    "dropout-momentum-steps": [
        "regularization=dropout",
        "optimizer=momentum",
        "scheduler=piecewise",
        "scheduler.milestones=[2]",
    ],
    "stacked-folds-l1": ["data.cv_folds=3", "regularization=l1"],  # (members, rows) batches
    "folds-one-by-one-batchnorm": [
        "data.cv_folds=2",
        "trainer.stack_folds=false",
        "regularization=batchnorm",
    ],
    "regression": ["data=synthetic_regression", "optimizer=sgd"],
    "cnn": ["model=cnn", "model.hidden_units=8", "trainer.max_epochs=2"],
}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_a_streamed_fit_trains_exactly_as_a_resident_one(overrides, workers):
    cfg = compose_cfg([*BASE, *overrides])
    _same(_fit(cfg, "resident"), _fit(cfg, "stream", workers))


def test_an_interrupted_streamed_epoch_continues_where_it_stopped_and_leaves_no_worker():
    cfg = compose_cfg([*BASE, "regularization=dropout", "data.cv_folds=2"])
    whole = _fit(cfg, "resident")
    with pytest.raises(Interrupted) as stopped:
        _fit(cfg, "stream", 2, interrupted=_after(19))  # 8 batches per epoch: epoch 3's third
    assert stopped.value.epoch == 3
    assert multiprocessing.active_children() == []  # the workers ended with the epoch
    _same(whole, _fit(cfg, "stream", 2, resume=_saved(stopped.value.state)))
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    "loader,device,limit_mb,streams",
    [
        ("resident", "cuda", 0.01, False),
        ("stream", "cpu", 2048, True),
        ("auto", "cpu", 0.01, False),  # on the CPU the data is in host memory already
        ("auto", "cuda", 0.01, True),  # digits: ~0.3 MiB of tensors, over the limit
        ("auto", "cuda", 1, False),
        ("auto", "mps", 0.01, True),
    ],
)
def test_the_loader_rule(loader, device, limit_mb, streams):
    cfg = compose_cfg([*BASE, f"trainer.loader={loader}", f"trainer.resident_max_mb={limit_mb}"])
    data = data_module.load(cfg.data)
    assert 0.01 * 2**20 < data.nbytes < 2**20
    assert build.streams(cfg, [data], torch.device(device)) is streams


def test_a_streamed_job_does_not_join_a_population():
    cfg = compose_cfg(BASE)
    [data] = build.placed(cfg, [data_module.load(cfg.data)], CPU)
    assert why_alone(_entrant(cfg, data)) is None
    cfg.trainer.loader = "stream"
    [streamed] = build.placed(cfg, [data_module.load(cfg.data)], CPU)
    assert "streamed data" in why_alone(_entrant(cfg, streamed))


@pytest.mark.slow
def test_a_streamed_sweep_with_folds_and_refit_finishes_every_run(tmp_path, store, mlflow_client):
    args = ["data=iris", "trainer.max_epochs=3", "trainer.refit=all", "trainer.loader=stream"]
    grid = ["lr=0.1,0.01", "data.cv_folds=2,null"]
    launcher = ["hydra/launcher=population", "hydra.launcher.size=2"]
    result = train(["-m", *args, *grid, *launcher], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout + result.stderr
    assert out.count("runs alone: data.cv_folds") == 2
    assert out.count("trains alone: streamed data") == 2
    runs = child_runs(mlflow_client)
    assert len(runs) == 4
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["trainer.loader"] == "stream"
        if run.data.params["data.cv_folds"] == "2":
            assert run.data.tags["refit"] == "done"
