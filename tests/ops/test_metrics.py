"""``App(metrics_port=)``: the numbers on /metrics are the ones the test produced and consumed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid

import orjson
import pytest

from sluice import App
from sluice.errors import ConfigError
from tests.apps import ROOT, running, wait_for, write_app
from tests.ops.helpers import get_json, scrape, value, values


def make_app(kafka, **kwargs) -> App:
    return App(
        f"ops-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="200ms",
        metrics_port=0,
        **kwargs,
    )


def test_metrics_agree_with_what_was_produced_and_consumed(kafka, topic_factory):
    src = topic_factory(partitions=3)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    events = []
    for i in range(90):
        event = {"id": i, "type": ("click", "view", "purchase")[i % 3], "page": f"/p{i % 7}"}
        if i % 30 == 5:
            del event["page"]  # the map raises KeyError: 3 of them, all clicks or purchases
        events.append((f"u{i % 11}".encode(), orjson.dumps(event)))
    events += [(b"bad", b'{"id": ') for _ in range(4)]  # JSONDecodeError when deserialized
    kafka.produce(src, events)
    kafka.created += [out, dlq]
    ends = kafka.end_offsets(src, 3)
    assert sum(ends.values()) == 94
    app = make_app(kafka)
    app.on_error(retries=0, dead_letter=dlq)
    app.stream(src).filter(lambda e: e["type"] != "view").map(
        lambda e: {"id": e["id"], "page": e["page"]}
    ).to(out)

    with running(app) as outcome:
        base = app._runner.metrics.url

        def caught_up():
            s = scrape(base)
            lag = values(s, "sluice_consumer_lag")
            done = {int(dict(k)["partition"]): v for k, v in values(s, "sluice_commit_offset").items()}
            return s if len(lag) == 3 and not any(lag.values()) and done == ends else None

        samples = wait_for(
            caught_up, timeout=60, what="lag 0 and commits at the end offsets", outcome=outcome
        )
        health = get_json(base + "/healthz")
        ready = get_json(base + "/readyz")

    for p, end in ends.items():
        assert value(samples, "sluice_records_in_total", topic=src, partition=p) == end
        assert value(samples, "sluice_consumer_lag", topic=src, partition=p) == 0
        assert value(samples, "sluice_commit_offset", topic=src, partition=p) == end
        assert value(samples, "sluice_end_offset", topic=src, partition=p) == end
    assert value(samples, "sluice_records_out_total", topic=out) == 60 - 3
    assert value(samples, "sluice_dead_letters_total", stage="deserialize", exception="JSONDecodeError") == 4
    assert value(samples, "sluice_dead_letters_total", stage="process", exception="KeyError") == 3
    assert len(values(samples, "sluice_dead_letters_total")) == 2
    assert value(samples, "sluice_in_flight") == 0
    assert value(samples, "sluice_assigned_partitions") == 3
    assert value(samples, "sluice_rebalances_total") >= 1
    batches = value(samples, "sluice_batches_total")
    assert batches >= 1
    assert value(samples, "sluice_processing_seconds_count") == batches
    assert value(samples, "sluice_processing_seconds_bucket", le="+Inf") == batches
    assert value(samples, "sluice_ready") == 1
    assert value(samples, "sluice_app", app=app.name, group=app.name, version=_version()) == 1
    assert values(samples, "sluice_state_restore_remaining") == {}
    assert health[0] == 200 and health[1]["status"] == "ok"
    assert ready == (200, {"app": app.name, "group": app.name, "status": "ready", "partitions": 3})
    assert len(kafka.drain(out, expected=57)) == 57


def _version() -> str:
    from sluice import __version__

    return __version__


def test_healthz_fails_while_the_poll_loop_is_blocked_and_recovers(kafka, topic_factory):
    src = topic_factory()
    gate, entered = threading.Event(), threading.Event()

    def blocking(value):
        entered.set()
        gate.wait(30)
        return value

    app = make_app(kafka)
    app.stream(src).map(blocking).sink(lambda _v: None)
    with running(app) as outcome:
        metrics = app._runner.metrics
        metrics.stall_after = 1.0
        base = metrics.url
        wait_for(lambda: get_json(base + "/healthz")[1]["status"] == "ok", timeout=10, what="healthz ok")
        kafka.produce(src, [(None, b'{"a": 1}')])
        assert entered.wait(30)
        try:
            _code, body = wait_for(
                lambda: (r := get_json(base + "/healthz"))[0] == 503 and r, timeout=10, what="healthz 503"
            )
            assert body["status"] == "stuck"
            assert re.match(r"the poll loop has not come back for \d+s \(limit 1s\)", body["reason"])
            assert get_json(base + "/readyz")[0] == 200  # still assigned: stuck is liveness, not readiness
        finally:
            gate.set()
        wait_for(
            lambda: get_json(base + "/healthz")[0] == 200,
            timeout=10,
            what="healthz ok again",
            outcome=outcome,
        )


def test_metrics_port_in_use_or_invalid_is_a_config_error(kafka, topic_factory):
    with pytest.raises(ConfigError, match=r"metrics_port=-1 must be a TCP port number from 0 to 65535"):
        App("x", metrics_port=-1)
    with pytest.raises(ConfigError, match=r"metrics_port='9464' must be a TCP port number"):
        App("x", metrics_port="9464")
    with pytest.raises(
        ConfigError, match="unknown App option 'metric_port' \\(did you mean 'metrics_port'\\?\\)"
    ):
        App("x", metric_port=1)
    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        app = App("x", brokers=kafka.bootstrap, metrics_port=port)
        app.stream(topic_factory()).sink(print)
        with pytest.raises(
            ConfigError, match=f"metrics port {port} on 0.0.0.0 is already in use; choose another"
        ):
            app.run(install_signal_handlers=False)
    finally:
        blocker.close()


APP = """
from sluice import App
app = App({name!r}, brokers={brokers!r}, commit_interval="200ms")
app.stream({src!r}).map(lambda e: e).to({out!r})
"""


def test_one_scrape_of_the_parent_shows_every_worker(kafka, topic_factory, tmp_path):
    src, out = topic_factory(partitions=2), f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(out)
    name = f"ops-w-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path, "workers_app", APP.format(name=name, brokers=kafka.bootstrap, src=src, out=out)
    )
    log = tmp_path / "run.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "run", f"{module}:app", "--workers", "2", "--metrics-port", "0"],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        match = wait_for(
            lambda: re.search(r"metrics of 2 workers on (http://[\d.]+:\d+)/metrics", log.read_text()),
            timeout=30,
            what="the parent's metrics endpoint",
        )
        base = match.group(1)

        def both_assigned():
            s = scrape(base)
            parts = values(s, "sluice_assigned_partitions")
            return len(parts) == 2 and all(v == 1 for v in parts.values())

        wait_for(both_assigned, timeout=90, what="one partition per worker")
        kafka.produce(src, [(f"k{i}".encode(), orjson.dumps({"i": i})) for i in range(200)])
        ends = kafka.end_offsets(src, 2)

        def counted():
            s = scrape(base)
            return s if sum(values(s, "sluice_records_in_total").values()) == 200 else None

        samples = wait_for(counted, timeout=60, what="200 records in across the workers")
        workers = {dict(k)["worker"] for k in values(samples, "sluice_records_in_total")}
        assert workers == {"0", "1"}
        for p, end in ends.items():
            [count] = [
                v
                for k, v in values(samples, "sluice_records_in_total").items()
                if dict(k)["partition"] == str(p)
            ]
            assert count == end
        assert value(samples, "sluice_workers") == 2
        assert (
            value(samples, "sluice_worker_up", worker=0) == value(samples, "sluice_worker_up", worker=1) == 1
        )
        code, body = get_json(base + "/readyz")
        assert code == 200 and set(body["workers"]) == {"0", "1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
