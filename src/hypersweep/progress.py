"""Per-epoch progress on an interactive terminal; silent when stderr is not a TTY."""

from __future__ import annotations

import math
import sys
from typing import TextIO


class Progress:
    def __init__(self, max_epochs: int, monitor: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.max_epochs, self.monitor = max_epochs, monitor
        self.best = math.nan

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        value = metrics.get(self.monitor, math.nan)
        better = max if self.monitor.endswith("_acc") else min
        self.best = value if math.isnan(self.best) else better(self.best, value)
        shown = "  ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("lr", "epoch_seconds")
        )
        self.stream.write(
            f"\r\033[Kepoch {epoch}/{self.max_epochs}  {shown}  lr {metrics['lr']:.3g}  "
            f"best {self.monitor} {self.best:.4g}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
