# `make test` and `make demo` are the whole set-up on a fresh machine: each creates
# .venv from nothing and installs the project with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m gateway.demo

lint: $(STAMP)
	$(BIN)/ruff check gateway plugins schemas tests bench
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/gateway schemas export

clean:
	rm -rf $(VENV) demo-workspace
