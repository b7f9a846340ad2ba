"""Offsets are committed only after the outputs of the record (and every earlier one) are acknowledged."""

from __future__ import annotations

import uuid

from sluice import App, DeliveryError
from tests.apps import running, wait_for


def test_offsets_not_committed_past_an_output_kafka_refused(kafka, topic_factory):
    src = topic_factory()
    out = topic_factory(config={"max.message.bytes": "20000"})
    kafka.produce(src, [(None, b'{"n": %d}' % i) for i in range(200)])
    app = App(
        f"commit-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="100ms",
        max_poll_records=50,
    )
    app.on_error(fail=True)  # stop instead of dead-lettering, to watch the commit point
    app.stream(src, value="bytes").to(out)

    with running(app) as outcome:
        wait_for(lambda: kafka.committed(app.name, src)[0] == 200, 30, what="first 200 offsets committed")
        # a record too large for the output topic, then more records after it
        kafka.produce(src, [(None, b"x" * 100_000)] + [(None, b'{"after": %d}' % i) for i in range(200)])
        wait_for(
            lambda: "error" in outcome or "result" in outcome,
            60,
            what="the app to stop on the refused record",
        )

    assert isinstance(outcome.get("error"), DeliveryError), outcome
    assert "Message size too large" in str(outcome["error"])
    assert kafka.end_offsets(src)[0] == 401
    assert kafka.committed(app.name, src)[0] == 200, "nothing at or after the refused record may be committed"


def test_backpressure_pauses_and_resumes_without_loss(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(f"k{i}", b'{"i": %d}' % i) for i in range(3000)])
    app = App(
        f"bp-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        max_in_flight=100,
        max_poll_records=100,
        producer_config={"linger.ms": 50},
    )
    app.stream(src).to(out)
    with running(app):
        got = kafka.drain(out, expected=3000, timeout=60)
    assert len(got) == 3000
    assert len({r.value for r in got}) == 3000
    assert app.stats.paused > 0, "with 100 records in flight at most, the partitions must have been paused"
