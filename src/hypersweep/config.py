"""Config resolvers and the validation step that runs before any data is loaded.

Every check names the key, the bad value and what is allowed, in one line, so that a
mistyped override fails in a second instead of after an hour of training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hypersweep.errors import ConfigError
from hypersweep.hydra_compat import register_resolver

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "tanh", "sigmoid", "gelu")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
LOADERS = ("auto", "resident", "stream")
TASKS = ("classification", "regression")
INPUT_KINDS = ("tabular", "image", "sequence")
RNN_CELLS = ("lstm", "gru", "rnn")


def register_resolvers() -> None:
    # Paths in the config are made absolute from where the command runs, so that jobs in other
    # processes or working directories reach the same stores.
    register_resolver("hs.abspath", lambda p: os.path.abspath(str(p)))
    register_resolver("hs.mode", monitor_mode)


def metric_names(task: str) -> tuple[str, ...]:
    """Per-epoch metrics a job logs for a task; the early-stopping monitor must be one of them."""
    score = "val_acc" if task == "classification" else "val_rmse"
    return ("train_loss", "val_loss", score)


def monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return metric_mode(monitor)


def metric_mode(metric: str) -> str:
    """Whether higher (max) or lower (min) is better for one of our metrics, `best_` or not."""
    return "max" if metric.endswith("_acc") else "min"


def objective_metric(monitor: str) -> str:
    """The validation metric a job is scored, pruned and selected by: the early-stopping
    monitor when it is a validation metric, else (train_loss) the validation loss of the epoch
    that early stopping kept. A model is never selected on its training loss."""
    return monitor if monitor.startswith("val_") else "val_loss"


def study_direction(monitor: str) -> str:
    """The Optuna direction that matches a job's objective."""
    return "maximize" if metric_mode(objective_metric(monitor)) == "max" else "minimize"


register_resolvers()


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# (predicate, what is allowed) per kind of value; applied to every key of that name found in the
# group, so that a new optimizer or scheduler file is checked without touching this module.
Check = tuple[Callable[[Any], bool], str]
POSITIVE: Check = (lambda v: _num(v) and v > 0, "a number > 0")
NON_NEGATIVE: Check = (lambda v: _num(v) and v >= 0, "a number >= 0")
UNIT_OPEN: Check = (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)")
UNIT_CLOSED: Check = (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]")
POS_INT: Check = (lambda v: _int(v) and v >= 1, "an integer >= 1")
NON_NEG_INT: Check = (lambda v: _int(v) and v >= 0, "an integer >= 0")
BOOL: Check = (lambda v: isinstance(v, bool), "true or false")


def _one_of(options: tuple[str, ...]) -> Check:
    return (lambda v: v in options, "one of " + ", ".join(options))


