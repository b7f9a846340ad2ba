"""sluice.testing._memory: the in-memory Kafka behaves as the runtime expects of Kafka."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from sluice.testing._memory import MemoryBroker, MemoryClients, murmur2

pytestmark = pytest.mark.memory


@pytest.mark.parametrize(
    ("data", "java"),
    [  # Kafka's UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(data: bytes, java: int):
    assert murmur2(data) == java & 0xFFFFFFFF


def test_a_read_committed_consumer_stops_at_an_open_transaction_and_skips_aborted_records():
    broker = MemoryBroker()
    broker.create_topic("t")
    clients = MemoryClients(broker)
    producer = clients.producer({"transactional.id": "x"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("t", b"aborted")
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce("t", b"committed")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.produce("t", b"open")
    committed = clients.consumer({"group.id": "g", "isolation.level": "read_committed"})
    committed.assign([TopicPartition("t", 0, 0)])
    uncommitted = clients.consumer({"group.id": "g"})
    uncommitted.assign([TopicPartition("t", 0, 0)])
    assert [m.value() for m in committed.consume(10, 0)] == [b"committed"]
    assert [m.value() for m in uncommitted.consume(10, 0)] == [b"aborted", b"committed", b"open"]
    assert committed.get_watermark_offsets(TopicPartition("t", 0)) == (0, 2)  # the last stable offset


def test_a_newer_producer_with_the_same_transactional_id_fences_the_older_one():
    broker = MemoryBroker()
    broker.create_topic("t")
    clients = MemoryClients(broker)
    old = clients.producer({"transactional.id": "app-0"})
    old.init_transactions()
    old.begin_transaction()
    old.produce("t", b"zombie")
    new = clients.producer({"transactional.id": "app-0"})
    new.init_transactions()  # aborts what the old one left open
    with pytest.raises(KafkaException) as caught:
        old.commit_transaction()
    assert caught.value.args[0].code() == KafkaError._FENCED
    assert broker.read("t") == []


def test_delivery_reports_come_with_poll_and_a_record_above_max_message_bytes_is_refused():
    broker = MemoryBroker()
    broker.create_topic("t", config={"max.message.bytes": "100"})
    producer = MemoryClients(broker).producer({})
    reports: list = []
    producer.produce("t", b"x" * 50, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    producer.produce("t", b"x" * 150, on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert reports == []
    assert producer.poll(0) == 2
    assert reports[0] == (None, 0)
    assert reports[1][0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert len(broker.read("t")) == 1


def test_a_subscribed_consumer_starts_at_its_groups_committed_offset():
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    clients = MemoryClients(broker)
    producer = clients.producer({})
    for i in range(6):
        producer.produce("t", str(i).encode(), partition=i % 2)
    broker.commit_offsets("g", [("t", 0, 2), ("t", 1, 1)])
    assigned: list = []
    consumer = clients.consumer({"group.id": "g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["t"], on_assign=lambda c, parts: assigned.extend(parts))
    got = [(m.partition(), m.value()) for m in consumer.consume(10, 0)]
    assert [(tp.topic, tp.partition) for tp in assigned] == [("t", 0), ("t", 1)]
    assert got == [(0, b"4"), (1, b"3"), (1, b"5")]
