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

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

__all__ = ["MemoryBroker", "MemoryClients", "MemoryMessage", "murmur2"]

logger = logging.getLogger(__name__)

_OFFSET_INVALID = -1001
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
class _Transaction:
    producer_id: str
    state: str = "open"  # open, committed, aborted
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    records: int = 0


@dataclass
class _Stored:
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes | None], ...] | None
    txn: _Transaction | None


@dataclass
class _Topic:
    name: str
    logs: list[list[_Stored]]
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
        self.topics: dict[str, _Topic] = {}
        self.offsets: dict[tuple[str, str, int], int] = {}  # (group, topic, partition) -> next offset
        self.epochs: dict[str, int] = {}  # transactional.id -> current producer epoch
        self.open_transactions: dict[str, _Transaction] = {}
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
                self.topics[name] = _Topic(
                    name, [[] for _ in range(partitions)], [0] * partitions, dict(config or {})
                )
                self.version += 1

    def topic(self, name: str) -> _Topic:
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

    def append(self, topic: str, partition: int, rec: _Stored) -> int:
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
            return self.offsets.get((group, topic, partition), _OFFSET_INVALID)

    def init_transactions(self, transactional_id: str) -> int:
        """A new epoch for ``transactional_id``: the transaction an older producer left open is aborted."""
        with self.lock:
            old = self.open_transactions.pop(transactional_id, None)
            if old is not None:
                old.state = "aborted"
            self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1
            self.version += 1
            return self.epochs[transactional_id]

    def end_transaction(self, transactional_id: str, txn: _Transaction, commit: bool) -> None:
        with self.lock:
            txn.state = "committed" if commit else "aborted"
            if commit:
                self.offsets.update(txn.offsets)
            if self.open_transactions.get(transactional_id) is txn:
                del self.open_transactions[transactional_id]
            self.version += 1


def _bytes(data: Any, what: str) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    msg = f"{what} must be bytes or str (confluent-kafka takes nothing else), not {type(data).__name__}: {data!r}"
    raise TypeError(msg)


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((str(name), _bytes(value, f"header {name!r}")) for name, value in items)


