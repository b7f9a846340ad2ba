"""confluent-kafka's ``AdminClient`` over a ``MemoryBroker``."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from sluice.testing._memory.broker import MemoryBroker

__all__ = ["MemoryAdmin"]


def _done(result: Any = None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


@dataclass(frozen=True)
class _PartitionMetadata:
    id: int
    leader: int = 0
    replicas: tuple[int, ...] = (0,)
    isrs: tuple[int, ...] = (0,)
    error: KafkaError | None = None


@dataclass(frozen=True)
class _TopicMetadata:
    topic: str
    partitions: dict[int, _PartitionMetadata]
    error: KafkaError | None = None


@dataclass(frozen=True)
class _ClusterMetadata:
    topics: dict[str, _TopicMetadata]
    brokers: dict[int, str]
    cluster_id: str = "sluice-memory"


@dataclass(frozen=True)
class _Offset:
    offset: int


@dataclass(frozen=True)
class _ConfigEntry:
    name: str
    value: str


class MemoryAdmin:
    """confluent-kafka's ``AdminClient`` over a ``MemoryBroker``: metadata, offsets, configs, creation, deletion."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker

    def poll(self, timeout: float | None = None) -> int:
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _ClusterMetadata:
        with self._broker.lock:
            names = [topic] if topic is not None else list(self._broker.topics)
            topics: dict[str, _TopicMetadata] = {}
            for name in names:
                t = self._broker.topics.get(name)
                if t is None:
                    error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Broker: Unknown topic or partition")
                    topics[name] = _TopicMetadata(name, {}, error)
                else:
                    topics[name] = _TopicMetadata(
                        name, {p: _PartitionMetadata(p) for p in range(len(t.logs))}
                    )
            return _ClusterMetadata(topics, {0: "memory:9092"})

    def create_topics(self, new_topics: list[Any], **_kwargs: Any) -> dict[str, Future]:
        out: dict[str, Future] = {}
        for nt in new_topics:
            if nt.topic in self._broker.topics:
                error = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, f"Topic '{nt.topic}' already exists.")
                out[nt.topic] = _done(error=KafkaException(error))
                continue
            self._broker.create_topic(nt.topic, nt.num_partitions, nt.config)
            out[nt.topic] = _done()
        return out

    def list_offsets(self, request: dict[TopicPartition, Any], **kwargs: Any) -> dict[TopicPartition, Future]:
        committed_only = "COMMITTED" in str(kwargs.get("isolation_level", ""))
        out: dict[TopicPartition, Future] = {}
        for tp, spec in request.items():
            try:
                t = self._broker.topic(tp.topic)
                if spec == OffsetSpec.latest():
                    offset = self._broker.end_offset(tp.topic, tp.partition, committed_only)
                else:
                    offset = t.starts[tp.partition]
                out[tp] = _done(_Offset(offset))
            except KafkaException as exc:
                out[tp] = _done(error=exc)
        return out

    def describe_configs(self, resources: list[Any], **_kwargs: Any) -> dict[Any, Future]:
        out: dict[Any, Future] = {}
        for resource in resources:
            try:
                t = self._broker.topic(resource.name)
            except KafkaException as exc:
                out[resource] = _done(error=exc)
                continue
            config = {"max.message.bytes": str(t.max_message_bytes()), **t.config}
            out[resource] = _done({k: _ConfigEntry(k, v) for k, v in config.items()})
        return out

    def delete_records(
        self, partitions: list[TopicPartition], **_kwargs: Any
    ) -> dict[TopicPartition, Future]:
        out: dict[TopicPartition, Future] = {}
        with self._broker.lock:
            for tp in partitions:
                t = self._broker.topic(tp.topic)
                t.starts[tp.partition] = max(
                    t.starts[tp.partition], min(tp.offset, len(t.logs[tp.partition]))
                )
                out[tp] = _done(TopicPartition(tp.topic, tp.partition, t.starts[tp.partition]))
        return out
