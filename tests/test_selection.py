"""Sweep parent runs and analysis, `hypersweep best`, `reproduce`, babysitting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from hypersweep.tracking.analysis import figures, study_from_runs

from conftest import _train_env, hypersweep, train

pytestmark = pytest.mark.slow

GRID = [
    "-m",
    "lr=0.3,0.03,0.003",
    "optimizer=sgd",
    "model.hidden_units=16",
    "trainer.max_epochs=4",
    "tracking.experiment=grid",
]


def runs_of(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture
def grid_sweep(tmp_path, store, mlflow_client):
    result = train(GRID, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(mlflow_client, "grid")
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r is not parent and r.data.tags.get("sweep") != "true"]
    return parent, children


def test_sweep_parent_holds_space_best_and_analysis(grid_sweep, tmp_path, mlflow_client):
    parent, children = grid_sweep
    assert len(children) == 3
    assert parent.data.params["sweeper"] == "GridSweeper"
    assert parent.data.params["space.lr"] == "0.3,0.03,0.003"
    best = min(children, key=lambda r: r.data.metrics["best_val_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.tags["best.lr"] == best.data.params["lr"]
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best.data.metrics["best_val_loss"])
    expected = {
        "trials.csv",
        "optimization_history.png",
        "parallel_coordinate.png",
        "intermediate_values.png",
    }
    logged = {
        Path(a.path).name for a in mlflow_client.list_artifacts(parent.info.run_id, "analysis")
    }
    assert expected <= logged
    assert "param_importances.png" not in logged  # one swept key: its importance is 1, no plot
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert expected <= {p.name for p in (sweep_dir / "analysis").iterdir()}
    for name in expected - {"trials.csv"}:
        assert (sweep_dir / "analysis" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # the grid's study, rebuilt from its runs: one line per trial across the lr and objective axes
    study = study_from_runs(mlflow_client, children, "best_val_loss", "min")
    axes = figures(study)["parallel_coordinate"]()
    assert sum(len(c.get_segments()) for c in axes.collections if hasattr(c, "get_segments")) == 3
    csv = (sweep_dir / "analysis" / "trials.csv").read_text().splitlines()
    assert csv[0].startswith("run_id,") and "lr" in csv[0].split(",") and len(csv) == 4
    assert parent.data.metrics["importance.lr"] == pytest.approx(1.0)  # the only swept key
    assert all(r.data.params["choice.optimizer"] == "sgd" for r in children)
    assert not any("choice.search" in r.data.params for r in children)  # no preset: no param


def test_the_analysis_plots_can_be_turned_off_and_the_table_stays(tmp_path, store, mlflow_client):
    args = [*GRID[:2], "trainer.max_epochs=2", "tracking.experiment=quiet"]
    result = train([*args, "tracking.analysis_plots=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert {p.name for p in (sweep_dir / "analysis").iterdir()} == {"trials.csv"}
    (parent,) = [r for r in runs_of(mlflow_client, "quiet") if r.data.tags.get("sweep") == "true"]
    assert parent.data.tags["best_run_id"]
    assert parent.data.metrics["importance.lr"] == pytest.approx(1.0)


# Serving the registered model in a process that cannot import hypersweep (as a machine
# without it): the torch module and MLflow's pyfunc, at batch sizes other than the example's.
SERVE = """
import sys
sys.modules["hypersweep"] = None  # any import of it now raises ImportError
import mlflow, numpy, torch
mlflow.set_tracking_uri(sys.argv[1])
module = mlflow.pytorch.load_model(sys.argv[2])
for rows in (7, 1):
    print(tuple(module(torch.randn(rows, 1, 8, 8)).shape), end=" ")
