"""Dataset splits: cached on disk across processes, rebuilt when the source or the entry changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from omegaconf import OmegaConf

from hypersweep.core import data

from conftest import CONF

LOAD = """
import hashlib, json, sys
from omegaconf import OmegaConf
from hypersweep.core.data import load
cfg = OmegaConf.merge(OmegaConf.load(sys.argv[1]), OmegaConf.from_dotlist(sys.argv[2:]))
s = load(cfg)
digest = hashlib.sha256()
for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    digest.update(getattr(s, name).numpy().tobytes())
print(json.dumps({"sha": digest.hexdigest(), "n_train": len(s.y_train), "outputs": s.output_size,
                  "sklearn_imported": "sklearn" in sys.modules}))
"""


def load_in_a_new_process(cache, config, *dotlist):
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(config), *dotlist],
        env={**os.environ, "HYPERSWEEP_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_later_process_reads_the_split_from_disk_without_importing_sklearn(tmp_path):
    first = load_in_a_new_process(tmp_path, CONF / "data" / "digits.yaml")
    second = load_in_a_new_process(tmp_path, CONF / "data" / "digits.yaml")
    assert first["sklearn_imported"] and not second["sklearn_imported"]
    assert second["sha"] == first["sha"] and second["n_train"] == first["n_train"] == 1257
    assert second["outputs"] == 10
    # another split seed is another entry, not the cached one
    other = load_in_a_new_process(tmp_path, CONF / "data" / "digits.yaml", "split_seed=1")
    assert other["sklearn_imported"] and other["sha"] != first["sha"]
    assert len(list(tmp_path.glob("digits-*.npz"))) == 2


def test_csv_entry_follows_the_file(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    cache = tmp_path / "cache"
    args = (CONF / "data" / "csv.yaml", f"path={table}", "target=label")
    assert load_in_a_new_process(cache, *args)["n_train"] == 28
    assert not load_in_a_new_process(cache, *args)["sklearn_imported"]  # from the cache
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(80)))
    assert load_in_a_new_process(cache, *args)["n_train"] == 56  # the file changed: rebuilt


def test_an_unreadable_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSWEEP_CACHE_DIR", str(tmp_path))
    cfg = OmegaConf.load(CONF / "data" / "iris.yaml")
    data._load_cached.cache_clear()
    fresh = data.load(cfg)
    (entry,) = tmp_path.glob("iris-*.npz")
    entry.write_bytes(b"torn write")
    data._load_cached.cache_clear()
    again = data.load(cfg)
    assert torch.equal(again.x_train, fresh.x_train) and torch.equal(again.y_test, fresh.y_test)
    with np.load(entry) as stored:  # written whole again
        assert stored["x_train"].shape == tuple(fresh.x_train.shape)


def test_a_cv_entry_without_its_folds_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSWEEP_CACHE_DIR", str(tmp_path))
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "data" / "iris.yaml"), {"cv_folds": 3})
    data._load_cached.cache_clear()
    fresh = data.load_folds(cfg)
    (entry,) = tmp_path.glob("iris-*.npz")
    with np.load(entry) as stored:  # keep the refit split, lose the folds
        np.savez(entry, **{k: stored[k] for k in stored.files if not k.startswith("fold")})
    data._load_cached.cache_clear()
    again = data.load_folds(cfg)
    assert len(again) == 3
    assert all(torch.equal(a.x_val, f.x_val) for a, f in zip(again, fresh, strict=True))
    with np.load(entry) as stored:
        assert "fold2_x_val" in stored.files


def test_parquet_features_are_read_as_the_same_table_in_csv_is(tmp_path):
    """Categories, strings and booleans: one-hot or 0/1 as in a CSV; the same split, classes
    and standardized inputs."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "size": [float(i % 11) for i in range(90)],
            "color": pd.Categorical([("red", "blue", None)[i % 3] for i in range(90)]),
            "shape": [("round", "square")[i % 2] for i in range(90)],
            "flag": [bool(i % 4) for i in range(90)],
            "label": [("no", "yes", "maybe")[i % 3] for i in range(90)],
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)

    def load(kind: str):
        config = OmegaConf.load(CONF / "data" / f"{kind}.yaml")
        path = str(tmp_path / f"t.{kind}")
        return data.load(OmegaConf.merge(config, {"target": "label", "path": path}))

    parquet, csv = load("parquet"), load("csv")
    # size, flag (0/1), color (two categories; the empty cell is neither), shape (two)
    assert parquet.input_shape == (6,) and parquet.output_size == 3
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(parquet, name), getattr(csv, name)), name
