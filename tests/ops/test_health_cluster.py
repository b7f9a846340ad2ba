"""``/readyz`` flips to 503 while every broker of the 3-node cluster is down, and back when they return."""

from __future__ import annotations

import threading
import uuid

import orjson
import pytest

from sluice import App
from tests.apps import running, wait_for
from tests.ops.helpers import get_json, scrape, value

pytestmark = pytest.mark.cluster


def restart_all(cluster) -> None:
    """Start the three killed nodes together: one alone cannot form the KRaft quorum it waits for."""
    errors: list[BaseException] = []

    def start(node: int) -> None:
        try:
            cluster.restart(node)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in (1, 2, 3) if cluster.pid(n) is None]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    if errors:
        raise errors[0]


def test_readiness_flips_while_all_brokers_are_down_and_back_when_they_return(cluster):
    kafka = cluster.kafka
    src = kafka.create_topic(partitions=2, replication=3)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(out)
    app = App(
        f"ops-c-{uuid.uuid4().hex[:8]}",
        brokers=cluster.bootstrap,
        commit_interval="200ms",
        metrics_port=0,
        # fail fast on nothing: the app must ride out the outage, not exit
        producer_config={"message.timeout.ms": 300_000},
    )
    app.stream(src).map(lambda e: e).to(out)
    with running(app, ready_timeout=60) as outcome:
        base = app._runner.metrics.url
        wait_for(lambda: get_json(base + "/readyz")[0] == 200, timeout=30, what="ready", outcome=outcome)
        try:
            for node in (1, 2, 3):
                cluster.kill(node)
            _code, body = wait_for(
                lambda: (r := get_json(base + "/readyz"))[0] == 503 and r,
                timeout=60,
                what="readyz 503 with every broker down",
                outcome=outcome,
            )
            assert body["status"] == "not ready"
            assert body["reason"].startswith("all brokers are down (")
            assert body["reason"].endswith("); the clients keep reconnecting")
            assert value(scrape(base), "sluice_brokers_up") == 0
            assert value(scrape(base), "sluice_ready") == 0
            health = get_json(base + "/healthz")
            assert health[0] == 200, health  # alive: the poll loop keeps coming back while it waits
        finally:
            restart_all(cluster)
        wait_for(
            lambda: get_json(base + "/readyz")[0] == 200, timeout=120, what="ready again", outcome=outcome
        )
        assert value(scrape(base), "sluice_brokers_up") == 1

        kafka.produce(src, [(f"k{i}".encode(), orjson.dumps({"i": i})) for i in range(20)])
        wait_for(
            lambda: sum(v for (n, _), v in scrape(base).items() if n == "sluice_records_in_total") == 20,
            timeout=120,
            what="records consumed after the outage",
            outcome=outcome,
        )
    assert len(kafka.drain(out, expected=20, timeout=60)) == 20
