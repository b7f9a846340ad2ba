"""The hand-written loop done columnar: what map_batch's own machinery can at best approach.

Like ``hand_loop`` (same librdkafka settings, at-least-once commits per generation,
delivery callbacks checked), but each consumed batch of up to 10,000 records is read by
polars' NDJSON reader, filtered and selected as a frame, and written back with polars'
NDJSON writer; each output row is produced with its source record's key, timestamp and
headers. No error isolation, no retries, no dead letters: it is a floor for the Python
around the client, not a usable program.
"""

from __future__ import annotations

import io
import time
from collections import deque

import polars as pl
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from benchmarks._heavy import clean_frame
from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)
from benchmarks.contenders.hand_loop import COMMIT_INTERVAL, Generation

ROW = "__row"


def clicks(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("type") == "click").select("id", "page", "user", ROW)


def main() -> None:
    args = parse_args(__doc__)
    topic, out = args.input, args.output
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    transform = clean_frame if args.pipeline == "heavy" else clicks
    consumer.subscribe([topic])
    produce, poll = producer.produce, producer.poll
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
        msgs = consumer.consume(num_messages=10_000, timeout=0.05)
        if msgs:
            if first is None:
                first = report_first()
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
            df = pl.read_ndjson(io.BytesIO(b"\n".join([m.value() for m in msgs])))
            df = transform(df.with_columns(pl.Series(ROW, range(len(msgs)))))
            rows = df[ROW].to_list()
            lines = df.drop(ROW).write_ndjson().split("\n")
            on_delivery = gen.on_delivery
            for i, line in zip(rows, lines, strict=False):
                m = msgs[i]
                produce(
                    out,
                    line.encode(),
                    m.key(),
                    timestamp=m.timestamp()[1],
                    headers=m.headers(),
                    on_delivery=on_delivery,
                )
            gen.pending += len(rows)
            gen.offsets.update({m.partition(): m.offset() + 1 for m in msgs})
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
