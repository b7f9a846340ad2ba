"""``RuntimeMetrics`` without a broker: readiness and liveness reasons, per-app registries, merging workers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import orjson
from confluent_kafka import KafkaError
from prometheus_client import generate_latest

from sluice.kafka.config import settings_from_options
from sluice.metrics import MetricsServer, RuntimeMetrics, WorkerAggregator
from sluice.metrics._runtime import RuntimeSnapshot
from sluice.metrics.top import PartitionRow, TopSample, render, sample_from_metrics
from tests.ops.helpers import get_json, scrape, strip_ansi, value


class FakeRunner(SimpleNamespace):
    """The part of ``Runner`` the metrics read; ``snap`` is what ``snapshot()`` returns."""

    def snapshot(self) -> RuntimeSnapshot:
        return self.snap

    def change(self, **fields) -> None:
        self.snap = replace(self.snap, **fields)


def fake_runner(name: str = "orders") -> FakeRunner:
    return FakeRunner(
        name=name,
        settings=settings_from_options(name, "127.0.0.1:9092", {}),
        stats=SimpleNamespace(committed={}, rebalances=0, batches=0, commits=0),
        sources=[SimpleNamespace(topics=("events",))],
        ready=threading.Event(),
        snap=RuntimeSnapshot(),
    )


def stats_json(state: str) -> str:
    brokers = {"127.0.0.1:19092/1": {"state": state, "nodeid": 1}}
    return orjson.dumps({"type": "consumer", "brokers": brokers, "topics": {}}).decode()


def test_readiness_says_why_until_assigned_then_flips_with_the_brokers_and_state_restore():
    runner = fake_runner()
    metrics = RuntimeMetrics(runner)
    ok, body = metrics.readiness()
    assert not ok
    assert body["reason"] == "waiting for a partition assignment in consumer group 'orders'"

    runner.change(assigned=frozenset({("events", 0), ("events", 1)}))
    runner.ready.set()
    assert metrics.readiness() == (
        True,
        {"app": "orders", "group": "orders", "status": "ready", "partitions": 2},
    )

    metrics.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "3/3 brokers are down"))
    ok, body = metrics.readiness()
    assert not ok
    assert body["reason"] == "all brokers are down (3/3 brokers are down); the clients keep reconnecting"
    metrics.on_stats(stats_json("DOWN"))
    assert not metrics.readiness()[0]
    metrics.on_stats(stats_json("UP"))
    assert metrics.readiness()[0]
    metrics.on_stats(stats_json("CONNECT"))  # a stats report with no connection up is "down" as well
    assert metrics.readiness()[1]["reason"].startswith("all brokers are down (no broker connection is up)")
    metrics.on_stats(stats_json("UP"))

    metrics.set_restore_remaining("counts", 0, 1200)
    assert metrics.readiness()[1]["reason"] == "restoring state: 1200 changelog records to replay"
    metrics.set_restore_remaining("counts", 0, 0)
    assert metrics.readiness()[0]

    runner.change(stopping=True)
    assert metrics.readiness()[1]["reason"] == "stopping: finishing the records in flight, then committing"
    assert metrics.health() == (True, {"app": "orders", "group": "orders", "status": "stopping"})


def test_health_fails_with_a_reason_when_the_poll_loop_stops_coming_back():
    runner = fake_runner()
    metrics = RuntimeMetrics(runner, stall_after=0.2)
    assert metrics.health()[1]["status"] == "starting"
    metrics.last_loop = time.monotonic()
    assert metrics.health()[0]
    metrics.last_loop = time.monotonic() - 5
    ok, body = metrics.health()
    assert not ok
    assert body["status"] == "stuck"
    assert body["reason"].startswith("the poll loop has not come back for 5s (limit 0s)")
    runner.change(failure=RuntimeError("boom"))
    assert metrics.health()[1]["reason"] == "the app is stopping after an error: boom"


def test_each_app_has_its_own_registry():
    first, second = RuntimeMetrics(fake_runner("a")), RuntimeMetrics(fake_runner("b"))
    first.processing.observe(0.01)
    text_a, text_b = generate_latest(first.registry).decode(), generate_latest(second.registry).decode()
    assert 'app="a"' in text_a and 'app="b"' not in text_a
    assert "sluice_processing_seconds_count 1.0" in text_a
    assert "sluice_processing_seconds_count 0.0" in text_b


def test_lag_counts_from_the_committed_offset_or_the_start_before_any_commit():
    runner = fake_runner()
    runner.change(assigned=frozenset({("events", 0), ("events", 1), ("events", 2)}))
    runner.stats.committed[("events", 0)] = 40
    metrics = RuntimeMetrics(runner)
    metrics.on_stats(
        '{"type": "consumer", "brokers": {}, "topics": {"events": {"partitions": {'
        '"0": {"partition": 0, "desired": true, "lo_offset": 0, "hi_offset": 50, "ls_offset": 45, "committed_offset": 30, "next_offset": 50},'
        '"1": {"partition": 1, "desired": true, "lo_offset": 10, "hi_offset": 20, "ls_offset": 20, "committed_offset": -1001, "next_offset": -1001},'
        '"2": {"partition": 2, "desired": true, "lo_offset": -1001, "hi_offset": -1001, "ls_offset": -1001, "committed_offset": -1001, "next_offset": -1001},'
        '"-1": {"partition": -1, "desired": false}}}}}'
    )
    # read_committed (librdkafka's default): the end is the last stable offset; our own commit (40) is newer
    assert metrics.partition_offsets() == {
        ("events", 0): (40, 45, 5),
        ("events", 1): (None, 20, 10),
        ("events", 2): (None, None, None),
    }


def test_workers_endpoints_are_merged_with_a_worker_label_and_readiness_needs_all():
    class Worker:
        def __init__(self, n: int, ready: bool) -> None:
            self.n, self.ready = n, ready

        def metrics(self) -> bytes:
            return (
                "# TYPE sluice_records_in_total counter\n"
                f'sluice_records_in_total{{topic="t",partition="{self.n}"}} {10 * (self.n + 1)}\n'
            ).encode()

        def health(self):
            return True, {"status": "ok"}

        def readiness(self):
            return (
                (True, {"status": "ready"})
                if self.ready
                else (False, {"status": "not ready", "reason": "joining"})
            )

    servers = [
        MetricsServer(Worker(0, True), 0, "127.0.0.1"),
        MetricsServer(Worker(1, False), 0, "127.0.0.1"),
    ]
    aggregator = WorkerAggregator([s.port for s in servers])
    parent = aggregator.serve(0, "127.0.0.1")
    try:
        samples = scrape(parent.url)
        assert value(samples, "sluice_records_in_total", topic="t", partition=0, worker=0) == 10
        assert value(samples, "sluice_records_in_total", topic="t", partition=1, worker=1) == 20
        assert value(samples, "sluice_workers") == 2
        assert value(samples, "sluice_worker_up", worker=1) == 1
        assert get_json(parent.url + "/healthz")[0] == 200
        code, body = get_json(parent.url + "/readyz")
        assert code == 503
        assert body["reason"] == "worker 1: joining"
        servers[1].close()
        code, body = get_json(parent.url + "/readyz")
        assert code == 503 and "worker 1: endpoint http://127.0.0.1:" in body["reason"]
        assert value(scrape(parent.url), "sluice_worker_up", worker=1) == 0
    finally:
        aggregator.close()
        servers[0].close()


def test_top_view_shows_rates_between_two_samples():
    text = (
        'sluice_app{app="clicks",group="clicks",version="0"} 1\n'
        'sluice_records_in_total{topic="events",partition="0"} %d\n'
        'sluice_records_out_total{topic="out"} %d\n'
        'sluice_consumer_lag{topic="events",partition="0"} 7\n'
        'sluice_commit_offset{topic="events",partition="0"} 93\n'
        'sluice_end_offset{topic="events",partition="0"} 100\n'
        'sluice_dead_letters_total{stage="process",exception="KeyError"} 4\n'
        "sluice_in_flight 12\nsluice_rebalances_total 3\n"
    )
    before = sample_from_metrics(text % (100, 50), {"status": "ready"}, "http://x/metrics")
    after = sample_from_metrics(text % (300, 110), {"status": "ready"}, "http://x/metrics")
    after.at = before.at + 2.0
    from rich.console import Console

    console = Console(width=160, record=True, color_system=None)
    console.print(render(after, before))
    shown = strip_ansi(console.export_text())
    assert "clicks (group clicks)" in shown
    assert "in: 100 rec/s   out: 30 rec/s   lag: 7   in-flight: 12" in shown
    assert "dead letters: 4   rebalances: 3" in shown
    assert "events           0          93   100     7    100" in shown
    assert "KeyError" in shown


def test_top_view_from_the_brokers_shows_what_it_cannot_know_as_a_dash():
    sample = TopSample("brokers b", title="group g", status="Stable", reason="1 member")
    sample.partitions[("t", 0)] = PartitionRow("t", 0, 5, 9, 4, owner="c@h")
    from rich.console import Console

    console = Console(width=160, record=True, color_system=None)
    console.print(render(sample))
    shown = console.export_text()
    assert "in-flight: -   dead letters: -   rebalances: -" in shown
    assert "need the app's metrics endpoint" in shown
