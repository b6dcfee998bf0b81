"""train.py as a user runs it, read back through the MLflow client."""

from __future__ import annotations

import io
import os
import socket
import time
from xml.etree import ElementTree

import pytest
import torch
import yaml
from mlflow.artifacts import download_artifacts

from hypersweep.core.checkpoint import load_checkpoint, save_checkpoint
from hypersweep.progress import Progress, SweepProgress

from conftest import kill_train_when, train

EPOCH_METRICS = {"train_loss", "val_loss", "val_acc", "lr", "epoch_seconds"}
SUMMARY_METRICS = {"best_val_loss", "best_val_acc", "best_train_loss", "best_epoch", "epochs_run"}


def _children(client):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags], [
        r for r in runs if r.data.tags.get("sweep") == "true"
    ]


@pytest.mark.slow
def test_grid_sweep_logs_every_job_as_a_child_run(tmp_path, store, mlflow_client):
    result = train(
        [
            "-m",
            "optimizer=adam,sgd",
            "lr=0.1,0.01",
            "trainer.max_epochs=4",
            "model.hidden_units=16",
            "trainer.early_stopping.patience=50",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children, parents = _children(mlflow_client)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    experiment = mlflow_client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {r.info.experiment_id for r in children} == {parent.info.experiment_id}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    seen = set()
    for run in children:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED"
        seen.add((params["optimizer._target_"], params["lr"]))
        assert params["optimizer.lr"] == params["lr"]
        assert params["model.hidden_units"] == "16"
        assert EPOCH_METRICS | SUMMARY_METRICS <= set(metrics)
        assert tags["status_reason"] == "completed" and metrics["epochs_run"] == 4
        assert {"overrides", "sweep_dir", "job_num", "git_commit", "version.torch"} <= set(tags)
        history = mlflow_client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert min(m.value for m in history) == pytest.approx(metrics["best_val_loss"])
        artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "overrides.yaml", "checkpoints", "plots"} <= artifacts
    assert seen == {
        (o, lr) for o in ("hypersweep.optim.adam", "torch.optim.SGD") for lr in ("0.1", "0.01")
    }
    # The sweep run names the best job by the monitored metric.
    best = min(children, key=lambda r: r.data.metrics["best_val_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    # One summary line per job on the console.
    assert result.stderr.count("(best epoch") == 4 or result.stdout.count("(best epoch") == 4
    # It ends on the winner and what to run next.
    stream = result.stdout if "Best run" in result.stdout else result.stderr
    last = [line.split("] ", 1)[-1] for line in stream.splitlines()]
    own = " ".join(o for o in best.data.tags["overrides"].split() if "hydra." not in o)
    score = best.data.metrics["best_val_loss"]
    assert f"Best run {best.info.run_id}: best_val_loss={score:.4g} with {own}" in last
    assert last[-2:] == [
        f"Next: hypersweep best --sweep {parent.info.run_id}   (test it once, register it)",
        f"      hypersweep ui --sweep {parent.info.run_id}   (compare the runs)",
    ]
    # the experiment is the problem's, the parent run the sweep's
    assert experiment.name == "digits-mlp" and parent.info.run_name.startswith("sweep 20")


@pytest.mark.slow
def test_single_run_checkpoint_and_config_round_trip(tmp_path, store, mlflow_client):
    result = train(
        ["optimizer=momentum", "trainer.max_epochs=3", "model.hidden_units=16"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children, parents = _children(mlflow_client)
    assert parents == [] and children == []  # a single run has no sweep parent
    (run,) = mlflow_client.search_runs(
        [e.experiment_id for e in mlflow_client.search_experiments()]
    )
    assert run.info.status == "FINISHED"
    local = download_artifacts(
        run_id=run.info.run_id,
        artifact_path="checkpoints/best.pt",
        dst_path=str(tmp_path / "dl"),
        tracking_uri=store["uri"],
    )
    ckpt = load_checkpoint(local)  # weights_only=True
    assert ckpt["epoch"] == run.data.metrics["best_epoch"]
    assert ckpt["metrics"]["val_loss"] == pytest.approx(run.data.metrics["best_val_loss"])
    assert ckpt["config"]["optimizer"]["momentum"] == 0.9
    assert any(k.endswith("weight") for k in ckpt["state_dict"])
    config = yaml.safe_load(
        open(
            download_artifacts(
                run_id=run.info.run_id,
                artifact_path="config.yaml",
                dst_path=str(tmp_path / "dl"),
                tracking_uri=store["uri"],
            )
        )
    )
    assert config == ckpt["config"]
    overrides = yaml.safe_load(
        open(
            download_artifacts(
                run_id=run.info.run_id,
                artifact_path="overrides.yaml",
                dst_path=str(tmp_path / "dl"),
                tracking_uri=store["uri"],
            )
        )
    )
    assert overrides == ["optimizer=momentum", "trainer.max_epochs=3", "model.hidden_units=16"]


def test_diverged_job_is_recorded_and_the_sweep_goes_on(tmp_path, job_cfg, mlflow_client):
    from hypersweep.job import run

    value = run(job_cfg("optimizer=sgd", "lr=1e6", "trainer.max_epochs=10"))
    ok = run(job_cfg("trainer.max_epochs=2"))
    runs = mlflow_client.search_runs(
        [e.experiment_id for e in mlflow_client.search_experiments()],
        order_by=["attributes.start_time ASC"],
    )
    assert [r.data.tags["status_reason"] for r in runs] == ["diverged", "completed"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.metrics["epochs_run"] < 10
    assert ok < 10 and (value != value or value > ok)  # nan or worse than a sane run


def test_learning_curve_svg_draws_the_logged_curves(tmp_path, job_cfg, mlflow_client):
    from hypersweep.job import run

    run(job_cfg("trainer.max_epochs=6", "trainer.early_stopping.patience=10"))
    (r,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    path = mlflow_client.download_artifacts(r.info.run_id, "plots/learning_curve.svg", tmp_path)
    root = ElementTree.parse(path).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = {p.get("data-name"): p.get("points") for p in root.iterfind(".//s:polyline", ns)}
    assert set(lines) == {"train_loss", "val_loss", "val_acc"}
    for name, points in lines.items():
        ys = [float(xy.split(",")[1]) for xy in points.split()]
        logged = [m.value for m in mlflow_client.get_metric_history(r.info.run_id, name)]
        assert len(ys) == len(logged) == 6
        # SVG y grows downwards: a larger value sits higher, so the orders are reversed
        assert sorted(range(6), key=lambda i: -ys[i]) == sorted(range(6), key=lambda i: logged[i])
    best = int(r.data.metrics["best_epoch"])
    at_best = {float(lines[n].split()[best - 1].split(",")[0]) for n in ("val_loss", "val_acc")}
    marks = {float(v.get("x1")) for v in root.iterfind(".//s:line[@class='vline']", ns)}
    assert marks == at_best  # the best epoch marked in both panels


def test_learning_curve_can_be_turned_off(job_cfg, mlflow_client):
    from hypersweep.job import run

    run(job_cfg("tracking.learning_curve=false"))
    (r,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert {a.path for a in mlflow_client.list_artifacts(r.info.run_id)} == {
        "checkpoints",
        "config.yaml",
        "overrides.yaml",
    }


def test_same_job_twice_logs_identical_metrics(job_cfg, mlflow_client):
    from hypersweep.job import run

    first = run(job_cfg("regularization=all"))
    second = run(job_cfg("regularization=all"))
    assert first == second
    a, b = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    for name in ("train_loss", "val_loss", "val_acc"):
        ha = [m.value for m in mlflow_client.get_metric_history(a.info.run_id, name)]
        hb = [m.value for m in mlflow_client.get_metric_history(b.info.run_id, name)]
        assert ha == hb


def test_failing_job_leaves_a_failed_run_not_a_running_one(job_cfg, mlflow_client, monkeypatch):
    import hypersweep.job as job

    def explode(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(job, "fit_members", explode)
    with pytest.raises(RuntimeError):
        job.run(job_cfg())
    (run,) = mlflow_client.search_runs(
        [e.experiment_id for e in mlflow_client.search_experiments()]
    )
    assert run.info.status == "FAILED"
    assert run.data.tags["status_reason"] == "failed"
    assert "out of memory" in run.data.tags["error"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"w": torch.ones(2)}, {"a": 1}, 3, {"val_loss": 0.5})

    def torn(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(2)}, {"a": 2}, 4, {"val_loss": 0.4})
    assert load_checkpoint(path)["epoch"] == 3  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream,shows", [(_Tty(), True), (io.StringIO(), False)])
def test_progress_shows_on_a_terminal_only(stream, shows):
    progress = Progress(10, "val_loss", stream)
    progress.update(
        1, {"train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.5, "lr": 0.01, "epoch_seconds": 0.1}
    )
    progress.update(
        2, {"train_loss": 0.8, "val_loss": 0.7, "val_acc": 0.6, "lr": 0.01, "epoch_seconds": 0.1}
    )
    progress.close()
    text = stream.getvalue()
    assert ("2/10" in text and "val_acc 0.6" in text and "best val_loss 0.7" in text) is shows
    assert (text == "") is not shows


@pytest.mark.parametrize("stream,shows", [(_Tty(), True), (io.StringIO(), False)])
def test_the_sweep_bar_counts_trials_and_shows_the_best(stream, shows):
    import optuna

    study = optuna.create_study(direction="maximize")
    bar = SweepProgress(8, 1, stream)
    for number, value in enumerate([0.5, 0.9, 0.7]):
        trial = study.ask()
        study.tell(trial, value)
        bar.told(number + 2, study)
    bar.close()
    text = stream.getvalue()
    assert ("4/8" in text and "best 0.9 (trial 1)" in text) is shows
    assert (text == "") is not shows


def test_runs_of_a_killed_sweep_are_closed_by_the_next_command(tmp_path, store, mlflow_client):
    """SIGKILL leaves no chance to close runs; the next command on this machine closes those
    whose process is gone, and leaves a live process's runs alone."""
    from hypersweep.tracking.store import close_orphaned_runs, process_alive

    def job_training():
        runs = mlflow_client.search_runs(
            [e.experiment_id for e in mlflow_client.search_experiments()],
            filter_string="attributes.status = 'RUNNING'",
        )
        return runs if any(r.data.tags.get("sweep") != "true" for r in runs) else None

    args = [
        "-m",
        "lr=0.01,0.02",
        "trainer.max_epochs=500",
        "trainer.early_stopping.patience=1000",
        "trainer.batch_size=8",
    ]
    proc, runs = kill_train_when(args, tmp_path, job_training, 120, "the sweep started no job")
    assert {r.data.tags.get("sweep") for r in runs} == {"true", None}  # parent and job RUNNING
    # A run of a live process (this one) is not touched.
    live = mlflow_client.create_run(
        runs[0].info.experiment_id,
        tags={"hypersweep.host": socket.gethostname(), "hypersweep.pid": "1"},
    )
    assert process_alive(1, live.info.start_time)
    assert process_alive(os.getpid(), int(time.time() * 1000))
    assert not process_alive(proc.pid, int(time.time() * 1000))  # reaped: gone

    result = train(["trainer.max_epochs=1"], cwd=tmp_path)  # any later command
    assert result.returncode == 0, result.stderr[-3000:]
    for run in runs:
        after = mlflow_client.get_run(run.info.run_id)
        assert after.info.status == "KILLED"
        assert after.data.tags["status_reason"] == "interrupted"
    assert mlflow_client.get_run(live.info.run_id).info.status == "RUNNING"
    assert close_orphaned_runs(store["uri"]) == []  # nothing left to close


@pytest.mark.slow
def test_plain_commands_print_no_hydra_or_omegaconf_warning(tmp_path, store):
    """On either Hydra line (version_base, resolver registration, ConfigStore collisions, the
    execution whitelist): shown with every warning enabled."""
    env = {"PYTHONWARNINGS": "default"}
    single = train(["trainer.max_epochs=1", "data=iris"], cwd=tmp_path, env=env)
    swept = train(
        ["-m", "search=random", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "data=iris"],
        cwd=tmp_path,
        env=env,
    )
    for result in (single, swept):
        assert result.returncode == 0, result.stderr[-3000:]
        output = (result.stdout + result.stderr).splitlines()
        warnings = [line for line in output if "Warning" in line or "deprecated" in line]
        signs = (
            "/hydra/",
            "/omegaconf/",
            "hydra_plugins",
            "Hydra",
            "ConfigStore",
            "version_base",
            "resolver",
            "whitelist",
        )
        ours = [w for w in warnings if any(k in w for k in signs)]
        assert ours == [], ours
