"""What a sweep taught: optimization history, parallel coordinates, fANOVA importance,
intermediate values (learning curves, pruned trials cut short) and a CSV of all trials.

Optuna sweeps are read from their study. Grid sweeps (Hydra's BasicSweeper) have none, so one is
rebuilt in memory from the MLflow child runs: the same plots then serve both.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

log = logging.getLogger(__name__)

# Params that say how a run was tracked or are derived, not hyperparameters.
_NOT_HYPERPARAMS = ("tracking.", "search.", "hydra.", "resume_from", "data.path")


def varying_params(runs: list[Any]) -> list[str]:
    """Param keys whose value differs between runs: the swept hyperparameters, each once
    (`optimizer.lr` repeats `lr`; `optimizer._target_` repeats `choice.optimizer`)."""
    keys = sorted({k for r in runs for k in r.data.params}, key=lambda k: (k.count("."), k))
    seen: set[tuple] = set()
    out = []
    for key in keys:
        if key.startswith(_NOT_HYPERPARAMS) or key.endswith(("._target_", "._partial_")):
            continue
        column = tuple(r.data.params.get(key) for r in runs)
        if len(set(column)) > 1 and column not in seen:
            seen.add(column)
            out.append(key)
    return sorted(out)


def _number(text: str | None) -> Any:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() and "." not in str(text) else value


def _distribution(values: list[Any]) -> Any:
    """Numbers as a numeric range (log-scaled when they span two decades or more), so that
    plots order them and fANOVA splits them; anything else as categories."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        log_scale = low > 0 and high / low >= 100
        if all(isinstance(v, int) for v in values):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(low, high, log=log_scale)
    return CategoricalDistribution(sorted(set(values), key=str))


def study_from_runs(client: Any, runs: list[Any], metric: str, mode: str) -> optuna.Study:
    """An in-memory study with one trial per finished run: params that vary across the runs,
    the run's `metric` as value and the per-epoch monitored metric as intermediate values."""
    keys = varying_params(runs)
    values = {k: [_number(r.data.params.get(k)) for r in runs] for k in keys}
    distributions = {k: _distribution(v) for k, v in values.items()}
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory"
    try:
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    finally:
        optuna.logging.set_verbosity(level)
    curve = metric.removeprefix("best_")
    for run in sorted(runs, key=lambda r: r.info.start_time):
        value = run.data.metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        history = client.get_metric_history(run.info.run_id, curve)
        pruned = run.data.tags.get("status_reason") == "pruned"
        study.add_trial(
            optuna.trial.create_trial(
                params={k: _number(run.data.params.get(k)) for k in keys},
                distributions=distributions,
                value=None if pruned else value,
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                intermediate_values={m.step: m.value for m in history if math.isfinite(m.value)},
                user_attrs={"mlflow_run_id": run.info.run_id},
            )
        )
    return study


def trials_table(runs: list[Any], metric: str) -> list[dict[str, Any]]:
    keys = varying_params(runs)
    rows = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        m, tags = run.data.metrics, run.data.tags
        rows.append(
            {
                "run_id": run.info.run_id,
                "trial_number": tags.get("trial_number", ""),
                "status": run.info.status,
                "status_reason": tags.get("status_reason", ""),
                metric: m.get(metric, ""),
                "best_epoch": m.get("best_epoch", ""),
                "epochs_run": m.get("epochs_run", ""),
                **{k: run.data.params.get(k, "") for k in keys},
            }
        )
    return rows


def write_report(
    study: optuna.Study,
    rows: list[dict[str, Any]],
    out_dir: Path,
    importance: dict[str, float] | None = None,
    plots: bool = True,
) -> list[Path]:
    """trials.csv and, with `plots`, PNG plots (Optuna's matplotlib plots) into out_dir; a plot
    that cannot be drawn (too few trials) is skipped with a warning. `importance` (from
    `importances`) is drawn as given, not computed again."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    csv_path = out_dir / "trials.csv"
    with csv_path.open("w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    written.append(csv_path)
    for name, figure in (figures(study, importance) if plots else {}).items():
        path = out_dir / f"{name}.png"
        try:
            written.append(_save(figure(), path))
        except Exception as e:  # noqa: BLE001 - one plot failing must not sink the report
            log.warning("Skipped the %s plot: %s", name, e)
    return written


def figures(study: optuna.Study, importance: dict[str, float] | None = None) -> dict[str, Any]:
    """The sweep's plots, each a function that draws it and returns its matplotlib Axes:
    optimization history, intermediate values (the curves a pruner cut short), parallel
    coordinates and fANOVA importances; the Pareto front for several objectives. Drawn by
    `optuna.visualization.matplotlib` (matplotlib is imported here, once per sweep)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, in a sweep or a worker
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        drawn = {"pareto_front": lambda: plots.plot_pareto_front(study, target_names=names)}
        return {name: _quiet(draw) for name, draw in drawn.items()}
    drawn = {
        "optimization_history": lambda: plots.plot_optimization_history(study),
        "intermediate_values": lambda: _without_legend(plots.plot_intermediate_values(study)),
    }
    if complete and complete[0].params:
        drawn["parallel_coordinate"] = lambda: plots.plot_parallel_coordinate(study)
    if len(importance or {}) > 1:  # one swept key has importance 1: nothing to draw
        fixed = _given(importance)
        drawn["param_importances"] = lambda: plots.plot_param_importances(study, evaluator=fixed)
    return {name: _quiet(draw) for name, draw in drawn.items()}


def _quiet(draw: Any) -> Any:
    """Optuna marks its matplotlib plots experimental, with a warning per call."""

    def drawn() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return draw()

    return drawn


def _given(values: dict[str, float]) -> Any:
    """An importance evaluator that returns importances computed already (`importances`, also
    logged as metrics), so that they are drawn as they are. Built here, not at import: Optuna's
    importance package imports scikit-learn (~1 s), which only fANOVA needs."""
    from optuna.importance import BaseImportanceEvaluator

    class Given(BaseImportanceEvaluator):
        def evaluate(self, study: optuna.Study, params: Any = None, *, target: Any = None) -> dict:
            return dict(sorted(values.items(), key=lambda kv: kv[1], reverse=True))

    return Given()


def _without_legend(ax: Any) -> Any:
    """One legend entry per trial fills the picture past a dozen trials."""
    legend = ax.get_legend()
    if legend is not None and len(legend.get_texts()) > 12:
        legend.remove()
    return ax


def _save(ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each param for the objective (empty with fewer than 2 trials)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) != 1 or len(complete) < 2 or not complete[0].params:
        return {}
    if len(complete[0].params) == 1:  # one swept key explains all there is (fANOVA: ~1 s)
        return {next(iter(complete[0].params)): 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fANOVA's and Optuna's experimental-feature warnings
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
