"""Where the latency floor comes from: one hop (produce -> local broker -> consume) under each setting.

A producer writes the stateless events at ``--rate``/s (in 10 ms slices, as the latency
scenario's probe does) to a fresh 4-partition topic; a consumer in the same process
(assigned, not subscribed: no group join) stamps each record's arrival. Latency =
arrival - the record's CreateTime (both this machine's clock). Each row changes one
setting of the producer (``linger.ms``), of the consumer (``fetch.wait.max.ms``) or of
the consume loop (``consume(n, timeout)``, which returns when it holds ``n`` records or
the timeout expired, against ``poll`` for the first record then ``consume(n, 0)``).
The first 10% of each run (fetch sessions warming up) is left out.

Usage:
    python -m benchmarks.latency_breakdown --rate 5000 --seconds 8
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, TopicPartition

from benchmarks._kafka import BROKERS, create_topics, delete_topics, input_producer, make_event, unique_name

PARTITIONS = 4


@dataclass(frozen=True)
class Setting:
    """One row: producer linger.ms, how the consumer loop waits, its fetch.wait.max.ms (None: default)."""

    label: str
    linger_ms: int
    wait: tuple[int, float] | None  # consume(n, timeout); None: poll for the first, then consume(n, 0)
    fetch_wait_ms: int | None


SETTINGS = (
    Setting("the old probe: consume(1000, 50 ms), fetch.wait.max.ms 5, linger 1", 1, (1000, 0.05), 5),
    Setting("sluice/hand loop: consume(1000, 100 ms), fetch wait default (500)", 1, (1000, 0.1), None),
    Setting("floor loop: consume(500, 10 ms), fetch wait default", 1, (500, 0.01), None),
    Setting("poll first, then consume(1000, 0); fetch.wait.max.ms 5", 1, None, 5),
    Setting("poll first; fetch wait default (500)", 1, None, None),
    Setting("poll first; producer linger.ms 5 (sluice's default)", 5, None, None),
    Setting("poll first; producer linger.ms 20 (the bulk input producer)", 20, None, None),
)


def one_hop(s: Setting, rate: int, seconds: float, brokers: str = BROKERS) -> list[float]:
    """The latencies (ms) of one run with setting ``s``."""
    topic = unique_name("bench-latency-hop")
    create_topics([topic], PARTITIONS, brokers)
    config = {"bootstrap.servers": brokers, "group.id": unique_name("bench-hop"), "enable.auto.commit": False}
    if s.fetch_wait_ms is not None:
        config["fetch.wait.max.ms"] = s.fetch_wait_ms
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    latencies: list[float] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if s.wait is None:
                first = consumer.poll(0.05)
                msgs = [first, *consumer.consume(1000, 0)] if first is not None else []
            else:
                msgs = consumer.consume(*s.wait)
            now = time.time() * 1000
            latencies.extend(now - m.timestamp()[1] for m in msgs if m.error() is None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(2)  # the assignment's first fetch
    producer = input_producer(brokers, **{"linger.ms": s.linger_ms})
    per_slice, total, start = max(1, rate // 100), int(rate * seconds), time.monotonic()
    i = 0
    try:
        while i < total:
            pause = start + (i // per_slice) * 0.01 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            for _ in range(per_slice):
                event = make_event(i)
                producer.produce(topic, orjson.dumps(event), event["user"].encode())
                i += 1
            producer.poll(0)
        producer.flush(30)
        time.sleep(1)
    finally:
        stop.set()
        reader.join(10)
        consumer.close()
        delete_topics([topic], brokers)
    return latencies[len(latencies) // 10 :]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(f"one hop at {args.rate:,}/s for {args.seconds:g} s per row\n")
    print("| setting | p50 ms | p99 ms | n |\n|---|---:|---:|---:|")
    for s in SETTINGS:
        lat = one_hop(s, args.rate, args.seconds)
        cuts = statistics.quantiles(lat, n=100)
        print(f"| {s.label} | {cuts[49]:.1f} | {cuts[98]:.1f} | {len(lat)} |", flush=True)


if __name__ == "__main__":
    main()
