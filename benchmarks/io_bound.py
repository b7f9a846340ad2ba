"""I/O-bound scenario: a 20 ms handler, 3,000 records over 200 keys on 4 partitions.

Contenders, in one run against the same input topic:

- sluice ``concurrency=1`` (sequential: the baseline; measured on ``--seq-records``
  records because 3,000 x 20 ms is a minute of sleeping),
- sluice ``concurrency=64, ordering="key"`` with a ``time.sleep`` handler (thread pool),
- sluice ``concurrency=64`` with an ``asyncio.sleep`` handler (event loop),
- the seed's naive pattern: a confluent-kafka loop with auto-commit that hands each
  message to a ``ThreadPoolExecutor(64)`` and moves on. For it the run also counts
  per-key order violations (a record handled before an earlier record of its key) and
  premature commits (an auto-commit covering an offset whose handler had not finished).

Run: ``.venv/bin/python -m benchmarks.io_bound`` (``--records 600 --seq-records 60`` for
a smoke run). Prints a table and writes ``benchmarks/results/io-bound-<date>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from benchmarks._kafka import BROKERS, create_topics, delete_topics, input_producer, unique_name

RESULTS = Path(__file__).resolve().parent / "results"
HANDLER_S = 0.02
KEYS = 200
PARTITIONS = 4


class OrderLog:
    """Per key, the ids in the order their handler finished; counts violations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, int] = {}
        self.violations = 0
        self.done = 0
        self.first: float | None = None

    def start(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def record(self, key: str, ident: int) -> None:
        with self.lock:
            if self.last.get(key, -1) > ident:
                self.violations += 1
            self.last[key] = max(ident, self.last.get(key, -1))
            self.done += 1


def produce_input(topic: str, records: int) -> None:
    producer = input_producer(**{"linger.ms": 5})
    for i in range(records):
        producer.produce(
            topic, key=f"key-{i % KEYS}", value=orjson.dumps({"id": i, "key": f"key-{i % KEYS}"})
        )
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def run_sluice(topic: str, records: int, concurrency: int, use_async: bool) -> dict:
    from sluice import App

    log = OrderLog()

    def handle(e: dict) -> dict:
        log.start()
        time.sleep(HANDLER_S)
        log.record(e["key"], e["id"])
        return e

    async def handle_async(e: dict) -> dict:
        log.start()
        await asyncio.sleep(HANDLER_S)
        log.record(e["key"], e["id"])
        return e

    out = unique_name("io-out")
    app = App(unique_name("io-sluice"), brokers=BROKERS, concurrency=concurrency, progress_interval="1h")
    app.stream(topic).map(handle_async if use_async else handle).to(out)
    thread = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    app.wait_ready(60)
    while log.done < records:
        time.sleep(0.005)
    elapsed = time.perf_counter() - (log.first or time.perf_counter())
    app.stop()
    thread.join(60)
    delete_topics([out])
    return {"rate": records / elapsed, "elapsed": elapsed, "violations": log.violations, "premature": 0}


def run_naive_pool(topic: str, records: int) -> dict:
    """The seed's pattern: auto-commit, submit each message to a pool, move on."""
    log = OrderLog()
    unfinished: dict[int, set[int]] = defaultdict(set)
    lock = threading.Lock()
    premature = 0

    def on_commit(err, partitions):
        nonlocal premature
        if err is not None:
            return
        with lock:
            for tp in partitions:
                pending = unfinished[tp.partition]
                if pending and tp.offset > min(pending):
                    premature += 1

    consumer = Consumer(
        {
            "bootstrap.servers": BROKERS,
            "group.id": unique_name("io-naive"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 100,
            "on_commit": on_commit,
        }
    )
    consumer.subscribe([topic])
    pool = ThreadPoolExecutor(64)

    def handle(partition: int, offset: int, e: dict) -> None:
        log.start()
        time.sleep(HANDLER_S)
        log.record(e["key"], e["id"])
        with lock:
            unfinished[partition].discard(offset)

    while log.done < records:
        msg = consumer.poll(0.05)
        if msg is None or msg.error():
            continue
        with lock:
            unfinished[msg.partition()].add(msg.offset())
        pool.submit(handle, msg.partition(), msg.offset(), orjson.loads(msg.value()))
    elapsed = time.perf_counter() - (log.first or time.perf_counter())
    pool.shutdown()
    consumer.close()
    return {
        "rate": records / elapsed,
        "elapsed": elapsed,
        "violations": log.violations,
        "premature": premature,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--seq-records", type=int, default=300)
    args = parser.parse_args(argv)

    topic, seq_topic = unique_name("io-in"), unique_name("io-seq")
    create_topics([topic, seq_topic], PARTITIONS)
    produce_input(topic, args.records)
    produce_input(seq_topic, args.seq_records)
    rows: list[tuple[str, dict]] = []
    try:
        rows.append(("sluice concurrency=1 (sequential)", run_sluice(seq_topic, args.seq_records, 1, False)))
        rows.append(("sluice concurrency=64, time.sleep", run_sluice(topic, args.records, 64, False)))
        rows.append(("sluice concurrency=64, asyncio.sleep", run_sluice(topic, args.records, 64, True)))
        rows.append(("naive ThreadPoolExecutor(64) + auto-commit", run_naive_pool(topic, args.records)))
    finally:
        delete_topics([topic, seq_topic])

    base = rows[0][1]["rate"]
    lines = [
        f"# I/O-bound benchmark ({dt.date.today()})",
        "",
        f"Command: `.venv/bin/python -m benchmarks.io_bound --records {args.records} --seq-records {args.seq_records}`",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, Kafka 4.4.0 (single local broker).",
        f"Handler: {HANDLER_S * 1000:.0f} ms per record; {args.records} records over {KEYS} keys on {PARTITIONS} partitions.",
        "Rate: records / time from the first handler call to the last handler done.",
        "",
        "| contender | records/s | x sequential | per-key order violations | premature commits |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['rate']:,.0f} | {r['rate'] / base:.1f}x | {r['violations']} | {r['premature']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"io-bound-{dt.date.today()}.md").write_text(text)
    ok = all(r["violations"] == 0 for name, r in rows if name.startswith("sluice"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
