"""What a job learns from outside its config, read once at its start: the only code of a job
that reads Hydra's runtime config and the environment.

Those channels are Hydra's (`HydraConfig`: the output dir, the overrides, the job number, the
group choices, the sweep dir), the sweep's (`mlflow_sweep.json`, written by the sweep's
callback: its experiment and parent run), the sweeper's (the trial, set per job with
`hydra.job.env_set`) and `hypersweep reproduce`'s (the run a job reproduces).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from hypersweep.search.study import STORAGE_ENV, STUDY_ENV, TRIAL_ENV
from hypersweep.tracking.callback import experiment_name, read_sweep_file

# Set by `hypersweep reproduce`: the run a job reproduces (its tag `reproduced_from`).
REPRODUCED_FROM_ENV = "HYPERSWEEP_REPRODUCED_FROM"


@dataclass(frozen=True)
class Trial:
    """The Optuna trial a job runs, as the `hypersweep` sweeper named it."""

    trial_id: int
    study_name: str
    storage: str  # "" for the sweeper's in-memory study (same process only)


@dataclass(frozen=True)
class JobContext:
    output_dir: Path
    overrides: list[str]
    job_num: int
    choices: dict[str, str]  # each config group's option (`optimizer: adam`)
    multirun: bool
    sweep_dir: Path | None  # resolved; None for a single run
    # The sweep's MLflow experiment and parent run (None: a single run, or a sweep without
    # the tracking callback), and the experiment's name for a job that creates its own.
    sweep: dict[str, str] | None
    experiment: str
    trial: Trial | None
    reproduced_from: str | None

    @classmethod
    def of(cls, cfg: DictConfig) -> JobContext:
        """The context of the job Hydra runs now with `cfg`."""
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
        trial_id = os.environ.get(TRIAL_ENV)
        trial = (
            Trial(int(trial_id), os.environ[STUDY_ENV], os.environ.get(STORAGE_ENV, ""))
            if trial_id
            else None
        )
        return cls(
            output_dir=Path(hydra_cfg.runtime.output_dir),
            overrides=list(hydra_cfg.overrides.task),
            job_num=int(hydra_cfg.job.get("num", 0) or 0),
            choices={str(k): str(v) for k, v in hydra_cfg.runtime.choices.items() if v},
            multirun=multirun,
            sweep_dir=Path(hydra_cfg.sweep.dir).resolve() if multirun else None,
            sweep=read_sweep_file(hydra_cfg.sweep.dir) if multirun else None,
            experiment=experiment_name(cfg, hydra_cfg),
            trial=trial,
            reproduced_from=os.environ.get(REPRODUCED_FROM_ENV) or None,
        )
