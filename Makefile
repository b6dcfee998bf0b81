# Two entry points do all of the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# EXTRAS=dev,hydra14 VENV=.venv-hydra14 installs the Hydra 1.4 line instead (see .ci/run).
EXTRAS ?= dev

.PHONY: install demo test lint ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, so that the `torch` requirement resolves against the CPU build instead of pulling CUDA.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)" 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import torch, hydra, optuna, mlflow, sklearn, cmaes, hypersweep"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python train.py -m optimizer=adam,sgd lr=0.1,0.01,0.001

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

ui: install
	$(BIN)/hypersweep ui --port 5000

clean:
	rm -rf multirun outputs mlruns
