"""Image data: a folder of class subfolders (PNG/JPEG, read with Pillow and resized), and MNIST,
Fashion-MNIST and CIFAR-10 read from their standard files.

The standard sets are found where torchvision keeps them (`<root>/MNIST/raw`,
`<root>/FashionMNIST/raw`, `<root>/cifar-10-batches-py`) or directly in `data.root`. The readers
are ours, not torchvision's: they read the IDX files (raw or .gz) and the CIFAR python batches
without torchvision installed and without its checksum test, and a CIFAR batch is unpickled by
an unpickler that builds nothing but numpy arrays, so a doctored file cannot run code.
`data.download=true` asks torchvision to fetch the files into `data.root` first (it checks them).

Every loader returns `(x_train, y_train, x_test, y_test)`: the set's own train/test split, which
`data.test_fraction: null` keeps. Pixels are floats in [0, 1], rows of (channels, height, width).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from hypersweep.errors import ConfigError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# The IDX files of MNIST and Fashion-MNIST (one name for both), each raw or gzipped.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"

IDX_NAMES = [name for pair in IDX_FILES.values() for name in pair]
# Per source: where under data.root torchvision puts it, the files, and torchvision's class.
STANDARD = {
    "mnist": ("MNIST/raw", IDX_NAMES, "MNIST"),
    "fashion_mnist": ("FashionMNIST/raw", IDX_NAMES, "FashionMNIST"),
    "cifar10": ("cifar-10-batches-py", [*CIFAR_TRAIN, CIFAR_TEST], "CIFAR10"),
}


def _found(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def standard_folder(cfg: DictConfig) -> tuple[Path | None, list[str]]:
    """The folder that holds all of a standard set's files (None: none does), and the names
    it is missing from the first candidate (for the error)."""
    subdir, names, _ = STANDARD[cfg.source]
    root = Path(str(cfg.root))
    candidates = [root / subdir, root]
    for folder in candidates:
        if all(_found(folder, n) for n in names):
            return folder, []
    return None, [n for n in names if not _found(candidates[0], n)]


def check_standard(cfg: DictConfig) -> None:
    """Before any work: the files are there, or download is allowed and possible."""
    if not cfg.get("download"):
        _require_files(cfg)
        return
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - missing, or built for another torch
        raise ConfigError(
            f"data.download=true needs torchvision, which does not import here "
            f"({one_line(e, 120)}): expected pip install torchvision, or the "
            f"files under data.root and data.download=false"
        ) from None


def _require_files(cfg: DictConfig) -> Path:
    folder, missing = standard_folder(cfg)
    if folder is None:
        subdir = STANDARD[cfg.source][0]
        raise ConfigError(
            f"data.root={str(cfg.root)!r} does not hold data={cfg.source}: expected "
            f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} (raw or .gz) in "
            f"{subdir}/ under it or in it, or data.download=true to fetch them with torchvision"
        )
    return folder


def _download(cfg: DictConfig) -> None:
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, STANDARD[cfg.source][2])
    for train in (True, False):
        dataset(str(cfg.root), train=train, download=True)


def source_files(cfg: DictConfig) -> list[Path]:
    """The files a loaded set depends on (for the disk cache's key)."""
    if cfg.source == "image_folder":
        return [f for _, f in folder_files(Path(str(cfg.path)))]
    folder, _ = standard_folder(cfg)
    if folder is None:
        return []
    return [_found(folder, n) for n in STANDARD[cfg.source][1]]


# -- MNIST and Fashion-MNIST: IDX ---------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise ConfigError(f"{path} cannot be read ({e}): expected an IDX file") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (3: images, 1: labels)."""
    data = _read_bytes(path)
    expected = f"an IDX file of unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''}"
    if len(data) < 4 + 4 * ndim or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise ConfigError(f"{path} has header {data[:4].hex()}: expected {expected}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ConfigError(
            f"{path} holds {body.size} values after its header, which says {list(dims)}: "
            f"expected {expected}, whole"
        )
    return body.reshape(dims)


def _idx(cfg: DictConfig):
    folder = _standard(cfg)
    arrays = []
    for split in ("train", "test"):
        images_name, labels_name = IDX_FILES[split]
        images = read_idx(_found(folder, images_name), 3)
        labels = read_idx(_found(folder, labels_name), 1)
        if len(images) != len(labels):
            raise ConfigError(
                f"{folder} holds {len(images)} {split} images and {len(labels)} labels: "
                "expected as many of each"
            )
        arrays += [images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64)]
    return tuple(arrays)


