"""Hydra's override grammar → Optuna distributions.

key=interval(a, b)                  float uniform in [a, b]
key=int(interval(a, b))             integer uniform in [a, b]
key=tag(log, interval(a, b))        log-uniform (int if both bounds are ints)
key=tag(one_minus_log, interval(a, b))
                                    β with 1-β log-uniform in [1-b, 1-a]: momentum-like values,
                                    e.g. interval(0.9, 0.999) is β = 1 - 10^U(-3, -1)
key=range(a, b[, step])             a, a+step, ... short of b (Hydra's range: b excluded; a
                                    negative step counts down), as hydra-optuna-sweeper 1.4
key=choice(x, y, ...) or key=x,y    categorical
key=value                           fixed
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hypersweep.errors import SearchSpaceError  # noqa: F401 - raised here, imported from here

SCALES = ("log", "one_minus_log")


@dataclass(frozen=True)
class Param:
    key: str  # the config key the job receives (`momentum`, `optimizer`, ...)
    name: str  # the Optuna parameter (`1-momentum` when sampled as 1-β)
    distribution: BaseDistribution
    scale: str  # choice, uniform, int, log, int_log, one_minus_log, range

    def value(self, sampled: Any) -> Any:
        """The config value for an Optuna sample."""
        if self.scale == "one_minus_log":
            return round(1.0 - sampled, 12)
        return sampled

    def sample_from_value(self, value: Any) -> Any:
        return 1.0 - value if self.scale == "one_minus_log" else value

    def override(self, sampled: Any) -> str:
        value = self.value(sampled)
        if isinstance(value, str):
            return f"{self.key}={_quote(value)}"
        if isinstance(value, float):
            return f"{self.key}={value!r}"
        return f"{self.key}={value}"


def _quote(text: str) -> str:
    simple = text.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum()
    return text if simple else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _interval(key: str, sweep: IntervalSweep, text: str) -> Param:
    low, high = sweep.start, sweep.end
    unknown = set(sweep.tags) - set(SCALES)
    if unknown:
        raise SearchSpaceError(
            f"{key}={text}: unknown tag {sorted(unknown)[0]!r}: expected one of {', '.join(SCALES)}"
        )
    if not low < high:
        raise SearchSpaceError(f"{key}={text}: the lower bound must be below the upper bound")
    integer = isinstance(low, int) and isinstance(high, int)
    if "one_minus_log" in sweep.tags:
        if integer or not 0 <= low < high < 1:
            raise SearchSpaceError(
                f"{key}={text}: one_minus_log needs float bounds with 0 <= a < b < 1"
            )
        return Param(
            key, f"1-{key}", FloatDistribution(1 - high, 1 - low, log=True), "one_minus_log"
        )
    if "log" in sweep.tags:
        if low <= 0:
            raise SearchSpaceError(f"{key}={text}: a log scale needs bounds > 0")
        if integer:
            return Param(key, key, IntDistribution(low, high, log=True), "int_log")
        return Param(key, key, FloatDistribution(low, high, log=True), "log")
    if integer:
        return Param(key, key, IntDistribution(low, high), "int")
    return Param(key, key, FloatDistribution(float(low), float(high)), "uniform")


def _range(key: str, override: Override, sweep: RangeSweep, text: str) -> Param:
    """The values Hydra's range yields (stop excluded, a negative step counts down), as one
    discrete distribution from the lowest to the highest, as hydra-optuna-sweeper 1.4 maps it;
    counted, not enumerated. Where Hydra transforms the values (`shuffle`, or 1.4's `int()`,
    `float()` around a range), or a float step is not exact in floating point, the values
    themselves are the choices."""
    start, stop, step = (Decimal(str(v)) for v in (sweep.start, sweep.stop, sweep.step))
    if step == 0:
        raise SearchSpaceError(f"{key}={text}: range needs a nonzero step")
    if sweep.shuffle or getattr(sweep, "transformers", None):
        return _choice(key, override, text)
    count = math.ceil((Fraction(stop) - Fraction(start)) / Fraction(step))
    if count <= 0:
        raise SearchSpaceError(f"{key}={text}: the range holds no value (stop is excluded)")
    low, high = sorted((start, start + (count - 1) * step))
    if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        return Param(key, key, IntDistribution(int(low), int(high), step=int(abs(step))), "range")
    low_f, high_f, step_f = float(low), float(high), float(abs(step))
    exact = all(
        Decimal(str(f)) == d for f, d in ((low_f, low), (high_f, high), (step_f, abs(step)))
    )
    if not exact or (low_f != high_f and step_f < max(math.ulp(low_f), math.ulp(high_f))):
        values = sorted({float(start + i * step) for i in range(count)})
        return Param(key, key, CategoricalDistribution(values), "choice")
    return Param(key, key, FloatDistribution(low_f, high_f, step=step_f), "range")


def _choice(key: str, override: Override, text: str) -> Param:
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if not choices:
        raise SearchSpaceError(f"{key}={text}: choice needs at least one value")
    for c in choices:
        if not isinstance(c, (str, int, float, bool, type(None))):
            raise SearchSpaceError(f"{key}={text}: choices must be plain values, got {c!r}")
    return Param(key, key, CategoricalDistribution(choices), "choice")


def _param(override: Override) -> Param | str | None:
    """A searched param, a fixed value's text, or None for a bare deletion (`~key`)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return None if override.value_type is None else override.get_value_element_as_str()
    text = (override.input_line or "").partition("=")[2]
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return _interval(key, sweep, text)
    if isinstance(sweep, RangeSweep):
        return _range(key, override, sweep, text)
    if isinstance(sweep, ChoiceSweep):
        return _choice(key, override, text)
    raise SearchSpaceError(f"{key}={text}: not a search-space value this sweeper knows")


