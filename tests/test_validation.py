"""Bad values fail before any work: one line naming the key, the value and what is allowed."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys

import pytest

from hypersweep.config import ConfigError, validate

from conftest import ROOT, compose_cfg, train
from image_files import image_folder

# (overrides, key named in the message, value named in the message, words of what is allowed)
CASES = [
    (["tracking.flush_every_s=-1"], "tracking.flush_every_s", "-1", ">= 0"),
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
    (["trainer.loader=disk"], "trainer.loader", "disk", "one of auto, resident, stream"),
    (["trainer.loader_workers=-1"], "trainer.loader_workers", "-1", "an integer >= 0"),
    (["trainer.resident_max_mb=0"], "trainer.resident_max_mb", "0", "a number > 0"),
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


def test_a_bad_value_late_in_a_grid_stops_it_before_any_job_and_leaves_no_run(
    tmp_path, store, mlflow_client
):
    result = train(["-m", "trainer.max_epochs=1", "regularization.dropout=0.1,1.5"], cwd=tmp_path)
    assert result.returncode == 2
    assert "regularization.dropout=1.5 is not allowed" in result.stderr
    assert _runs(mlflow_client) == []  # the sweep's own run, opened before the check, is gone


def _runs(client, deleted: bool = False):
    from mlflow.entities import ViewType

    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, run_view_type=view) if experiments else []


def test_bad_group_option_late_in_a_grid_stops_it_before_any_job(tmp_path, store, mlflow_client):
    # the grid sweeper composes one job per structure, not every job: the bad option must
    # still be caught before the first job trains, in one line
    result = train(
        ["-m", "trainer.max_epochs=1", "lr=0.1,0.01,0.001", "optimizer=adam,adamx"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hypersweep: error: In 'config': Could not find 'optimizer/adamx'; Available options in "
        "'optimizer': adam, adamw, momentum, nesterov, rmsprop, sgd"
    ]
    assert _runs(mlflow_client) == []


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# Bad input to the command itself, beyond one job's values (CASES): data files, keys nothing
# reads, a sweep's values and search space, the sweeper's settings, the store. (arguments,
# words the line must hold.) {tmp} is the test's directory, where the CSV files below are.
CLI_CASES = [
    (["data=csv"], ["data.path=???", "has no value"]),
    (["data=csv", "data.path={tmp}/rows.csv"], ["data.target=???", "has no value"]),
    (["data=csv", "data.path={tmp}/none.csv", "data.target=y"], ["data.path=", "an existing CSV"]),
    (["data=csv", "data.path={tmp}/empty.csv", "data.target=y"], ["empty.csv", "is empty"]),
    (["data=csv", "data.path={tmp}/header.csv", "data.target=y"], ["header.csv", "no data rows"]),
    (["data=csv", "data.path={tmp}/three.csv", "data.target=y"], ["3 rows", "expected more rows"]),
    (["data=csv", "data.path={tmp}/latin1.csv", "data.target=y"], ["not UTF-8", "0xe9"]),
    (["data=csv", "data.path={tmp}/ragged.csv", "data.target=y"], ["cannot be read as CSV"]),
    (["data=csv", "data.path={tmp}/rows.csv", "data.target=z"], ["data.target='z'", "one of a"]),
    (["data=csv", "data.path={tmp}/nan_target.csv", "data.target=y"], ["'y' is empty", "(2)"]),
    (["data=csv", "data.path={tmp}/nan_feature.csv", "data.target=y"], ["column 'a'", "(3)"]),
    (["data=csv", "data.path={tmp}/inf_feature.csv", "data.target=y"], ["'b'", "not finite"]),
    (["data=csv", "data.path={tmp}/one_class.csv", "data.target=y"], ["one class", "two or more"]),
    (["data=csv", "data.path={tmp}/only_target.csv", "data.target=y"], ["no column besides"]),
    (
        ["data=csv", "data.path={tmp}/rows.csv", "data.target=a", "data.task=regression"],
        [],  # a fine regression: the control case of the file every other case breaks
    ),
    (
        ["data=csv", "data.path={tmp}/text_target.csv", "data.target=y", "data.task=regression"],
        ["not a number", "'many'", "data.task=regression"],
    ),
    (["+trainer.epochs=3"], ["trainer.epochs=3", "not a known key", "max_epochs"]),
    (["+trainer.early_stopping.patiense=3"], ["patiense", "patience"]),
    (["+regularization.l3=0.1"], ["regularization.l3=0.1", "l1, l2"]),
    (["+model.widht=3"], ["model.widht=3", "hidden_units"]),
    (["+optimizer.momentum2=0.9"], ["optimizer.momentum2", "beta1"]),
    (["scheduler=exponential", "+scheduler.gama=0.9"], ["scheduler.gama", "gamma"]),
    (["+data.n_samples=10"], ["data.n_samples=10", "not a known key"]),
    (["+tracking.urii=x"], ["tracking.urii", "uri"]),
    (["-m", "lr=0.1,-1"], ["lr=-1", "> 0"]),
    (["-m", "optimizer=sgd,momentum", "momentum=0.5,1.5"], ["momentum=1.5", "[0, 1)"]),
    (["-m", "lr=0.1,0.01", "+trainer.epochs=3"], ["trainer.epochs=3", "not a known key"]),
    (["-m", "trainer.batch_size=32,0"], ["trainer.batch_size=0", "integer >= 1"]),
    (
        ["-m", "search=random", "regularization.dropout=interval(0.5, 1.5)"],
        ["search space of regularization.dropout", "1.5", "[0, 1)"],
    ),
    (["-m", "search=random", "trainer.batch_size=choice(0, 8)"], ["trainer.batch_size=0"]),
    (["-m", "search=random", "model.depth=int(interval(-2, 2))"], ["model.depth=-2", ">= 0"]),
    (["-m", "search=random", "momentum=tag(one_minus_log, interval(0.5, 1))"], ["momentum"]),
    (["-m", "search=random", "scheduler=choice(constant, bogus)"], ["scheduler", "bogus"]),
    (["-m", "search=random", "lr=tag(log, interval(0, 1))"], ["lr", "log"]),
    (["-m", "search=random", "hydra.sweeper.n_trials=0"], ["n_trials=0", "integer >= 1"]),
    (["-m", "search=random", "hydra.sweeper.direction=up"], ["direction='up'", "minimize"]),
    (["-m", "search=random", "hydra.sweeper.direction=maximize"], ["contradicts", "val_loss"]),
    (["-m", "search=random", "hydra.sweeper.max_failure_rate=2"], ["max_failure_rate=2"]),
    (["-m", "search=random", "hydra.sweeper.n_jobs=0"], ["n_jobs=0", "integer >= 1"]),
    (
        ["-m", "search=random", "hydra/launcher=hypersweep_pool", "hydra.launcher.n_jobs=0"],
        ["hydra.launcher.n_jobs=0", "integer >= 1"],
    ),
    (
        ["-m", "search=random", "hydra/launcher=population", "hydra.launcher.size=0"],
        ["hydra.launcher.size=0", "integer >= 1"],
    ),
    (
        ["-m", "lr=0.1,0.01", "hydra/launcher=population", "hydra.launcher.size=-3"],
        ["hydra.launcher.size=-3", "integer >= 1"],
    ),
    (
        [
            "-m",
            "search=random",
            "hydra/launcher=population",
            "hydra.launcher.trials_per_structure=0",
        ],
        ["hydra.launcher.trials_per_structure=0", "integer >= 1 or null"],
    ),
    (
        ["-m", "hydra/sweeper=hypersweep", "hydra/sweeper/sampler=motpe", "lr=interval(0.01, 1)"],
        ["motpe", "removed"],
    ),
    (["tracking=server", "tracking.uri=http://127.0.0.1:9"], ["is not reachable", "mlflow server"]),
    (["tracking.uri=sqlite:////proc/none/mlflow.db"], ["tracking.uri=", "not writable"]),
    (["tracking.artifact_root=/proc/none"], ["tracking.artifact_root='/proc/none'", "writable"]),
    (["-m", "lr=0.1,0.01", "tracking.artifact_root=/proc/none"], ["artifact_root", "writable"]),
    (["resume_from=0123456789abcdef"], ["resume_from='0123456789abcdef'", "finished run"]),
    (["trainer.device=cuda"] if not _cuda() else ["trainer.device=gpu"], ["trainer.device="]),
    (["trainer.precision=fp16", "trainer.device=cpu"], ["fp16", "needs CUDA"]),
    (["data=iris", "data.cv_folds=100"], ["data.cv_folds=100", "at most"]),
    # Parquet: the CSV rules (the files are the CSV files above, written as Parquet), and its own
    (["data=parquet", "data.target=y"], ["data.path=???", "has no value"]),
    (["data=parquet", "data.path={tmp}/none.pq", "data.target=y"], ["an existing Parquet"]),
    (["data=parquet", "data.path={tmp}/rows.csv", "data.target=y"], ["cannot be read as Parquet"]),
    (
        ["data=parquet", "data.path={tmp}/header.pq", "data.target=y"],
        ["header.pq' has no data rows"],
    ),
    (["data=parquet", "data.path={tmp}/rows.pq", "data.target=z"], ["data.target='z'", "one of a"]),
    (["data=parquet", "data.path={tmp}/nan_target.pq", "data.target=y"], ["'y' is empty", "(2)"]),
    (["data=parquet", "data.path={tmp}/nan_feature.pq", "data.target=y"], ["column 'a'", "(3)"]),
    (["data=parquet", "data.path={tmp}/inf_feature.pq", "data.target=y"], ["'b'", "not finite"]),
    (["data=parquet", "data.path={tmp}/one_class.pq", "data.target=y"], ["one class"]),
    (["data=parquet", "data.path={tmp}/only_target.pq", "data.target=y"], ["no column besides"]),
    (["data=parquet", "data.path={tmp}/dates.pq", "data.target=y"], ["'when'", "datetime64"]),
    (["data=parquet", "data.path={tmp}/na_int.pq", "data.target=y"], ["column 'n'", "(4)"]),
    (["data=parquet", "data.path={tmp}/na_bool.pq", "data.target=y"], ["column 'flag'", "(1)"]),
    (["trainer.num_threads=0"], ["trainer.num_threads=0", "integer >= 1"]),
    # Image data
    (["data=mnist", "data.root={tmp}"], ["data.root=", "data=mnist", "train-images-idx3-ubyte"]),
    (["data=cifar10", "data.root={tmp}"], ["data=cifar10", "data_batch_1", "download=true"]),
    (["data=image_folder", "data.path={tmp}/none"], ["data.path=", "an existing folder"]),
    (["data=image_folder", "data.path={tmp}/images/red"], ["0 subfolders", "two or more"]),
    (["data=image_folder", "data.path={tmp}/images", "data.size=[28]"], ["data.size=[28]"]),
    (["data=image_folder", "data.path={tmp}/images", "data.channels=2"], ["data.channels=2"]),
    (["data=image_folder", "data.path={tmp}/broken", "model=cnn"], ["bad.png", "as an image"]),
    (["data.test_fraction=null"], ["data.test_fraction=None", "own test split of cifar10"]),
    (["data=mnist", "data.root={tmp}", "data.download=yes"], ["data.download='yes'", "true or"]),
]


CSV_FILES = {
    "rows.csv": "a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40)),
    "empty.csv": "",
    "header.csv": "a,b,y\n",
    "three.csv": "a,b,y\n1,2,0\n3,4,1\n5,6,0\n",
    "ragged.csv": "a,b,y\n1,2,0\n3,4,1,7,8\n" + "1,2,0\n" * 20,
    "nan_target.csv": "a,b,y\n1,2,0\n3,4,\n" + "".join(f"{i},1,{i % 2}\n" for i in range(30)),
    "nan_feature.csv": "a,b,y\n1,2,0\n3,4,1\n,4,1\n" + "5,6,0\n5,6,1\n" * 15,
    "inf_feature.csv": "a,b,y\n1,inf,0\n" + "".join(f"{i},1,{i % 2}\n" for i in range(30)),
    "one_class.csv": "a,b,y\n" + "".join(f"{i},1,cat\n" for i in range(30)),
    "only_target.csv": "y\n" + "".join(f"{i % 2}\n" for i in range(30)),
    "text_target.csv": "a,y\n" + "".join(f"{i},{i}\n" for i in range(30)) + "1,many\n",
}


def _parquet_files(tmp_path) -> None:
    """The CSV files that parse, as Parquet (`x.pq`), and the cases only Parquet can hold."""
    import pandas as pd

    for name, text in CSV_FILES.items():
        if name not in ("empty.csv", "ragged.csv"):
            frame = pd.read_csv(io.StringIO(text))
            frame.to_parquet(tmp_path / name.replace(".csv", ".pq"))
    y = [i % 2 for i in range(30)]
    pd.DataFrame({"when": pd.date_range("2026-01-01", periods=30), "y": y}).to_parquet(
        tmp_path / "dates.pq"
    )
    n = pd.array([1, 2, 3, None, *range(26)], dtype="Int64")
    pd.DataFrame({"n": n, "y": y}).to_parquet(tmp_path / "na_int.pq")
    flag = pd.array([None, *([True, False] * 14), True], dtype="boolean")
    pd.DataFrame({"flag": flag, "y": y}).to_parquet(tmp_path / "na_bool.pq")


def _cli():
    """train.py's main, run in this process: a bad input never gets as far as training, and a
    fresh interpreter per case would cost seconds each."""
    spec = importlib.util.spec_from_file_location("train_under_test", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def cli():
    return _cli()


ALL_CASES = [*[(o, [k, v, a]) for o, k, v, a in CASES], *CLI_CASES]


@pytest.mark.parametrize("args,words", ALL_CASES, ids=[" ".join(a) for a, _ in ALL_CASES])
def test_every_bad_input_is_one_line_and_exit_status_2_before_any_work(
    args, words, cli, tmp_path, store, mlflow_client, monkeypatch
):
    from hydra.core.global_hydra import GlobalHydra

    from hypersweep import errors
    from hypersweep.core import preemption

    for name, text in CSV_FILES.items():
        (tmp_path / name).write_text(text)
    _parquet_files(tmp_path)
    image_folder(tmp_path / "images", per_class=4)
    image_folder(tmp_path / "broken", per_class=4)
    (tmp_path / "broken" / "red" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n torn")
    (tmp_path / "latin1.csv").write_bytes("a,y\ncaf\xe9,1\n".encode("latin-1") * 20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if not any(a.startswith("tracking.uri=") for a in argv):
        argv.append(f"tracking.uri={store['uri']}")
    if not any(a.startswith("tracking.artifact_root=") for a in argv):
        argv.append(f"tracking.artifact_root={store['artifacts']}")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "train.py",
            "--config-path",
            str(ROOT / "conf"),
            *(["-m"] if "-m" in argv else []),
            "trainer.max_epochs=1",  # first: a case may set it
            *[a for a in argv if a != "-m"],
        ],
    )
    GlobalHydra.instance().clear()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            try:
                cli()
                status = 0
            except SystemExit as e:
                status = e.code
    finally:
        errors._on_reject.clear()
        preemption.reset()
        GlobalHydra.instance().clear()
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    if not words:  # the control case
        assert status == 0, stderr.getvalue()[-2000:]
        return
    assert status == 2, stderr.getvalue()[-3000:]
    assert len(lines) == 1 and lines[0].startswith("hypersweep: error: "), lines
    assert all(w in lines[0] for w in words), (lines[0], words)
    # before any work: no job ran, no run is left (a sweep's own run is deleted), no checkpoint
    assert _runs(mlflow_client) == []
    assert all(r.info.status != "RUNNING" for r in _runs(mlflow_client, deleted=True))
    assert not list(tmp_path.rglob("*.pt"))
