"""Exactly-once vs at-least-once on the same input, same run: throughput, and latency at a fixed rate.

Pipelines (each in its own ``sluice run`` process and consumer group):

    stateless  filter(clicks) + map + to
    windowed   key_by(user) + window(tumbling="1m", grace="10m") + count().final() + to

each with ``guarantee="at_least_once"`` (commit every 1 s) and ``"exactly_once"``
(a transaction every 100 ms, the defaults). Throughput = input records / time from
process start until the group has committed the whole input (and its repartition
topic: there, each partition's last transaction marker takes one offset). Latency: with
the stateless app running and caught up, records are produced at ``--rate`` per second
for ``--seconds``; latency = arrival of the output at a ``read_committed`` consumer -
the input record's timestamp (carried to the output).

Usage:
    python -m benchmarks.exactly_once --records 1000000 --keys 10000
    python -m benchmarks.exactly_once --records 20000 --keys 500 --seconds 3 --no-save   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from benchmarks._kafka import BROKERS, create_topics, delete_topics, input_producer, unique_name
from benchmarks.windowed_state import PARTITIONS, committed_and_end, peak_rss_mb, produce, start, stop

ROOT = Path(__file__).resolve().parent.parent

STATELESS = """
from sluice import App
app = App({group!r}, brokers={brokers!r}, guarantee={guarantee!r}, state_dir={state!r})
(app.stream({topic!r}).filter(lambda e: e["type"] == "click")
    .map(lambda e: {{"id": e["id"], "page": e["page"], "user": e["user"]}}).to({out!r}))
"""
WINDOWED = """
from sluice import App
app = App({group!r}, brokers={brokers!r}, guarantee={guarantee!r}, state_dir={state!r})
(app.stream({topic!r}).key_by(lambda e: e["user"]).window(tumbling="1m", grace="10m")
    .count(name="per-user").final().to({out!r}))
"""


def done(group: str, topic: str, markers: int) -> bool:
    committed, end = committed_and_end(group, topic)
    return end > 0 and committed >= end - markers


def throughput(folder: Path, name: str, source: str, group: str, checks: list[tuple[str, int]], records: int,
               timeout: float) -> dict:  # fmt: skip
    started = time.perf_counter()
    proc, log = start(folder, name, source)
    rss = 0.0
    try:
        while not all(done(group, topic, markers) for topic, markers in checks):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{name}: not done within {timeout:.0f}s:\n{log.read_text()[-2000:]}")
            rss = max(rss, peak_rss_mb(proc.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        rss = max(rss, peak_rss_mb(proc.pid))
    return {"seconds": seconds, "rate": records / seconds, "rss": rss, "proc": proc}


def latency(topic: str, out: str, rate: int, seconds: float) -> dict:
    """Produce at ``rate``/s for ``seconds`` and time each output's arrival (read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": BROKERS,
            "group.id": unique_name("lat"),
            "auto.offset.reset": "latest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([out])
    while not consumer.assignment():
        consumer.poll(0.2)
    latencies: list[float] = []
    stop_at = time.time() + seconds + 10

    def produce_paced() -> None:
        producer = input_producer(**{"linger.ms": 1})
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = begin + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            value = orjson.dumps({"id": i, "type": "click", "user": f"u{i % 100}", "page": "/p"})
            producer.produce(topic, value, f"u{i % 100}".encode())
            producer.poll(0)
        producer.flush(30)

    thread = threading.Thread(target=produce_paced)
    thread.start()
    expected = int(rate * seconds)
    while len(latencies) < expected and time.time() < stop_at:
        # consume(n, timeout) returns at n records or the timeout: wake on the first instead
        first = consumer.poll(0.2)
        for m in [first, *consumer.consume(1000, 0)] if first is not None else []:
            if m.error() is None:
                latencies.append(time.time() * 1000 - m.timestamp()[1])
    thread.join()
    consumer.close()
    latencies.sort()
    if not latencies:
        return {"p50": None, "p99": None, "received": 0}
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "received": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    topic = unique_name("eosb-in")
    folder = Path(tempfile.mkdtemp(prefix="sluice-eos-bench-"))
    created = [topic]
    create_topics([topic], PARTITIONS)
    rows: list[dict] = []
    try:
        print(f"producing {args.records:,} records of {args.keys:,} keys to {topic} ...", flush=True)
        produce(topic, args.records, args.keys)
        for pipeline, template in (("stateless", STATELESS), ("windowed", WINDOWED)):
            for guarantee in ("at_least_once", "exactly_once"):
                group, out = unique_name(f"eosb-{pipeline}"), unique_name(f"eosb-out-{pipeline}")
                created += [out, f"{group}-per-user-repartition", f"{group}-per-user-changelog"]
                source = template.format(
                    group=group, brokers=BROKERS, guarantee=guarantee, state=str(folder / group), topic=topic, out=out
                )  # fmt: skip
                markers = PARTITIONS if guarantee == "exactly_once" else 0
                checks = [(topic, 0)]
                if pipeline == "windowed":
                    checks.append((f"{group}-per-user-repartition", markers))
                print(f"{pipeline} {guarantee} ...", flush=True)
                result = throughput(
                    folder, f"{pipeline}_{guarantee}", source, group, checks, args.records, args.timeout
                )
                row = {
                    "pipeline": pipeline,
                    "guarantee": guarantee,
                    "rate": result["rate"],
                    "rss": result["rss"],
                }
                if pipeline == "stateless":
                    row.update(latency(topic, out, args.rate, args.seconds))
                stop(result["proc"])
                rows.append(row)
    finally:
        delete_topics(created)

    def rate_of(pipeline: str, guarantee: str) -> float:
        return next(r["rate"] for r in rows if r["pipeline"] == pipeline and r["guarantee"] == guarantee)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    command = "python -m benchmarks.exactly_once " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Exactly-once vs at-least-once, {dt.date.today()}",
        "",
        f"`{command}` — {args.records:,} records, {args.keys:,} keys, {PARTITIONS} partitions, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, single broker on 127.0.0.1. "
        f"Latency: {args.rate:,} records/s for {args.seconds:.0f} s, stateless pipeline, read_committed consumer.",
        "",
        "| pipeline | guarantee | records/s | vs at-least-once | p50 ms | p99 ms | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["rate"] / rate_of(r["pipeline"], "at_least_once")
        lines.append(
            f"| {r['pipeline']} | {r['guarantee']} | {r['rate']:,.0f} | {ratio:.2f} | {ms(r.get('p50'))} | "
            f"{ms(r.get('p99'))} | {r['rss']:.0f} |"
        )
    cost = {
        p: 1 - rate_of(p, "exactly_once") / rate_of(p, "at_least_once") for p in ("stateless", "windowed")
    }
    lines += [
        "",
        "Goal: exactly-once costs <= 30% of the throughput at the default commit interval. Measured: "
        + ", ".join(f"{p} {c:.0%}" for p, c in cost.items())
        + ".",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_save:
        (ROOT / "benchmarks" / "results" / f"exactly-once-{dt.date.today()}.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
