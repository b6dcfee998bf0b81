"""The names configs give the models (`_target_: hypersweep.models.MLP`); they live in
`hypersweep.core.models`. These names are kept for every stored config that uses them
(`hypersweep reproduce`, a checkpoint's config): nothing in the package imports this module."""

from hypersweep.core.models import CNN, MLP, RNN

__all__ = ["CNN", "MLP", "RNN"]
