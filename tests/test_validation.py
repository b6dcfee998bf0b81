"""Bad values fail before any work: one line naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from hypersweep.config import ConfigError, validate

from conftest import compose_cfg, train

# (overrides, key named in the message, value named in the message, words of what is allowed)
CASES = [
    (["lr=-0.1"], "lr", "-0.1", "> 0"),
    (["lr=0"], "lr", "0", "> 0"),
    (["lr=abc"], "lr", "abc", "> 0"),
    (["optimizer=momentum", "momentum=1.0"], "momentum", "1.0", "[0, 1)"),
    (["optimizer=nesterov", "optimizer.momentum=-0.5"], "optimizer.momentum", "-0.5", "[0, 1)"),
    (["optimizer.beta2=1.5"], "optimizer.beta2", "1.5", "[0, 1)"),
    (["optimizer.eps=0"], "optimizer.eps", "0", "> 0"),
    (
        ["regularization=dropout", "regularization.dropout=1.0"],
        "regularization.dropout",
        "1.0",
        "[0, 1)",
    ),
    (["regularization.dropout=-0.1"], "regularization.dropout", "-0.1", "[0, 1)"),
    (["regularization.l2=-1e-4"], "regularization.l2", "-0.0001", ">= 0"),
    (["trainer.batch_size=0"], "trainer.batch_size", "0", "integer >= 1"),
    (["trainer.batch_size=2.5"], "trainer.batch_size", "2.5", "integer >= 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs", "0", "integer >= 1"),
    (["model.activation=swish"], "model.activation", "swish", "relu, leaky_relu, elu, selu"),
    (["model.hidden_units=0"], "model.hidden_units", "0", "integer >= 1"),
    (["model.depth=-1"], "model.depth", "-1", "integer >= 0"),
    (["model=cnn", "data=iris"], "model=cnn", "tabular", "image"),
    (["model=rnn", "data=digits"], "model=rnn", "image", "sequence"),
    (
        ["trainer.early_stopping.monitor=val_f1"],
        "trainer.early_stopping.monitor",
        "val_f1",
        "val_loss, val_acc",
    ),
    (
        ["data=synthetic_regression", "trainer.early_stopping.monitor=val_acc"],
        "trainer.early_stopping.monitor",
        "val_acc",
        "val_rmse",
    ),
    (["trainer.early_stopping.mode=up"], "trainer.early_stopping.mode", "up", "auto, min, max"),
    (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience", "-1", ">= 0"),
    (["trainer.device=tpu"], "trainer.device", "tpu", "auto, cpu, cuda, mps"),
    (["trainer.precision=fp8"], "trainer.precision", "fp8", "fp32, bf16, fp16"),
    (["trainer.stack_folds=maybe"], "trainer.stack_folds", "maybe", "true or false"),
    (["trainer.refit=some"], "trainer.refit", "some", "one of best, all"),
    (["regularization=batchnorm", "trainer.batch_size=1"], "trainer.batch_size", "1", "2 or more"),
    (["scheduler=exponential", "scheduler.gamma=1.5"], "scheduler.gamma", "1.5", "(0, 1]"),
    (
        ["scheduler=piecewise", "scheduler.milestones=[30,10]"],
        "scheduler.milestones",
        "[30, 10]",
        "increasing",
    ),
    (
        ["data.val_fraction=0.5", "data.test_fraction=0.45"],
        "data.val_fraction+data.test_fraction",
        "0.95",
        "below 0.9",
    ),
    (["data.cv_folds=1"], "data.cv_folds", "1", "null or an integer >= 2"),
    (["data.cv_folds=2.5"], "data.cv_folds", "2.5", "null or an integer >= 2"),
    (
        ["data=csv", "data.path=/no/such.csv", "data.target=y"],
        "data.path",
        "/no/such.csv",
        "existing CSV",
    ),
    (
        ["trainer.early_stopping.mode=max"],
        "trainer.early_stopping.mode",
        "'max'",
        "expected auto or min",
    ),
    (
        ["trainer.early_stopping.monitor=val_acc", "trainer.early_stopping.mode=min"],
        "trainer.early_stopping.mode",
        "'min'",
        "expected auto or max",
    ),
    (
        ["model=mlp", "model._target_=hypersweep.models.NoSuchModel"],
        "model._target_",
        "hypersweep.models.NoSuchModel",
        "importable",
    ),
    # only trusted code is called: torch.optim, hypersweep, Optuna, and the modules listed
    (["model._target_=os.system"], "model._target_", "'os.system'", "not a trusted target"),
    (
        ["optimizer._target_=builtins.eval"],
        "optimizer._target_",
        "'builtins.eval'",
        "hypersweep.trusted_targets",
    ),
    (
        ["model._target_=mypackage.Net", "hypersweep.trusted_targets=[mypackage.models]"],
        "model._target_",
        "'mypackage.Net'",
        "not a trusted target",
    ),
    (
        ["hypersweep.trusted_targets=mypackage"],
        "hypersweep.trusted_targets",
        "'mypackage'",
        "a list of module names",
    ),
]


@pytest.mark.parametrize("overrides,key,value,allowed", CASES, ids=lambda x: str(x))
def test_bad_value_is_named_with_what_is_allowed(overrides, key, value, allowed):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert key in message and value in message and allowed in message, message


def test_default_config_is_valid():
    validate(compose_cfg([]))


def test_bad_value_exits_nonzero_with_one_line_and_leaves_no_running_run(
    tmp_path, store, mlflow_client
):
    result = train(["lr=-1", "trainer.max_epochs=1"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["hypersweep: error: lr=-1 is not allowed: expected a number > 0"], (
        result.stderr
    )
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert runs == []


def test_bad_value_in_a_sweep_stops_it_and_closes_the_sweep_run(tmp_path, store, mlflow_client):
    result = train(["-m", "trainer.max_epochs=1", "regularization.dropout=0.1,1.5"], cwd=tmp_path)
    assert result.returncode == 2
    assert "regularization.dropout=1.5 is not allowed" in result.stderr
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FINISHED"]  # the sweep run failed; the good job finished


def test_bad_group_option_late_in_a_grid_stops_it_before_any_job(tmp_path, store, mlflow_client):
    # the grid sweeper validates one job per structure, not every job: the bad option must
    # still be caught before the first job trains
    result = train(
        ["-m", "trainer.max_epochs=1", "lr=0.1,0.01,0.001", "optimizer=adam,adamx"], cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Could not find 'optimizer/adamx'" in result.stderr
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert [r for r in runs if r.data.tags.get("sweep") != "true"] == []
    assert all(r.info.status != "RUNNING" for r in runs)
