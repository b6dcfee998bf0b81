"""The training loop: one function, read top to bottom; it knows nothing of Hydra, MLflow, Optuna.

Per epoch: shuffled index-slice mini-batches, metrics accumulated on the device and synced once,
validation, scheduler step, early stopping (best weights kept), a report to the caller, which may
ask to stop (pruning). A non-finite loss stops the run as "diverged".
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hypersweep.data import Splits
from hypersweep.optim import decayed_weights, l1_penalty

# Called after every epoch with (epoch, metrics); returns a stop reason (e.g. "pruned") or None.
EpochCallback = Callable[[int, dict[str, float]], "str | None"]


@dataclass
class EarlyStopping:
    """Stop once `patience` epochs in a row bring no improvement larger than `min_delta`."""

    mode: str = "min"
    patience: int = 10
    min_delta: float = 0.0
    best: float = field(default=math.nan, init=False)
    best_epoch: int = field(default=0, init=False)  # 0: none yet
    bad_epochs: int = field(default=0, init=False)

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's monitored value; return True if it is a new best."""
        better = (
            math.isnan(self.best)
            or (self.mode == "min" and value < self.best - self.min_delta)
            or (self.mode == "max" and value > self.best + self.min_delta)
        )
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= max(self.patience, 1)


@dataclass
class FitResult:
    best_value: float
    best_epoch: int
    epochs_run: int
    status_reason: str  # completed | early_stopped | pruned | diverged
    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    best_state: dict[str, torch.Tensor]


def loss_function(task: str) -> nn.Module:
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def _targets(y: torch.Tensor, task: str) -> torch.Tensor:
    return y if task == "classification" else y.reshape(-1, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    y_scale: float = 1.0,
    chunk: int = 8192,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """Loss and accuracy (classification) or rmse in original units (regression), on the device."""
    model.eval()
    loss_fn = loss_function(task)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for i in range(0, len(x), chunk):
        xb, yb = x[i : i + chunk], _targets(y[i : i + chunk], task)
        with autocast():
            out = model(xb)
        out = out.float()
        loss_sum += loss_fn(out, yb) * len(xb)
        if task == "classification":
            correct += (out.argmax(dim=1) == yb).sum()
    loss = loss_sum / len(x)
    if task == "classification":
        return {"loss": loss, "acc": correct / len(x)}
    return {"loss": loss, "rmse": loss.sqrt() * y_scale}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau,
    data: Splits,
    *,
    max_epochs: int,
    batch_size: int,
    stopper: EarlyStopping,
    monitor: str = "val_loss",
    l1: float = 0.0,
    seed: int = 0,
    precision: str = "fp32",
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    task, device = data.task, data.x_train.device
    loss_fn = loss_function(task)
    penalized = decayed_weights(model) if l1 > 0 else []
    n = len(data.x_train)
    batch_size = min(batch_size, n)
    shuffle = torch.Generator(device=device).manual_seed(seed)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    # fp16 needs loss scaling; elsewhere the scaler's bookkeeping is per-step overhead.
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    history: list[dict[str, float]] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_metrics: dict[str, float] = {}
    status = "completed"

    for epoch in range(1, max_epochs + 1):  # 1-based: MLflow steps and best_epoch read as epochs
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, device=device, generator=shuffle)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) == 1 and n > 1:
                continue  # a lone trailing sample would break batch norm; the next epoch reshuffles
            xb, yb = data.x_train[idx], _targets(data.y_train[idx], task)
            with autocast():
                loss = loss_fn(model(xb).float(), yb)
            objective = loss + l1 * l1_penalty(penalized) if penalized else loss
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                objective.backward()
                optimizer.step()
            else:
                scaler.scale(objective).backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum.add_(loss.detach(), alpha=len(idx))  # one kernel, no host sync

        val = evaluate(model, data.x_val, data.y_val, task, data.y_scale, autocast=autocast)
        score_name = "val_acc" if task == "classification" else "val_rmse"
        names = ["train_loss", "val_loss", score_name]
        # One host sync per epoch for all metrics.
        values = torch.stack([loss_sum / n, val["loss"], val[score_name[4:]]]).tolist()
        metrics = dict(zip(names, values, strict=True))
        metrics["lr"] = optimizer.param_groups[0]["lr"]

        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metrics[monitor])
        else:
            scheduler.step()
        metrics["epoch_seconds"] = time.perf_counter() - started
        history.append(metrics)

        if not all(math.isfinite(metrics[k]) for k in names):
            status = "diverged"
        elif stopper.update(metrics[monitor], epoch):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_metrics = dict(metrics)
        reason = on_epoch(epoch, metrics) if on_epoch else None
        if status == "diverged":
            break
        if reason:
            status = reason
            break
        if stopper.should_stop:
            status = "early_stopped"
            break

    model.load_state_dict(best_state)
    return FitResult(
        best_value=stopper.best,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        status_reason=status,
        history=history,
        best_metrics=best_metrics,
        best_state=best_state,
    )
