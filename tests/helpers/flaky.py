"""Users' models that crash, stall or die for one width: drive the sweepers' and the pool
launcher's handling of failures and of trials of unequal length."""

from hypersweep.models import MLP


class CrashingMLP(MLP):
    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        if hidden_units == 13:
            raise RuntimeError("unlucky width 13")
        super().__init__(*args, hidden_units=hidden_units, **kwargs)


class SlowMLP(MLP):
    """The sweep's first job spends 12 s in its first forward pass (inside the job's MLflow run),
    whatever order the sampler proposes the trials in."""

    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        from hydra.core.hydra_config import HydraConfig

        super().__init__(*args, hidden_units=hidden_units, **kwargs)
        self.slow = HydraConfig.get().job.get("num", 0) == 0

    def forward(self, x):
        if self.slow:
            import time

            self.slow = False
            time.sleep(12.0)
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
