"""What every benchmark result file starts with: when, where and how it was measured."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path


def header(load_average_before: float) -> dict:
    """The date, the machine, the load before the run, and the command as it was typed."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": load_average_before,
        "command": f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
    }
