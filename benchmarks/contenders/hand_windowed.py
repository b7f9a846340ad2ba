"""A careful hand-written confluent-kafka loop for scenario "windowed".

Tumbling one-minute counts per message key (the input is keyed by user), on the
records' Kafka timestamps, grace 0, final results only: per partition, stream time is
the largest timestamp seen, and a window is emitted once stream time reaches its end.
State is a dict per partition; it is not persisted, so at-least-once comes from the
commits instead: a partition's committed offset never passes the first record of a
window still open (a restart recounts those windows from that record).
"""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Producer, TopicPartition

from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    WINDOW_MS,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)

COMMIT_INTERVAL = 1.0


class PartitionWindows:
    """Open windows of one partition: counts, first offsets, stream time."""

    __slots__ = ("counts", "first_offset", "next_offset", "stream_time")

    def __init__(self) -> None:
        self.counts: dict[int, dict[bytes, int]] = defaultdict(lambda: defaultdict(int))
        self.first_offset: dict[int, int] = {}
        self.stream_time = -1
        self.next_offset = 0

    def closed(self) -> list[tuple[int, dict[bytes, int]]]:
        """Remove and return the windows whose end is at or before stream time, oldest first."""
        done = sorted(s for s in self.counts if s + WINDOW_MS <= self.stream_time)
        out = [(s, self.counts.pop(s)) for s in done]
        for s in done:
            self.first_offset.pop(s, None)
        return out

    def committable(self) -> int:
        return min(self.first_offset.values(), default=self.next_offset)


def main() -> None:
    args = parse_args(__doc__)
    topic, out = args.input, args.output
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    consumer.subscribe([topic])
    parts: dict[int, PartitionWindows] = defaultdict(PartitionWindows)
    errors: list = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err)

    consumed = emitted = 0
    first = None
    next_commit = time.monotonic() + COMMIT_INTERVAL
    while consumed < args.records:
        msgs = consumer.consume(num_messages=1000, timeout=0.1)
        if msgs and first is None:
            first = report_first()
        touched: set[int] = set()
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            kind, ts = m.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                msg = f"record {m.partition()}/{m.offset()} has no timestamp"
                raise ValueError(msg)
            pw = parts[m.partition()]
            start = ts - ts % WINDOW_MS
            if start + WINDOW_MS > pw.stream_time:  # else: late (grace 0), dropped
                pw.counts[start][m.key()] += 1
                pw.first_offset.setdefault(start, m.offset())
            pw.stream_time = max(pw.stream_time, ts)
            pw.next_offset = m.offset() + 1
            touched.add(m.partition())
        consumed += len(msgs)
        for p in touched:
            for start, counts in parts[p].closed():
                end = start + WINDOW_MS
                for key, n in counts.items():
                    value = {"key": key.decode(), "start": start, "end": end, "value": n}
                    producer.produce(out, orjson.dumps(value), key, on_delivery=on_delivery)
                    emitted += 1
        producer.poll(0)
        if errors:
            msg = f"delivery failed: {errors[0]}"
            raise RuntimeError(msg)
        if time.monotonic() >= next_commit and producer.flush(30) == 0:
            offsets = [TopicPartition(topic, p, pw.committable()) for p, pw in parts.items()]
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=True)
            next_commit = time.monotonic() + COMMIT_INTERVAL
    if producer.flush(60):
        msg = "outputs not acknowledged"
        raise RuntimeError(msg)
    offsets = [TopicPartition(topic, p, pw.committable()) for p, pw in parts.items()]
    if offsets:
        consumer.commit(offsets=offsets, asynchronous=False)
    consumer.close()
    report(consumed=consumed, emitted=emitted, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
