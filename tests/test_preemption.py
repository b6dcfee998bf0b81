"""Preemption: a fit stopped between two mini-batches continues from its saved state as if it
had never stopped; SIGTERM and Ctrl-C to a run, a sweep and the pool save that state, end the
runs KILLED with status_reason=preempted, and the same command continues."""

from __future__ import annotations

import io
import shutil
import signal
from pathlib import Path

import pytest
import torch

from hypersweep.build import members as build_members
from hypersweep.core import data as data_module
from hypersweep.core.fit import Interrupted, fit_members

from conftest import TINY, compose_cfg, fit_options, kill_train_when, train

SERIES = ("train_loss", "val_loss", "val_acc", "lr")


def _fit(cfg, **kw):
    if cfg.data.get("cv_folds"):
        datasets = data_module.load_folds(cfg.data)
    else:
        datasets = [data_module.load(cfg.data)]
    members = build_members(cfg, datasets, None)
    result = fit_members(members, **fit_options(cfg), **kw)
    return members, result


def _after(calls: int):
    """An `interrupted` that says stop on its `calls`-th poll (one poll per mini-batch)."""
    polls = iter(range(calls, 0, -1))
    return lambda: next(polls, 0) == 1


def _saved(state):
    """Through a file, as a checkpoint goes: torch.save, then a weights_only load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "overrides,stop_at,epoch",
    [
        # digits: 1,257 training rows, 10 batches of 128 per epoch.
        # Dropout (the global RNG), momentum, a step schedule; stopped in epoch 2's 7th batch.
        (
            [
                "regularization=dropout",
                "optimizer=momentum",
                "scheduler=piecewise",
                "scheduler.milestones=[2]",
            ],
            17,
            2,
        ),
        # Adam's state, a plateau schedule, early stopping's counters; at epoch 3's start.
        (["scheduler=plateau", "scheduler.patience=0", "trainer.early_stopping.patience=2"], 21, 3),
        # Three stacked folds (8 batches each epoch): epoch 2's last batch.
        (["data.cv_folds=3", "regularization=l1"], 16, 2),
        # Two folds one after another (6 batches each): the second fold's third in epoch 3.
        (["data.cv_folds=2", "trainer.stack_folds=false", "regularization=batchnorm"], 33, 3),
    ],
    ids=["dropout-momentum-steps", "adam-plateau", "stacked-folds", "folds-one-by-one"],
)
def test_a_fit_continued_from_its_saved_state_ends_as_an_uninterrupted_one(
    overrides, stop_at, epoch
):
    cfg = compose_cfg(
        [*TINY, "trainer.max_epochs=4", "trainer.batch_size=128", "data=digits", *overrides]
    )
    members, whole = _fit(cfg)

    with pytest.raises(Interrupted) as stopped:
        _fit(cfg, interrupted=_after(stop_at))
    state = _saved(stopped.value.state)
    members_again, continued = _fit(cfg, resume=state)

    assert continued.epochs_run == whole.epochs_run
    assert stopped.value.epoch == epoch
    for epoch, (a, b) in enumerate(zip(whole.history, continued.history, strict=True), 1):
        assert {k: a[k] for k in SERIES} == {k: b[k] for k in SERIES}, epoch
    assert continued.best_epoch == whole.best_epoch
    assert {k: continued.best_metrics[k] for k in SERIES} == {
        k: whole.best_metrics[k] for k in SERIES
    }
    for k, v in whole.best_state.items():
        assert torch.equal(v, continued.best_state[k]), k


def test_a_fit_that_is_never_interrupted_polls_once_per_batch():
    cfg = compose_cfg([*TINY, "trainer.max_epochs=2", "data=digits"])
    polls = []
    _fit(cfg, interrupted=lambda: polls.append(1) and False)
    assert len(polls) == 2 * 10  # 1,257 training rows: 10 batches of 128 per epoch


# Long enough to be stopped mid-training: ~0.1 s per epoch.
LONG = [
    *TINY,
    "trainer.max_epochs=40",
    "trainer.batch_size=8",
    "trainer.early_stopping.patience=100",
    "regularization=dropout",
    "tracking.flush_every_s=0",  # every epoch in the store at once: stopped mid-training
]


def _store_args(store):
    return [f"tracking.uri={store['uri']}", f"tracking.artifact_root={store['artifacts']}"]


def _histories(client, run_id):
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in SERIES
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, migrated_store):
    """The per-epoch metrics of the LONG run, never stopped."""
    from mlflow import MlflowClient

    cwd = tmp_path_factory.mktemp("uninterrupted")
    (cwd / "mlruns").mkdir()
    shutil.copy(migrated_store, cwd / "mlruns" / "mlflow.db")
    result = train(LONG, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return _histories(client, run.info.run_id)


def _epochs_logged(client, at_least: int):
    """The run, once it has logged `at_least` epochs (the job flushes every 2 s)."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for run in runs:
        if len(client.get_metric_history(run.info.run_id, "val_loss")) >= at_least:
            return run
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signalled_run_saves_its_state_and_the_same_command_continues_it(
    tmp_path, store, mlflow_client, uninterrupted, sig
):
    args = [*LONG, *_store_args(store)]
    log = tmp_path / "stderr.txt"
    proc, run = kill_train_when(
        args,
        tmp_path,
        lambda: _epochs_logged(mlflow_client, 3),
        120,
        "the run never logged 3 epochs",
        sig=sig,
        stderr=log,
    )
    assert proc.returncode == 128 + sig
    said = [line for line in log.read_text().splitlines() if line.startswith("hypersweep:")]
    assert len(said) == 1 and said[0].startswith(f"hypersweep: preempted ({sig.name}): ")
    assert "Traceback" not in log.read_text()
    stopped = mlflow_client.get_run(run.info.run_id)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags["status_reason"] == "preempted"
    state = Path(stopped.data.tags["resume_state"])
    assert state.is_file() and not list(state.parent.glob(".*.tmp"))
    epoch = int(stopped.data.tags["preempted_epoch"])
    assert 3 < epoch < 40

    result = train(args, cwd=tmp_path)  # the same command
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"continuing run {run.info.run_id} from epoch {epoch}" in result.stdout + result.stderr
    (only,) = mlflow_client.search_runs([run.info.experiment_id])
    assert only.info.run_id == run.info.run_id and only.info.status == "FINISHED"
    assert only.data.tags["status_reason"] == "completed"
    assert "resume_state" not in only.data.tags and not state.exists()
    # every epoch once, each with the value of the run that was never stopped
    assert _histories(mlflow_client, run.info.run_id) == uninterrupted


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_continues_its_trial_from_where_it_stopped(
    tmp_path, store, mlflow_client
):
    from optuna.trial import TrialState
    from test_sweeper import load, trials_so_far

    args = [
        "-m",
        *LONG,
        *_store_args(store),
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=3",
        "lr=tag(log, interval(1e-3, 1e-2))",
    ]

    def second_trial_training():
        trials = trials_so_far(tmp_path)
        return len(trials) == 2 and len(trials[1].intermediate_values) >= 3

    log = tmp_path / "stderr.txt"
    proc, _ = kill_train_when(
        args, tmp_path, second_trial_training, 120, "no second trial", signal.SIGTERM, log
    )
    assert proc.returncode == 128 + signal.SIGTERM
    said = [line for line in log.read_text().splitlines() if line.startswith("hypersweep:")]
    assert len(said) == 1 and "trial-1 stopped in epoch" in said[0], said
    first, second = load(tmp_path).trials
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.FAIL and second.user_attrs["status_reason"] == "preempted"
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    parent = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert [(r.info.status, r.data.tags.get("status_reason")) for r in parent] == [
        ("KILLED", "preempted")
    ]
    (stopped,) = [r for r in runs if r.data.tags.get("trial_number") == "1"]
    epoch = int(stopped.data.tags["preempted_epoch"])

    result = train(args, cwd=tmp_path)  # the same command
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    continued = trials[2]
    assert continued.user_attrs["continues_trial"] == 1 and continued.params == second.params
    run = mlflow_client.get_run(stopped.info.run_id)
    assert (run.info.status, run.info.run_name, run.data.tags["trial_number"]) == (
        "FINISHED",
        "trial-2",
        "2",
    )
    steps = [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(1, 41)) and epoch > 3
    assert sorted(continued.intermediate_values) == list(range(1, 41))


@pytest.mark.slow
def test_resume_from_a_preempted_run_continues_that_run(tmp_path, store, mlflow_client):
    args = [*LONG, *_store_args(store)]
    _, run = kill_train_when(
        args, tmp_path, lambda: _epochs_logged(mlflow_client, 3), 120, "no epochs", signal.SIGTERM
    )
    state = Path(mlflow_client.get_run(run.info.run_id).data.tags["resume_state"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = train([*args, f"resume_from={run.info.run_id}"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert mlflow_client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(mlflow_client.search_runs([run.info.experiment_id])) == 1
    assert not state.exists()

    # a finished run: resume_from is the warm start it always was, a new run
    other = train([*args, "lr=0.01", f"resume_from={run.info.run_id}"], cwd=elsewhere)
    assert other.returncode == 0, other.stderr[-3000:]
    runs = mlflow_client.search_runs([run.info.experiment_id])
    assert [r.data.tags.get("resumed_from") for r in runs] == [run.info.run_id, None]
