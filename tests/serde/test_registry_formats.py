"""Avro, Protobuf and JSON Schema through a real Schema Registry and a real broker.

The other side of every round trip is plain confluent-kafka (its producer and
consumer with its own registry serializers), so what sluice reads and writes is the
Confluent wire format any client understands.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from sluice import App, SchemaRegistryUnavailable, SerializationError
from tests.apps import running, wait_for
from tests.serde._proto import Order

N = 40

ORDER_AVRO = {
    "type": "record",
    "name": "Order",
    "namespace": "sluicetests",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
}
BIG_ORDER_AVRO = {
    **ORDER_AVRO,
    "name": "BigOrder",
    "fields": [*ORDER_AVRO["fields"], {"name": "big", "type": "boolean"}],
}
ORDER_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["id", "customer", "amount"],
}
BIG_ORDER_JSON_SCHEMA = {
    **ORDER_JSON_SCHEMA,
    "title": "BigOrder",
    "properties": {**ORDER_JSON_SCHEMA["properties"], "big": {"type": "boolean"}},
    "required": [*ORDER_JSON_SCHEMA["required"], "big"],
}


def order(i: int) -> dict[str, Any]:
    return {"id": i, "customer": f"c{i % 7}", "amount": float(i * 3)}


def value_ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def key_ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.KEY)


def make_app(kafka, registry_url: str, **kwargs) -> App:
    return App(
        f"sr-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="200ms",
        schema_registry={"url": registry_url, **kwargs.pop("registry", {})},
        **kwargs,
    )


def schema_id(data: bytes) -> int:
    assert data[:1] == b"\x00", f"not the Confluent wire format (magic byte 0): {data[:8]!r}"
    return int.from_bytes(data[1:5], "big")


@dataclass(frozen=True)
class Case:
    """One format: how plain confluent-kafka writes the input and reads the output, and sluice's pipeline."""

    fmt: str
    writer: Any  # (client) -> confluent serializer of the input
    reader: Any  # (client) -> confluent deserializer of the output
    read_schema: Any  # stream(schema=...)
    write_schema: Any  # to(schema=...)
    make_input: Any  # i -> what the confluent producer serializes
    transform: Any  # sluice's map
    expect: Any  # i -> the output as a comparable value
    as_plain: Any  # the consumer's decoded output -> comparable value


def _big(o: dict) -> dict:
    return {**o, "big": o["amount"] > 50}


