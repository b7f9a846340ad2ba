"""Client settings: seed-style (kafka-python) keywords mapped to librdkafka, with clear errors.

Example:
    >>> s = settings_from_options("clicks", "127.0.0.1:9092", {"fetch_min_bytes": 1024})
    >>> s.group_id, s.consumer_config()["fetch.min.bytes"], s.consumer_config()["enable.auto.commit"]
    ('clicks', 1024, False)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice._checks import positive_int
from sluice._names import suggest
from sluice.errors import ConfigError

__all__ = ["APP_OPTIONS", "ClientSettings", "settings_from_options"]

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
class ClientSettings:
    """Everything needed to build the app's Kafka clients."""

    brokers: str
    group_id: str
    client_id: str
    auto_offset_reset: str = "earliest"
    max_poll_records: int = 1000
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer properties; offsets are always committed by sluice, never automatically."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
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
            "bootstrap.servers": self.brokers,
            "client.id": self.client_id,
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "queue.buffering.max.kbytes": 131072,
        }
        config.update(self.producer_overrides)
        return config

    def admin_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.brokers, "client.id": self.client_id}


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
    brokers = brokers or os.environ.get("SLUICE_BROKERS") or "127.0.0.1:9092"
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
    for keyword, prop in CONSUMER_KEYWORDS.items():
        value = options.get(keyword)
        if value is not None:
            if keyword != "isolation_level":
                positive_int(value, keyword)
            consumer.setdefault(prop, value)

    group_id = options.get("group_id") or name
    worker = os.environ.get("SLUICE_WORKER_INDEX", "0")
    client_id = options.get("client_id") or f"{name}-w{worker}-{os.getpid()}"
    return ClientSettings(
        brokers=brokers,
        group_id=group_id,
        client_id=client_id,
        auto_offset_reset=reset,
        max_poll_records=max_poll,
        consumer_overrides=consumer,
        producer_overrides=producer,
    )


def callable_option(value: Any, name: str) -> Callable[..., Any] | None:
    """Check that an option is a callable (or None)."""
    if value is not None and not callable(value):
        msg = f"{name} must be a callable bytes -> object, got {type(value).__name__}"
        raise ConfigError(msg)
    return value
