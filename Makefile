# The verbs people type. Everything is installed by these rules on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKACTL := $(PY) tools/kafka/kafkactl.py
JARS_STAMP := tools/kafka/target/dependency/.fetched

.PHONY: setup jars broker-up broker-down cluster-up cluster-down demo test test-fast lint format bench bench-smoke clean

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

demo: broker-up
	$(PY) -m examples.demo

# The whole suite against a real broker; brokers are stopped even when tests fail.
test: setup jars
	$(VENV)/bin/ruff check .
	@$(KAFKACTL) up && \
	SLUICE_TEST_BROKERS=127.0.0.1:$${SLUICE_BROKER_PORT:-9092} $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	$(KAFKACTL) cluster-down; $(KAFKACTL) down; exit $$rc

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: broker-down cluster-down
	rm -rf $(VENV) tools/kafka/target .kafka
