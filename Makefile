# Prometheus: `make run` runs the pipeline on the embedded default; `make test` runs
# every check CI runs. Both create the virtual env and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKG_SOURCES := pyproject.toml

.PHONY: run test lint typecheck imports pytest install install-dev clean help bench

help:
	@echo "make run   - run the whole pipeline on the embedded default (bundled sample)"
	@echo "make test  - lint, type check, import contracts and the whole test suite"
	@echo "make clean - remove the virtual env and run outputs"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python $(PKG_SOURCES)
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python $(PKG_SOURCES)
	$(BIN)/pip install --quiet -e '.[dev,gcp]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/prometheus-trader run

lint: install-dev
	$(BIN)/ruff check shared tests functions bench scripts
	$(BIN)/ruff format --check shared tests functions bench scripts

typecheck: install-dev
	$(BIN)/mypy

imports: install-dev
	$(BIN)/lint-imports

pytest: install-dev
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck imports pytest checkov

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache

bench: install
	$(BIN)/python bench/bench_pipeline.py

.PHONY: stage
stage: install-dev
	$(BIN)/python scripts/stage.py

.PHONY: checkov
checkov:
	PYTHON=$(PYTHON) scripts/checkov.sh

.PHONY: cost
cost: install-dev
	$(BIN)/python scripts/cost.py --json var/cost.json
