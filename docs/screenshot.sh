#!/usr/bin/env bash
# How docs/mlflow-ui.png was taken: a real 24-trial TPE + Hyperband sweep, `mlflow ui` on
# loopback, and Debian's headless Chromium on the compare page of the sweep's runs.
# Needs: apt-get install chromium; run from the project root after `make install`.
set -euo pipefail
ROOT=$PWD; WORK=$(mktemp -d); cd "$WORK"
"$ROOT/.venv/bin/python" "$ROOT/train.py" -m search=hyperband hydra.sweeper.n_trials=24 \
    trainer.max_epochs=30 hydra.sweeper.study_name=digits-tpe-hyperband > sweep.log 2>&1
"$ROOT/.venv/bin/mlflow" ui --backend-store-uri "sqlite:///$WORK/mlruns/mlflow.db" \
    --host 127.0.0.1 --port 5055 > ui.log 2>&1 &
UI=$!; trap 'kill $UI' EXIT
until curl -sf http://127.0.0.1:5055/health > /dev/null; do sleep 1; done
IDS=$("$ROOT/.venv/bin/python" - "$WORK" <<'PY'
import json, sys, urllib.parse
from mlflow import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlruns/mlflow.db")
exp = client.get_experiment_by_name("digits-tpe-hyperband")
ids = [r.info.run_id for r in client.search_runs([exp.experiment_id])
       if r.data.tags.get("sweep") != "true"]
print(urllib.parse.quote(json.dumps(ids)), exp.experiment_id)
PY
)
set -- $IDS
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/chromium" --window-size=1700,1000 --virtual-time-budget=25000 \
    --screenshot="$ROOT/docs/mlflow-ui.png" \
    "http://127.0.0.1:5055/#/compare-runs?runs=$1&experiments=%5B%22$2%22%5D"
