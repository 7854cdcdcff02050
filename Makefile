# One-command entry points. Everything installs into ./.venv from the pinned requirements.txt.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(BIN)/.qgface-installed

.PHONY: install test bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python tools/bench_core.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
