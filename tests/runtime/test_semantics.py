"""Operator semantics end to end on the real broker: filter, map, flat_map, key_by, to, sink."""

from __future__ import annotations

import uuid

import orjson

from sluice import App
from tests.apps import running, wait_for


def make_app(kafka, **kwargs) -> App:
    return App(f"sem-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms", **kwargs)


def test_filter_map_to_keeps_key_headers_and_timestamp(kafka, topic_factory):
    src, out = topic_factory(partitions=2), f"out-{uuid.uuid4().hex[:8]}"
    events = [
        (
            f"u{i % 5}".encode(),
            orjson.dumps({"id": i, "type": "click" if i % 3 else "view", "page": f"/p{i}"}),
            {"headers": [("trace", f"t{i}".encode())], "timestamp": 1_600_000_000_000 + i},
        )
        for i in range(90)
    ]
    kafka.produce(src, events)
    app = make_app(kafka)
    app.stream(src, value="json").filter(lambda e: e["type"] == "click").map(
        lambda e: {"id": e["id"], "page": e["page"]}
    ).to(out)

    with running(app):
        got = kafka.drain(out, expected=60, timeout=60)

    kafka.created.append(out)
    assert len(got) == 60
    sent = {orjson.loads(v)["id"]: (k, extra) for k, v, extra in events}
    for rec in got:
        value = orjson.loads(rec.value)
        key, extra = sent[value["id"]]
        assert value == {"id": value["id"], "page": f"/p{value['id']}"}
        assert value["id"] % 3 != 0
        assert rec.key == key
        assert rec.headers == tuple(extra["headers"])
        assert rec.timestamp == extra["timestamp"]


def test_output_topic_created_like_the_source(kafka, topic_factory):
    src, out = topic_factory(partitions=3), f"out-{uuid.uuid4().hex[:8]}"
    kafka.produce(src, [(None, b'{"a": 1}')])
    app = make_app(kafka)
    app.stream(src).to(out)
    with running(app):
        assert len(kafka.drain(out, expected=1)) == 1
    kafka.created.append(out)
    md = kafka.admin.list_topics(out, timeout=10).topics[out]
    assert len(md.partitions) == 3


def test_flat_map_and_key_by_repartition_outputs_by_new_key(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=4)
    kafka.produce(src, [(None, orjson.dumps({"users": [f"u{i}", f"u{i + 1}"], "n": i})) for i in range(50)])
    app = make_app(kafka)
    app.stream(src).flat_map(lambda e: [{"user": u, "n": e["n"]} for u in e["users"]]).key_by(
        lambda e: e["user"]
    ).to(out)

    with running(app):
        got = kafka.drain(out, expected=100)

    assert len(got) == 100
    partitions_of_key: dict[bytes, set[int]] = {}
    for rec in got:
        assert rec.key == orjson.loads(rec.value)["user"].encode()
        partitions_of_key.setdefault(rec.key, set()).add(rec.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key must land on one partition"
    assert len({p for ps in partitions_of_key.values() for p in ps}) > 1


def test_branches_sink_and_value_formats(kafka, topic_factory):
    src, upper, lengths = topic_factory(), topic_factory(), topic_factory()
    kafka.produce(src, [(b"k", "héllo".encode()), (b"k", b"world"), (b"k", None)])
    seen = []
    app = make_app(kafka)
    words = app.stream(src, value="str")
    words.sink(seen.append)
    words.filter(lambda w: w is not None).map(str.upper).to(upper)
    words.map(lambda w: {"len": None if w is None else len(w)}).to(lengths, value="json")

    with running(app):
        up = kafka.drain(upper, expected=2)
        ln = kafka.drain(lengths, expected=3)

    assert [r.value for r in up] == ["HÉLLO".encode(), b"WORLD"]
    assert [orjson.loads(r.value) for r in ln] == [{"len": 5}, {"len": 5}, {"len": None}]
    assert seen == ["héllo", "world", None], "a tombstone reaches user functions as None"


def test_tombstone_passes_through_as_null(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(b"gone", None), (b"here", b'{"x": 1}')])
    app = make_app(kafka)
    app.stream(src, value="json").map(lambda v: v).to(out)
    with running(app):
        got = kafka.drain(out, expected=2)
    assert [(r.key, r.value) for r in got] == [(b"gone", None), (b"here", b'{"x":1}')]


def test_custom_deserializer_and_seed_style_value_deserializer(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(None, b"1,2,3"), (None, b"4,5")])
    app = make_app(kafka, value_deserializer=lambda b: [int(x) for x in b.split(b",")])
    app.stream(src).map(sum).to(out)
    with running(app):
        got = kafka.drain(out, expected=2)
    assert [r.value for r in got] == [b"6", b"9"], "outputs of a custom deserializer are written as JSON"


def test_group_id_defaults_to_app_name_and_offsets_are_committed(kafka, topic_factory):
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(f"k{i}", b"{}") for i in range(40)])
    app = make_app(kafka)
    app.stream(src).to(out)
    with running(app):
        kafka.drain(out, expected=40)
        wait_for(
            lambda: sum(max(o, 0) for o in kafka.committed(app.name, src, 2).values()) == 40,
            30,
            what="commit of all 40 offsets",
        )
    assert app.group_id == app.name
    assert sum(kafka.committed(app.name, src, 2).values()) == 40
