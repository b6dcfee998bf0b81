"""The hypersweep sweeper driven through train.py -m, read back from Optuna and MLflow."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hypersweep.search.pruning import open_storage
from hypersweep.tracking.analysis import figures

from conftest import ROOT, hypersweep, kill_train_when, train

pytestmark = pytest.mark.slow

# A small, fast search on iris (120 training rows).
TINY = [
    "data=iris",
    "model.hidden_units=8",
    "trainer.max_epochs=3",
    "hydra.sweeper.n_jobs=1",
    "hydra.sweeper.study_name=s",
]
SPACE = ["lr=tag(log, interval(1e-3, 1e-1))", "model.depth=int(interval(1, 2))"]
# Trials that train for seconds, long enough to be killed or interrupted mid-training.
LONG_TRIALS = [
    "trainer.max_epochs=400",
    "trainer.early_stopping.patience=1000",
    "trainer.batch_size=8",
]


def sweep(tmp_path: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    result = train(["-m", *TINY, *args], cwd=tmp_path, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    return result


def load(tmp_path: Path, name: str = "s") -> optuna.Study:
    storage = open_storage(str(tmp_path / "multirun" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def trials_so_far(tmp_path: Path, name: str = "s") -> list:
    """The study's trials while a sweep is starting: none before its journal holds the study."""
    if not (tmp_path / "multirun" / "optuna.journal").exists():
        return []
    try:
        return load(tmp_path, name).trials
    except KeyError:  # the journal file exists, the study's first record is not written yet
        return []


def child_runs(client):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if r.data.tags.get("sweep") != "true"]


def by_number(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    (trial,) = [t for t in study.trials if t.number == number]
    return trial


def results_file(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "multirun").glob("*/*/optimization_results.yaml")
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc", "grid"])
def test_each_sampler_runs_a_sweep(sampler, tmp_path, store, mlflow_client):
    space = SPACE if sampler != "grid" else ["lr=choice(0.01, 0.1)", "model.depth=range(1, 3)"]
    result = sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.n_trials=4",
        *space,
    )
    study = load(tmp_path)
    expected_class = {
        "cmaes": "CmaEsSampler",
        "qmc": "QMCSampler",
        "gp": "GPSampler",
        "grid": "GridSampler",
        "tpe": "TPESampler",
        "random": "RandomSampler",
    }[sampler]
    assert f"sampler {expected_class}" in result.stdout + result.stderr
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    runs = child_runs(mlflow_client)
    assert len(runs) == 4 and {r.data.tags["study_name"] for r in runs} == {"s"}
    # Every run received the values its trial sampled.
    by_trial = {int(r.data.tags["trial_number"]): r for r in runs}
    for t in trials:
        assert float(by_trial[t.number].data.params["lr"]) == pytest.approx(t.params["lr"])
        assert by_trial[t.number].data.metrics["best_val_loss"] == pytest.approx(t.value)
    if sampler == "grid":
        assert {(t.params["lr"], t.params["model.depth"]) for t in trials} == {
            (0.01, 1),
            (0.01, 2),
            (0.1, 1),
            (0.1, 2),
        }
    best = results_file(tmp_path)
    assert best["best_value"] == min(t.value for t in trials)
    assert best["best_params"] == by_number(study, best["best_trial"]).params
    # two swept keys: their importances are drawn, a bar each
    (plot,) = (tmp_path / "multirun").glob("*/*/analysis/param_importances.png")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    axes = figures(study, {"lr": 0.7, "model.depth": 0.3})["param_importances"]()
    assert len(axes.patches) == 2


def test_one_minus_log_momentum_is_visible_in_the_job_params(tmp_path, store, mlflow_client):
    sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.n_trials=3",
        "optimizer=momentum",
        "momentum=tag(one_minus_log, interval(0.9, 0.999))",
    )
    for run in child_runs(mlflow_client):
        params = run.data.params
        beta = float(params["momentum"])
        assert 0.9 <= beta <= 0.999
        assert params["optimizer.momentum"] == params["momentum"]
        assert params["search.momentum.scale"] == "one_minus_log"
        assert float(params["search.momentum.sampled"]) == pytest.approx(1 - beta)


def _assert_pruned_runs_stopped_early(client, max_epochs: int) -> int:
    pruned = [r for r in child_runs(client) if r.data.tags["status_reason"] == "pruned"]
    for run in pruned:
        epochs = run.data.metrics["epochs_run"]
        assert epochs < max_epochs
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == epochs
        assert run.info.status == "FINISHED"
    return len(pruned)


PRUNING = [
    "data=digits",
    "trainer.max_epochs=12",
    "trainer.early_stopping.patience=50",
    "hydra/sweeper=hypersweep",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=1",
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.sampler.seed=0",
    "lr=tag(log, interval(1e-5, 1e-1))",
    "hydra.sweeper.n_trials=8",
]


