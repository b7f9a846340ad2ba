"""retry_coordinator: coordinator-loading errors are asked again, for a bounded time; others are not."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sluice.kafka.coordinator import retry_coordinator


@pytest.fixture
def consumer(kafka_bootstrap):
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"retry-{uuid.uuid4().hex[:8]}"})
    yield c
    c.close()


def test_retriable_coordinator_error_is_asked_again_until_the_broker_answers(kafka, consumer):
    topic = kafka.create_topic()
    calls = []

    def committed():
        calls.append(time.monotonic())
        if len(calls) < 3:  # what a broker still loading its coordinators answers
            raise KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)

    [tp] = retry_coordinator(committed, what="committed offsets")
    assert len(calls) == 3
    assert tp.topic == topic and tp.offset < 0  # the real broker's answer: nothing committed
    assert calls[2] - calls[0] >= 0.25  # backed off (0.1 s, then 0.2 s), not a busy loop


def test_other_broker_errors_are_raised_at_once(kafka_bootstrap, kafka):
    topic = kafka.create_topic()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    calls = []

    def create_again():
        calls.append(1)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)

    with pytest.raises(KafkaException) as raised:
        retry_coordinator(create_again)
    assert raised.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    assert calls == [1]


def test_retries_stop_after_the_budget_with_the_last_error():
    calls = []

    def never_ready():
        calls.append(time.monotonic())
        raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))

    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        retry_coordinator(never_ready, budget=1.0)
    assert raised.value.args[0].code() == KafkaError.NOT_COORDINATOR
    assert time.monotonic() - started <= 1.5
    assert 3 <= len(calls) <= 10
