# The two set-up commands of the README are `make dev` and `make test`; each installs
# what it needs (Debian packages when absent, a virtualenv in .venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install system-deps dev test lint unit bench clean

system-deps:
	bash .ci/install-system-deps.sh

$(BIN)/.installed: setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,test]'
	@touch $@

install: system-deps $(BIN)/.installed

dev: install
	$(BIN)/triggerd dev

lint: install
	$(BIN)/ruff check triggerd tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

# Two pytest processes (pytest-xdist), each with its own MariaDB and broker, one test file
# at a time: most tests wait on a broker or a clock, so two share the machine's cores well.
# `make test PYTEST_JOBS=0` runs them in this process.
PYTEST_JOBS ?= 2

test: lint
	$(BIN)/pytest -q -n $(PYTEST_JOBS) --dist loadfile $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/scheduler_drift.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/broker_fetch.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
