"""The baseline of search_cost.py: the search of `python train.py -m search=hyperband` written as
a user would write it by hand, with Optuna and PyTorch only: no Hydra, no MLflow, no
checkpoints, no output files, an in-memory study.

Same data split (hypersweep's digits loader), same model, optimizers and training loop
(`hypersweep.core`: the loop a job runs, so that every epoch's val_loss is bit-identical), same
search space suggested in the order the `hypersweep` sweeper suggests it (momentum after the
optimizer it depends on), TPE with the preset's seed and options, Hyperband with the preset's
resources. Optuna's Hyperband assigns a trial's bracket by hashing the study's name: given the
sweep's study name, this script runs exactly the sweep's trials.

    python benchmarks/plain_optuna.py --study-name NAME [--trials 100] [--seed 0] [--out F]

Writes each trial (number, state, params, value, per-epoch values) to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from pathlib import Path

import optuna
import torch
from omegaconf import OmegaConf

from hypersweep.core.data import load
from hypersweep.core.fit import EarlyStopping, Member, fit_members
from hypersweep.core.models import MLP
from hypersweep.core.optim import adam, build_optimizer

ROOT = Path(__file__).resolve().parents[1]
MAX_EPOCHS, PATIENCE = 60, 8  # conf/search/tpe.yaml
OPTIMIZERS = {
    "adam": lambda lr, beta: partial(adam, lr=lr, beta1=beta, beta2=0.999, eps=1e-8),
    "momentum": lambda lr, beta: partial(torch.optim.SGD, lr=lr, momentum=beta),
    "nesterov": lambda lr, beta: partial(torch.optim.SGD, lr=lr, momentum=beta, nesterov=True),
    "rmsprop": lambda lr, beta: partial(
        torch.optim.RMSprop, lr=lr, alpha=0.99, eps=1e-8, momentum=0.0
    ),
}


def objective(trial: optuna.Trial, data) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    name = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    hidden = trial.suggest_categorical("model.hidden_units", [32, 64, 128, 256])
    depth = trial.suggest_int("model.depth", 1, 3)
    batch_size = trial.suggest_categorical("trainer.batch_size", [32, 64, 128, 256])
    dropout = trial.suggest_float("regularization.dropout", 0.0, 0.5)
    l2 = trial.suggest_float("regularization.l2", 1e-6, 1e-2, log=True)
    beta = 0.9  # the config's momentum where the optimizer has none to tune
    if name != "rmsprop":
        beta = round(1.0 - trial.suggest_float("1-momentum", 1 - 0.999, 1 - 0.8, log=True), 12)

    torch.manual_seed(0)
    model = MLP(data.input_shape, data.output_size, hidden_units=hidden, depth=depth,
                activation="relu", dropout=dropout, batchnorm=False)  # fmt: skip
    optimizer = build_optimizer(OPTIMIZERS[name](lr, beta), model, l2)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=1)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
        if not math.isfinite(metrics["val_loss"]):
            return None  # the loop stops a diverged run itself
        trial.report(metrics["val_loss"], epoch)
        return "pruned" if trial.should_prune() else None

    result = fit_members(
        [Member(model, optimizer, scheduler, data)],
        max_epochs=MAX_EPOCHS,
        batch_size=batch_size,
        stopper=EarlyStopping("min", PATIENCE, 0.0),
        on_epoch=on_epoch,
    )
    if result.status_reason in ("pruned", "diverged"):
        raise optuna.TrialPruned()
    return result.best_value


def records(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    """What search_cost.py compares between two runs of one search, trial by trial."""
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        }
        for t in trials
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load(OmegaConf.load(ROOT / "conf" / "data" / "digits.yaml"))
    study = optuna.create_study(
        study_name=args.study_name,
        direction="minimize",
        # the preset's options (hydra-optuna-sweeper's defaults), not Optuna 5's
        sampler=optuna.samplers.TPESampler(
            seed=args.seed, n_startup_trials=10, multivariate=False, constant_liar=False
        ),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=3, max_resource=MAX_EPOCHS, reduction_factor=3
        ),
    )
    study.optimize(lambda t: objective(t, data), n_trials=args.trials)
    best = study.best_trial
    print(f"best trial {best.number}: val_loss={best.value:.6f} {best.params}")
    if args.out:
        args.out.write_text(json.dumps(records(study.trials)) + "\n")


if __name__ == "__main__":
    main()