def _done(result: Any = None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def _fenced(transactional_id: str) -> KafkaException:
    return KafkaException(
        KafkaError(
            KafkaError._FENCED,
            f"producer with transactional.id {transactional_id!r} fenced by a newer epoch",
            fatal=True,
        )
    )


class MemoryProducer:
    """confluent-kafka's ``Producer`` over a ``MemoryBroker``: produce, poll, flush, purge, transactions."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._murmur = config.get("partitioner", "consistent_random") in ("murmur2", "murmur2_random")
        self._max_bytes = int(config.get("message.max.bytes", 1_000_000))
        self._transactional_id: str | None = config.get("transactional.id")
        self._epoch: int | None = None
        self._txn: _Transaction | None = None
        self._reports: list[tuple[Callable[..., Any] | None, KafkaError | None, MemoryMessage]] = []
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._reports)

    def _partition(self, topic: _Topic, key: bytes | None) -> int:
        n = len(topic.logs)
        if key is None:
            return next(topic.round_robin) % n
        if self._murmur:
            return (murmur2(key) & 0x7FFFFFFF) % n
        import zlib

        return zlib.crc32(key) % n

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int = -1,
        on_delivery: Callable[..., Any] | None = None,
        timestamp: int = 0,
        headers: Any = None,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Append the record to its partition; its delivery report is served by the next ``poll``/``flush``."""
        report = on_delivery or callback
        value_b, key_b = _bytes(value, "value"), _bytes(key, "key")
        hdrs = _headers(headers)
        broker = self._broker
        with broker.lock:
            self._check_fenced()
            if self._transactional_id is not None and self._txn is None:
                raise KafkaException(
                    KafkaError(KafkaError._STATE, "Operation not valid in state Ready: no open transaction")
                )
            t = broker.topics.get(topic)
            ts = timestamp or int(broker.clock() * 1000)
            # what the broker counts against max.message.bytes: the headers too
            size = (
                len(value_b or b"") + len(key_b or b"") + sum(len(n) + len(v or b"") for n, v in hdrs or ())
            )
            error: KafkaError | None = None
            if t is None:
                error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic!r} does not exist")
            elif size > min(self._max_bytes, t.max_message_bytes()):
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
            elif partition >= len(t.logs):
                error = KafkaError(KafkaError._UNKNOWN_PARTITION, f"{topic!r} has no partition {partition}")
            if error is not None or t is None:
                out = MemoryMessage(topic, max(partition, 0), -1, key_b, value_b, ts, hdrs, error)
            else:
                p = partition if partition >= 0 else self._partition(t, key_b)
                offset = broker.append(topic, p, _Stored(key_b, value_b, ts, hdrs, self._txn))
                out = MemoryMessage(topic, p, offset, key_b, value_b, ts, hdrs)
            with self._lock:
                self._reports.append((report, error, out))

    def poll(self, timeout: float | None = None) -> int:
        """Serve the delivery reports of the records produced so far.

        With none to serve, a ``timeout`` passes on the broker's ``idle`` (the driver's clock
        moves by it) instead of blocking.
        """
        with self._lock:
            reports, self._reports = self._reports, []
        if not reports and timeout and timeout > 0 and self._broker.idle is not None:
            self._broker.idle(timeout)
        for report, error, msg in reports:
            if report is not None:
                report(error, msg)
        return len(reports)

    def flush(self, timeout: float | None = None) -> int:
        self.poll(0)
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Fail the records whose reports were not served yet with ``_PURGE_QUEUE``, as librdkafka does."""
        purged = KafkaError(KafkaError._PURGE_QUEUE, "Local: Purged in queue")
        with self._lock:
            self._reports = [(report, error or purged, msg) for report, error, msg in self._reports]

    # ------------------------------------------------------------------ transactions
    def _check_fenced(self) -> None:
        tid = self._transactional_id
        if tid is not None and self._epoch is not None and self._broker.epochs.get(tid) != self._epoch:
            raise _fenced(tid)

    def init_transactions(self, timeout: float | None = None) -> None:
        if self._transactional_id is None:
            raise KafkaException(KafkaError(KafkaError._NOT_CONFIGURED, "transactional.id is not set"))
        self._epoch = self._broker.init_transactions(self._transactional_id)

    def begin_transaction(self) -> None:
        with self._broker.lock:
            self._check_fenced()
            if self._epoch is None or self._txn is not None:
                raise KafkaException(KafkaError(KafkaError._STATE, "begin_transaction: not in state Ready"))
            assert self._transactional_id is not None
            self._txn = _Transaction(self._transactional_id)
            self._broker.open_transactions[self._transactional_id] = self._txn

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float | None = None
    ) -> None:
        with self._broker.lock:
            self._check_fenced()
            if self._txn is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
            for tp in positions:
                self._txn.offsets[(group_metadata.group_id, tp.topic, tp.partition)] = tp.offset

    def commit_transaction(self, timeout: float | None = None) -> None:
        self.poll(0)  # librdkafka flushes before committing
        with self._broker.lock:
            self._check_fenced()
            if self._txn is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
            assert self._transactional_id is not None
            self._broker.end_transaction(self._transactional_id, self._txn, commit=True)
            self._txn = None

    def abort_transaction(self, timeout: float | None = None) -> None:
        self.purge()  # the records stay in the log, marked aborted: read_committed readers skip them
        with self._broker.lock:
            self._check_fenced()
            if self._txn is not None:
                assert self._transactional_id is not None
                self._broker.end_transaction(self._transactional_id, self._txn, commit=False)
                self._txn = None


@dataclass(frozen=True)
class _GroupMetadata:
    group_id: str


class MemoryConsumer:
    """confluent-kafka's ``Consumer`` over a ``MemoryBroker``, the only member of its group."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._group: str = config.get("group.id", "")
        self._committed_only = config.get("isolation.level") == "read_committed"
        self._eof = str(config.get("enable.partition.eof", False)).lower() == "true"
        self._reset = config.get("auto.offset.reset", "latest")
        self._on_commit: Callable[..., Any] | None = config.get("on_commit")
        self._positions: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._at_eof: set[tuple[str, int]] = set()
        self._subscription: list[str] | None = None
        self._callbacks: dict[str, Callable[..., Any] | None] = {}
        self._joined = False
        self._commit_reports: list[list[TopicPartition]] = []
        self._closed = False

    # ------------------------------------------------------------------ group
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., Any] | None = None,
        on_revoke: Callable[..., Any] | None = None,
        on_lost: Callable[..., Any] | None = None,
    ) -> None:
        self._subscription = list(topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def _join(self) -> None:
        self._joined = True
        assert self._subscription is not None
        with self._broker.lock:
            parts = [
                TopicPartition(t, p)
                for t in self._subscription
                for p in range(len(self._broker.topic(t).logs))
            ]
        on_assign = self._callbacks.get("assign")
        if on_assign is not None:
            on_assign(self, parts)
        self.incremental_assign([tp for tp in parts if (tp.topic, tp.partition) not in self._positions])

    def _start(self, topic: str, partition: int, offset: int) -> int:
        if offset >= 0:
            return offset
        committed = self._broker.committed(self._group, topic, partition)
        if committed >= 0:
            return committed
        t = self._broker.topic(topic)
        if self._reset in ("earliest", "smallest", "beginning"):
            return t.starts[partition]
        return self._broker.end_offset(topic, partition, self._committed_only)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._positions = {}
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions[(tp.topic, tp.partition)] = self._start(tp.topic, tp.partition, tp.offset)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)

    def unassign(self) -> None:
        self._positions = {}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._positions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        key = (partition.topic, partition.partition)
        self._positions[key] = self._start(partition.topic, partition.partition, partition.offset)
        self._at_eof.discard(key)

    # ------------------------------------------------------------------ records
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemoryMessage]:
        """The next records of the assigned, unpaused partitions, partition by partition."""
        if self._closed:
            raise RuntimeError("Consumer closed")
        gate = self._broker.gate
        if self._subscription is not None and gate is not None:
            gate()
        self._serve_commit_reports()
        if self._subscription is not None and not self._joined:
            self._join()
        out: list[MemoryMessage] = []
        for key in sorted(self._positions):
            if key in self._paused or len(out) >= num_messages:
                continue
            topic, partition = key
            got, position = self._broker.fetch(
                topic, partition, self._positions[key], num_messages - len(out), self._committed_only
            )
            self._positions[key] = position
            out.extend(got)
            if got:
                self._at_eof.discard(key)
            elif self._eof and key not in self._at_eof:
                self._at_eof.add(key)
                eof = KafkaError(KafkaError._PARTITION_EOF, f"{topic}[{partition}] reached end at {position}")
                out.append(MemoryMessage(topic, partition, position, None, None, 0, None, eof))
        if any(m.error() is None for m in out):
            with self._broker.lock:
                self._broker.version += 1
        return out

    def poll(self, timeout: float | None = None) -> MemoryMessage | None:
        got = self.consume(1, timeout or 0)
        return got[0] if got else None

    def _serve_commit_reports(self) -> None:
        reports, self._commit_reports = self._commit_reports, []
        if self._on_commit is not None:
            for parts in reports:
                self._on_commit(None, parts)

    def commit(
        self,
        message: Any = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        if offsets is None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        self._broker.commit_offsets(self._group, [(tp.topic, tp.partition, tp.offset) for tp in offsets])
        done = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous:
            self._commit_reports.append(done)  # served by the next consume, as librdkafka does
            return None
        return done

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._broker.committed(self._group, tp.topic, tp.partition)
            )
            for tp in partitions
        ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), _OFFSET_INVALID)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        t = self._broker.topic(partition.topic)
        return (
            t.starts[partition.partition],
            self._broker.end_offset(partition.topic, partition.partition, self._committed_only),
        )

    def consumer_group_metadata(self) -> _GroupMetadata:
        return _GroupMetadata(self._group)

    def close(self) -> None:
        """Leave the group: the assigned partitions are revoked first (the revoke callback commits them)."""
        if self._closed:
            return
        on_revoke = self._callbacks.get("revoke")
        if self._joined and on_revoke is not None and self._positions:
            on_revoke(self, [TopicPartition(t, p) for t, p in sorted(self._positions)])
        self._serve_commit_reports()
        self._positions = {}
        self._closed = True


