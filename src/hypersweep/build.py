"""What a job trains, built from its config: the device, where the data sits (resident on the
device or streamed to it), the models (one per dataset, i.e. per cross-validation fold), their
optimizers and schedulers, and the members `core.fit` trains: stacked as one model where that is
exact (`core.stacking`), else one per fold."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from hypersweep import trust
from hypersweep.core.data import Splits
from hypersweep.core.fit import Member, Scheduler, StackedMembers
from hypersweep.core.optim import build_optimizer
from hypersweep.core.stacking import ELEMENTWISE_OPTIMIZERS, Stacked, stackable
from hypersweep.errors import ConfigError


def device(cfg: DictConfig) -> torch.device:
    """`trainer.device`: `auto` picks CUDA, else MPS, else CPU; an explicit device that is
    absent is an error, and so is fp16 off CUDA."""
    requested = cfg.trainer.device
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        picked = torch.device("cuda" if cuda else "mps" if mps else "cpu")
    elif (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ConfigError(
            f"trainer.device={requested!r} is not available on this machine: "
            f"expected auto or cpu{', cuda' if cuda else ''}{', mps' if mps else ''}"
        )
    else:
        picked = torch.device(requested)
    if cfg.trainer.precision == "fp16" and picked.type != "cuda":
        raise ConfigError(
            f"trainer.precision='fp16' needs CUDA, but the device is {picked.type}: "
            "expected fp32 or bf16"
        )
    return picked


def streams(cfg: DictConfig, datasets: list[Splits], device: torch.device) -> bool:
    """`trainer.loader`: resident keeps the tensors on the device (indexed there, no copies);
    stream keeps them in host memory and feeds the device batch by batch through a DataLoader;
    auto streams only to an accelerator, and only when the datasets (all splits, every fold)
    take more than `trainer.resident_max_mb` MiB. On the CPU the data is in host memory
    already, so auto keeps it resident."""
    loader = cfg.trainer.get("loader", "resident")
    if loader != "auto":
        return loader == "stream"
    size = sum(d.nbytes for d in datasets)
    return device.type != "cpu" and size > cfg.trainer.resident_max_mb * 2**20


def placed(cfg: DictConfig, datasets: list[Splits], device: torch.device) -> list[Splits]:
    """The datasets where they train from: resident on `device` or streamed to it."""
    if streams(cfg, datasets, device):
        return [d.streamed(device, cfg.trainer.loader_workers) for d in datasets]
    return [d.to(device) for d in datasets]


def model(cfg: DictConfig, data: Splits, warm: dict | None) -> torch.nn.Module:
    """A freshly initialized model (the training seed: every fold starts from the same weights,
    or from the warm-start checkpoint's)."""
    torch.manual_seed(cfg.trainer.seed)
    built = trust.instantiate(
        cfg.model,
        _trusted(cfg),
        input_shape=data.input_shape,
        output_size=data.output_size,
        **regularization_arguments(cfg),
    )
    built = built.to(data.device)
    if warm is not None:
        _warm_start(built, warm, str(cfg.resume_from))
    return built


REGULARIZATION_ARGUMENTS = ("dropout", "batchnorm")


def regularization_arguments(cfg: DictConfig) -> dict:
    """`regularization.dropout` and `.batchnorm` for a model class that takes them as
    arguments and whose config does not set them (the built-in configs interpolate them; a
    model of the user's own gets them this way)."""
    import inspect

    from hydra.utils import get_class

    try:
        parameters = inspect.signature(get_class(str(cfg.model._target_))).parameters
    except (ValueError, TypeError):
        return {}
    return {
        key: cfg.regularization[key]
        for key in REGULARIZATION_ARGUMENTS
        if key in parameters and key not in cfg.model and key in cfg.regularization
    }


def optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Scheduler]:
    trusted = _trusted(cfg)
    built = build_optimizer(trust.instantiate(cfg.optimizer, trusted), model, cfg.regularization.l2)
    return built, trust.instantiate(cfg.scheduler, trusted)(built)


def member(cfg: DictConfig, data: Splits, warm: dict | None) -> Member:
    """A fresh model with its optimizer and scheduler."""
    fresh = model(cfg, data, warm)
    return Member(fresh, *optimizer(cfg, fresh), data)


def members(
    cfg: DictConfig, datasets: list[Splits], warm: dict | None
) -> list[Member] | list[StackedMembers]:
    """One member per dataset (fold). With `trainer.stack_folds` the folds train as one stacked
    model where that is exact (see `hypersweep.core.stacking`): not for recurrent models, fp16
    (one loss scale would couple the folds) or an optimizer that is not elementwise; those
    train one after another."""
    models = [model(cfg, data, warm) for data in datasets]
    if cfg.trainer.get("stack_folds", True) and cfg.trainer.precision != "fp16":
        if stackable(models):
            stacked = Stacked(models)
            opt, scheduler = optimizer(cfg, stacked)
            if isinstance(opt, ELEMENTWISE_OPTIMIZERS):
                return [StackedMembers(stacked, opt, scheduler, datasets, models)]
    return [Member(m, *optimizer(cfg, m), data) for m, data in zip(models, datasets, strict=True)]


def models(trained: list[Member] | list[StackedMembers]) -> list[torch.nn.Module]:
    """The trained models, one per dataset."""
    return [m for one in trained for m in getattr(one, "models", [one.model])]


def _trusted(cfg: DictConfig) -> tuple[str, ...]:
    return trust.patterns(trust.user_modules(cfg))


def _warm_start(model: torch.nn.Module, state: dict, run_id: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"resume_from={run_id!r}: its checkpoint does not fit this model: expected the same "
            f"model and data as that run ({detail})"
        ) from None
