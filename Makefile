# Two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` needs the runtime dependencies only; `make test` adds the test and lint tools.
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean playground docs

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(RUNTIME) $(STAMP)

# dify-bridge reads .env from this directory itself (real environment variables win).
run: $(RUNTIME)
	exec $(BIN)/dify-bridge serve

# Try the Teams bot in Microsoft's Teams emulator (Microsoft 365 Agents Playground, npm, pinned):
# the bridge in local mode on 127.0.0.1:3978, the Playground on http://localhost:56150.
playground: $(STAMP)
	@if [ -f .env ]; then set -a; . ./.env; set +a; fi; exec $(BIN)/python -m tests.playground try

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check app adapters tests bench
	$(BIN)/ruff format --check app adapters tests bench
	$(BIN)/mypy

# The docs site (docs/, mkdocs.yml) into site/; --strict fails on any warning (broken links, anchors).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_slack.py
	$(BIN)/python bench/bench_teams.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache site
