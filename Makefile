# `make demo` runs the main job on the bundled model; `make test` runs the test suite. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV
export TRL_EXPERIMENTAL_SILENCE ?= 1
export TOKENIZERS_PARALLELISM ?= false
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: env demo test test-fast lint format data

env:
	@bash scripts/setup_env.sh

# The main job: train -> eval (our test split, IFEval) -> export -> serve -> load test -> report (orpo-pipeline;
# ~25-30 min measured on 2 CPU cores).
# `make demo DEMO_ARGS=--quick` for a first look; re-running skips every stage that is up to date.
demo: env
	$(PY) -m orpo_deploy.pipeline.cli $(DEMO_ARGS)

test: env
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

data: env
	$(PY) -m orpo_deploy.data.build
