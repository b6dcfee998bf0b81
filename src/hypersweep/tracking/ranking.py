"""The ranking rule shared by `hypersweep best`, the sweep's summary and the sweeper's best
checkpoint: the selection metric, then the validation loss at the best epoch."""

from __future__ import annotations

import math
from typing import Any

from hypersweep.tracking.store import PARENT_TAG, mlflow_client


def selection_key(metrics: dict[str, float], metric: str, mode: str) -> tuple[float, float]:
    """Sort key, best first: the metric, then the validation loss at the best epoch. Accuracy
    on a validation split of a few hundred rows moves in steps of one row, so ties are common;
    the loss of the same predictions tells them apart."""
    value = metrics[metric] if mode == "min" else -metrics[metric]
    return value, tie_break(metrics)


def tie_break(metrics: dict[str, float]) -> float:
    """What decides between runs tied on the selection metric: the lower validation loss."""
    return metrics.get("best_val_loss", math.inf)


def ranked_runs(runs: list[Any], metric: str, mode: str) -> list[Any]:
    """The runs that have a finite `metric` and a model to select, best first (selection_key):
    not pruned, and not a cross-validation whose refit on train+val diverged or was skipped."""
    scored = [
        r
        for r in runs
        if math.isfinite(r.data.metrics.get(metric, math.nan))
        and r.data.tags.get("status_reason") != "pruned"
        and r.data.tags.get("refit") not in ("diverged", "skipped")
    ]
    return sorted(scored, key=lambda r: selection_key(r.data.metrics, metric, mode))


def finished_children(
    client: Any, experiment_id: str, parent_run_id: str, where: str = ""
) -> list[Any]:
    """The finished job runs of the sweep `parent_run_id`, narrowed by the MLflow filter
    `where` if given."""
    filter_string = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" + (f" and {where}" if where else "")
    runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=50000)
    return [r for r in runs if r.info.status == "FINISHED"]


def outranking_run(
    uri: str,
    experiment_id: str,
    parent_run_id: str,
    metrics: dict[str, float],
    metric: str,
    mode: str,
) -> str | None:
    """The id of a finished run of the sweep `parent_run_id` that has a model and ranks strictly
    above `metrics` as `hypersweep best` ranks (selection_key), or None. Runs still running do
    not count: two jobs finishing together both stay candidates. Only runs at least as good on
    `metric` are fetched (the store filters them: fetching a 100-run sweep took ~0.4 s)."""
    at_least = ">=" if mode == "max" else "<="
    finished = finished_children(
        mlflow_client(uri),
        experiment_id,
        parent_run_id,
        f"metrics.`{metric}` {at_least} {float(metrics[metric])!r}",
    )
    ranked = ranked_runs(finished, metric, mode)
    mine = selection_key(metrics, metric, mode)
    if ranked and selection_key(ranked[0].data.metrics, metric, mode) < mine:
        return ranked[0].info.run_id
    return None
