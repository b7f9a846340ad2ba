"""Test harness: a real Kafka broker started once per session, unique topics, produce/drain helpers.

- ``SLUICE_TEST_BROKERS`` set: use that broker (``make test`` starts one and sets it).
- Otherwise the session starts the single-node broker with ``tools/kafka/kafkactl.py``
  (reusing one already running) and stops it at the end only if it started it.
- ``cluster``: the 3-node cluster for fault tests, started on first use.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sluice.kafka.admin import TopicAdmin

ROOT = Path(__file__).resolve().parent.parent


def _load_kafkactl():
    spec = importlib.util.spec_from_file_location("kafkactl", ROOT / "tools" / "kafka" / "kafkactl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafkactl"] = module
    spec.loader.exec_module(module)
    return module


kafkactl = _load_kafkactl()


@dataclass(frozen=True)
class Record:
    """A consumed record, as plain data for assertions."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


@dataclass
class KafkaHelper:
    """Produce, drain and create topics against one real broker or cluster."""

    bootstrap: str
    created: list[str] = field(default_factory=list)

    _admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def create_topic(
        self, name: str | None = None, partitions: int = 1, replication: int = 1, config: dict | None = None
    ) -> str:
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config or {})]
        )
        futures[name].result(timeout=30)
        self._wait_for_leaders(name, partitions)
        self.created.append(name)
        return name

    def _wait_for_leaders(self, topic: str, partitions: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = self.admin.list_topics(topic, timeout=5).topics.get(topic)
            ready = md and md.error is None and len(md.partitions) == partitions
            if ready and all(p.leader >= 0 for p in md.partitions.values()):
                return
            time.sleep(0.1)
        raise TimeoutError(f"topic {topic} has no leader for every partition after {timeout}s")

    def producer(self, **config) -> Producer:
        # idempotent: a batch refused by a fresh broker is retried in place, not behind later ones
        base = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "enable.idempotence": True}
        return Producer({**base, **config})

    def produce(
        self,
        topic: str,
        records: Iterable[tuple[bytes | str | None, bytes | str | None]]
        | Iterable[tuple[bytes | str | None, bytes | str | None, dict]],
        partition: int | None = None,
        **config,
    ) -> int:
        """Produce (key, value[, extra kwargs]) tuples with acks=all; return how many were acknowledged."""
        producer = self.producer(acks="all", **config)
        errors: list[str] = []
        count = 0

        def on_delivery(err, _msg):
            nonlocal count
            if err is not None:
                errors.append(str(err))
            else:
                count += 1

        for rec in records:
            key, value, *extra = rec
            kwargs = dict(extra[0]) if extra else {}
            if partition is not None:
                kwargs.setdefault("partition", partition)
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        remaining = producer.flush(60)
        assert remaining == 0, f"{remaining} records not delivered to {topic}"
        assert not errors, f"delivery failed: {errors[:3]}"
        return count

    def consumer(self, group: str | None = None, **config) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group or f"drain-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **config,
            }
        )

    def drain(
        self, topic: str, expected: int | None = None, timeout: float = 30.0, idle: float = 2.0, **config
    ) -> list[Record]:
        """Read a topic from the beginning until ``expected`` records arrived (or ``idle`` seconds of silence)."""
        consumer = self.consumer(**config)
        consumer.subscribe([topic])
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        try:
            while time.monotonic() < deadline:
                if expected is not None and len(out) >= expected:
                    break
                if expected is None and out and time.monotonic() - last > idle:
                    break
                for msg in consumer.consume(1000, timeout=0.5):
                    if msg.error():
                        continue
                    out.append(
                        Record(
                            msg.topic(),
                            msg.partition(),
                            msg.offset(),
                            msg.key(),
                            msg.value(),
                            tuple(msg.headers() or ()),
                            msg.timestamp()[1],
                        )
                    )
                    last = time.monotonic()
        finally:
            consumer.close()
        return out

    def committed(self, group: str, topic: str, partitions: int = 1) -> dict[int, int]:
        """The group's committed offset per partition (-1001 when none)."""
        consumer = self.consumer(group=group)
        try:
            tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in tps}

    def end_offsets(self, topic: str, partitions: int = 1) -> dict[int, int]:
        bounds = TopicAdmin({"bootstrap.servers": self.bootstrap}, timeout=10).watermarks(topic, partitions)
        return {p: high for p, (_low, high) in bounds.items()}

    def cleanup(self) -> None:
        if self.created:
            try:
                for f in self.admin.delete_topics(self.created, operation_timeout=10).values():
                    f.result(timeout=15)
            except KafkaException:
                pass
            self.created.clear()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The single broker's bootstrap address, started for the session when not given."""
    given = os.environ.get("SLUICE_TEST_BROKERS")
    if given:
        yield given
        return
    was_running = kafkactl._read_pid(kafkactl.single_node()) is not None
    bootstrap = kafkactl.up()
    yield bootstrap
    if not was_running:
        kafkactl.down()


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaHelper]:
    """Helpers bound to the single broker; topics created through it are deleted after the test."""
    helper = KafkaHelper(kafka_bootstrap)
    yield helper
    helper.cleanup()


@pytest.fixture
def topic_factory(kafka: KafkaHelper) -> Callable[..., str]:
    """``topic_factory(partitions=4)`` -> a new unique topic on the single broker."""
    return kafka.create_topic


@dataclass
class Cluster:
    """The 3-node cluster: helpers plus kill -9 / restart of one node by its pid."""

    kafka: KafkaHelper

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def kill(self, node_id: int) -> int:
        return kafkactl.kill_node(node_id)

    def restart(self, node_id: int) -> None:
        kafkactl.start_node(node_id)

    def restart_nodes(self, node_ids: list[int]) -> None:
        """Start several killed nodes at once (one alone cannot rejoin a quorum that lost two)."""
        nodes = kafkactl.cluster_nodes()
        for node_id in node_ids:
            if kafkactl._read_pid(nodes[node_id - 1]) is None:
                kafkactl._launch(nodes[node_id - 1], heap="512m")
        kafkactl._wait_ready(nodes)

    def pid(self, node_id: int) -> int | None:
        return kafkactl._read_pid(kafkactl.cluster_nodes()[node_id - 1])


@pytest.fixture(scope="session")
def _cluster_session() -> Iterator[str]:
    was_running = all(kafkactl._read_pid(n) is not None for n in kafkactl.cluster_nodes())
    bootstrap = kafkactl.cluster_up()
    yield bootstrap
    if not was_running:
        kafkactl.cluster_down()


@pytest.fixture
def cluster(_cluster_session: str) -> Iterator[Cluster]:
    """The 3-node cluster; every node is running again when the test ends."""
    helper = KafkaHelper(_cluster_session)
    yield Cluster(helper)
    for node in kafkactl.cluster_nodes():
        if kafkactl._read_pid(node) is None:
            kafkactl.start_node(node.node_id)
    helper.cleanup()