GROUP_CHECKS: dict[str, dict[str, Check]] = {
    "optimizer": {
        "lr": POSITIVE,
        "momentum": UNIT_OPEN,
        "beta1": UNIT_OPEN,
        "beta2": UNIT_OPEN,
        "alpha": UNIT_OPEN,
        "eps": POSITIVE,
        "dampening": UNIT_OPEN,
        "nesterov": BOOL,
    },
    "scheduler": {
        "gamma": UNIT_CLOSED,
        "power": POSITIVE,
        "total_iters": POS_INT,
        "T_max": POS_INT,
        "eta_min": NON_NEGATIVE,
        "factor": UNIT_CLOSED,
        "patience": NON_NEG_INT,
    },
    "regularization": {
        "l1": NON_NEGATIVE,
        "l2": NON_NEGATIVE,
        "dropout": UNIT_OPEN,
        "batchnorm": BOOL,
    },
    "model": {
        "hidden_units": POS_INT,
        "depth": NON_NEG_INT,
        "layers": POS_INT,
        "kernel_size": POS_INT,
        "activation": _one_of(ACTIVATIONS),
        "cell": _one_of(RNN_CELLS),
        "dropout": UNIT_OPEN,
        "batchnorm": BOOL,
        "bidirectional": BOOL,
    },
    "trainer": {
        "max_epochs": POS_INT,
        "batch_size": POS_INT,
        "seed": NON_NEG_INT,
        "device": _one_of(DEVICES),
        "precision": _one_of(PRECISIONS),
        "stack_folds": BOOL,
        "loader": _one_of(LOADERS),
        "loader_workers": NON_NEG_INT,
        "resident_max_mb": POSITIVE,
        "refit": _one_of(("best", "all")),
        "patience": NON_NEG_INT,
        "min_delta": NON_NEGATIVE,
        "mode": _one_of(("auto", "min", "max")),
    },
    "data": {
        "task": _one_of(TASKS),
        "kind": _one_of(INPUT_KINDS),
        "val_fraction": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
        "test_fraction": (
            lambda v: v is None or (_num(v) and 0 < v < 1),
            "a number in (0, 1), or null for the set's own test split",
        ),
        "split_seed": NON_NEG_INT,
        "cv_folds": (lambda v: v is None or (_int(v) and v >= 2), "null or an integer >= 2"),
        "n_samples": POS_INT,
        "n_features": POS_INT,
        "n_classes": (lambda v: _int(v) and v >= 2, "an integer >= 2"),
        "noise": NON_NEGATIVE,
        "cache": BOOL,
        "channels": (lambda v: _int(v) and v in (1, 3), "1 (grey) or 3 (RGB)"),
        "download": BOOL,
    },
    "tracking": {"flush_every_s": NON_NEGATIVE},
}


# The keys of the groups that are not a `_target_`'s arguments (those are checked against the
# target's signature): a key added with `+` that nothing reads is refused, not ignored.
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "trainer": frozenset(
        ("max_epochs", "batch_size", "device", "precision", "seed", "num_threads", "time_limit_s")
        + ("stack_folds", "refit", "early_stopping", "loader", "loader_workers", "resident_max_mb")
    ),
    "trainer.early_stopping": frozenset(
        ("monitor", "mode", "patience", "min_delta", "resolved_mode")
    ),
    "regularization": frozenset(("l1", "l2", "dropout", "batchnorm")),
    "tracking": frozenset(
        ("uri", "artifact_root", "experiment", "learning_curve", "analysis_plots", "resume_dir")
        + ("flush_every_s",)
    ),
    "data": frozenset(
        ("name", "source", "task", "kind", "shape", "val_fraction", "test_fraction")
        + ("cv_folds", "split_seed", "standardize")
    ),
}
# What each data source reads besides the keys every data config has.
SOURCE_KEYS: dict[str, frozenset[str]] = {
    "csv": frozenset(("path", "target")),
    "parquet": frozenset(("path", "target")),
    "image_folder": frozenset(("path", "size", "channels")),
    "mnist": frozenset(("root", "download")),
    "fashion_mnist": frozenset(("root", "download")),
    "cifar10": frozenset(("root", "download")),
    "synthetic_classification": frozenset(
        ("n_samples", "n_features", "n_informative", "n_classes", "generator_seed")
    ),
    "synthetic_regression": frozenset(
        ("n_samples", "n_features", "n_informative", "noise", "generator_seed")
    ),
}


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def _walk(node: Any, prefix: str):
    if isinstance(node, DictConfig):
        for key in node:
            if OmegaConf.is_missing(node, key):
                raise ConfigError(
                    f"{prefix}.{key}=??? has no value: expected one on the command line "
                    f"({prefix}.{key}=...)"
                )
            yield from _walk(node[key], f"{prefix}.{key}")
    elif isinstance(node, ListConfig):  # items unresolved: a broken one is named where read
        for i in range(len(node)):
            yield from _walk(node._get_node(i), f"{prefix}[{i}]")
    yield prefix, node


