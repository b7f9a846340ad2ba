"""``App``: the entry point of a sluice program.

Example:
    >>> from sluice import App
    >>> app = App("clicks", brokers="127.0.0.1:9092", auto_offset_reset="earliest")
    >>> events = app.stream("events", value="json")
    >>> clicks = events.filter(lambda e: e["type"] == "click")
    >>> _ = clicks.map(lambda e: {"id": e["id"], "page": e["page"]}).to("clicks")
    >>> app.group_id
    'clicks'
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from sluice._checks import positive_int
from sluice._durations import parse_duration
from sluice._names import check_topic_name
from sluice.dataflow import Source, Stream, Table
from sluice.dataflow.steps import EventTime
from sluice.errors import ConfigError
from sluice.errors.policy import DEFAULT_POLICY, ErrorPolicy, coerce_policy
from sluice.kafka.config import callable_option, settings_from_options
from sluice.metrics import check_port
from sluice.runtime.parallel import ORDERINGS
from sluice.runtime.runner import Runner, RunStats, RuntimeOptions
from sluice.serde import Format, _check_format
from sluice.serde.registry import bind_format, registry_settings

__all__ = ["App"]

logger = logging.getLogger(__name__)


class App:
    """A stream-processing application: its Kafka settings and its dataflow graph.

    Durations, here and everywhere in sluice (windows, grace, backoff, timeouts), are
    strings with units (``"250ms"``, ``"10s"``, ``"1m30s"``, ``"1h"``) or a
    ``datetime.timedelta``; a bare number is refused, as it could mean seconds or
    milliseconds.

    Args:
        name: the app's name; also its consumer group id unless ``group_id`` is given.
            Start more processes with the same name to scale out (Kafka consumer groups).
        brokers: bootstrap servers, ``"host:port[,host:port]"`` (default: ``bootstrap.servers``
            of ``kafka_config``, ``$SLUICE_BROKERS``, ``bootstrap.servers`` of the
            ``$SLUICE_KAFKA_CONFIG`` file, ``127.0.0.1:9092``). ``bootstrap_servers=`` is accepted too.
        group_id: the consumer group (default: ``name``).
        auto_offset_reset: where a new group starts: ``"earliest"`` (default, as Kafka
            Streams: nothing already in the topic is skipped), ``"latest"``, ``"error"``.
        max_poll_records: records per consumed batch (default 1000).
        commit_interval: how often completed offsets are committed (default ``"1s"``; with
            ``guarantee="exactly_once"``, how often the transaction commits: default ``"100ms"``).
        guarantee: ``"at_least_once"`` (default: a crash may repeat records, never loses one)
            or ``"exactly_once"``: outputs, changelog and dead-letter records and the consumed
            offsets commit together in Kafka transactions; read outputs with
            ``isolation.level=read_committed``. Sinks outside Kafka cannot join a transaction:
            this mode accepts only idempotent ones (``sinks.sqlite/postgres(..., key=...)``, or
            ``sink(fn, idempotent=True)``).
        max_in_flight: records consumed but not finished (processing or awaiting
            acknowledgement) before partitions are paused (default 20,000): memory stays
            bounded whatever the backlog. A ``map_batch`` whose ``max_rows`` is above
            ``max_poll_records`` raises it to four of its frames at least: a pause drops
            what the client had prefetched.
            Records that wait only for an aggregation's next changelog flush (their
            states are in its bounded record cache) are not counted until the records in
            flight reach 8 times this.
        concurrency: records processed at once per process (default 1: batch-at-a-time
            on the poll thread, the fastest for CPU-bound steps). Above 1, each record runs
            on one of ``concurrency`` worker threads (``async def`` steps on an event loop),
            for I/O-bound steps.
        ordering: with ``concurrency > 1``: ``"key"`` (default) processes records of the
            same key strictly in offset order and different keys in parallel;
            ``"partition"`` keeps partition order; ``"unordered"`` maximises throughput.
        value_deserializer: a callable ``bytes -> object``: the default ``value=`` of
            ``stream()`` (kafka-python's name).
        key_deserializer: likewise for keys.
        kafka_config: librdkafka properties every client of the app gets (consumer,
            producers, admin, state-restore consumers): security and connection settings
            such as ``security.protocol``, ``sasl.mechanism``, ``sasl.username``,
            ``sasl.password``, ``ssl.ca.location``. Merged key by key over the properties
            file named by ``$SLUICE_KAFKA_CONFIG``; ``sluice run --config FILE`` overrides
            both. A ``bootstrap.servers`` here serves when ``brokers`` is not given. Secrets
            never appear in logs, ``repr`` or errors.
        consumer_config: librdkafka consumer properties, passed through (after ``kafka_config``).
            ``group.instance.id`` (static membership: a restart within ``session.timeout.ms``
            keeps the partitions, no rebalance) gets ``-w<index>`` appended per
            ``sluice run --workers`` worker; a stopped static member's partitions wait
            ``session.timeout.ms`` before they move.
        producer_config: librdkafka producer properties, passed through (after ``kafka_config``).
        enable_auto_commit: accepted only as ``False``: auto-commit commits work not done.
        state_dir: where windows and aggregations keep their local state (default
            ``./.sluice-state/<name>``); it is a cache of the changelog topics and may be lost.
        metrics_port: serve Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` on this port
            while running (``0``: any free port; default ``None``: no server). See docs/operations.md.
        schema_registry: the Schema Registry of the ``"avro"``, ``"protobuf"`` and
            ``"json_schema"`` formats: ``confluent_kafka``'s ``SchemaRegistryClient`` settings
            (``url``, ``basic.auth.user.info``, ``ssl.ca.location``...) plus
            ``subject.name.strategy`` (``"topic"``, the default, ``"record"``,
            ``"topic_record"`` or a callable), ``auto.register.schemas`` (default True),
            ``normalize.schemas`` and ``use.latest.version``. Default: the URL in
            ``$SLUICE_SCHEMA_REGISTRY_URL``, if set.
        **options: seed-style names mapped to librdkafka: ``fetch_min_bytes``,
            ``fetch_max_wait_ms``, ``session_timeout_ms``, ``heartbeat_interval_ms``,
            ``max_poll_interval_ms``, ``max_partition_fetch_bytes``, ``fetch_max_bytes``,
            ``isolation_level``; also ``client_id``, ``progress_interval``, ``shutdown_timeout``.

    Raises:
        ConfigError: an unknown keyword (the message names the closest valid one), a bad
            value, or ``enable_auto_commit=True``.

    Example:
        >>> App("x", enable_auto_commit=True)
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: enable_auto_commit=True is refused: auto-commit commits the offsets of records that were polled, not processed, so a crash loses them. sluice commits each offset only after its outputs are acknowledged; remove the option
        >>> App("x", group_idd="g")
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: unknown App option 'group_idd' (did you mean 'group_id'?)
        >>> secured = App("x", brokers="127.0.0.1:9094", kafka_config={"security.protocol": "SASL_SSL",
        ...     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app", "sasl.password": "s3cret"})
        >>> secured.settings.admin_config()["security.protocol"], "s3cret" in repr(secured.settings)
        ('SASL_SSL', False)
    """

    def __init__(
        self,
        name: str,
        brokers: str | None = None,
        *,
        group_id: str | None = None,
        auto_offset_reset: Literal["earliest", "latest", "error"] = "earliest",
        max_poll_records: int = 1000,
        commit_interval: str | timedelta | None = None,
        max_in_flight: int = 20_000,
        value_deserializer: Callable[[bytes], Any] | None = None,
        key_deserializer: Callable[[bytes], Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        kafka_config: dict[str, Any] | None = None,
        enable_auto_commit: bool = False,
        progress_interval: str | timedelta = "10s",
        shutdown_timeout: str | timedelta = "30s",
        concurrency: int = 1,
        ordering: Literal["key", "partition", "unordered"] = "key",
        metrics_port: int | None = None,
        state_dir: str | Path | None = None,
        guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
        schema_registry: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        options.update(
            group_id=group_id,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=max_poll_records,
            consumer_config=consumer_config,
            producer_config=producer_config,
            kafka_config=kafka_config,
            enable_auto_commit=enable_auto_commit,
        )
        self.name = name
        self.settings = settings_from_options(name, brokers, options)
        positive_int(max_in_flight, "max_in_flight")
        positive_int(concurrency, "concurrency", " (records processed at once per process)")
        if ordering not in ORDERINGS:
            msg = f"ordering={ordering!r} must be one of {', '.join(map(repr, ORDERINGS))}"
            raise ConfigError(msg)
        if guarantee not in ("at_least_once", "exactly_once"):
            msg = f"guarantee={guarantee!r} must be 'at_least_once' or 'exactly_once'"
            raise ConfigError(msg)
        exactly_once = guarantee == "exactly_once"
        if commit_interval is None:
            commit_interval = "100ms" if exactly_once else "1s"
        self.guarantee = guarantee
        self.options = RuntimeOptions(
            exactly_once=exactly_once,
            concurrency=concurrency,
            ordering=ordering,
            commit_interval=parse_duration(commit_interval, "commit_interval"),
            max_in_flight=max_in_flight,
            progress_interval=parse_duration(progress_interval, "progress_interval"),
            shutdown_timeout=parse_duration(shutdown_timeout, "shutdown_timeout"),
        )
        self._value_default = callable_option(value_deserializer, "value_deserializer") or "json"
        self._key_default = callable_option(key_deserializer, "key_deserializer") or "bytes"
        self.sources: list[Source] = []
        self._step_counter = [0]  # steps are numbered app-wide: store names stay unique
        self.state_dir = Path(state_dir) if state_dir is not None else Path(".sluice-state") / name
        self.error_policy: ErrorPolicy = DEFAULT_POLICY
        self._runner: Runner | None = None
        self._stop_requested = threading.Event()
        self.metrics_port = check_port(metrics_port)
        #: the Schema Registry settings ("avro", "protobuf", "json_schema" formats), or None
        self.schema_registry = registry_settings(schema_registry)

    @property
    def sinks(self) -> Any:
        """The ``sluice.sinks`` module, so that ``clicks.sink(app.sinks.sqlite("clicks.db", table="clicks"))`` reads well."""
        import sluice.sinks

        return sluice.sinks

    @property
    def group_id(self) -> str:
        """The consumer group of this app."""
        return self.settings.group_id

    @property
    def brokers(self) -> str:
        return self.settings.brokers

    def override_kafka(self, brokers: str | None = None, kafka_config: dict[str, Any] | None = None) -> None:
        """Override the brokers and client properties (what ``sluice run --brokers/--config`` does).

        Given values take precedence over those of the code and the environment;
        properties merge key by key.

        Raises:
            ConfigError: librdkafka refuses a property.

        Example:
            >>> app = App("doc", brokers="127.0.0.1:9092")
            >>> app.override_kafka("127.0.0.1:9094", {"security.protocol": "SSL"})
            >>> app.brokers, app.settings.base_config()["security.protocol"]
            ('127.0.0.1:9094', 'SSL')
        """
        from sluice.kafka.properties import to_librdkafka

        properties = to_librdkafka(dict(kafka_config or {}), "kafka_config")
        self.settings = self.settings.with_connection(brokers, properties)

    def stream(
        self,
        topic: str | list[str],
        *,
        value: Format | Callable[[bytes], Any] | None = None,
        key: Format | Callable[[bytes], Any] | None = None,
        on_error: ErrorPolicy | dict[str, Any] | str | None = None,
        timestamp: Callable[[Any], int] | None = None,
        schema: Any = None,
        key_schema: Any = None,
    ) -> Stream:
        """Consume ``topic`` (or several topics): the start of a dataflow.

        Args:
            topic: a topic name, or a list of them (processed alike).
            value: how values are deserialized: ``"json"`` (default, or the app's
                ``value_deserializer``), ``"str"``, ``"bytes"``, ``"avro"``, ``"protobuf"``,
                ``"json_schema"`` (see ``schema``), or a callable ``bytes -> object``.
                A null value (tombstone) arrives as ``None``.
            key: how keys are deserialized (default ``"bytes"``: passed through untouched).
            on_error: the failure policy for records of this stream that cannot be
                deserialized (default: the app's, see ``on_error``).
            timestamp: a function ``value -> int`` giving each record's event time in
                milliseconds (default: the record's Kafka timestamp). Windows use it, and
                outputs carry it as their timestamp.
            schema: with ``value="avro"``, ``"protobuf"`` or ``"json_schema"`` (records in the
                Schema Registry wire format, see ``App(schema_registry=...)``): the reader
                schema. Avro: a schema (JSON string or dict) that records written with an
                older or newer compatible schema are resolved to (fields added since take
                their defaults); default: each record's writer schema. Protobuf: the message
                class (required); values arrive as its instances. JSON Schema: validates
                values (default: the writer's schema).
            key_schema: the same for ``key=``.

        Example:
            >>> app = App("doc")
            >>> app.stream(["a", "b"], value="str").source.topics
            ('a', 'b')
        """
        topics = (topic,) if isinstance(topic, str) else tuple(topic)
        if not topics:
            msg = "stream() needs at least one topic"
            raise ConfigError(msg)
        for t in topics:
            check_topic_name(t, "source topic")
            if any(t in s.topics for s in self.sources):
                msg = f"topic {t!r} is already a stream of this app; branch the existing Stream instead"
                raise ConfigError(msg)
        value = value if value is not None else self._value_default
        key = key if key is not None else self._key_default
        value = bind_format(value, topics[0], "value", self.schema_registry, schema, writing=False)
        key = bind_format(key, topics[0], "key", self.schema_registry, key_schema, writing=False)
        _check_format(value, "value")
        _check_format(key, "key")
        if timestamp is not None and not callable(timestamp):
            msg = f"stream(timestamp=...) needs a function value -> milliseconds, got {timestamp!r}"
            raise ConfigError(msg)
        source = Source(
            topics,
            value,
            key,
            coerce_policy(on_error, "stream"),
            app=self.name,
            registry=self.sources,
            counter=self._step_counter,
            schema_registry=self.schema_registry,
        )
        self.sources.append(source)
        if timestamp is None:
            return source.root
        return source.root._add(lambda label: EventTime(label, timestamp), "timestamp", timestamp, None)

    def table(
        self,
        topic: str,
        *,
        value: Format | Callable[[bytes], Any] | None = None,
        key: Format | Callable[[bytes], Any] | None = None,
    ) -> Table:
        """The latest value per key of ``topic`` (best a compacted one): a table to ``join`` streams with.

        A record with a null value deletes its key. The table is partitioned like its
        topic: each process holds the partitions matching the stream partitions it is
        assigned (a stream joins it co-partitioned: same partition count, checked at
        start), in the same local RocksDB stores as aggregations. The topic is the
        table's changelog: nothing is written back, a restart reads it again from
        where the local store stopped.

        Args:
            topic: the table's topic (it must exist).
            value: how values are deserialized (default: the app's, ``"json"``).
            key: how keys are deserialized (lookups compare the key bytes).

        Example:
            >>> app = App("doc")
            >>> users = app.table("users", value="json")
            >>> _ = app.stream("orders").join(users, lambda o, u: {**o, "user": u}).to("enriched")
        """
        return self._table(topic, value, key, is_global=False)

    def global_table(
        self,
        topic: str,
        *,
        value: Format | Callable[[bytes], Any] | None = None,
        key: Format | Callable[[bytes], Any] | None = None,
    ) -> Table:
        """A table every process holds whole (every partition): streams join it on any field.

        At start each process reads the topic to its end before its joins run, then
        follows it. ``stream.join(table, fn, on=lambda v: v["country"])`` looks rows up
        by any value (str/bytes as is, anything else as JSON); no co-partitioning needed.

        Example:
            >>> app = App("doc")
            >>> countries = app.global_table("countries", value="json")
            >>> _ = app.stream("orders").join(countries, lambda o, c: {**o, "country": c}, on=lambda o: o["cc"])
        """
        return self._table(topic, value, key, is_global=True)

    def _table(self, topic: str, value: Any, key: Any, *, is_global: bool) -> Table:
        check_topic_name(topic, "table topic")
        value = value if value is not None else self._value_default
        key = key if key is not None else "bytes"
        value = bind_format(value, topic, "value", self.schema_registry, None, writing=False)
        _check_format(value, "value")
        _check_format(key, "key")
        return Table(topic, value, key, is_global)

    def on_error(
        self,
        *,
        retries: int | None = None,
        backoff: str | timedelta | None = None,
        dead_letter: str | None = None,
        skip: bool = False,
        fail: bool = False,
        retry_topics: list[str | timedelta] | None = None,
        retry_for: str | timedelta | None = None,
    ) -> ErrorPolicy:
        """Set the app-wide failure policy (each step may override it with ``on_error=``).

        A failure is a record that cannot be deserialized, a user function (filter, map,
        flat_map, key_by, sink) that raises, or an output Kafka refuses. The failed record
        is retried in place with exponential backoff, then, by default, written to the
        dead-letter topic ``<app name>.dlq`` with its original key, value and headers plus
        ``sluice.error.*`` headers (topic, partition, offset, timestamp, stage, step,
        exception, message, stacktrace, attempts, app). Its offset is committed only once
        the dead letter is acknowledged. Without a call, the policy is
        ``retries=3, backoff="100ms..5s"`` and the default dead-letter topic.

        Args:
            retries: in-place retries after the first attempt (default 3, or 0 with
                ``skip``/``fail``). Keep them short: they hold the partition's batch.
            backoff: ``"100ms..5s"``: first delay .. cap, doubling each retry.
            dead_letter: the dead-letter topic (created when first needed).
            skip: log (rate-limited), count (``app.stats.skipped``) and commit past it.
            fail: stop the app with an error; the failed offset is not committed.
            retry_topics: delays of delayed retry topics, e.g. ``["1s", "30s", "5m"]``: a
                record still failing after its in-place retries waits in
                ``<app>.retry.1`` for 1 s, is tried again, then ``<app>.retry.2`` for 30 s,
                and so on, before the dead-letter topic. Other records go on meanwhile,
                so per-key order is given up for the records that take this path.
            retry_for: how long a batch waits for a sink that is unavailable (database
                down, read-only after a failover or locked, disk full; the sink raises
                ``EnvironmentalError``) before the app stops, e.g. ``"30s"`` (default
                ``"5m"``). Meanwhile the batch is written again with ``backoff``, nothing is
                dead-lettered and no offset moves past it; once the sink heals the app goes
                on. Past it the app stops with ``SinkUnavailableError``, committing nothing
                past the batch. The same bound holds for outputs Kafka refuses for a reason
                of the moment (brokers away longer than ``message.timeout.ms``, too few
                in-sync replicas, a topic missing for a while): they are produced again, not
                dead-lettered, and their offsets wait for them.

        Returns:
            The policy now in force.

        Example:
            >>> app = App("orders")
            >>> app.on_error(retries=3, backoff="100ms..5s", dead_letter="orders.dlq").dead_letter
            'orders.dlq'
            >>> app.on_error(skip=True).action
            'skip'
        """
        self.error_policy = ErrorPolicy.from_options(
            retries=retries,
            backoff=backoff,
            dead_letter=dead_letter,
            skip=skip,
            fail=fail,
            retry_topics=retry_topics,
            retry_for=retry_for,
        )
        return self.error_policy

    # ------------------------------------------------------------------ running
    @property
    def stats(self) -> RunStats | None:
        """Counters of the current (or last) run, or ``None`` before ``run()``."""
        return self._runner.stats if self._runner is not None else None

    def run(self, *, install_signal_handlers: bool | None = None) -> bool:
        """Run until SIGTERM/SIGINT or ``stop()``: consume, process, produce, commit.

        On stop it finishes the batch at hand, waits for its outputs to be acknowledged,
        commits, and leaves the consumer group.

        Args:
            install_signal_handlers: handle SIGTERM/SIGINT as a graceful stop (default:
                when called from the main thread).

        Returns:
            True when every processed record was acknowledged and committed.

        Raises:
            ConfigError: the app has no stream.
            TopicNotFoundError: a source topic does not exist.
            KafkaUnavailableError: the brokers cannot be reached.
            SluiceError: a record failed (the message says which, where, and why).
        """
        if not self.sources:
            msg = f"app {self.name!r} has no stream: call app.stream('topic') and add steps before run()"
            raise ConfigError(msg)
        if not any(s.root.children for s in self.sources):
            msg = f"app {self.name!r} has streams but no steps: add .map/.filter/.to/.sink before run()"
            raise ConfigError(msg)
        runner = Runner(
            self.name,
            self.settings,
            self.sources,
            self.options,
            self.error_policy,
            metrics_port=self.metrics_port,
            state_dir=self.state_dir,
        )
        self._runner = runner
        if self._stop_requested.is_set():
            runner.stop()
        in_main = threading.current_thread() is threading.main_thread()
        handlers = install_signal_handlers if install_signal_handlers is not None else in_main
        previous: dict[int, Any] = {}
        if handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        logger.info(
            "%s: %s received: finishing in-flight records, then committing",
            self.name,
            signal.Signals(signum).name,
        )
        self.stop()

    def stop(self) -> None:
        """Stop a running app gracefully (thread-safe; ``run()`` returns when done)."""
        self._stop_requested.set()
        if self._runner is not None:
            self._runner.stop()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until the running app has been assigned partitions (for tests and tools)."""
        deadline = threading.Event()
        waited = 0.0
        while self._runner is None and waited < timeout:
            deadline.wait(0.05)
            waited += 0.05
        return self._runner is not None and self._runner.ready.wait(max(0.0, timeout - waited))
