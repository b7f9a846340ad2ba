"""The poll loop runs what arrived instead of waiting for a full batch (``sluice.runtime.polling``)."""

from __future__ import annotations

import statistics
import time
import uuid

import orjson
from confluent_kafka import TopicPartition

from sluice import App
from tests.apps import running, wait_for


def test_a_trickle_is_processed_as_it_arrives_not_after_the_poll_timeout(kafka, topic_factory):
    """Ping-pong: each record is produced once the previous output arrived.

    A consume that waited for a full batch (1,000 records) returned only at its 100 ms
    timeout, so every round trip took about 100 ms; now it is broker latency.
    """
    src, out = topic_factory(), topic_factory()
    app = App(f"trickle-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap)
    app.stream(src).map(lambda e: {"n": e["n"]}).to(out)
    producer = kafka.producer(**{"linger.ms": 0})
    reader = kafka.consumer(**{"fetch.wait.max.ms": 5})
    reader.assign([TopicPartition(out, 0, 0)])
    trips: list[float] = []
    with running(app) as outcome:
        for n in range(25):
            sent = time.monotonic()
            producer.produce(src, orjson.dumps({"n": n}))
            producer.flush(10)
            got = None
            while got is None and time.monotonic() - sent < 10:
                assert "error" not in outcome, outcome
                msg = reader.poll(0.5)
                if msg is not None and msg.error() is None:
                    got = orjson.loads(msg.value())
            assert got == {"n": n}, f"output {n} not seen within 10 s (got {got})"
            trips.append(time.monotonic() - sent)
    reader.close()
    # the first trips include the group's first fetches; the median is of the steady state
    assert statistics.median(trips[5:]) < 0.06, f"round trips {[round(t * 1000) for t in trips]} ms"


def test_small_batches_keep_key_order_and_commit_everything(kafka, topic_factory):
    """Records trickled in bursts of varying size: per key in order, none lost or repeated, all committed."""
    src, out = topic_factory(partitions=3), topic_factory(partitions=3)
    app = App(f"small-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.stream(src).map(lambda e: e).to(out)
    keys = [f"k{i}" for i in range(7)]
    total = 0
    with running(app) as outcome:
        for burst in (1, 3, 1, 50, 2, 400, 1, 5):
            kafka.produce(
                src, [(keys[(total + i) % 7], orjson.dumps({"seq": total + i})) for i in range(burst)]
            )
            total += burst
            time.sleep(0.03)
        wait_for(
            lambda: sum(kafka.committed(app.name, src, 3).values()) == total,
            30,
            what=f"all {total} offsets committed",
            outcome=outcome,
        )
    got = kafka.drain(out, expected=total, timeout=30)
    assert sorted(orjson.loads(r.value)["seq"] for r in got) == list(range(total))
    by_key: dict[bytes, list[int]] = {}
    for r in got:
        by_key.setdefault(r.key, []).append(orjson.loads(r.value)["seq"])
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key!r} out of order: {seqs}"
    assert app.stats.batches > 8, "each burst arrives as its own batch (or several)"
