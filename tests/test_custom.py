"""`data=custom` and `model=custom`: the user's own data function and nn.Module, from a module
outside the package (examples/custom), through the same split, checks, sweep and selection as
the built-ins."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from hypersweep import build
from hypersweep.config import validate
from hypersweep.core import data
from hypersweep.errors import ConfigError

from conftest import ROOT, TINY, compose_cfg, hypersweep, train

EXAMPLES = ROOT / "examples" / "custom"
HELPERS = ROOT / "tests" / "helpers"
OWN_DATA = ["data=custom", "data._target_=mydata.spirals"]
OWN_MODEL = ["model=custom", "model._target_=mynet.ResidualMLP"]
OWN = [*OWN_DATA, *OWN_MODEL, "hypersweep.trusted_targets=[mydata,mynet,baddata]"]


@pytest.fixture(autouse=True)
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(HELPERS))
    data._load_cached.cache_clear()


def cfg_of(*overrides: str, own_model: bool = True):
    tiny = [o for o in TINY if "hidden_units" not in o]
    own = OWN if own_model else [o for o in OWN if o not in OWN_MODEL]
    cfg = compose_cfg([*tiny, *own, *overrides])
    validate(cfg)
    return cfg


def test_own_data_is_split_and_standardized_as_the_built_ins_are():
    cfg = cfg_of("+data.n_rows=600")
    splits = data.load(cfg.data)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (420, 90, 90)
    assert (
        splits.input_shape == (2,) and splits.output_size == 3 and splits.task == "classification"
    )
    assert torch.allclose(splits.x_train.mean(0), torch.zeros(2), atol=1e-5)
    # stratified: each class keeps its third of every split
    assert torch.bincount(splits.y_val).tolist() == [30, 30, 30]
    # the function's own arguments reach it
    other = data.load(cfg_of("+data.n_rows=300").data)
    assert len(other.y_train) + len(other.y_val) + len(other.y_test) == 300


def test_a_dataset_that_says_it_is_a_regression_trains_as_one():
    cfg = cfg_of("data._target_=mydata.waves", "data.task=regression", "+data.n_rows=200")
    splits = data.load(cfg.data)
    assert splits.task == "regression" and splits.output_size == 1
    assert splits.input_shape == (16,) and splits.y_scale != 1.0
    assert torch.allclose(splits.y_train.mean(), torch.zeros(()), atol=1e-5)


def test_image_rows_keep_their_shape_and_labels_may_be_strings():
    cfg = cfg_of(
        "data._target_=baddata.digit_images", "data.kind=image", "model=cnn", own_model=False
    )
    splits = data.load(cfg.data)
    assert splits.input_shape == (1, 8, 8) and tuple(splits.x_train.shape[1:]) == (1, 8, 8)
    assert splits.output_size == 10
    model = build.model(cfg, splits, None)
    assert model(splits.x_val[:5]).shape == (5, 10)
    folds = data.load_folds(cfg_of("data._target_=baddata.digit_images", "data.cv_folds=3").data)
    assert len(folds) == 3 and sum(len(f.y_val) for f in folds) == len(folds[0].y_train) * 3 // 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data._target_=baddata.a_string"], "returned str: expected (x, y), (x, y, task)"),
        (["data._target_=baddata.lengths_differ"], "x of shape (10, 3) and y of (9,)"),
        (["data._target_=baddata.nan_rows"], "x is NaN or infinite in 2 rows (5, 8)"),
        (["data._target_=baddata.one_class"], "returned one class"),
        (["data._target_=baddata.words_as_features"], "x holds non-numeric values"),
        (["data._target_=mydata.waves"], "data.task='classification' but"),
        (["data._target_=mydata.nothing"], "is not a function of an importable module"),
        (
            ["data._target_=nomodule.load", "hypersweep.trusted_targets=[mynet,nomodule]"],
            "cannot be imported",
        ),
        (["data._target_=mydata.spirals", "data.kind=image"], "needs rows of 3 dimensions"),
        (
            ["data._target_=baddata.digit_images", "data.shape=[4,4]"],
            "data.shape=[4, 4] is not allowed",
        ),
    ],
)
def test_data_that_breaks_the_contract_is_one_line_naming_it(overrides, message):
    cfg = compose_cfg([*OWN, *overrides])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
        data.load(cfg.data)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hypersweep.trusted_targets=[mynet]"], "data._target_='mydata.spirals' is not a trusted"),
        (["hypersweep.trusted_targets=[mydata]"], "model._target_='mynet.ResidualMLP' is not a"),
        (["+data.rows=5"], "data.rows=5 is not a known key: mydata.spirals takes"),
        (["+model.depth=5"], "model.depth=5 is not a known key: mynet.ResidualMLP takes"),
    ],
)
def test_untrusted_or_unknown_keys_are_refused_before_any_import(overrides, message):
    sys.modules.pop("mydata", None)
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg([*OWN, *overrides]))
    assert message in str(error.value)
    if "trusted" in message and "mydata" in message:
        assert "mydata" not in sys.modules  # refused before importing it


def test_own_model_gets_the_regularization_it_takes():
    cfg = cfg_of("regularization=dropout", "+model.width=8")
    splits = data.load(cfg.data)
    model = build.model(cfg, splits, None)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.2, 0.2] and model.head.in_features == 8
    # its own config wins over the regularization group's
    with open_dict(cfg):
        cfg.model.dropout = 0.5
    rates = [m.p for m in build.model(cfg, splits, None).modules() if hasattr(m, "p")]
    assert rates == [0.5, 0.5]
    # a model that does not take `dropout` is not handed it
    cnn = compose_cfg(["regularization=dropout", "model=cnn"])
    assert "dropout" not in build.regularization_arguments(cnn)  # the cnn config sets it itself


def test_the_split_is_cached_on_disk_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSWEEP_CACHE_DIR", str(tmp_path))
    data.load(cfg_of().data)
    assert not list(tmp_path.iterdir())
    data.load(cfg_of("data.cache=true").data)
    assert len(list(tmp_path.glob("custom-*.npz"))) == 1


@pytest.mark.slow
def test_a_sweep_over_the_own_model_argument_tracks_and_selects_like_the_built_ins(
    tmp_path, store, mlflow_client
):
    env = {"PYTHONPATH": f"{EXAMPLES}:{HELPERS}"}
    args = [*OWN, "trainer.max_epochs=4", "trainer.batch_size=64", "regularization=dropout"]
    result = train(["-m", *args, "+model.blocks=1,2", "+model.width=16"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    runs = mlflow_client.search_runs(experiments)
    runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["model.blocks"] for r in runs) == ["1", "2"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["model._target_"] == "mynet.ResidualMLP"
        assert run.data.params["data._target_"] == "mydata.spirals"
        assert run.data.metrics["epochs_run"] == 4
    trust = ["--trust", "mydata", "--trust", "mynet"]
    best = hypersweep(["best", "--no-register", *trust], tmp_path, store["uri"], env)
    assert best.returncode == 0, best.stderr[-3000:]
    assert "test_acc" in best.stdout + best.stderr
    assert np.isfinite(min(r.data.metrics["best_val_loss"] for r in runs))
