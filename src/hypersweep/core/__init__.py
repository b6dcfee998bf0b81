"""The training core: data, models, the fit loop, stacked members, optimizers, checkpoints and
preemption. It imports torch and scikit-learn only: no Hydra, MLflow or Optuna."""