def parse(arguments: list[str]) -> tuple[list[Param], dict[str, str | None]]:
    """Split `key=value` strings into searched params and fixed overrides (later wins). A
    fixed override's key keeps its prefix (`+w`, `~z`); a bare `~z` maps to None."""
    parser = OverridesParser.create()
    parsed = []
    for argument in arguments:
        try:
            parsed += parser.parse_overrides([argument])
        except Exception as e:  # noqa: BLE001 - Hydra raises OverrideParseException and others
            raise SearchSpaceError(f"{argument}: {str(e).splitlines()[0]}") from None
    params: dict[str, Param] = {}
    fixed: dict[str, str | None] = {}
    for override in parsed:
        key = override.get_key_element()
        result = _param(override)
        params.pop(key, None)
        fixed.pop(key, None)
        if isinstance(result, Param):
            params[key] = result
        else:
            fixed[key] = result
    return list(params.values()), fixed


def grid_values(param: Param) -> list[Any]:
    """All values of a discrete param, for Optuna's GridSampler."""
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, IntDistribution) and not d.log:
        return list(range(d.low, d.high + 1, d.step))
    if isinstance(d, FloatDistribution) and d.step is not None:
        n = round((d.high - d.low) / d.step) + 1
        return [round(d.low + i * d.step, 12) for i in range(n)]
    raise SearchSpaceError(
        f"{param.key}: the grid sampler needs discrete values (choice, range or int interval), "
        f"not a continuous {param.scale} interval"
    )


def swept_keys(arguments: list[str]) -> dict[str, str]:
    """{key: value text} for the arguments that sweep (a grid's `a,b` or a search primitive);
    the key without its `+`/`++` prefix (`+model.blocks=1,2`: model.blocks), as it is named in
    the composed config and as MLflow accepts it."""
    parser = OverridesParser.create()
    out = {}
    for argument in arguments:
        try:
            (override,) = parser.parse_overrides([argument])
        except Exception:  # noqa: BLE001 - the sweeper reports malformed values itself
            continue
        if override.is_sweep_override():
            out[override.key_or_group] = (override.input_line or "").partition("=")[2]
    return out


def structural(key: str, is_group: Callable[[str], bool]) -> bool:
    """Whether an override of `key` changes what is composed (a config group, `hydra.*`)."""
    return key.startswith(("hydra.", "hydra/")) or key == "hydra" or is_group(key)


def job_structures(
    batch: Sequence[Sequence[str]], parser: OverridesParser, is_group: Callable[[str], bool]
) -> list[tuple[tuple, Sequence[str], list[Override]]]:
    """Per job: its structure (its set of keys with the values of the config-group and
    `hydra.*` overrides; values of other keys cannot fail to compose), the job, and its plain
    value overrides."""
    out = []
    for job in batch:
        structure, values = [], []
        for override in parser.parse_overrides(list(job)):
            key = override.key_or_group
            group = structural(key, is_group)
            value = override.get_value_element_as_str() if group and override.value_type else None
            structure.append((override.get_key_element(), value))
            if not group and override.value_type and not override.is_delete():
                values.append(override)
        out.append((tuple(sorted(structure, key=str)), job, values))
    return out


def jobs_to_compose(
    batch: Sequence[Sequence[str]], parser: OverridesParser, is_group: Callable[[str], bool]
) -> list[Sequence[str]]:
    """The jobs of a batch whose composition proves all of them composable: the first job of
    each distinct structure (`job_structures`)."""
    chosen: dict[tuple, Sequence[str]] = {}
    for structure, job, _ in job_structures(batch, parser, is_group):
        chosen.setdefault(structure, job)
    return list(chosen.values())
