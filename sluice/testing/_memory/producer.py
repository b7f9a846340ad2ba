"""confluent-kafka's ``Producer`` over a ``MemoryBroker``."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from sluice.testing._memory.broker import MemoryBroker, MemoryMessage, Stored, Topic, Transaction, murmur2

__all__ = ["MemoryProducer"]


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
        self._txn: Transaction | None = None
        self._reports: list[tuple[Callable[..., Any] | None, KafkaError | None, MemoryMessage]] = []
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._reports)

    def _partition(self, topic: Topic, key: bytes | None) -> int:
        n = len(topic.logs)
        if key is None:
            return next(topic.round_robin) % n
        if self._murmur:
            return (murmur2(key) & 0x7FFFFFFF) % n
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
                offset = broker.append(topic, p, Stored(key_b, value_b, ts, hdrs, self._txn))
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
            self._txn = Transaction(self._transactional_id)
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
