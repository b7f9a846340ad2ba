# The verbs people type. Everything is installed by these rules on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKACTL := $(PY) tools/kafka/kafkactl.py
PGCTL := $(PYTHON) tools/postgres/pgctl.py
REGISTRYCTL := $(PY) tools/registry/registryctl.py
JARS_STAMP := tools/kafka/target/dependency/.fetched
REGISTRY_STAMP := tools/registry/target/.built

.PHONY: setup jars registry broker-up broker-down cluster-up cluster-down chaos secure-broker-up secure-broker-down registry-up registry-down postgres-up postgres-down demo demo-registry docs docs-serve test test-fast lint format bench bench-smoke bench-peers clean

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

# A SASL_SSL broker (SCRAM-SHA-512 over TLS, a throwaway CA) on 127.0.0.1:9094; writes .kafka/secure/client.properties
secure-broker-up: setup jars
	$(KAFKACTL) secure-up

secure-broker-down:
	@test -x $(PY) && $(KAFKACTL) secure-down || true

# A Confluent-compatible Schema Registry (Apicurio, in-memory) on 127.0.0.1:8081, built by Maven on first use;
# its URL is written to .registry/url (SLUICE_REGISTRY_PORT moves it)
registry: $(REGISTRY_STAMP)

$(REGISTRY_STAMP): tools/registry/pom.xml $(shell find tools/registry/src -type f 2>/dev/null) | setup
	$(REGISTRYCTL) fetch
	@touch $@

registry-up: setup registry
	$(REGISTRYCTL) up

registry-down:
	@test -x $(PY) && $(REGISTRYCTL) down || true

# A throwaway PostgreSQL on 127.0.0.1:25432 (installed from Debian packages when missing; data in .postgres/)
postgres-up:
	$(PGCTL) up

postgres-down:
	$(PGCTL) down

demo: broker-up
	$(PY) -m examples.demo

# Avro orders through the Schema Registry: a confluent-kafka producer, a sluice app, a confluent-kafka consumer
demo-registry: broker-up registry-up
	$(PY) -m examples.avro_orders

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link, reference or
# docstring warning fails it. Offline: no web fonts, nothing fetched at build time.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs
docs: setup
	$(MKDOCS) build --strict

docs-serve: setup
	$(MKDOCS) serve

# The docs build, the benchmark harness smoke run, then the whole suite against a real broker;
# brokers and PostgreSQL are stopped even when tests fail. pytest exit 5 (no tests) fails too.
test: setup jars registry
	$(VENV)/bin/ruff check .
	$(MKDOCS) build --strict
	@$(KAFKACTL) up && \
	$(PY) -m benchmarks.bench --smoke && \
	$(PY) -m benchmarks.windowed_state --records 5000 --keys 200 --timeout 120 --no-save && \
	$(PY) -m benchmarks.exactly_once --records 5000 --keys 200 --seconds 2 --timeout 120 --no-save; bench=$$?; \
	SLUICE_TEST_BROKERS=127.0.0.1:$${SLUICE_BROKER_PORT:-9092} $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	$(KAFKACTL) cluster-down; $(KAFKACTL) secure-down; $(REGISTRYCTL) down; $(KAFKACTL) down; $(PGCTL) down; \
	if [ $$bench -ne 0 ]; then echo "bench-smoke failed (exit $$bench)"; fi; \
	[ $$rc -eq 0 ] && [ $$bench -eq 0 ]

# the broker-free tests (sluice.testing.TestDriver on an in-memory Kafka): seconds, no broker
test-fast: setup
	$(PY) -m pytest -q -m memory tests/testing

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The benchmark suite (benchmarks/bench.py): sluice vs hand-written loops, the librdkafka ceiling and the
# peers (Quix Streams, Faust, Bytewax, FastStream, Kafka Streams), six scenarios, every output checked.
# Each Python peer gets its own venv from benchmarks/peers/requirements-<peer>.txt (pinned), so none
# becomes a dependency of sluice; Kafka Streams is built by Maven; matplotlib (charts) lives in .venv-plot.
PEERS := quix faust bytewax faststream plot
PEER_VENVS := $(PEERS:%=benchmarks/.venv-%/.installed)
KSTREAMS := benchmarks/peers/kafka-streams
KSTREAMS_BUILT := $(KSTREAMS)/target/.built

bench-peers: $(PEER_VENVS) $(KSTREAMS_BUILT)

benchmarks/.venv-%/.installed: benchmarks/peers/requirements-%.txt
	@test -x benchmarks/.venv-$*/bin/python || $(PYTHON) -m venv benchmarks/.venv-$*
	benchmarks/.venv-$*/bin/python -m pip install -q --upgrade pip
	benchmarks/.venv-$*/bin/python -m pip install -q -r $<
	@touch $@

$(KSTREAMS_BUILT): $(KSTREAMS)/pom.xml $(wildcard $(KSTREAMS)/src/main/java/sluice/bench/*.java)
	cd $(KSTREAMS) && mvn -q -B package
	@touch $@

# Full sizes (1M records, 5M backlog, 60 s at 10k/s, ...): writes benchmarks/results/<date>.{json,md,-<scenario>.png}
# and, where sluice is not first, a pyinstrument profile of it. Takes about an hour on 2 cores.
bench: broker-up bench-peers
	$(PY) -m benchmarks.bench --profile

# Every scenario with tiny inputs, nothing saved; exit 1 on a wrong output. sluice, hand and the ceiling
# always run; peers whose venv or build is missing are skipped with a printed line. Needs the broker up.
bench-smoke: setup jars
	$(PY) -m benchmarks.bench --smoke
	$(PY) -m benchmarks.windowed_state --records 5000 --keys 200 --timeout 120 --no-save
	$(PY) -m benchmarks.exactly_once --records 5000 --keys 200 --seconds 2 --timeout 120 --no-save

# Faults provoked for real on the 3-node cluster (kill -9 of workers and brokers, two brokers down past
# message.timeout.ms, a worker stopped past its session, slow handlers, oversized records, revokes with
# parallel work queued, refused outputs of parked records), each bounded in time, 1% poison records:
# a table of lost / duplicated / wrongly dead-lettered / stalled / time to recover, written to
# benchmarks/results/chaos-<date>.md. About 15 minutes; exit 1 when a scenario fails.
chaos: cluster-up
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

clean: broker-down cluster-down secure-broker-down registry-down
	rm -rf $(VENV) tools/kafka/target .kafka tools/registry/target .registry
