"""confluent-kafka's ``Consumer`` over a ``MemoryBroker``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from sluice.testing._memory.broker import OFFSET_INVALID, MemoryBroker, MemoryMessage

__all__ = ["MemoryConsumer"]


@dataclass(frozen=True)
class _GroupMetadata:
    group_id: str


class MemoryConsumer:
    """confluent-kafka's ``Consumer`` over a ``MemoryBroker``, the only member of its group."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._group: str = config.get("group.id", "")
        self._committed_only = config.get("isolation.level") == "read_committed"
        self._eof = str(config.get("enable.partition.eof", False)).lower() == "true"
        self._reset = config.get("auto.offset.reset", "latest")
        self._on_commit: Callable[..., Any] | None = config.get("on_commit")
        self._positions: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._at_eof: set[tuple[str, int]] = set()
        self._subscription: list[str] | None = None
        self._callbacks: dict[str, Callable[..., Any] | None] = {}
        self._joined = False
        self._commit_reports: list[list[TopicPartition]] = []
        self._closed = False

    # ------------------------------------------------------------------ group
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., Any] | None = None,
        on_revoke: Callable[..., Any] | None = None,
        on_lost: Callable[..., Any] | None = None,
    ) -> None:
        self._subscription = list(topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def _join(self) -> None:
        self._joined = True
        assert self._subscription is not None
        with self._broker.lock:
            parts = [
                TopicPartition(t, p)
                for t in self._subscription
                for p in range(len(self._broker.topic(t).logs))
            ]
        on_assign = self._callbacks.get("assign")
        if on_assign is not None:
            on_assign(self, parts)
        self.incremental_assign([tp for tp in parts if (tp.topic, tp.partition) not in self._positions])

    def _start(self, topic: str, partition: int, offset: int) -> int:
        if offset >= 0:
            return offset
        committed = self._broker.committed(self._group, topic, partition)
        if committed >= 0:
            return committed
        t = self._broker.topic(topic)
        if self._reset in ("earliest", "smallest", "beginning"):
            return t.starts[partition]
        return self._broker.end_offset(topic, partition, self._committed_only)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._positions = {}
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions[(tp.topic, tp.partition)] = self._start(tp.topic, tp.partition, tp.offset)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)

    def unassign(self) -> None:
        self._positions = {}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._positions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        key = (partition.topic, partition.partition)
        self._positions[key] = self._start(partition.topic, partition.partition, partition.offset)
        self._at_eof.discard(key)

    # ------------------------------------------------------------------ records
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemoryMessage]:
        """The next records of the assigned, unpaused partitions, partition by partition."""
        if self._closed:
            raise RuntimeError("Consumer closed")
        gate = self._broker.gate
        if self._subscription is not None and gate is not None:
            gate()
        self._serve_commit_reports()
        if self._subscription is not None and not self._joined:
            self._join()
        out: list[MemoryMessage] = []
        for key in sorted(self._positions):
            if key in self._paused or len(out) >= num_messages:
                continue
            topic, partition = key
            got, position = self._broker.fetch(
                topic, partition, self._positions[key], num_messages - len(out), self._committed_only
            )
            self._positions[key] = position
            out.extend(got)
            if got:
                self._at_eof.discard(key)
            elif self._eof and key not in self._at_eof:
                self._at_eof.add(key)
                eof = KafkaError(KafkaError._PARTITION_EOF, f"{topic}[{partition}] reached end at {position}")
                out.append(MemoryMessage(topic, partition, position, None, None, 0, None, eof))
        if any(m.error() is None for m in out):
            with self._broker.lock:
                self._broker.version += 1
        return out

    def poll(self, timeout: float | None = None) -> MemoryMessage | None:
        got = self.consume(1, timeout or 0)
        return got[0] if got else None

    def _serve_commit_reports(self) -> None:
        reports, self._commit_reports = self._commit_reports, []
        if self._on_commit is not None:
            for parts in reports:
                self._on_commit(None, parts)

    def commit(
        self,
        message: Any = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        if offsets is None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        self._broker.commit_offsets(self._group, [(tp.topic, tp.partition, tp.offset) for tp in offsets])
        done = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous:
            self._commit_reports.append(done)  # served by the next consume, as librdkafka does
            return None
        return done

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._broker.committed(self._group, tp.topic, tp.partition)
            )
            for tp in partitions
        ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), OFFSET_INVALID)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        t = self._broker.topic(partition.topic)
        return (
            t.starts[partition.partition],
            self._broker.end_offset(partition.topic, partition.partition, self._committed_only),
        )

    def consumer_group_metadata(self) -> _GroupMetadata:
        return _GroupMetadata(self._group)

    def close(self) -> None:
        """Leave the group: the assigned partitions are revoked first (the revoke callback commits them)."""
        if self._closed:
            return
        on_revoke = self._callbacks.get("revoke")
        if self._joined and on_revoke is not None and self._positions:
            on_revoke(self, [TopicPartition(t, p) for t, p in sorted(self._positions)])
        self._serve_commit_reports()
        self._positions = {}
        self._closed = True
