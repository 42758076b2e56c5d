# Two commands for a fresh machine: `make demo` and `make test`. Each sets itself up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup demo test unit notebooks-test lab data lint benchmarks notebooks clean clean-models

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml changes or the venv is missing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cutpaste demo --out outputs/demo

test: $(STAMP)
	MPLBACKEND=Agg CUTPASTE_FAST=1 $(BIN)/python -m pytest -q tests $(NOTEBOOKS) --nbval-lax --nbval-current-env -p no:cacheprovider

unit: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q tests

notebooks-test: $(STAMP)
	CUTPASTE_FAST=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env $(NOTEBOOKS)

# Safe on any machine: the laptop protocol unless CUTPASTE_PROTOCOL=paper is set (then training
# on a CPU stops with the measured time and asks for CUTPASTE_CONFIRM_LONG=1).
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

data: $(STAMP)
	$(BIN)/cutpaste synth --out data/synthetic

lint: $(STAMP)
	$(BIN)/ruff check cutpaste_lib tests benchmarks
	$(BIN)/ruff format --check cutpaste_lib tests benchmarks

# Re-execute every notebook under the laptop protocol and store its outputs (what the repository
# ships). The course models are trained once (runs/course/) and shared by notebooks 02-05.
notebooks: $(STAMP)
	for nb in $(NOTEBOOKS); do CUTPASTE_PROTOCOL=laptop $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 $$nb || exit 1; done

benchmarks: $(STAMP)
	for b in augment density train_throughput localize; do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf outputs .pytest_cache .ruff_cache

# The stored course models (retrained on next use).
clean-models:
	rm -rf runs/course
