"""A pool launcher that breaks as job 2 is submitted: a worker died in the instant between one
trial's end and the next trial's start, which a real death hits only by chance. (Hydra takes
launchers from the hydra_plugins namespace only.)"""

from concurrent.futures.process import BrokenProcessPool

from hydra_plugins.hypersweep_sweeper.pool import PoolLauncher


class PoolThatBreaks(PoolLauncher):
    def submit(self, overrides, job_idx):
        if job_idx >= 2:
            raise BrokenProcessPool("A child process terminated abruptly")
        return super().submit(overrides, job_idx)
