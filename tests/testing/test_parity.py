"""The TestDriver gives what the real broker gives: the same app, the same records, once through
each, the same outputs, late records and dead letters. Needs the broker (not marked ``memory``)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import orjson

from sluice import App
from sluice.testing import TestDriver
from tests.apps import running, wait_for

T0 = 1_700_000_020_000  # a minute boundary


def build(name: str, src: str, brokers: str, state_dir: Path) -> App:
    app = App(name, brokers=brokers, commit_interval="200ms", state_dir=state_dir)
    app.on_error(retries=1, backoff="10ms..10ms", dead_letter=f"{src}.dlq")
    events = app.stream(src, value="json")
    checked = events.map(lambda e: {**e, "cents": round(e["price"] * 100)}, name="price")
    checked.to(f"{src}.priced")
    (
        checked.key_by(lambda e: e["user"])
        .window(tumbling="1m", grace="5s", late=f"{src}.late")
        .count(name="per-user")
        .final()
        .to(f"{src}.counts")
    )
    return app


def records(seed: int) -> list[tuple[bytes, bytes, int]]:
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes, int]] = []
    ts = T0
    for i in range(300):
        ts += rng.randint(0, 3_000)
        user = f"u{rng.randint(0, 9)}"
        event: dict = {"id": i, "user": user, "price": rng.randint(1, 500) / 10}
        if i % 37 == 5:
            del event["price"]  # fails the map: dead letter after its retry
        value = orjson.dumps(event) if i % 53 != 7 else b"{broken"
        late = rng.random() < 0.05
        out.append((user.encode(), value, ts - (90_000 if late else rng.randint(0, 4_000))))
    return out


def comparable(topic_records, dead: bool = False) -> list:
    rows = []
    for key, value, timestamp, headers in topic_records:
        hdrs = tuple((n, v) for n, v in headers if n != "sluice.error.stacktrace") if dead else ()
        rows.append((key, value, timestamp, hdrs))
    return sorted(rows)


def test_the_driver_and_the_broker_give_the_same_outputs_late_records_and_dead_letters(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=1)
    name = f"parity-{uuid.uuid4().hex[:8]}"
    kafka.created.extend(
        [f"{src}.priced", f"{src}.counts", f"{src}.late", f"{src}.dlq"]
        + [f"{name}-per-user-{kind}" for kind in ("changelog", "repartition")]
    )
    sent = records(seed=11)
    kafka.produce(src, [(k, v, {"timestamp": ts}) for k, v, ts in sent])

    app = build(name, src, kafka.bootstrap, tmp_path / "broker")
    with running(app) as outcome:
        wait_for(lambda: kafka.committed(name, src) == {0: len(sent)}, what="all committed", outcome=outcome)
    on_kafka = {
        topic: [(r.key, r.value, r.timestamp, list(r.headers)) for r in kafka.drain(topic, idle=1.0)]
        for topic in (f"{src}.priced", f"{src}.counts", f"{src}.late", f"{src}.dlq")
    }

    twin = build(name, src, "127.0.0.1:1", tmp_path / "driver")  # the driver never contacts brokers
    with TestDriver(twin) as driver:
        for key, value, ts in sent:
            driver.send(src, value, key, timestamp=ts)
        in_memory = {
            topic: [(r.key, r.value, r.timestamp, r.headers) for r in driver.output(topic, raw=True)]
            for topic in on_kafka
        }

    assert len(on_kafka[f"{src}.priced"]) > 250
    assert on_kafka[f"{src}.counts"] and on_kafka[f"{src}.late"] and len(on_kafka[f"{src}.dlq"]) >= 10
    for topic in (f"{src}.priced", f"{src}.counts", f"{src}.late"):
        assert comparable(in_memory[topic]) == comparable(on_kafka[topic]), topic
    assert comparable(in_memory[f"{src}.dlq"], dead=True) == comparable(on_kafka[f"{src}.dlq"], dead=True)
