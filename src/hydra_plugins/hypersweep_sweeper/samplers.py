"""Sampler factories for option names that current Optuna no longer has."""

from __future__ import annotations

from typing import Any

import optuna


def motpe(n_ehvi_candidates: int = 24, **kwargs: Any) -> optuna.samplers.TPESampler:
    """hydra-optuna-sweeper's `motpe`: TPESampler handles several objectives since Optuna 3."""
    return optuna.samplers.TPESampler(n_ei_candidates=n_ehvi_candidates, **kwargs)
