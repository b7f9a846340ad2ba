"""The JSON Lines sink: one line per record, files per partition, whole batches or nothing."""

from __future__ import annotations

import os
import uuid

import orjson
import pytest

from sluice import App, sinks
from sluice.errors import ConfigError
from sluice.sinks import SinkRowError
from tests.apps import running, wait_for
from tests.sinks._helpers import rows


def lines(path) -> list:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def test_records_are_appended_one_json_line_each_per_partition_file(tmp_path):
    sink = sinks.jsonl(tmp_path / "out" / "{topic}-{partition}.jsonl")
    sink.write_batch(rows([{"id": 1}, {"id": 2}], partition=0) + rows([{"id": 3}], partition=1))
    sink.write_batch(rows([{"id": 4}], partition=0))
    sink.close()
    assert lines(tmp_path / "out" / "events-0.jsonl") == [{"id": 1}, {"id": 2}, {"id": 4}]
    assert lines(tmp_path / "out" / "events-1.jsonl") == [{"id": 3}]


def test_nothing_is_opened_before_the_first_write(tmp_path):
    sinks.jsonl(tmp_path / "a" / "x.jsonl").close()
    assert not (tmp_path / "a").exists()


def test_the_envelope_tells_where_each_line_came_from_so_replays_can_be_dropped(tmp_path):
    sink = sinks.jsonl(tmp_path / "x.jsonl", envelope=True)
    batch = rows(["a", {"id": 2}], start=41)
    batch[0] = batch[0]._replace(key=b"k1")
    sink.write_batch(batch)
    sink.write_batch(batch)  # a replay after a crash
    sink.close()
    got = lines(tmp_path / "x.jsonl")
    assert got[0] == {
        "topic": "events",
        "partition": 0,
        "offset": 41,
        "timestamp": 1_700_000_000_000,
        "key": "k1",
        "value": "a",
    }
    unique = {(g["topic"], g["partition"], g["offset"]): g["value"] for g in got}
    assert len(got) == 4 and unique == {("events", 0, 41): "a", ("events", 0, 42): {"id": 2}}


def test_a_value_that_is_not_json_fails_the_batch_and_writes_nothing(tmp_path):
    sink = sinks.jsonl(tmp_path / "x.jsonl")
    sink.write_batch(rows([{"id": 0}]))
    with pytest.raises(
        SinkRowError, match=r"record events\[0\]@8: the value \{'id': \{1, 2\}\} cannot be written as JSON"
    ):
        sink.write_batch(rows([{"id": 1}, {"id": {1, 2}}], start=7))
    sink.close()
    assert lines(tmp_path / "x.jsonl") == [{"id": 0}]


def test_a_failed_write_is_cut_off_again(tmp_path, monkeypatch):
    sink = sinks.jsonl(tmp_path / "{partition}.jsonl")
    sink.write_batch(rows([{"id": 0}], partition=0))
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(sinks.SinkError, match="No space left on device"):
        sink.write_batch(rows([{"id": 1}], partition=0) + rows([{"id": 2}], partition=1))
    monkeypatch.setattr(os, "fsync", real_fsync)
    sink.close()
    assert lines(tmp_path / "0.jsonl") == [{"id": 0}]
    assert lines(tmp_path / "1.jsonl") == []


def test_unknown_template_fields_are_config_errors(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown template field \{date\}; the path may use \{topic\} and \{partition\}"
    ):
        sinks.jsonl(tmp_path / "{date}.jsonl")


def test_an_app_writes_one_file_per_partition(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=3)
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(300)])
    app = App(f"jsonl-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.stream(src).sink(sinks.jsonl(tmp_path / "clicks-{partition}.jsonl"))
    with running(app) as outcome:
        wait_for(
            lambda: sum(max(o, 0) for o in kafka.committed(app.name, src, 3).values()) == 300,
            30,
            outcome=outcome,
            what="every offset committed",
        )
    ids = [line["id"] for p in range(3) for line in lines(tmp_path / f"clicks-{p}.jsonl")]
    assert sorted(ids) == list(range(300))
