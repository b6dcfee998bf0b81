"""What a sweep taught: optimization history, parallel coordinates, fANOVA importance,
intermediate values (learning curves, pruned trials cut short) and a CSV of all trials.

Optuna sweeps are read from their study. Grid sweeps (Hydra's BasicSweeper) have none, so one is
rebuilt in memory from the MLflow child runs: the same plots then serve both.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hypersweep.tracking import svg

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
) -> list[Path]:
    """SVG plots and trials.csv into out_dir; plots that need more trials are skipped.
    `importance` (from `importances`) is drawn as given, not computed again."""
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

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        plots = {"pareto_front": lambda path: _pareto_plot(study, complete, path)}
    else:
        plots = {
            "optimization_history": lambda path: _history_plot(study, complete, path),
            "intermediate_values": lambda path: _intermediate_plot(study, path),
        }
        if complete and complete[0].params:
            plots["parallel_coordinate"] = lambda path: _parallel_plot(complete, path)
    if importance:
        plots["param_importances"] = lambda path: svg.write(
            path,
            [
                svg.Panel(
                    title="Hyperparameter importance",
                    xlabel="fANOVA importance for the objective",
                    bars=list(importance.items()),
                )
            ],
            height=max(200, 80 + 30 * len(importance)),
        )
    for name, draw in plots.items():
        path = out_dir / f"{name}.svg"
        try:
            written.append(draw(path))
        except Exception as e:  # noqa: BLE001 - one plot failing must not sink the report
            log.warning("Skipped the %s plot: %s", name, e)
    return written


def _history_plot(study: optuna.Study, complete: list[Any], path: Path) -> Path:
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = list(itertools.accumulate(values, better))
    panel = svg.Panel(
        title="Optimization history",
        xlabel="trial",
        ylabel="objective",
        integer_x=True,
        series=[
            svg.Series("objective", numbers, values, svg.PALETTE[0], markers=True),
            svg.Series("best so far", numbers, best, svg.PALETTE[3]),
        ],
    )
    return svg.write(path, [panel], height=420)


def _intermediate_plot(study: optuna.Study, path: Path) -> Path:
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        raise ValueError("no trial reported intermediate values")
    series = [
        svg.Series(
            f"trial {t.number}",
            list(t.intermediate_values),
            list(t.intermediate_values.values()),
            # pruned trials grey: the curves Hyperband/ASHA cut short
            "#bbbbbb" if t.state == TrialState.PRUNED else svg.PALETTE[t.number % 7],
            width=1.0,
            in_legend=False,
        )
        for t in trials
    ]
    panel = svg.Panel(
        title="Intermediate values (pruned trials in grey)",
        xlabel="epoch",
        ylabel="monitored metric",
        integer_x=True,
        series=series,
    )
    return svg.write(path, [panel], height=420)


def _parallel_plot(complete: list[Any], path: Path) -> Path:
    columns = []
    for name, dist in complete[0].distributions.items():
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            columns.append((name, [float(dist.choices.index(v)) for v in raw], labels))
        else:
            log_scale = getattr(dist, "log", False)
            values = [math.log10(v) if log_scale else float(v) for v in raw]
            columns.append((f"log10 {name}" if log_scale else name, values, None))
    return svg.parallel(path, columns, ("objective", [t.value for t in complete]))


def _pareto_plot(study: optuna.Study, complete: list[Any], path: Path) -> Path:
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    front = {t.number for t in study.best_trials}
    groups = {"trials": [t for t in complete if t.number not in front]}
    groups["Pareto front"] = [t for t in complete if t.number in front]
    series = [
        svg.Series(
            label,
            [t.values[0] for t in trials],
            [t.values[1] for t in trials],
            svg.PALETTE[3] if label == "Pareto front" else svg.PALETTE[0],
            markers=True,
        )
        for label, trials in groups.items()
    ]
    panel = svg.Panel(title="Pareto front", xlabel=names[0], ylabel=names[1], series=series)
    return svg.write(path, [panel], height=420)


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each param for the objective (empty with fewer than 2 trials)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) != 1 or len(complete) < 2 or not complete[0].params:
        return {}
    if len(complete[0].params) == 1:  # one swept key explains all there is (fANOVA: ~1 s)
        return {next(iter(complete[0].params)): 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
