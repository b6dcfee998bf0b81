#!/usr/bin/env bash
# CUDA paths on a GPU machine (run from the project root, .whl/ filled by ../shared/tools/gpu-wheels.sh):
# device auto -> CUDA, AMP bf16/fp16 jobs, 4 jobs sharing one GPU through joblib with ASHA pruning.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/* 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
ROOT=$PWD; mkdir -p /tmp/w && cd /tmp/w
# 1. device auto picks CUDA; AMP bf16 and fp16 jobs
for p in fp32 bf16 fp16; do python3 $ROOT/train.py trainer=fast trainer.precision=$p tracking.experiment=gpu 2>&1 | grep -E "hypersweep\]|error|Error" ; done
python3 - <<'PY'
from mlflow import MlflowClient
import os
c = MlflowClient("sqlite:///" + os.path.abspath("mlruns/mlflow.db"))
e = c.get_experiment_by_name("gpu")
for r in c.search_runs([e.experiment_id]):
    print(r.data.tags["device"], r.data.params["trainer.precision"], r.data.tags["status_reason"], round(r.data.metrics["best_val_loss"], 4))
PY
# 2. several jobs on one GPU at once (joblib, 4 workers), pruning through the journal storage
python3 $ROOT/train.py -m search=asha hydra/launcher=joblib hydra.launcher.n_jobs=4 hydra.sweeper.n_jobs=4 hydra.sweeper.n_trials=16 trainer.max_epochs=20 trainer.num_threads=1 hydra.sweeper.study_name=gpu4 2>&1 | grep -E "trial-|Best|rror" | cut -c1-140
nvidia-smi --query-compute-apps=pid,used_memory --format=csv || true
python3 - <<'PY'
from mlflow import MlflowClient
import os, collections
c = MlflowClient("sqlite:///" + os.path.abspath("mlruns/mlflow.db"))
e = c.get_experiment_by_name("gpu4")
runs = [r for r in c.search_runs([e.experiment_id]) if r.data.tags.get("sweep") != "true"]
print(len(runs), "runs;", collections.Counter(r.data.tags["device"] for r in runs), collections.Counter(r.data.tags["status_reason"] for r in runs))
starts = sorted((r.info.start_time, r.info.end_time) for r in runs)
overlap = max(sum(1 for s, e2 in starts if s <= t < e2) for t, _ in starts)
print("max runs training at the same time:", overlap)
PY
