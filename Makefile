# `make test` and `make demo` are the whole set-up on a fresh machine: each creates
# .venv from nothing and installs the project with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-sqlite test-postgresql demo bench lint schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# The whole suite against SQLite, then against PostgreSQL: a throwaway cluster
# (Debian's postgresql package, installed when missing) started and removed by the tests.
test: test-sqlite test-postgresql

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest -q --db sqlite

test-postgresql: $(STAMP)
	$(BIN)/python -m pytest -q --db postgresql

# `make demo DEMO_ARGS=--keep-serving` leaves the dashboard running at the end.
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python -m gateway.demo $(DEMO_ARGS)

# Every speed goal in one table (about a minute; docs/benchmarks.md). Apprise, which
# bench/email.py compares with, comes with the bench extra.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/goals.py

lint: $(STAMP)
	$(BIN)/ruff check gateway plugins schemas tests bench
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/gateway schemas export

clean:
	rm -rf $(VENV) demo-workspace
