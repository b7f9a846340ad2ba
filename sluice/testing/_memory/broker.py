"""The in-memory cluster: topics as partitioned logs, committed offsets, transactions, and the records' shape."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException

__all__ = ["MemoryBroker", "MemoryMessage", "murmur2"]

logger = logging.getLogger(__name__)

OFFSET_INVALID = -1001
_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default max.message.bytes


def murmur2(data: bytes) -> int:
    """Kafka's (Java client's) murmur2 hash of ``data``, as librdkafka's ``murmur2_random`` partitioner uses it.

    Example:
        >>> murmur2(b"21") - (1 << 32)  # the Java client's Utils.murmur2("21".getBytes())
        -973932308
    """
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail, extra = length & ~3, length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class MemoryMessage:
    """A record as confluent-kafka's ``Message`` shows it: methods, not attributes."""

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: tuple[tuple[str, bytes | None], ...] | None,
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._timestamp, self._headers = key, value, timestamp, headers
        self._error = error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_CREATE_TIME, self._timestamp)

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return list(self._headers) if self._headers else None

    def error(self) -> KafkaError | None:
        return self._error

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return f"MemoryMessage({self._topic}[{self._partition}]@{self._offset})"


@dataclass
class Transaction:
    producer_id: str
    state: str = "open"  # open, committed, aborted
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    records: int = 0


@dataclass
class Stored:
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes | None], ...] | None
    txn: Transaction | None


@dataclass
class Topic:
    name: str
    logs: list[list[Stored]]
    starts: list[int]  # log start offset per partition (moved by delete_records)
    config: dict[str, str]
    round_robin: itertools.count = field(default_factory=itertools.count)

    def max_message_bytes(self) -> int:
        return int(self.config.get("max.message.bytes", _DEFAULT_MAX_MESSAGE_BYTES))


class MemoryBroker:
    """Topics, committed offsets and transactions of one in-memory cluster (thread-safe).

    ``clock``: wall-clock seconds, for producer timestamps. ``version`` changes with
    every write (a record, a commit, a transaction's end, a consumed batch), so that a
    driver can tell when nothing happens any more.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.topics: dict[str, Topic] = {}
        self.offsets: dict[tuple[str, str, int], int] = {}  # (group, topic, partition) -> next offset
        self.epochs: dict[str, int] = {}  # transactional.id -> current producer epoch
        self.open_transactions: dict[str, Transaction] = {}
        self.version = 0
        #: called by a subscribed consumer at the top of each ``consume`` (the driver's step gate)
        self.gate: Callable[[], None] | None = None
        #: called with the timeout of a producer ``poll`` that has nothing to serve (None: returns at once)
        self.idle: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ topics
    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        """Create ``name``; an existing topic is left as it is."""
        with self.lock:
            if name not in self.topics:
                logger.debug("memory broker: topic %s created with %d partitions", name, partitions)
                self.topics[name] = Topic(
                    name, [[] for _ in range(partitions)], [0] * partitions, dict(config or {})
                )
                self.version += 1

    def topic(self, name: str) -> Topic:
        try:
            return self.topics[name]
        except KeyError:
            raise KafkaException(
                KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {name}")
            ) from None

    def end_offset(self, topic: str, partition: int, committed_only: bool) -> int:
        """The high watermark, or with ``committed_only`` the last stable offset (before an open transaction)."""
        with self.lock:
            log = self.topic(topic).logs[partition]
            if committed_only:
                for offset, rec in enumerate(log):
                    if rec.txn is not None and rec.txn.state == "open":
                        return offset
            return len(log)

    def read(self, topic: str, committed_only: bool = True) -> list[MemoryMessage]:
        """Every record of ``topic`` still in its log, partition by partition, as a ``read_committed`` reader sees them."""
        with self.lock:
            t = self.topic(topic)
            return [
                m
                for p in range(len(t.logs))
                for m in self.fetch(topic, p, t.starts[p], 1 << 62, committed_only)[0]
            ]

    def fetch(
        self, topic: str, partition: int, offset: int, limit: int, committed_only: bool
    ) -> tuple[list[MemoryMessage], int]:
        """Up to ``limit`` records from ``offset``; returns them and the position after them."""
        with self.lock:
            t = self.topic(topic)
            log = t.logs[partition]
            offset = max(offset, t.starts[partition])
            end = self.end_offset(topic, partition, committed_only)
            out: list[MemoryMessage] = []
            while offset < end and len(out) < limit:
                rec = log[offset]
                if not (committed_only and rec.txn is not None and rec.txn.state == "aborted"):
                    out.append(
                        MemoryMessage(
                            topic, partition, offset, rec.key, rec.value, rec.timestamp, rec.headers
                        )
                    )
                offset += 1
            return out, offset

    def append(self, topic: str, partition: int, rec: Stored) -> int:
        with self.lock:
            log = self.topic(topic).logs[partition]
            log.append(rec)
            if rec.txn is not None:
                rec.txn.records += 1
            self.version += 1
            return len(log) - 1

    # ------------------------------------------------------------------ groups and transactions
    def commit_offsets(self, group: str, offsets: Iterable[tuple[str, int, int]]) -> None:
        with self.lock:
            for topic, partition, offset in offsets:
                self.offsets[(group, topic, partition)] = offset
            self.version += 1

    def committed(self, group: str, topic: str, partition: int) -> int:
        with self.lock:
            return self.offsets.get((group, topic, partition), OFFSET_INVALID)

    def init_transactions(self, transactional_id: str) -> int:
        """A new epoch for ``transactional_id``: the transaction an older producer left open is aborted."""
        with self.lock:
            old = self.open_transactions.pop(transactional_id, None)
            if old is not None:
                old.state = "aborted"
            self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1
            self.version += 1
            return self.epochs[transactional_id]

    def end_transaction(self, transactional_id: str, txn: Transaction, commit: bool) -> None:
        with self.lock:
            txn.state = "committed" if commit else "aborted"
            if commit:
                self.offsets.update(txn.offsets)
            if self.open_transactions.get(transactional_id) is txn:
                del self.open_transactions[transactional_id]
            self.version += 1
