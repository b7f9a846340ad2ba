"""Every bad configuration gives a clear error that names the value and the fix."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from sluice import App, ConfigError, KafkaUnavailableError, TopicNotFoundError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enable_auto_commit": True}, "enable_auto_commit=True is refused: auto-commit commits the offsets"),
        ({"consumer_config": {"enable.auto.commit": True}}, "enable_auto_commit=True is refused"),
        ({"group_idd": "g"}, "unknown App option 'group_idd' (did you mean 'group_id'?)"),
        ({"fetch_min_byte": 1}, "did you mean 'fetch_min_bytes'?"),
        (
            {"auto_offset_reset": "beginning"},
            "auto_offset_reset='beginning' must be one of 'earliest', 'latest'",
        ),
        ({"max_poll_records": 0}, "max_poll_records=0 must be a positive integer"),
        ({"session_timeout_ms": "10s"}, "session_timeout_ms='10s' must be a positive integer"),
        ({"commit_interval": "soon"}, "commit_interval='soon' is not a duration"),
        ({"max_in_flight": -1}, "max_in_flight=-1 must be a positive integer"),
        ({"value_deserializer": "json"}, "value_deserializer must be a callable"),
        ({"consumer_config": {"fetch_min_bytes": 1}}, "is not a librdkafka property name"),
        ({"brokers": "a:1", "bootstrap_servers": "b:2"}, "give either brokers= or bootstrap_servers="),
    ],
)
def test_bad_app_options_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        App("cfg", **kwargs)
    assert message in str(info.value)


def test_seed_style_keywords_map_to_librdkafka():
    app = App(
        "seed",
        bootstrap_servers=["h1:9092", "h2:9092"],
        group_id="my-group",
        fetch_min_bytes=1024,
        fetch_max_wait_ms=50,
        session_timeout_ms=10000,
        enable_auto_commit=False,
        consumer_config={"statistics.interval.ms": 0},
    )
    config = app.settings.consumer_config()
    assert config["bootstrap.servers"] == "h1:9092,h2:9092"
    assert config["group.id"] == "my-group"
    assert config["fetch.min.bytes"] == 1024
    assert config["fetch.wait.max.ms"] == 50
    assert config["session.timeout.ms"] == 10000
    assert config["enable.auto.commit"] is False
    assert config["statistics.interval.ms"] == 0
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert app.settings.producer_config()["enable.idempotence"] is True


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda app: app.stream("events", value="xml"), "value='xml' is not a format"),
        (lambda app: app.stream("bad topic!"), "source topic 'bad topic!' is not a valid Kafka topic name"),
        (lambda app: app.stream("events").map("upper"), "map() needs a function, got str"),
        (
            lambda app: app.stream("events").to("out", partitions=0),
            "partitions=0 must be a positive integer",
        ),
        (lambda app: app.stream("events").to("out", value="yaml"), "value='yaml' is not a format"),
        (lambda app: (app.stream("events"), app.stream("events")), "already a stream of this app"),
        (lambda app: app.run(), "has no stream"),
        (lambda app: (app.stream("events"), app.run()), "has streams but no steps"),
    ],
)
def test_bad_dataflow_definitions_are_clear_errors(build, message):
    app = App("df")
    with pytest.raises(ConfigError) as info:
        build(app)
    assert message in str(info.value)


def test_missing_source_topic_is_an_error_naming_it(kafka, topic_factory):
    existing = topic_factory()
    app = App("missing", brokers=kafka.bootstrap)
    app.stream(existing + "x").to("anything")
    with pytest.raises(TopicNotFoundError) as info:
        app.run(install_signal_handlers=False)
    assert f"source topic '{existing}x' does not exist" in str(info.value)
    assert f"did you mean '{existing}'" in str(info.value)


def test_unreachable_brokers_are_a_clear_error():
    app = App("nobroker", brokers="127.0.0.1:1")
    app.stream("events").to("out")
    app.settings.admin_config()  # no client is created before run()
    with pytest.raises(KafkaUnavailableError) as info:
        app.run(install_signal_handlers=False)
    assert "could not reach Kafka at 127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_module_zz:app"], "no module named 'no_such_module_zz'"),
        (["run", "json:app"], "module 'json' has no attribute 'app'"),
        (["run", "json:dumps"], "is a function, not a sluice.App"),
        (["run", ":app"], "is not 'module:app'"),
        (["run", "x:app", "--workers", "0"], "0 is not in the range x>=1"),
        (["run", "x:app", "--bogus"], "No such option"),
    ],
)
def test_bad_cli_arguments_are_clear_errors(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unique_names_do_not_collide():
    assert App(f"a-{uuid.uuid4().hex}").group_id != App(f"a-{uuid.uuid4().hex}").group_id
