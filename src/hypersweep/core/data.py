"""Datasets as tensors: load, split once with the split seed, standardize on train only.

With `data.cv_folds=k` the validation split is not used alone: train+val is cut into k folds
(stratified for classification, by the split seed), each fold's training part standardized on
its own statistics, and `load` returns the refit split: train = all of train+val (standardized on
it), no validation rows, and the same test rows as without cross-validation.

A loaded split is cached per process, keyed by the data config, so the jobs of a sweep that run
in one process load and split a dataset once; and on disk (`$HYPERSWEEP_CACHE_DIR`, default
`~/.cache/hypersweep/datasets`), so that later commands and other worker processes skip
scikit-learn's import (~0.8 s) and the split. The disk key holds the config, the versions of
scikit-learn and numpy and, for a CSV file, its size and modification time; a missing or
unreadable entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hypersweep.errors import ConfigError


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
    """A table: the target column, and the other columns as features (non-numeric ones one-hot
    encoded; an empty cell of those is no category). Every problem with the file's contents is
    one line naming the file, the column or rows, and what is expected."""
    import pandas as pd

    where = f"data.path={cfg.path!r}"
    try:
        frame = pd.read_csv(cfg.path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{where} is empty: expected a header row, then data rows") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): "
            "expected a UTF-8 CSV file"
        ) from None
    except pd.errors.ParserError as e:
        raise ConfigError(
            f"{where} cannot be read as CSV ({_first_line(e)}): expected comma-separated "
            "values with the same number of columns in every row"
        ) from None
    if cfg.target not in frame.columns:
        raise ConfigError(
            f"data.target={cfg.target!r} is not a column of {cfg.path}: "
            f"expected one of {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise ConfigError(f"{where} has a header row and no data rows: expected data rows")
    y = frame.pop(cfg.target)
    if y.isna().any():
        raise ConfigError(
            f"data.target={cfg.target!r} is empty in {_rows(y.isna())} of {cfg.path}: expected "
            "a value in every row (drop those rows)"
        )
    if frame.columns.empty:
        raise ConfigError(f"{where} has no column besides data.target: expected feature columns")
    numeric = frame.select_dtypes("number")
    for column in numeric.columns:
        bad = ~np.isfinite(numeric[column].to_numpy(dtype=np.float64))
        if bad.any():
            raise ConfigError(
                f"column {column!r} of {cfg.path} is empty or not finite in {_rows(bad)}: "
                "expected a number in every row (fill or drop those rows)"
            )
    x = pd.get_dummies(frame, dtype=np.float32).to_numpy(dtype=np.float32)
    if cfg.task == "classification":
        classes, y = np.unique(y.astype(str).to_numpy(), return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(
                f"data.target={cfg.target!r} has one class ({classes[0]!r}) in {cfg.path}: "
                "expected two or more for data.task=classification"
            )
        return x, y
    values = pd.to_numeric(y, errors="coerce")
    if values.isna().any():
        first = y[values.isna()].iloc[0]
        raise ConfigError(
            f"data.target={cfg.target!r} is not a number in {_rows(values.isna())} of "
            f"{cfg.path} (e.g. {first!r}): expected numbers for data.task=regression"
        )
    return x, values.to_numpy(dtype=np.float32)


def _rows(mask) -> str:
    """Which data rows (1-based, after the header) a boolean mask marks, the first few."""
    rows = np.flatnonzero(np.asarray(mask)) + 1
    shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    return f"{len(rows)} row{'s' if len(rows) > 1 else ''} ({shown})"


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:160]


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
    """Load and split the dataset a `data` config describes (CPU tensors, cached per process).
    With cross-validation, this is the refit split (train = train+val, no validation rows)."""
    return _tensors(cfg, _load_cached(_key(cfg)), "")


def load_folds(cfg: DictConfig) -> list[Splits]:
    """The `data.cv_folds` splits of train+val: fold i validates on the i-th fold and trains on
    the others. The test rows are the same in every fold, standardized with its statistics."""
    arrays = _load_cached(_key(cfg))
    return [_tensors(cfg, arrays, f"fold{i}_") for i in range(cfg.cv_folds)]


def _key(cfg: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True)


CACHE_FORMAT = 1
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("HYPERSWEEP_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "hypersweep", "datasets")


def _disk_key(key: str, cfg: DictConfig) -> str:
    parts = [key, version("scikit-learn"), np.__version__, str(CACHE_FORMAT)]
    if cfg.source == "csv":
        stat = Path(cfg.path).stat()
        parts += [str(Path(cfg.path).resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@lru_cache(maxsize=8)
def _load_cached(key: str) -> dict[str, np.ndarray]:
    cfg = OmegaConf.create(json.loads(key))
    label = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(cfg.get("name", "data")))
    path = cache_dir() / f"{label}-{_disk_key(key, cfg)}.npz"
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        prefixes = ["", *(f"fold{i}_" for i in range(cfg.get("cv_folds") or 0))]
        if not all(p + k in arrays for p in prefixes for k in (*ARRAYS, "y_scale")):
            raise KeyError("incomplete entry")
    except (OSError, KeyError, ValueError):  # not cached yet, or unreadable: build it
        arrays = _split(cfg)
        _store(path, arrays)
    return arrays


def _store(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written atomically: jobs in parallel may race, a reader sees a whole file or none."""
    from hypersweep.core.checkpoint import write_atomically

    try:
        write_atomically(path, lambda f: np.savez(f, **arrays))
    except OSError as e:  # a read-only home is no reason to fail the job
        log.warning("dataset cache not written (%s): %s", path, e)


