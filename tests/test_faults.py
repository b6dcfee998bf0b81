"""Fault injection: a sweep whose chosen trials raise, hang past trainer.time_limit_s, output
NaN or get killed. Each trial ends in the state its fault calls for, in the study and in MLflow,
and the same command afterwards runs again exactly what was interrupted."""

from __future__ import annotations

import os

import pytest
from optuna.trial import TrialState
from test_sweeper import child_runs, load

from conftest import ROOT, train

WIDTHS = (8, 13, 14, 15, 16)  # no fault, then tests/helpers/faults.py's
# (trial state, trial status_reason, run status, run status_reason) each width ends in
EXPECTED = {
    8: (TrialState.COMPLETE, "completed", "FINISHED", "completed"),
    13: (TrialState.FAIL, "failed", "FAILED", "failed"),
    14: (TrialState.FAIL, "timed_out", "FAILED", "timed_out"),
    15: (TrialState.PRUNED, "diverged", "FINISHED", "diverged"),
    16: (TrialState.COMPLETE, "completed", "FINISHED", "completed"),  # killed once, then ran
}


@pytest.mark.slow
def test_each_fault_ends_its_trial_as_it_should_and_a_rerun_runs_the_interrupted_again(
    tmp_path, store, mlflow_client
):
    path = os.pathsep.join(filter(None, [str(ROOT / "tests" / "helpers"), os.getenv("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "FAULTS_DIR": str(tmp_path)}
    args = [
        "-m",
        "data=iris",
        "trainer.max_epochs=4",
        "trainer.batch_size=16",
        "trainer.device=cpu",
        "trainer.time_limit_s=6",
        "model._target_=faults.FaultyMLP",
        "hypersweep.trusted_targets=[faults]",
        f"model.hidden_units=choice({', '.join(map(str, WIDTHS))})",
        "hydra/sweeper=hypersweep",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.study_name=s",
        "hydra/launcher=hypersweep_pool",
        "hydra.launcher.n_jobs=2",
    ]
    first = train(args, cwd=tmp_path, env=env)
    # width 16 killed its worker: the sweep stops, its running trials interrupted
    assert first.returncode == 1, first.stderr[-3000:]
    said = [line for line in first.stderr.splitlines() if line.startswith("hypersweep:")]
    assert len(said) == 1 and "a worker process died while running trial" in said[0]
    stopped = load(tmp_path)
    interrupted = [t for t in stopped.trials if t.user_attrs.get("status_reason") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert 16 in {t.params["model.hidden_units"] for t in interrupted}

    again = train(args, cwd=tmp_path, env=env)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    study = load(tmp_path)
    trials = study.trials
    assert not [t for t in trials if not t.state.is_finished()]
    runs = {int(r.data.tags["trial_number"]): r for r in child_runs(mlflow_client)}
    assert len(runs) == len(trials)  # one run per trial, none RUNNING
    reruns = {t.user_attrs.get("reruns_trial"): t for t in trials}
    for width in WIDTHS:
        tried = [t for t in trials if t.params["model.hidden_units"] == width]
        *before, last = tried
        for t in before:  # each interrupted attempt was run again, by the next one
            assert t.user_attrs["status_reason"] == "interrupted", (width, t.number)
            assert runs[t.number].info.status == "KILLED"
            assert reruns[t.number].params == t.params
        state, reason, run_status, run_reason = EXPECTED[width]
        run = runs[last.number]
        observed = (last.state, last.user_attrs["status_reason"], run.info.status)
        assert observed + (run.data.tags["status_reason"],) == (
            state,
            reason,
            run_status,
            run_reason,
        ), width
    faulty = {t.params["model.hidden_units"]: runs[t.number] for t in trials}
    assert faulty[13].data.tags["error"] == "RuntimeError: injected fault"
    assert "trainer.time_limit_s=6" in faulty[14].data.tags["error"]
    # four trials count toward n_trials=5 with the one that completes the grid; the
    # interrupted ones do not
    assert sum(t.user_attrs["status_reason"] != "interrupted" for t in trials) == 5
