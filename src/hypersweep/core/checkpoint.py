"""Checkpoints: state dict + resolved config + epoch + metrics, written atomically, loadable with
`torch.load(weights_only=True)` (plain containers and tensors only)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
) -> Path:
    """Written atomically (write_atomically): a reader never sees a torn file."""
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config,
        "epoch": epoch,
        "metrics": dict(metrics),
    }
    return write_atomically(path, lambda f: torch.save(payload, f))


def save_resume_state(path: Path, payload: dict[str, Any]) -> Path:
    """A preempted run's whole training state (`hypersweep.core.fit.Interrupted`), written
    atomically: a second preemption during the write leaves the previous state or none."""
    return write_atomically(path, lambda f: torch.save(payload, f))


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """`write` into a temporary file beside `path`, flushed to disk, then renamed over it: a
    reader sees the old file or the whole new one, never a torn one; no temporary is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