@dataclass(frozen=True)
class _PartitionMetadata:
    id: int
    leader: int = 0
    replicas: tuple[int, ...] = (0,)
    isrs: tuple[int, ...] = (0,)
    error: KafkaError | None = None


@dataclass(frozen=True)
class _TopicMetadata:
    topic: str
    partitions: dict[int, _PartitionMetadata]
    error: KafkaError | None = None


@dataclass(frozen=True)
class _ClusterMetadata:
    topics: dict[str, _TopicMetadata]
    brokers: dict[int, str]
    cluster_id: str = "sluice-memory"


@dataclass(frozen=True)
class _Offset:
    offset: int


@dataclass(frozen=True)
class _ConfigEntry:
    name: str
    value: str


class MemoryAdmin:
    """confluent-kafka's ``AdminClient`` over a ``MemoryBroker``: metadata, offsets, configs, creation, deletion."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker

    def poll(self, timeout: float | None = None) -> int:
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMetadata:
        with self._broker.lock:
            names = [topic] if topic is not None else list(self._broker.topics)
            topics: dict[str, _TopicMetadata] = {}
            for name in names:
                t = self._broker.topics.get(name)
                if t is None:
                    error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Broker: Unknown topic or partition")
                    topics[name] = _TopicMetadata(name, {}, error)
                else:
                    topics[name] = _TopicMetadata(
                        name, {p: _PartitionMetadata(p) for p in range(len(t.logs))}
                    )
            return _ClusterMetadata(topics, {0: "memory:9092"})

    def create_topics(self, new_topics: list[Any], **_kwargs: Any) -> dict[str, Future]:
        out: dict[str, Future] = {}
        for nt in new_topics:
            if nt.topic in self._broker.topics:
                error = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, f"Topic '{nt.topic}' already exists.")
                out[nt.topic] = _done(error=KafkaException(error))
                continue
            self._broker.create_topic(nt.topic, nt.num_partitions, nt.config)
            out[nt.topic] = _done()
        return out

    def list_offsets(self, request: dict[TopicPartition, Any], **kwargs: Any) -> dict[TopicPartition, Future]:
        committed_only = "COMMITTED" in str(kwargs.get("isolation_level", ""))
        out: dict[TopicPartition, Future] = {}
        for tp, spec in request.items():
            try:
                t = self._broker.topic(tp.topic)
                if spec == OffsetSpec.latest():
                    offset = self._broker.end_offset(tp.topic, tp.partition, committed_only)
                else:
                    offset = t.starts[tp.partition]
                out[tp] = _done(_Offset(offset))
            except KafkaException as exc:
                out[tp] = _done(error=exc)
        return out

    def describe_configs(self, resources: list[Any], **_kwargs: Any) -> dict[Any, Future]:
        out: dict[Any, Future] = {}
        for resource in resources:
            try:
                t = self._broker.topic(resource.name)
            except KafkaException as exc:
                out[resource] = _done(error=exc)
                continue
            config = {"max.message.bytes": str(t.max_message_bytes()), **t.config}
            out[resource] = _done({k: _ConfigEntry(k, v) for k, v in config.items()})
        return out

    def delete_records(
        self, partitions: list[TopicPartition], **_kwargs: Any
    ) -> dict[TopicPartition, Future]:
        out: dict[TopicPartition, Future] = {}
        with self._broker.lock:
            for tp in partitions:
                t = self._broker.topic(tp.topic)
                t.starts[tp.partition] = max(
                    t.starts[tp.partition], min(tp.offset, len(t.logs[tp.partition]))
                )
                out[tp] = _done(TopicPartition(tp.topic, tp.partition, t.starts[tp.partition]))
        return out


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
