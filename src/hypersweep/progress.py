"""Progress bars (tqdm) on an interactive terminal: one per job (its epochs, the metrics of the
last one, the best so far) and one per `hypersweep` sweep (trials done of n_trials, the best
value so far). Nothing is drawn, and tqdm is not even imported, when stderr is not a terminal
(a log file, CI, a pipe) or in a pool worker, whose bars would garble the sweep's terminal."""

from __future__ import annotations

import math
import multiprocessing
import sys
from typing import Any, TextIO


def _terminal(stream: TextIO) -> bool:
    return stream.isatty() and multiprocessing.parent_process() is None


def _bar(stream: TextIO, **kwargs: Any) -> Any:
    if not _terminal(stream):
        return None
    from tqdm import tqdm

    return tqdm(file=stream, dynamic_ncols=True, **kwargs)


class Progress:
    """A job's epochs. `leave=False` in a sweep: the bar goes once the job ends, and the
    sweep's own bar stays."""

    def __init__(
        self, max_epochs: int, monitor: str, stream: TextIO | None = None, leave: bool = True
    ) -> None:
        self.monitor = monitor
        self.best = math.nan
        stream = stream or sys.stderr
        self.bar = _bar(stream, total=max_epochs, desc="epoch", unit="ep", leave=leave)

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        value = metrics.get(self.monitor, math.nan)
        better = max if self.monitor.endswith("_acc") else min
        self.best = value if math.isnan(self.best) else better(self.best, value)
        shown = "  ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("lr", "epoch_seconds")
        )
        self.bar.set_postfix_str(
            f"{shown}  lr {metrics['lr']:.3g}  best {self.monitor} {self.best:.4g}", refresh=False
        )
        self.bar.update(epoch - self.bar.n)  # a continued run starts past epoch 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SweepProgress:
    """A study's trials: those counted toward n_trials (other commands' on the same study
    too), and its best value or the size of its Pareto front."""

    def __init__(self, total: int, done: int, stream: TextIO | None = None) -> None:
        self.bar = _bar(
            stream or sys.stderr, total=total, initial=done, desc="trials", unit="trial"
        )

    def told(self, done: int, study: Any) -> None:
        if self.bar is None:
            return
        if len(study.directions) > 1:
            best = f"Pareto front {len(study.best_trials)}"
        else:
            try:
                best = f"best {study.best_value:.4g} (trial {study.best_trial.number})"
            except ValueError:  # no trial completed yet
                best = "best -"
        self.bar.set_postfix_str(best, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
