"""Cross-validation (`data.cv_folds=k`): folds of train+val trained in lockstep, scored by their
mean, then a refit on all of train+val whose weights are the run's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypersweep.build import member as job_member
from hypersweep.core.data import load, load_folds
from hypersweep.core.fit import EarlyStopping, fit, fit_members, refit
from hypersweep.tracking.runs import load_run_checkpoint

from conftest import TINY, compose_cfg, hypersweep, train


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_folds_partition_train_val_stratified_and_keep_the_plain_test_rows():
    raw = compose_cfg(["data.standardize=false"]).data
    plain = load(raw)
    cv = compose_cfg(["data.standardize=false", "data.cv_folds=3"]).data
    folds, whole = load_folds(cv), load(cv)
    pool = torch.cat([plain.x_train, plain.x_val])
    assert len(folds) == 3
    # every train+val row is validated in exactly one fold and trains in the two others
    val_rows = [_rows(f.x_val) for f in folds]
    assert sum(len(v) for v in val_rows) == len(pool) == len(set().union(*val_rows))
    assert set().union(*val_rows) == _rows(pool)
    for f, v in zip(folds, val_rows, strict=True):
        assert _rows(f.x_train) == _rows(pool) - v
        assert torch.equal(f.x_test, plain.x_test) and torch.equal(f.y_test, plain.y_test)
    # stratified: each class is split evenly across the folds' validation rows
    counts = np.stack([np.bincount(f.y_val.numpy(), minlength=10) for f in folds])
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    # the refit split trains on all of train+val, validates on nothing, tests the same rows
    assert _rows(whole.x_train) == _rows(pool) and len(whole.x_val) == 0
    assert torch.equal(whole.x_test, plain.x_test)


def test_each_fold_is_standardized_on_its_own_training_rows():
    cfg = compose_cfg(["data=wine", "data.cv_folds=4"]).data
    raw = compose_cfg(["data=wine", "data.cv_folds=4", "data.standardize=false"]).data
    for fold, unscaled in zip(load_folds(cfg), load_folds(raw), strict=True):
        assert torch.allclose(fold.x_train.mean(0), torch.zeros(13), atol=1e-4)
        assert torch.allclose(fold.x_train.std(0, unbiased=False), torch.ones(13), atol=1e-3)
        # validation rows are scaled with the training rows' statistics, not their own
        mean, std = unscaled.x_train.mean(0), unscaled.x_train.std(0, unbiased=False)
        assert torch.allclose(fold.x_val, (unscaled.x_val - mean) / std, atol=1e-4)
    whole, unscaled = load(cfg), load(raw)
    mean, std = unscaled.x_train.mean(0), unscaled.x_train.std(0, unbiased=False)
    assert torch.allclose(whole.x_test, (unscaled.x_test - mean) / std, atol=1e-4)


def test_regression_folds_scale_targets_on_their_own_training_rows():
    overrides = ["data=synthetic_regression", "data.n_samples=400", "data.cv_folds=4"]
    folds, whole = load_folds(compose_cfg(overrides).data), load(compose_cfg(overrides).data)
    raw = load(compose_cfg([*overrides[:2], "data.standardize=false"]).data)
    assert sum(len(f.y_val) for f in folds) == len(whole.y_train) == 340
    for f in folds:
        assert abs(float(f.y_train.mean())) < 1e-4
        assert float(f.y_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert len({f.y_scale for f in folds}) == 4 and whole.y_scale not in {f.y_scale for f in folds}
    # the refit split's test targets are scaled like its train+val, in the plain split's rows
    assert len(whole.y_test) == len(raw.y_test) == 60
    assert np.corrcoef(whole.y_test.numpy(), raw.y_test.numpy())[0, 1] == pytest.approx(1.0)


def _member(cfg, data):
    return job_member(cfg, data, None)  # as a job builds it: seeded model, optimizer, schedule


def test_lockstep_folds_train_exactly_as_separate_fits_and_report_their_mean():
    cfg = compose_cfg([*TINY, "data=iris", "data.cv_folds=3", "scheduler=exponential"])
    options = {"max_epochs": 6, "batch_size": 16, "seed": 0}
    folds = load_folds(cfg.data)
    together = fit_members(
        [_member(cfg, f) for f in folds], stopper=EarlyStopping("min", 100), **options
    )
    alone = [
        fit(*vars(_member(cfg, f)).values(), stopper=EarlyStopping("min", 100), **options)
        for f in folds
    ]
    for epoch in range(6):
        for key in ("train_loss", "val_loss", "val_acc"):
            mean = sum(a.history[epoch][key] for a in alone) / 3
            assert together.history[epoch][key] == pytest.approx(mean, rel=1e-6)
    assert together.best_value == pytest.approx(min(h["val_loss"] for h in together.history))
    assert [m["val_loss"] for m in together.member_metrics] == pytest.approx(
        [a.history[together.best_epoch - 1]["val_loss"] for a in alone]
    )


def test_a_cv_run_logs_the_fold_mean_and_checkpoints_the_refit_on_train_val(job_cfg, mlflow_client):
    from hypersweep.job import run

    overrides = ["data=iris", "data.cv_folds=3", "scheduler=exponential", "trainer.max_epochs=8"]
    cfg = job_cfg(*overrides, "trainer.batch_size=16", "trainer.early_stopping.patience=2")
    objective = run(cfg)
    (r,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    m = r.data.metrics
    best = int(m["best_epoch"])
    assert objective == pytest.approx(m["best_val_loss"])
    assert m["refit_epochs"] == best and m["cv_val_loss_std"] >= 0 and "cv_val_acc_std" in m
    refit_curve = mlflow_client.get_metric_history(r.info.run_id, "refit_train_loss")
    assert sorted(p.step for p in refit_curve) == list(range(1, best + 1))
    # the checkpoint is a fresh model trained on all of train+val for the best epoch count,
    # at the learning rates the folds used (exponential decay), not any fold's weights
    lrs = [
        p.value
        for p in sorted(mlflow_client.get_metric_history(r.info.run_id, "lr"), key=lambda p: p.step)
    ]
    again = _member(cfg, load(cfg.data))
    refit(again, lrs[:best], batch_size=16, seed=0)
    state = load_run_checkpoint(cfg.tracking.uri, r.info.run_id)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in again.model.state_dict().items())
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[best - 1])
    assert lrs[0] > lrs[-1]


def test_a_diverged_cv_run_refits_up_to_its_best_epoch_like_a_plain_run_keeps_it(
    job_cfg, mlflow_client
):
    from hypersweep.job import run

    run(job_cfg("data=iris", "data.cv_folds=3", "optimizer=sgd", "lr=1e6"))
    (r,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert r.data.tags["status_reason"] == "diverged" and r.info.status == "FINISHED"
    assert (
        r.data.metrics["refit_epochs"]
        == r.data.metrics["best_epoch"]
        < r.data.metrics["epochs_run"]
    )
    checkpoints = mlflow_client.list_artifacts(r.info.run_id, "checkpoints")
    assert len(checkpoints) == (r.data.tags["refit"] == "done")


def test_a_cv_run_whose_refit_diverges_has_no_checkpoint_and_is_never_selected(
    job_cfg, mlflow_client, monkeypatch
):
    import hypersweep.job as job
    from hypersweep.selection import rank

    monkeypatch.setattr(job, "refit", lambda *a, **k: [0.5, float("nan")])
    job.run(job_cfg("data=iris", "data.cv_folds=3"))
    monkeypatch.undo()
    job.run(job_cfg("data=iris", "data.cv_folds=3", "lr=0.0001"))  # worse on validation
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    broken, sound = sorted(runs, key=lambda r: r.data.tags.get("refit") != "diverged")
    assert broken.data.tags["refit"] == "diverged" and sound.data.tags["refit"] == "done"
    assert broken.data.metrics["best_val_loss"] < sound.data.metrics["best_val_loss"]
    assert mlflow_client.list_artifacts(broken.info.run_id, "checkpoints") == []
    assert [r.info.run_id for r in rank(runs).runs] == [sound.info.run_id]


@pytest.mark.slow
def test_pruned_cv_trials_skip_the_refit_and_the_others_refit(tmp_path, store, mlflow_client):
    from optuna.trial import TrialState
    from test_sweeper import PRUNING, child_runs, load

    # test_sweeper's median-pruned random search, on iris (tiny) and cross-validated; every
    # unpruned trial refits (refit=all: which of them refit=best skips is tested below)
    search = [o for o in PRUNING if not o.startswith("data=")]
    args = ["-m", "data=iris", "data.cv_folds=3", "model.hidden_units=8", "trainer.refit=all"]
    args += search
    result = train([*args, "hydra.sweeper.study_name=s"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path)
    pruned = {t.number for t in study.get_trials(states=(TrialState.PRUNED,))}
    assert pruned and len(pruned) < 8
    for r in child_runs(mlflow_client):
        checkpoints = mlflow_client.list_artifacts(r.info.run_id, "checkpoints")
        if int(r.data.tags["trial_number"]) in pruned:
            assert r.data.tags["status_reason"] == "pruned" and "refit" not in r.data.tags
            assert checkpoints == [] and "refit_epochs" not in r.data.metrics
        else:
            assert r.data.tags["refit"] == "done" and len(checkpoints) == 1
            assert r.data.metrics["refit_epochs"] == r.data.metrics["best_epoch"]
        assert r.info.status == "FINISHED" and "cv_val_loss_std" in r.data.metrics


def test_too_many_folds_for_the_smallest_class_is_one_line_and_no_run(
    tmp_path, store, mlflow_client
):
    result = train(["data=iris", "data.cv_folds=50", "trainer.max_epochs=1"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hypersweep: error: data.cv_folds=50"), lines
    assert "expected at most 4" in lines[0] and "smallest class" in lines[0]
    assert (
        mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
        == []
    )


@pytest.mark.slow
def test_a_cv_sweep_selects_and_tests_the_refit_model(tmp_path, store, mlflow_client):
    from hypersweep.core.fit import evaluate
    from hypersweep.selection import rebuild_model

    result = train(
        ["-m", *TINY, "data=iris", "data.cv_folds=3", "lr=0.01,0.05", "trainer.max_epochs=20"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    best = hypersweep(["best", "--no-register"], tmp_path, store["uri"])
    assert best.returncode == 0, best.stderr
    runs = [
        r
        for r in mlflow_client.search_runs(
            [e.experiment_id for e in mlflow_client.search_experiments()]
        )
        if "test_acc" in r.data.metrics
    ]
    (tested,) = runs
    model, data = rebuild_model(load_run_checkpoint(store["uri"], tested.info.run_id))
    assert len(data.x_val) == 0  # the refit split: the test rows scaled with train+val's stats
    acc = float(evaluate(model, data.x_test, data.y_test, data.task)["acc"])
    assert tested.data.metrics["test_acc"] == pytest.approx(acc) and acc > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["best", "all"])
def test_a_cv_sweep_refits_only_runs_that_no_finished_run_outranks(
    tmp_path, store, mlflow_client, policy
):
    # Hydra's grid runs the jobs in order: a good learning rate, one that cannot catch up, and
    # the first again (a tie: no run outranks it, so it refits too).
    result = train(
        [
            "-m",
            *TINY,
            "data=iris",
            "data.cv_folds=3",
            "trainer.max_epochs=15",
            f"trainer.refit={policy}",
            "lr=0.05,0.00001,0.05",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from test_sweeper import child_runs

    good, bad, again = sorted(child_runs(mlflow_client), key=lambda r: int(r.data.tags["job_num"]))
    assert good.data.metrics["best_val_loss"] < bad.data.metrics["best_val_loss"]
    assert again.data.metrics["best_val_loss"] == good.data.metrics["best_val_loss"]
    for r in (good, again):
        assert r.data.tags["refit"] == "done"
        assert len(mlflow_client.list_artifacts(r.info.run_id, "checkpoints")) == 1
    if policy == "best":
        assert bad.data.tags["refit"] == "skipped"
        assert bad.data.tags["refit_outranked_by"] == good.info.run_id
        assert mlflow_client.list_artifacts(bad.info.run_id, "checkpoints") == []
        assert "refit_epochs" not in bad.data.metrics and bad.info.status == "FINISHED"
        assert (result.stdout + result.stderr).count("outranked: no refit") == 1
    else:
        assert bad.data.tags["refit"] == "done" and "refit_outranked_by" not in bad.data.tags
        assert "outranked" not in result.stdout + result.stderr
    # Selection sees only the runs with a model; the winner is one of the tie.
    best = hypersweep(["best", "--no-register"], tmp_path, store["uri"])
    assert best.returncode == 0, best.stderr
    assert any(f"best run {r.info.run_id}" in best.stdout for r in (good, again)), best.stdout
    assert ("2 runs ranked" if policy == "best" else "3 runs ranked") in best.stdout
