"""Inputs of the scenarios beyond ``benchmarks._kafka.produce_events``: windowed, io, join, paced (latency)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks._kafka import BROKERS, input_producer, make_event, unique_name
from benchmarks.contenders import WINDOW_MS

__all__ = [
    "FLUSH_AFTER_MS",
    "SPAN_MS",
    "JoinInput",
    "LatencyProbe",
    "WindowedInput",
    "join_row",
    "join_user",
    "produce_io",
    "produce_join",
    "produce_windowed",
]

#: the windowed input's timestamps cover this span (10 tumbling windows)
SPAN_MS = 10 * WINDOW_MS
#: one flush record per partition this long after the first window starts
FLUSH_AFTER_MS = 20 * WINDOW_MS
#: the data starts this long before "now", minute-aligned: in the past (the broker
#: refuses timestamps more than an hour ahead) and recent (retention keeps it)
START_BEFORE_NOW_MS = 30 * WINDOW_MS


def _flush(producer: Producer, errors: list[str]) -> None:
    remaining = producer.flush(120)
    if remaining or errors:
        msg = f"producing the input failed: {remaining} not delivered, errors {errors[:3]}"
        raise RuntimeError(msg)


@dataclass(frozen=True)
class WindowedInput:
    """What ``produce_windowed`` wrote: the expected count per (key, window start)."""

    base_ms: int
    records: int
    flush_records: int
    expected: dict[tuple[str, int], int] = field(repr=False)

    @property
    def total(self) -> int:
        return self.records + self.flush_records


def windowed_event(i: int, records: int, keys: int, base_ms: int) -> dict:
    """Record ``i``: the stateless event with user ``i % keys`` and a timestamp ``ts`` in the span."""
    event = make_event(i)
    event["user"] = f"user-{i % keys:05d}"
    event["ts"] = base_ms + i * SPAN_MS // records
    return event


def produce_windowed(
    topic: str, records: int, keys: int, partitions: int, brokers: str = BROKERS
) -> WindowedInput:
    """``records`` events keyed by user, Kafka timestamp = ``ts``, then one flush record per partition.

    Timestamps rise with ``i`` over ``SPAN_MS`` from a minute-aligned start 30 minutes
    ago, so every partition is in timestamp order and the windows are deterministic.
    The flush records (key ``flush-<p>``, written to partition ``p``) are
    ``FLUSH_AFTER_MS`` after the start: they move every partition's stream time past the
    last real window's end, so grace-0 windows all close; the windows they open never do.
    """
    now = int(time.time() * 1000)
    base = now - now % WINDOW_MS - START_BEFORE_NOW_MS
    producer = input_producer(brokers)
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    expected: Counter[tuple[str, int]] = Counter()
    dumps = orjson.dumps
    for i in range(records):
        event = windowed_event(i, records, keys, base)
        ts = event["ts"]
        expected[(event["user"], ts - ts % WINDOW_MS)] += 1
        while True:
            try:
                producer.produce(
                    topic, dumps(event), event["user"].encode(), timestamp=ts, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    _flush(producer, errors)
    for p in range(partitions):
        flush = {"id": -1 - p, "type": "flush", "user": f"flush-{p}", "ts": base + FLUSH_AFTER_MS}
        producer.produce(
            topic,
            dumps(flush),
            flush["user"].encode(),
            partition=p,
            timestamp=flush["ts"],
            on_delivery=on_delivery,
        )
    _flush(producer, errors)
    return WindowedInput(base_ms=base, records=records, flush_records=partitions, expected=dict(expected))


def produce_io(topic: str, records: int, keys: int, brokers: str = BROKERS) -> None:
    """``{"id", "key"}`` records keyed by ``key-<i % keys>``."""
    producer = input_producer(brokers)
    errors: list[str] = []
    for i in range(records):
        key = f"key-{i % keys}"
        producer.produce(topic, orjson.dumps({"id": i, "key": key}), key.encode())
        if i % 1000 == 0:
            producer.poll(0)
    _flush(producer, errors)


class LatencyProbe:
    """Produces stateless events at a fixed rate and times their outputs' arrival.

    Send time = ``time.time()`` at ``produce()`` (the record's CreateTime is taken there
    too); arrival = ``time.time()`` when this process's consumer of the output topic
    (``read_committed``, ``fetch.wait.max.ms`` 5, woken by the first record) gets the output. Both clocks are this process's. Ids of the paced records start at
    0; warm-up pings (clicks, sent until the contender's first output shows) use ids
    from ``PING_BASE`` and are not timed.
    """

    PING_BASE = 1_000_000_000

    def __init__(self, input_topic: str, output_topic: str, partitions: int, brokers: str = BROKERS) -> None:
        self.input, self.output, self.partitions, self.brokers = (
            input_topic,
            output_topic,
            partitions,
            brokers,
        )
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.duplicates = 0
        self.pings = 0
        self._producer = input_producer(brokers, **{"linger.ms": 1})
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.brokers,
                "group.id": unique_name("bench-latency"),
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                # exactly-once outputs count when committed; other outputs are unaffected
                "isolation.level": "read_committed",
            }
        )
        consumer.assign([TopicPartition(self.output, p, 0) for p in range(self.partitions)])
        try:
            while not self._stop.is_set():
                # consume(n, timeout) returns only when n records came or the timeout expired:
                # the arrival would be stamped up to the whole timeout late. poll() returns
                # on the first record; consume(n, 0) then takes what else is already here.
                first = consumer.poll(0.05)
                if first is None:
                    continue
                now = time.time()
                for msg in [first, *consumer.consume(1000, 0)]:
                    if msg.error() is not None:
                        continue
                    try:
                        ident = orjson.loads(msg.value())["id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    if ident in self.arrived:
                        self.duplicates += 1
                    else:
                        self.arrived[ident] = now
        finally:
            consumer.close()

    def warm_up(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Send a ping every 200 ms until ``ready()`` (it sees ``arrived``); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            ident = self.PING_BASE + 10 * self.pings  # i % 10 == 0: a click
            self.pings += 1
            self._producer.produce(self.input, orjson.dumps(make_event(ident)), str(ident).encode())
            self._producer.poll(0)
            time.sleep(0.2)
        return False

    def run(self, rate: int, seconds: float) -> int:
        """Produce ``rate`` records/s for ``seconds`` (in 10 ms slices); return how many were sent."""
        per_slice = max(1, rate // 100)
        total = int(rate * seconds)
        start = time.monotonic()
        i = 0
        while i < total:
            due = start + (i // per_slice) * 0.01
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            for _ in range(min(per_slice, total - i)):
                event = make_event(i)
                self.sent[i] = time.time()
                self._producer.produce(self.input, orjson.dumps(event), event["user"].encode())
                i += 1
            self._producer.poll(0)
        self._producer.flush(30)
        return total

    def ping_ids(self) -> set[int]:
        return {self.PING_BASE + 10 * k for k in range(self.pings)}

    def close(self) -> None:
        self._stop.set()
        self._reader.join(10)


#: the join scenario's table rows and stream records are stamped from this long before "now"
JOIN_START_BEFORE_NOW_MS = 60 * 60_000 // 2


def join_user(i: int, keys: int) -> int:
    """The user of stream record ``i``: scattered over the table, so lookups hit all of it."""
    return (i * 7919) % keys


def join_row(k: int) -> dict:
    """Table row of user ``k`` (key ``u<k>``)."""
    return {"name": f"user {k}", "tier": k % 3}


@dataclass(frozen=True)
class JoinInput:
    """What ``produce_join`` wrote: ``keys`` table rows stamped ``base_ms``, then ``records`` stamped after."""

    base_ms: int
    records: int
    keys: int


def produce_join(table: str, stream: str, records: int, keys: int, brokers: str = BROKERS) -> JoinInput:
    """The table topic first (``u<k>`` -> ``join_row(k)``), then the stream (``{"id", "user", "amount"}``).

    Both are keyed by user id and partitioned by the Java clients' partitioner (murmur2), so
    a key is in partition ``p`` of both topics (they are created with the same count). Table
    rows are stamped ``base``, stream record ``i`` ``base + 1 + i // 10``: every record is
    stamped after every row, so a time-synchronized join (Kafka Streams, sluice) or an as-of
    join (Quix Streams) finds every row. ``base`` is recent (retention keeps it), in the past.
    """
    now = int(time.time() * 1000)
    base = now - JOIN_START_BEFORE_NOW_MS
    producer = input_producer(brokers, partitioner="murmur2_random")
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    def send(topic: str, value: bytes, key: bytes, ts: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    dumps = orjson.dumps
    for k in range(keys):
        send(table, dumps(join_row(k)), f"u{k}".encode(), base)
    _flush(producer, errors)
    for i in range(records):
        user = f"u{join_user(i, keys)}"
        send(stream, dumps({"id": i, "user": user, "amount": i % 100}), user.encode(), base + 1 + i // 10)
        if i % 10_000 == 0:
            producer.poll(0)
    _flush(producer, errors)
    return JoinInput(base_ms=base, records=records, keys=keys)
