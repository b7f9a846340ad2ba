"""A careful hand-written confluent-kafka loop for scenario "io": a 20 ms handler, 64 threads.

Per consumed batch, the records are grouped by key and each key's records run in
order on a ``ThreadPoolExecutor(--concurrency)``; the batch's outputs are produced in
input order once every key is done, and its offsets committed once they are
acknowledged. Simple and correct (key order, at-least-once); the price is the barrier
at the end of each batch, where the pool idles waiting for the longest key.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    HANDLER_S,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)


def handle(e: dict) -> dict:
    time.sleep(HANDLER_S)
    return {"id": e["id"], "key": e["key"]}


def run_key(events: list[dict]) -> list[dict]:
    return [handle(e) for e in events]


def main() -> None:
    args = parse_args(__doc__)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    consumer.subscribe([args.input])
    pool = ThreadPoolExecutor(args.concurrency)
    consumed = 0
    first = None
    while consumed < args.records:
        msgs = consumer.consume(num_messages=500, timeout=0.1)
        if not msgs:
            continue
        if first is None:
            first = report_first()
        by_key: dict[bytes | None, list] = defaultdict(list)
        offsets: dict[int, int] = {}
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            by_key[m.key()].append(m)
            offsets[m.partition()] = m.offset() + 1
        futures = {
            key: pool.submit(run_key, [orjson.loads(m.value()) for m in group])
            for key, group in by_key.items()
        }
        for key, future in futures.items():
            for value in future.result():
                producer.produce(args.output, orjson.dumps(value), key)
        if producer.flush(30):
            msg = "outputs not acknowledged"
            raise RuntimeError(msg)
        consumer.commit(offsets=[TopicPartition(args.input, p, o) for p, o in offsets.items()])
        consumed += len(msgs)
    pool.shutdown()
    consumer.close()
    report(consumed=consumed, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