CASES = {
    "avro": Case(
        "avro",
        lambda c: AvroSerializer(c, orjson.dumps(ORDER_AVRO).decode()),
        AvroDeserializer,
        None,
        BIG_ORDER_AVRO,
        order,
        _big,
        lambda i: _big(order(i)),
        lambda v: v,
    ),
    "json_schema": Case(
        "json_schema",
        lambda c: JSONSerializer(orjson.dumps(ORDER_JSON_SCHEMA).decode(), c),
        lambda c: JSONDeserializer(None, schema_registry_client=c),
        None,
        BIG_ORDER_JSON_SCHEMA,
        order,
        _big,
        lambda i: _big(order(i)),
        lambda v: v,
    ),
    "protobuf": Case(
        "protobuf",
        lambda c: ProtobufSerializer(Order, c, {"use.deprecated.format": False}),
        lambda c: ProtobufDeserializer(Order, {"use.deprecated.format": False}, schema_registry_client=c),
        Order,
        Order,
        lambda i: Order(**order(i)),
        # a dict written as protobuf is parsed into the message class
        lambda o: {"id": o.id, "customer": o.customer.upper(), "amount": o.amount},
        lambda i: (i, f"C{i % 7}", float(i * 3)),
        lambda m: (m.id, m.customer, m.amount),
    ),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_round_trip_between_confluent_clients_and_sluice(
    kafka, topic_factory, registry_url, registry_client, fmt
):
    case = CASES[fmt]
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    write = case.writer(registry_client)
    kafka.produce(src, [(f"k{i}".encode(), write(case.make_input(i), value_ctx(src))) for i in range(N)])

    app = make_app(kafka, registry_url)
    (
        app.stream(src, value=fmt, schema=case.read_schema)
        .map(case.transform)
        .to(out, value=fmt, schema=case.write_schema)
    )
    with running(app) as outcome:
        records = kafka.drain(out, expected=N)
        assert "error" not in outcome

    read = case.reader(registry_client)
    got = {r.key: case.as_plain(read(r.value, value_ctx(out))) for r in records}
    assert got == {f"k{i}".encode(): case.expect(i) for i in range(N)}
    registered = registry_client.get_latest_version(f"{out}-value")
    assert registered.schema.schema_type == (
        "AVRO" if fmt == "avro" else "JSON" if fmt == "json_schema" else "PROTOBUF"
    )
    assert {schema_id(r.value) for r in records} == {registered.schema_id}, (
        "sluice registered the output schema"
    )
    assert app.stats.dead_letters == 0


def test_avro_keys_and_values_round_trip(kafka, topic_factory, registry_url, registry_client):
    src, out = topic_factory(), topic_factory()
    key_writer = AvroSerializer(registry_client, '"string"')
    value_writer = AvroSerializer(registry_client, orjson.dumps(ORDER_AVRO).decode())
    kafka.produce(
        src,
        [(key_writer(f"user-{i}", key_ctx(src)), value_writer(order(i), value_ctx(src))) for i in range(N)],
    )
    app = make_app(kafka, registry_url)
    (
        app.stream(src, value="avro", key="avro")
        .filter(lambda o: o["id"] % 2 == 0)
        .key_by(lambda o: o["customer"])
        .to(out, value="avro", schema=ORDER_AVRO, key="avro", key_schema={"type": "string"})
    )
    with running(app):
        records = kafka.drain(out, expected=N // 2)
    key_reader, value_reader = AvroDeserializer(registry_client), AvroDeserializer(registry_client)
    got = sorted(
        (key_reader(r.key, key_ctx(out)), value_reader(r.value, value_ctx(out))["id"]) for r in records
    )
    assert got == sorted((f"c{i % 7}", i) for i in range(0, N, 2))
    assert {f"{out}-key", f"{out}-value"} <= set(registry_client.get_subjects())


def test_avro_schema_evolution_read_by_an_old_and_a_new_app(
    kafka, topic_factory, registry_url, registry_client
):
    """v2 adds ``currency`` with a default: the old app never sees it, the new one gets the default on v1 records."""
    v1 = ORDER_AVRO
    v2 = {
        **ORDER_AVRO,
        "fields": [*ORDER_AVRO["fields"], {"name": "currency", "type": "string", "default": "EUR"}],
    }
    src, out_old, out_new, out_latest = (topic_factory() for _ in range(4))
    write_v1 = AvroSerializer(registry_client, orjson.dumps(v1).decode())
    write_v2 = AvroSerializer(registry_client, orjson.dumps(v2).decode())
    half = N // 2
    kafka.produce(src, [(None, write_v1(order(i), value_ctx(src))) for i in range(half)])
    kafka.produce(
        src, [(None, write_v2({**order(i), "currency": "USD"}, value_ctx(src))) for i in range(half, N)]
    )
    versions = registry_client.get_versions(f"{src}-value")
    assert len(versions) == 2, "the producers registered two versions of the subject"
    # the latest version of the output subject is what to(..., value="avro") without schema= writes
    from confluent_kafka.schema_registry import Schema

    registry_client.register_schema(f"{out_latest}-value", Schema(orjson.dumps(v2).decode(), "AVRO"))

    old = make_app(kafka, registry_url)
    old.stream(src, value="avro", schema=v1).to(out_old, value="json")
    new = make_app(kafka, registry_url)
    stream = new.stream(src, value="avro", schema=v2)
    stream.to(out_new, value="json")
    stream.to(out_latest, value="avro")
    with running(old), running(new):
        old_out = [orjson.loads(r.value) for r in kafka.drain(out_old, expected=N)]
        new_out = [orjson.loads(r.value) for r in kafka.drain(out_new, expected=N)]
        latest_out = kafka.drain(out_latest, expected=N)

    assert sorted(old_out, key=lambda o: o["id"]) == [order(i) for i in range(N)], "old app: v1 fields only"
    expected_new = [{**order(i), "currency": "EUR" if i < half else "USD"} for i in range(N)]
    assert sorted(new_out, key=lambda o: o["id"]) == expected_new, "new app: v1 records get the default"
    latest_id = registry_client.get_latest_version(f"{out_latest}-value").schema_id
    assert {schema_id(r.value) for r in latest_out} == {latest_id}
    read = AvroDeserializer(registry_client)
    assert (
        sorted((read(r.value, value_ctx(out_latest)) for r in latest_out), key=lambda o: o["id"])
        == expected_new
    )


def test_records_that_do_not_decode_go_to_the_dead_letter_topic(
    kafka, topic_factory, registry_url, registry_client
):
    src, out = topic_factory(), topic_factory()
    write = AvroSerializer(registry_client, orjson.dumps(ORDER_AVRO).decode())
    good = write(order(0), value_ctx(src))
    bad = {
        5: (orjson.dumps(order(5)), "magic byte"),  # plain JSON: no wire-format header
        11: (b"\x00" + (2**31 - 7).to_bytes(4, "big") + good[5:], "does not know"),  # no such schema id
        17: (good[:5] + b"\xff\xff\xff\xff", "could not be decoded"),  # the id is right, the body is not Avro
    }
    records = [
        (f"k{i}".encode(), bad[i][0] if i in bad else write(order(i), value_ctx(src))) for i in range(N)
    ]
    kafka.produce(src, records)

    app = make_app(kafka, registry_url)
    # bytes that do not decode never will: retried without the backoff's waits (18 s here)
    app.on_error(retries=2, backoff="3s..3s")
    app.stream(src, value="avro").to(out, value="json")
    dlq = f"{app.name}.dlq"
    with running(app) as outcome:
        started = time.monotonic()
        wait_for(
            lambda: kafka.committed(app.name, src)[0] == N, 30, what="all offsets committed", outcome=outcome
        )
        took = time.monotonic() - started
        outputs = kafka.drain(out, expected=N - len(bad))
        dead = kafka.drain(dlq, expected=len(bad))
    kafka.created.append(dlq)
    assert took < 10, f"undecodable records were retried with waits: {took:.1f}s"

    assert sorted(orjson.loads(r.value)["id"] for r in outputs) == sorted(set(range(N)) - set(bad))
    assert len(dead) == len(bad)
    for rec in dead:
        i = int(rec.key.decode()[1:])
        h = {k: v.decode() for k, v in rec.headers if k.startswith("sluice.error.")}
        assert rec.value == bad[i][0], "the original bytes, untouched"
        assert h["sluice.error.stage"] == "deserialize"
        assert h["sluice.error.step"] == "deserialize(avro)"
        assert h["sluice.error.exception"] == "DeserializationError"
        assert bad[i][1] in h["sluice.error.message"], h["sluice.error.message"]
        assert h["sluice.error.topic"] == src and int(h["sluice.error.offset"]) == i
        assert h["sluice.error.attempts"] == "3"
    assert app.stats.dead_letters == len(bad)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Outage:
    """A TCP forwarder to the registry that refuses connections until ``heal()``: an outage on loopback."""

    def __init__(self, target: str) -> None:
        host, port = target.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = _closed_port()
        self.url = target.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)
        self._server: socket.socket | None = None

    def heal(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _avro_input(kafka, topic: str, registry_client, n: int) -> None:
    write = AvroSerializer(registry_client, orjson.dumps(ORDER_AVRO).decode())
    kafka.produce(topic, [(None, write(order(i), value_ctx(topic))) for i in range(n)])


def test_registry_outage_is_waited_out_nothing_dead_lettered_nothing_lost(
    kafka, topic_factory, registry_url, registry_client
):
    """The registry unreachable is environmental: the records wait (nothing committed, nothing
    dead-lettered) and go on once it answers again."""
    src, out = topic_factory(), topic_factory()
    _avro_input(kafka, src, registry_client, 10)
    outage = _Outage(registry_url)
    app = make_app(kafka, outage.url, registry={"max.retries": 0, "timeout": 2})
    app.on_error(retries=1, backoff="10ms..200ms", retry_for="2m")
    app.stream(src, value="avro").to(out, value="json")
    dlq = f"{app.name}.dlq"
    kafka.created.append(dlq)
    try:
        with running(app) as outcome:
            time.sleep(6)  # the registry is down: the app waits
            assert "error" not in outcome, outcome.get("error")
            assert kafka.committed(app.name, src)[0] < 0, "nothing committed while the registry is down"
            assert kafka.end_offsets(out)[0] == 0
            outage.heal()
            got = kafka.drain(out, expected=10, timeout=60)
            wait_for(lambda: kafka.committed(app.name, src)[0] == 10, 30, outcome=outcome)
    finally:
        outage.close()
    assert sorted(orjson.loads(r.value)["id"] for r in got) == list(range(10))
    topics = kafka.admin.list_topics(timeout=10).topics
    assert dlq not in topics or kafka.end_offsets(dlq)[0] == 0, "nothing dead-lettered"


def test_registry_down_longer_than_retry_for_stops_the_app_committing_nothing(
    kafka, topic_factory, registry_client
):
    src, out = topic_factory(), topic_factory()
    _avro_input(kafka, src, registry_client, 10)
    down = f"http://127.0.0.1:{_closed_port()}"
    app = make_app(kafka, down, registry={"max.retries": 0, "timeout": 2})
    app.on_error(retries=1, backoff="10ms..20ms", retry_for="3s")
    app.stream(src, value="avro").to(out, value="json")
    dlq = f"{app.name}.dlq"
    kafka.created.append(dlq)
    with running(app) as outcome:
        wait_for(lambda: "error" in outcome, 60, what="the app to stop once retry_for is spent")
        committed = kafka.committed(app.name, src)
    error = outcome["error"]
    assert isinstance(error, SchemaRegistryUnavailable), repr(error)
    assert "retry_for=3s" in str(error) and down in str(error), str(error)
    assert committed[0] < 0, f"nothing may be committed while the registry is down: {committed}"
    topics = kafka.admin.list_topics(timeout=10).topics
    assert dlq not in topics or kafka.end_offsets(dlq)[0] == 0, "nothing dead-lettered"
    assert kafka.end_offsets(out)[0] == 0


def test_avro_fast_path_writes_and_reads_exactly_what_confluent_kafka_does(registry_url, registry_client):
    """After the first record of a schema id, sluice skips the client's per-record work: same bytes, same values."""
    from sluice.serde import RegistryFormat
    from sluice.serde.registry import registry_settings

    topic = f"fast-{uuid.uuid4().hex[:8]}"
    settings = registry_settings({"url": registry_url})
    v2 = {
        **ORDER_AVRO,
        "fields": [*ORDER_AVRO["fields"], {"name": "note", "type": ["null", "string"], "default": None}],
    }
    encode = RegistryFormat("avro", topic, "value", settings, ORDER_AVRO).serializer()
    reference = AvroSerializer(registry_client, orjson.dumps(ORDER_AVRO).decode())
    ours = [encode(order(i)) for i in range(50)]
    assert ours == [reference(order(i), value_ctx(topic)) for i in range(50)]

    write_v2 = AvroSerializer(registry_client, orjson.dumps(v2).decode())
    mixed = ours + [write_v2({**order(i), "note": f"n{i}"}, value_ctx(topic)) for i in range(50, 100)]
    for reader_schema in (None, v2):
        decode = RegistryFormat("avro", topic, "value", settings, reader_schema).deserializer()
        reference_reader = AvroDeserializer(
            registry_client, None if reader_schema is None else orjson.dumps(reader_schema).decode()
        )
        assert [decode(d) for d in mixed] == [reference_reader(d, value_ctx(topic)) for d in mixed]
    with pytest.raises(SerializationError, match=r"could not be written as value='avro'"):
        encode({"id": "not a long", "customer": "c", "amount": 1.0})
