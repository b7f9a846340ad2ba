"""``sluice lag``, ``sluice tail``, ``sluice produce`` against the real broker, and every tool's bad arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import TopicPartition

from sluice.cli.main import cli
from tests.apps import ROOT


def sluice(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )


def commit(kafka, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = kafka.consumer(group=group)
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


# ---------------------------------------------------------------------- lag


def test_lag_shows_committed_end_and_lag_per_partition(kafka, topic_factory):
    topic, group = topic_factory(partitions=3), f"g-{uuid.uuid4().hex[:8]}"
    kafka.produce(topic, [(None, b"{}")] * 10, partition=0)
    kafka.produce(topic, [(None, b"{}")] * 5, partition=1)
    commit(kafka, group, {(topic, 0): 7})

    table = sluice("lag", "--group", group, "--topic", topic, "--brokers", kafka.bootstrap)
    assert table.returncode == 0, table.stderr
    assert re.search(rf"\b{topic}\s+0\s+7\s+10\s+3\b", table.stdout), table.stdout
    assert re.search(rf"\b{topic}\s+1\s+-\s+5\s+5\b", table.stdout), table.stdout  # no commit: from the start
    assert re.search(rf"\b{topic}\s+2\s+-\s+0\s+0\b", table.stdout), table.stdout
    assert f"total lag: 8 (3 partitions, group {group} Empty, 0 members)" in table.stdout

    as_json = sluice("lag", "--group", group, "--json", "--brokers", kafka.bootstrap)
    assert as_json.returncode == 0, as_json.stderr
    report = orjson.loads(as_json.stdout)
    # without --topic: every partition of the topics the group committed offsets for
    assert report == {
        "group": group,
        "state": "Empty",
        "members": 0,
        "total_lag": 8,
        "partitions": [
            {"topic": topic, "partition": 0, "committed": 7, "end": 10, "lag": 3, "member": None},
            {"topic": topic, "partition": 1, "committed": None, "end": 5, "lag": 5, "member": None},
            {"topic": topic, "partition": 2, "committed": None, "end": 0, "lag": 0, "member": None},
        ],
    }


def test_lag_of_an_unknown_group_or_topic_is_a_one_line_error(kafka, topic_factory):
    topic, group = topic_factory(), f"g-{uuid.uuid4().hex[:8]}"
    kafka.produce(topic, [(None, b"{}")])
    commit(kafka, group, {(topic, 0): 1})

    typo = sluice("lag", "--group", group + "x", "--brokers", kafka.bootstrap)
    assert typo.returncode == 1
    assert typo.stderr.startswith(
        f"sluice: error: consumer group '{group}x' has no members and no committed offsets"
    )
    assert f"(did you mean '{group}'?)" in typo.stderr
    assert typo.stderr.count("\n") == 1

    missing = sluice("lag", "--group", group, "--topic", topic + "x", "--brokers", kafka.bootstrap)
    assert missing.returncode == 1
    assert missing.stderr == (
        f"sluice: error: topic '{topic}x' does not exist on {kafka.bootstrap} (did you mean '{topic}'?)\n"
    )


def test_lag_with_unreachable_brokers_fails_quickly_with_one_line():
    started = time.monotonic()
    proc = sluice("lag", "--group", "g", "--brokers", "127.0.0.1:1", "--timeout", "2")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sluice: error: could not reach Kafka at 127.0.0.1:1 within 2s")
    assert proc.stderr.count("\n") == 1
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------- tail


def test_tail_from_beginning_prints_records_as_json_and_stops_at_the_end(kafka, topic_factory):
    topic = topic_factory(partitions=2)
    kafka.produce(
        topic,
        [
            (
                b"user-1",
                b'{"page": "/a"}',
                {"headers": [("trace", b"t1"), ("trace", b"t2")], "timestamp": 1_700_000_000_000},
            ),
            (b"user-2", b"plain text", {"timestamp": 1_700_000_000_001}),
            (b"user-1", b"\xff\xfe", {}),
        ],
        partition=0,
    )
    kafka.produce(topic, [(None, None)], partition=1)

    proc = sluice("tail", topic, "--from-beginning", "--compact", "--brokers", kafka.bootstrap)
    assert proc.returncode == 0, proc.stderr
    records = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 4
    by_offset = {(r["partition"], r["offset"]): r for r in records}
    first = by_offset[(0, 0)]
    assert first == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "timestamp": "2023-11-14T22:13:20.000+00:00",
        "timestamp_ms": 1_700_000_000_000,
        "key": "user-1",
        "headers": {"trace": ["t1", "t2"]},
        "value": {"page": "/a"},
    }
    assert by_offset[(0, 1)]["value"] == "plain text"
    assert by_offset[(0, 2)]["value_base64"] == "//4="
    assert by_offset[(1, 0)]["key"] is None and by_offset[(1, 0)]["value"] is None
    assert proc.stderr == "sluice: 4 records shown\n"

    pretty = sluice(
        "tail", topic, "--from-beginning", "-n", "1", "--partition", "0", "--brokers", kafka.bootstrap
    )
    assert pretty.returncode == 0
    assert pretty.stdout.startswith('{\n  "topic": ')  # indented JSON when piped without --compact
    assert orjson.loads(pretty.stdout)["offset"] == 0

    keyed = sluice(
        "tail", topic, "--from-beginning", "--key", "user-1", "--compact", "--brokers", kafka.bootstrap
    )
    assert [orjson.loads(line)["offset"] for line in keyed.stdout.splitlines()] == [0, 2]
    assert keyed.stderr == "sluice: 2 records shown of 4 read\n"
    grep = sluice(
        "tail", topic, "--from-beginning", "--grep", "text", "--compact", "--brokers", kafka.bootstrap
    )
    assert [orjson.loads(line)["value"] for line in grep.stdout.splitlines()] == ["plain text"]


def test_tail_without_from_beginning_waits_for_new_records_until_n(kafka, topic_factory):
    topic = topic_factory()
    kafka.produce(topic, [(b"old", b'"old"')])
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "tail", topic, "-n", "2", "--compact", "--brokers", kafka.bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        i = 0
        while proc.poll() is None and time.monotonic() < deadline:
            kafka.produce(topic, [(b"new", orjson.dumps({"i": i}))])
            i += 1
            time.sleep(0.3)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    shown = [orjson.loads(line) for line in out.splitlines()]
    assert len(shown) == 2
    assert all(r["key"] == "new" for r in shown)  # nothing from before it started
    assert shown[1]["value"]["i"] == shown[0]["value"]["i"] + 1


def test_tail_of_a_missing_topic_names_the_closest_one(kafka, topic_factory):
    topic = topic_factory()
    proc = sluice("tail", topic + "x", "--brokers", kafka.bootstrap)
    assert proc.returncode == 1
    assert (
        proc.stderr
        == f"sluice: error: topic '{topic}x' does not exist on {kafka.bootstrap} (did you mean '{topic}'?)\n"
    )
    bad_partition = sluice("tail", topic, "--partition", "3", "--brokers", kafka.bootstrap)
    assert bad_partition.returncode == 1
    assert "has 1 partitions (0 to 0); no partition 3" in bad_partition.stderr


# ---------------------------------------------------------------------- produce


def test_produce_a_template_at_a_rate_reports_what_kafka_acknowledged(kafka, topic_factory):
    topic = topic_factory(partitions=2)
    started = time.monotonic()
    proc = sluice(
        "produce",
        topic,
        "--template",
        "clicks",
        "--count",
        "60",
        "--rate",
        "100",
        "--brokers",
        kafka.bootstrap,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert re.match(rf"produced 60 records to {topic}: 60 acknowledged, 0 errors in \d+\.\d\ds", proc.stdout)
    assert took >= 0.55  # 60 records at 100/s
    records = kafka.drain(topic, expected=60)
    assert len(records) == 60
    events = [orjson.loads(r.value) for r in records]
    assert sorted(e["id"] for e in events) == list(range(60))
    assert {e["type"] for e in events} <= {"click", "view", "purchase"}
    assert all(r.key == e["user"].encode() for r, e in zip(records, events, strict=True))


def test_produce_a_jsonl_file_keyed_by_a_field(kafka, topic_factory, tmp_path):
    topic = topic_factory()
    path = tmp_path / "events.jsonl"
    path.write_text('{"sku": "a", "n": 1}\n\n{"sku": "b", "n": 2}\n{"sku": 7, "n": 3}\n')
    proc = sluice("produce", topic, "--file", str(path), "--key-field", "sku", "--brokers", kafka.bootstrap)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"produced 3 records to {topic}: 3 acknowledged, 0 errors")
    records = kafka.drain(topic, expected=3)
    assert [(r.key, orjson.loads(r.value)["n"]) for r in records] == [(b"a", 1), (b"b", 2), (b"7", 3)]

    path.write_text('{"sku": "c"}\n{"sku": \n')
    bad = sluice("produce", topic, "--file", str(path), "--brokers", kafka.bootstrap)
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"sluice: error: {path} line 2 is not JSON (")
    assert bad.stderr.endswith("stopped there: 1 records before it were acknowledged\n")


def test_produce_refuses_a_missing_topic_unless_create(kafka, topic_factory):
    existing = topic_factory()
    missing = existing + "-new"
    proc = sluice("produce", missing, "--count", "5", "--brokers", kafka.bootstrap)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"sluice: error: topic '{missing}' does not exist on {kafka.bootstrap} (did you mean '{existing}'?); "
        "topic auto-creation is off: create it with --create --partitions N\n"
    )
    kafka.created.append(missing)
    created = sluice(
        "produce", missing, "--count", "5", "--create", "--partitions", "2", "--brokers", kafka.bootstrap
    )
    assert created.returncode == 0, created.stderr
    assert f"created topic {missing} (2 partitions, replication 1)" in created.stderr
    assert len(kafka.admin.list_topics(missing, timeout=10).topics[missing].partitions) == 2
    assert sum(kafka.end_offsets(missing, 2).values()) == 5


def test_produce_with_unreachable_brokers_is_one_line():
    proc = sluice("produce", "events", "--brokers", "127.0.0.1:1", "--timeout", "2")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sluice: error: could not reach Kafka at 127.0.0.1:1 within 2s")
    assert proc.stderr.count("\n") == 1


# ---------------------------------------------------------------------- run


def test_run_with_a_metrics_port_in_use_is_a_one_line_error(tmp_path):
    import socket

    (tmp_path / "portapp.py").write_text(
        'from sluice import App\napp = App("portapp", brokers="127.0.0.1:1")\napp.stream("events").sink(print)\n'
    )
    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        proc = sluice("run", "portapp:app", "--metrics-port", str(port), cwd=tmp_path)
        workers = sluice("run", "portapp:app", "--workers", "2", "--metrics-port", str(port), cwd=tmp_path)
    finally:
        blocker.close()
    for p in (proc, workers):
        assert p.returncode == 1
        assert f"sluice: error: metrics port {port} on 0.0.0.0 is already in use; choose another" in p.stderr
        assert "Traceback" not in p.stderr


def test_run_log_format_json_writes_one_object_per_line(kafka, tmp_path):
    (tmp_path / "logapp.py").write_text(
        f'from sluice import App\napp = App("logapp", brokers="{kafka.bootstrap}")\n'
        'app.stream("no-such-topic-for-logapp").sink(print)\n'
    )
    proc = sluice("run", "logapp:app", "--log-format", "json", "--metrics-port", "0", cwd=tmp_path)
    assert proc.returncode == 1
    *logs, error = proc.stderr.splitlines()
    entries = [orjson.loads(line) for line in logs]
    assert entries, proc.stderr
    assert all({"ts", "level", "logger", "pid", "message"} <= set(e) for e in entries)
    assert any(e["message"].startswith("logapp: metrics on http://") for e in entries)
    assert error.startswith("sluice: error: source topic 'no-such-topic-for-logapp' does not exist")


# ---------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lag"], "Missing option '--group'"),
        (["lag", "--group", " "], "the consumer group must not be empty"),
        (["lag", "--group", "g", "--topic", "bad topic!"], "'bad topic!' is not a valid Kafka topic name"),
        (["lag", "--group", "g", "--timeout", "0"], "0.0 is not in the range x>=0.1"),
        (["lag", "--group", "g", "--jsn"], "No such option '--jsn'. Did you mean '--json'?"),
        (["tail"], "Missing argument 'TOPIC'"),
        (["tail", "a b"], "'a b' is not a valid Kafka topic name"),
        (["tail", "t", "-n", "0"], "0 is not a positive number of records"),
        (["tail", "t", "-n", "many"], "'many' is not a valid integer"),
        (["tail", "t", "--follow"], "--follow goes with --from-beginning"),
        (["tail", "t", "--partition", "-1"], "-1 is not in the range x>=0"),
        (["produce"], "Missing argument 'TOPIC'"),
        (["produce", "t", "--template", "nope"], "'nope' is not one of 'clicks', 'orders'"),
        (["produce", "t", "--rate", "0"], "0.0 is not in the range x>0"),
        (["produce", "t", "--count", "-5"], "-5 is not a positive number of records"),
        (
            ["produce", "t", "--template", "clicks", "--file", "-"],
            "give either --template or --file, not both",
        ),
        (["produce", "t", "--partitions", "3"], "--partitions and --replication go with --create"),
        (["produce", "t", "--create", "--partitions", "0"], "0 is not in the range x>=1"),
        (
            ["produce", "t", "--file", "/no/such/events.jsonl"],
            "'/no/such/events.jsonl': No such file or directory",
        ),
        (["top"], "give MODULE:APP, --group G or --metrics URL"),
        (["top", "m:app", "--group", "g"], "give either MODULE:APP or --group, not both"),
        (["top", "--metrics", "http://"], "'http://' is not a metrics endpoint"),
        (["top", "--metrics", "host:port"], "'host:port' is not a metrics endpoint"),
        (["top", "--group", "g", "--interval", "0"], "0.0 is not in the range x>=0.2"),
        (["top", "no_such_module_xyz:app"], "no module named 'no_such_module_xyz'"),
        (["run", "m:app", "--metrics-port", "70000"], "70000 is not in the range 0<=x<=65535"),
        (["run", "m:app", "--log-format", "xml"], "'xml' is not one of 'text', 'json'"),
        (["run", "m:app", "--log-level", "loud"], "'loud' is not one of 'debug', 'info', 'warning', 'error'"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr


def test_bad_arguments_exit_2_without_traceback_from_the_command_line():
    for args in (
        ["tail", "events", "--gerp", "x"],
        ["produce", "events", "--rat", "5"],
        ["top", "--grou", "g"],
    ):
        proc = sluice(*args)
        assert proc.returncode == 2, proc.stderr
        assert "No such option" in proc.stderr
        assert "Traceback" not in proc.stderr
