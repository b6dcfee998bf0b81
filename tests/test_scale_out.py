"""Scale-out on real engines, all started here: independent sweep commands sharing a PostgreSQL
Optuna storage and one `mlflow server` whose backend store is PostgreSQL too (many machines on
one study); trials as submitit jobs (`submitit_local`) and the SLURM preset; trials as Ray tasks
on a local instance of 2 CPUs (`hypersweep_ray`, and Hydra's own Ray launcher on Hydra 1.4)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_sweeper import PRUNING, child_runs, load, sweep
from test_sweeper import TINY as SWEEP_TINY

from conftest import TINY, _train_command, _train_env, compose_cfg, hypersweep, train
from services import mlflow_server, postgres_cluster

N_TRIALS = 10
SEARCH = [
    *TINY,
    "data=digits",
    "trainer.max_epochs=8",
    "trainer.early_stopping.patience=50",
    "hydra/sweeper=hypersweep",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=1",
    "hydra/sweeper/sampler=random",
    "lr=tag(log, interval(1e-5, 1e-1))",
    f"hydra.sweeper.n_trials={N_TRIALS}",
    "hydra.sweeper.study_name=shared",
]


def _start(args: list[str], cwd) -> subprocess.Popen:
    """`python train.py ARGS` from `cwd` in the background, its output in one text pipe."""
    return subprocess.Popen(
        _train_command(args),
        cwd=cwd,
        env=_train_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_commands_on_one_postgresql_study_and_one_mlflow_server_cooperate(tmp_path):
    with (
        postgres_cluster(["optuna", "mlflow"]) as base,
        mlflow_server(f"{base}/mlflow", tmp_path / "artifacts", tmp_path / "server.log") as url,
    ):
        storage = f"{base}/optuna"
        args = ["-m", *SEARCH, f"hydra.sweeper.storage={storage}", "tracking=server"]
        args.append(f"tracking.uri={url}")
        procs = []
        for worker in ("a", "b"):  # two machines: own working dirs, started together
            (tmp_path / worker).mkdir()
            procs.append(_start(args, tmp_path / worker))
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for worker, output in zip("ab", outputs, strict=True):
            (tmp_path / worker / "output.txt").write_text(output)
        assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]

        trials = optuna.load_study(study_name="shared", storage=storage).trials
        states = [t.state for t in trials]
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        # n_trials in all; a command that asked while the other's last trial ran overshoots by one.
        assert N_TRIALS <= len(finished) <= N_TRIALS + 1 and len(finished) == len(trials), states
        assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicates
        assert len({t.user_attrs["owner"]["pid"] for t in trials}) == 2  # both did work
        assert TrialState.PRUNED in states  # pruned against the other command's trials too

        client = MlflowClient(url)
        (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
        children = [r for r in runs if r.data.tags.get("sweep") != "true"]
        assert len(parents) == 2  # one per command, in the one experiment
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {
            p.info.run_id for p in parents
        }
        by_trial = {int(r.data.tags["trial_number"]): r for r in children}
        assert sorted(by_trial) == sorted(t.number for t in trials)  # a run for every trial
        for t in trials:
            run = by_trial[t.number]
            assert run.info.status == "FINISHED"
            history = client.get_metric_history(run.info.run_id, "val_loss")
            assert sorted(m.step for m in history) == sorted(t.intermediate_values), t.number

        selected = hypersweep(
            ["best", "--experiment", experiment.name, "--no-register"], tmp_path, url
        )
        assert selected.returncode == 0, selected.stderr[-3000:]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(complete, key=lambda t: t.value)
        assert f"best run {by_trial[best.number].info.run_id}" in selected.stdout


@pytest.mark.slow
def test_a_pruned_sweep_runs_its_trials_as_submitit_jobs(tmp_path, store, mlflow_client):
    sweep(
        tmp_path,
        *PRUNING,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
        "hydra.sweeper.n_jobs=2",
        "trainer.num_threads=1",
    )
    study = load(tmp_path)
    assert len(study.trials) == 8
    assert study.get_trials(states=(TrialState.PRUNED,)), "no trial pruned from a submitit job"
    # Each trial ran as a submitit job: its folder (named for the job id) holds its result.
    jobs = [p for p in (tmp_path / "multirun").glob("*/*/.submitit/*") if p.name.isdigit()]
    assert len(jobs) == 8 and all(list(j.glob("*_result.pkl")) for j in jobs), jobs
    runs = child_runs(mlflow_client)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    reasons = [r.data.tags["status_reason"] for r in runs]
    assert reasons.count("pruned") == len(study.get_trials(states=(TrialState.PRUNED,)))


def test_the_slurm_preset_composes_onto_submitit_slurm():
    cfg = compose_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_task, launcher.array_parallelism) == (
        "gpu",
        1,
        16,
    )


# -- Ray: a local instance of 2 CPUs, started by the sweep ------------------------------------

RAY = ["hydra/launcher=hypersweep_ray", "+hydra.launcher.init.num_cpus=2", "trainer.num_threads=1"]


def _ray_jobs(tmp_path) -> list:
    """The pid files of the jobs running on Ray now (one per job, removed as it ends)."""
    return list((tmp_path / "multirun").glob("*/*/.ray_jobs/*.pid"))


@pytest.mark.slow
def test_a_pruned_sweep_runs_on_ray_one_trial_per_free_slot(tmp_path, store, mlflow_client):
    result = sweep(tmp_path, *PRUNING, *RAY)
    assert "Launching jobs on Ray, 2 at a time" in result.stdout + result.stderr
    study = load(tmp_path)
    assert len(study.trials) == 8
    assert study.get_trials(states=(TrialState.PRUNED,)), "no trial pruned from a Ray task"
    runs = child_runs(mlflow_client)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*/optimization_results.yaml")
    for job in range(8):  # Hydra's job files, written by run_job in the Ray worker
        assert (sweep_dir.parent / str(job) / ".hydra" / "overrides.yaml").exists(), job
    assert not (sweep_dir.parent / ".ray_jobs").exists()  # no job left its pid


@pytest.mark.slow
def test_a_grid_runs_on_ray(tmp_path, store, mlflow_client):
    result = train(["-m", *TINY, "data=iris", "lr=0.1,0.01,0.001", *RAY], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = child_runs(mlflow_client)
    assert sorted(r.data.params["lr"] for r in runs) == ["0.001", "0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_a_grid_runs_on_hydras_own_ray_launcher(tmp_path, store, mlflow_client):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher: Hydra 1.4")
    args = ["data=iris", "lr=0.1,0.01", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2"]
    result = train(["-m", *TINY, *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = child_runs(mlflow_client)
    assert sorted(r.data.params["lr"] for r in runs) == ["0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_a_ray_worker_lost_mid_trial_is_an_interrupted_trial_the_same_command_runs_again(
    tmp_path, store, mlflow_client
):
    args = ["-m", *SWEEP_TINY, *PRUNING, *RAY, "trainer.max_epochs=30", "trainer.batch_size=8"]
    proc = _start(args, tmp_path)
    deadline = time.monotonic() + 120
    while not _ray_jobs(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # into its training
    (first, *_) = sorted(_ray_jobs(tmp_path))
    os.kill(int(first.read_text()), signal.SIGKILL)  # the Ray worker of that trial
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output[-3000:]
    assert "a worker process died while running trial" in output, output[-3000:]
    study = load(tmp_path)
    lost = [t for t in study.trials if t.user_attrs.get("status_reason") == "interrupted"]
    assert lost and all(t.state == TrialState.FAIL for t in lost)
    assert not [r for r in child_runs(mlflow_client) if r.info.status == "RUNNING"]

    again = sweep(tmp_path, *PRUNING, *RAY, "trainer.max_epochs=30", "trainer.batch_size=8")
    assert again.returncode == 0
    finished = load(tmp_path).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 8


@pytest.mark.slow
def test_sigterm_to_a_sweep_on_ray_reaches_its_jobs_and_they_save_their_state(
    tmp_path, store, mlflow_client
):
    long = ["trainer.max_epochs=200", "trainer.batch_size=8", "trainer.early_stopping.patience=500"]
    args = ["-m", *SWEEP_TINY, "data=digits", "search=random", *long, *RAY]
    proc = _start([*args, "hydra.sweeper.n_trials=4"], tmp_path)
    deadline = time.monotonic() + 120
    while len(_ray_jobs(tmp_path)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2.0)  # both into their training
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "2 running trial(s) saved their state" in output, output[-3000:]
    runs = child_runs(mlflow_client)
    assert sorted(r.data.tags.get("status_reason") for r in runs) == ["preempted"] * 2
    assert all(r.info.status == "KILLED" for r in runs)
