"""Windowed count vs the stateless pipeline on the same input: rate, state on disk, restore rate, RSS.

The input topic (4 partitions) holds ``--records`` JSON events (~200 B) of ``--keys``
users, event times spread over 10 minutes. Two ``sluice run`` processes read it in
turn, each in its own consumer group:

    stateless  filter(clicks) + map + to       (the stateless scenario's pipeline)
    windowed   key_by(user) + window(tumbling="1m", grace="10m") + count().final() + to

Rate = input records / (time from process start until the group's committed offsets
reach the end of the input, and for the windowed app of its repartition topic too):
process start and group join count for both alike. Then one far-future record per
key closes every window and the final counts are checked against a count made here
(grace 10 min: records of different input partitions interleave in the repartition
topic, and none may be late). Then the state dir is deleted and the app started
again: the stores are restored from the changelog (rate from the app's log).

Usage:
    python -m benchmarks.windowed_state --records 1000000 --keys 10000
    python -m benchmarks.windowed_state --records 20000 --keys 500 --no-save    # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from benchmarks._kafka import BROKERS, create_topics, delete_topics, input_producer, unique_name

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
T0 = int(time.time() * 1000) // 60_000 * 60_000 - 3_600_000  # a minute boundary, an hour ago
SPAN_MS = 600_000
FLUSH_AFTER_MS = 30 * 60_000  # past every window's end + grace (10 min)

STATELESS = """
from sluice import App
app = App({group!r}, brokers={brokers!r})
(app.stream({topic!r}).filter(lambda e: e["type"] == "click")
    .map(lambda e: {{"id": e["id"], "page": e["page"], "user": e["user"]}}).to({out!r}))
"""
WINDOWED = """
from sluice import App
app = App({group!r}, brokers={brokers!r}, state_dir={state!r})
(app.stream({topic!r}).key_by(lambda e: e["user"]).window(tumbling="1m", grace="10m")
    .count(name="per-user").final().to({out!r}))
