"""Population training: the trials of a search that share an architecture train as one stacked
model, each with its own hyperparameters, its own stopping and its own result.

A population's entrants are members as each job alone builds them (`build.member`: the model
initialized by its own seed, its optimizer and scheduler from its own config) on the same data.
Their models are stacked (`stacking.Stacked`: one batched kernel per layer) and one
`StackedOptimizer` updates every model's slice with that member's own hyperparameters, read
from the member's own torch optimizer before each epoch: lr, momentum/β1, β2, eps, weight
decay (L2 or AdamW's decoupled), dampening, RMSprop's alpha. Each member's scheduler steps that
optimizer of its own (its monitored value for a plateau schedule), so schedules differ freely.
Per member too: L1, the dropout rate (a chain of layers: `stacking`), the shuffle order (its
seed), max_epochs, early stopping with its best weights, divergence, and the stop its caller's
callback asks for (pruning). A member that stops leaves the stack: its slices of the weights
and of the optimizer's state are dropped, so compute follows the live members.

Exact: without dropout, a member's per-epoch metrics are those of its config trained alone
(`fit.fit_members`) up to float rounding (the batched kernels and this optimizer's own order of
operations). Dropout draws its masks for all members at once, so the masks, not the rates,
differ from a lone run's.

Threads: a job hands its member to the population that its launcher gathers (`Seat`, per
thread) and waits for its result; the driver trains the population in its own thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hypersweep.core.fit import (
    EarlyStopping,
    EpochCallback,
    FitResult,
    Interrupted,
    Member,
    _row_losses,
    batch_bounds,
    evaluate,
)
from hypersweep.core.stacking import Stacked, stackable

# The update rules StackedOptimizer implements, as torch implements them.
OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)
# Options of those that no member may set: they would need rules of their own.
_UNSUPPORTED_OPTIONS = ("amsgrad", "maximize", "differentiable", "capturable")


@dataclass
class Entrant:
    """One job's training, handed to a population: its member and how it stops."""

    member: Member
    max_epochs: int
    stopper: EarlyStopping
    monitor: str
    batch_size: int
    l1: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    on_epoch: EpochCallback | None = None
    name: str = ""  # for messages


def why_alone(entrant: Entrant) -> str | None:
    """Why this member cannot train in a population (None: it can)."""
    model, opt = entrant.member.model, entrant.member.optimizer
    if entrant.member.data.stream is not None:
        return "streamed data (trainer.loader=stream; a population trains on resident data)"
    if entrant.precision == "fp16":
        return "fp16 (one loss scale would couple the members)"
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return "a recurrent layer (torch has no batched rule for its fused kernels)"
    if type(opt) not in OPTIMIZERS:
        return f"the optimizer {type(opt).__name__} (stacked: SGD, Adam, AdamW, RMSprop)"
    group = opt.param_groups[0]
    if any(group.get(option) for option in _UNSUPPORTED_OPTIONS):
        return f"{type(opt).__name__} with " + ", ".join(
            o for o in _UNSUPPORTED_OPTIONS if group.get(o)
        )
    return None


