"""Fixtures: configs composed from the real conf/ tree, MLflow stores in tmp dirs, and a helper
that runs train.py as a user does."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hypersweep.hydra_compat import initialize_kwargs

ROOT = Path(__file__).resolve().parents[1]
# Dataset splits cached by the tests' processes go to a temporary dir, not the user's ~/.cache.
if "HYPERSWEEP_CACHE_DIR" not in os.environ:
    os.environ["HYPERSWEEP_CACHE_DIR"] = tempfile.mkdtemp(prefix="hypersweep-cache-")
    atexit.register(shutil.rmtree, os.environ["HYPERSWEEP_CACHE_DIR"], ignore_errors=True)
CONF = ROOT / "conf"
# Tiny CPU settings: seconds per job.
TINY = [
    "trainer.max_epochs=3",
    "trainer.batch_size=128",
    "model.hidden_units=16",
    "trainer.device=cpu",
    "trainer.num_threads=1",
]


def compose_cfg(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), **initialize_kwargs()):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def fit_options(cfg: DictConfig) -> dict[str, Any]:
    """The options of `hypersweep.core.fit.fit`/`fit_members` as a job takes them from its
    config."""
    from hypersweep.core.fit import EarlyStopping

    es = cfg.trainer.early_stopping
    return {
        "max_epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.trainer.batch_size,
        "stopper": EarlyStopping(es.resolved_mode, es.patience, es.min_delta),
        "monitor": es.monitor,
        "l1": cfg.regularization.l1,
        "seed": cfg.trainer.seed,
    }


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """One migrated SQLite store per test run; tests copy it (migrations take seconds)."""
    from hypersweep.tracking.store import prepare_store

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    prepare_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(tmp_path, migrated_store) -> dict[str, str]:
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(migrated_store, db)
    return {"uri": f"sqlite:///{db}", "artifacts": str(tmp_path / "mlruns" / "artifacts")}


@pytest.fixture
def job_cfg(tmp_path, store):
    """Compose a job config as Hydra would hand it to the task function (HydraConfig set)."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_cfg(
            [
                *TINY,
                f"tracking.uri={store['uri']}",
                f"tracking.artifact_root={store['artifacts']}",
                *overrides,
            ],
            hydra_config=True,
        )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "out")
            cfg.hydra.job.name = "test"
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def mlflow_client(store):
    from mlflow import MlflowClient

    return MlflowClient(store["uri"])


def train(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python train.py ARGS` from `cwd` (so outputs and stores land there)."""
    return subprocess.run(
        _train_command(args),
        cwd=cwd,
        env=_train_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hypersweep(
    args: list[str], cwd: Path, uri: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the `hypersweep` CLI against the store at `uri`."""
    return subprocess.run(
        [sys.executable, "-m", "hypersweep.cli", "--tracking-uri", uri, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def kill_train_when(
    args: list[str],
    cwd: Path,
    ready: Callable[[], Any],
    timeout: float,
    what: str,
    sig: signal.Signals = signal.SIGKILL,
    stderr: Path | None = None,
) -> tuple[subprocess.Popen, Any]:
    """Start `python train.py ARGS` from `cwd` in the background, poll `ready()` until it returns
    something truthy, then send `sig`: SIGKILL to the process (no chance to clean up), any
    other signal to its whole process group, as a terminal sends Ctrl-C (SIGINT) to a command
    and the processes it started. Returns the process, exited, and what `ready()` returned;
    fails the test with `what` if it never was ready. `stderr`: a file for its stderr."""
    group = sig != signal.SIGKILL
    proc = subprocess.Popen(
        _train_command(args),
        cwd=cwd,
        env=_train_env(None),
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w") if stderr else subprocess.DEVNULL,
        start_new_session=group,
        # A background process starts with SIGINT ignored: give it a terminal's default.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if group else None,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = ready()
            if state:
                return proc, state
            time.sleep(0.3)
        pytest.fail(f"{what} within {timeout} s")
    finally:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"train.py did not exit within 60 s of {sig.name}")


def _train_command(args: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def _train_env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)  # the store under cwd, not the caller's
    return full_env
