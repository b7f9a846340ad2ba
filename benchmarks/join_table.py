"""A stream enriched from a table: ``--orders`` records joined with a ``--keys``-key ``app.table``.

The table's rows are stamped before the orders, so the join reads the whole table
(into its RocksDB store) before the first order is joined: the run reports that
catch-up, the join rate after it, and the app process's peak RSS (it runs in a child
process of its own). Every output is checked: order ``i`` must carry the row of its
user. One partition, one process; a smoke run is quick:

    .venv/bin/python -m benchmarks.join_table --orders 200000 --keys 20000
    .venv/bin/python -m benchmarks.join_table --orders 200000 --keys 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

import orjson

from benchmarks._kafka import BROKERS, create_topics, delete_topics, input_producer, read_topic, unique_name

T0 = 1_700_000_000_000


def user_of(i: int, keys: int) -> int:
    return (i * 7919) % keys  # scattered over the table: lookups hit the whole store


def produce(table: str, orders: str, n: int, keys: int, brokers: str) -> None:
    producer = input_producer(brokers)

    def send(topic: str, value: bytes, key: bytes, ts: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.1)

    for k in range(keys):
        send(table, orjson.dumps({"name": f"user {k}", "tier": k % 3}), f"u{k}".encode(), T0)
    for i in range(n):
        send(orders, orjson.dumps({"i": i, "amount": i % 100}), f"u{user_of(i, keys)}".encode(), T0 + 1 + i)
    producer.flush()


def child(args: argparse.Namespace) -> None:
    """The app: joins and reports its timings and peak RSS on stdout (one JSON line)."""
    from sluice import App

    app = App(args.group, brokers=args.brokers, state_dir=args.state, progress_interval="1h")
    users = app.table(args.table, value="json")
    app.stream(args.orders_topic, value="json").join(users, lambda o, u: {**o, "user": u}).to(args.output)
    thread = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False})
    thread.start()
    app.wait_ready(120)
    started = time.monotonic()
    while (app.stats.records_out if app.stats else 0) < 1:
        time.sleep(0.005)
    first = time.monotonic()
    while app.stats.records_out < args.orders:
        time.sleep(0.01)
    done = time.monotonic()
    app.stop()
    thread.join()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    report = {"catch_up_s": first - started, "join_s": done - first, "peak_rss_mb": peak}
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--brokers", default=BROKERS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("group", "state", "table", "orders-topic", "output"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    table, orders, output = unique_name("join-users"), unique_name("join-orders"), unique_name("join-out")
    create_topics([table, orders], 1, args.brokers)
    group = unique_name("bench-join")
    try:
        produce(table, orders, args.orders, args.keys, args.brokers)
        cmd = [sys.executable, "-m", "benchmarks.join_table", "--child", "--brokers", args.brokers]
        cmd += ["--orders", str(args.orders), "--group", group, "--state", f"/tmp/{group}"]
        cmd += ["--table", table, "--orders-topic", orders, "--output", output]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ)
        if run.returncode != 0:
            sys.stderr.write(run.stderr[-3000:])
            return 1
        report = orjson.loads(run.stdout.strip().splitlines()[-1])
        wrong = seen = 0
        ids: set[int] = set()
        for record in read_topic(output, 1, args.brokers):
            value = orjson.loads(record.value())
            seen += 1
            ids.add(value["i"])
            user = user_of(value["i"], args.keys)
            if value["user"] != {"name": f"user {user}", "tier": user % 3}:
                wrong += 1
        ok = seen == args.orders == len(ids) and wrong == 0
        print(
            f"join: {args.orders:,} orders, {args.keys:,}-key table: table read in {report['catch_up_s']:.1f}s "
            f"({args.keys / report['catch_up_s']:,.0f} rows/s), then {args.orders / report['join_s']:,.0f} "
            f"orders/s; peak RSS {report['peak_rss_mb']:.0f} MB; output {'ok' if ok else 'WRONG'} "
            f"({seen:,} records, {wrong} wrong)"
        )
        return 0 if ok else 1
    finally:
        delete_topics([table, orders, output], args.brokers)
        shutil.rmtree(f"/tmp/{group}", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
