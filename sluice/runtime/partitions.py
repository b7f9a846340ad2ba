"""What the runtime holds per partition, and the one place it is forgotten.

Revoke, lost and shutdown differ only in what happens *before* a partition is
released (drain and commit, or nothing); what is released is the same, so it is
written once: ``PartitionState.forget``. A structure keyed by partition that is not
here (in-flight batches in the tracker, queued parallel work, stores) is released by
the runner's ``_release`` next to the call of ``forget``.

Example:
    >>> parts = PartitionState()
    >>> parts.assign([("t", 0), ("t", 1)])
    >>> parts.delayed[("t", 0)] = 1e12            # a retry-topic partition waiting for a due record
    >>> parts.to_commit[("t", 0)] = 42
    >>> parts.forget({("t", 0)})
    >>> sorted(parts.assigned), parts.delayed, parts.to_commit
    ([('t', 1)], {}, {})
    >>> parts.assign([("t", 2)])
    >>> parts.restore([("t", 2)])                 # its state store restores: held out of active()
    >>> sorted(parts.active()), parts.unpaused
    ([('t', 1)], {('t', 2)})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.runtime.tracker import TopicPartitionKey

__all__ = ["PartitionState"]


@dataclass
class PartitionState:
    """Per-partition bookkeeping of one runner (touched by the poll thread only)."""

    #: partitions this process owns now
    assigned: set[TopicPartitionKey] = field(default_factory=set)
    #: every assigned partition is paused (at ``max_in_flight``, or to serve the poll interval)
    paused: bool = False
    #: retry-topic partitions paused until their next record is due (epoch seconds)
    delayed: dict[TopicPartitionKey, float] = field(default_factory=dict)
    #: committable offsets not confirmed by the broker yet
    to_commit: dict[TopicPartitionKey, int] = field(default_factory=dict)
    #: exactly-once: the next offset to consume, and where the open transaction began
    positions: dict[TopicPartitionKey, int] = field(default_factory=dict)
    txn_start: dict[TopicPartitionKey, int] = field(default_factory=dict)
    #: partitions whose state stores are restoring: paused until complete; the value is the
    #: offset to fetch from again (of a record consumed before the pause, dropped), else None
    restoring: dict[TopicPartitionKey, int | None] = field(default_factory=dict)
    #: restoring partitions the loop has not paused yet (assigned in a callback: paused after it)
    unpaused: set[TopicPartitionKey] = field(default_factory=set)

    def assign(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Take ``partitions``; whatever a previous ownership of them left is forgotten first."""
        fresh = set(partitions)
        self.forget(fresh)
        self.assigned |= fresh

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Release every per-partition structure of ``partitions`` (revoked, lost or shut down)."""
        self.assigned -= partitions
        for tp in partitions:
            self.delayed.pop(tp, None)
            self.to_commit.pop(tp, None)
            self.positions.pop(tp, None)
            self.txn_start.pop(tp, None)
            self.restoring.pop(tp, None)
        self.unpaused -= partitions

    def restore(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Hold ``partitions`` (assigned) until their state stores are restored; the loop pauses them."""
        for tp in partitions:
            self.restoring.setdefault(tp, None)
            self.unpaused.add(tp)

    def active(self) -> list[TopicPartitionKey]:
        """Assigned partitions not waiting: for a parked record to be due, or for their state to be restored."""
        return [tp for tp in self.assigned if tp not in self.delayed and tp not in self.restoring]
