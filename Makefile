# Two entry points for a new user on a fresh machine:
#   make demo  - start the sandbox and run the main job against it (no credentials needed)
#   make test  - lint, types, tests, the end-to-end run and the docs build
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-scale airflow e2e test lint types unit docs bench clean sandbox-extra

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[sandbox,airflow,openlineage,celery,parquet,storage,fast,aiohttp,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: the example DAGs on a real local Airflow (api-server, scheduler, dag-processor,
# triggerer; SQLite, LocalExecutor) against the sandbox, a table, a secret scan, everything
# stopped. AIRFLOW_HOME is .local-airflow/ (reused by the next run).
demo: $(STAMP)
	$(BIN)/python -m deploy.local_airflow demo

# The scale-out mode: the same example DAGs on production's shape (PostgreSQL and Redis from the
# distribution's packages, installed with apt-get when missing and run as root; CeleryExecutor with
# two workers; two triggerers; the data lake on S3, moto's server), then its drills: a triggerer
# SIGKILLed mid-pull, a Celery worker SIGKILLed mid-pull, 20 pulls at once with a triggerer killed;
# each pull checked by bytes and by the requests the sandbox saw. Everything stopped at the end.
# AIRFLOW_HOME is .local-airflow-scale/ (reused); the report is scale-report.json there.
demo-scale: $(STAMP)
	$(BIN)/python -m deploy.local_airflow demo --scale

# The same stack left running with its UI on http://localhost:8080 until Ctrl-C.
airflow: $(STAMP) docs
	$(BIN)/python -m deploy.local_airflow up

# The end-to-end run alone (the test command runs it too): one deployment in a fresh
# AIRFLOW_HOME for the main job, then the restart drills on it, then the scan of everything
# both left (about 2.5 minutes on 2 cores).
e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/deploy

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

# On every core (pytest-xdist): the tests spend much of their time waiting on sockets, sleeps and
# subprocesses, so two workers on 2 cores take about 60% of one process's time. loadgroup keeps
# the tests marked xdist_group(name) on one worker (tests/deploy's one shared deployment).
unit: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

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

# unit runs every test, the end-to-end deployment (tests/deploy) included.
test: lint types unit docs sandbox-extra

# Every benchmark (handler overhead, async throughput, the long pull, triggerer load), then one
# table of figures against targets: benchmarks/results/summary.md and summary.json (not
# versioned; about 15 minutes). `python benchmarks/run_all.py --quick` for a smoke run.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-sandbox site .pytest_cache .mypy_cache .ruff_cache build .local-airflow .local-airflow-scale
