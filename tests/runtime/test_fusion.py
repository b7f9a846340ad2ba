"""The fused loop (source -> filter/map/key_by -> to as one generated loop) keeps the general path's semantics."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson

from sluice import App
from sluice.dataflow.steps import Filter, KeyBy, Map
from sluice.runtime.fusion import DESERIALIZE, LoopSpec, generate
from sluice.serde import deserializer, key_serializer, serializer
from tests.apps import running, wait_for


class FakeMessage:
    def __init__(self, value: bytes | None, key: bytes = b"k", ts: int = 5):
        self._value, self._key, self._ts = value, key, ts

    def value(self):
        return self._value

    def key(self):
        return self._key

    def timestamp(self):
        return (1, self._ts)

    def headers(self):
        return [("h", b"1")]


def test_generated_loop_stops_at_the_failing_record_with_its_stage_and_input():
    produced = []

    def produce(topic, value, key, timestamp, headers, on_delivery):
        produced.append((topic, value, key, timestamp, headers))

    spec = LoopSpec(
        [
            Filter("filter#1", lambda e: e["t"] == "click"),
            Map("map#2", lambda e: {"id": e["id"], "inv": 1 // e["x"]}),
            KeyBy("key_by#3", lambda e: e["id"]),
        ],
        deserializer("json"),
        None,
        "out",
        serializer("json"),
        key_serializer,
    )
    run = generate(spec)
    msgs = [
        FakeMessage(orjson.dumps({"t": "click", "id": 1, "x": 1})),
        FakeMessage(b"{not json"),
        FakeMessage(orjson.dumps({"t": "view", "id": 2, "x": 0})),
        FakeMessage(orjson.dumps({"t": "click", "id": 3, "x": 0}), key=b"k3"),
        FakeMessage(None),
    ]
    no_op = lambda *_: None  # noqa: E731

    assert run(msgs, 0, produce, no_op)[:3] == (1, 1, DESERIALIZE), "the message is recovered from msgs[1]"
    assert produced == [("out", b'{"id":1,"inv":1}', b"1", 5, [("h", b"1")])]

    n, failed, stage, value, key, exc = run(msgs, 2, produce, no_op)
    assert (n, failed, stage, value, key) == (0, 3, 2, {"t": "click", "id": 3, "x": 0}, b"k3"), (
        "the view is filtered out; the map of id 3 fails, with the value and key entering it"
    )
    assert isinstance(exc, ZeroDivisionError)

    n, failed, stage, _, _, exc = run(msgs, 4, produce, no_op)
    assert (failed, stage, type(exc)) == (4, 1, TypeError), "a tombstone reaches the filter as None"
    assert len(produced) == 1


def test_failures_at_every_stage_of_a_fused_chain_meet_the_policy_once(kafka, topic_factory):
    n = 80
    bad = {
        "deserialize": 5,
        "filter": 11,
        "map": 17,
        "key_by": 22,
        "produce": 29,
    }  # the filter drops i % 4 == 3
    src, out = topic_factory(), topic_factory()
    records = []
    for i in range(n):
        value = b'{"id": 5, "bro' if i == bad["deserialize"] else orjson.dumps({"id": i, "keep": i % 4 != 3})
        records.append((f"key-{i}".encode(), value, {"timestamp": 1_700_000_000_000 + i}))
    kafka.produce(src, records)
    calls: dict[str, Counter] = {"filter": Counter(), "map": Counter(), "key_by": Counter()}

    def keep(e):
        calls["filter"][e["id"]] += 1
        if e["id"] == bad["filter"]:
            raise RuntimeError("filter boom")
        return e["keep"]

    def shape(e):
        calls["map"][e["id"]] += 1
        if e["id"] == bad["map"]:
            raise RuntimeError("map boom")
        return {"id": e["id"], "tags": {"a"} if e["id"] == bad["produce"] else ["a"]}  # a set is not JSON

    def user(e):
        calls["key_by"][e["id"]] += 1
        if e["id"] == bad["key_by"]:
            raise RuntimeError("key_by boom")
        return f"u{e['id']}"

    app = App(f"fused-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms")
    app.on_error(retries=1, backoff="10ms")
    app.stream(src).filter(keep).map(shape).key_by(user).to(out)
    kept = [i for i in range(n) if i % 4 != 3 and i not in bad.values()]
    with running(app) as outcome:
        wait_for(
            lambda: max(kafka.committed(app.name, src, 1).values()) == n,
            60,
            what="all offsets committed",
            outcome=outcome,
        )
        outputs = kafka.drain(out, expected=len(kept))
        dead = kafka.drain(f"{app.name}.dlq", expected=len(bad))
        plan = next(iter(app._runner.executor._plans.values()))  # which path ran
    kafka.created.append(f"{app.name}.dlq")

    assert plan.fused is not None, "this pipeline runs as one fused loop"
    assert [(r.key, orjson.loads(r.value)["id"]) for r in outputs] == [(f"u{i}".encode(), i) for i in kept]
    assert [r.timestamp for r in outputs] == [1_700_000_000_000 + i for i in kept]
    stages = {
        int(h[b"sluice.error.offset"]): (h[b"sluice.error.stage"], h[b"sluice.error.step"].split(b"#")[0])
        for h in ({k.encode(): v for k, v in r.headers} for r in dead)
    }
    assert stages == {
        bad["deserialize"]: (b"deserialize", b"deserialize(json)"),
        bad["filter"]: (b"process", b"filter"),
        bad["map"]: (b"process", b"map"),
        bad["key_by"]: (b"process", b"key_by"),
        bad["produce"]: (b"produce", b"to"),
    }
    # the failing function: the first call and the policy's one retry; every other: once per record
    assert {i for i, c in calls["filter"].items() if c != 1} == {bad["filter"]}
    assert calls["filter"][bad["filter"]] == 2
    assert {i for i, c in calls["map"].items() if c != 1} == {bad["map"]}
    assert {i for i, c in calls["key_by"].items() if c != 1} == {bad["key_by"]}
    assert calls["map"][bad["produce"]] == 1, "a record refused at produce is not processed again"
    decodable = n - 1
    assert sum(calls["filter"].values()) == decodable + 1, "each decodable record once, plus one retry"
