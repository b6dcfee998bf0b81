"""Tiny files in the standard on-disk formats of MNIST/Fashion-MNIST (IDX), CIFAR-10 (python
batches) and a folder of class subfolders of images, written by the tests (nothing can be
downloaded in CI). Each class has its own pattern, so that a model can learn them."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}


def patterns(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images of `shape`, label k brightening the k-th band of rows, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    rows = shape[-2]
    for i, k in enumerate(labels):
        band = slice(k * rows // 10, (k + 1) * rows // 10 + 1)
        images[i, ..., band, :] = 250
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)
    return path


def mnist_files(folder: Path, n_train: int = 100, n_test: int = 20, gz: bool = False) -> dict:
    """The four IDX files in `folder`; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = patterns(n, (28, 28), seed)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
        written[split] = (images, labels)
    return written


def cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {b"batch_label": b"tiny", b"labels": [int(v) for v in labels]}
    batch[b"data"] = images.reshape(len(images), -1)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def cifar_files(folder: Path, per_batch: int = 20, n_test: int = 20) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(1, 6):
        images, labels = patterns(per_batch, (3, 32, 32), i)
        cifar_batch(folder / f"data_batch_{i}", images, labels)
        written[f"data_batch_{i}"] = (images, labels)
    images, labels = patterns(n_test, (3, 32, 32), 0)
    cifar_batch(folder / "test_batch", images, labels)
    written["test_batch"] = (images, labels)
    return written


def image_folder(root: Path, per_class: int = 12) -> Path:
    """Solid-colour images of varied sizes, PNG and JPEG, one subfolder per colour, with a
    README and a hidden file that are not images."""
    from PIL import Image

    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (20 + 3 * i, 40 - i)  # (width, height)
            image = Image.new("RGB", size, rgb)
            suffix, kind = (".png", "PNG") if i % 2 else (".JPG", "JPEG")
            image.save(root / name / f"{i:02d}{suffix}", kind)
        (root / name / "._00.png").write_bytes(b"\0\1 macOS metadata, not an image")
    (root / "README.txt").write_text("colour classes\n")
    return root
