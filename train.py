"""Train one configuration, or sweep many with -m. See README.md."""

import hydra
from omegaconf import DictConfig

from hypersweep.job import main as run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)


if __name__ == "__main__":
    main()
