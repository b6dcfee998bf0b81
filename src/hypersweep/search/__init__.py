"""Search: the sweep grammar and its search space, the Optuna study's naming and storage, the
pruning bridge of a job, the sweep's checks before its first job, and the compose cache."""
