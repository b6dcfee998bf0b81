"""Every option of every config group composes, validates and instantiates."""

from __future__ import annotations

import pytest
import torch

from hypersweep import trust
from hypersweep.config import validate
from hypersweep.core.data import load
from hypersweep.core.optim import build_optimizer

from conftest import CONF, TINY, compose_cfg
from image_files import cifar_files, image_folder, mnist_files

GROUPS = ("data", "model", "optimizer", "scheduler", "regularization", "trainer", "tracking")
# Models that need a particular data layout are composed with data that has it.
DATA_FOR_MODEL = {"cnn": "digits", "rnn": "digits_seq", "mlp": "iris", "custom": "iris"}
# The `custom` options name the example module's function and class (examples/custom).
CUSTOM = {"data": "data._target_=mydata.spirals", "model": "model._target_=mynet.ResidualMLP"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).rglob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_option_composes_validates_and_builds(group, option, tmp_path, monkeypatch):
    overrides = [*TINY, f"{group}={option}"]
    trusted = trust.BUILTIN
    if option == "custom":
        monkeypatch.syspath_prepend(str(CONF.parent / "examples" / "custom"))
        overrides = [o for o in overrides if "hidden_units" not in o]
        overrides += [CUSTOM[group], "hypersweep.trusted_targets=[mydata,mynet]"]
        trusted = trust.patterns(["mydata", "mynet"])
    if group == "model":
        overrides.append(f"data={DATA_FOR_MODEL[option]}")
    if group == "data" and option == "csv":
        csv = tmp_path / "table.csv"
        csv.write_text(
            "a,b,color,label\n"
            + "".join(
                f"{i},{i % 7},{'red' if i % 2 else 'blue'},{'yes' if i % 3 else 'no'}\n"
                for i in range(60)
            )
        )
        overrides += [f"data.path={csv}", "data.target=label"]
    if group == "data" and option == "parquet":
        import pandas as pd

        table = tmp_path / "table.parquet"
        colors = pd.Categorical(["red", "blue", "green"] * 20)
        pd.DataFrame(
            {"a": range(60), "color": colors, "label": [i % 3 for i in range(60)]}
        ).to_parquet(table)
        overrides += [f"data.path={table}", "data.target=label"]
    if group == "data" and option in ("mnist", "fashion_mnist"):
        mnist_files(tmp_path, n_train=100, n_test=20)
        overrides += [f"data.root={tmp_path}"]
    if group == "data" and option == "cifar10":
        cifar_files(tmp_path)
        overrides += [f"data.root={tmp_path}"]
    if group == "data" and option == "image_folder":
        overrides += [f"data.path={image_folder(tmp_path, per_class=8)}"]
    cfg = compose_cfg(overrides)
    validate(cfg)
    splits = load(cfg.data)
    assert len(splits.x_train) > len(splits.x_val) > 0 and len(splits.x_test) > 0
    model = trust.instantiate(
        cfg.model, trusted, input_shape=splits.input_shape, output_size=splits.output_size
    )
    out = model(splits.x_train[:4])
    assert out.shape == (4, splits.output_size)
    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trust.BUILTIN), model, cfg.regularization.l2
    )
    scheduler = trust.instantiate(cfg.scheduler, trust.BUILTIN)(optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr)
    assert hasattr(scheduler, "step")


def test_top_level_lr_reaches_every_optimizer():
    for option in options("optimizer"):
        cfg = compose_cfg([f"optimizer={option}", "lr=0.0314"])
        assert cfg.optimizer.lr == 0.0314, option


def test_top_level_momentum_is_the_first_moment_of_momentum_optimizers():
    for option, key in (
        ("momentum", "momentum"),
        ("nesterov", "momentum"),
        ("adam", "beta1"),
        ("adamw", "beta1"),
    ):
        cfg = compose_cfg([f"optimizer={option}", "momentum=0.99"])
        assert cfg.optimizer[key] == 0.99, option


def test_l2_decays_weights_but_not_biases():
    cfg = compose_cfg(["regularization=all", "data=iris"])
    model = trust.instantiate(cfg.model, trust.BUILTIN, input_shape=(4,), output_size=3)
    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trust.BUILTIN), model, cfg.regularization.l2
    )
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == cfg.regularization.l2 > 0
    assert plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])  # biases and batch-norm affine


def test_without_l2_all_parameters_share_one_group():
    cfg = compose_cfg(["regularization=none", "data=iris"])
    model = trust.instantiate(cfg.model, trust.BUILTIN, input_shape=(4,), output_size=3)
    optimizer = build_optimizer(trust.instantiate(cfg.optimizer, trust.BUILTIN), model, 0.0)
    (group,) = optimizer.param_groups
    assert len(group["params"]) == len(list(model.parameters()))


def test_split_is_fixed_by_split_seed_not_training_seed():
    a = load(compose_cfg(["trainer.seed=1"]).data)
    b = load(compose_cfg(["trainer.seed=2"]).data)
    c = load(compose_cfg(["data.split_seed=3"]).data)
    torch.testing.assert_close(a.x_val, b.x_val)
    assert not torch.equal(a.x_val, c.x_val)


def test_standardization_uses_train_statistics_only():
    splits = load(compose_cfg(["data=wine"]).data)
    torch.testing.assert_close(splits.x_train.mean(0), torch.zeros(13), atol=1e-4, rtol=0)
    assert splits.x_val.mean(0).abs().max() > 1e-3  # val is scaled with train's numbers


def test_regression_targets_are_standardized_and_rmse_reported_in_original_units():
    splits = load(compose_cfg(["data=synthetic_regression", "data.n_samples=400"]).data)
    assert splits.task == "regression" and splits.output_size == 1
    assert splits.y_scale > 10  # make_regression targets have a spread far above 1
    assert abs(float(splits.y_train.mean())) < 1e-4
