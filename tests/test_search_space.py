"""The override grammar → Optuna distributions, with clear errors for malformed values."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hypersweep.search.space import (
    SearchSpaceError,
    grid_values,
    parse,
)


def one(text: str):
    params, fixed = parse([text])
    assert not fixed
    (param,) = params
    return param


@pytest.mark.parametrize(
    "text,name,distribution,scale",
    [
        ("x=interval(0.1, 0.5)", "x", FloatDistribution(0.1, 0.5), "uniform"),
        ("x=int(interval(1, 8))", "x", IntDistribution(1, 8), "int"),
        ("x=interval(1, 8)", "x", FloatDistribution(1.0, 8.0), "uniform"),  # Hydra: floats
        ("x=tag(log, interval(1e-4, 1e-1))", "x", FloatDistribution(1e-4, 0.1, log=True), "log"),
        ("x=tag(log, int(interval(16, 512)))", "x", IntDistribution(16, 512, log=True), "int_log"),
        (
            "m=tag(one_minus_log, interval(0.9, 0.999))",
            "1-m",
            FloatDistribution(1 - 0.999, 1 - 0.9, log=True),
            "one_minus_log",
        ),
        ("x=range(1, 10, 3)", "x", IntDistribution(1, 7, step=3), "range"),  # 1, 4, 7
        ("x=range(0, 1, 0.25)", "x", FloatDistribution(0.0, 0.75, step=0.25), "range"),
        ("x=choice(adam, sgd)", "x", CategoricalDistribution(["adam", "sgd"]), "choice"),
        ("x=adam,sgd,rmsprop", "x", CategoricalDistribution(["adam", "sgd", "rmsprop"]), "choice"),
        ("x=choice(1, 2.5, true)", "x", CategoricalDistribution([1, 2.5, True]), "choice"),
    ],
)
def test_primitive_maps_to_distribution(text, name, distribution, scale):
    param = one(text)
    assert param.name == name and param.scale == scale
    assert param.distribution == distribution


def test_one_minus_log_gives_beta_and_shows_the_sample():
    param = one("momentum=tag(one_minus_log, interval(0.9, 0.999))")
    assert param.value(0.01) == pytest.approx(0.99)
    assert param.override(0.001) == "momentum=0.999"
    # Uniform in log10(1-β) over [-3, -1]: β = 1 - 10^U(-3, -1).
    d = param.distribution
    assert (math.log10(d.low), math.log10(d.high)) == pytest.approx((-3, -1))


def test_fixed_values_pass_through_and_the_last_override_wins():
    params, fixed = parse(
        ["trainer.max_epochs=5", "lr=interval(0.1, 1)", "lr=0.3", "optimizer=adam"]
    )
    assert params == []
    assert fixed == {"trainer.max_epochs": "5", "lr": "0.3", "optimizer": "adam"}


def test_string_choices_are_quoted_in_overrides_when_needed():
    assert one("x=choice(a, 'b c')").override("b c") == "x='b c'"
    assert one("x=choice(a, b)").override("a") == "x=a"


@pytest.mark.parametrize(
    "text,message",
    [
        ("x=interval(1, 1)", "lower bound must be below"),
        ("x=interval(2, 1)", "lower bound must be below"),
        ("x=tag(log, interval(0, 1))", "log scale needs bounds > 0"),
        ("x=tag(one_minus_log, interval(0.9, 1.0))", "0 <= a < b < 1"),
        ("x=tag(one_minus_log, int(interval(1, 5)))", "0 <= a < b < 1"),
        ("x=tag(logg, interval(1, 5))", "unknown tag 'logg'"),
        ("x=range(5, 1)", "holds no value"),
        ("x=range(0, 1, 0)", "nonzero step"),
        ("x=interval(1)", "x=interval(1)"),
        ("x=choice(", "choice("),
    ],
)
def test_malformed_value_is_one_clear_line(text, message):
    with pytest.raises(SearchSpaceError) as err:
        parse([text])
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert "x" in str(err.value)


@pytest.mark.parametrize(
    "text,values",
    [
        ("x=choice(a, b)", ["a", "b"]),
        ("x=int(interval(1, 4))", [1, 2, 3, 4]),
        ("x=range(0, 1, 0.25)", [0.0, 0.25, 0.5, 0.75]),
    ],
)
def test_grid_values(text, values):
    assert grid_values(one(text)) == values


def test_grid_rejects_continuous_intervals():
    with pytest.raises(SearchSpaceError, match="discrete"):
        grid_values(one("x=interval(0.1, 0.5)"))


def test_grid_validation_composes_one_job_per_structure():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hypersweep.search.space import jobs_to_compose

    batch = [
        [f"lr={lr}", f"optimizer={opt}", f"hydra.job.chdir={chdir}"]
        for lr in (0.1, 0.01, 0.001)
        for opt in ("adam", "sgd")
        for chdir in ("true", "false")
    ]
    chosen = jobs_to_compose(batch, OverridesParser.create(), lambda key: key == "optimizer")
    # every group option and every hydra.* value once; lr values do not change the structure
    assert chosen == [
        ["lr=0.1", "optimizer=adam", "hydra.job.chdir=true"],
        ["lr=0.1", "optimizer=adam", "hydra.job.chdir=false"],
        ["lr=0.1", "optimizer=sgd", "hydra.job.chdir=true"],
        ["lr=0.1", "optimizer=sgd", "hydra.job.chdir=false"],
    ]
    keys = jobs_to_compose(
        [["lr=0.1"], ["+extra=1"], ["lr=0.2"]], OverridesParser.create(), lambda key: False
    )
    assert keys == [["lr=0.1"], ["+extra=1"]]  # a different set of keys is its own structure
