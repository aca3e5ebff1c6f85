# `make help` lists the targets. Everything runs inside .venv/, made by `make install`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_IMAGE := outputs/samples/astronaut.png

.DEFAULT_GOAL := help
.PHONY: help install demo app test test-fast bench lint format clean mutate

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## make .venv/ with the pinned stack and the package (editable)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 11), sys.version" 2>/dev/null || { echo "error: Python >= 3.11 is required (found: $(PYTHON)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip uninstall --quiet --yes coz 2>/dev/null || true  # the distribution's old name (now chain-of-zoom)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	$(PY) -m coz.evaluate.niqe_params  # NIQE's parameters, from the basicsr sdist on PyPI
	@touch $(STAMP)

demo: $(STAMP)  ## zoom 4x, 16x, 64x, 256x into a sample photo (offline, CPU)
	$(PY) -m coz.samples outputs/samples
	$(PY) -m coz.zoom input=$(DEMO_IMAGE) backbone=span

app: $(STAMP)  ## the web demo on http://127.0.0.1:7860 (python -m coz.app port=... host=...)
	$(PY) -m coz.app

# pytest-xdist workers for make test; the workers share the cores through coz's CPU share (tests/conftest.py)
TEST_WORKERS ?= 2

test: $(STAMP)  ## run the test suite (offline, CPU; TEST_WORKERS=0 runs it in this one process)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)  ## tests without the slow ones
	$(PY) -m pytest -m "not slow"

mutate: $(STAMP)  ## break the code in curated ways, check the tests notice -> experiments/mutations.md
	$(PY) -m tests.mutations --jobs $(TEST_WORKERS)

bench: $(STAMP)  ## speed and memory benchmarks, results in experiments/bench/
	$(PY) -m coz.bench

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check coz tests && $(VENV)/bin/ruff format --check coz tests

format: $(STAMP)  ## ruff format
	$(VENV)/bin/ruff format coz tests && $(VENV)/bin/ruff check --fix coz tests

clean:  ## remove the venv and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