def _split(cfg: DictConfig) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x, y = LOADERS[cfg.source](cfg)
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    classification = cfg.task == "classification"
    y = np.asarray(y, dtype=np.int64 if classification else np.float32)
    stratify = y if classification else None
    holdout = cfg.val_fraction + cfg.test_fraction
    try:
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
    except ValueError as e:  # too few rows (or of a class) for three splits
        counts = f", {len(np.unique(y))} classes" if classification else ""
        raise ConfigError(
            f"data={cfg.get('name', cfg.source)} ({len(y)} rows{counts}) cannot be split into "
            f"train, validation ({cfg.val_fraction}) and test ({cfg.test_fraction}): "
            f"{_first_line(e).split('. ')[0]}; expected more rows"
            + (", at least a few of every class" if classification else "")
        ) from None
    if not cfg.get("cv_folds"):
        return _scaled(cfg, "", [(x_tr, y_tr), (x_va, y_va), (x_te, y_te)])
    # Cross-validation over train+val; the test rows stay those of the plain split.
    x_pool, y_pool = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    empty = (x_pool[:0], y_pool[:0])
    arrays = _scaled(cfg, "", [(x_pool, y_pool), empty, (x_te, y_te)])
    for i, (fit_rows, val_rows) in enumerate(_folds(cfg, y_pool, classification)):
        sets = [(x_pool[fit_rows], y_pool[fit_rows]), (x_pool[val_rows], y_pool[val_rows])]
        arrays.update(_scaled(cfg, f"fold{i}_", [*sets, (x_te, y_te)]))
    return arrays


def _folds(cfg: DictConfig, y: np.ndarray, classification: bool):
    k = cfg.cv_folds
    if classification:
        from sklearn.model_selection import StratifiedKFold

        smallest = min(int(c) for c in np.bincount(y) if c) if y.size else 0
        if k > smallest:
            raise ConfigError(
                f"data.cv_folds={k} is not allowed: expected at most {smallest}, the size of "
                f"the smallest class in train+val of data={cfg.get('name', cfg.source)}"
            )
        splitter = StratifiedKFold(k, shuffle=True, random_state=cfg.split_seed)
    else:
        from sklearn.model_selection import KFold

        if k > len(y):
            raise ConfigError(
                f"data.cv_folds={k} is not allowed: expected at most {len(y)}, the rows of "
                f"train+val of data={cfg.get('name', cfg.source)}"
            )
        splitter = KFold(k, shuffle=True, random_state=cfg.split_seed)
    return splitter.split(np.zeros((len(y), 1)), y)


def _scaled(
    cfg: DictConfig, prefix: str, sets: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Train, val and test arrays under `prefix`, inputs (and regression targets) standardized
    with the statistics of the training set alone."""
    (x_tr, y_tr) = sets[0]
    if cfg.standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std[std == 0] = 1.0  # constant features (digits' border pixels) stay zero
        sets = [((x - mean) / std, y) for x, y in sets]
    y_scale = 1.0
    if cfg.task != "classification":
        y_mean, y_scale = float(y_tr.mean()), float(y_tr.std() or 1.0)
        sets = [(x, (y - y_mean) / y_scale) for x, y in sets]
    flat = [a for pair in sets for a in pair]
    arrays = {prefix + k: np.ascontiguousarray(v) for k, v in zip(ARRAYS, flat, strict=True)}
    arrays[prefix + "y_scale"] = np.float64(y_scale)
    return arrays


def _tensors(cfg: DictConfig, arrays: dict[str, np.ndarray], prefix: str) -> Splits:
    classification = cfg.task == "classification"
    shape = tuple(cfg.shape) if cfg.get("shape") else (arrays["x_train"].shape[1],)
    labels = np.concatenate([arrays[k] for k in ("y_train", "y_val", "y_test")])
    output_size = int(labels.max()) + 1 if classification else 1

    def inputs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32, copy=False)).reshape(len(a), *shape)

    return Splits(
        **{
            k: (inputs if k.startswith("x_") else torch.from_numpy)(arrays[prefix + k])
            for k in ARRAYS
        },
        task=cfg.task,
        input_shape=shape,
        output_size=output_size,
        y_scale=float(arrays[prefix + "y_scale"]),
    )
