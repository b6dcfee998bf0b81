"""Users' models that crash, stall or die for one width: drive the sweepers' and the pool
launcher's handling of failures and of trials of unequal length."""

from hypersweep.core.models import MLP


class CrashingMLP(MLP):
    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        if hidden_units == 13:
            raise RuntimeError("unlucky width 13")
        super().__init__(*args, hidden_units=hidden_units, **kwargs)


class SlowMLP(MLP):
    """The sweep's first job stalls in its first forward pass (inside the job's MLflow run),
    whatever order the sampler proposes the trials in: until jobs 1-3 have finished (each
    job's log ends on its outcome line once its MLflow run has ended), at most 60 s. A
    launcher that lets them run meanwhile passes whatever the machine's load; one that makes
    them wait for job 0 holds it the full 60 s and they end after it."""

    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        from hydra.core.hydra_config import HydraConfig

        super().__init__(*args, hidden_units=hidden_units, **kwargs)
        config = HydraConfig.get()
        self.slow = config.job.get("num", 0) == 0
        self.sweep_dir = config.sweep.dir

    def forward(self, x):
        if self.slow:
            import time
            from pathlib import Path

            self.slow = False

            def ended(job: int) -> bool:
                logs = Path(self.sweep_dir, str(job)).glob("*.log")
                return any("(best epoch" in log.read_text() for log in logs)

            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline and not all(ended(j) for j in (1, 2, 3)):
                time.sleep(0.2)
            time.sleep(0.5)
        return super().forward(x)


class DyingMLP(MLP):
    """Width 13 kills its own process in training, as the kernel's OOM killer would."""

    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        super().__init__(*args, hidden_units=hidden_units, **kwargs)
        self.dies = hidden_units == 13

    def forward(self, x):
        if self.dies:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


class PreemptedMLP(MLP):
    """Job 1 of a sweep is preempted (SIGTERM to its own process) while it sets up, as a
    scheduler's signal would land between two jobs' set-ups."""

    def __init__(self, *args, **kwargs):
        from hydra.core.hydra_config import HydraConfig

        super().__init__(*args, **kwargs)
        if HydraConfig.get().job.get("num") == 1:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
