"""A careful hand-written confluent-kafka loop: what a performance-minded engineer writes.

Batch consume (``consume(num_messages=1000)``), orjson, ``produce`` per record and one
``poll(0)`` per batch, delivery callbacks checked, and at-least-once commits: every
second the offsets consumed so far become a generation; a generation's offsets are
committed (asynchronously) once every output produced up to it is acknowledged.
``--pipeline heavy``: ``clean`` then ``keep`` of ``benchmarks._heavy`` per record.
"""

from __future__ import annotations

import time
from collections import deque

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from benchmarks._heavy import clean, keep
from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)

COMMIT_INTERVAL = 1.0


class Generation:
    """The outputs of one commit interval still awaiting acks, and the offsets they cover."""

    __slots__ = ("errors", "offsets", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.offsets: dict[int, int] = {}
        self.errors: list = []

    def on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(err)
        self.pending -= 1


def heavy_batch(msgs, out: str, produce, on_delivery, offsets: dict[int, int]) -> int:
    """``--pipeline heavy``: ``clean`` then ``keep`` (``benchmarks._heavy``) per record; returns the outputs."""
    loads, dumps = orjson.loads, orjson.dumps
    produced = 0
    for m in msgs:
        if m.error() is not None:
            raise KafkaException(m.error())
        row = clean(loads(m.value()))
        if keep(row):
            produce(out, dumps(row), m.key(), on_delivery=on_delivery)
            produced += 1
        offsets[m.partition()] = m.offset() + 1
    return produced


def main() -> None:
    args = parse_args(__doc__)
    topic, out = args.input, args.output
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    heavy = args.pipeline == "heavy"
    consumer.subscribe([topic])
    loads, dumps, produce, poll = orjson.loads, orjson.dumps, producer.produce, producer.poll
    closed: deque[Generation] = deque()
    gen = Generation()
    consumed = commits = 0
    first = None
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
            produced = 0
            if heavy:
                produced = heavy_batch(msgs, out, produce, on_delivery, offsets)
            else:
                for m in msgs:
                    if m.error() is not None:
                        raise KafkaException(m.error())
                    event = loads(m.value())
                    if event["type"] == "click":
                        produce(
                            out,
                            dumps({"id": event["id"], "page": event["page"], "user": event["user"]}),
                            m.key(),
                            on_delivery=on_delivery,
                        )
                        produced += 1
                    offsets[m.partition()] = m.offset() + 1
            gen.pending += produced
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
    report(consumed=consumed, commits=commits, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
