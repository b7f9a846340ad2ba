"""Schema Registry formats are checked when the app is defined; environmental errors are never dead-lettered."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sluice import App, ConfigError, SchemaRegistryUnavailable
from sluice.errors import EnvironmentalError
from sluice.errors.policy import DEFAULT_POLICY
from sluice.runtime.collector import RecordCollector
from sluice.runtime.failures import FailureRouter
from sluice.runtime.tracker import Batch
from sluice.serde import RegistryFormat, deserializer, serializer
from sluice.serde.registry import ENV_URL
from tests.serde._proto import Order

URL = "http://127.0.0.1:1"


def test_a_registry_format_without_a_registry_says_how_to_configure_one(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    app = App("doc")
    with pytest.raises(ConfigError, match=r"needs a Schema Registry: .*SLUICE_SCHEMA_REGISTRY_URL"):
        app.stream("orders", value="avro")
    with pytest.raises(ConfigError, match=r"value='json_schema' for topic 'out' needs a Schema Registry"):
        app.stream("orders").to("out", value="json_schema")


def test_the_registry_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_URL, URL)
    app = App("doc")
    source = app.stream("orders", value="avro", key="json_schema").source
    assert isinstance(source.value, RegistryFormat)
    assert (source.value.kind, source.value.subject, source.value.settings["url"]) == (
        "avro",
        "orders-value",
        URL,
    )
    assert (source.key.kind, source.key.subject) == ("json_schema", "orders-key")


def test_code_beats_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_URL, "http://elsewhere:8081")
    assert App("doc", schema_registry={"url": URL}).schema_registry["url"] == URL


def test_protobuf_needs_its_message_class():
    app = App("doc", schema_registry={"url": URL})
    with pytest.raises(ConfigError, match=r"needs the protobuf message class as schema="):
        app.stream("orders", value="protobuf")
    stream = app.stream("orders2", value="protobuf", schema=Order)
    with pytest.raises(ConfigError, match=r"needs the protobuf message class"):
        stream.to("out", value="protobuf", schema={"type": "record"})
    stream.to("out", value="protobuf", schema=Order)


def test_schema_is_only_for_registry_formats_and_must_fit():
    app = App("doc", schema_registry={"url": URL})
    with pytest.raises(ConfigError, match=r"schema= is for the Schema Registry formats"):
        app.stream("a", value="json", schema={"type": "string"})
    with pytest.raises(ConfigError, match=r"must be an Avro schema as a JSON string or a dict, got int"):
        app.stream("b", value="avro", schema=42)


def test_writing_the_latest_schema_needs_the_topic_strategy():
    app = App("doc", schema_registry={"url": URL, "subject.name.strategy": "record"})
    with pytest.raises(ConfigError, match=r"needs schema=: without it the latest schema"):
        app.stream("a").to("out", value="avro")
    app.stream("b").to("out2", value="avro", schema={"type": "record", "name": "R", "fields": []})


def test_bad_registry_settings_fail_when_the_app_is_defined():
    with pytest.raises(ConfigError, match=r"has no 'url'") as missing:
        App("doc", schema_registry={"basic.auth.user.info": "me:secret"})
    assert "secret" not in str(missing.value), "credentials never appear in errors"
    with pytest.raises(ConfigError, match=r"is not a strategy"):
        App("doc", schema_registry={"url": URL, "subject.name.strategy": "topic-name"})
    app = App("doc", schema_registry={"url": URL, "no.such.option": 1})
    with pytest.raises(ConfigError, match=r"refused by the registry client"):
        app.stream("a", value="avro")


def test_credentials_stay_out_of_reprs_and_messages():
    with_auth = {"url": URL, "basic.auth.user.info": "me:pw2"}
    assert "pw" not in repr(App("doc", schema_registry=with_auth).stream("o", value="avro").source.value)
    settings = {"url": "http://me:pw1@127.0.0.1:1", "max.retries": 0}
    source = App("doc", schema_registry=settings).stream("orders", value="avro").source
    assert "pw" not in repr(source.value)
    with pytest.raises(SchemaRegistryUnavailable) as down:
        deserializer(source.value)(b"\x00\x00\x00\x00\x01\x02")
    assert "pw" not in str(down.value) and "http://***@127.0.0.1:1" in str(down.value)


def test_registry_formats_keep_tombstones_and_name_their_step():
    fmt = RegistryFormat("avro", "t", "value", {"url": URL})
    assert deserializer(fmt)(None) is None
    assert serializer(fmt)(None) is None
    assert fmt.__name__ == "avro"


def test_unreachable_registry_raises_environmental_error_naming_the_registry():
    fmt = RegistryFormat("avro", "t", "value", {"url": URL, "max.retries": 0})
    with pytest.raises(
        SchemaRegistryUnavailable, match=r"Schema Registry at http://127.0.0.1:1 could not be reached"
    ):
        deserializer(fmt)(b"\x00\x00\x00\x00\x01\x02")
    assert issubclass(SchemaRegistryUnavailable, EnvironmentalError)


class _Msg:
    def topic(self):
        return "t"

    def partition(self):
        return 0

    def offset(self):
        return 5

    def timestamp(self):
        return (1, 1)

    def headers(self):
        return None

    def key(self):
        return None

    def value(self):
        return b"x"


def test_failure_router_never_dead_letters_an_environmental_error():
    produced = []
    producer = SimpleNamespace(produce=lambda *a, **k: produced.append(a), poll=lambda _t: 0)
    router = FailureRouter("app", DEFAULT_POLICY, RecordCollector(producer), None, lambda _t: (1, 1))
    failure = (0, (None, None, _Msg()), SchemaRegistryUnavailable("registry down"))
    with pytest.raises(SchemaRegistryUnavailable):
        router.handle("deserialize", "deserialize(avro)", None, [failure], None, Batch(1))
    assert produced == [], "nothing dead-lettered"
    assert not router.dead_letters
