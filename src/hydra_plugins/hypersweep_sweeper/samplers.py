"""Sampler factories behind the `nsgaii`, `nsgaiii` and `motpe` nodes, with the same keys and
outcomes as hydra-optuna-sweeper's (whose own factories stand in when it is installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypersweep.errors import ConfigError

if TYPE_CHECKING:  # Hydra imports this module at start-up: Optuna only when a sampler is built
    import optuna


def nsgaii(mutation: Any | None = None, **kwargs: Any) -> optuna.samplers.NSGAIISampler:
    """NSGA-II; `mutation` is passed only when set (Optuna 4 has no such argument)."""
    import optuna

    return optuna.samplers.NSGAIISampler(**kwargs, **_given(mutation=mutation))


def nsgaiii(
    reference_points: Any | None = None, mutation: Any | None = None, **kwargs: Any
) -> optuna.samplers.NSGAIIISampler:
    """NSGA-III; a config's list of reference points becomes the array Optuna expects."""
    import numpy as np
    import optuna

    points = None if reference_points is None else np.asarray(reference_points, dtype=float)
    return optuna.samplers.NSGAIIISampler(
        **kwargs, **_given(mutation=mutation, reference_points=points)
    )


def motpe_removed(**kwargs: Any) -> None:
    raise ConfigError(
        "hydra/sweeper/sampler=motpe is not allowed: The 'motpe' sampler was removed in Optuna "
        "4.0; expected tpe (TPESampler optimizes several objectives)"
    )


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}
