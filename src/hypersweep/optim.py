"""The names configs give the optimizer factories (`_target_: hypersweep.optim.adam`); they live
in `hypersweep.core.optim`. These names are kept for every stored config that uses them: nothing
in the package imports this module."""

from hypersweep.core.optim import adam, adamw

__all__ = ["adam", "adamw"]