def test_pruning_stops_bad_trials_early(tmp_path, store, mlflow_client):
    sweep(tmp_path, *PRUNING)
    study = load(tmp_path)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "the median pruner stopped no trial"
    assert _assert_pruned_runs_stopped_early(mlflow_client, 12) == len(pruned)
    assert len(study.trials) == 8


@pytest.mark.parametrize("launcher", ["joblib", "hypersweep_pool"])
def test_pruning_works_with_jobs_in_other_processes(tmp_path, store, mlflow_client, launcher):
    sweep(
        tmp_path,
        *PRUNING,
        f"hydra/launcher={launcher}",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "trainer.num_threads=1",
    )
    study = load(tmp_path)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, f"no trial was pruned by jobs in {launcher} workers"
    assert _assert_pruned_runs_stopped_early(mlflow_client, 12) == len(pruned)
    # The jobs ran in other processes and still joined the sweep's parent run.
    runs = child_runs(mlflow_client)
    assert len(runs) == 8 and len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


def test_a_raising_job_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, store, mlflow_client):
    env = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "model._target_=flaky.CrashingMLP",
        "hypersweep.trusted_targets=[flaky]",
        "model.hidden_units=choice(8, 13, 16)",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.n_trials=3",
        env=env,
    )
    study = load(tmp_path)
    states = {t.params["model.hidden_units"]: t.state for t in study.trials}
    assert states == {8: TrialState.COMPLETE, 13: TrialState.FAIL, 16: TrialState.COMPLETE}
    assert results_file(tmp_path)["trials"] == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1}


def test_too_many_failures_stop_the_sweep_with_a_clear_message(tmp_path, store):
    env = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    result = sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "model._target_=flaky.CrashingMLP",
        "hypersweep.trusted_targets=[flaky]",
        "model.hidden_units=choice(13, 8, 16)",
        "hydra.sweeper.n_trials=3",
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert (
        "hypersweep: sweep stopped: 1 of 3 trials failed, more than "
        "hydra.sweeper.max_failure_rate=0.0 allows"
    ) in result.stderr
    assert "unlucky width 13" in result.stderr
    states = [t.state for t in sorted(load(tmp_path).trials, key=lambda t: t.number)]
    assert states.count(TrialState.FAIL) == 1 and states[-1] == TrialState.FAIL  # stopped at once


@pytest.mark.parametrize(
    "bad,message",
    [
        ("hydra.sweeper.direction=up", "hydra.sweeper.direction='up' is not allowed"),
        (
            "lr=tag(log, interval(0, 1))",
            "lr=tag(log, interval(0, 1)): a log scale needs bounds > 0",
        ),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is not allowed"),
        (
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.direction='maximize' contradicts "
            "trainer.early_stopping.monitor='val_loss' (the job returns best_val_loss): "
            "expected minimize",
        ),
        (
            "+hydra.sweeper.conditions.momentum={optimizer:[adam]}",
            "hydra.sweeper.conditions.momentum: momentum is not searched",
        ),
        (
            "+hydra.sweeper.conditions.lr=adam",
            "hydra.sweeper.conditions.lr='adam' is not allowed: expected {other_key: [values",
        ),
        # Nothing listens on port 1; the password stays out of the message.
        (
            "hydra.sweeper.storage='postgresql://hs:secret@127.0.0.1:1/optuna'",
            "hydra.sweeper.storage='postgresql://hs:***@127.0.0.1:1/optuna' cannot be opened",
        ),
        (
            "hydra.sweeper.storage='nodb://h/x'",
            "hydra.sweeper.storage='nodb://h/x' cannot be opened",
        ),
    ],
)
def test_bad_sweeper_input_is_one_line(bad, message, tmp_path, store):
    result = sweep(tmp_path, "hydra/sweeper=hypersweep", bad, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "hypersweep: error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "secret" not in result.stdout + result.stderr


def test_multi_objective_nsga2_writes_a_pareto_front(tmp_path, store, mlflow_client):
    sweep(
        tmp_path,
        "search=nsgaii",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=2",
        "model.hidden_units=choice(4, 32)",
        "hydra.sweeper.sampler.population_size=2",
    )
    solutions = results_file(tmp_path)["solutions"]
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(mlflow_client)}
    assert solutions
    for s in solutions:
        run = runs[s["trial"]]
        assert s["values"] == pytest.approx(
            [run.data.metrics["best_val_acc"], run.data.metrics["n_params"]]
        )
    (front,) = (tmp_path / "multirun").glob("*/*/analysis/pareto_front.png")
    assert front.read_bytes()[:4] == b"\x89PNG"
    # one dot per trial (the front in its own colour)
    axes = figures(load(tmp_path))["pareto_front"]()
    assert sum(len(c.get_offsets()) for c in axes.collections) == len(runs) == 4


