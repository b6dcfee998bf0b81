"""Against a real `mlflow server` on a loopback port: a sweep logs through HTTP, the names
README's "What MLflow holds" lists read back through the REST client, `best` registers, the
model loads."""

from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from conftest import train
from services import mlflow_server as start_mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path, migrated_store):
    db = tmp_path / "server.db"
    shutil.copy(migrated_store, db)
    backend = f"sqlite:///{db}"
    with start_mlflow_server(
        backend, tmp_path / "server-artifacts", tmp_path / "server.log"
    ) as url:
        yield url


def test_optuna_sweep_through_a_tracking_server(tmp_path, mlflow_server):
    result = train(
        [
            "-m",
            "tracking=server",
            f"tracking.uri={mlflow_server}",
            "search=hyperband",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.study_name=served",
            "trainer.max_epochs=6",
            "hydra.sweeper.pruner.min_resource=1",
            "model.hidden_units=16",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    # the problem's experiment (data-model); the study is the parent run's
    exp = client.get_experiment_by_name("digits-mlp")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert parent.data.params["sampler"] == "TPESampler"
    assert parent.data.params["study_name"] == "served"
    assert parent.data.params["pruner"] == "HyperbandPruner"
    assert parent.data.params["space.lr"] == "tag(log, interval(1e-4, 1e-1))"
    assert "best_run_id" in parent.data.tags
    for run in children:
        assert run.info.status == "FINISHED"
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        assert {"optimizer.lr", "model.hidden_units", "trainer.batch_size", "lr"} <= set(p)
        assert {
            "train_loss",
            "val_loss",
            "val_acc",
            "lr",
            "epoch_seconds",
            "best_val_loss",
            "best_val_acc",
            "best_epoch",
            "epochs_run",
        } <= set(m)
        assert {
            "overrides",
            "sweep_dir",
            "job_num",
            "trial_number",
            "git_commit",
            "version.torch",
            "status_reason",
        } <= set(t)
        assert t["status_reason"] in ("completed", "early_stopped", "pruned", "diverged")
        steps = [x.step for x in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == list(range(1, int(m["epochs_run"]) + 1))
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "overrides.yaml", "checkpoints", "plots"} <= files
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
            "checkpoints/best.pt"
        ]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == [
            "plots/learning_curve.svg"
        ]

    best = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypersweep.cli",
            "--tracking-uri",
            mlflow_server,
            "best",
            "--experiment",
            "digits-mlp",
            "--name",
            "served-digits",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert best.returncode == 0, best.stderr[-3000:]
    assert "registered served-digits version 1 as @champion" in best.stdout
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pytorch.load_model("models:/served-digits@champion")
    assert model(torch.randn(3, 1, 8, 8)).argmax(dim=1).shape == (3,)


def test_commands_started_together_on_a_fresh_store_all_get_it_and_one_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = (
        "import sys; from hypersweep.tracking.store import prepare_store, experiment_id; "
        "prepare_store(sys.argv[1]); print(experiment_id(sys.argv[1], 'together', None))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in outcomes] == [0, 0, 0, 0], [err[-1500:] for _, _, err in outcomes]
    assert len({out.strip() for _, out, _ in outcomes}) == 1
