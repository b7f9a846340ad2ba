"""Client settings: seed-style (kafka-python) keywords mapped to librdkafka, with clear errors.

Where the brokers and the shared client properties (security, connection) come from,
highest first: the command line (``--brokers``, ``--config FILE``), the code
(``App(brokers=..., kafka_config=...)``), the environment (``SLUICE_BROKERS``,
``SLUICE_KAFKA_CONFIG``: a properties file), the default (``127.0.0.1:9092``).
Properties merge key by key; within one level ``brokers``/``--brokers`` wins over a
``bootstrap.servers`` property.

Example:
    >>> s = settings_from_options("clicks", "127.0.0.1:9092", {"fetch_min_bytes": 1024})
    >>> s.group_id, s.consumer_config()["fetch.min.bytes"], s.consumer_config()["enable.auto.commit"]
    ('clicks', 1024, False)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sluice._checks import positive_int
from sluice._names import suggest
from sluice.errors import ConfigError
from sluice.kafka.properties import load_properties, redact, scrub, to_librdkafka

__all__ = [
    "APP_OPTIONS",
    "DEFAULT_BROKERS",
    "ClientSettings",
    "ConnectionLayer",
    "check_client_properties",
    "environment_layer",
    "resolve_connection",
    "settings_from_options",
]

DEFAULT_BROKERS = "127.0.0.1:9092"

logger = logging.getLogger(__name__)

#: keyword -> librdkafka consumer property, for the seed-style names people already use.
CONSUMER_KEYWORDS: dict[str, str] = {
    "fetch_min_bytes": "fetch.min.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "fetch_max_bytes": "fetch.max.bytes",
    "isolation_level": "isolation.level",
}

#: every keyword ``App`` accepts, to suggest the closest one for a typo.
APP_OPTIONS: tuple[str, ...] = (
    "brokers",
    "bootstrap_servers",
    "group_id",
    "client_id",
    "auto_offset_reset",
    "enable_auto_commit",
    "max_poll_records",
    "value_deserializer",
    "key_deserializer",
    "consumer_config",
    "producer_config",
    "kafka_config",
    "commit_interval",
    "max_in_flight",
    "progress_interval",
    "shutdown_timeout",
    "concurrency",
    "ordering",
    "metrics_port",
    *CONSUMER_KEYWORDS,
)

_OFFSET_RESETS = ("earliest", "latest", "error")


@dataclass(frozen=True)
class ConnectionLayer:
    """The brokers and shared client properties given at one level (command line, code, environment)."""

    brokers: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"ConnectionLayer(brokers={self.brokers!r}, properties={redact(self.properties)!r})"


def environment_layer(environ: Mapping[str, str] | None = None) -> ConnectionLayer:
    """``SLUICE_BROKERS`` and the properties file named by ``SLUICE_KAFKA_CONFIG``.

    Raises:
        ConfigError: ``SLUICE_KAFKA_CONFIG`` names a missing or malformed file.

    Example:
        >>> environment_layer({"SLUICE_BROKERS": "10.0.0.1:9092"}).brokers
        '10.0.0.1:9092'
    """
    env = os.environ if environ is None else environ
    path = env.get("SLUICE_KAFKA_CONFIG") or None
    properties: dict[str, Any] = {}
    if path is not None:
        try:
            properties = load_properties(path)
        except ConfigError as exc:
            msg = f"{exc} (from $SLUICE_KAFKA_CONFIG)"
            raise ConfigError(msg) from None
    return ConnectionLayer(env.get("SLUICE_BROKERS") or None, properties)


def resolve_connection(
    *layers: ConnectionLayer, default: str = DEFAULT_BROKERS
) -> tuple[str, dict[str, Any]]:
    """The brokers and merged properties of ``layers`` (highest precedence first).

    The brokers come from the first layer that gives them (its ``brokers``, else its
    ``bootstrap.servers`` property), else ``default``. Properties merge key by key, a
    higher layer's value winning; ``bootstrap.servers`` is taken out of them.

    Example:
        >>> cli = ConnectionLayer(None, {"sasl.username": "ops"})
        >>> code = ConnectionLayer("kafka:9092", {"sasl.username": "app", "security.protocol": "SASL_SSL"})
        >>> env = ConnectionLayer("env:9092", {"bootstrap.servers": "file:9092", "sasl.mechanism": "PLAIN"})
        >>> brokers, props = resolve_connection(cli, code, env)
        >>> brokers, sorted(props.items())
        ('kafka:9092', [('sasl.mechanism', 'PLAIN'), ('sasl.username', 'ops'), ('security.protocol', 'SASL_SSL')])
    """
    brokers: str | None = None
    for layer in layers:
        brokers = layer.brokers or layer.properties.get("bootstrap.servers") or None
        if brokers:
            break
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged.update(layer.properties)
    merged.pop("bootstrap.servers", None)
    return brokers or default, merged


_validated: set[tuple[tuple[str, str], ...]] = set()


def check_client_properties(properties: Mapping[str, Any], what: str = "kafka_config") -> None:
    """Let librdkafka check property names and values now, not when the first client starts.

    A client with no brokers is built and dropped: it connects nowhere, but refuses an
    unknown property, a bad value or an unreadable certificate file.

    Raises:
        ConfigError: librdkafka refused the properties (secrets are never echoed).

    Example:
        >>> check_client_properties({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"})
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: kafka_config was refused by librdkafka: Failed to create producer: sasl.username and sasl.password must be set
    """
    if not properties:
        return
    signature = tuple(sorted((str(k), str(v)) for k, v in properties.items()))
    if signature in _validated:
        return
    from confluent_kafka import KafkaException, Producer

    quiet = logging.getLogger("sluice.kafka.validation")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    try:
        Producer({**properties, "logger": quiet, "log_level": 0})
    except (KafkaException, ValueError, TypeError) as exc:
        detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        msg = f"{what} was refused by librdkafka: {scrub(detail, properties)}"
        raise ConfigError(msg) from None
    _validated.add(signature)


@dataclass(frozen=True, repr=False)
class ClientSettings:
    """Everything needed to build the app's Kafka clients.

    ``kafka_config`` (security and connection properties) goes into every client: the
    consumer, the producers, the admin client, the state-restore consumers. Each
    client's own settings, then ``consumer_overrides``/``producer_overrides``, come after it.
    Its ``repr`` never shows a secret.

    Example:
        >>> s = ClientSettings("b:9094", "g", "c", kafka_config={"sasl.password": "pw"})
        >>> s.admin_config()["sasl.password"], "pw" in repr(s)
        ('pw', False)
    """

    brokers: str
    group_id: str
    client_id: str
    auto_offset_reset: str = "earliest"
    max_poll_records: int = 1000
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)
    kafka_config: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ClientSettings(brokers={self.brokers!r}, group_id={self.group_id!r}, client_id={self.client_id!r}, "
            f"kafka_config={redact(self.kafka_config)!r}, consumer_overrides={redact(self.consumer_overrides)!r}, "
            f"producer_overrides={redact(self.producer_overrides)!r})"
        )

    def base_config(self) -> dict[str, Any]:
        """What every client gets: the brokers and ``kafka_config``.

        Example:
            >>> ClientSettings("b:9094", "g", "c", kafka_config={"security.protocol": "SSL"}).base_config()
            {'security.protocol': 'SSL', 'bootstrap.servers': 'b:9094'}
        """
        return {**self.kafka_config, "bootstrap.servers": self.brokers}

    def with_connection(self, brokers: str | None, properties: Mapping[str, Any]) -> ClientSettings:
        """These settings with brokers and properties given at a higher level (the command line).

        Example:
            >>> s = ClientSettings("b:9092", "g", "c", kafka_config={"sasl.username": "a"})
            >>> t = s.with_connection(None, {"bootstrap.servers": "x:9094", "sasl.username": "b"})
            >>> t.brokers, t.kafka_config
            ('x:9094', {'sasl.username': 'b'})
        """
        new_brokers, merged = resolve_connection(
            ConnectionLayer(brokers, properties), ConnectionLayer(self.brokers, self.kafka_config)
        )
        check_client_properties(merged)
        return replace(self, brokers=new_brokers, kafka_config=merged)

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer properties; offsets are always committed by sluice, never automatically."""
        config: dict[str, Any] = {
            **self.base_config(),
            "group.id": self.group_id,
            "client.id": self.client_id,
            "auto.offset.reset": self.auto_offset_reset,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "partition.assignment.strategy": "cooperative-sticky",
            # bounds prefetched memory; the runtime's own cap is max_in_flight
            "queued.max.messages.kbytes": 32768,
            # librdkafka waits this long before fetching again once its local queue was full
            # (default 1000 ms): at 150k+ records/s the queue drains much sooner and the loop starves
            "fetch.queue.backoff.ms": 10,
        }
        config.update(self.consumer_overrides)
        return config

    def producer_config(self) -> dict[str, Any]:
        """librdkafka producer properties: idempotent (acks=all, no reordering on retry), Java-compatible partitioner."""
        config: dict[str, Any] = {
            **self.base_config(),
            "client.id": self.client_id,
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "queue.buffering.max.kbytes": 131072,
        }
        config.update(self.producer_overrides)
        return config

    def admin_config(self) -> dict[str, Any]:
        """librdkafka admin client properties (topic checks and creation)."""
        return {**self.base_config(), "client.id": self.client_id}

    def restore_consumer_config(self) -> dict[str, Any]:
        """The consumer that restores state stores from their changelogs (no commits, committed records only).

        Example:
            >>> s = ClientSettings("b:9094", "clicks", "c1", kafka_config={"security.protocol": "SSL"})
            >>> c = s.restore_consumer_config()
            >>> c["group.id"], c["security.protocol"], c["enable.auto.commit"]
            ('clicks.restore', 'SSL', False)
        """
        return {
            **self.base_config(),
            "client.id": f"{self.client_id}-restore",
            "group.id": f"{self.group_id}.restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }


def _check_raw(config: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        msg = f"{what} must be a dict of librdkafka properties, got {type(config).__name__}"
        raise ConfigError(msg)
    for key in config:
        if not isinstance(key, str) or ("_" in key and "." not in key):
            msg = (
                f"{what} key {key!r} is not a librdkafka property name (they look like 'fetch.min.bytes'); "
                f"pass seed-style names such as fetch_min_bytes= to App directly"
            )
            raise ConfigError(msg)
    if str(config.get("enable.auto.commit", "false")).lower() in ("true", "1"):
        raise ConfigError(_AUTO_COMMIT_REFUSED)
    return dict(config)


_AUTO_COMMIT_REFUSED = (
    "enable_auto_commit=True is refused: auto-commit commits the offsets of records that were polled, "
    "not processed, so a crash loses them. sluice commits each offset only after its outputs are "
    "acknowledged; remove the option"
)


def settings_from_options(name: str, brokers: str | None, options: Mapping[str, Any]) -> ClientSettings:
    """Validate ``App`` keywords and build the client settings.

    Args:
        name: the app name (default group id and client id prefix).
        brokers: bootstrap servers, ``"host:port,host:port"``.
        options: the remaining keywords given to ``App``.

    Raises:
        ConfigError: an unknown keyword (naming the closest valid one), a bad value, or
            ``enable_auto_commit=True``.
    """
    options = dict(options)
    for key in options:
        if key not in APP_OPTIONS:
            msg = f"unknown App option {key!r}{suggest(key, APP_OPTIONS)}"
            raise ConfigError(msg)
    if options.get("bootstrap_servers") is not None:
        if brokers is not None:
            msg = "give either brokers= or bootstrap_servers=, not both"
            raise ConfigError(msg)
        brokers = options.pop("bootstrap_servers")
        if isinstance(brokers, list | tuple):
            brokers = ",".join(brokers)
    kafka_config = _check_raw(options.get("kafka_config"), "kafka_config")
    kafka_config = to_librdkafka(kafka_config, "kafka_config")
    if brokers is not None and not isinstance(brokers, str):
        msg = f"brokers={brokers!r} must be 'host:port[,host:port...]'"
        raise ConfigError(msg)
    brokers, kafka_config = resolve_connection(
        ConnectionLayer(brokers or None, kafka_config), environment_layer()
    )
    if not isinstance(brokers, str) or not brokers.strip():
        msg = f"brokers={brokers!r} must be 'host:port[,host:port...]'"
        raise ConfigError(msg)
    if not isinstance(name, str) or not name.strip():
        msg = f"the app name must be a non-empty string, got {name!r}"
        raise ConfigError(msg)

    if options.get("enable_auto_commit"):
        raise ConfigError(_AUTO_COMMIT_REFUSED)

    reset = options.get("auto_offset_reset", "earliest")
    if reset not in _OFFSET_RESETS:
        msg = f"auto_offset_reset={reset!r} must be one of {', '.join(map(repr, _OFFSET_RESETS))}"
        raise ConfigError(msg)

    max_poll = options.get("max_poll_records", 1000)
    positive_int(max_poll, "max_poll_records")

    consumer = _check_raw(options.get("consumer_config"), "consumer_config")
    producer = _check_raw(options.get("producer_config"), "producer_config")
    check_client_properties(kafka_config)
    for keyword, prop in CONSUMER_KEYWORDS.items():
        value = options.get(keyword)
        if value is not None:
            if keyword != "isolation_level":
                positive_int(value, keyword)
            consumer.setdefault(prop, value)

    group_id = options.get("group_id") or name
    worker = os.environ.get("SLUICE_WORKER_INDEX", "0")
    instance = consumer.get("group.instance.id")
    if instance and "SLUICE_WORKER_INDEX" in os.environ:
        # static membership with --workers N: one id for all would fence all but the last worker
        consumer["group.instance.id"] = f"{instance}-w{worker}"
    client_id = options.get("client_id") or f"{name}-w{worker}-{os.getpid()}"
    return ClientSettings(
        brokers=brokers,
        group_id=group_id,
        client_id=client_id,
        auto_offset_reset=reset,
        max_poll_records=max_poll,
        consumer_overrides=consumer,
        producer_overrides=producer,
        kafka_config=kafka_config,
    )


def callable_option(value: Any, name: str) -> Callable[..., Any] | None:
    """Check that an option is a callable (or None)."""
    if value is not None and not callable(value):
        msg = f"{name} must be a callable bytes -> object, got {type(value).__name__}"
        raise ConfigError(msg)
    return value
