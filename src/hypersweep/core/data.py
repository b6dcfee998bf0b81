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
import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hypersweep.core import images
from hypersweep.errors import ConfigError, one_line

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass(frozen=True)
class Stream:
    """How a streamed split reaches its device: its tensors stay in host memory and a DataLoader
    (with `workers` processes, 0: in the training process) gathers each mini-batch, pinned for
    CUDA and copied to `device` while the batch before it trains (see `hypersweep.core.fit`)."""

    device: torch.device
    workers: int


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
    # None: resident, the tensors sit on the device the model trains on.
    stream: Stream | None = None

    @property
    def device(self) -> torch.device:
        """Where the model trains."""
        return self.stream.device if self.stream is not None else self.x_train.device

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in ARRAYS)

    def to(self, device: torch.device) -> Splits:
        """Resident on `device`."""
        return self._with({name: getattr(self, name).to(device) for name in ARRAYS}, None)

    def streamed(self, device: torch.device, workers: int) -> Splits:
        """Streamed to `device`: the tensors in host memory (not pinned as a whole, which would
        copy them once more; each batch is pinned as it is gathered)."""
        return self._with(
            {name: getattr(self, name).cpu() for name in ARRAYS}, Stream(device, workers)
        )

    def _with(self, tensors: dict[str, torch.Tensor], stream: Stream | None) -> Splits:
        return Splits(
            **tensors,
            task=self.task,
            input_shape=self.input_shape,
            output_size=self.output_size,
            y_scale=self.y_scale,
            stream=stream,
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
    """A CSV table: see `_table`."""
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
            f"{where} cannot be read as CSV ({one_line(e)}): expected comma-separated "
            "values with the same number of columns in every row"
        ) from None
    return _table(cfg, frame)


