"""Train one configuration, or sweep many with -m. See README.md."""

import gc

import hydra
from omegaconf import DictConfig

from hypersweep.hydra_compat import main_kwargs
from hypersweep.trust import BUILTIN


# On Hydra 1.4, `instantiate()` calls only the trusted targets (hypersweep.trust).
@hydra.main(config_path="conf", config_name="config", **main_kwargs(BUILTIN))
def main(cfg: DictConfig) -> float:
    from hypersweep.job import main as run_job  # torch loads here: --help, --cfg stay quick

    return run_job(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        # Everything is written by now. Freezing the heap spares the interpreter's teardown a
        # garbage-collection pass over torch's and MLflow's millions of objects: ~1.3 s per
        # command (benchmarks/sweep_overhead.py).
        gc.freeze()
