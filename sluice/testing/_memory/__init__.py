"""An in-memory Kafka: the subset of confluent-kafka's Consumer, Producer and AdminClient the runtime calls.

``MemoryBroker`` holds topics (partitioned logs of records), the consumer groups'
committed offsets and the transactions. ``MemoryClients(broker)`` makes clients over it
with confluent-kafka's method names and return shapes, and is passed to the runtime's
``Runner(clients=...)`` seam: the runtime cannot tell it from a cluster of one broker.

What it models: partitioning by key (murmur2, as sluice's producer config asks), offsets,
log start offsets (``delete_records``), consumer groups with one member (all partitions
assigned at the first ``consume``, revoked at ``close``), pause/resume/seek, committed
offsets, ``read_committed`` reads (a consumer stops at the first record of an open
transaction and skips aborted ones), transactions with offsets and producer fencing by
``transactional.id``, ``max.message.bytes`` refusals, and delivery reports served by
``poll``/``flush`` as librdkafka serves them. What it does not: replication, network
faults, rebalances between several members.

Example:
    >>> broker = MemoryBroker()
    >>> broker.create_topic("t", 2)
    >>> clients = MemoryClients(broker)
    >>> producer = clients.producer({"partitioner": "murmur2_random"})
    >>> producer.produce("t", b"v", b"k")
    >>> producer.flush()
    0
    >>> [(r.partition(), r.offset(), r.value()) for r in broker.read("t")]
    [(0, 0, b'v')]
"""

from __future__ import annotations

from typing import Any

from sluice.testing._memory.admin import MemoryAdmin
from sluice.testing._memory.broker import MemoryBroker, MemoryMessage, murmur2
from sluice.testing._memory.consumer import MemoryConsumer
from sluice.testing._memory.producer import MemoryProducer

__all__ = [
    "MemoryAdmin",
    "MemoryBroker",
    "MemoryClients",
    "MemoryConsumer",
    "MemoryMessage",
    "MemoryProducer",
    "murmur2",
]


class MemoryClients:
    """The runtime's client factory (``sluice.kafka.clients.Clients``) over one ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def consumer(self, config: dict[str, Any]) -> MemoryConsumer:
        return MemoryConsumer(self.broker, config)

    def producer(self, config: dict[str, Any]) -> MemoryProducer:
        return MemoryProducer(self.broker, config)

    def admin(self, config: dict[str, Any]) -> MemoryAdmin:
        return MemoryAdmin(self.broker, config)