def _parquet(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """A Parquet file (pyarrow): see `_table`. Its categorical, string and boolean columns are
    features as a CSV's text columns are."""
    import pandas as pd
    import pyarrow

    try:
        frame = pd.read_parquet(cfg.path, engine="pyarrow")
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        raise ConfigError(
            f"data.path={cfg.path!r} cannot be read as Parquet ({one_line(e)}): expected a "
            "Parquet file"
        ) from None
    return _table(cfg, frame.reset_index(drop=True))


def _table(cfg: DictConfig, frame) -> tuple[np.ndarray, np.ndarray]:
    """A table: the target column, and the other columns as features (non-numeric ones one-hot
    encoded; an empty cell of those is no category). Every problem with the file's contents is
    one line naming the file, the column or rows, and what is expected."""
    import pandas as pd

    where = f"data.path={cfg.path!r}"
    frame.columns = [str(c) for c in frame.columns]
    if cfg.target not in frame.columns:
        raise ConfigError(
            f"data.target={cfg.target!r} is not a column of {cfg.path}: "
            f"expected one of {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        header = "a header row and " if cfg.source == "csv" else ""
        raise ConfigError(f"{where} has {header}no data rows: expected data rows")
    y = frame.pop(cfg.target)
    if y.isna().any():
        raise ConfigError(
            f"data.target={cfg.target!r} is empty in {_rows(y.isna())} of {cfg.path}: expected "
            "a value in every row (drop those rows)"
        )
    if frame.columns.empty:
        raise ConfigError(f"{where} has no column besides data.target: expected feature columns")
    for column in frame.columns:
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise ConfigError(
                f"column {column!r} of {cfg.path} holds {dtype}: expected numbers, booleans or "
                "categories (convert it, e.g. to days since a date)"
            )
    numeric = frame.select_dtypes(["number", "bool", "boolean"])
    for column in numeric.columns:
        values = numeric[column].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
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


# The keys of a `data=custom` config that are ours; every other key is an argument of its
# `_target_` (as Hydra passes a node's keys to the target it instantiates).
CUSTOM_OWN_KEYS = frozenset(
    ("_target_", "name", "source", "task", "kind", "shape", "val_fraction", "test_fraction")
    + ("cv_folds", "split_seed", "standardize", "cache")
)


def target_function(path: str) -> Callable[..., Any]:
    """The function or class a dotted `_target_` names (trusted by `config.validate` before)."""
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except ImportError as e:
        raise ConfigError(
            f"data._target_={path!r} cannot be imported ({one_line(e)}): expected a function "
            "of a module on the Python path (PYTHONPATH)"
        ) from None
    except AttributeError:
        found = None
    if not callable(found):
        raise ConfigError(
            f"data._target_={path!r} is not a function of an importable module: expected e.g. "
            "mypackage.data.load"
        )
    return found


def _custom(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """`data=custom`: the user's own function (`data._target_`), called with the config's other
    keys, returning `(x, y)`, `(x, y, task)` or a map-style torch Dataset of `(x, y)` items
    (or `(dataset, task)`). x: one row per example, any shape per row (the model's
    `input_shape`); y: class labels (any values; classes sorted) or regression targets."""
    target = str(cfg._target_)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()}
    kwargs = {k: v for k, v in kwargs.items() if k not in CUSTOM_OWN_KEYS}
    returned = target_function(target)(**kwargs)
    where = f"data._target_={target!r}"
    task = None
    if isinstance(returned, tuple) and len(returned) == 2 and _is_dataset(returned[0]):
        returned, task = returned
    if _is_dataset(returned):
        x, y = _from_dataset(returned, where)
    elif isinstance(returned, (tuple, list)) and len(returned) in (2, 3):
        x, y = returned[0], returned[1]
        task = returned[2] if len(returned) == 3 else None
    else:
        raise ConfigError(
            f"{where} returned {type(returned).__name__}: expected (x, y), (x, y, task) or a "
            "torch Dataset of (x, y) items"
        )
    if task is not None and task != cfg.task:
        raise ConfigError(
            f"data.task={cfg.task!r} but {where} returned task {task!r}: expected the same "
            f"(set data.task={task})"
        )
    x, y = _as_array(x, f"{where}: x"), _as_array(y, f"{where}: y").reshape(-1)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise ConfigError(
            f"{where} returned x of shape {tuple(x.shape)} and y of {tuple(y.shape)}: expected "
            "one row of x per label, x with at least 2 dimensions (rows, features...)"
        )
    x = _finite(x.astype(np.float32, copy=False), f"{where}: x")
    if cfg.task == "classification":
        classes, y = np.unique(y.astype(str) if y.dtype == object else y, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(
                f"{where} returned one class ({classes[0]!r}): expected two or more for "
                "data.task=classification"
            )
    else:
        if not np.issubdtype(y.dtype, np.number):
            raise ConfigError(f"{where} returned y of {y.dtype}: expected numbers for regression")
        y = _finite(y.astype(np.float32), f"{where}: y")
    return x, y


def _is_dataset(value: Any) -> bool:
    return isinstance(value, torch.utils.data.Dataset)


def _from_dataset(dataset: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        items = [dataset[i] for i in range(len(dataset))]
    except TypeError:
        raise ConfigError(
            f"{where} returned a Dataset without len(): expected a map-style Dataset"
        ) from None
    if not items or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
        raise ConfigError(f"{where} returned a Dataset whose items are not (x, y) pairs")
    xs = [_as_array(x, f"{where}: x") for x, _ in items]
    if len({x.shape for x in xs}) > 1:
        raise ConfigError(f"{where} returned a Dataset of x with different shapes: expected one")
    return np.stack(xs), np.asarray([_as_array(y, f"{where}: y").item() for _, y in items])


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    to_numpy = getattr(value, "to_numpy", None)  # pandas
    try:
        array = np.asarray(to_numpy() if callable(to_numpy) else value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} is not an array ({one_line(e)})") from None
    if array.dtype == object and what.endswith(": x"):
        raise ConfigError(f"{what} holds non-numeric values: expected numbers (encode them)")
    return array


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    try:
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    except TypeError:
        raise ConfigError(f"{what} holds non-numeric values: expected numbers") from None
    if bad.any():
        raise ConfigError(
            f"{what} is NaN or infinite in {_rows(bad)} (1-based): expected finite numbers "
            "(fill or drop those rows)"
        )
    return array


LOADERS: dict[str, Callable[[DictConfig], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _sklearn("digits"),
    "iris": _sklearn("iris"),
    "wine": _sklearn("wine"),
    "breast_cancer": _sklearn("breast_cancer"),
    "synthetic_classification": _synthetic_classification,
    "synthetic_regression": _synthetic_regression,
    "csv": _csv,
    "parquet": _parquet,
    "custom": _custom,
    **images.LOADERS,
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
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("HYPERSWEEP_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "hypersweep", "datasets")


def _disk_key(key: str, cfg: DictConfig) -> str:
    parts = [key, version("scikit-learn"), np.__version__, str(CACHE_FORMAT)]
    files = [Path(cfg.path)] if cfg.source in ("csv", "parquet") else []
    if cfg.source in images.LOADERS:
        files = images.source_files(cfg)
    if cfg.source == "custom":  # the module that defines the function: its code is the data
        module = importlib.import_module(str(cfg._target_).rpartition(".")[0])
        files = [Path(module.__file__)] if getattr(module, "__file__", None) else []
    for file in files:
        stat = file.stat()
        parts += [str(file.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@lru_cache(maxsize=8)
def _load_cached(key: str) -> dict[str, np.ndarray]:
    cfg = OmegaConf.create(json.loads(key))
    if cfg.source == "custom" and not cfg.get("cache", False):
        return _split(cfg)  # the user's function is called once per process, nothing on disk
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

    loaded = LOADERS[cfg.source](cfg)
    own_test = None  # the set's own test rows (MNIST, CIFAR-10), kept when test_fraction is null
    if len(loaded) == 4:
        x, y, *own_test = loaded
        if cfg.test_fraction is not None:  # a number: the test rows are drawn from all rows
            x, y = np.concatenate([x, own_test[0]]), np.concatenate([y, own_test[1]])
            own_test = None
    else:
        x, y = loaded
    row_shape = _row_shape(cfg, np.shape(x)[1:])

    def rows(a) -> np.ndarray:
        return np.asarray(a, dtype=np.float32).reshape(len(a), -1)

    x = rows(x)
    classification = cfg.task == "classification"
    y = np.asarray(y, dtype=np.int64 if classification else np.float32)
    stratify = y if classification else None
    try:
        if own_test is not None:
            x_te, y_te = rows(own_test[0]), np.asarray(own_test[1], dtype=y.dtype)
            x_tr, x_va, y_tr, y_va = train_test_split(
                x, y, test_size=cfg.val_fraction, random_state=cfg.split_seed, stratify=stratify
            )
        else:
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
    except ValueError as e:  # too few rows (or of a class) for three splits
        counts = f", {len(np.unique(y))} classes" if classification else ""
        raise ConfigError(
            f"data={cfg.get('name', cfg.source)} ({len(y)} rows{counts}) cannot be split into "
            f"train, validation ({cfg.val_fraction}) and test ({cfg.test_fraction or 'own'}): "
            f"{one_line(e).split('. ')[0]}; expected more rows"
            + (", at least a few of every class" if classification else "")
        ) from None
    if not cfg.get("cv_folds"):
        arrays = _scaled(cfg, "", [(x_tr, y_tr), (x_va, y_va), (x_te, y_te)])
        arrays["shape"] = np.asarray(row_shape, dtype=np.int64)
        return arrays
    # Cross-validation over train+val; the test rows stay those of the plain split.
    x_pool, y_pool = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    empty = (x_pool[:0], y_pool[:0])
    arrays = _scaled(cfg, "", [(x_pool, y_pool), empty, (x_te, y_te)])
    for i, (fit_rows, val_rows) in enumerate(_folds(cfg, y_pool, classification)):
        sets = [(x_pool[fit_rows], y_pool[fit_rows]), (x_pool[val_rows], y_pool[val_rows])]
        arrays.update(_scaled(cfg, f"fold{i}_", [*sets, (x_te, y_te)]))
    arrays["shape"] = np.asarray(row_shape, dtype=np.int64)
    return arrays


# A row's dimensions: (channels, height, width), (steps, features).
RANKS = {"image": 3, "sequence": 2}


def _row_shape(cfg: DictConfig, found: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one input row: `data.shape` where given (it must hold as many values as a
    row has), else the loaded rows' own shape; its rank must suit `data.kind`."""
    given = tuple(int(v) for v in cfg.shape) if cfg.get("shape") else None
    size = int(np.prod(found))
    if given is not None and int(np.prod(given)) != size:
        raise ConfigError(
            f"data.shape={list(given)} is not allowed for data={cfg.get('name', cfg.source)}: "
            f"its rows have shape {list(found)} ({size} values); expected a shape of {size} values"
        )
    shape = given or tuple(int(v) for v in found)
    rank = RANKS.get(str(cfg.get("kind")))
    if rank is not None and len(shape) != rank:
        raise ConfigError(
            f"data.kind={cfg.kind!r} needs rows of {rank} dimensions, but "
            f"data={cfg.get('name', cfg.source)} has rows of shape {list(shape)}: expected "
            f"data.shape=[...] with {rank} sizes, or data.kind=tabular"
        )
    return shape


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
    if cfg.get("shape"):
        shape = tuple(cfg.shape)
    elif "shape" in arrays and cfg.get("kind") != "tabular":
        shape = tuple(int(v) for v in arrays["shape"])
    else:
        shape = (arrays["x_train"].shape[1],)
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
