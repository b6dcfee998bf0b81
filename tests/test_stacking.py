"""Stacked training (`trainer.stack_folds`): the folds of a cross-validation trained as one model
whose weights are stacked. It must train each fold exactly as that fold would train alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hypersweep import trust
from hypersweep.build import member as job_member
from hypersweep.core.data import load_folds
from hypersweep.core.fit import EarlyStopping, StackedMembers, evaluate, fit, fit_members
from hypersweep.core.models import CNN, MLP
from hypersweep.core.optim import build_optimizer
from hypersweep.core.stacking import Stacked

from conftest import TINY, compose_cfg


def _models(make, k=3):
    torch.manual_seed(0)
    return [make() for _ in range(k)]  # different initial weights per model


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: MLP((1, 8, 8), 10, 16, 2, "relu", 0.0, True), (1, 8, 8)),  # batched products
        (lambda: MLP((13,), 3, 16, 1, "selu", 0.0, False), (13,)),
        (lambda: nn.Sequential(MLP((13,), 3, 16, 2, "elu", 0.0, True)), (13,)),  # through vmap
        (lambda: CNN((1, 8, 8), 10, 4, 2, 3, 16, "relu", 0.0, True), (1, 8, 8)),  # through vmap
    ],
)
def test_a_stack_computes_what_each_model_computes_alone(make, shape):
    models = _models(make)
    stacked = Stacked(models)
    x = torch.randn(3, 20, *shape)
    for mode in (True, False):  # batch norm: batch statistics, then running statistics
        stacked.train(mode)
        for m in models:
            m.train(mode)
        out = stacked(x)
        for i, m in enumerate(models):
            assert torch.allclose(out[i], m(x[i]), atol=1e-6)
    # each model's running statistics moved with its own batch only
    snapshot = stacked.snapshot()
    for i, m in enumerate(models):
        state = Stacked.member_state(snapshot, i)
        assert state.keys() == m.state_dict().keys()
        for k, v in m.state_dict().items():
            assert torch.allclose(state[k], v, atol=1e-6), k
        m.load_state_dict(state)  # a member's state loads into a model of its architecture


def test_dropout_draws_a_different_mask_for_each_model():
    models = [MLP((13,), 3, 64, 1, "relu", 0.5, False)] * 2  # the same weights twice
    stacked = Stacked(models).train()
    out = stacked(torch.ones(2, 1, 13))
    assert not torch.equal(out[0], out[1])
    assert torch.equal(*stacked.eval()(torch.ones(2, 1, 13)))


def _digits_cv(*overrides):
    # digits has 1,527 train+val rows: three folds of exactly 1,018 training rows each
    cfg = compose_cfg([*TINY, "data=digits", "data.cv_folds=3", *overrides])
    return cfg, load_folds(cfg.data)


def _stacked_member(cfg, folds):
    models = []
    for f in folds:
        torch.manual_seed(cfg.trainer.seed)
        models.append(
            trust.instantiate(
                cfg.model, trust.BUILTIN, input_shape=f.input_shape, output_size=f.output_size
            )
        )
    stacked = Stacked(models)
    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trust.BUILTIN), stacked, cfg.regularization.l2
    )
    return StackedMembers(
        stacked,
        optimizer,
        trust.instantiate(cfg.scheduler, trust.BUILTIN)(optimizer),
        folds,
        models,
    )


def _alone(cfg, data):
    return job_member(cfg, data, None)  # as a job builds it: seeded model, optimizer, schedule


@pytest.mark.parametrize(
    "overrides",
    [
        # Adam would turn the float noise in the gradient of a bias before batch norm (zero in
        # exact arithmetic) into steps of size lr, differently in the two computations.
        ["regularization=batchnorm", "optimizer=momentum", "scheduler=exponential"],
        ["model=cnn", "model.channels=4", "regularization=l2", "regularization.l1=1e-4"],
        ["optimizer=rmsprop", "scheduler=plateau", "scheduler.patience=0"],
        # 1,018 = 3 x 339 + 1: the lone last row is trained in a last batch of two
        ["optimizer=momentum", "trainer.batch_size=339"],
    ],
)
def test_stacked_folds_train_each_fold_as_it_trains_alone(overrides):
    cfg, folds = _digits_cv("trainer.max_epochs=4", "trainer.batch_size=64", *overrides)
    options = {"max_epochs": 4, "seed": 0, "l1": cfg.regularization.l1}
    options["batch_size"] = cfg.trainer.batch_size
    member = _stacked_member(cfg, folds)
    together = fit_members([member], stopper=EarlyStopping("min", 100), **options)
    alone = [
        fit(*vars(_alone(cfg, f)).values(), stopper=EarlyStopping("min", 100), **options)
        for f in folds
    ]
    for epoch in range(4):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            mean = sum(a.history[epoch][key] for a in alone) / 3
            assert together.history[epoch][key] == pytest.approx(mean, rel=1e-4), (epoch, key)
    # every original model ends at its own best weights, those of the fold trained alone
    for model, a in zip(member.models, alone, strict=True):
        for k, v in model.state_dict().items():
            assert torch.allclose(v, a.best_state[k], atol=1e-4), k
    assert all(
        torch.equal(v, member.models[0].state_dict()[k]) for k, v in together.best_state.items()
    )


def test_folds_of_unequal_size_train_stacked_and_report_each_folds_own_validation():
    cfg = compose_cfg([*TINY, "data=wine", "data.cv_folds=3", "regularization=batchnorm"])
    folds = load_folds(cfg.data)
    assert len({len(f.x_train) for f in folds}) > 1 and len({len(f.x_val) for f in folds}) > 1
    member = _stacked_member(cfg, folds)
    result = fit_members(
        [member], max_epochs=6, batch_size=16, stopper=EarlyStopping("min", 100), seed=0
    )
    assert result.epochs_run == 6
    # the logged per-fold scores are each model's own, on its own validation rows (not padded)
    for model, fold, metrics in zip(member.models, folds, result.member_metrics, strict=True):
        own = evaluate(model, fold.x_val, fold.y_val, "classification")
        assert metrics["val_loss"] == pytest.approx(own["loss"].item(), rel=1e-5)
        assert metrics["val_acc"] == pytest.approx(own["acc"].item())
    assert len({m["val_loss"] for m in result.member_metrics}) == 3


@pytest.mark.parametrize(
    "overrides, stacked",
    [
        ([], "true"),
        (["trainer.stack_folds=false"], "false"),
        (["model=rnn", "data=digits_seq", "model.hidden_units=8"], "false"),  # no vmap for LSTM
    ],
)
def test_a_cv_job_stacks_its_folds_where_it_can(job_cfg, mlflow_client, overrides, stacked):
    from hypersweep.job import run

    run(job_cfg("data=digits", "data.cv_folds=3", *overrides))
    (r,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert r.data.tags["cv_stacked"] == stacked
    assert r.data.tags["refit"] == "done" and r.info.status == "FINISHED"


def test_stacked_and_one_by_one_cv_jobs_agree(job_cfg, mlflow_client):
    from hypersweep.job import run

    scores = [
        run(job_cfg("data=digits", "data.cv_folds=3", "regularization=l2", flag))
        for flag in ("trainer.stack_folds=true", "trainer.stack_folds=false")
    ]
    assert scores[0] == pytest.approx(scores[1], rel=1e-5)
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert sorted(r.data.tags["cv_stacked"] for r in runs) == ["false", "true"]
    (a, b) = (r.data.metrics for r in runs)
    for key in ("best_val_acc", "cv_val_acc_std", "refit_epochs", "best_epoch"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
