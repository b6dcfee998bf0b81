"""Select the best run on validation, test it once, register it as the champion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from hypersweep import trust
from hypersweep.config import metric_mode, objective_metric
from hypersweep.core.data import Splits, load
from hypersweep.core.fit import evaluate
from hypersweep.errors import SelectionError
from hypersweep.tracking.analysis import varying_params
from hypersweep.tracking.ranking import ranked_runs
from hypersweep.tracking.runs import load_run_checkpoint
from hypersweep.tracking.store import mlflow_client

CHAMPION = "champion"
log = logging.getLogger(__name__)
# What a run is ranked by: its score at the best epoch on validation rows.
VALIDATION_METRICS = ("best_val_loss", "best_val_acc", "best_val_rmse")


@dataclass
class Ranking:
    metric: str
    mode: str
    runs: list[Any]  # best first
    columns: list[str]  # the params that vary between the runs


def find_sweep(client: Any, sweep: str | None) -> Any:
    """The parent run of a sweep (by run id or sweep dir); the latest sweep when `sweep` is
    None (None: the store has no sweep)."""
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.sweep = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=5000 if sweep else 1,
    )
    if not sweep:
        return parents[0] if parents else None
    match = [
        p
        for p in parents
        if sweep in (p.info.run_id, p.data.tags.get("sweep_dir"))
        or p.data.tags.get("sweep_dir", "").endswith(str(sweep).rstrip("/"))
    ]
    if not match:
        raise SelectionError(f"--sweep {sweep}: no sweep run has that id or sweep dir")
    return match[0]


def find_runs(client: Any, experiment: str | None, sweep: str | None) -> list[Any]:
    """Finished job runs of a sweep (parent run id or sweep dir), an experiment (name), or by
    default the most recent sweep in the store."""
    if sweep:
        parent = find_sweep(client, sweep)
        exp_ids = [parent.info.experiment_id]
        filt = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    else:
        if experiment:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = ", ".join(e.name for e in client.search_experiments())
                raise SelectionError(f"--experiment {experiment!r} does not exist: have {names}")
            exp_ids = [found.experiment_id]
        else:
            latest = find_sweep(client, None)
            if latest is None:
                raise SelectionError("no sweep in this store: pass --experiment NAME")
            exp_ids = [latest.info.experiment_id]
        filt = ""  # MLflow's != skips runs without the tag: parents are dropped below
    runs = client.search_runs(exp_ids, filter_string=filt, max_results=50000)
    return [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("sweep") != "true"]


def rank(runs: list[Any], metric: str | None = None) -> Ranking:
    if not runs:
        raise SelectionError("no finished runs to rank")
    if metric is None:
        monitors = {r.data.params.get("trainer.early_stopping.monitor") for r in runs} - {None}
        objectives = {f"best_{objective_metric(m)}" for m in monitors}
        if len(objectives) != 1:
            raise SelectionError(
                f"runs are scored by different metrics {sorted(objectives)}: pass --metric"
            )
        metric = objectives.pop()
    if metric not in VALIDATION_METRICS:
        raise SelectionError(
            f"--metric {metric}: select on a validation metric (on the folds' mean under "
            f"cross-validation), never on training or test: expected one of "
            f"{', '.join(VALIDATION_METRICS)}"
        )
    mode = metric_mode(metric)
    scored = ranked_runs(runs, metric, mode)
    if not scored:
        raise SelectionError(f"no run has the metric {metric!r}")
    return Ranking(metric, mode, scored, varying_params(runs))


def table(ranking: Ranking, top: int) -> str:
    head = ["run", *ranking.columns, ranking.metric, "epochs", "status_reason"]
    rows = [
        [
            r.info.run_id[:12],
            *(r.data.params.get(c, "") for c in ranking.columns),
            f"{r.data.metrics[ranking.metric]:.4f}",
            str(int(r.data.metrics.get("epochs_run", 0))),
            r.data.tags.get("status_reason", ""),
        ]
        for r in ranking.runs[:top]
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
        for row in [head, *rows]
    )


def rebuild_model(
    checkpoint: dict[str, Any], trusted: tuple[str, ...] = trust.BUILTIN
) -> tuple[torch.nn.Module, Splits]:
    """The checkpoint's model with its best weights, and its data split (on CPU). A config read
    back from the store names only `trusted` targets (the built-ins and `--trust` modules)."""
    cfg = OmegaConf.create(checkpoint["config"])
    try:
        trust.check(cfg, trusted, hint=", or pass --trust MODULE")
    except trust.ConfigError as e:
        raise SelectionError(str(e)) from None
    data = load(cfg.data)
    model = trust.instantiate(
        cfg.model, trusted, input_shape=data.input_shape, output_size=data.output_size
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), data


def test_once(
    client: Any, tracking_uri: str, run: Any, trusted: tuple[str, ...] = trust.BUILTIN
) -> tuple[dict[str, float], bool]:
    """Evaluate a run's best checkpoint on its untouched test split and log test_*; a run that
    already has test metrics is not evaluated again. Returns (metrics, newly tested)."""
    done = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    if done:
        return done, False
    model, data = rebuild_model(load_run_checkpoint(tracking_uri, run.info.run_id), trusted)
    result = evaluate(model, data.x_test, data.y_test, data.task, data.y_scale)
    metrics = {f"test_{k}": float(v) for k, v in result.items()}
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    return metrics, True


def register(
    tracking_uri: str, run: Any, name: str, trusted: tuple[str, ...] = trust.BUILTIN
) -> int:
    """Log the run's best model as an MLflow PyTorch model (signature, input example) and
    register it under `name` with the alias `champion`. Returns the model version.

    The format is `pt2` (torch.export, the batch dimension dynamic): a graph and its weights,
    no pickle, so that serving it needs torch and MLflow only, not hypersweep nor the model's
    own code. A model torch.export cannot trace is logged pickled instead (loading it then
    needs its class importable), with a warning and the tag `model_format=pickle`."""
    import mlflow
    from mlflow.models import infer_signature

    model, data = rebuild_model(load_run_checkpoint(tracking_uri, run.info.run_id), trusted)
    model.eval()
    example = data.x_test[:5].numpy().astype(np.float32)  # > 1 row: the batch stays dynamic
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking_uri)
    signature = infer_signature(example, output)

    def log_model(fmt: str) -> Any:
        return mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format=fmt,
            pip_requirements=_requirements(REQUIREMENTS[fmt]),
        )

    with mlflow.start_run(run_id=run.info.run_id):
        fmt = "pt2"
        try:
            info = log_model(fmt)
        except Exception as e:  # noqa: BLE001 - torch.export's errors are many kinds
            log.warning(
                "torch.export cannot export %s (%s): registered pickled instead, which needs "
                "its class importable to load",
                type(model).__name__,
                " ".join(str(e).split())[:200],
            )
            fmt = "pickle"
            info = log_model(fmt)
    version = mlflow.register_model(info.model_uri, name)
    client = mlflow_client(tracking_uri)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_tag(run.info.run_id, "registered_model", f"{name}/{version.version}")
    client.set_tag(run.info.run_id, "model_format", fmt)
    return int(version.version)


# What the logged model needs to load, read from the installed versions (MLflow's inference
# runs a subprocess that imports the model again, ~4 s): the pt2 graph needs torch and MLflow
# only; a pickled model its own code (hypersweep's, or the user's) too.
REQUIREMENTS = {
    "pt2": ("mlflow", "numpy", "pandas", "torch"),
    "pickle": ("mlflow", "cloudpickle", "hypersweep", "numpy", "pandas", "torch"),
}


def _requirements(packages: tuple[str, ...]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in packages:
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return found


def default_model_name(run: Any) -> str:
    model = run.data.params.get("model._target_", "model").rsplit(".", 1)[-1].lower()
    return f"{run.data.params.get('data.name', 'data')}-{model}"
