# The verbs people type. Everything is installed by these rules on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKACTL := $(PY) tools/kafka/kafkactl.py
PGCTL := $(PYTHON) tools/postgres/pgctl.py
JARS_STAMP := tools/kafka/target/dependency/.fetched

.PHONY: setup jars broker-up broker-down cluster-up cluster-down postgres-up postgres-down demo test test-fast lint format bench bench-smoke clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sluice needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

jars: $(JARS_STAMP)

$(JARS_STAMP): tools/kafka/pom.xml | setup
	$(KAFKACTL) fetch
	@touch $@

broker-up: setup jars
	$(KAFKACTL) up

broker-down:
	@test -x $(PY) && $(KAFKACTL) down || true

cluster-up: setup jars
	$(KAFKACTL) cluster-up

cluster-down:
	@test -x $(PY) && $(KAFKACTL) cluster-down || true

# A throwaway PostgreSQL on 127.0.0.1:25432 (installed from Debian packages when missing; data in .postgres/)
postgres-up:
	$(PGCTL) up

postgres-down:
	$(PGCTL) down

demo: broker-up
	$(PY) -m examples.demo

# The benchmark harness smoke run, then the whole suite against a real broker;
# brokers and PostgreSQL are stopped even when tests fail. pytest exit 5 (no tests) fails too.
test: setup jars
	$(VENV)/bin/ruff check .
	@$(KAFKACTL) up && \
	$(PY) -m benchmarks.stateless --records 20000 --timeout 60 --no-save; bench=$$?; \
	SLUICE_TEST_BROKERS=127.0.0.1:$${SLUICE_BROKER_PORT:-9092} $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	$(KAFKACTL) cluster-down; $(KAFKACTL) down; $(PGCTL) down; \
	if [ $$bench -ne 0 ]; then echo "bench-smoke failed (exit $$bench)"; fi; \
	[ $$rc -eq 0 ] && [ $$bench -eq 0 ]

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Scenario "stateless" (benchmarks/stateless.py): sluice vs a hand-written confluent-kafka loop vs the
# kafka-python loop, 1M records; writes benchmarks/results/stateless-<date>.{json,md} and the sluice profile.
bench: broker-up
	$(PY) -m benchmarks.stateless --records 1000000 --rounds 3 --profile

# The same with 20,000 records, nothing saved: fails when a contender's output is wrong. Needs the broker up.
bench-smoke: setup jars
	$(PY) -m benchmarks.stateless --records 20000 --timeout 30 --no-save

clean: broker-down cluster-down
	rm -rf $(VENV) tools/kafka/target .kafka
