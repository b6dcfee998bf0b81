"""Datasets as tensors: load, split once with the split seed, standardize on train only.

A loaded split is cached per process, keyed by the data config, so the jobs of a sweep that run
in one process load and split a dataset once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Splits:
    """Train/val/test tensors plus what the model and the metrics need to know about them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    input_shape: tuple[int, ...]
    output_size: int
    # Regression targets are standardized for training; rmse is reported in the original units.
    y_scale: float = 1.0

    def to(self, device: torch.device) -> Splits:
        moved = {
            name: getattr(self, name).to(device)
            for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return Splits(
            **moved,
            task=self.task,
            input_shape=self.input_shape,
            output_size=self.output_size,
            y_scale=self.y_scale,
        )


def _sklearn(name: str) -> Callable[[DictConfig], tuple[np.ndarray, np.ndarray]]:
    def load(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{name}")()
        return bunch.data, bunch.target

    return load


def _synthetic_classification(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    return make_classification(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=min(cfg.n_informative, cfg.n_features),
        n_redundant=0,
        n_classes=cfg.n_classes,
        random_state=cfg.generator_seed,
    )


def _synthetic_regression(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_regression

    return make_regression(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=min(cfg.n_informative, cfg.n_features),
        noise=cfg.noise,
        random_state=cfg.generator_seed,
    )


def _csv(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(cfg.path)
    if cfg.target not in frame.columns:
        from hypersweep.config import ConfigError

        raise ConfigError(
            f"data.target={cfg.target!r} is not a column of {cfg.path}: "
            f"expected one of {', '.join(map(str, frame.columns))}"
        )
    y = frame.pop(cfg.target).to_numpy()
    x = pd.get_dummies(frame, dtype=np.float32).to_numpy(dtype=np.float32)
    if cfg.task == "classification":
        _, y = np.unique(y, return_inverse=True)
    return x, y


LOADERS: dict[str, Callable[[DictConfig], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _sklearn("digits"),
    "iris": _sklearn("iris"),
    "wine": _sklearn("wine"),
    "breast_cancer": _sklearn("breast_cancer"),
    "synthetic_classification": _synthetic_classification,
    "synthetic_regression": _synthetic_regression,
    "csv": _csv,
}


def load(cfg: DictConfig) -> Splits:
    """Load and split the dataset a `data` config describes (CPU tensors, cached per process)."""
    return _load_cached(json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True))


@lru_cache(maxsize=8)
def _load_cached(key: str) -> Splits:
    from sklearn.model_selection import train_test_split

    cfg = OmegaConf.create(json.loads(key))
    x, y = LOADERS[cfg.source](cfg)
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    classification = cfg.task == "classification"
    y = np.asarray(y, dtype=np.int64 if classification else np.float32)
    stratify = y if classification else None
    holdout = cfg.val_fraction + cfg.test_fraction
    x_tr, x_rest, y_tr, y_rest = train_test_split(
        x, y, test_size=holdout, random_state=cfg.split_seed, stratify=stratify
    )
    x_va, x_te, y_va, y_te = train_test_split(
        x_rest,
        y_rest,
        test_size=cfg.test_fraction / holdout,
        random_state=cfg.split_seed,
        stratify=y_rest if classification else None,
    )
    if cfg.standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std[std == 0] = 1.0  # constant features (digits' border pixels) stay zero
        x_tr, x_va, x_te = ((a - mean) / std for a in (x_tr, x_va, x_te))
    y_scale = 1.0
    if not classification:
        y_mean, y_scale = float(y_tr.mean()), float(y_tr.std() or 1.0)
        y_tr, y_va, y_te = ((a - y_mean) / y_scale for a in (y_tr, y_va, y_te))

    shape = tuple(cfg.shape) if cfg.get("shape") else (x.shape[1],)
    output_size = int(y.max()) + 1 if classification else 1

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    def inputs(a: np.ndarray) -> torch.Tensor:
        return tensor(a.astype(np.float32)).reshape(len(a), *shape)

    return Splits(
        x_train=inputs(x_tr),
        y_train=tensor(y_tr),
        x_val=inputs(x_va),
        y_val=tensor(y_va),
        x_test=inputs(x_te),
        y_test=tensor(y_te),
        task=cfg.task,
        input_shape=shape,
        output_size=output_size,
        y_scale=y_scale,
    )
