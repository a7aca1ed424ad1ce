# `make demo` runs the main job on the bundled model; `make test` runs the test suite. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV
export TRL_EXPERIMENTAL_SILENCE ?= 1
export TOKENIZERS_PARALLELISM ?= false
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: env demo test test-fast lint format data

env:
	@bash scripts/setup_env.sh

# Until the one-command pipeline lands: score the bundled SmolLM2 on the held-out split (the baseline).
demo: env
	$(VENV)/bin/orpo-eval --model smollm2-135m-instruct --output $(DEMO_OUT)/eval-base

test: env
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

data: env
	$(PY) -m data.build
