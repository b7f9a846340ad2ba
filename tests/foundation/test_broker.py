"""The single real broker: records round-trip with keys, headers and timestamps."""

from __future__ import annotations

import pytest


def test_records_round_trip_with_keys_headers_and_timestamps(kafka, topic_factory):
    topic = topic_factory(partitions=3)
    sent = [
        (
            f"k{i}".encode(),
            f'{{"n": {i}}}'.encode(),
            {"headers": [("h", str(i).encode())], "timestamp": 1_700_000_000_000 + i},
        )
        for i in range(300)
    ]
    assert kafka.produce(topic, sent) == 300

    got = kafka.drain(topic, expected=300)

    assert len(got) == 300
    by_key = {r.key: r for r in got}
    for key, value, extra in sent:
        rec = by_key[key]
        assert rec.value == value
        assert rec.headers == tuple(extra["headers"])
        assert rec.timestamp == extra["timestamp"]
    # same key -> same partition, in produce order
    assert {r.partition for r in got} == {0, 1, 2}


def test_topic_auto_creation_is_off(kafka):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "message.timeout.ms": 3000})
    errors = []
    producer.produce("never-created-topic-x1", b"v", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None, "producing to a missing topic must fail: auto-creation is off"


def test_watermarks_are_first_and_end_offsets_of_each_partition(kafka, topic_factory):
    from sluice.errors import KafkaUnavailableError
    from sluice.kafka.admin import TopicAdmin

    topic = topic_factory(partitions=2)
    kafka.produce(topic, [(b"k", b"v", {"partition": 1})] * 3)
    admin = TopicAdmin({"bootstrap.servers": kafka.bootstrap}, timeout=10)
    assert admin.watermarks(topic, 2) == {0: (0, 0), 1: (0, 3)}
    with pytest.raises(KafkaUnavailableError, match=topic):  # no partition 2: an error, not "empty"
        admin.watermarks(topic, 3)
