"""kill -9 in the middle of a retry storm loses nothing: every input is an output or a dead letter."""

from __future__ import annotations

import uuid

import orjson

from tests.apps import AppProcess, wait_for, write_app

N = 3000

APP = """
from sluice import App

app = App({group!r}, brokers={bootstrap!r}, commit_interval="100ms", max_poll_records=100)
app.on_error(retries=2, backoff="5ms..20ms", dead_letter={dlq!r})

def enrich(e):
    if e["id"] % 3 == 0:
        raise RuntimeError("downstream service rejected %d" % e["id"])
    return e

app.stream({src!r}).map(enrich).to({out!r})
"""


def test_kill9_during_retry_storm_loses_nothing(kafka, topic_factory, tmp_path, capsys):
    src, out, dlq = topic_factory(partitions=2), topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(N)])
    group = f"storm-{uuid.uuid4().hex[:8]}"
    write_app(
        tmp_path, "storm_app", APP.format(group=group, bootstrap=kafka.bootstrap, src=src, out=out, dlq=dlq)
    )

    def done() -> int:
        return sum(kafka.end_offsets(out, 2).values()) + sum(kafka.end_offsets(dlq, 2).values())

    first = AppProcess(tmp_path, "storm_app")
    wait_for(lambda: sum(kafka.end_offsets(dlq, 2).values()) >= 100, 90, what="a hundred dead letters")
    first.kill9()
    assert done() < N, "the kill must land mid-storm"

    second = AppProcess(tmp_path, "storm_app")
    wait_for(
        lambda: sum(max(o, 0) for o in kafka.committed(group, src, 2).values()) == N,
        120,
        what="all offsets committed after restart",
    )
    assert second.terminate() == 0, second.log()

    outputs = {orjson.loads(r.value)["id"] for r in kafka.drain(out, idle=2)}
    dead = kafka.drain(dlq, idle=2)
    dead_ids = {orjson.loads(r.value)["id"] for r in dead}
    assert outputs == {i for i in range(N) if i % 3}
    assert dead_ids == {i for i in range(N) if i % 3 == 0}
    with capsys.disabled():
        print(f"\n  retry storm + kill -9: {len(dead)} dead letters for {len(dead_ids)} failing inputs")