"""


def produce(topic: str, records: int, keys: int) -> Counter:
    """Produce the input; return the expected count per (user, window start)."""
    producer = input_producer()
    expected: Counter = Counter()
    step = SPAN_MS / records
    for i in range(records):
        user = f"user-{i % keys}"
        ts = T0 + int(i * step)
        value = orjson.dumps(
            {"id": i, "type": "click" if i % 10 < 3 else "view", "user": user, "page": f"/product/{i % 44}",
             "referrer": "https://example.com/landing", "agent": "Mozilla/5.0 (X11; Linux x86_64)", "ts": ts}
        )  # fmt: skip
        while True:
            try:
                producer.produce(topic, value, user.encode(), timestamp=ts)
                break
            except BufferError:
                producer.poll(0.05)
        expected[(user, ts - ts % 60_000)] += 1
    assert producer.flush(120) == 0
    return expected


def committed_and_end(group: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": group, "enable.auto.commit": False})
    try:
        if topic not in consumer.list_topics(timeout=10).topics:
            return 0, 1
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        done = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
        end = sum(consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in parts)
        return done, end
    finally:
        consumer.close()


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start(folder: Path, module: str, source: str) -> tuple[subprocess.Popen, Path]:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    log = folder / f"{module}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "run", f"{module}:app"],
        cwd=folder,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": f"{folder}:{ROOT}"},
    )
    return proc, log


def run_until_committed(
    folder: Path, module: str, source: str, group: str, topics: list[str], timeout: float
) -> dict:
    started = time.perf_counter()
    proc, log = start(folder, module, source)
    rss = 0.0
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            rss = max(rss, peak_rss_mb(proc.pid))
            if all(committed_and_end(group, t)[0] >= committed_and_end(group, t)[1] > 0 for t in topics):
                break
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{module}: not done within {timeout:.0f}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        rss = max(rss, peak_rss_mb(proc.pid))
        return {"seconds": seconds, "peak_rss_mb": rss, "proc": proc, "log": log}
    except BaseException:
        proc.kill()
        raise


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(120)


def drain_finals(topic: str, wanted: int, timeout: float) -> dict[tuple[str, int], int]:
    consumer = Consumer(
        {"bootstrap.servers": BROKERS, "group.id": unique_name("check"), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: dict[tuple[str, int], int] = {}
    duplicates = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < wanted:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    v = orjson.loads(m.value())
                    duplicates += (v["key"], v["start"]) in got
                    got[(v["key"], v["start"])] = v["value"]
    finally:
        consumer.close()
    if duplicates:
        raise AssertionError(f"{duplicates} windows reported twice")
    return got


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    topic, out_a, out_b = unique_name("win-in"), unique_name("win-stateless"), unique_name("win-out")
    g_a, g_b = unique_name("win-stateless"), unique_name("win-windowed")
    internal = [f"{g_b}-per-user-repartition", f"{g_b}-per-user-changelog"]
    folder = Path(tempfile.mkdtemp(prefix="sluice-windowed-"))
    state = folder / "state"
    create_topics([topic], PARTITIONS)
    try:
        print(f"producing {args.records:,} records of {args.keys:,} keys to {topic} ...", flush=True)
        expected = produce(topic, args.records, args.keys)
        fmt = {"brokers": BROKERS, "topic": topic, "state": str(state)}
        stateless = run_until_committed(
            folder, "stateless_app", STATELESS.format(group=g_a, out=out_a, **fmt), g_a, [topic], args.timeout
        )
        stop(stateless["proc"])
        windowed = run_until_committed(
            folder, "windowed_app", WINDOWED.format(group=g_b, out=out_b, **fmt), g_b, [topic, internal[0]],
            args.timeout,
        )  # fmt: skip
        # one far-future record per key closes every window
        # (in the past still: brokers refuse timestamps more than an hour ahead)
        producer = input_producer()
        refused: list[str] = []
        for k in range(args.keys):
            producer.produce(
                topic,
                b'{"user": "flush-%d"}' % k,
                b"flush-%d" % k,
                timestamp=T0 + SPAN_MS + FLUSH_AFTER_MS,
                on_delivery=lambda err, _m: refused.append(str(err)) if err else None,
            )
        producer.flush(60)
        if refused:
            raise RuntimeError(f"flush records refused: {refused[0]}")
        finals = drain_finals(out_b, len(expected), args.timeout)
        windowed["peak_rss_mb"] = max(windowed["peak_rss_mb"], peak_rss_mb(windowed["proc"].pid))
        code = stop(windowed["proc"])
        ok = finals == dict(expected) and code == 0
        state_mb = du_mb(state)

        shutil.rmtree(state)
        restore_started = time.perf_counter()
        proc, log = start(folder, "windowed_app", WINDOWED.format(group=g_b, out=out_b, **fmt))
        restored: list[tuple[int, float]] = []
        pattern = r"restored (\d+) changelog records of \d+ partitions in ([\d.]+)s"
        while time.perf_counter() - restore_started < args.timeout:
            restored = [(int(n), float(s)) for n, s in re.findall(pattern, log.read_text())]
            if restored:
                time.sleep(2)  # the assignment's restores are logged together
                restored = [(int(n), float(s)) for n, s in re.findall(pattern, log.read_text())]
                break
            time.sleep(0.2)
        restore_rss = peak_rss_mb(proc.pid)
        stop(proc)
        restore_records = sum(n for n, _ in restored)
        restore_seconds = sum(s for _, s in restored)
    finally:
        delete_topics([topic, out_a, out_b, *internal])

    rate_a = args.records / stateless["seconds"]
    rate_b = args.records / windowed["seconds"]
    restore_rate = restore_records / restore_seconds if restore_seconds else 0.0
    rows = [
        ("stateless filter+map+to", f"{rate_a:,.0f}", "1.00", f"{stateless['peak_rss_mb']:.0f}", "-"),
        ("windowed count (tumbling 1m)", f"{rate_b:,.0f}", f"{rate_b / rate_a:.2f}", f"{windowed['peak_rss_mb']:.0f}",
         "exact" if ok else "WRONG"),
    ]  # fmt: skip
    command = "python -m benchmarks.windowed_state " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Windowed count vs stateless, {dt.date.today()}",
        "",
        f"`{command}` — {args.records:,} records, {args.keys:,} keys, {PARTITIONS} partitions, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, single broker on 127.0.0.1.",
        "Rates include process start and group join, alike for both.",
        "",
        "| pipeline | records/s | ratio | peak RSS MB | final counts |",
        "|---|---:|---:|---:|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        f"- windows reported: {len(finals):,} (expected {len(expected):,})",
        f"- state on disk after the run: {state_mb:.1f} MB (RocksDB, {PARTITIONS} partitions)",
        f"- restore from the changelog after deleting the state dir: {restore_records:,} records in "
        f"{restore_seconds:.2f}s = {restore_rate:,.0f} records/s; peak RSS of the restoring process "
        f"{restore_rss:.0f} MB",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_save:
        results = ROOT / "benchmarks" / "results"
        (results / f"windowed-state-{dt.date.today()}.md").write_text(report + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok and restored else 1


if __name__ == "__main__":
    sys.exit(main())
