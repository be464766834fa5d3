# Prometheus: `make run` runs the pipeline on the embedded default; `make test` runs
# every check CI runs. Both create the virtual env and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck imports pytest install install-dev clean help bench

help:
	@echo "make run   - run the whole pipeline on the embedded default (bundled sample)"
	@echo "make test  - lint, type check, import contracts and the whole test suite"
	@echo "make clean - remove the virtual env and run outputs"

# Installs come from uv.lock (exact versions and hashes). uv itself is pinned and lives in
# its own small venv, so a fresh machine needs only python3. `--locked` fails when
# pyproject.toml and uv.lock disagree: run `make lock` after changing dependencies.
UV_VERSION := 0.13.9
UV_TOOLS   := .venv-tools
UV         := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) $(UV_TOOLS)/bin/uv

$(UV_TOOLS)/bin/uv:
	$(PYTHON) -m venv $(UV_TOOLS)
	$(UV_TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV_TOOLS)/bin/uv pyproject.toml uv.lock
	$(UV) sync --quiet --locked --inexact --python $(PYTHON)
	@touch $@

$(VENV)/.installed-dev: $(UV_TOOLS)/bin/uv pyproject.toml uv.lock
	$(UV) sync --quiet --locked --extra dev --python $(PYTHON)
	@touch $@ $(VENV)/.installed

.PHONY: lock lock-check
lock: $(UV_TOOLS)/bin/uv   ## re-resolve uv.lock after editing dependencies (add --upgrade to move pins)
	$(UV) lock --python $(PYTHON) $(UV_LOCK_ARGS)

lock-check: $(UV_TOOLS)/bin/uv
	$(UV) lock --check --python $(PYTHON)

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

pytest: install-dev chromium
	$(BIN)/pytest -n 2 --dist loadfile

.PHONY: chromium
chromium:   ## headless Chromium for the HTML report test (installed once, quiet when present)
	@scripts/ensure_chromium.sh

test: lock-check lint typecheck imports pytest checkov

clean:
	rm -rf $(VENV) $(UV_TOOLS) var build .pytest_cache .mypy_cache .ruff_cache

bench: install
	$(BIN)/python bench/bench_pipeline.py

.PHONY: bench-exit
bench-exit: install   ## exit monitor: ticks/s ingested, one cycle at 1k/10k positions, tick→decision
	$(BIN)/python bench/exit_monitor.py

.PHONY: stage
stage: install
	$(BIN)/python scripts/stage.py

.PHONY: checkov
checkov:
	PYTHON=$(PYTHON) scripts/checkov.sh

.PHONY: cost
cost: install-dev
	$(BIN)/python scripts/cost.py --json var/cost.json
