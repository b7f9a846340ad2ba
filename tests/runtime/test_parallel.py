"""Parallel processing inside partitions: per-key order, async handlers, commits, backpressure, rebalances."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict

import orjson
import pytest

from sluice import App, ConfigError
from tests.apps import AppProcess, running, wait_for, write_app

KEYS = 200


def produce_keyed(kafka, topic, n):
    kafka.produce(topic, [(f"k{i % KEYS}", orjson.dumps({"id": i, "key": f"k{i % KEYS}"})) for i in range(n)])


def per_key_ids(records):
    seq = defaultdict(list)
    for r in records:
        v = orjson.loads(r.value)
        seq[v["key"]].append(v["id"])
    return seq


class Concurrency:
    """Counts how many calls run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_per_key_order_is_kept_under_concurrency_64(kafka, topic_factory):
    n = 4000
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    produce_keyed(kafka, src, n)
    seen = defaultdict(list)
    gauge = Concurrency()
    rng = random.Random(1)

    def handler(e):
        with gauge:
            time.sleep(rng.random() * 0.004)
            seen[e["key"]].append(e["id"])
        return e

    app = App(f"par-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, concurrency=64, ordering="key")
    app.stream(src).map(handler).to(out)
    with running(app):
        outputs = kafka.drain(out, expected=n, timeout=90)

    assert len(outputs) == n
    for key, ids in seen.items():
        assert ids == sorted(ids), f"key {key} processed out of order"
    for key, ids in per_key_ids(outputs).items():
        assert ids == sorted(ids), f"outputs of key {key} out of order"
    assert gauge.peak >= 32, f"only {gauge.peak} records ran at once"


def test_async_handlers_run_concurrently_on_the_event_loop(kafka, topic_factory):
    n = 1000
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    produce_keyed(kafka, src, n)
    gauge = Concurrency()

    async def lookup(e):
        with gauge:
            await asyncio.sleep(0.02)
        return {**e, "looked_up": True}

    app = App(f"async-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, concurrency=64)
    app.stream(src).map(lookup).to(out)
    with running(app):
        outputs = kafka.drain(out, expected=n, timeout=90)
    assert len(outputs) == n
    assert all(orjson.loads(r.value)["looked_up"] for r in outputs)
    assert gauge.peak >= 32
    for key, ids in per_key_ids(outputs).items():
        assert ids == sorted(ids), f"outputs of key {key} out of order"


def test_partition_ordering_runs_one_record_per_partition_at_a_time(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    for partition in (0, 1):
        kafka.produce(
            src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(partition, 200, 2)], partition=partition
        )
    gauge = Concurrency()
    order = defaultdict(list)

    def handler(e):
        with gauge:
            time.sleep(0.002)
            order[e["id"] % 2].append(e["id"])
        return e

    app = App(f"ppart-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, concurrency=16, ordering="partition")
    app.stream(src).map(handler).to(out)
    with running(app):
        assert len(kafka.drain(out, expected=200)) == 200
    assert gauge.peak <= 2, "at most one record per partition at a time"
    assert order[0] == list(range(0, 200, 2))
    assert order[1] == list(range(1, 200, 2))


def test_one_slow_record_holds_back_only_its_partition_commit(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(b"slow", orjson.dumps({"id": 0}))], partition=0)
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(1, 101)], partition=1)
    release = threading.Event()

    def handler(e):
        if e["id"] == 0:
            release.wait(30)
        return e

    app = App(f"slow-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, concurrency=8, commit_interval="100ms")
    app.stream(src).map(handler).to(out)
    with running(app) as outcome:
        wait_for(
            lambda: kafka.committed(app.name, src, 2)[1] == 100,
            30,
            what="partition 1 committed",
            outcome=outcome,
        )
        assert kafka.committed(app.name, src, 2)[0] < 1, "the slow record's partition must not be committed"
        release.set()
        wait_for(
            lambda: kafka.committed(app.name, src, 2)[0] == 1,
            30,
            what="partition 0 committed",
            outcome=outcome,
        )


def test_stalled_handler_keeps_in_flight_at_cap_and_consumer_in_group(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    produce_keyed(kafka, src, 2000)
    release = threading.Event()

    def handler(e):
        release.wait(60)
        return e

    app = App(
        f"stall-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        concurrency=4,
        max_in_flight=200,
        max_poll_records=50,
        max_poll_interval_ms=8000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    app.stream(src).map(handler).to(out)
    with running(app) as outcome:
        wait_for(lambda: app.stats.paused > 0, 30, what="partitions paused", outcome=outcome)
        rebalances_before = app.stats.rebalances
        peak = 0
        deadline = time.monotonic() + 12  # longer than max.poll.interval.ms
        while time.monotonic() < deadline:
            peak = max(peak, app._runner.tracker.in_flight)
            time.sleep(0.1)
        assert peak <= 200 + 50, f"in-flight {peak} exceeded the cap"
        assert app.stats.rebalances == rebalances_before, "the consumer must stay in its group while stalled"
        release.set()
        outputs = kafka.drain(out, expected=2000, timeout=60)
    assert len({orjson.loads(r.value)["id"] for r in outputs}) == 2000


def test_bad_concurrency_options_are_clear_errors():
    with pytest.raises(ConfigError, match="concurrency=0 must be a positive integer"):
        App("x", concurrency=0)
    with pytest.raises(ConfigError, match="ordering='by-key' must be one of 'key', 'partition', 'unordered'"):
        App("x", ordering="by-key")


PARALLEL_APP = """
import time
from sluice import App

app = App({group!r}, brokers={bootstrap!r}, concurrency=64, commit_interval="100ms", progress_interval="2s")

# 6,000 records of 30 ms on 64 threads: ~3 s, so a kill after a quarter lands mid-stream
def slow(e):
    time.sleep(0.03)
    return e

app.stream({src!r}).map(slow).to({out!r})
"""


@pytest.fixture
def parallel_pipeline(kafka, topic_factory, tmp_path):
    n = 6000
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    produce_keyed(kafka, src, n)
    group = f"parproc-{uuid.uuid4().hex[:8]}"
    write_app(
        tmp_path, "par_app", PARALLEL_APP.format(group=group, bootstrap=kafka.bootstrap, src=src, out=out)
    )
    return {
        "n": n,
        "src": src,
        "out": out,
        "outputs": lambda: sum(kafka.end_offsets(out, 4).values()),
        "done": lambda: sum(max(o, 0) for o in kafka.committed(group, src, 4).values()) >= n,
    }


def test_kill9_with_hundreds_in_flight_loses_nothing(kafka, parallel_pipeline, tmp_path, capsys):
    n, out = parallel_pipeline["n"], parallel_pipeline["out"]
    first = AppProcess(tmp_path, "par_app")
    wait_for(lambda: parallel_pipeline["outputs"]() >= n // 4, 90, what="a quarter of the outputs")
    first.kill9()
    assert parallel_pipeline["outputs"]() < n
    second = AppProcess(tmp_path, "par_app")
    wait_for(parallel_pipeline["done"], 120, what="every input committed (all outputs after restart)")
    assert second.terminate() == 0, second.log()
    ids = [orjson.loads(r.value)["id"] for r in kafka.drain(out, idle=3, timeout=120)]
    assert set(ids) == set(range(n))
    with capsys.disabled():
        print(f"\n  concurrency 64, kill -9: {len(ids) - n} duplicates (allowed), none lost")


def test_rebalance_with_work_in_flight_loses_nothing_and_keeps_key_order(kafka, parallel_pipeline, tmp_path):
    n, out = parallel_pipeline["n"], parallel_pipeline["out"]
    first = AppProcess(tmp_path, "par_app", log_name="first.log")
    wait_for(lambda: parallel_pipeline["outputs"]() >= n // 5, 90, what="a fifth of the outputs")
    second = AppProcess(tmp_path, "par_app", log_name="second.log")
    wait_for(lambda: "assigned" in second.log(), 60, what="the second worker's assignment")
    wait_for(lambda: parallel_pipeline["outputs"]() >= n // 2, 90, what="half of the outputs")
    assert first.terminate() == 0, first.log()
    wait_for(parallel_pipeline["done"], 120, what="every input committed (all outputs)")
    assert second.terminate() == 0, second.log()
    outputs = kafka.drain(out, idle=3, timeout=120)
    assert {orjson.loads(r.value)["id"] for r in outputs} == set(range(n))
    for key, ids in per_key_ids(outputs).items():
        assert ids == sorted(ids), f"key {key} out of order across the rebalance: {ids[:20]}"
