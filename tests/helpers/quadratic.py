"""A Hydra task that is not train.py: both Optuna sweepers run any task function. It returns a
quadratic of its config (`x`, `y`, and `z` unless the sweep deletes it) or, with `pair: true`,
two objectives, after `sleep` seconds; `error: true` raises; `nan_first: true` returns NaN from
the sweep's first job. `extend` is a custom search space
(`hydra.sweeper.custom_search_space=quadratic.extend`)."""

from __future__ import annotations

import math
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hypersweep.hydra_compat import main_kwargs


def extend(cfg: DictConfig, trial) -> None:
    """`+w` in [0, 1], and `z` within `max_gap` of the trial's `x`."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_gap, x + cfg.max_gap)
    trial.suggest_float("+w", 0.0, 1.0)


@hydra.main(config_path=".", config_name="quadratic", **main_kwargs([]))
def main(cfg: DictConfig):
    time.sleep(cfg.sleep)
    if cfg.error:
        raise RuntimeError("the config asked for an error")
    if cfg.nan_first and HydraConfig.get().job.num == 0:
        return math.nan
    x, y, z = float(cfg.x), float(cfg.y), float(cfg.get("z", 0.0))
    if cfg.pair:
        return [x**2 + y**2, (x - 2) ** 2 + (y - 1) ** 2]
    return x**2 + y**2 + z**2


if __name__ == "__main__":
    main()
