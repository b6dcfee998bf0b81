"""A user's model with one fault per width, injected in its fourth training batch: 13 raises,
14 hangs, 15 outputs NaN, 16 kills its process (the first time only, as an out-of-memory kill
that a rerun need not meet: a file in $FAULTS_DIR remembers it)."""

import os
import signal
import time
from pathlib import Path

from hypersweep.core.models import MLP

FAULTS = {13: "raise", 14: "hang", 15: "nan", 16: "kill"}


class FaultyMLP(MLP):
    def __init__(self, *args, hidden_units: int = 64, **kwargs):
        super().__init__(*args, hidden_units=hidden_units, **kwargs)
        self.fault = FAULTS.get(hidden_units)
        self.batches = 0

    def forward(self, x):
        if self.training:
            self.batches += 1
        if self.fault and self.batches == 4:
            if self.fault == "raise":
                raise RuntimeError("injected fault")
            if self.fault == "hang":
                time.sleep(3600)
            if self.fault == "kill":
                marker = Path(os.environ["FAULTS_DIR"], "killed")
                if not marker.exists():
                    marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)
        out = super().forward(x)
        return out * float("nan") if self.fault == "nan" and self.batches >= 4 else out
