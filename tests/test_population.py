"""Population training (`hydra/launcher=population`): trials of one architecture train as one
stacked model, each with its own hyperparameters, and each member trains as its config trains
alone: the same per-epoch metrics, stopping epoch, status and best weights."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState
from test_sweeper import child_runs, load, trials_so_far

from hypersweep.build import member
from hypersweep.core import data as data_module
from hypersweep.core.checkpoint import load_checkpoint
from hypersweep.core.fit import EarlyStopping, fit_members
from hypersweep.core.population import Entrant, Population, fit_population, populations
from hypersweep.core.stacking import Stacked

from conftest import ROOT, TINY, compose_cfg, kill_train_when, train

EPOCHS = ["trainer.max_epochs=5", "trainer.batch_size=64", "data=digits"]


def _cfgs(common: list[str], each: list[list[str]]):
    return [compose_cfg([*TINY, *EPOCHS, *common, *own]) for own in each]


def _entrant(cfg, data, on_epoch=None) -> Entrant:
    es = cfg.trainer.early_stopping
    return Entrant(
        member(cfg, data, None),  # as its job builds it: its own seed, optimizer, schedule
        max_epochs=cfg.trainer.max_epochs,
        stopper=EarlyStopping(es.resolved_mode, es.patience, es.min_delta),
        monitor=es.monitor,
        batch_size=cfg.trainer.batch_size,
        l1=cfg.regularization.l1,
        seed=cfg.trainer.seed,
        on_epoch=on_epoch,
    )


def _alone(cfg, data):
    e = _entrant(cfg, data)
    options = {"max_epochs": e.max_epochs, "batch_size": e.batch_size, "l1": e.l1, "seed": e.seed}
    return fit_members([e.member], stopper=e.stopper, monitor=e.monitor, **options)


def _assert_trained_as_alone(together, alone, rel=1e-5):
    assert together.status_reason == alone.status_reason
    assert (together.epochs_run, together.best_epoch) == (alone.epochs_run, alone.best_epoch)
    for epoch, (t, a) in enumerate(zip(together.history, alone.history, strict=True), 1):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert t[key] == pytest.approx(a[key], rel=rel), (epoch, key)
    assert together.best_metrics.keys() == alone.best_metrics.keys()
    for k, v in alone.best_state.items():
        assert torch.allclose(together.best_state[k], v, rtol=1e-4, atol=1e-5), k


# Every optimizer family, each with members that differ in what a member may have of its own.
CASES = {
    "adam": (
        ["optimizer=adam"],
        [
            ["lr=0.001"],
            ["lr=0.003", "momentum=0.8", "trainer.seed=1"],
            ["lr=0.01", "optimizer.beta2=0.99", "optimizer.eps=1e-6", "regularization.l2=1e-3"],
        ],
    ),
    "adamw": (
        ["optimizer=adamw"],
        [["lr=0.001", "regularization.l2=0.01"], ["lr=0.003", "regularization.l2=0.1"]],
    ),
    "sgd, L1": (
        ["optimizer=sgd"],
        [["lr=0.1"], ["lr=0.03", "trainer.seed=2", "regularization.l1=1e-4"]],
    ),
    "momentum, schedules": (
        ["optimizer=momentum"],
        [
            ["lr=0.1", "scheduler=exponential", "scheduler.gamma=0.7"],
            ["lr=0.03", "momentum=0.5", "scheduler=piecewise", "scheduler.milestones=[2]"],
            ["lr=0.01", "scheduler=cosine", "scheduler.T_max=3"],
            ["lr=0.05", "scheduler=polynomial", "scheduler.power=2.0"],
        ],
    ),
    "nesterov": (["optimizer=nesterov"], [["lr=0.1"], ["lr=0.03", "momentum=0.99"]]),
    "rmsprop, plateau": (
        ["optimizer=rmsprop"],
        [
            ["lr=0.001"],
            ["lr=0.003", "optimizer.momentum=0.5", "optimizer.alpha=0.9"],
            ["lr=0.002", "scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.3"],
        ],
    ),
    "batch norm, own stopping": (
        ["optimizer=momentum", "regularization=batchnorm", "trainer.max_epochs=8"],
        [
            ["lr=0.01", "trainer.early_stopping.patience=1"],
            ["lr=0.02", "trainer.max_epochs=3"],
            ["lr=0.005", "trainer.early_stopping.patience=2", "trainer.seed=3"],
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_member_trains_as_its_config_trains_alone(case):
    common, each = CASES[case]
    cfgs = _cfgs(common, each)
    data = data_module.load(cfgs[0].data)
    entrants = [_entrant(c, data) for c in cfgs]
    assert populations(entrants) == [list(range(len(cfgs)))]  # one population
    together = fit_population(entrants)
    for cfg, t in zip(cfgs, together, strict=True):
        _assert_trained_as_alone(t, _alone(cfg, data))
    # each member's own model holds its best weights, loadable alone
    for e, t in zip(entrants, together, strict=True):
        assert all(torch.equal(v, e.member.model.state_dict()[k]) for k, v in t.best_state.items())


@pytest.mark.parametrize("case", CASES)
def test_members_that_join_a_training_population_train_as_they_would_alone(case):
    # The first member trains alone for an epoch; the others join one by one, each at the next
    # epoch: their own epoch 1, their own momentum buffers and Adam step counts from zero.
    common, each = CASES[case]
    cfgs = _cfgs(common, each)
    data = data_module.load(cfgs[0].data)
    entrants = [_entrant(c, data) for c in cfgs]
    population = Population(entrants[:1])
    results, sizes = {}, []
    for e in entrants[1:]:
        results.update(population.epoch())
        assert population.admits(e)
        population.add([e])
        sizes.append(len(population.live))
    while population.live:
        results.update(population.epoch())
    assert sizes == list(range(2, len(cfgs) + 1))  # nobody stopped before the last joined
    for i, cfg in enumerate(cfgs):
        _assert_trained_as_alone(results[i], _alone(cfg, data))


def test_sgd_momentum_buffers_start_at_each_members_first_step():
    # dampening scales every gradient but a buffer's first; a member without momentum uses its
    # gradient as it is, whatever its dampening (torch ignores it without momentum)
    cfgs = _cfgs(
        ["optimizer=momentum"],
        [
            ["lr=0.05", "+optimizer.dampening=0.5"],
            ["lr=0.1", "momentum=0.0", "+optimizer.dampening=0.5"],
            ["lr=0.03"],
        ],
    )
    data = data_module.load(cfgs[0].data)
    entrants = [_entrant(c, data) for c in cfgs]
    population = Population(entrants[:2])
    results = dict(population.epoch())
    population.add(entrants[2:])
    while population.live:
        results.update(population.epoch())
    for i, cfg in enumerate(cfgs):
        _assert_trained_as_alone(results[i], _alone(cfg, data))


def test_a_population_admits_only_members_it_can_train_as_they_would_alone():
    cfgs = _cfgs(["optimizer=adam"], [["lr=0.001"], ["lr=0.01"], ["model.hidden_units=32"]])
    data = data_module.load(cfgs[0].data)
    population = Population([_entrant(cfgs[0], data)])
    assert population.admits(_entrant(cfgs[1], data))
    assert not population.admits(_entrant(cfgs[2], data))  # another architecture
    sgd = _cfgs(["optimizer=sgd"], [[]])[0]
    assert not population.admits(_entrant(sgd, data))  # another optimizer family
    other = data_module.load(compose_cfg([*TINY, *EPOCHS, "data.split_seed=1"]).data)
    assert not population.admits(_entrant(cfgs[1], other))  # other data
    norm = _cfgs(["optimizer=adam", "regularization=batchnorm"], [[], []])
    with_norm = Population([_entrant(norm[0], data)])
    late = _entrant(norm[1], data)
    assert with_norm.admits(late)
    for m in late.member.model.modules():  # a cumulative average: counts would differ
        if isinstance(m, torch.nn.BatchNorm1d):
            m.momentum = None
    assert not with_norm.admits(late)


def test_a_member_that_stops_leaves_the_stack_and_the_others_go_on():
    # lr=1e3 diverges in its first epoch; the pruned one stops after epoch 2, by its callback
    cfgs = _cfgs(["optimizer=sgd"], [["lr=0.1"], ["lr=1e3"], ["lr=0.05", "trainer.seed=4"]])
    data = data_module.load(cfgs[0].data)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def reporter(i):
        def on_epoch(epoch, metrics):
            seen[i].append(epoch)
            return "pruned" if i == 2 and epoch == 2 else None

        return on_epoch

    sizes = []
    original = Stacked.keep

    def keep(self, index):
        sizes.append(len(index))
        original(self, index)

    entrants = [_entrant(c, data, reporter(i)) for i, c in enumerate(cfgs)]
    Stacked.keep = keep
    try:
        together = fit_population(entrants)
    finally:
        Stacked.keep = original
    assert [t.status_reason for t in together] == ["completed", "diverged", "pruned"]
    assert seen == {0: [1, 2, 3, 4, 5], 1: [1], 2: [1, 2]}
    assert sizes == [2, 1]  # the stack shrank as they stopped
    assert not math.isfinite(together[1].history[0]["train_loss"])
    _assert_trained_as_alone(together[0], _alone(cfgs[0], data))


def test_each_member_drops_out_at_its_own_rate():
    rates = (0.1, 0.5, 0.8)
    models = [torch.nn.Sequential(torch.nn.Linear(8, 8192), torch.nn.Dropout(p)) for p in rates]
    for m in models:  # every unit positive before dropout: a zero is a dropped unit
        torch.nn.init.constant_(m[0].weight, 0.1)
        torch.nn.init.constant_(m[0].bias, 1.0)
    stacked = Stacked(models).train()
    with torch.no_grad():
        out = stacked(torch.ones(3, 4, 8))
    for i, p in enumerate(rates):
        assert (out[i] == 0).float().mean().item() == pytest.approx(p, abs=0.01)
        kept = out[i][out[i] != 0]
        assert torch.allclose(kept, torch.full_like(kept, 1.8 / (1 - p)))  # inverted dropout
    with torch.no_grad():  # evaluation drops nothing
        assert torch.allclose(stacked.eval()(torch.ones(3, 4, 8)), torch.full((3, 4, 8192), 1.8))
    stacked.keep([2, 0])  # a stack that lost a member keeps the others' rates
    with torch.no_grad():
        out = stacked.train()(torch.ones(2, 4, 8))
    assert (out[0] == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert (out[1] == 0).float().mean().item() == pytest.approx(0.1, abs=0.01)


def test_members_that_cannot_share_a_stack_are_told_apart():
    cfgs = [
        compose_cfg([*TINY, *EPOCHS, *o])
        for o in (
            ["optimizer=adam"],
            ["optimizer=adam", "lr=0.01", "trainer.seed=1"],
            ["optimizer=sgd"],  # another optimizer family
            ["optimizer=adam", "model.hidden_units=32"],  # another architecture
            ["optimizer=adam", "trainer.batch_size=32"],
        )
    ]
    data = data_module.load(cfgs[0].data)
    entrants = [_entrant(c, data) for c in cfgs]
    assert populations(entrants) == [[0, 1], [2], [3], [4]]
    other = data_module.load(compose_cfg([*TINY, *EPOCHS, "data.split_seed=1"]).data)
    assert populations([entrants[0], _entrant(cfgs[1], other)]) == [[0], [1]]  # other data


# -- the launcher ------------------------------------------------------------------------------

POPULATION = ["hydra/launcher=population", "hydra.launcher.size=3"]
# Adam at lr=0.1 turns float noise in near-zero gradients into whole steps (~2e-5 apart).
GRID = ["data=iris", "trainer.max_epochs=4", "model.hidden_units=8", "lr=0.03,0.01,0.003,0.001"]


def _curves(client, run) -> dict[str, list[float]]:
    return {
        k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=_step)]
        for k in ("train_loss", "val_loss", "val_acc", "lr")
    }


def _own(params: dict[str, str]) -> dict[str, str]:
    """A run's params but where its command ran (its store's path)."""
    return {k: v for k, v in params.items() if not k.startswith("tracking.")}


def _step(m):
    return m.step


def _populations(log: str) -> list[list[int]]:
    """The populations a sweep's log says it trained: each one's jobs, its first ones and
    those that joined it, in order."""
    found: dict[int, list[int]] = {}
    for line in log.splitlines():
        if match := re.search(r"population of \d+: (#\d+(?:, #\d+)*)$", line):
            jobs = [int(j) for j in re.findall(r"#(\d+)", match.group(1))]
            found[jobs[0]] = jobs
        elif match := re.search(r"#(\d+) joins the population of #(\d+)", line):
            found[int(match.group(2))].append(int(match.group(1)))
    return list(found.values())


def test_a_grid_in_populations_logs_what_it_logs_one_job_at_a_time(tmp_path, mlflow_client):
    alone_dir, pop_dir = tmp_path / "alone", tmp_path / "population"
    for cwd, launcher in ((alone_dir, []), (pop_dir, POPULATION)):
        cwd.mkdir()
        result = train(["-m", *GRID, "optimizer=adam,momentum", *launcher], cwd=cwd)
        assert result.returncode == 0, result.stderr[-4000:]
    from mlflow import MlflowClient

    def runs(cwd: Path):
        client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
        return client, {r.data.tags["overrides"]: r for r in child_runs(client)}

    (ca, alone), (cp, pop) = runs(alone_dir), runs(pop_dir)
    assert len(pop) == 8 and pop.keys() == alone.keys()
    for key, a in alone.items():
        p = pop[key]
        assert p.info.status == a.info.status == "FINISHED"
        assert _own(p.data.params) == _own(a.data.params)
        for tag in ("status_reason", "job_num", "overrides"):
            assert p.data.tags[tag] == a.data.tags[tag]
        assert set(p.data.metrics) == set(a.data.metrics)
        for name, value in a.data.metrics.items():
            if name not in ("epoch_seconds",) and not name.endswith("seconds"):
                assert p.data.metrics[name] == pytest.approx(value, rel=1e-5), (key, name)
        curves_p, curves_a = _curves(cp, p), _curves(ca, a)
        for name, values in curves_a.items():
            assert curves_p[name] == pytest.approx(values, rel=1e-5), name
        arts = {f.path for f in cp.list_artifacts(p.info.run_id)}
        assert {"config.yaml", "overrides.yaml", "checkpoints", "plots"} <= arts
        out = Path(p.data.tags["output_dir"])
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (out / ".hydra" / name).is_file()
        overrides = yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())
        assert " ".join(overrides) == key
        ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
        assert ckpt["epoch"] == int(p.data.metrics["best_epoch"])
        assert (out / "train.log").read_text().count(p.info.run_id) == 1  # its own log line
    stdout = result.stdout + result.stderr
    # two families, four jobs each, three training at most: each family's first three, then
    # the fourth of one with the first freed slots, the last two together
    assert _populations(stdout) == [[0, 2, 4], [6], [1, 3], [5, 7]]
    assert stdout.count("member-epochs in") == 4  # what each population trained, and its logging


@pytest.mark.parametrize("refill", [True, False])
def test_the_sweeper_hands_a_population_its_trials_and_prunes_each_alone(tmp_path, store, refill):
    result = train(
        [
            "-m",
            f"hydra.launcher.refill={str(refill).lower()}",
            "search=hyperband",
            "data=iris",
            "model.hidden_units=8",
            "trainer.max_epochs=9",
            "hydra.sweeper.n_trials=8",
            "hydra.sweeper.study_name=s",
            "hydra/launcher=population",
            "hydra.launcher.size=4",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    study = load(tmp_path)
    assert len(study.trials) == 8
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    # Freed slots took the next trials at once: four trials of one structure (the first
    # sampled in full, the others like it), then four of the next, each population's jobs of
    # one structure, every trial trained in one.
    out = result.stdout + result.stderr
    trained = _populations(out)
    assert sorted(j for jobs in trained for j in jobs) == list(range(8))
    structural = ("optimizer", "model.depth", "trainer.batch_size")

    def structure(j):
        return tuple(study.trials[j].params[k] for k in structural)

    for jobs in [*trained, range(4), range(4, 8)]:
        assert len({structure(j) for j in jobs}) == 1
    assert all(int(n) <= 4 for n in re.findall(r"\((\d+) members training\)", out))
    # Trials 2 and 3 are pruned after 3 epochs, 0 and 1 train 9: with refill, trial 4 starts
    # while they train; in batches, after the first population has ended.
    assert (out.index("\t#4 : ") < out.index("population of #0: ")) == refill
    assert trained == ([[0, 1, 2, 3], [4, 5, 6, 7]] if not refill else trained)
    from mlflow import MlflowClient

    runs = child_runs(MlflowClient(store["uri"]))
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == list(range(8))
    for r in runs:
        trial = study.trials[int(r.data.tags["trial_number"])]
        assert r.data.tags["status_reason"] == trial.user_attrs["status_reason"]
        assert r.info.status == "FINISHED"
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(r.data.metrics["best_val_loss"])


CRASHING = [
    "-m",
    "hydra/sweeper=hypersweep",
    "hydra/sweeper/sampler=grid",
    "model._target_=flaky.CrashingMLP",
    "hypersweep.trusted_targets=[flaky]",
    "data=iris",
    "trainer.max_epochs=4",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.study_name=s",
    "hydra/launcher=population",
    "hydra.launcher.size=2",
]


def test_a_job_that_fails_in_its_set_up_frees_its_slot_and_the_sweep_goes_on(
    tmp_path, store, mlflow_client
):
    helpers = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    args = [*CRASHING, "model.hidden_units=choice(8, 13, 16)", "hydra.sweeper.max_failure_rate=0.5"]
    result = train(args, cwd=tmp_path, env=helpers)
    assert result.returncode == 0, result.stderr[-3000:]
    states = {t.params["model.hidden_units"]: t.state for t in load(tmp_path).trials}
    assert states == {8: TrialState.COMPLETE, 13: TrialState.FAIL, 16: TrialState.COMPLETE}
    runs = {int(r.data.params["model.hidden_units"]): r for r in child_runs(mlflow_client)}
    # width 13 fails building its model, before its run exists
    assert {w: r.info.status for w, r in runs.items()} == {8: "FINISHED", 16: "FINISHED"}


def test_a_sweep_its_failures_stop_ends_its_training_members_and_leaves_nothing_running(
    tmp_path, store, mlflow_client
):
    # width 13 fails while 8 trains: the failure budget (0) stops the sweep at once, and the
    # member still training ends KILLED, its trial marked to run again
    helpers = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    args = [*CRASHING, "model.hidden_units=choice(8, 13, 16)", "trainer.max_epochs=50"]
    result = train(args, cwd=tmp_path, env=helpers)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "hypersweep: sweep stopped: 1 of 3 trials failed" in result.stderr
    trials = load(tmp_path).trials
    assert all(t.state != TrialState.RUNNING for t in trials)
    runs = child_runs(mlflow_client)
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    stopped = [r for r in runs if r.info.status == "KILLED"]
    assert stopped and all(r.data.tags["status_reason"] == "interrupted" for r in stopped)
    for r in stopped:  # its trial runs again on resume
        trial = trials[int(r.data.tags["trial_number"])]
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["status_reason"] == "interrupted"


def test_a_job_that_cannot_join_runs_alone_in_the_same_sweep(tmp_path, store):
    result = train(
        ["-m", *GRID[:3], "lr=0.1,0.01", "data.cv_folds=2,null", *POPULATION], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout + result.stderr
    assert out.count("runs alone: data.cv_folds") == 2 and "population of 2: #" in out
    from mlflow import MlflowClient

    runs = child_runs(MlflowClient(store["uri"]))
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)


def test_recurrent_models_train_alone_and_say_why(tmp_path, store, mlflow_client):
    args = ["data=digits_seq", "model=rnn", "model.hidden_units=8", "trainer.max_epochs=1"]
    result = train(["-m", *args, "lr=0.1,0.01", *POPULATION], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout + result.stderr
    assert out.count("trains alone: a recurrent layer") == 2 and "population of" not in out
    runs = child_runs(mlflow_client)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


def test_a_signal_while_members_set_up_starts_no_more_and_says_it_once(
    tmp_path, store, mlflow_client
):
    helpers = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    model = ["model._target_=flaky.PreemptedMLP", "hypersweep.trusted_targets=[flaky]"]
    args = ["-m", *GRID[:3], "lr=0.1,0.01,0.001", *model, *POPULATION]
    result = train(args, cwd=tmp_path, env=helpers)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("hypersweep:")]
    assert lines == [
        "hypersweep: preempted (SIGTERM): 2 job(s) stopped in epoch 1 of their population, "
        "their runs KILLED, 1 job(s) not started: the same command runs them again"
    ]
    runs = child_runs(mlflow_client)
    assert sorted(r.data.tags["job_num"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "KILLED" for r in runs)


def _stop_while_training(args: list[str], cwd: Path, **kwargs) -> None:
    """Run the sweep with long trainings and SIGTERM it once the first population's three
    members have each reported epochs."""

    def training() -> bool:
        trials = trials_so_far(cwd)
        return len(trials) == 3 and all(len(t.intermediate_values) > 2 for t in trials)

    long = ["trainer.max_epochs=400", "trainer.early_stopping.patience=1000"]
    proc, _ = kill_train_when(
        [*args, *long, "trainer.batch_size=8"],
        cwd,
        training,
        240,
        "the population never trained",
        sig=signal.SIGTERM,
        **kwargs,
    )
    assert proc.returncode == 128 + signal.SIGTERM


def test_a_stopped_population_leaves_no_run_running_and_the_same_command_runs_it_again(
    tmp_path, store, mlflow_client
):
    args = [
        "-m",
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.study_name=s",
        "lr=tag(log, interval(1e-3, 1e-1))",
        "data=iris",
        "model.hidden_units=8",
        *POPULATION,
    ]
    log = tmp_path / "stderr.txt"
    _stop_while_training(args, tmp_path, stderr=log)
    said = [line for line in log.read_text().splitlines() if line.startswith("hypersweep:")]
    assert len(said) == 1 and "3 job(s) stopped" in said[0], said
    assert "Traceback" not in log.read_text()
    runs = child_runs(mlflow_client)
    assert len(runs) == 3
    assert all(r.info.status == "KILLED" for r in runs)
    assert all(r.data.tags["status_reason"] == "preempted" for r in runs)
    trials = load(tmp_path).trials
    assert [t.user_attrs.get("status_reason") for t in trials] == ["preempted"] * 3

    result = train([*args, "trainer.max_epochs=3"], cwd=tmp_path)  # the same study, shorter
    assert result.returncode == 0, result.stderr[-3000:]
    done = load(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6
    again = {t.user_attrs.get("reruns_trial"): t for t in done}
    for old in trials:  # each stopped trial ran again with its own params
        assert again[old.number].params == old.params
    finished = [r for r in child_runs(mlflow_client) if r.info.status == "FINISHED"]
    assert len(finished) == 6


def test_a_resumed_population_runs_its_stopped_trials_and_leaves_no_trial_waiting(tmp_path, store):
    # A swept structural key: the trials after the first are asked like it. When the stopped
    # trials are asked again first, no trial enqueued like another may stay behind, waiting
    # for a later command.
    args = [
        "-m",
        "hydra/sweeper=hypersweep",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.study_name=s",
        "lr=tag(log, interval(1e-3, 1e-1))",
        "model.hidden_units=choice(8, 16)",
        "data=iris",
        *POPULATION,
    ]
    _stop_while_training(args, tmp_path)
    stopped = load(tmp_path).trials
    result = train([*args, "trainer.max_epochs=3"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    # A member saves no state of its own: its trial runs again from its start, and says so.
    assert sorted(t.user_attrs.get("reruns_trial") for t in done) == [t.number for t in stopped]
    for t in stopped:
        assert f"Trial {t.number} was preempted: it runs again from its start" in result.stdout
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_metric_writes_of_many_runs_share_a_budget_of_the_process_time(monkeypatch):
    """A population's hundreds of runs each flush when due only while the process's flush
    budget lasts: writes take about `share` of the wall time, however many runs are due."""
    from hypersweep.tracking import runs

    clock = [100.0]
    monkeypatch.setattr(runs.time, "monotonic", lambda: clock[0])
    budget = runs.FlushBudget(share=0.05, burst=0.5)
    writes = 0
    for _ in range(1000):  # 1000 ticks of 0.1 s, 256 runs due at each, a write costs 20 ms
        clock[0] += 0.1
        for _run in range(256):
            if budget.allows():
                budget.spend(0.02)
                clock[0] += 0.02
                writes += 1
    wall = clock[0] - 100.0
    assert 0.04 <= writes * 0.02 / wall <= 0.06 + 0.5 / wall  # the share, plus one burst
    lone = runs.FlushBudget()
    assert lone.allows()  # one job, nothing spent: never held back


def test_runs_due_to_flush_wait_for_the_budget_and_lose_no_metric(monkeypatch, store):
    """JobRun.log_epoch asks the process's budget before a write: with the budget spent, many
    runs due at every epoch write nothing until their summary, which writes all of it."""
    from mlflow import MlflowClient

    from hypersweep.tracking import runs

    writes: list[str] = []
    log_batch = MlflowClient.log_batch

    def counted(self, run_id, metrics=(), *args, **kwargs):
        if metrics:
            writes.append(run_id)
        return log_batch(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    client = MlflowClient(store["uri"])
    experiment = client.create_experiment("budget")

    def population(budget: runs.FlushBudget) -> list[runs.JobRun]:
        monkeypatch.setattr(runs, "FLUSHES", budget)
        members = [
            runs.JobRun(store["uri"], experiment, f"m{i}", {}, {}, flush_every_s=0.0)
            for i in range(4)
        ]
        for epoch in range(10):
            for run in members:
                run.log_epoch(epoch, {"val_loss": 1.0 / (epoch + 1)})
        return members

    spent = population(runs.FlushBudget(share=0.0, burst=0.0))
    assert writes == []  # due at every epoch, held back by the spent budget
    for run in spent:
        run.log_summary({"best_val_loss": 0.1}, {})
        history = client.get_metric_history(run.run_id, "val_loss")
        assert sorted(m.step for m in history) == list(range(10))
    writes.clear()
    population(runs.FlushBudget(share=1.0, burst=1e9))
    assert len(writes) == 4 * 10  # a budget that lasts: each run writes when due
