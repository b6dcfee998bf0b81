"""The training loop: one function, read top to bottom; it knows nothing of Hydra, MLflow, Optuna.

Per epoch: shuffled index-slice mini-batches that use every training row once, metrics
accumulated on the device and synced once, validation, scheduler step, early stopping (best
weights kept), a report to the caller, which may ask to stop (pruning). A non-finite loss stops
the run as "diverged". Several models (the folds of a cross-validation) train in lockstep and
report their mean; models of one architecture can train stacked as one (`StackedMembers`, see
`hypersweep.core.stacking`).

Preemption: `interrupted` is polled before every mini-batch; when it says so, the loop raises
`Interrupted` with everything needed to continue exactly where it stopped (weights, optimizer,
scheduler, early-stopping and RNG state, the epoch's shuffle order and position); `resume=` that
state continues the fit as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hypersweep.core.data import Splits
from hypersweep.core.optim import decayed_weights, l1_penalty
from hypersweep.core.stacking import Stacked

# Called after every epoch with (epoch, metrics); returns a stop reason (e.g. "pruned") or None.
EpochCallback = Callable[[int, dict[str, float]], "str | None"]


class Interrupted(Exception):
    """Training stopped between two mini-batches because `interrupted()` said so. `state`
    (plain containers and tensors: `torch.save`-able, loadable with weights_only) continues it:
    `fit_members(..., resume=state)`; `epoch` is the epoch that was in progress."""

    def __init__(self, state: dict[str, Any], epoch: int) -> None:
        super().__init__(f"interrupted in epoch {epoch}")
        self.state, self.epoch = state, epoch


class _Stopped(Exception):
    """Raised by a trainer between batches: where it was in its epoch."""

    def __init__(self, position: dict[str, Any]) -> None:
        self.position = position


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
    y_scale: float | torch.Tensor = 1.0,
    chunk: int = 8192,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Loss and accuracy (classification) or rmse in original units (regression), on the device.

    One model: `x` is (rows, ...) and each metric a scalar. Stacked members: `x` is
    (members, rows, ...), zero-padded to the longest member's rows, `mask` (members, rows) marks
    the real ones, and each metric has one value per member. `device`: where the model is, when
    the tensors are elsewhere (streamed data in host memory): each chunk is copied there."""
    model.eval()
    device = x.device if device is None else device
    rows = x.shape[1] if mask is not None else len(x)
    shape = (len(x),) if mask is not None else ()
    loss_sum = torch.zeros(shape, device=device)
    correct = torch.zeros(shape, device=device)
    for i in range(0, rows, chunk):
        part = (slice(None), slice(i, i + chunk)) if mask is not None else slice(i, i + chunk)
        xs, ys = (t[part].to(device, non_blocking=True) for t in (x, y))
        with autocast():
            out = model(xs).float()
        losses = _row_losses(out, ys, task)
        hits = out.argmax(dim=-1) == ys if task == "classification" else None
        if mask is not None:
            held = mask[part].to(device, non_blocking=True)
            losses = losses * held
            hits = hits & held if hits is not None else None
        loss_sum += losses.sum(dim=-1)
        if hits is not None:
            correct += hits.sum(dim=-1)
    n = mask.sum(dim=1).to(device) if mask is not None else len(x)
    loss = loss_sum / n
    if task == "classification":
        return {"loss": loss, "acc": correct / n}
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


@dataclass
class StackedMembers:
    """Several members trained as one `Stacked` model under one optimizer and scheduler (the
    folds of a cross-validation share hyperparameters): model i trains on `data[i]`. At the end
    each of `models` (the originals the stack was built from) holds its own best weights."""

    model: Stacked
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    data: list[Splits]
    models: list[nn.Module]


