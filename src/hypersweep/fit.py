"""The training loop: one function, read top to bottom; it knows nothing of Hydra, MLflow, Optuna.

Per epoch: shuffled index-slice mini-batches, metrics accumulated on the device and synced once,
validation, scheduler step, early stopping (best weights kept), a report to the caller, which may
ask to stop (pruning). A non-finite loss stops the run as "diverged". Several models (the folds
of a cross-validation) train in lockstep and report their mean.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    best_state: dict[str, torch.Tensor]  # the first member's
    # Each member's metrics at the best epoch (the folds' scores under cross-validation).
    member_metrics: list[dict[str, float]] = field(default_factory=list)


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


Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


@dataclass
class Member:
    """A model in training with its optimizer, scheduler and data. `fit` trains one; the folds
    of a cross-validation are several, trained in lockstep: one epoch of each, then one report."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    data: Splits


class _Epochs:
    """One member's epochs: shuffled index-slice batches, autocast, loss scaling, L1, and its
    validation; every result stays on the device."""

    def __init__(self, member: Member, batch_size: int, l1: float, seed: int, precision: str):
        self.member, self.l1 = member, l1
        data = member.data
        self.device, self.task = data.x_train.device, data.task
        self.n = len(data.x_train)
        self.batch_size = min(batch_size, self.n)
        self.loss_fn = loss_function(self.task)
        self.penalized = decayed_weights(member.model) if l1 > 0 else []
        self.shuffle = torch.Generator(device=self.device).manual_seed(seed)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # fp16 needs loss scaling; elsewhere the scaler's bookkeeping is per-step overhead.
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train(self) -> torch.Tensor:
        """One epoch of training; returns the mean training loss as a device scalar."""
        model, optimizer, data = self.member.model, self.member.optimizer, self.member.data
        n = self.n
        model.train()
        order = torch.randperm(n, device=self.device, generator=self.shuffle)
        loss_sum = torch.zeros((), device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) == 1 and n > 1:
                continue  # a lone trailing sample would break batch norm; the next epoch reshuffles
            xb, yb = data.x_train[idx], _targets(data.y_train[idx], self.task)
            with self.autocast():
                loss = self.loss_fn(model(xb).float(), yb)
            objective = loss + self.l1 * l1_penalty(self.penalized) if self.penalized else loss
            optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                objective.backward()
                optimizer.step()
            else:
                self.scaler.scale(objective).backward()
                self.scaler.step(optimizer)
                self.scaler.update()
            loss_sum.add_(loss.detach(), alpha=len(idx))  # one kernel, no host sync
        return loss_sum / n

    def validate(self) -> dict[str, torch.Tensor]:
        data = self.member.data
        return evaluate(
            self.member.model,
            data.x_val,
            data.y_val,
            self.task,
            data.y_scale,
            autocast=self.autocast,
        )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler,
    data: Splits,
    **options: Any,
) -> FitResult:
    """Train one model; see `fit_members` for the options."""
    return fit_members([Member(model, optimizer, scheduler, data)], **options)


def fit_members(
    members: list[Member],
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
    """Train the members in lockstep. The metrics of an epoch are the members' means (a
    cross-validation score when the members are folds); early stopping, pruning and divergence
    act on those means, so all members stop at the same epoch and keep that best epoch's weights;
    each member's scheduler steps on its own monitored value."""
    epochs = [_Epochs(m, batch_size, l1, seed, precision) for m in members]
    task = members[0].data.task
    score_name = "val_acc" if task == "classification" else "val_rmse"
    names = ["train_loss", "val_loss", score_name]
    history: list[dict[str, float]] = []
    best_states = [_state(m.model) for m in members]
    best_metrics: dict[str, float] = {}
    member_metrics: list[dict[str, float]] = []
    status = "completed"

    for epoch in range(1, max_epochs + 1):  # 1-based: MLflow steps and best_epoch read as epochs
        started = time.perf_counter()
        rows = []
        for e in epochs:
            train_loss = e.train()
            val = e.validate()
            rows.append(torch.stack([train_loss, val["loss"], val[score_name[4:]]]))
        # One host sync per epoch for all metrics of all members.
        each = [dict(zip(names, row, strict=True)) for row in torch.stack(rows).tolist()]
        metrics = {k: math.fsum(m[k] for m in each) / len(each) for k in names}
        metrics["lr"] = members[0].optimizer.param_groups[0]["lr"]

        for member, own in zip(members, each, strict=True):
            if isinstance(member.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                member.scheduler.step(own[monitor])
            elif member.scheduler is not None:
                member.scheduler.step()
        metrics["epoch_seconds"] = time.perf_counter() - started
        history.append(metrics)

        if not all(math.isfinite(metrics[k]) for k in names):
            status = "diverged"
        elif stopper.update(metrics[monitor], epoch):
            best_states = [_state(m.model) for m in members]
            best_metrics, member_metrics = dict(metrics), each
        reason = on_epoch(epoch, metrics) if on_epoch else None
        if status == "diverged":
            break
        if reason:
            status = reason
            break
        if stopper.should_stop:
            status = "early_stopped"
            break

    for member, state in zip(members, best_states, strict=True):
        member.model.load_state_dict(state)
    return FitResult(
        best_value=stopper.best,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        status_reason=status,
        history=history,
        best_metrics=best_metrics,
        best_state=best_states[0],
        member_metrics=member_metrics,
    )


def refit(
    member: Member,
    lrs: list[float],
    *,
    batch_size: int,
    l1: float = 0.0,
    seed: int = 0,
    precision: str = "fp32",
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """Train on all of `member.data`'s training rows for `len(lrs)` epochs, epoch i at `lrs[i]`
    (the learning rates the validated run used), with no validation: the refit after a
    cross-validation. Returns the training loss per epoch; stops at a non-finite one."""
    trainer = _Epochs(member, batch_size, l1, seed, precision)
    losses: list[float] = []
    for epoch, lr in enumerate(lrs, 1):
        for group in member.optimizer.param_groups:
            group["lr"] = lr
        losses.append(trainer.train().item())
        if on_epoch:
            on_epoch(epoch, {"refit_train_loss": losses[-1]})
        if not math.isfinite(losses[-1]):
            break
    return losses


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
