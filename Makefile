# mlvs: `make run` and `make test` set everything up by themselves on a fresh clone.
# The virtual environment holds exactly what uv.lock says; it is built once, and again
# only when pyproject.toml or uv.lock changes.

PYTHON ?= python3
# Python keeps compiled bytecode in .venv and in __pycache__ folders (both ignored by git).
# An environment that sets PYTHONDONTWRITEBYTECODE, as many CI images do, would make every
# process compile MLflow, pandas and scikit-learn from source again: measured on 2 cores,
# `import mlflow` takes 6.1 s of CPU that way against 2.5 s from the cache, and every mlvs
# command, notebook kernel and test pays it. What make runs writes its cache.
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs the environment; it comes from PyPI, in a small venv of its own beside the
# project's packages, because `uv sync` removes whatever the lock does not name from the
# environment it syncs (uv itself included, were it installed there).
UV_VERSION := 0.13.9
UV_HOME    := $(VENV)/.uv
UV         := $(UV_HOME)/bin/uv
UV_STAMP   := $(UV_HOME)/.uv-$(UV_VERSION)
# The environment uv syncs is .venv whatever the caller's shell says, and its Python is
# the one given here: uv never downloads an interpreter of its own.
UV_ENV     := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
# `:=`, not `?=`: some shells export HOST as the machine's name, and the servers must
# stay on loopback unless asked otherwise on the command line (make ui HOST=...).
HOST   := 127.0.0.1
UI_PORT  ?= 5000
LAB_PORT ?= 8888
SERVE_PORT ?= 8080
SERVE_ALIAS ?= champion
# The project kernel "Python (mlvs)" goes into the virtual environment's share/jupyter,
# where this JupyterLab finds it; nothing is written to the home directory.
KERNEL_PREFIX ?= $(abspath $(VENV))
# JupyterLab refuses to start as root unless told to; root is the usual user in a container.
LAB_AS_ROOT = $(if $(filter 0,$(shell id -u)),--allow-root)

.DEFAULT_GOAL := help
.PHONY: help setup lock run lint test bench fuzz demo golden lab ui serve clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV_STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "mlvs needs Python 3.11 or newer"'
	rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@touch $(UV_STAMP)

# A lock that no longer matches pyproject.toml stops here, in one line, before anything is
# installed; `--offline`: that comparison needs no index. uv resolves only when the
# requirements differ from those the lock recorded, so a resolution that needed the network
# (a fresh machine's empty cache) means the same: the lock is out of date.
$(STAMP): pyproject.toml uv.lock | $(UV_STAMP)
	@out=$$($(UV_ENV) $(UV) lock --check --offline 2>&1) || { case "$$out" in \
	    *"needs to be updated"*|*"network was disabled"*) echo "uv.lock is out of date with pyproject.toml: run \`make lock\` and commit uv.lock" >&2 ;; \
	    *) echo "$$out" >&2 ;; esac; exit 1; }
	$(PYTHON) -m venv --without-pip $(VENV)
	$(UV_ENV) $(UV) sync --frozen --extra dev --python $(BIN)/python --quiet
	@touch $(STAMP)

setup: $(STAMP) ## Create the virtual environment from uv.lock (once)

lock: $(UV_STAMP) ## Resolve pyproject.toml's dependencies again into uv.lock
	$(UV_ENV) $(UV) lock

run: $(STAMP) ## Set up, then run the pipeline (prepare -> train) on the embedded default
	$(BIN)/mlvs pipeline

lint: $(STAMP) ## Lint: ruff, the formatting, mypy and the import contracts
	$(BIN)/ruff check mlvs tests
	$(BIN)/ruff format --check mlvs tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Three workers on two cores: a test spends part of its time waiting (for a server to start,
# a kernel to answer, a child to exit), and a third worker fills those waits; with three, both
# cores stay busy from the first test to the last (vmstat). The gain is small against this
# machine's run-to-run spread: 880 to 1,105 s with three workers, 1,034 to 1,121 s with two.
test: lint ## Set up, lint, then run the whole test suite
	.ci/system-deps
	HYPOTHESIS_STORAGE_DIRECTORY=$$(mktemp -d) $(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder

bench: $(STAMP) ## Run the benchmarks into reports/benchmarks/latest.json; fails on a missed target
	$(BIN)/python -m pytest -m bench tests/benchmarks -s

fuzz: $(STAMP) ## Fuzz params, notebook parameters and the files read back from disk (journal, manifest, hash cache, dvc.lock, .dir), then 1,320 power-cut crash states, each for a bounded time
	$(BIN)/python tests/fuzz/fuzz_inputs.py
	.ci/system-deps
	$(BIN)/python tests/fuzz/power_cuts.py

demo: $(STAMP) ## The guided tour: pipeline, snapshots, retrain, every drill, rollback, then production: monitoring, a drift, a bad deploy rolled back (many minutes)
	$(BIN)/python tests/demo.py

golden: $(STAMP) ## Re-execute the notebooks and store their outputs (nbval's reference)
	$(BIN)/python tests/notebooks/update_golden.py

lab: $(STAMP) ## JupyterLab on 127.0.0.1 at notebooks/, with the project kernel registered
	$(BIN)/python -m ipykernel install --prefix "$(KERNEL_PREFIX)" --name mlvs --display-name "Python (mlvs)"
	$(BIN)/jupyter lab --ServerApp.ip=$(HOST) --ServerApp.port=$(LAB_PORT) --ServerApp.root_dir=notebooks --no-browser $(LAB_AS_ROOT)

# One web worker and no job runner (MLflow's GenAI jobs: eight more Python processes at start-up):
# one user browsing runs, artifacts and the registry needs neither.
ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 over the project's runs
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host $(HOST) --port $(UI_PORT) --workers 1

serve: $(STAMP) ## Scoring service of the champion on 127.0.0.1:8080, following the alias (Ctrl-C stops it)
	$(BIN)/mlvs serve --alias $(SERVE_ALIAS) --host $(HOST) --port $(SERVE_PORT)

clean: ## Remove executed reports, caches and the venv (keeps data, models and the MLflow store)
	rm -rf reports/*.ipynb reports/*.html .pytest_cache .hypothesis .ruff_cache .mypy_cache .import_linter_cache
	rm -rf $(VENV)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
