# Two entry points for a new user on a fresh machine:
#   make demo  - start the sandbox and run the main job against it (no credentials needed)
#   make test  - lint, types, tests, the end-to-end run and the docs build
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo e2e test lint types unit docs bench clean sandbox-extra

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[sandbox,airflow,parquet,storage,fast,aiohttp,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m echo_connhandler_provider.demo

# The end-to-end run inside the test command: the main job, output kept out of the tree.
e2e: $(STAMP)
	$(BIN)/python -m echo_connhandler_provider.demo --output "$$(mktemp -d)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The sandbox extra on its own, in a fresh venv: `python -m echo_connhandler.sandbox` must work.
sandbox-extra:
	rm -rf .venv-sandbox
	$(PYTHON) -m venv .venv-sandbox
	.venv-sandbox/bin/pip install -q --upgrade pip
	.venv-sandbox/bin/pip install -q '.[sandbox]'
	.venv-sandbox/bin/python .ci/check_sandbox_extra.py
	rm -rf .venv-sandbox

test: lint types unit e2e docs sandbox-extra

# Handler overhead over bare httpx, async throughput against aiohttp, then the long-pull
# benchmark (a few minutes; results in benchmarks/results/*.json, not versioned).
bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/pull.py

clean:
	rm -rf $(VENV) .venv-sandbox site .pytest_cache .mypy_cache .ruff_cache build
