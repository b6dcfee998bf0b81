"""The MLflow UI's runs table for a sweep, as a shared view: which columns, in which order,
sorted on what.

The MLflow UI (3.x) opens an experiment on its runs table in model-training mode with
`?workflowType=machine_learning`, and shows a saved table layout with `&viewStateShareKey=KEY`,
where the experiment's tag `mlflow.sharedViewState.KEY` holds the layout as JSON (what the UI's
own *Share* button stores). A fresh browser would otherwise show no metric or param column at
all. The layout: the sweep's objective first (sorted, best on top), the other validation
summaries, `epochs_run`, the swept params (a config group's choice as `choice.<group>`) and the
`status_reason` tag; the sweep's parent run expanded to show its jobs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from hypersweep.tracking.store import PARENT_TAG

SHARED_VIEW_TAG = "mlflow.sharedViewState."


def column(kind: str, key: str) -> str:
    """The UI's name for a column: `metrics.`best_val_loss``, `params.`lr``."""
    return f"{kind}.`{key}`"


def sweep_view(client: Any, parent: Any) -> dict[str, Any]:
    """The runs-table layout for the sweep whose parent run is `parent`."""
    from hypersweep.config import metric_mode, objective_metric

    params = parent.data.params
    objective = f"best_{objective_metric(params.get('monitor', 'val_loss'))}"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        max_results=1,
    )
    child_params = children[0].data.params if children else {}
    child_metrics = children[0].data.metrics if children else {}
    metrics = [objective] + [
        m
        for m in ("best_val_loss", "best_val_acc", "best_val_rmse", "epochs_run")
        if m != objective and m in child_metrics
    ]
    swept = []
    for key in (k.removeprefix("space.") for k in params if k.startswith("space.")):
        if f"choice.{key}" in child_params:  # a config group: which option each run composed
            swept.append(f"choice.{key}")
        elif key in child_params:
            swept.append(key)
    return {
        "selectedColumns": [
            *(column("metrics", m) for m in metrics),
            *(column("params", p) for p in swept),
            column("tags", "status_reason"),
        ],
        "orderByKey": column("metrics", objective),
        "orderByAsc": metric_mode(objective) == "min",
        "runsExpanded": {parent.info.run_id: True},
    }


def share(client: Any, parent: Any) -> str:
    """Store the sweep's layout on its experiment; returns the UI path (after `#`) that opens
    it."""
    key = f"hypersweep-{parent.info.run_id}"
    view = sweep_view(client, parent)
    client.set_experiment_tag(parent.info.experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
    return f"{experiment_path(parent.info.experiment_id)}&{urlencode({'viewStateShareKey': key})}"


def experiment_path(experiment_id: str) -> str:
    """The UI path of an experiment's runs table in model-training mode (no sweep to lay out)."""
    return f"/experiments/{experiment_id}/runs?workflowType=machine_learning"