# -- CIFAR-10: python batches -------------------------------------------------------------------

# What a CIFAR batch (a pickled dict of numpy arrays and lists) may name: numpy's array
# reconstruction, nothing else. `_codecs.encode` is how protocol 2 writes bytes from Python 3.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ConfigError(
            f"{path} is not a CIFAR-10 python batch ({one_line(e, 120)}): "
            "expected a pickled dict of numpy arrays (only those are read)"
        ) from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
    data = np.asarray(data) if data is not None else None
    if data is None or labels is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ConfigError(
            f"{path} is not a CIFAR-10 python batch: expected a dict with 'data' "
            "(rows of 3072 bytes) and 'labels'"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise ConfigError(f"{path} holds {len(data)} images and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels


def _cifar(cfg: DictConfig):
    folder = _standard(cfg)
    train = [read_cifar_batch(_found(folder, n)) for n in CIFAR_TRAIN]
    x_test, y_test = read_cifar_batch(_found(folder, CIFAR_TEST))
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
    )


def _standard(cfg: DictConfig) -> Path:
    if cfg.get("download"):
        _download(cfg)
    return _require_files(cfg)


# -- a folder of class subfolders ---------------------------------------------------------------


def folder_files(root: Path) -> list[tuple[str, Path]]:
    """(class, file) for every PNG/JPEG file in `root`'s subfolders, sorted; other files (a
    README, hidden files) are skipped."""
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(sub.rglob("*")):
            if (
                file.is_file()
                and file.suffix.lower() in IMAGE_SUFFIXES
                and not file.name.startswith(".")
            ):
                found.append((sub.name, file))
    return found


def check_folder(cfg: DictConfig) -> None:
    """Before any work: data.path is a folder with two or more class subfolders of images."""
    path = Path(str(cfg.path))
    if not path.is_dir():
        raise ConfigError(
            f"data.path={str(cfg.path)!r} is not allowed: expected an existing folder of class "
            "subfolders of PNG/JPEG files"
        )
    classes = sorted({c for c, _ in folder_files(path)})
    if len(classes) < 2:
        raise ConfigError(
            f"data.path={str(cfg.path)!r} holds PNG/JPEG files in {len(classes)} subfolder"
            f"{'' if len(classes) == 1 else 's'} ({', '.join(classes) or 'none'}): expected one "
            "subfolder per class, two or more"
        )


def _image_folder(cfg: DictConfig):
    from PIL import Image, UnidentifiedImageError

    height, width = (int(v) for v in cfg.size)
    mode = {1: "L", 3: "RGB"}[int(cfg.channels)]
    files = folder_files(Path(str(cfg.path)))
    classes = sorted({c for c, _ in files})
    index = {c: i for i, c in enumerate(classes)}
    x = np.empty((len(files), int(cfg.channels), height, width), dtype=np.float32)
    for row, (_, file) in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ConfigError(
                f"{file} in data.path cannot be read as an image ({one_line(e, 120)})"
                ": expected PNG or JPEG files (remove or replace it)"
            ) from None
        x[row] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    y = np.asarray([index[c] for c, _ in files], dtype=np.int64)
    return x, y


LOADERS = {
    "image_folder": _image_folder,
    "mnist": _idx,
    "fashion_mnist": _idx,
    "cifar10": _cifar,
}
# The sources that come with their own test split (`data.test_fraction: null` keeps it).
OWN_TEST_SPLIT = frozenset(STANDARD)