class _Epochs:
    """One member's epochs: shuffled index-slice batches, autocast, loss scaling, L1, and its
    validation; every result stays on the device."""

    size = 1  # members trained

    def __init__(self, member: Member, batch_size: int, l1: float, seed: int, precision: str):
        data = member.data
        self._setup(member, data, len(data.x_train), batch_size, l1, precision)
        self.loss_fn = loss_function(self.task)
        self.shuffles = [torch.Generator(device=self.device).manual_seed(seed)]
        self.rows = _Rows(data.x_train, data.y_train, self.bounds, stacked=False)

    def _setup(
        self,
        member: Member | StackedMembers,
        data: Splits,
        n: int,
        batch_size: int,
        l1: float,
        precision: str,
    ) -> None:
        """What every trainer holds: `n` training rows per epoch in batches, the L1 weights,
        autocast and loss scaling."""
        self.member, self.l1 = member, l1
        self.interrupted: Callable[[], object] | None = None
        self.device, self.task, self.stream = data.device, data.task, data.stream
        self.n = n
        self.batch_size = min(batch_size, n)
        self.bounds = batch_bounds(n, batch_size)
        rows = sum(end - start for start, end in self.bounds)
        if rows != n or n == 0:  # every epoch trains every row: its loss is the mean over n
            raise ValueError(f"an epoch would train {rows} of {n} training rows")
        self.penalized = decayed_weights(member.model) if l1 > 0 else []
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # fp16 needs loss scaling; elsewhere the scaler's bookkeeping is per-step overhead.
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _step(self, loss: torch.Tensor) -> None:
        """One optimizer step on `loss` (summed over members when stacked) plus the L1 term."""
        optimizer = self.member.optimizer
        objective = loss + self.l1 * l1_penalty(self.penalized) if self.penalized else loss
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            objective.backward()
            optimizer.step()
        else:
            self.scaler.scale(objective).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def _orders(self) -> torch.Tensor:
        """This epoch's shuffle: (members, rows) indices."""
        return torch.randperm(self.n, device=self.device, generator=self.shuffles[0])[None]

    def _batches(
        self, position: dict[str, Any] | None, loss_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """The epoch's orders, loss accumulator and batches still to train: a fresh epoch, or
        the rest of one that was interrupted at `position`."""
        if position is None:
            return self._orders(), torch.zeros(loss_shape, device=self.device), self.bounds
        orders = position["orders"].to(self.device)
        return orders, position["loss_sum"].to(self.device), self.bounds[position["batch"] :]

    def _feed(
        self, orders: torch.Tensor, first: int
    ) -> Iterator[tuple[int, tuple[int, int], torch.Tensor, torch.Tensor]]:
        """The epoch's batches from number `first` on: (number, bounds, inputs, targets) on the
        device. Resident data is indexed where it is; streamed data comes from a DataLoader whose
        workers gather the rows in host memory while the device trains on the batch before."""
        rows = self.rows
        numbers = range(first, len(self.bounds))
        if self.stream is None:
            rows.order = orders
            for b in numbers:
                yield (b, self.bounds[b], *rows[b])
            return
        rows.order = orders.cpu()  # the workers fork with it, at the loader's first batch
        workers = self.stream.workers
        loader = torch.utils.data.DataLoader(
            rows,
            batch_size=None,  # an item is a whole batch
            sampler=numbers,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            # Its own generator: the loader draws a seed per epoch, which from the global RNG
            # would shift the dropout masks away from the resident path's.
            generator=torch.Generator(),
        )
        for b, (x, y) in zip(numbers, loader, strict=True):
            yield (
                b,
                self.bounds[b],
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
            )

    def _check(self, orders: torch.Tensor, loss_sum: torch.Tensor, batch: int) -> None:
        """Before each batch: stop here if asked (see `Interrupted`)."""
        if self.interrupted is not None and self.interrupted():
            raise _Stopped({"orders": orders, "loss_sum": loss_sum, "batch": batch})

    def state(self) -> dict[str, Any]:
        """What continues this trainer: weights, optimizer, scheduler, shuffles, loss scaler."""
        member = self.member
        return {
            "model": member.model.state_dict(),
            "optimizer": member.optimizer.state_dict(),
            "scheduler": member.scheduler.state_dict() if member.scheduler is not None else None,
            "shuffles": [g.get_state() for g in self.shuffles],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        member = self.member
        member.model.load_state_dict(state["model"])
        member.optimizer.load_state_dict(state["optimizer"])
        if member.scheduler is not None:
            member.scheduler.load_state_dict(state["scheduler"])
        for g, s in zip(self.shuffles, state["shuffles"], strict=True):
            g.set_state(s)
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])

    def train(self, position: dict[str, Any] | None = None) -> torch.Tensor:
        """One epoch of training (or the rest of one, from `position`); returns the mean
        training loss as a device scalar."""
        model = self.member.model
        model.train()
        orders, loss_sum, bounds = self._batches(position, ())
        first = len(self.bounds) - len(bounds)
        with contextlib.closing(self._feed(orders, first)) as batches:  # closed: workers end
            for i, (start, end), xb, yb in batches:
                self._check(orders, loss_sum, i)
                with self.autocast():
                    loss = self.loss_fn(model(xb).float(), _targets(yb, self.task))
                self._step(loss)
                loss_sum.add_(loss.detach(), alpha=end - start)  # one kernel, no host sync
        return loss_sum / self.n

    def validate(self) -> dict[str, torch.Tensor]:
        data = self.member.data
        return evaluate(
            self.member.model,
            data.x_val,
            data.y_val,
            self.task,
            data.y_scale,
            autocast=self.autocast,
            device=self.device,
        )

    def epoch(self, score: str, position: dict[str, Any] | None = None) -> torch.Tensor:
        """Train one epoch and validate: (members, 3) of train loss, val loss and `score`."""
        train_loss = self.train(position)
        val = self.validate()
        return torch.stack([train_loss, val["loss"], val[score]], dim=-1).reshape(-1, 3)

    def step_scheduler(self, own: list[dict[str, float]], monitor: str) -> None:
        """A plateau scheduler steps on the monitored value (the mean of the stacked members':
        they share one learning rate)."""
        scheduler = self.member.scheduler
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(math.fsum(m[monitor] for m in own) / len(own))
        elif scheduler is not None:
            scheduler.step()

    def snapshot(self) -> dict[str, torch.Tensor]:
        return _state(self.member.model)

    def member_state(self, snapshot: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        return snapshot

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.member.model.load_state_dict(snapshot)


class _StackedEpochs(_Epochs):
    """The epochs of stacked members: each keeps its own shuffle (seeded as a lone member's
    would be) and its own validation; one forward, backward and optimizer step serve all.

    Members whose training sets differ in size (folds differ by a row) each train on as many
    rows per epoch as the smallest has, a fresh random subset every epoch: a batch holds the
    same number of rows of every member. With equal sizes the batches are exactly the ones each
    member would see alone."""

    def __init__(
        self, member: StackedMembers, batch_size: int, l1: float, seed: int, precision: str
    ):
        self.sizes = [len(d.x_train) for d in member.data]
        self._setup(member, member.data[0], min(self.sizes), batch_size, l1, precision)
        self.size = member.model.k
        self.shuffles = [torch.Generator(device=self.device).manual_seed(seed) for _ in member.data]
        x, _ = _padded([d.x_train for d in member.data])
        y, _ = _padded([d.y_train for d in member.data])
        self.rows = _Rows(x, y, self.bounds, stacked=True)
        self.x_val, self.val_mask = _padded([d.x_val for d in member.data])
        self.y_val, _ = _padded([d.y_val for d in member.data])
        self.y_scale = torch.tensor([d.y_scale for d in member.data], device=self.device)

    def _orders(self) -> torch.Tensor:
        return torch.stack(
            [
                torch.randperm(size, device=self.device, generator=g)[: self.n]
                for size, g in zip(self.sizes, self.shuffles, strict=True)
            ]
        )

    def train(self, position: dict[str, Any] | None = None) -> torch.Tensor:
        """One epoch of every member (or the rest of one, from `position`); returns their mean
        training losses, shape (members,)."""
        model = self.member.model
        model.train()
        orders, loss_sum, bounds = self._batches(position, (self.size,))
        first = len(self.bounds) - len(bounds)
        with contextlib.closing(self._feed(orders, first)) as batches:
            for i, (start, end), xb, yb in batches:
                self._check(orders, loss_sum, i)
                with self.autocast():
                    out = model(xb).float()
                losses = _row_losses(out, yb, self.task).mean(dim=1)
                self._step(losses.sum())  # each member's gradient comes from its own loss
                loss_sum.add_(losses.detach(), alpha=end - start)
        return loss_sum / self.n

    def validate(self) -> dict[str, torch.Tensor]:
        return evaluate(
            self.member.model,
            self.x_val,
            self.y_val,
            self.task,
            self.y_scale,
            autocast=self.autocast,
            mask=self.val_mask,
            device=self.device,
        )

    def snapshot(self) -> dict[str, torch.Tensor]:
        return self.member.model.snapshot()

    def member_state(self, snapshot: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        return Stacked.member_state(snapshot, i)

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        for i, model in enumerate(self.member.models):
            model.load_state_dict(Stacked.member_state(snapshot, i))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, end) of each mini-batch of an epoch over `n` shuffled rows: every row once,
    batches of `batch_size`, the last one smaller. A last batch of a single row (which batch
    norm cannot train on) is avoided unless batches of one are what was asked for: it takes a
    row from the batch before it, or joins it when that one has only two."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if batch_size > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        (a, b), (_, end) = bounds[-2], bounds[-1]
        bounds[-2:] = [(a, b - 1), (b - 1, end)] if b - a > 2 else [(a, end)]
    return bounds


class _Rows(torch.utils.data.Dataset):
    """An epoch's training batches by number: batch b is the rows `order[:, start:end]` of the
    epoch's shuffle (`order`: (members, rows)), with `bounds[b]` = (start, end). One member's
    rows `x` (rows, ...) or stacked members' (members, rows, ...), each member taking its own
    row of `order`. A DataLoader's workers fork with the order of their epoch."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, bounds: list[tuple[int, int]], stacked: bool
    ) -> None:
        self.x, self.y, self.bounds = x, y, bounds
        self.members = torch.arange(len(x), device=x.device)[:, None] if stacked else None
        self.order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.bounds[b]
        idx = self.order[:, start:end]
        if self.members is None:
            return self.x[idx[0]], self.y[idx[0]]
        return self.x[self.members, idx], self.y[self.members, idx]


def _padded(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack tensors of different lengths, zero-padded to the longest; and the mask of real
    rows."""
    n = max(len(t) for t in tensors)
    out = tensors[0].new_zeros((len(tensors), n, *tensors[0].shape[1:]))
    mask = torch.zeros(len(tensors), n, dtype=torch.bool, device=tensors[0].device)
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
        mask[i, : len(t)] = True
    return out, mask


def _row_losses(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-row losses of outputs (rows, ...) or stacked outputs (members, rows, ...) against
    targets (rows,) or (members, rows)."""
    if task == "classification":
        flat = nn.functional.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none")
        return flat.view(y.shape)
    return (out.squeeze(-1) - y) ** 2


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
    members: list[Member | StackedMembers],
    *,
    max_epochs: int,
    batch_size: int,
    stopper: EarlyStopping,
    monitor: str = "val_loss",
    l1: float = 0.0,
    seed: int = 0,
    precision: str = "fp32",
    on_epoch: EpochCallback | None = None,
    interrupted: Callable[[], object] | None = None,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    """Train the members in lockstep. The metrics of an epoch are the members' means (a
    cross-validation score when the members are folds); early stopping, pruning and divergence
    act on those means, so all members stop at the same epoch and keep that best epoch's weights;
    each member's scheduler steps on its own monitored value (stacked members share one, which
    steps on their mean). `interrupted` and `resume`: see `Interrupted`."""
    trainers = [
        (_StackedEpochs if isinstance(m, StackedMembers) else _Epochs)(
            m, batch_size, l1, seed, precision
        )
        for m in members
    ]
    for t in trainers:
        t.interrupted = interrupted
    task = trainers[0].task
    score_name = "val_acc" if task == "classification" else "val_rmse"
    names = ["train_loss", "val_loss", score_name]
    history: list[dict[str, float]] = []
    best = [t.snapshot() for t in trainers]
    best_metrics: dict[str, float] = {}
    member_metrics: list[dict[str, float]] = []
    status = "completed"
    first_epoch, pending = 1, None  # pending: the interrupted epoch's progress
    if resume is not None:
        for t, state in zip(trainers, resume["trainers"], strict=True):
            t.load_state(state)
        history, best_metrics, member_metrics = (
            resume["history"],
            resume["best_metrics"],
            resume["member_metrics"],
        )
        stopper.best, stopper.best_epoch, stopper.bad_epochs = resume["stopper"]
        best = resume["best"]
        _set_rng(resume["rng"])
        first_epoch, pending = resume["epoch"], resume["pending"]

    def state(epoch: int, done: list[torch.Tensor], position: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "pending": {"rows": done, "trainer": len(done), "position": position},
            "trainers": [t.state() for t in trainers],
            "history": history,
            "best_metrics": best_metrics,
            "member_metrics": member_metrics,
            "stopper": (stopper.best, stopper.best_epoch, stopper.bad_epochs),
            "best": best,
            "rng": _rng(),
        }

    # 1-based: MLflow steps and best_epoch read as epochs
    for epoch in range(first_epoch, max_epochs + 1):
        started = time.perf_counter()
        done = [row.to(trainers[0].device) for row in pending["rows"]] if pending else []
        try:
            for i, t in enumerate(trainers[len(done) :], len(done)):
                position = pending["position"] if pending and i == pending["trainer"] else None
                done.append(t.epoch(score_name[4:], position))
        except _Stopped as stop:
            raise Interrupted(state(epoch, done, stop.position), epoch) from None
        pending = None
        rows = torch.cat(done)
        # One host sync per epoch for all metrics of all members.
        each = [dict(zip(names, row, strict=True)) for row in rows.tolist()]
        metrics = {k: math.fsum(m[k] for m in each) / len(each) for k in names}
        metrics["lr"] = members[0].optimizer.param_groups[0]["lr"]
        first = 0
        for t in trainers:
            t.step_scheduler(each[first : first + t.size], monitor)
            first += t.size
        metrics["epoch_seconds"] = time.perf_counter() - started
        history.append(metrics)

        if not all(math.isfinite(metrics[k]) for k in names):
            status = "diverged"
        elif stopper.update(metrics[monitor], epoch):
            best = [t.snapshot() for t in trainers]
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

    for trainer, snapshot in zip(trainers, best, strict=True):
        trainer.restore(snapshot)
    return FitResult(
        best_value=stopper.best,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        status_reason=status,
        history=history,
        best_metrics=best_metrics,
        best_state=trainers[0].member_state(best[0], 0),
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
    interrupted: Callable[[], object] | None = None,
) -> list[float]:
    """Train on all of `member.data`'s training rows for `len(lrs)` epochs, epoch i at `lrs[i]`
    (the learning rates the validated run used), with no validation: the refit after a
    cross-validation. Returns the training loss per epoch; stops at a non-finite one. An
    interrupted refit (`Interrupted`, with no state) starts again from its beginning."""
    trainer = _Epochs(member, batch_size, l1, seed, precision)
    trainer.interrupted = interrupted
    losses: list[float] = []
    for epoch, lr in enumerate(lrs, 1):
        for group in member.optimizer.param_groups:
            group["lr"] = lr
        try:
            losses.append(trainer.train().item())
        except _Stopped:
            raise Interrupted({}, epoch) from None
        if on_epoch:
            on_epoch(epoch, {"refit_train_loss": losses[-1]})
        if not math.isfinite(losses[-1]):
            break
    return losses


def _rng() -> dict[str, Any]:
    """The global RNG streams (dropout draws from them)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
