"""The fixed costs of a tracked sweep that a hand-written Optuna loop does not pay: each timed
in a fresh Python process (what a command pays once), after the imports it needs, the median
of --repeats runs.

    python benchmarks/fixed_costs.py [--repeats 5] [--out F]

- torch, optuna: both commands pay them (the baseline's own start);
- mlflow: importing MLflow and its client;
- the store: opening an existing SQLite store (MLflow imports SQLAlchemy, alembic and its ORM
  here, and checks the schema);
- importances: `optuna.importance`, which imports scikit-learn's ensembles for fANOVA;
- plots: matplotlib (Agg) and Optuna's matplotlib plots.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _report import header, migrated_store

# name: (set-up, not timed; the statement timed)
STEPS = {
    "import torch": ("", "import torch"),
    "import optuna": ("", "import optuna"),
    "import mlflow and its client": ("", "import mlflow; from mlflow.tracking import MlflowClient"),
    "open an existing SQLite store": (
        "from mlflow.tracking import MlflowClient",
        "MlflowClient(URI).search_experiments()",
    ),
    "import optuna.importance (scikit-learn)": ("import optuna", "import optuna.importance"),
    "import matplotlib and Optuna's plots": (
        "import optuna",
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot; "
        "from optuna.visualization import matplotlib as plots",
    ),
}

PROGRAM = """
import time
URI = {uri!r}
{setup}
started = time.perf_counter()
{timed}
print(time.perf_counter() - started)
"""


def once(setup: str, timed: str, uri: str) -> float:
    code = PROGRAM.format(uri=uri, setup=setup, timed=timed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    with migrated_store() as store:  # only read: no copy needed
        uri = f"sqlite:///{store}"
        for name, (setup, timed) in STEPS.items():
            times = [once(setup, timed, uri) for _ in range(args.repeats)]
            rows.append({"step": name, "median_s": statistics.median(times), "runs_s": times})
            print(f"{statistics.median(times):7.3f} s  {name}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({**header(load), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