def _value(cfg: DictConfig, key: str) -> Any:
    """Resolve one key, turning a broken interpolation into a ConfigError that names it."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as e:  # noqa: BLE001 - omegaconf raises several types here
        raise ConfigError(f"{key} cannot be resolved: {e}".splitlines()[0]) from None


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed job config; raise ConfigError on the first bad one."""
    from hypersweep import trust

    trust.check(cfg, trust.patterns(trust.user_modules(cfg)))  # before anything is imported
    _check_top_level(cfg)  # before the optimizer, which interpolates lr and momentum
    _check_known_keys(cfg)
    for group, checks in GROUP_CHECKS.items():
        if group not in cfg:
            raise ConfigError(f"{group} is missing from the config: add a `{group}` default")
        for key, node in _walk(cfg[group], group):
            name = key.rsplit(".", 1)[-1]
            if group == "data" and _is_argument(cfg, key):
                continue  # an argument of the user's own data function: its business
            if name in checks and not isinstance(node, (DictConfig, ListConfig)):
                value = _value(cfg, key)
                ok, allowed = checks[name]
                if not ok(value):
                    raise _fail(key, value, allowed)
    _check_data(cfg)
    _check_model_fits_data(cfg)
    _check_trainer(cfg)
    _check_scheduler(cfg)