def test_coarse_to_fine_narrows_numeric_intervals_to_the_best_trials(tmp_path, store):
    sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.coarse_to_fine.stages=2",
        "hydra.sweeper.coarse_to_fine.top_fraction=0.25",
        "hydra.sweeper.coarse_to_fine.margin=0.0",
        "lr=tag(log, interval(1e-5, 1.0))",
    )
    trials = sorted(load(tmp_path).trials, key=lambda t: t.number)
    assert len(trials) == 16
    coarse = sorted((t for t in trials[:8]), key=lambda t: t.value)[:2]
    low, high = min(t.params["lr"] for t in coarse), max(t.params["lr"] for t in coarse)
    assert all(low <= t.params["lr"] <= high for t in trials[8:])
    assert high / low < 1e5  # narrower than the coarse space


def test_a_config_written_for_hydra_optuna_sweeper_runs_after_renaming_the_sweeper(tmp_path, store):
    conf = tmp_path / "extra" / "official"
    conf.mkdir(parents=True)
    (conf / "study.yaml").write_text("""\
# @package _global_
defaults:
  - override /hydra/sweeper: hypersweep     # was: optuna
  - override /hydra/sweeper/sampler: tpe
hydra:
  sweeper:
    sampler:
      seed: 123
      consider_prior: true
      n_startup_trials: 2
    direction: maximize
    study_name: official
    storage: null
    n_trials: 3
    n_jobs: 1
    max_failure_rate: 0.0
    params:
      lr: tag(log, interval(0.001, 0.1))
      model.depth: range(1, 3)
      model.activation: choice(relu, elu)
      regularization.dropout: interval(0.0, 0.3)
trainer:
  early_stopping:
    monitor: val_acc
""")
    result = train(
        [
            "-m",
            "data=iris",
            "trainer.max_epochs=2",
            "model.hidden_units=8",
            f"hydra.searchpath=[file://{tmp_path / 'extra'}]",
            "+official=study",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = results_file(tmp_path)
    assert best["study_name"] == "official" and best["trials"]["COMPLETE"] == 3
    assert 0 < best["best_value"] <= 1  # maximized val_acc
    assert set(best["best_params"]) == {
        "lr",
        "model.depth",
        "model.activation",
        "regularization.dropout",
    }


def test_resume_after_a_kill_completes_exactly_n_trials(tmp_path, store, mlflow_client):
    args = [
        "-m",
        *TINY,
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.n_trials=5",
        *SPACE,
    ]

    def third_trial_training() -> bool:
        # 2 trials done and a 3rd one training (its MLflow run exists by then)
        trials = trials_so_far(tmp_path)
        return sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and any(
            t.state == TrialState.RUNNING and t.intermediate_values for t in trials
        )

    # long trials until the kill; the resumed ones (the study is named: the same) may be short
    kill_train_when(
        [*args, *LONG_TRIALS], tmp_path, third_trial_training, 240, "the sweep did not get going"
    )
    killed = load(tmp_path)
    asked_before = len(killed.trials)
    done_before = {t.number for t in killed.trials if t.state == TrialState.COMPLETE}
    running = [t.number for t in killed.trials if t.state == TrialState.RUNNING]
    assert len(running) == 1

    result = train(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    assert done_before <= {t.number for t in complete}  # kept, not re-run
    (interrupted,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert interrupted.number == running[0]
    assert interrupted.user_attrs["status_reason"] == "interrupted"
    # no lost trial: its configuration ran again, first
    (again,) = [t for t in complete if t.user_attrs.get("reruns_trial") == interrupted.number]
    assert again.params == interrupted.params and again.number == asked_before
    # MLflow: 5 finished child runs, the killed job's run closed as KILLED, none RUNNING.
    runs = child_runs(mlflow_client)
    killed_runs = [r for r in runs if r.data.tags["trial_number"] == str(running[0])]
    assert [r.info.status for r in killed_runs] == ["KILLED"]
    assert sorted(r.info.status for r in runs if r not in killed_runs) == ["FINISHED"] * 5


def test_an_sqlalchemy_url_storage_serves_jobs_in_other_processes(tmp_path, store, mlflow_client):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep(
        tmp_path,
        *PRUNING,
        f"hydra.sweeper.storage='{url}'",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "trainer.num_threads=1",
    )
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 8
    assert study.get_trials(states=(TrialState.PRUNED,)), "no trial pruned through RDB storage"
    assert not (tmp_path / "multirun" / "optuna.journal").exists()


def test_the_reported_best_trial_is_the_run_hypersweep_best_selects(tmp_path, store, mlflow_client):
    # Five initializations of one config: iris's 30 validation rows give most of them one
    # accuracy, so the best trial is a tie that the validation loss breaks; the grid's seed fixes
    # an order in which the first of the tie is not the one with the lowest loss.
    sweep(
        tmp_path,
        "data=iris",
        "trainer.max_epochs=20",
        "lr=0.1",
        "trainer.early_stopping.monitor=val_acc",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.direction=maximize",
        "trainer.seed=choice(0, 1, 2, 3, 4)",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.study_name=s",
    )
    study = load(tmp_path)
    tied = [t.number for t in study.trials if t.value == study.best_value]
    reported = results_file(tmp_path)["best_trial"]
    assert len(tied) >= 2 and reported != min(tied)  # Optuna's own pick: the first of the tie
    selected = hypersweep(["best", "--no-register"], tmp_path, store["uri"])
    assert selected.returncode == 0, selected.stderr
    runs = child_runs(mlflow_client)
    (run,) = [r for r in runs if f"best run {r.info.run_id}" in selected.stdout]
    assert int(run.data.tags["trial_number"]) == reported


@pytest.mark.parametrize(
    "monitor, data",
    [
        ("val_loss", "data=iris"),
        ("val_acc", "data=iris"),
        ("train_loss", "data=iris"),  # early stopping on it; scored and selected on val_loss
        ("val_rmse", "data=synthetic_regression"),
    ],
)
def test_the_study_the_parent_run_and_best_agree_whatever_the_monitor(
    monitor, data, tmp_path, store, mlflow_client
):
    # No direction set: it follows the monitor (maximize for val_acc). With a fixed
    # `minimize`, a val_acc sweep reported its worst trial as the best.
    sweep(
        tmp_path,
        data,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=random",
        # seeded: unseeded draws once put all three rates where four epochs of iris end on
        # the same accuracy, and a tie cannot show the direction
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=4",
        f"trainer.early_stopping.monitor={monitor}",
        "lr=tag(log, interval(1e-4, 1e-1))",
    )
    objective = "val_loss" if monitor == "train_loss" else monitor
    trials = load(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(mlflow_client)}
    values = {t.number: t.value for t in trials}
    # every trial's value is the run's validation score at its kept epoch
    for number, value in values.items():
        assert runs[number].data.metrics[f"best_{objective}"] == pytest.approx(value)
    pick = max if objective == "val_acc" else min
    best_number = results_file(tmp_path)["best_trial"]
    assert values[best_number] == pick(values.values())
    assert len(set(values.values())) > 1  # the direction decides which trial is best
    (parent,) = [
        r
        for r in mlflow_client.search_runs(
            [e.experiment_id for e in mlflow_client.search_experiments()]
        )
        if r.data.tags.get("sweep") == "true"
    ]
    assert parent.data.tags["best_run_id"] == runs[best_number].info.run_id
    assert parent.data.params["direction"] == ("maximize" if objective == "val_acc" else "minimize")
    selected = hypersweep(["best", "--no-register"], tmp_path, store["uri"])
    assert selected.returncode == 0, selected.stderr
    assert f"ranked by best_{objective}" in selected.stdout
    assert f"best run {runs[best_number].info.run_id}" in selected.stdout
    # ranking on anything but a validation score is refused, in one line
    refused = hypersweep(["best", "--metric", "best_train_loss"], tmp_path, store["uri"])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "hypersweep: error: --metric best_train_loss: select on a validation metric (on the "
        "folds' mean under cross-validation), never on training or test: expected one of "
        "best_val_loss, best_val_acc, best_val_rmse"
    ]


def test_momentum_is_searched_only_for_the_optimizers_that_use_it(tmp_path, store, mlflow_client):
    sweep(
        tmp_path,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.seed=0",
        "trainer.max_epochs=1",
        "optimizer=choice(rmsprop, sgd, momentum, adam)",
        "momentum=tag(one_minus_log, interval(0.8, 0.999))",
        "+hydra.sweeper.conditions.momentum={optimizer:[momentum,adam]}",
    )
    trials = load(tmp_path).trials
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(mlflow_client)}
    used = {"momentum", "adam"}
    chosen = {t.params["optimizer"] for t in trials}
    assert chosen & used and chosen - used, chosen
    for t in trials:
        uses = t.params["optimizer"] in used
        assert ("1-momentum" in t.params) == uses, t.params
        params = runs[t.number].data.params
        # the run logs the β it used, and no β where its optimizer has none
        assert ("momentum" in params) == uses
        assert ("search.momentum.scale" in params) == uses
        if uses:
            assert float(params["momentum"]) == pytest.approx(1 - t.params["1-momentum"])
