"""Where the runtime gets its Kafka clients: the one seam between sluice and confluent-kafka's constructors.

The runtime never calls ``Consumer(...)``, ``Producer(...)`` or ``AdminClient(...)``
itself: it asks a ``Clients`` object, by default ``KAFKA_CLIENTS`` (confluent-kafka's
own classes). ``sluice.testing.TestDriver`` passes in-memory ones with the same methods,
so that a record's path through the driver is the production path.

Example:
    >>> KAFKA_CLIENTS.consumer  # doctest: +ELLIPSIS
    <bound method KafkaClients.consumer of <sluice.kafka.clients.KafkaClients object at ...>>
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

__all__ = ["KAFKA_CLIENTS", "Clients", "KafkaClients"]


class Clients(Protocol):
    """Makes the consumers, producers and admin clients of one runtime from librdkafka properties."""

    def consumer(self, config: dict[str, Any]) -> Any: ...

    def producer(self, config: dict[str, Any]) -> Any: ...

    def admin(self, config: dict[str, Any]) -> Any: ...


class KafkaClients:
    """confluent-kafka's clients, talking to real brokers."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        """A ``confluent_kafka.Consumer``."""
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        """A ``confluent_kafka.Producer``."""
        return Producer(config)

    def admin(self, config: dict[str, Any]) -> AdminClient:
        """A ``confluent_kafka.admin.AdminClient``."""
        return AdminClient(config)


KAFKA_CLIENTS = KafkaClients()
