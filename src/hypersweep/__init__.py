"""hypersweep: declarative hyperparameter search for PyTorch on Hydra, Optuna and MLflow."""

from hypersweep.config import register_resolvers

register_resolvers()
