"""Image data: MNIST/Fashion-MNIST IDX files (raw and gzipped), CIFAR-10 python batches and a
folder of class subfolders, read from tiny files in those formats; the set's own test split;
a doctored pickle refused; whole sweeps with model=cnn at 1 and 3 channels, 28 and 32 pixels."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from hypersweep import build
from hypersweep.config import validate
from hypersweep.core import data
from hypersweep.errors import ConfigError

from conftest import TINY, compose_cfg, train
from image_files import COLOURS, cifar_batch, cifar_files, image_folder, mnist_files


@pytest.fixture(autouse=True)
def fresh_cache():
    data._load_cached.cache_clear()


def loaded(*overrides: str) -> data.Splits:
    cfg = compose_cfg([*TINY, "data.standardize=false", *overrides])
    validate(cfg)
    return data.load(cfg.data)


@pytest.mark.parametrize(
    "source,subdir", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw")]
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_keep_their_own_test_split_raw_or_gzipped(tmp_path, source, subdir, gz):
    written = mnist_files(tmp_path / subdir, gz=gz)
    splits = loaded(f"data={source}", f"data.root={tmp_path}")
    assert splits.input_shape == (1, 28, 28) and splits.output_size == 10
    assert (len(splits.y_train), len(splits.y_val)) == (90, 10)
    assert torch.bincount(splits.y_val).tolist() == [1] * 10  # stratified
    images, labels = written["t10k"]
    assert torch.equal(splits.y_test, torch.from_numpy(labels.astype(np.int64)))
    expected = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    assert torch.allclose(splits.x_test, expected)
    # every training image is one of the files' own, with its own label
    train_images, train_labels = written["train"]
    for x, y in zip(splits.x_val, splits.y_val, strict=True):
        row = int(np.flatnonzero((train_images == np.round(x[0].numpy() * 255)).all((1, 2)))[0])
        assert train_labels[row] == y


def test_idx_files_directly_in_the_root_and_a_test_fraction_drawn_from_all_rows(tmp_path):
    mnist_files(tmp_path, gz=True)
    splits = loaded("data=mnist", f"data.root={tmp_path}", "data.test_fraction=0.2")
    sizes = len(splits.y_train), len(splits.y_val), len(splits.y_test)
    assert sum(sizes) == 120 and abs(sizes[2] - 24) <= 1  # 20% of all 120 rows, rounded


def test_a_truncated_idx_file_is_one_line_naming_it(tmp_path):
    mnist_files(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte holds 15675 values"):
        loaded("data=mnist", f"data.root={tmp_path}")


def test_cifar_batches_are_read_channels_first(tmp_path):
    written = cifar_files(tmp_path / "cifar-10-batches-py")
    splits = loaded("data=cifar10", f"data.root={tmp_path}")
    assert splits.input_shape == (3, 32, 32) and splits.output_size == 10
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (90, 10, 20)
    images, labels = written["test_batch"]
    assert torch.equal(splits.y_test, torch.from_numpy(labels.astype(np.int64)))
    # the 3072 bytes of a row are 1024 red, then green, then blue, row by row
    assert torch.allclose(splits.x_test, torch.from_numpy(images.astype(np.float32) / 255))
    assert splits.x_test[0, 0, 0, 0] * 255 == pytest.approx(images.reshape(-1, 3072)[0, 0])
    assert splits.x_test[0, 1, 0, 0] * 255 == pytest.approx(images.reshape(-1, 3072)[0, 1024])


class _Doctored:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_doctored_cifar_batch_runs_nothing_and_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_files(folder)
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": _Doctored(marker), b"labels": []}, protocol=2)
    )
    with pytest.raises(ConfigError, match=r"data_batch_3 is not a CIFAR-10 .*names posix\.system"):
        loaded("data=cifar10", f"data.root={tmp_path}")
    assert not marker.exists()
    # a batch with the wrong row length is refused too
    cifar_batch(folder / "data_batch_3", np.zeros((4, 3, 16, 16), np.uint8), np.zeros(4))
    with pytest.raises(ConfigError, match="rows of 3072 bytes"):
        loaded("data=cifar10", f"data.root={tmp_path}")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_an_image_folder_is_converted_resized_and_labelled_by_subfolder(tmp_path, channels, size):
    image_folder(tmp_path)
    splits = loaded(
        "data=image_folder",
        f"data.path={tmp_path}",
        f"data.channels={channels}",
        f"data.size=[{size},{size}]",
    )
    assert splits.input_shape == (channels, size, size) and splits.output_size == 3
    # 3 classes of 12: no README.txt, no ._00.png
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 36
    x = torch.cat([splits.x_train, splits.x_val, splits.x_test])
    y = torch.cat([splits.y_train, splits.y_val, splits.y_test])
    for label, rgb in enumerate(COLOURS.values()):  # classes sorted: blue, green, red
        pixels = x[y == label]
        if channels == 3:
            expected = torch.tensor(rgb, dtype=torch.float32) / 255
        else:  # Pillow's L: 0.299 R + 0.587 G + 0.114 B
            expected = torch.tensor([0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]]) / 255
        assert torch.allclose(pixels.amax((0, 2, 3)), expected, atol=4 / 255)  # JPEG's error
        assert torch.allclose(pixels.amin((0, 2, 3)), expected, atol=4 / 255)
    cfg = compose_cfg(["model=cnn", "data=image_folder", f"data.channels={channels}"])
    model = build.model(cfg, splits, None)
    assert model(splits.x_val).shape == (len(splits.y_val), 3)


def test_a_corrupt_image_is_one_line_naming_its_file(tmp_path):
    image_folder(tmp_path)
    (tmp_path / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ConfigError) as error:
        loaded("data=image_folder", f"data.path={tmp_path}")
    assert "red/broken.png in data.path cannot be read as an image" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_disk_cache_follows_the_image_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    root = image_folder(tmp_path / "images")
    before = loaded("data=image_folder", f"data.path={root}")
    data._load_cached.cache_clear()
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "red" / "new.png")
    after = loaded("data=image_folder", f"data.path={root}")
    assert sum(map(len, (after.y_train, after.y_val, after.y_test))) == 37
    assert sum(map(len, (before.y_train, before.y_val, before.y_test))) == 36
    assert len(list((tmp_path / "cache").glob("image_folder-*.npz"))) == 2


@pytest.mark.slow
def test_sweeps_over_the_standard_sets_and_an_image_folder_train_a_cnn(tmp_path):
    mnist_files(tmp_path / "data" / "MNIST" / "raw", gz=True)
    cifar_files(tmp_path / "data" / "cifar-10-batches-py")
    image_folder(tmp_path / "images")
    tiny = ["model=cnn", "model.channels=4", "trainer.max_epochs=2", "trainer.batch_size=32"]
    runs = train(["-m", "data=mnist,cifar10", *tiny], cwd=tmp_path)  # data.root: ./data
    assert runs.returncode == 0, runs.stderr[-3000:]
    folder = [
        "-m",
        "data=image_folder",
        f"data.path={tmp_path / 'images'}",
        "data.channels=1,3",
        "data.size=[28,28],[32,32]",
        *tiny,
    ]
    runs = train(folder, cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    assert {"cifar10+mnist-cnn", "image_folder-cnn"} <= set(experiments)
    jobs = [
        r
        for r in client.search_runs(list(experiments.values()))
        if "mlflow.parentRunId" in r.data.tags
    ]
    assert len(jobs) == 6 and all(r.info.status == "FINISHED" for r in jobs)
    shapes = {(r.data.params["data.name"], r.data.params.get("data.shape")) for r in jobs}
    assert shapes == {
        ("mnist", "[1, 28, 28]"),
        ("cifar10", "[3, 32, 32]"),
        ("image_folder", "[1, 28, 28]"),
        ("image_folder", "[1, 32, 32]"),
        ("image_folder", "[3, 28, 28]"),
        ("image_folder", "[3, 32, 32]"),
    }
    assert all(np.isfinite(r.data.metrics["best_val_loss"]) for r in jobs)