def _is_argument(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (under `data`) is an argument of a `data=custom` function."""
    if cfg.data.get("source") != "custom":
        return False
    from hypersweep.core.data import CUSTOM_OWN_KEYS

    parts = key.split(".")
    return len(parts) > 1 and parts[1].split("[")[0] not in CUSTOM_OWN_KEYS


def _check_known_keys(cfg: DictConfig) -> None:
    """Every key of our groups is read by something: a typo added with `+` (`+trainer.epochs=3`)
    would otherwise be accepted and do nothing."""
    for group, known in KNOWN_KEYS.items():
        node = OmegaConf.select(cfg, group)
        if not isinstance(node, DictConfig):
            continue
        if group == "data":
            known = known | SOURCE_KEYS.get(str(node.get("source")), frozenset())
            if node.get("source") == "custom":
                from hypersweep.core.data import CUSTOM_OWN_KEYS

                # the function's own arguments; None: it takes **kwargs, or does not import
                # (the job names that after this check)
                arguments = _arguments(str(_value(cfg, "data._target_")))
                if arguments is None:
                    continue
                known = CUSTOM_OWN_KEYS | arguments
                _refuse_unknown(cfg, group, node, known, f"{node._target_} takes")
                continue
        _refuse_unknown(cfg, group, node, known)
    for group in ("model", "optimizer", "scheduler"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            known = _arguments(str(node._target_))
            if known is not None:
                _refuse_unknown(cfg, group, node, known, f"{node._target_} takes")


def _refuse_unknown(
    cfg: DictConfig, group: str, node: DictConfig, known: frozenset[str], owner: str = ""
) -> None:
    for key in node:
        if str(key).startswith("_") or key in known:
            continue
        value = OmegaConf.to_container(node, resolve=False)[key]
        raise ConfigError(
            f"{group}.{key}={value!r} is not a known key: {owner or group + ' has'} "
            f"{', '.join(sorted(k for k in known if not k.startswith('_')))}"
        )


def _arguments(target: str) -> frozenset[str] | None:
    """The keyword arguments a `_target_` takes; None when it takes any (**kwargs) or cannot
    be inspected (the job reports a target that does not import)."""
    import inspect

    from hydra.utils import get_object

    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # noqa: BLE001 - not importable or not inspectable: checked elsewhere
        return None
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind != p.VAR_POSITIONAL)


def _check_top_level(cfg: DictConfig) -> None:
    for key, (ok, allowed) in (("lr", POSITIVE), ("momentum", UNIT_OPEN)):
        value = _value(cfg, key)
        if not ok(value):
            raise _fail(key, value, allowed)


def _check_data(cfg: DictConfig) -> None:
    from hypersweep.core import images
    from hypersweep.core.data import LOADERS

    source = _value(cfg, "data.source")
    if source not in LOADERS:
        raise _fail("data.source", source, "one of " + ", ".join(sorted(LOADERS)))
    val, test = _value(cfg, "data.val_fraction"), _value(cfg, "data.test_fraction")
    if test is None and source not in images.OWN_TEST_SPLIT:
        raise _fail(
            "data.test_fraction",
            None,
            f"a number in (0, 1) for data.source={source} (null keeps the own test split of "
            + ", ".join(sorted(images.OWN_TEST_SPLIT))
            + ")",
        )
    held_out = val + (test or 0)  # null: the own test rows are not taken from the others
    if held_out >= 0.9:
        raise _fail("data.val_fraction+data.test_fraction", round(held_out, 6), "a sum below 0.9")
    if source == "image_folder":
        size = _value(cfg, "data.size")
        pair = isinstance(size, ListConfig) and len(size) == 2
        if not pair or not all(POS_INT[0](v) for v in size):
            shown = list(size) if isinstance(size, ListConfig) else size
            raise _fail("data.size", shown, "[height, width], two integers >= 1")
        images.check_folder(cfg.data)
    if source in images.OWN_TEST_SPLIT:
        images.check_standard(cfg.data)
    if source in ("csv", "parquet"):
        path = _value(cfg, "data.path")
        if not path or not os.path.isfile(path):
            kind = "CSV" if source == "csv" else "Parquet"
            raise _fail("data.path", path, f"an existing {kind} file")


def _check_model_fits_data(cfg: DictConfig) -> None:
    from hydra.utils import get_class

    target = _value(cfg, "model._target_")
    try:
        model_cls = get_class(target)
    except Exception:  # noqa: BLE001
        raise _fail("model._target_", target, "an importable nn.Module class") from None
    kind = _value(cfg, "data.kind")
    accepted = getattr(model_cls, "input_kinds", INPUT_KINDS)
    if kind not in accepted:
        raise ConfigError(
            f"model={model_cls.__name__.lower()} needs data.kind in {', '.join(accepted)}, "
            f"but data={cfg.data.name} has data.kind={kind!r}"
        )
    if kind in ("image", "sequence") and not (
        _value(cfg, "data.source") == "custom" and _value(cfg, "data.shape") is None
    ):  # custom data without a shape: its rows' own shape, checked as it loads
        shape = _value(cfg, "data.shape")
        rank = 3 if kind == "image" else 2
        if not isinstance(shape, (list, ListConfig)) or len(shape) != rank:
            raise _fail("data.shape", shape, f"a list of {rank} sizes for {kind} data")


def _check_trainer(cfg: DictConfig) -> None:
    task = _value(cfg, "data.task")
    monitor = _value(cfg, "trainer.early_stopping.monitor")
    allowed = metric_names(task)
    if monitor not in allowed:
        raise _fail("trainer.early_stopping.monitor", monitor, f"one of {', '.join(allowed)}")
    mode = _value(cfg, "trainer.early_stopping.mode")
    if mode not in ("auto", metric_mode(monitor)):
        raise ConfigError(
            f"trainer.early_stopping.mode={mode!r} contradicts monitor={monitor!r}, for which "
            f"{'higher' if metric_mode(monitor) == 'max' else 'lower'} is better: expected auto "
            f"or {metric_mode(monitor)}"
        )
    if _value(cfg, "trainer.batch_size") == 1 and _value(cfg, "regularization.batchnorm"):
        raise _fail(
            "trainer.batch_size", 1, "2 or more with batch norm (regularization.batchnorm=true)"
        )
    threads = _value(cfg, "trainer.num_threads")
    if threads is not None and not POS_INT[0](threads):
        raise _fail("trainer.num_threads", threads, "null or " + POS_INT[1])
    limit = cfg.trainer.get("time_limit_s")
    if limit is not None and not POSITIVE[0](limit):
        raise _fail("trainer.time_limit_s", limit, "null or " + POSITIVE[1] + " (seconds)")


def _check_scheduler(cfg: DictConfig) -> None:
    milestones = OmegaConf.select(cfg, "scheduler.milestones")
    if milestones is None:
        return
    values = list(milestones)
    if not values or not all(_int(m) and m >= 1 for m in values) or values != sorted(set(values)):
        raise _fail("scheduler.milestones", values, "a non-empty increasing list of epochs >= 1")
