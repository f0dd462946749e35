# `make train` and `make test` set up .venv from pinned versions (requirements.lock) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test test-slow test-all bench lint clean-venv

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m autocomp.train $(ARGS)

# Two pytest workers: XLA:CPU runs a convolution on about one core, so two processes use both.
JOBS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup --durations=15 -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m slow $(ARGS) || [ $$? -eq 5 ]  # 5: no test is marked slow

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) $(ARGS)

bench: $(STAMP)
	$(PY) -m autocomp.bench search $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check autocomp agents envs tests
	$(PY) -m ruff format --check autocomp agents envs tests

clean-venv:
	rm -rf $(VENV)