def signature(entrant: Entrant) -> tuple:
    """What members of one population share: architecture (every tensor's shape, every
    module's type, every rate that cannot differ), optimizer family, batch size, precision,
    device, task, data shapes. Their data must also be equal (`same_data`)."""
    model, opt, data = entrant.member.model, entrant.member.optimizer, entrant.member.data
    from hypersweep.core.stacking import _chain

    chain = _chain(model)
    rates = tuple(
        m.p
        for m in model.modules()
        if isinstance(m, nn.AlphaDropout) or (chain is None and isinstance(m, nn.Dropout))
    )
    group = opt.param_groups[0]
    return (
        type(model).__qualname__,
        tuple((k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()),
        tuple(type(m).__qualname__ for m in model.modules()),
        rates,
        type(opt).__qualname__,
        bool(group.get("nesterov")),
        bool(group.get("centered")),
        entrant.batch_size,
        entrant.precision,
        str(data.x_train.device),
        data.task,
        tuple(data.x_train.shape),
        tuple(data.x_val.shape),
    )


def same_data(a: Entrant, b: Entrant) -> bool:
    x, y = a.member.data, b.member.data
    return all(
        torch.equal(getattr(x, k), getattr(y, k)) for k in ("x_train", "y_train", "x_val", "y_val")
    ) and (x.y_scale == y.y_scale)


def populations(entrants: list[Entrant]) -> list[list[int]]:
    """The entrants (by index) grouped into populations of one signature and equal data;
    groups of one are entrants that train alone."""
    groups: list[list[int]] = []
    keys: list[tuple] = []
    for i, e in enumerate(entrants):
        if why_alone(e) is not None:
            groups.append([i])
            keys.append(())
            continue
        key = signature(e)
        for group, k in zip(groups, keys, strict=True):
            if k == key and same_data(entrants[group[0]], e):
                group.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    return groups


class StackedOptimizer:
    """One elementwise update of every stacked parameter, with each model's own
    hyperparameters, as torch's SGD, Adam, AdamW or RMSprop would update that model alone.
    `optimizers[i]` is model i's own torch optimizer: its hyperparameters (which its scheduler
    changes) are read from it at each `refresh`; it never steps."""

    def __init__(self, model: Stacked, optimizers: list[torch.optim.Optimizer]) -> None:
        self.model, self.optimizers = model, optimizers
        for o in optimizers:  # their schedulers step them, they never step: no torch warning
            o._opt_called = True  # type: ignore[attr-defined]
        self.kind = type(optimizers[0])
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.steps = [0] * len(optimizers)  # each member's own: members join at any epoch
        group = optimizers[0].param_groups[0]
        self.nesterov, self.centered = bool(group.get("nesterov")), bool(group.get("centered"))
        self.refresh()

    def _vector(self, read: Callable[[dict], float]) -> list[float]:
        return [float(read(o.param_groups[0])) for o in self.optimizers]

    def refresh(self) -> None:
        """Read every member's hyperparameters (each epoch: its scheduler changed its lr)."""
        device = next(self.model.parameters()).device
        self.host: dict[str, list[float]] = {
            "lr": self._vector(lambda g: g["lr"]),
            # the first group holds the weights (`optim.build_optimizer`); biases decay never
            "weight_decay": self._vector(lambda g: g["weight_decay"]),
        }
        if self.kind is torch.optim.SGD:
            self.host["momentum"] = self._vector(lambda g: g["momentum"])
            self.host["dampening"] = self._vector(lambda g: g["dampening"])
        elif self.kind is torch.optim.RMSprop:
            self.host["alpha"] = self._vector(lambda g: g["alpha"])
            self.host["momentum"] = self._vector(lambda g: g["momentum"])
            self.host["eps"] = self._vector(lambda g: g["eps"])
        else:
            self.host["beta1"] = self._vector(lambda g: g["betas"][0])
            self.host["beta2"] = self._vector(lambda g: g["betas"][1])
            self.host["eps"] = self._vector(lambda g: g["eps"])
        if self.kind is torch.optim.SGD:  # a member's first step: `step`
            self.host["share"] = self._share([False] * len(self.optimizers))
        self.vec = {k: torch.tensor(v, device=device) for k, v in self.host.items()}

    def _share(self, fresh: list[bool]) -> list[float]:
        """SGD's buffer update `buf = momentum * buf + share * grad`, where `share` is torch's
        `1 - dampening` except at a member's first step (its buffer, zero until then, starts as
        its gradient) and for a member without momentum (its buffer is its gradient)."""
        m, d = self.host["momentum"], self.host["dampening"]
        return [1.0 if f or mi == 0 else 1 - di for f, mi, di in zip(fresh, m, d, strict=True)]

    def keep(self, rows: list[int]) -> None:
        """Keep the models at `rows` only (after `Stacked.keep` with the same rows)."""
        index = torch.tensor(rows, device=next(self.model.parameters()).device)
        self.optimizers = [self.optimizers[i] for i in rows]
        self.steps = [self.steps[i] for i in rows]
        self.state = {n: {k: v[index] for k, v in s.items()} for n, s in self.state.items()}
        self.refresh()

    def add(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Update the models `Stacked.add` appended too, with these optimizers of theirs: their
        state starts as torch's does, at zero, and their steps are counted from one."""
        if any(type(o) is not self.kind for o in optimizers):
            raise ValueError("population members must share one optimizer family")
        for o in optimizers:
            o._opt_called = True  # type: ignore[attr-defined]
        self.optimizers = self.optimizers + optimizers
        self.steps = self.steps + [0] * len(optimizers)
        for state in self.state.values():
            for key, held in state.items():
                zeros = held.new_zeros((len(optimizers), *held.shape[1:]))
                state[key] = torch.cat([held, zeros])
        self.refresh()

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        first = [t == 0 for t in self.steps]
        self.steps = [t + 1 for t in self.steps]
        decayed = {id(p) for p in self.model.decayed_parameters()}
        update = {
            torch.optim.SGD: self._sgd,
            torch.optim.Adam: self._adam,
            torch.optim.AdamW: self._adam,
            torch.optim.RMSprop: self._rmsprop,
        }[self.kind]
        vec = self.vec
        device = vec["lr"].device
        if self.kind is torch.optim.SGD and any(first):  # a member's first step
            vec = {**vec, "share": torch.tensor(self._share(first), device=device)}
        elif self.kind is not torch.optim.SGD:  # Adam's bias corrections, in double on the host
            ts = self.steps
            lr, b1, b2 = self.host["lr"], self.host.get("beta1"), self.host.get("beta2")
            if b1 is not None and b2 is not None:
                step = [a / (1 - b**t) for a, b, t in zip(lr, b1, ts, strict=True)]
                root = [math.sqrt(1 - b**t) for b, t in zip(b2, ts, strict=True)]
                vec = {
                    **vec,
                    "step": torch.tensor(step, device=device),
                    "root": torch.tensor(root, device=device),
                }
        shaped: dict[int, dict[str, torch.Tensor]] = {}
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            view = (-1, *[1] * (p.dim() - 1))
            h = shaped.setdefault(p.dim(), {k: v.view(view) for k, v in vec.items()})
            update(name, p, p.grad, h, id(p) in decayed)

    def _sgd(self, name: str, p: torch.Tensor, g: torch.Tensor, h: dict, decays: bool) -> None:
        if decays:
            g = g + h["weight_decay"] * p
        if any(self.host["momentum"]):
            state = self.state.setdefault(name, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.zeros_like(p)
            buf.mul_(h["momentum"]).add_(h["share"] * g)
            g = g + h["momentum"] * buf if self.nesterov else buf
        p.sub_(h["lr"] * g)

    def _adam(self, name: str, p: torch.Tensor, g: torch.Tensor, h: dict, decays: bool) -> None:
        if decays and self.kind is torch.optim.AdamW:
            p.mul_(1 - h["lr"] * h["weight_decay"])
        elif decays:
            g = g + h["weight_decay"] * p
        state = self.state.setdefault(name, {})
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - h["beta1"])
        v.mul_(h["beta2"]).add_((1 - h["beta2"]) * g * g)
        p.sub_(h["step"] * m / ((v.sqrt() / h["root"]).add_(h["eps"])))

    def _rmsprop(self, name: str, p: torch.Tensor, g: torch.Tensor, h: dict, decays: bool) -> None:
        if decays:
            g = g + h["weight_decay"] * p
        state = self.state.setdefault(name, {})
        if not state:
            state["square_avg"] = torch.zeros_like(p)
            state["momentum_buffer"] = torch.zeros_like(p)
            if self.centered:
                state["grad_avg"] = torch.zeros_like(p)
        square = state["square_avg"]
        square.mul_(h["alpha"]).add_((1 - h["alpha"]) * g * g)
        if self.centered:
            state["grad_avg"].lerp_(g, 1 - h["alpha"])
            avg = (square - state["grad_avg"] ** 2).sqrt_()
        else:
            avg = square.sqrt()
        avg = avg.add_(h["eps"])
        buf = state["momentum_buffer"]
        buf.mul_(h["momentum"]).add_(g / avg)
        p.sub_(h["lr"] * buf)


@dataclass
class _Progress:
    """One member's training so far."""

    stopper: EarlyStopping
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, torch.Tensor] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    member_metrics: list[dict[str, float]] = field(default_factory=list)
    status: str = ""  # "" while it trains


class Population:
    """Entrants of one `signature` and equal data training as one stacked model, one epoch at
    a time (`epoch`). Members leave as they stop, and others may join between two epochs
    (`add`): each trains from its own epoch 1, with its own optimizer state and step count, as
    it would alone. `interrupted` is polled before each mini-batch: when it says so,
    `Interrupted` (with no state: the members start again)."""

    def __init__(
        self, entrants: list[Entrant], interrupted: Callable[[], object] | None = None
    ) -> None:
        first = entrants[0]
        models = [e.member.model for e in entrants]
        if len(models) > 1 and not stackable(models):
            raise ValueError("population members must share one stackable architecture")
        self.data, self.interrupted = first.member.data, interrupted
        self.key = signature(first)
        self.device = self.data.x_train.device
        self.score = "val_acc" if self.data.task == "classification" else "val_rmse"
        self.bounds = batch_bounds(len(self.data.x_train), first.batch_size)
        self.autocast = _autocast(first.precision, self.device)
        self.model = Stacked(models)
        self.optimizer = StackedOptimizer(self.model, [e.member.optimizer for e in entrants])
        self.entrants: list[Entrant] = []
        self.progress: list[_Progress] = []
        self.shuffles: list[torch.Generator] = []
        self.live: list[int] = []  # the training members, by index in `entrants`
        self.l1 = torch.zeros(0, device=self.device)
        self.rounds = 0  # epochs of this population
        self._take(entrants)

    def _take(self, entrants: list[Entrant]) -> None:
        start = len(self.entrants)
        for e in entrants:  # its initial weights are its best until an epoch improves on them
            best = {k: v.detach().clone() for k, v in e.member.model.state_dict().items()}
            self.progress.append(_Progress(e.stopper, best=best))
            self.shuffles.append(torch.Generator(device=self.device).manual_seed(e.seed))
        self.entrants += entrants
        self.live += range(start, len(self.entrants))
        added = torch.tensor([e.l1 for e in entrants], device=self.device)
        self.l1 = torch.cat([self.l1, added])

    def admits(self, entrant: Entrant) -> bool:
        """Whether `entrant` may join: its signature and data, and no batch norm that averages
        over all batches so far (its statistics' momentum would differ between members). A
        population whose members have all stopped admits none."""
        if not self.live or why_alone(entrant) is not None or signature(entrant) != self.key:
            return False
        cumulative = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None
            for m in entrant.member.model.modules()
        )
        return not cumulative and same_data(self.entrants[0], entrant)

    def add(self, entrants: list[Entrant]) -> list[int]:
        """Let `entrants` (each `admits`) join at the next epoch; their indices in `entrants`."""
        self.model.add([e.member.model for e in entrants])
        self.optimizer.add([e.member.optimizer for e in entrants])
        start = len(self.entrants)
        self._take(entrants)
        return list(range(start, len(self.entrants)))

    def epoch(self) -> list[tuple[int, FitResult]]:
        """One epoch of every live member; the members that stopped in it, each with its
        FitResult (what `fit.fit_members` returns for it alone), its model holding its best
        weights."""
        self.rounds += 1
        started = time.perf_counter()
        data, model, optimizer, task = self.data, self.model, self.optimizer, self.data.task
        names = ["train_loss", "val_loss", self.score]
        k, n = len(self.live), len(data.x_train)
        model.train()
        orders = torch.stack(
            [torch.randperm(n, device=self.device, generator=self.shuffles[i]) for i in self.live]
        )
        l1 = self.l1
        penalized = model.decayed_parameters() if bool((l1 > 0).any()) else []
        loss_sum = torch.zeros(k, device=self.device)
        for start, end in self.bounds:
            if self.interrupted is not None and self.interrupted():
                raise Interrupted({}, self.rounds)
            idx = orders[:, start:end]
            with self.autocast():
                out = model(data.x_train[idx]).float()
            losses = _row_losses(out, data.y_train[idx], task).mean(dim=1)
            objective = losses.sum()
            if penalized:
                objective = objective + sum(
                    (l1.view(-1, *[1] * (w.dim() - 1)) * w.abs()).sum() for w in penalized
                )
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            loss_sum.add_(losses.detach(), alpha=end - start)
        x_val, y_val = data.x_val, data.y_val
        val = evaluate(
            model,
            x_val.expand(k, *x_val.shape),
            y_val.expand(k, *y_val.shape),
            task,
            data.y_scale,
            autocast=self.autocast,
            mask=torch.ones(k, len(x_val), dtype=torch.bool, device=self.device),
        )
        rows = torch.stack([loss_sum / n, val["loss"], val[self.score[4:]]], dim=-1).tolist()
        snapshot: dict[str, torch.Tensor] | None = None
        stays: list[int] = []
        for j, i in enumerate(self.live):
            e, p = self.entrants[i], self.progress[i]
            epoch = len(p.history) + 1  # the member's own
            own = dict(zip(names, rows[j], strict=True))
            metrics = {**own, "lr": e.member.optimizer.param_groups[0]["lr"]}
            _step_scheduler(e.member, metrics[e.monitor])
            metrics["epoch_seconds"] = time.perf_counter() - started
            p.history.append(metrics)
            if not all(math.isfinite(metrics[k]) for k in names):
                p.status = "diverged"
            elif p.stopper.update(metrics[e.monitor], epoch):
                snapshot = snapshot if snapshot is not None else model.snapshot()
                p.best = Stacked.member_state(snapshot, j)
                p.best_metrics, p.member_metrics = dict(metrics), [own]
            reason = e.on_epoch(epoch, metrics) if e.on_epoch else None
            if not p.status and reason:
                p.status = reason
            elif not p.status and p.stopper.should_stop:
                p.status = "early_stopped"
            elif not p.status and epoch >= e.max_epochs:
                p.status = "completed"
            if not p.status:
                stays.append(j)
        stopped = [i for j, i in enumerate(self.live) if j not in set(stays)]
        if stays and len(stays) < k:
            model.keep(stays)
            optimizer.keep(stays)
            self.l1 = self.l1[torch.tensor(stays, device=self.device)]
        self.live = [self.live[j] for j in stays]
        if stays:
            optimizer.refresh()  # the schedulers' new learning rates
        return [(i, self._result(i)) for i in stopped]

    def _result(self, i: int) -> FitResult:
        e, p = self.entrants[i], self.progress[i]
        e.member.model.load_state_dict(p.best)
        return FitResult(
            best_value=p.stopper.best,
            best_epoch=p.stopper.best_epoch,
            epochs_run=len(p.history),
            status_reason=p.status or "completed",
            history=p.history,
            best_metrics=p.best_metrics,
            best_state=p.best,
            member_metrics=p.member_metrics,
        )


