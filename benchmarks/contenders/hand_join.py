"""Hand-written confluent-kafka join: the whole table into a dict first, then the stream enriched from it.

The table topic is read to its end offsets (taken at start) by an assigned consumer, the
rows parsed into a ``dict`` (key bytes -> row); then the stream is consumed and produced
like ``hand_loop`` (batch consume, orjson, one ``poll(0)`` per batch, the same
at-least-once commits). It does what a hand-written service does: no table updates while
it runs, nothing kept on disk, no time synchronization. The clock starts at the first
table record.
"""

from __future__ import annotations

import time
from collections import deque

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)
from benchmarks.contenders.hand_loop import COMMIT_INTERVAL, Generation


def read_table(brokers: str, topic: str) -> tuple[dict[bytes, dict], float | None]:
    """Every row of ``topic`` up to its end offsets now (a null value deletes the key); and the first record's time."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "unused-assigned-only", **CLIENT_CONSUMER})
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    ends: dict[int, int] = {}
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    rows: dict[bytes, dict] = {}
    loads = orjson.loads
    first = None
    while ends:
        for m in consumer.consume(num_messages=1000, timeout=0.1):
            if m.error() is not None:
                raise KafkaException(m.error())
            if first is None:
                first = report_first()
            value = m.value()
            if value is None:
                rows.pop(m.key(), None)
            else:
                rows[m.key()] = loads(value)
            p = m.partition()
            if p in ends and m.offset() + 1 >= ends[p]:
                del ends[p]
    consumer.close()
    return rows, first


def main() -> None:
    args = parse_args(__doc__)
    rows, first = read_table(args.brokers, args.table)
    topic, out = args.input, args.output
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    consumer.subscribe([topic])
    loads, dumps, produce, poll, get = orjson.loads, orjson.dumps, producer.produce, producer.poll, rows.get
    closed: deque[Generation] = deque()
    gen = Generation()
    consumed = commits = 0
    next_commit = time.monotonic() + COMMIT_INTERVAL

    def commit(asynchronous: bool) -> None:
        nonlocal commits
        offsets: dict[int, int] = {}
        while closed and closed[0].pending == 0:
            done = closed.popleft()
            if done.errors:
                msg = f"delivery failed: {done.errors[0]}"
                raise RuntimeError(msg)
            offsets.update(done.offsets)
        if offsets:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=asynchronous
            )
            commits += 1

    while consumed < args.records:
        msgs = consumer.consume(num_messages=1000, timeout=0.1)
        if msgs:
            if first is None:
                first = report_first()
            on_delivery, offsets = gen.on_delivery, gen.offsets
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                order = loads(m.value())
                user = get(m.key())
                if user is None:
                    order["name"] = order["tier"] = None
                else:
                    order["name"], order["tier"] = user["name"], user["tier"]
                produce(out, dumps(order), m.key(), on_delivery=on_delivery)
                offsets[m.partition()] = m.offset() + 1
            gen.pending += len(msgs)
            consumed += len(msgs)
        poll(0)
        if gen.errors:
            msg = f"delivery failed: {gen.errors[0]}"
            raise RuntimeError(msg)
        now = time.monotonic()
        if now >= next_commit:
            closed.append(gen)
            gen = Generation()
            commit(asynchronous=True)
            next_commit = now + COMMIT_INTERVAL
    remaining = producer.flush(60)
    if remaining:
        msg = f"{remaining} outputs not acknowledged"
        raise RuntimeError(msg)
    closed.append(gen)
    commit(asynchronous=False)
    consumer.close()
    report(
        consumed=consumed,
        table_rows=len(rows),
        commits=commits,
        finished=time.monotonic(),
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main()