pyfunc = mlflow.pyfunc.load_model(sys.argv[2])
batch = numpy.random.rand(7, 1, 8, 8).astype("float32")
print(numpy.asarray(pyfunc.predict(batch)).argmax(1).shape)
loaded = [m for m, v in sys.modules.items() if m.startswith("hypersweep") and v is not None]
print("hypersweep-absent" if not loaded else loaded)
"""


def test_best_tests_once_registers_and_the_champion_predicts(
    grid_sweep, tmp_path, store, mlflow_client
):
    parent, children = grid_sweep
    result = hypersweep(["best", "--sweep", parent.info.run_id], tmp_path, store["uri"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    ranked = sorted(children, key=lambda r: r.data.metrics["best_val_loss"])
    rows = [
        line for line in out.splitlines() if line[:12] in {r.info.run_id[:12] for r in children}
    ]
    assert [row[:12] for row in rows] == [r.info.run_id[:12] for r in ranked]
    assert "registered digits-mlp version 1 as @champion" in out
    winner = mlflow_client.get_run(ranked[0].info.run_id)
    assert {"test_loss", "test_acc"} <= set(winner.data.metrics)
    for other in ranked[1:]:  # tested once: only the winner touches the test split
        assert not any(
            k.startswith("test_") for k in mlflow_client.get_run(other.info.run_id).data.metrics
        )

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pytorch.load_model("models:/digits-mlp@champion")
    fresh = torch.randn(7, 1, 8, 8)
    assert model(fresh).shape == (7, 10)
    info = mlflow.models.get_model_info("models:/digits-mlp@champion")
    assert info.signature is not None and info.saved_input_example_info is not None
    # A pt2 graph: what serving it needs is torch and MLflow, pinned to the installed versions
    from importlib.metadata import version

    local = mlflow.artifacts.download_artifacts("models:/digits-mlp@champion")
    requirements = (Path(local) / "requirements.txt").read_text().split()
    assert {f"{p}=={version(p)}" for p in ("torch", "mlflow")} <= set(requirements)
    assert not any(r.startswith(("hypersweep", "cloudpickle")) for r in requirements)
    assert (Path(local) / "data" / "model.pt2").is_file()
    assert mlflow_client.get_run(winner.info.run_id).data.tags["model_format"] == "pt2"
    # ... and it loads and predicts with hypersweep not importable at all, at other batch sizes
    served = subprocess.run(
        [sys.executable, "-c", SERVE, store["uri"], "models:/digits-mlp@champion"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout.splitlines() == ["(7, 10) (1, 10) (7,)", "hypersweep-absent"]

    again = hypersweep(["best", "--sweep", parent.info.run_id], tmp_path, store["uri"])
    assert again.returncode == 0
    assert "tested before: not evaluated again" in again.stdout
    assert "already registered as digits-mlp version 1" in again.stdout
    history = mlflow_client.get_metric_history(winner.info.run_id, "test_acc")
    assert len(history) == 1


def test_best_refuses_to_select_on_test_metrics(grid_sweep, tmp_path, store):
    result = hypersweep(
        ["best", "--experiment", "grid", "--metric", "test_acc"], tmp_path, store["uri"]
    )
    assert result.returncode == 2
    assert "select on a validation metric" in result.stderr and "never on training or test" in (
        result.stderr
    )


def test_a_missing_store_or_run_is_one_line_and_creates_nothing(tmp_path, store):
    missing = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    (tmp_path / "elsewhere").mkdir()
    for args in (["best"], ["reproduce", "0123abcd"]):
        result = hypersweep(args, tmp_path, missing)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"hypersweep: error: --tracking-uri='{missing}': no MLflow store there; expected the "
            "store a sweep wrote (run from the directory of the sweep, or pass --tracking-uri)"
        ]
    assert list((tmp_path / "elsewhere").iterdir()) == []
    unknown = hypersweep(["reproduce", "0123abcd"], tmp_path, store["uri"])
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"hypersweep: error: run_id='0123abcd': no such run in {store['uri']}; expected the id "
        "of a run there (the MLflow UI shows it, and `hypersweep best` prints the best one's)"
    ]


def test_reproduce_gets_the_same_metrics(tmp_path, store, mlflow_client):
    result = train(
        [
            "regularization=all",
            "trainer.max_epochs=3",
            "model.hidden_units=16",
            "tracking.experiment=single",
            "trainer.device=cpu",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (source,) = runs_of(mlflow_client, "single")
    again = hypersweep(["reproduce", source.info.run_id], tmp_path, store["uri"])
    assert again.returncode == 0, again.stderr[-3000:]
    copy = [r for r in runs_of(mlflow_client, "single") if r.info.run_id != source.info.run_id]
    assert len(copy) == 1 and copy[0].data.tags["reproduced_from"] == source.info.run_id
    for name in ("train_loss", "val_loss", "val_acc"):
        a = [m.value for m in mlflow_client.get_metric_history(source.info.run_id, name)]
        b = [m.value for m in mlflow_client.get_metric_history(copy[0].info.run_id, name)]
        assert a == b and len(a) == 3
    ignore = {"tracking.experiment"}
    assert {k: v for k, v in copy[0].data.params.items() if k not in ignore} == {
        k: v for k, v in source.data.params.items() if k not in ignore
    }


def test_babysitting_warm_starts_from_a_runs_best_checkpoint(tmp_path, store, mlflow_client):
    common = ["model.hidden_units=16", "tracking.experiment=baby", "trainer.device=cpu"]
    first = train([*common, "trainer.max_epochs=6", "lr=0.01"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (source,) = runs_of(mlflow_client, "baby")
    second = train(
        [*common, "trainer.max_epochs=2", "lr=0.001", f"resume_from={source.info.run_id}"],
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    (resumed,) = [r for r in runs_of(mlflow_client, "baby") if r.info.run_id != source.info.run_id]
    assert resumed.data.tags["resumed_from"] == source.info.run_id
    assert resumed.data.params["optimizer.lr"] == "0.001"
    first_epoch = mlflow_client.get_metric_history(resumed.info.run_id, "val_loss")[0].value
    source_first = mlflow_client.get_metric_history(source.info.run_id, "val_loss")[0].value
    # Continues from the trained weights, not from a fresh initialization.
    assert first_epoch < source_first
    assert first_epoch == pytest.approx(source.data.metrics["best_val_loss"], rel=0.2)

    bad = train(
        [*common, "model.hidden_units=32", f"resume_from={source.info.run_id}"], cwd=tmp_path
    )
    assert bad.returncode == 2
    assert (
        f"resume_from='{source.info.run_id}': its checkpoint does not fit this model" in bad.stderr
    )


def test_rank_breaks_accuracy_ties_on_validation_loss(store, mlflow_client):
    from hypersweep.selection import find_runs, rank

    exp = mlflow_client.create_experiment("ties")
    made = {}
    # Two tied pairs created in opposite orders (lower loss last, then first): whatever order
    # the store returns runs in, only the tie-break puts both pairs right.
    for name, acc, loss in [
        ("b", 0.99, 0.12),
        ("c", 0.99, 0.05),
        ("e", 0.98, 0.02),
        ("a", 0.98, 0.09),
        ("d", 0.97, 0.01),
    ]:
        run = mlflow_client.create_run(exp, run_name=name)
        mlflow_client.log_param(run.info.run_id, "trainer.early_stopping.monitor", "val_acc")
        mlflow_client.log_metric(run.info.run_id, "best_val_acc", acc)
        mlflow_client.log_metric(run.info.run_id, "best_val_loss", loss)
        mlflow_client.set_terminated(run.info.run_id)
        made[run.info.run_id] = name
    ranking = rank(find_runs(mlflow_client, "ties", None))
    assert ranking.metric == "best_val_acc"
    assert [made[r.info.run_id] for r in ranking.runs] == ["c", "b", "e", "a", "d"]


@pytest.mark.parametrize("monitor", ["val_acc", "val_loss"])
def test_a_run_is_outranked_only_by_a_finished_run_with_a_model_that_ranks_above_it(
    store, mlflow_client, monitor
):
    from hypersweep.tracking.ranking import outranking_run
    from hypersweep.tracking.store import PARENT_TAG

    metric, mode = f"best_{monitor}", "max" if monitor == "val_acc" else "min"
    exp = mlflow_client.create_experiment("sweep")
    parent = mlflow_client.create_run(exp, tags={"sweep": "true"}).info.run_id
    other_sweep = mlflow_client.create_run(exp, tags={"sweep": "true"}).info.run_id

    def child(acc, loss, tags=None, status="FINISHED", sweep=parent):
        run = mlflow_client.create_run(exp, tags={PARENT_TAG: sweep, **(tags or {})}).info.run_id
        mlflow_client.log_metric(run, "best_val_acc", acc)
        mlflow_client.log_metric(run, "best_val_loss", loss)
        if status:
            mlflow_client.set_terminated(run, status)
        return run

    def outranked_by(acc, loss):
        mine = {"best_val_acc": acc, "best_val_loss": loss}
        return outranking_run(store["uri"], exp, parent, mine, metric, mode)

    # Better than anything below, but without a model or not finished, or of another sweep.
    child(0.99, 0.01, {"status_reason": "pruned"})
    child(0.99, 0.01, {"refit": "skipped"})
    child(0.99, 0.01, {"refit": "diverged"})
    child(0.99, 0.01, status=None)
    child(0.99, 0.01, status="FAILED")
    child(0.99, 0.01, sweep=other_sweep)
    assert outranked_by(0.5, 0.9) is None
    good = child(0.9, 0.3, {"refit": "done"})
    assert outranked_by(0.9, 0.3) is None  # an exact tie refits
    assert outranked_by(0.9, 0.2) is None  # ranks above: lower loss
    assert outranked_by(0.9, 0.4) == good  # the same metric, a higher loss: below
    assert outranked_by(0.8, 0.1 if monitor == "val_acc" else 0.5) == good
    assert outranked_by(0.95, 0.35 if monitor == "val_acc" else 0.2) is None


def test_reproduce_refuses_a_stored_config_that_names_untrusted_code(
    tmp_path, store, mlflow_client
):
    # A config.yaml on a shared server, edited to call os.system and to trust `os` itself.
    result = train(["trainer.max_epochs=1", "tracking.experiment=single"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (source,) = runs_of(mlflow_client, "single")
    config = yaml.safe_load((Path(source.data.tags["output_dir"]) / "config.yaml").read_text())
    config["model"]["_target_"] = "os.system"
    config["hypersweep"]["trusted_targets"] = ["os"]
    tampered = tmp_path / "tampered" / "config.yaml"
    tampered.parent.mkdir()
    tampered.write_text(yaml.safe_dump(config))
    mlflow_client.log_artifact(source.info.run_id, str(tampered))
    again = hypersweep(["reproduce", source.info.run_id], tmp_path, store["uri"])
    assert again.returncode == 2
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert lines == [
        "hypersweep: error: model._target_='os.system' is not a trusted target: expected one "
        "under torch.optim, hypersweep, optuna.samplers, optuna.pruners, "
        "hydra_plugins.hypersweep_sweeper, or a module listed in hypersweep.trusted_targets"
    ], again.stderr[-2000:]
    assert [r.info.run_id for r in runs_of(mlflow_client, "single")] == [source.info.run_id]


def test_ui_serves_the_store_on_loopback_and_links_the_sweeps_runs_table(tmp_path):
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from mlflow import MlflowClient

    grid = ["-m", "optimizer=adam,sgd", "lr=0.1,0.01", "trainer.max_epochs=2"]
    result = train([*grid, "model.hidden_units=16"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (parent,) = client.search_runs(["1"], filter_string="tags.sweep = 'true'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen(
        [sys.executable, "-m", "hypersweep.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=_train_env(None),  # the store under cwd, as train.py gets it
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert ui.stdout.readline().startswith(f"MLflow UI at http://127.0.0.1:{port} ")
        link = ui.stdout.readline().strip()
        key = f"hypersweep-{parent.info.run_id}"
        base = f"http://127.0.0.1:{port}"
        assert link == (
            f"{base}/#/experiments/{parent.info.experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={key}"
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "no UI in 90 s"
                time.sleep(0.5)
        # the UI's server reads the layout the link names from the project's store
        query = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={parent.info.experiment_id}"
        with urllib.request.urlopen(query, timeout=10) as r:
            tags = {t["key"]: t["value"] for t in json.load(r)["experiment"]["tags"]}
        view = json.loads(tags[f"mlflow.sharedViewState.{key}"])
        assert view["selectedColumns"] == [
            "metrics.`best_val_loss`",
            "metrics.`best_val_acc`",
            "metrics.`epochs_run`",
            "params.`choice.optimizer`",
            "params.`lr`",
            "tags.`status_reason`",
        ]
        assert view["orderByKey"] == "metrics.`best_val_loss`" and view["orderByAsc"] is True
        assert view["runsExpanded"] == {parent.info.run_id: True}
        with socket.socket() as s:  # loopback only
            outside = socket.gethostbyname(socket.gethostname())
            if not outside.startswith("127."):
                assert s.connect_ex((outside, port)) != 0
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    with socket.socket() as s:  # Ctrl-C stopped the server too
        assert s.connect_ex(("127.0.0.1", port)) != 0
