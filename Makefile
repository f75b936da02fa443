# batchscope developer entry points. `make run` and `make test` are the two commands in README.md.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test unit integration reliability soak lint docs config-doc kafka-up kafka-down kafka-status bench bench-long clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install batchscope with its test and docs tools

run: install kafka-up ## local Kafka + batchscope run (embedded ClickHouse; simulator when no source)
	$(BIN)/batchscope run

test: install kafka-up lint docs ## lint, type-check, build the docs and run every test against the local Kafka broker
	$(BIN)/pytest

unit: install ## unit tests only (no Kafka)
	$(BIN)/pytest tests/unit bench/tests

integration: install kafka-up ## integration tests only
	$(BIN)/pytest -m integration

reliability: install kafka-up ## the chaos scenarios (tests/reliability; part of make test); LONG=1 for the long variants
	$(BIN)/pytest -m reliability -s $(if $(LONG),--reliability-long)

soak: install kafka-up ## the soak: 30 min at twice the default rate, figures in soak-report.json (SOAK_MINUTES=N)
	$(BIN)/pytest tests/reliability/test_soak.py -s --reliability-long --timeout=0 \
		--soak-minutes=$(or $(SOAK_MINUTES),30) --soak-report=soak-report.json

lint: install ## ruff, mypy (strict) and the import contracts (pyproject.toml) on the whole tree
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: install ## build the docs site with mkdocs --strict into site/ (a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

config-doc: install ## regenerate docs/configuration.md from pipeline/config.py (tests/unit/test_configdoc.py checks it)
	$(BIN)/python -m pipeline.configdoc --write

kafka-up: ## start the local single-node Kafka broker (fetched with Maven on first use)
	scripts/kafka up

kafka-down: ## stop the local Kafka broker
	scripts/kafka down

kafka-status: ## is the local Kafka broker running?
	scripts/kafka status

bench: install kafka-up ## run the standard benchmarks (about 25 min) and regenerate bench/RESULTS.md from their figures
	$(BIN)/python -m bench.poller_bench --record
	$(BIN)/python -m bench.webhook_bench --record
	$(BIN)/python -m bench.normaliser_bench --record
	$(BIN)/python -m bench.normalise_bench --record
	$(BIN)/python -m bench.track_logic_bench --record
	$(BIN)/python -m bench.track_bench --record
	$(BIN)/python -m bench.worker_bench --record
	$(BIN)/python -m bench.sink_bench --record
	$(BIN)/python -m bench.spend_bench --record
	$(BIN)/python -m bench.results_bench --record
	$(BIN)/python -m bench.backfill_bench --record
	$(BIN)/python -m bench.e2e_bench --record
	$(BIN)/python -m bench.report

bench-long: install kafka-up ## the broker benchmarks with more runs and data (about an hour), then bench/RESULTS.md
	$(BIN)/python -m bench.track_bench --record --batches 5000 --runs 5
	$(BIN)/python -m bench.worker_bench --record --fill 30 --runs 5
	$(BIN)/python -m bench.backfill_bench --record --topology run
	$(BIN)/python -m bench.e2e_bench --record --seconds 120 --baseline-loads 2000,8000
	$(BIN)/python -m bench.report

clean: ## remove the virtualenv, caches and local data (not the Kafka cache)
	rm -rf $(VENV) .batchscope .mypy_cache .ruff_cache .pytest_cache site
