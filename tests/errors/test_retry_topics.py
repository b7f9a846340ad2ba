"""Delayed retry topics: a failing record waits in <app>.retry.N before being tried again, then the DLQ."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import orjson

from sluice import App
from tests.apps import running, wait_for

N = 30
FLAKY = {3, 17}  # succeed on the third attempt
DEAD = {11}  # never succeed


def test_records_pass_through_delayed_retry_topics_then_succeed_or_die(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(f"key-{i}".encode(), orjson.dumps({"id": i})) for i in range(N)])
    attempts: dict[int, list[float]] = defaultdict(list)

    def fragile(e):
        attempts[e["id"]].append(time.monotonic())
        if e["id"] in DEAD or (e["id"] in FLAKY and len(attempts[e["id"]]) < 3):
            raise ConnectionError(f"service unavailable for {e['id']}")
        return e

    app = App(f"retry-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=0, retry_topics=["1s", "2s"])
    app.stream(src).map(fragile).to(out)

    with running(app) as outcome:
        outputs = kafka.drain(out, expected=N - len(DEAD), timeout=60)
        dead = kafka.drain(f"{app.name}.dlq", expected=len(DEAD), timeout=30)
        wait_for(
            lambda: sum(max(o, 0) for o in kafka.committed(app.name, src, 2).values()) == N,
            30,
            what="source offsets committed",
            outcome=outcome,
        )
    kafka.created += [f"{app.name}.dlq", f"{app.name}.retry.1", f"{app.name}.retry.2"]

    assert {orjson.loads(r.value)["id"] for r in outputs} == set(range(N)) - DEAD
    for i in FLAKY | DEAD:
        times = attempts[i]
        assert len(times) == 3, f"record {i}: 1 attempt + 2 retry topics, got {len(times)}"
        assert times[1] - times[0] >= 0.9, "first retry topic waits ~1s"
        assert times[2] - times[1] >= 1.9, "second retry topic waits ~2s"
    (letter,) = dead
    headers = {k: v.decode() for k, v in letter.headers if k.startswith("sluice.error.")}
    assert letter.key == b"key-11" and letter.value == orjson.dumps({"id": 11})
    assert headers["sluice.error.topic"] == src, (
        "the dead letter names the original topic, not the retry topic"
    )
    assert headers["sluice.error.attempts"] == "3"
    assert headers["sluice.error.stage"] == "process"
    assert not any(k.startswith("sluice.retry.") for k, _ in letter.headers)
    assert app.stats.failures.parked == 2 * len(FLAKY | DEAD)
    assert app.stats.dead_letters == 1
