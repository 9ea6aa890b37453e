# Two entry points a new user needs: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# One single-threaded process per core beats BLAS threads here (see benchmarks/README.md).
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv run test test-ui lint results retrain ui clean-venv

venv: $(VENV)/.installed

# torch is installed first and alone, pinned by constraints.txt, so that the resolver
# never reaches for a newer CUDA build to satisfy another package's range.
# tinysoundfont declares pyaudio, which is only for live playback; we render offline.
$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt tinysoundfont
	touch $@

run: venv
	$(BIN)/dvc repro

test: venv
	$(BIN)/python -m pytest

# Only the browser check of the MLflow UI (part of `make test`); screenshots in build/ui-check/.
test-ui: venv
	$(BIN)/python -m pytest -m ui

# The same steps as .github/workflows/retrain.yml, which runs this script too.
retrain: venv
	bash scripts/retrain.sh

# The MLflow UI on the project's store (or $$MLFLOW_TRACKING_URI), on this machine only.
ui: venv
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host 127.0.0.1 --port 5000

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

# docs/results.md from the committed metrics/*.json (the docs test fails when it is out of date).
results: venv
	$(BIN)/python scripts/results.py

clean-venv:
	rm -rf $(VENV)
