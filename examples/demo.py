"""``make demo``: produce synthetic events, run the click pipeline with ``sluice run``, print a summary."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from examples.produce_events import produce_events
from sluice.kafka.coordinator import retry_coordinator

BROKERS = os.environ.get("SLUICE_BROKERS", "127.0.0.1:9092")
COUNT = int(os.environ.get("DEMO_EVENTS_COUNT", "200000"))
PARTITIONS = 4
ROOT = Path(__file__).resolve().parent.parent
DB = ROOT / "demo-clicks.db"


def committed_lag(group: str, topic: str) -> tuple[int, int]:
    """(sum of committed offsets, total lag) of ``group`` on ``topic``."""
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": group, "enable.auto.commit": False})
    try:
        if topic not in consumer.list_topics(timeout=10).topics:
            return 0, 0
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        # a broker that just started may still be loading its group coordinator
        committed = retry_coordinator(
            lambda: consumer.committed(parts, timeout=10), what=f"committed offsets of {group}"
        )
        total, lag = 0, 0
        for tp in committed:
            high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
            done = max(tp.offset, 0)
            total += done
            lag += high - done
        return total, lag
    finally:
        consumer.close()


def count_records(topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"demo-count-{uuid.uuid4().hex[:6]}"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions
        )
    finally:
        consumer.close()


def main() -> int:
    run = uuid.uuid4().hex[:6]
    for leftover in (DB, Path(f"{DB}-wal"), Path(f"{DB}-shm")):
        leftover.unlink(missing_ok=True)
    events, clicks, group = f"events-{run}", f"clicks-{run}", f"clicks-demo-{run}"
    repartition = f"{group}-page-minute-repartition"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    admin.create_topics([NewTopic(events, PARTITIONS, 1)])[events].result(30)

    print(
        f"1. producing {COUNT:,} synthetic events (clicks, views, purchases; some malformed) to {events} ..."
    )
    t0 = time.perf_counter()
    produced = produce_events(BROKERS, events, COUNT, malformed_every=997, broken_every=1499)
    print(f"   {COUNT:,} acknowledged in {time.perf_counter() - t0:.1f}s: {dict(produced)}")

    print(f"2. sluice run examples.clicks:app  (group {group}: {events} -> filter clicks -> {clicks})")
    env = {
        **os.environ,
        "DEMO_EVENTS": events,
        "DEMO_CLICKS": clicks,
        "DEMO_APP": group,
        "DEMO_DLQ": f"{events}.dlq",
        "DEMO_DB": str(DB),
        "DEMO_STATE_DIR": str(ROOT / ".sluice-state" / group),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen([sys.executable, "-m", "sluice", "run", "examples.clicks:app"], env=env, cwd=ROOT)
    started = time.perf_counter()
    deadline = started + 300
    first_commit = None
    while time.perf_counter() < deadline:
        done, lag = committed_lag(group, events)
        if done and first_commit is None:
            first_commit = time.perf_counter()
        # the windowed count reads the clicks again from its repartition topic: wait for it too
        if (
            done >= COUNT
            and lag == 0
            and committed_lag(group, repartition) == (count_records(repartition), 0)
        ):
            break
        if proc.poll() is not None:
            print(f"   the app exited early with code {proc.returncode}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)

    done, lag = committed_lag(group, events)
    outputs = count_records(clicks)
    dead = count_records(f"{events}.dlq")
    bad_clicks = produced["no-page"]
    print("3. summary")
    print(
        f"   input events     {COUNT:>10,}   ({produced['malformed']:,} malformed, {bad_clicks:,} without a page)"
    )
    print(f"   click outputs    {outputs:>10,}")
    print(f"   dead letters     {dead:>10,}   (malformed JSON + clicks the app could not process)")
    print(f"   committed        {done:>10,}   final lag {lag}")
    print(
        f"   wall time        {elapsed:>10.1f}s  (includes joining the group) = {COUNT / elapsed:,.0f} events/s"
    )
    print(f"   app exit code    {code:>10}   (SIGTERM: drained, committed, exited)")
    with sqlite3.connect(DB) as db:
        rows = db.execute("SELECT count(*) FROM clicks").fetchone()[0]
        top = db.execute(
            "SELECT page, count(*) AS n FROM clicks GROUP BY page ORDER BY n DESC LIMIT 5"
        ).fetchall()
        windowed = db.execute(
            "SELECT page, minute, clicks FROM clicks_per_minute ORDER BY clicks DESC LIMIT 5"
        ).fetchall()
        counted = db.execute("SELECT coalesce(sum(clicks), 0) FROM clicks_per_minute").fetchone()[0]
    print(f"   SQLite rows      {rows:>10,}   (table clicks in {DB.name}, upserted by id)")
    print("   top pages:", ", ".join(f"{page} ({n:,})" for page, n in top))
    print(f"   clicks per page per minute (windowed count, {counted:,} clicks in table clicks_per_minute):")
    for page, minute, n in windowed:
        print(f"     {time.strftime('%H:%M', time.gmtime(minute / 1000))} UTC  {page:<24} {n:>6,}")
    print(f"4. sluice dlq inspect {events}.dlq")
    subprocess.run(
        [sys.executable, "-m", "sluice", "dlq", "inspect", f"{events}.dlq", "--brokers", BROKERS], check=False
    )
    ok = code == 0 and lag == 0 and outputs + dead >= produced["click"] + produced["malformed"] and dead > 0
    ok = ok and rows == outputs and counted == rows
    print(
        "   OK: every event processed, nothing lost" if ok else "   FAILED",
        file=sys.stdout if ok else sys.stderr,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
