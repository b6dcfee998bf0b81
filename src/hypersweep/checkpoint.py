"""Checkpoints: state dict + resolved config + epoch + metrics, written atomically, loadable with
`torch.load(weights_only=True)` (plain containers and tensors only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config,
        "epoch": epoch,
        "metrics": dict(metrics),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def download_checkpoint(tracking_uri: str, run_id: str, dest: str | os.PathLike) -> Path:
    """Fetch a run's `checkpoints/best.pt` from MLflow into `dest`."""
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(
        run_id=run_id,
        artifact_path="checkpoints/best.pt",
        dst_path=str(dest),
        tracking_uri=tracking_uri,
    )
    return Path(local)


def load_run_weights(tracking_uri: str, run_id: str) -> dict[str, torch.Tensor]:
    with tempfile.TemporaryDirectory() as tmp:
        return load_checkpoint(download_checkpoint(tracking_uri, run_id, tmp))["state_dict"]
