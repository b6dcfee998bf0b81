"""`hydra/launcher=hypersweep_pool`: a sweep's jobs on long-lived worker processes, each job to
the first free worker; the `hypersweep` sweeper asks the next trial as soon as one ends; a worker
that dies loses no trial and leaves no run RUNNING."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from test_sweeper import (
    LONG_TRIALS,
    SPACE,
    TINY,
    child_runs,
    load,
    results_file,
    sweep,
    trials_so_far,
)

from conftest import ROOT, kill_train_when, train

HELPERS = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
POOL = ["hydra/launcher=hypersweep_pool", "hydra.launcher.n_jobs=2"]


def span(run) -> tuple[int, int]:
    return run.info.start_time, run.info.end_time


def test_a_grid_is_spread_over_the_free_workers(tmp_path, store, mlflow_client):
    # Job 0 stalls on one worker until jobs 1-3 ran, one after another, on the other.
    args = [
        "-m",
        "data=iris",
        "trainer.max_epochs=2",
        "model._target_=flaky.SlowMLP",
        "hypersweep.trusted_targets=[flaky]",
    ]
    result = train([*args, "model.hidden_units=64,8,9,10", *POOL], cwd=tmp_path, env=HELPERS)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = {int(r.data.tags["job_num"]): r for r in child_runs(mlflow_client)}
    assert sorted(runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    slow_start, slow_end = span(runs[0])
    for a, b in ((1, 2), (2, 3)):
        assert span(runs[a])[1] <= span(runs[b])[0], f"job {b} waited on a batch"
    assert slow_start < span(runs[1])[1] and span(runs[3])[1] < slow_end
    # Two worker processes, neither the sweep's own, ran the jobs.
    pids = {r.data.tags["hypersweep.pid"] for r in runs.values()}
    assert len(pids) == 2
    # Each job wrote Hydra's files into its own output dir, as with Hydra's launchers.
    for num, run in runs.items():
        hydra_dir = Path(run.data.tags["output_dir"]) / ".hydra"
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text())
        assert config["model"]["hidden_units"] == (64, 8, 9, 10)[num]
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text())
        assert f"model.hidden_units={(64, 8, 9, 10)[num]}" in overrides


def test_the_sweeper_asks_the_next_trial_as_soon_as_one_ends(tmp_path, store, mlflow_client):
    sweep(  # hydra.sweeper.n_jobs=1 (TINY): the pool's n_jobs=2 trials at a time
        tmp_path,
        *POOL,
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.sampler.seed=0",
        "model._target_=flaky.SlowMLP",
        "hypersweep.trusted_targets=[flaky]",
        "model.hidden_units=choice(64, 8, 9, 10, 11)",
        "hydra.sweeper.n_trials=5",
        env=HELPERS,
    )
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert results_file(tmp_path)["trials"] == {"COMPLETE": 5, "PRUNED": 0, "FAIL": 0}
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(mlflow_client)}
    assert sorted(runs) == [0, 1, 2, 3, 4]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    events = sorted(
        [(s, 1) for s, _ in map(span, runs.values())]
        + [(e, -1) for _, e in map(span, runs.values())]
    )
    running = [sum(d for _, d in events[: i + 1]) for i in range(len(events))]
    assert max(running) == 2, "n_jobs=2: two trials at most, and two at some point"
    # While the stalled trial ran, the other worker finished a trial and started the next:
    # in batches of two, the next trial would have waited for the stalled one.
    (slow,) = [r for r in runs.values() if r.data.tags["job_num"] == "0"]
    slow_start, slow_end = span(slow)
    others = [span(r) for r in runs.values() if r is not slow]
    assert any(
        slow_start < a_end <= b_start < slow_end for _, a_end in others for b_start, _ in others
    ), "no trial started while the stalled one ran (the sampler's seed 0 must not put it last)"


def test_a_worker_that_dies_loses_no_trial_and_leaves_no_run_running(
    tmp_path, store, mlflow_client
):
    args = [
        *POOL,
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "model._target_=flaky.DyingMLP",
        "hypersweep.trusted_targets=[flaky]",
        "model.hidden_units=choice(8, 13, 16)",
        "hydra.sweeper.n_trials=3",
    ]
    result = sweep(tmp_path, *args, env=HELPERS, check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("hypersweep:")]
    assert len(lines) == 1 and lines[0].startswith("hypersweep: sweep stopped: a worker process")
    assert "the same command resumes the sweep" in lines[0]
    study = load(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    dead = [t for t in study.trials if t.params["model.hidden_units"] == 13]
    assert dead and all(
        t.state == TrialState.FAIL and t.user_attrs["status_reason"] == "interrupted" for t in dead
    )
    runs = child_runs(mlflow_client)
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    # a run the stop caught between its creation and its params has none: .get
    (died,) = [r for r in runs if r.data.params.get("model.hidden_units") == "13"]
    assert died.info.status == "KILLED" and died.data.tags["status_reason"] == "interrupted"


def test_a_trial_asked_as_the_pool_breaks_is_run_again_not_left_running(tmp_path, store):
    args = [
        *POOL,
        "hydra.launcher._target_=hydra_plugins.breaking_pool.PoolThatBreaks",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "model.hidden_units=choice(8, 13, 16)",
        "hydra.sweeper.n_trials=3",
    ]
    result = sweep(tmp_path, *args, env=HELPERS, check=False)
    assert result.returncode == 1
    assert "hypersweep: sweep stopped: a worker process died" in result.stderr
    study = load(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    (asked,) = [t for t in study.trials if t.number == 2]
    assert asked.state == TrialState.FAIL and asked.user_attrs["status_reason"] == "interrupted"
    # The same command on a pool that works runs that trial again, and only it.
    args = [a for a in args if "PoolThatBreaks" not in a]
    sweep(tmp_path, *args, env=HELPERS)
    done = load(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["model.hidden_units"] for t in done) == [8, 13, 16]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_pool_saves_its_running_trials_and_a_rerun_continues_them(
    tmp_path, store, mlflow_client, sig
):
    """Ctrl-C (to the terminal's process group; the workers ignore it and get SIGTERM from the
    sweep) or SIGKILL of the sweep alone (its workers notice it is gone): the trials that were
    training save their state and stop, no worker is left, and the same command continues
    them, each in its own MLflow run."""
    args = [
        "-m",
        *TINY,
        *POOL,
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.n_trials=6",
        *LONG_TRIALS,
        *SPACE,
    ]
    log = tmp_path / "stderr.txt"

    def two_training_after_one_done() -> bool:
        trials = trials_so_far(tmp_path)
        training = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        return any(t.state == TrialState.COMPLETE for t in trials) and len(training) == 2

    proc, _ = kill_train_when(
        args,
        tmp_path,
        two_training_after_one_done,
        240,
        "two trials never trained at once",
        sig=sig,
        stderr=log,
    )
    runs = child_runs(mlflow_client)
    workers = {int(r.data.tags["hypersweep.pid"]) for r in runs}
    deadline = time.monotonic() + 30  # after SIGKILL, each notices within a second
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its sweep"
    assert proc.returncode == (128 + sig if sig != signal.SIGKILL else -sig)
    # RUNNING after SIGKILL (the next command fails them), FAIL otherwise. A trial whose job
    # ended in the moment of the signal is not preempted: after Ctrl-C the sweep tells it;
    # after SIGKILL nobody can (RUNNING with its job's outcome: the next command runs it again).
    trials = load(tmp_path).trials
    stopped = [t for t in trials if t.user_attrs.get("status_reason") == "preempted"]
    assert 1 <= len(stopped) <= 2 and all(t.state != TrialState.COMPLETE for t in stopped)
    assert all(
        t.state == TrialState.COMPLETE or t in stopped or sig == signal.SIGKILL for t in trials
    )
    if sig != signal.SIGKILL:
        said = [line for line in log.read_text().splitlines() if line.startswith("hypersweep:")]
        assert said == [
            f"hypersweep: preempted (SIGINT): {len(stopped)} running trial(s) saved their "
            "state: the same command continues the study"
        ]
        assert "Traceback" not in log.read_text()
    preempted = {r.info.run_id for r in child_runs(mlflow_client) if r.info.status == "KILLED"}
    assert len(preempted) == len(stopped)
    for run_id in preempted:
        run = mlflow_client.get_run(run_id)
        assert run.data.tags["status_reason"] == "preempted"
        assert Path(run.data.tags["resume_state"]).is_file()

    result = train(args, cwd=tmp_path)  # the same command: 6 trials done in all
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6
    continuing = {t.user_attrs.get("continues_trial"): t for t in done}
    for old in stopped:
        new = continuing[old.number]
        assert new.params == old.params
        # its pruner saw the whole curve: the epochs before the stop, then the rest
        assert set(old.intermediate_values) <= set(new.intermediate_values)
    after = child_runs(mlflow_client)
    runs_of = {}
    for r in after:
        runs_of.setdefault(int(r.data.tags["trial_number"]), []).append(r)
    for t in done:  # one run each, finished: the continued ones went on in their runs
        assert [r.info.status for r in runs_of[t.number]] == ["FINISHED"]
    assert all(r.info.status == "FINISHED" for r in after if r.info.run_id in preempted)
    assert not [r for r in after if r.info.status == "RUNNING"]
    assert not any((tmp_path / "mlruns" / "preempted").iterdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
