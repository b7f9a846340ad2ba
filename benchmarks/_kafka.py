"""Kafka helpers shared by the benchmarks: topics, data generation, offsets, output checks."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

__all__ = [
    "BROKERS",
    "Verdict",
    "create_topics",
    "delete_topics",
    "expected_click_ids",
    "input_producer",
    "make_event",
    "produce_events",
    "read_topic",
    "unique_name",
    "verify_output",
]

BROKERS = os.environ.get("SLUICE_BROKERS", "127.0.0.1:9092")

_TYPES = ("click", "view", "scroll", "click", "view", "purchase", "view", "click", "scroll", "view")
_COUNTRIES = ("DE", "FR", "US", "BR", "IN", "JP", "NG", "SE")


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def event_type(i: int) -> str:
    """Deterministic event type of record ``i``: 30% are clicks."""
    return _TYPES[(i * 7) % len(_TYPES)]


def make_event(i: int) -> dict:
    """Record ``i`` of the input topic: a JSON object of about 200 bytes."""
    return {
        "id": i,
        "type": event_type(i),
        "page": f"/products/item-{i % 997:04d}",
        "user": f"user-{i % 5003:05d}",
        "ts": 1_718_000_000_000 + i,
        "session": f"{(i * 2654435761) % (1 << 64):016x}",
        "ua": "Mozilla/5.0 (X11; Linux x86_64)",
        "ref": f"https://example.com/?q={i % 89}",
        "country": _COUNTRIES[i % len(_COUNTRIES)],
    }


def expected_click_ids(records: int) -> set[int]:
    return {i for i in range(records) if event_type(i) == "click"}


def create_topics(names: Iterable[str], partitions: int, brokers: str = BROKERS) -> None:
    """Create ``names`` and wait until every partition has a leader."""
    names = list(names)
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    pending = set(names)
    while pending:
        if time.monotonic() > deadline:
            msg = f"topics {sorted(pending)} have no leader for every partition after 30s"
            raise TimeoutError(msg)
        md = admin.list_topics(timeout=10).topics
        for name in list(pending):
            t = md.get(name)
            complete = t is not None and t.error is None and len(t.partitions) == partitions
            if complete and all(p.leader >= 0 for p in t.partitions.values()):
                pending.discard(name)
        if pending:
            time.sleep(0.1)


def delete_topics(names: Iterable[str], brokers: str = BROKERS) -> None:
    names = list(names)
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=60)


def input_producer(brokers: str = BROKERS, **config: object) -> Producer:
    """A producer for benchmark inputs: idempotent, so each partition keeps the order written.

    Without idempotence librdkafka retries a refused batch behind later ones (a fresh
    broker refuses the first writes to a new topic): the input then reaches the broker
    out of order, and windowed results change with it.
    """
    return Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 262_144,
            **config,
        }
    )


def produce_events(
    topic: str, records: int, brokers: str = BROKERS, make: Callable[[int], dict] = make_event
) -> float:
    """Write ``records`` events (``make(i)``, default ``make_event``) keyed by user, acks=all; return the seconds."""
    producer = input_producer(brokers)
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    dumps, produce, poll = orjson.dumps, producer.produce, producer.poll
    t0 = time.monotonic()
    for i in range(records):
        event = make(i)
        while True:
            try:
                produce(topic, dumps(event), event["user"].encode(), on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.05)
        if i % 10_000 == 0:
            poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        msg = f"producing the input failed: {remaining} not delivered, errors {errors[:3]}"
        raise RuntimeError(msg)
    return time.monotonic() - t0


class OffsetWatch:
    """Sum of a topic's end offsets, one ListOffsets request per call."""

    def __init__(self, topic: str, partitions: int, brokers: str = BROKERS) -> None:
        self._admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
        self._request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}

    def total(self) -> int:
        """The sum of the end offsets, or -1 when the broker could not tell (e.g. leader not known yet)."""
        futures = self._admin.list_offsets(self._request, request_timeout=5)
        try:
            return sum(f.result(timeout=10).offset for f in futures.values())
        except KafkaException:
            return -1


@dataclass(frozen=True)
class Verdict:
    """What an output topic holds compared with what it should."""

    records: int
    expected: int
    unique_ids: int
    duplicates: int
    missing: int
    unexpected: int
    malformed: int

    @property
    def ok(self) -> bool:
        return (
            self.records == self.expected
            and self.duplicates == 0
            and self.missing == 0
            and self.unexpected == 0
            and self.malformed == 0
        )

    def describe(self) -> str:
        if self.ok:
            return f"ok ({self.records} records)"
        return (
            f"WRONG: {self.records} records for {self.expected} expected, {self.duplicates} duplicates, "
            f"{self.missing} missing ids, {self.unexpected} unexpected ids, {self.malformed} malformed"
        )


def read_topic(
    topic: str, partitions: int, brokers: str = BROKERS, timeout: float = 120
) -> Iterator[Message]:
    """Every record of ``topic`` up to its current end offsets, partition order kept.

    The end of each partition is its end-of-partition event, not a count of records: a
    transactional output's end offsets include its commit markers, which are never
    delivered (a count would wait for them until ``timeout``).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique_name("bench-check"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=1):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
    finally:
        consumer.close()


def verify_output(topic: str, partitions: int, expected_ids: set[int], brokers: str = BROKERS) -> Verdict:
    """Read ``topic`` to its end offsets and compare its ids with ``expected_ids``."""
    seen: set[int] = set()
    count = duplicates = malformed = 0
    keys = {"id", "page", "user"}
    for msg in read_topic(topic, partitions, brokers):
        count += 1
        try:
            value = orjson.loads(msg.value())
            ident = value["id"]
            if value.keys() != keys or not value["page"].startswith("/products/"):
                malformed += 1
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            malformed += 1
            continue
        if ident in seen:
            duplicates += 1
        else:
            seen.add(ident)
    return Verdict(
        records=count,
        expected=len(expected_ids),
        unique_ids=len(seen),
        duplicates=duplicates,
        missing=len(expected_ids - seen),
        unexpected=len(seen - expected_ids),
        malformed=malformed,
    )
