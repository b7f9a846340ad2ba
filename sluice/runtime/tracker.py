"""Which source offsets may be committed: only those whose every output was acknowledged.

Each consumed batch is a ``Batch``: it counts the output records still waiting for
the broker's acknowledgement. Per partition, batches are kept in consume order; the
commit point of a partition advances over the batches at the front that are done,
so an offset is committed only when its own outputs and those of every earlier
record of that partition are acknowledged (contiguous per partition).

Example:
    >>> tracker = OffsetTracker()
    >>> first, second = Batch(2), Batch(1)
    >>> tracker.add(first, {("t", 0): 10})
    >>> tracker.add(second, {("t", 0): 11})
    >>> first.expect(1); first.seal(); second.seal()
    >>> tracker.committable()        # first still waits for an ack
    {}
    >>> first.on_delivery("source message", None, None)
    >>> tracker.committable()
    {('t', 0): 11}
"""

from __future__ import annotations

from collections import deque
from operator import methodcaller
from typing import Any

__all__ = ["Batch", "OffsetTracker", "TopicPartitionKey", "next_offsets"]

TopicPartitionKey = tuple[str, int]

_partition, _offset = methodcaller("partition"), methodcaller("offset")


def next_offsets(msgs: list[Any], topic: str | None = None) -> dict[TopicPartitionKey, int]:
    """Per partition, the offset after the last of ``msgs`` (they come in offset order per partition).

    ``topic``: every message is known to come from this topic. Then the dict is built
    by ``dict(zip(...))`` over the partitions and offsets (later offsets overwrite
    earlier ones) with no Python-level loop and no per-record topic string: about 2x
    cheaper than the comprehension on a 10,000-record batch.

    Example:
        >>> from confluent_kafka import Message
        >>> msgs = [Message(topic="t", partition=p, offset=o) for p, o in ((0, 4), (1, 7), (0, 5))]
        >>> next_offsets(msgs) == next_offsets(msgs, "t") == {("t", 0): 6, ("t", 1): 8}
        True
    """
    if topic is None or not msgs:
        return {(m.topic(), m.partition()): m.offset() + 1 for m in msgs}
    kind = type(msgs[0])
    partitions = map(getattr(kind, "partition", _partition), msgs)
    last = dict(zip(partitions, map(getattr(kind, "offset", _offset), msgs), strict=True))
    return {(topic, p): o + 1 for p, o in last.items()}


class Batch:
    """One consumed batch: its size, how many of its outputs still await an ack, and refused outputs.

    A refused output is kept in ``failures`` as ``(source message, error, output message)``
    until the runtime has disposed of it (re-produced, dead-lettered, skipped); the
    batch is not done before.
    """

    __slots__ = ("failures", "pending", "registry", "sealed", "size")

    def __init__(self, size: int, registry: list[Batch] | None = None) -> None:
        self.size = size
        self.pending = 0
        self.sealed = False
        self.failures: list[tuple[Any, Any, Any]] = []
        self.registry = registry

    def expect(self, count: int) -> None:
        """Count ``count`` more outputs that must be acknowledged."""
        self.pending += count

    def settle(self, count: int = 1) -> None:
        """``count`` expected outputs will not come after all (refused before sending)."""
        self.pending -= count

    def seal(self) -> None:
        """Processing of the batch is over: no more outputs will be added."""
        self.sealed = True

    def on_delivery(self, source: Any, err: Any, msg: Any) -> None:
        """librdkafka's delivery report for one output of this batch (``source``: its input message)."""
        self.pending -= 1
        if err is not None:
            self.failures.append((source, err, msg))
            if self.registry is not None and len(self.failures) == 1:
                self.registry.append(self)

    @property
    def done(self) -> bool:
        return self.sealed and self.pending == 0 and not self.failures


class OffsetTracker:
    """Per-partition queues of batches and the offsets that are safe to commit."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartitionKey, deque[tuple[Batch, int]]] = {}
        self._batches: deque[Batch] = deque()
        #: the partitions each tracked batch still holds back
        self._owners: dict[Batch, frozenset[TopicPartitionKey]] = {}
        self.in_flight = 0

    def add(self, batch: Batch, next_offsets: dict[TopicPartitionKey, int]) -> None:
        """Track ``batch``; ``next_offsets`` is, per partition, its last offset + 1."""
        for tp, offset in next_offsets.items():
            queue = self._queues.get(tp)
            if queue is None:
                queue = self._queues[tp] = deque()
            queue.append((batch, offset))
        self._batches.append(batch)
        self._owners[batch] = frozenset(next_offsets)
        self.in_flight += batch.size

    def committable(self) -> dict[TopicPartitionKey, int]:
        """Advance over finished batches; return the new commit offset of each partition that moved."""
        out: dict[TopicPartitionKey, int] = {}
        for tp, queue in self._queues.items():
            while queue and queue[0][0].done:
                out[tp] = queue.popleft()[1]
        batches = self._batches
        while batches and batches[0].done:
            done = batches.popleft()
            self._owners.pop(done, None)
            self.in_flight -= done.size
        return out

    def batches(self) -> list[Batch]:
        """The batches not done yet, oldest first."""
        return list(self._batches)

    def pending_for(self, partitions: set[TopicPartitionKey]) -> int:
        """How many batches still hold back one of ``partitions``."""
        return sum(len(self._queues.get(tp, ())) for tp in partitions)

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Stop tracking revoked or lost partitions (their uncommitted work will be redone).

        A batch of those partitions alone is dropped with them, pending or not: work that
        will never finish here (queued parallel records that were dropped, outputs of a
        lost partition) must not keep counting against ``max_in_flight``. A batch that
        also holds another partition stays until it is done.

        Example:
            >>> tracker = OffsetTracker()
            >>> stuck = Batch(5)
            >>> stuck.expect(5); stuck.seal()
            >>> tracker.add(stuck, {("t", 0): 5})
            >>> tracker.forget({("t", 0)})
            >>> tracker.in_flight, len(tracker)
            (0, 0)
        """
        for tp in partitions:
            self._queues.pop(tp, None)
        kept: deque[Batch] = deque()
        for batch in self._batches:
            owners = self._owners.get(batch)
            if owners and owners & partitions:
                owners = self._owners[batch] = owners - partitions
                if not owners:
                    del self._owners[batch]
                    self.in_flight -= batch.size
                    continue
            kept.append(batch)
        self._batches = kept

    def __len__(self) -> int:
        return len(self._batches)
