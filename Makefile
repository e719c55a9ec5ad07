# Arrears: `make up` runs everything on this machine; `make test` runs the tests.
# Both create .venv and install what they need (Python 3.11+; no Docker).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The manifest validators (checkov, kubernetes-validate) get their own venv: checkov pins libraries of its own.
LINT_VENV := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed
PACKAGES := -e shared -e services/ingest -e services/scoring -e services/case_manager -e services/notifier -e ".[dev]"
PYPROJECTS := pyproject.toml shared/pyproject.toml services/*/pyproject.toml constraints.txt

.PHONY: up down status test lint typecheck bench install clean

$(STAMP): $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt $(PACKAGES)
	@touch $(STAMP)

$(LINT_STAMP): constraints-lint.txt
	@test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(LINT_VENV)/bin/python -m pip install --quiet -r constraints-lint.txt
	@touch $(LINT_STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/arrears up

down: $(STAMP)
	$(BIN)/arrears down

status: $(STAMP)
	$(BIN)/arrears status

lint: $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m arrears_dev.k8s --check
	$(BIN)/python -m arrears_dev.configref --check
	$(BIN)/python -m arrears_dev.lint_deploy

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(LINT_VENV) var .pytest_cache .mypy_cache .ruff_cache
