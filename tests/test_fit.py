"""The training loop: early stopping, best weights restored, divergence, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hypersweep import trust
from hypersweep.core.data import Splits, load
from hypersweep.core.fit import EarlyStopping, evaluate, fit
from hypersweep.core.optim import build_optimizer

from conftest import TINY, compose_cfg, fit_options


@pytest.mark.parametrize(
    "mode,patience,min_delta,values,stop_after",
    [
        ("min", 2, 0.0, [1.0, 0.9, 0.95, 0.96, 0.5], 4),  # two epochs without a new low
        ("min", 0, 0.0, [1.0, 1.1], 2),  # patience 0: the first worse epoch stops
        ("min", 2, 0.2, [1.0, 0.9, 0.85, 0.5], 3),  # 0.9 and 0.85 are not 0.2 better
        ("max", 1, 0.0, [0.5, 0.6, 0.6], 3),  # equal is not better
        ("max", 3, 0.0, [0.5, 0.6, 0.7, 0.8], None),
    ],
)
def test_early_stopping_table(mode, patience, min_delta, values, stop_after):
    stopper = EarlyStopping(mode, patience, min_delta)
    stopped = None
    for epoch, value in enumerate(values, start=1):
        stopper.update(value, epoch)
        if stopper.should_stop:
            stopped = epoch
            break
    assert stopped == stop_after


def _build(*overrides: str):
    cfg = compose_cfg([*TINY, *overrides])
    data = load(cfg.data)
    torch.manual_seed(cfg.trainer.seed)
    model = trust.instantiate(
        cfg.model, trust.BUILTIN, input_shape=data.input_shape, output_size=data.output_size
    )
    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trust.BUILTIN), model, cfg.regularization.l2
    )
    scheduler = trust.instantiate(cfg.scheduler, trust.BUILTIN)(optimizer)
    return cfg, data, model, optimizer, scheduler


def _fit(cfg, data, model, optimizer, scheduler, **kw):
    return fit(model, optimizer, scheduler, data, **{**fit_options(cfg), **kw})


def test_early_stopping_ends_training_and_restores_the_best_weights():
    # A high constant lr overfits iris quickly; val_loss turns up and patience 2 stops it.
    parts = _build(
        "data=iris",
        "lr=0.05",
        "trainer.max_epochs=300",
        "trainer.batch_size=8",
        "model.hidden_units=128",
        "trainer.early_stopping.patience=2",
    )
    cfg, data, model, *_ = parts
    result = _fit(*parts)
    assert result.status_reason == "early_stopped"
    assert result.epochs_run < 300
    assert result.epochs_run == result.best_epoch + 2
    val_losses = [h["val_loss"] for h in result.history]
    assert result.best_value == min(val_losses) == val_losses[result.best_epoch - 1]
    # The model holds the best epoch's weights, not the last epoch's.
    restored = evaluate(model, data.x_val, data.y_val, data.task)["loss"].item()
    assert restored == pytest.approx(result.best_value, rel=1e-5)
    assert restored < val_losses[-1]


def test_nan_loss_stops_the_run_as_diverged():
    parts = _build("optimizer=sgd", "lr=1e6", "trainer.max_epochs=20")
    result = _fit(*parts)
    assert result.status_reason == "diverged"
    assert result.epochs_run < 20
    assert not math.isfinite(result.history[-1]["train_loss"])
    assert all(math.isfinite(v) for v in result.best_metrics.values())


def test_pruning_callback_stops_the_run():
    parts = _build("trainer.max_epochs=10")
    result = _fit(*parts, on_epoch=lambda epoch, m: "pruned" if epoch == 2 else None)
    assert result.status_reason == "pruned" and result.epochs_run == 2


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("regularization=all",),
        ("regularization=l1", "optimizer=nesterov"),
        ("model=cnn",),
        ("model=rnn", "data=digits_seq"),
        ("data=synthetic_regression", "data.n_samples=500", "scheduler=cosine"),
    ],
)
def test_same_config_and_seed_give_identical_metrics_on_cpu(overrides):
    first = _fit(*_build(*overrides))
    second = _fit(*_build(*overrides))
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in first.history]
    again = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in second.history]
    assert strip == again


def test_different_training_seed_gives_different_metrics():
    a = _fit(*_build("trainer.seed=1"))
    b = _fit(*_build("trainer.seed=2"))
    assert a.history[-1]["val_loss"] != b.history[-1]["val_loss"]


def test_schedulers_change_the_learning_rate_per_epoch():
    lrs = {}
    for option in ("constant", "exponential", "polynomial", "piecewise", "cosine"):
        extra = ["scheduler.milestones=[2]"] if option == "piecewise" else []
        result = _fit(*_build(f"scheduler={option}", "trainer.max_epochs=4", "lr=0.01", *extra))
        lrs[option] = [h["lr"] for h in result.history]
    assert lrs["constant"] == [0.01] * 4
    assert lrs["exponential"] == pytest.approx([0.01 * 0.95**i for i in range(4)])
    assert lrs["polynomial"] == pytest.approx([0.01 * (1 - i / 4) for i in range(4)])
    assert lrs["piecewise"] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert lrs["cosine"][0] == 0.01 and lrs["cosine"][3] < lrs["cosine"][1] < 0.01


@pytest.mark.parametrize("group", ["l1", "l2"])
def test_weight_penalties_shrink_the_weights(group):
    def weight_norm(*overrides):
        parts = _build("data=wine", "trainer.max_epochs=40", "lr=0.01", *overrides)
        _fit(*parts)
        return sum(p.detach().abs().sum().item() for p in parts[2].parameters() if p.dim() >= 2)

    penalized = weight_norm(f"regularization={group}", f"regularization.{group}=1e-2")
    assert penalized < 0.8 * weight_norm()


class _RowRecorder(nn.Module):
    """A linear model that records, in training mode, the row ids (feature 0) of each batch."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.batches: list[list[int]] = []

    def forward(self, x):
        if self.training:
            self.batches.append(x[:, 0].long().tolist())
        return self.linear(x)


def _tiny_splits(n: int) -> Splits:
    torch.manual_seed(0)
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, 3)], dim=1)
    y = torch.randint(0, 2, (n,))
    return Splits(x, y, x[:3], y[:3], x[:3], y[:3], "classification", (4,), 2)


@pytest.mark.parametrize("n", [7, 9])
def test_every_batch_size_trains_every_row_once_per_epoch(n):
    data = _tiny_splits(n)
    for batch_size in range(1, n + 2):  # 1 (online) to more than the full batch
        model = _RowRecorder(4, 2)
        # lr 0: the weights never change, so each epoch's train_loss is the mean row loss.
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        stopper = EarlyStopping("min", patience=10)
        result = fit(
            model, optimizer, None, data, max_epochs=2, batch_size=batch_size, stopper=stopper
        )
        half = len(model.batches) // 2
        epochs = [model.batches[:half], model.batches[half:]]
        for batches in epochs:
            assert sorted(row for b in batches for row in b) == list(range(n)), batch_size
            if batch_size > 1:
                assert min(len(b) for b in batches) >= 2, (batch_size, batches)
            assert max(len(b) for b in batches) <= max(batch_size, 3)
        assert result.status_reason == "completed"
        mean_row_loss = evaluate(model, data.x_train, data.y_train, data.task)["loss"].item()
        for h in result.history:
            assert h["train_loss"] == pytest.approx(mean_row_loss, rel=1e-6), batch_size
