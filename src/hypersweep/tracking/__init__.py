"""Tracking: the MLflow store, one run per job, the ranking rule, the sweep's callback and its
analysis. `hypersweep.tracking.SweepTracking` is the name Hydra's config gives the callback."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazily: a job imports the store and its run without the callback's Hydra imports.
    if name == "SweepTracking":
        from hypersweep.tracking.callback import SweepTracking

        return SweepTracking
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
