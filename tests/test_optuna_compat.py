"""Behaviour that users of hydra-optuna-sweeper count on, held by our sweeper: the grammar's
distributions (range as its 1.4 line maps it), what reaches the job, the results file, the
grid, several objectives, a custom search space, the failure rate, rejected results and the
sampler configs. Where that plugin is installed (the Hydra 1.4 line), the same inputs are also
checked against the plugin itself."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.hypersweep_sweeper import config as sweeper_config
from hydra_plugins.hypersweep_sweeper.sweeper import HypersweepSweeper
from hypersweep.search.space import SearchSpaceError, grid_values, parse

from conftest import ROOT

APP = ROOT / "tests" / "helpers" / "quadratic.py"
try:
    from hydra_plugins.hydra_optuna_sweeper import _impl as official
    from hydra_plugins.hydra_optuna_sweeper import config as official_config
except ImportError:
    official = official_config = None
needs_official = pytest.mark.skipif(official is None, reason="hydra-optuna-sweeper not installed")


def distribution(text: str):
    params, fixed = parse([f"key={text}"])
    assert not fixed
    (param,) = params
    return param.distribution


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The quadratic task under our sweeper, its study in tmp_path/study.db named `q`."""
    return subprocess.run(
        [
            sys.executable,
            str(APP),
            "-m",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
            "hydra.sweeper.study_name=q",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def swept(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`sweep`, which must succeed."""
    result = sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def results(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())


def study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="q", storage=f"sqlite:///{tmp_path / 'study.db'}")


# -- the grammar ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("choice(3, 4)", CategoricalDistribution([3, 4])),
        ("choice(false, true)", CategoricalDistribution([False, True])),
        ("choice(red, green)", CategoricalDistribution(["red", "green"])),
        ("range(2, 6)", IntDistribution(2, 5)),
        ("range(2, 9, 3)", IntDistribution(2, 8, step=3)),
        ("range(1.5, 4.5, step=1)", FloatDistribution(1.5, 3.5, step=1.0)),
        ("interval(2, 7)", FloatDistribution(2.0, 7.0)),
        ("int(interval(2, 7))", IntDistribution(2, 7)),
        ("tag(log, interval(2, 7))", FloatDistribution(2.0, 7.0, log=True)),
        ("tag(log, int(interval(2, 7)))", IntDistribution(2, 7, log=True)),
    ],
)
def test_each_form_of_the_grammar_is_the_same_distribution(text, expected):
    assert distribution(text) == expected


def test_a_shuffled_range_is_a_categorical_of_its_values():
    d = distribution("shuffle(range(2, 6))")
    assert isinstance(d, CategoricalDistribution) and sorted(d.choices) == [2, 3, 4, 5]


RANGES = [
    "range(2, 6)",
    "range(1, 11, 4)",
    "range(6, 2, -1)",  # counts down
    "range(5, 0, -2)",
    "range(0, 1, 0.2)",
    "range(0, 1, 0.3)",  # short of 1.2: 0.9 is the last
    "range(2, 1, -0.25)",
    "sort(range(2, 1, -0.25))",
    "sort(range(0, 1, 0.25), reverse=true)",
    "range(7, 8, 5)",  # one value
    "range(0.25, 1, 3)",
    "int(range(0, 7, 2.5))",  # Hydra 1.4 casts 0, 2.5, 5 -> 0, 2, 5; 1.3 steps by 2
    "float(range(2, 5))",
    "shuffle(range(2, 5))",
    "sort(shuffle(range(2, 5)))",
]


@pytest.mark.parametrize("text", RANGES)
def test_a_range_samples_exactly_the_values_hydra_yields(text):
    """Whatever Hydra's range yields (stop left out, counting down with a negative step, cast
    by int() or float()), the study samples from exactly those values: the grid lists them."""
    override = OverridesParser.create().parse_override(f"key={text}")
    hydra_values = sorted(override.sweep_iterator())
    ours = sorted(grid_values(parse([f"key={text}"])[0][0]))
    assert ours == pytest.approx(hydra_values)
    assert [type(v) for v in ours] == [type(v) for v in hydra_values]


@needs_official
@pytest.mark.parametrize("text", RANGES + ["range(0, 1000000)", "tag(log, interval(1, 9))"])
def test_a_range_maps_to_the_distribution_the_official_plugin_builds(text):
    override = OverridesParser.create().parse_override(f"key={text}")
    theirs = official.create_optuna_distribution_from_override(override)
    ours = distribution(text)
    if isinstance(theirs, CategoricalDistribution):  # shuffled: compare the values
        assert isinstance(ours, CategoricalDistribution)
        assert sorted(ours.choices) == sorted(theirs.choices)
    else:
        assert ours == theirs


@pytest.mark.parametrize(
    "text",
    ["range(0, 3, 0)", "range(0, 3, 0.0)", "range(2, 2)", "range(4, 1)", "range(0, 2, -0.5)"],
)
def test_a_range_without_values_is_refused(text):
    with pytest.raises(SearchSpaceError):
        distribution(text)


def test_a_huge_range_is_counted_not_listed():
    listing = [mock.patch.object(Override, "sweep_iterator", side_effect=AssertionError("listed"))]
    if hasattr(RangeSweep, "__iter__"):  # Hydra 1.4
        listing.append(mock.patch.object(RangeSweep, "__iter__", side_effect=AssertionError))
    with contextlib.ExitStack() as stack:
        for patch in listing:
            stack.enter_context(patch)
        assert distribution("range(0, 10000000000000)") == IntDistribution(0, 10**13 - 1)
        assert distribution("range(0, 10000000000000.0, 1.0)") == FloatDistribution(
            0.0, 9999999999999.0, step=1.0
        )


def test_a_float_step_below_floating_point_resolution_samples_the_exact_values():
    d = distribution("range(-1000000000000000.0, -999999999999999.5, 0.3)")
    assert isinstance(d, CategoricalDistribution)
    assert d.choices == (-1000000000000000.0, -999999999999999.8)


@pytest.mark.parametrize(
    "text,values",
    [
        ("int(interval(4, 6))", [4, 5, 6]),
        ("range(3, 4)", [3]),
        ("range(0, 0.35, 0.1)", [0.0, 0.1, 0.2, 0.3]),
        ("choice(1, 1, 2)", [1, 1, 2]),
    ],
)
def test_the_grid_includes_both_ends(text, values):
    assert grid_values(parse([f"key={text}"])[0][0]) == values


def test_fixed_values_and_deletions_pass_through_as_written():
    params, fixed = parse(["a=choice(1, 2)", "b=5", "~z", "~w=10", "+v=1"])
    assert [p.key for p in params] == ["a"]
    assert fixed == {"b": "5", "~z": None, "~w": "10", "+v": "1"}


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"type": "float", "low": 0, "high": 10, "step": 2}, FloatDistribution(0, 10, step=2)),
        ({"type": "int", "low": 0, "high": 10, "step": 3}, IntDistribution(0, 9, step=3)),
        (
            {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
            FloatDistribution(0.1, 0.3, step=0.1),
        ),
        ({"type": "int", "low": 1, "high": 8, "log": True}, IntDistribution(1, 8, log=True)),
        ({"type": "float", "low": 1, "high": 2}, FloatDistribution(1.0, 2.0)),
        ({"type": "categorical", "choices": [1, 2]}, CategoricalDistribution([1, 2])),
    ],
)
def test_the_legacy_search_space_form_keeps_its_type(spec, expected):
    from omegaconf import OmegaConf

    from hypersweep.search.study import _legacy_param

    (param,), _ = parse([_legacy_param("key", OmegaConf.create(spec))])
    assert param.distribution == expected


# -- sweeps of a task that is not train.py ----------------------------------------------------
def test_our_sweeper_is_discovered_as_a_hydra_sweeper():
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert f"{HypersweepSweeper.__module__}.{HypersweepSweeper.__name__}" in found


def test_sweep_returns_nothing_and_its_jobs_ran(hydra_sweep_runner, tmp_path):
    seen = []
    runner = hydra_sweep_runner(
        calling_file=str(APP),
        calling_module=None,
        task_function=lambda cfg: seen.append(float(cfg.x)) or float(cfg.x) ** 2,
        config_path=".",
        config_name="quadratic",
        overrides=[
            "hydra/launcher=basic",
            "hydra.job.chdir=false",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        ],
        temp_dir=tmp_path / "sweep",
    )
    with runner:
        assert runner.returns is None
    assert len(seen) == 4


def test_fixed_and_deleted_keys_reach_the_job_and_stay_out_of_the_results(tmp_path):
    swept(tmp_path, "~z", "x=choice(0, 1, 2)", "y=0", "hydra/sweeper/sampler=tpe")
    best, trials = results(tmp_path), study(tmp_path).trials
    assert best["name"] == "optuna" and best["study_name"] == "q"
    assert set(best["best_params"]) == {"x"}  # y is fixed: no parameter
    assert best["best_value"] == study(tmp_path).best_value == 0
    # z deleted, y fixed at 0: each job returned x^2.
    assert all(t.value == t.params["x"] ** 2 for t in trials) and len(trials) == 12


def test_the_grid_runs_each_point_once_and_no_more(tmp_path):
    swept(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=10",
        "x=choice(-1, 1)",
        "y=range(-1, 1)",
        "z=0",
    )
    points = {(t.params["x"], t.params["y"]) for t in study(tmp_path).trials}
    assert points == {(-1, -1), (-1, 0), (1, -1), (1, 0)}
    assert len(study(tmp_path).trials) == 4
    best = results(tmp_path)
    assert best["best_value"] == 1 and best["best_params"]["y"] == 0


@pytest.mark.parametrize("sampler", ["random", "nsgaii"])
def test_two_objectives_report_a_front_of_which_none_dominates_another(tmp_path, sampler):
    swept(
        tmp_path,
        "pair=true",
        "hydra.sweeper.direction=[minimize, minimize]",
        f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=16",
        "x=range(0, 5)",
        "y=range(0, 3)",
    )
    front = results(tmp_path)["solutions"]
    assert front and "best_value" not in results(tmp_path)
    for a in front:
        assert isinstance(a["params"]["x"], int) and isinstance(a["params"]["y"], int)
        for b in front:
            assert not _dominates(a["values"], b["values"])
    everyone = [t.values for t in study(tmp_path).trials if t.state == TrialState.COMPLETE]
    for values in everyone:  # and nothing outside it dominates a member
        assert not any(_dominates(values, a["values"]) for a in front)


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_a_custom_search_space_adds_its_own_parameters(tmp_path):
    swept(
        tmp_path,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.custom_search_space=quadratic.extend",
    )
    best = results(tmp_path)["best_params"]
    assert abs(best["x"] - best["z"]) <= 0.3 and 0 <= best["+w"] <= 1
    for t in study(tmp_path).trials:  # the job got the z the function sampled
        assert t.value == pytest.approx(
            t.params["x"] ** 2 + t.params["y"] ** 2 + t.params["z"] ** 2
        )


def test_a_custom_search_space_outside_the_trusted_modules_is_refused(tmp_path):
    result = sweep(tmp_path, "hydra.sweeper.custom_search_space=os.system")
    assert result.returncode == 2
    assert "custom_search_space='os.system' is not a trusted target" in result.stderr
    assert not (tmp_path / "study.db").exists() or not study(tmp_path).trials


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_failures_stop_the_sweep_only_above_max_failure_rate(tmp_path, rate):
    result = sweep(
        tmp_path,
        "error=true",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.max_failure_rate={rate}",
    )
    states = {t.state for t in study(tmp_path).trials}
    assert states == {TrialState.FAIL}
    if rate < 1:
        assert result.returncode != 0
        assert "the config asked for an error" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(study(tmp_path).trials) == 6


def test_a_nan_result_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    # even with no failure allowed: the job did not fail, the study rejected what it returned
    swept(tmp_path, "nan_first=true", "hydra.sweeper.n_trials=3")
    states = [t.state for t in sorted(study(tmp_path).trials, key=lambda t: t.number)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_a_result_of_the_wrong_length_fails_its_trial(tmp_path):
    result = swept(
        tmp_path,
        "hydra.sweeper.direction=[minimize, minimize]",
        "hydra.sweeper.n_trials=2",
    )
    assert {t.state for t in study(tmp_path).trials} == {TrialState.FAIL}
    assert "Trial 0 failed" in result.stdout + result.stderr


def test_motpe_is_refused_in_one_line_naming_its_replacement(tmp_path):
    result = sweep(tmp_path, "hydra/sweeper/sampler=motpe")
    assert result.returncode == 2
    (line,) = [ln for ln in result.stderr.splitlines() if "motpe" in ln]
    assert "removed in Optuna 4.0" in line and "tpe" in line.split("expected")[-1]


# -- the sampler configs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler,key,default,given",
    [
        ("grid", "seed", None, 7),
        ("tpe", "group", False, True),
        ("tpe", "constant_liar", False, True),
        ("tpe", "multivariate", False, True),
        ("tpe", "constraints_func", None, "mod.fn"),
        ("cmaes", "n_startup_trials", 1, 4),
        ("cmaes", "popsize", None, 9),
        ("cmaes", "with_margin", False, True),
        ("cmaes", "lr_adapt", False, True),
        ("cmaes", "inc_popsize", -1, 2),
        ("nsgaii", "crossover", None, "mod.crossover"),
        ("nsgaii", "mutation", None, "mod.mutation"),
        ("nsgaiii", "dividing_parameter", 3, 4),
        ("gp", "deterministic_objective", False, True),
        ("qmc", "qmc_type", "sobol", "halton"),
    ],
)
def test_sampler_keys_have_the_official_defaults_and_take_overrides(sampler, key, default, given):
    from hydra import compose, initialize_config_dir

    from hypersweep.hydra_compat import initialize_kwargs

    with initialize_config_dir(str(APP.parent), **initialize_kwargs()):
        plain = compose("quadratic", [f"hydra/sweeper/sampler={sampler}"], return_hydra_config=True)
        set_ = compose(
            "quadratic",
            [f"hydra/sweeper/sampler={sampler}", f"hydra.sweeper.sampler.{key}={given}"],
            return_hydra_config=True,
        )
    assert plain.hydra.sweeper.sampler[key] == default
    assert set_.hydra.sweeper.sampler[key] == given


@needs_official
@pytest.mark.parametrize("name", sorted(sweeper_config.SAMPLERS))
def test_our_sampler_configs_are_the_official_ones_key_for_key(name):
    ours = sweeper_config.SAMPLERS[name]
    theirs = getattr(official_config, ours.__name__)

    def defaults(cls):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
            if f.name != "_target_"
        }

    assert defaults(ours) == defaults(theirs)


def test_the_nsga_factories_pass_mutation_only_when_set_and_points_as_an_array():
    from hydra_plugins.hypersweep_sweeper import samplers

    with mock.patch.object(optuna.samplers, "NSGAIISampler") as nsgaii:
        samplers.nsgaii(population_size=8)
        samplers.nsgaii(population_size=8, mutation="m")
    assert "mutation" not in nsgaii.call_args_list[0].kwargs
    assert nsgaii.call_args_list[1].kwargs["mutation"] == "m"
    sampler = samplers.nsgaiii(reference_points=[[0.0, 1.0], [1.0, 0.0]], seed=1)
    assert isinstance(sampler, optuna.samplers.NSGAIIISampler)
    with mock.patch.object(optuna.samplers, "NSGAIIISampler") as nsgaiii:
        samplers.nsgaiii(reference_points=[[0.0, 1.0], [1.0, 0.0]])
    points = nsgaiii.call_args.kwargs["reference_points"]
    assert points.tolist() == [[0.0, 1.0], [1.0, 0.0]] and points.dtype.kind == "f"


# -- the official sweeper on train.py ---------------------------------------------------------
@needs_official
@pytest.mark.slow
def test_the_official_sweeper_runs_train_py_with_our_tracking_analysis_and_best(
    tmp_path, store, mlflow_client
):
    from conftest import hypersweep, train

    result = train(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=1",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "lr=tag(log, interval(1e-4, 1e-1))",
            "optimizer=choice(adam, sgd)",
            "data=iris",
            "trainer.max_epochs=2",
            "model.hidden_units=8",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and set(best["best_params"]) == {"lr", "optimizer"}
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    (winner,) = [r for r in children if r.info.run_id == parent.data.tags["best_run_id"]]
    assert winner.data.metrics["best_val_loss"] == pytest.approx(best["best_value"])
    assert float(winner.data.params["lr"]) == pytest.approx(best["best_params"]["lr"])
    assert parent.data.params["sweeper"] == "OptunaSweeper"
    rows = (sweep_dir / "analysis" / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    selected = hypersweep(["best", "--no-register"], tmp_path, store["uri"])
    assert selected.returncode == 0, selected.stderr
    assert f"best run {winner.info.run_id}" in selected.stdout


# -- resuming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["random", "tpe", "cmaes", "qmc", "gp"])
def test_extending_a_seeded_study_draws_new_configurations_and_reproducibly(tmp_path, sampler):
    """A seeded study run for 3 trials, then extended to 6 by the same command: the 3 new trials
    are not the first 3 again, and doing it all again gives the same 6."""
    draws = []
    for copy in ("a", "b"):
        where = tmp_path / copy
        where.mkdir()
        for n in (3, 6):
            swept(
                where,
                f"hydra/sweeper/sampler={sampler}",
                "hydra.sweeper.sampler.seed=5",
                f"hydra.sweeper.n_trials={n}",
                "x=interval(-5, 5)",
                "y=interval(-5, 5)",
            )
        trials = sorted(study(where).trials, key=lambda t: t.number)
        draws.append([(t.params["x"], t.params["y"]) for t in trials])
    assert len(draws[0]) == 6 and len(set(draws[0])) == 6, draws[0]
    assert draws[0] == draws[1]


def test_a_trial_another_command_has_just_asked_is_alive_before_it_is_stamped():
    """Optuna creates a trial RUNNING and the asking command stamps its owner a moment later: a
    command starting in between must leave it alone, not fail it as an older sweep's."""
    from hydra_plugins.hypersweep_sweeper._impl import STALE_S, _alive

    study = optuna.create_study()
    study.ask()
    (fresh,) = study.trials
    assert not fresh.user_attrs.get("owner")
    assert _alive(fresh, time.time())
    assert not _alive(fresh, time.time() + STALE_S + 1)  # never stamped: an older sweep's


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_two_commands_on_one_study_share_it_without_failing_each_other(tmp_path, kind):
    """Several workers on one study (started together, on a journal file or an RDB): each leaves
    the other's running trials alone, both exit 0, and the study ends with n_trials done
    (overshoot at most one) and no trial marked interrupted."""
    spec = str(tmp_path / "shared.journal") if kind == "journal" else f"sqlite:///{tmp_path}/s.db"
    command = [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweeper.storage={spec}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=8",
        "hydra/sweeper/sampler=random",
        "sleep=0.5",
    ]
    procs = []
    for worker in ("a", "b"):
        (tmp_path / worker).mkdir()
        procs.append(
            subprocess.Popen(
                [*command, f"hydra.sweep.dir={tmp_path / worker / 'sweep'}"],
                cwd=tmp_path / worker,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        time.sleep(1.5)  # the second starts while the first runs a trial
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
    from hypersweep.search.pruning import open_storage

    trials = optuna.load_study(study_name="shared", storage=open_storage(spec)).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 8 <= len(done) <= 9 and len(trials) == len(done), [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.user_attrs.get("status_reason") == "interrupted"]
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert len(owners) == 2  # both did work
