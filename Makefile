# Arrears: `make up` runs everything on this machine; `make test` runs the tests.
# Both create .venv and install what they need (Python 3.11+; no Docker).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := -e shared -e services/ingest -e services/scoring -e services/case_manager -e services/notifier -e ".[dev]"
PYPROJECTS := pyproject.toml shared/pyproject.toml services/*/pyproject.toml constraints.txt

.PHONY: up down status test lint typecheck bench install clean

$(STAMP): $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt $(PACKAGES)
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/arrears up

down: $(STAMP)
	$(BIN)/arrears down

status: $(STAMP)
	$(BIN)/arrears status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
