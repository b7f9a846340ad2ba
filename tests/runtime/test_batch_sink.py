"""Batch sinks: one write_batch per consumed batch, failing rows isolated, offsets after the write."""

from __future__ import annotations

import uuid

import orjson

from sluice import App
from tests.apps import running, wait_for


class RecordingSink:
    def __init__(self, reject: set[int]):
        self.reject = reject
        self.calls: list[list[int]] = []
        self.rows = []
        self.closed = False

    def write_batch(self, rows):
        ids = [row.value["id"] for row in rows]
        if self.reject & set(ids):
            raise ValueError(f"constraint violated by {sorted(self.reject & set(ids))}")
        self.calls.append(ids)
        self.rows.extend(rows)

    def close(self):
        self.closed = True


def test_batch_sink_gets_whole_batches_and_failing_rows_go_to_dead_letter(kafka, topic_factory):
    src = topic_factory(partitions=2)
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(200)])
    sink = RecordingSink(reject={5, 150})
    app = App(
        f"bsink-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms", max_poll_records=20
    )
    app.on_error(retries=1, backoff="1ms")
    app.stream(src).sink(sink)
    with running(app) as outcome:
        wait_for(
            lambda: sum(max(o, 0) for o in kafka.committed(app.name, src, 2).values()) == 200,
            30,
            outcome=outcome,
            what="offsets committed",
        )
        dead = kafka.drain(f"{app.name}.dlq", expected=2)
    kafka.created.append(f"{app.name}.dlq")

    assert sorted(row.value["id"] for row in sink.rows) == sorted(set(range(200)) - {5, 150})
    assert any(len(call) > 1 for call in sink.calls), "healthy batches are written in one call"
    assert {row.topic for row in sink.rows} == {src}
    assert all(row.offset >= 0 and row.partition in (0, 1) for row in sink.rows)
    assert sorted(orjson.loads(r.value)["id"] for r in dead) == [5, 150]
    assert sink.closed, "the sink is closed when the app stops"