def fit_population(
    entrants: list[Entrant], interrupted: Callable[[], object] | None = None
) -> list[FitResult]:
    """Train the entrants (one `signature`, equal data) as one stacked population until every
    one has stopped; each one's FitResult is what `fit.fit_members` returns for it alone.
    `interrupted`: see `Population`."""
    population = Population(entrants, interrupted)
    results: dict[int, FitResult] = {}
    while population.live:
        results.update(population.epoch())
    return [results[i] for i in range(len(entrants))]


def _step_scheduler(member: Member, monitored: float) -> None:
    scheduler = member.scheduler
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    elif scheduler is not None:
        scheduler.step()


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    import contextlib

    dtype = {"bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


# -- the meeting point of a population's jobs ------------------------------------------------

_local = threading.local()


def seat() -> Seat | None:
    """The population seat of the job running in this thread (None: it trains alone)."""
    return getattr(_local, "seat", None)


class Seat:
    """A job's place in a population. The driver runs the job in a thread of its own and takes
    turns with it: the job runs until it hands over its training (`join`) or ends; the driver
    gathers the others, trains them all, and gives each its result (`resume`), after which the
    job runs to its end. Only one of them runs at a time, so Hydra's and the job's process-wide
    state (the runtime config, the environment, logging) belong to the job that runs."""

    def __init__(self) -> None:
        self._turn = threading.Event()
        self._back = threading.Event()
        self.entrant: Entrant | None = None
        self.result: FitResult | None = None
        self.error: BaseException | None = None  # raised in the job by `join`
        self.returned: Any = None  # what the job's function returned
        self.raised: BaseException | None = None  # what escaped it
        self._thread: threading.Thread | None = None

    # the job's side
    def join(self, entrant: Entrant) -> FitResult | None:
        """Hand over the job's training; its result, or None: train alone."""
        self.entrant = entrant
        self._pass()
        if self.error is not None:
            raise self.error
        return self.result

    def _pass(self) -> None:
        self._turn.clear()
        self._back.set()
        self._turn.wait()

    # the driver's side
    def start(self, job: Callable[[], Any]) -> None:
        """Run `job` in its thread until it joins or ends."""

        def body() -> None:
            _local.seat = self
            self._turn.wait()
            try:
                self.returned = job()
            except BaseException as e:  # noqa: BLE001 - handed to the driver
                self.raised = e
            finally:
                _local.seat = None
                self._back.set()

        self._thread = threading.Thread(target=body, name="population-member", daemon=True)
        self._thread.start()
        self._give_turn()

    def resume(self, result: FitResult | None = None, error: BaseException | None = None) -> None:
        """Give the job its result (or None: train alone; or an error to raise) and let it
        run to its end."""
        self.result, self.error = result, error
        self._give_turn()
        assert self._thread is not None
        self._thread.join()

    @property
    def joined(self) -> bool:
        return self.entrant is not None and self._thread is not None and self._thread.is_alive()

    def _give_turn(self) -> None:
        self._back.clear()
        self._turn.set()
        while not self._back.wait(0.5):  # interruptible by Ctrl-C in the driver
            pass
