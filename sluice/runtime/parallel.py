"""Parallel processing inside partitions, keeping per-key (or per-partition) order.

With ``concurrency=N`` each consumed record becomes a unit of work run by one of N
worker threads. Records are grouped into *ordering units*: with ``ordering="key"``
one unit per partition and key, ``"partition"`` one per partition, ``"unordered"``
one per record. A unit's records run strictly one after the other in offset order;
different units run in parallel. A worker that finishes a record goes on with the
next record of the same unit, or takes the next waiting unit, without a round trip
through the poll loop.

Each consumed batch is split per partition into ``LockedBatch`` es that count one
pending "ack" per record (its processing) plus one per output; a partition's offsets
are committed up to its lowest unfinished record, so one slow record holds back only
its own partition's commit point. The records waiting in units count as in flight,
so ``max_in_flight`` bounds them and the poll loop pauses partitions when full.
This is the model of Confluent's Parallel Consumer on the JVM.

Example:
    >>> unit_of(("t", 0), b"user-1", "key"), unit_of(("t", 0), b"user-1", "partition")
    (('t', 0, b'user-1'), ('t', 0))
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Hashable
from typing import Any, Literal

from sluice.runtime.executor import Executor
from sluice.runtime.tracker import Batch, TopicPartitionKey

__all__ = ["LockedBatch", "Ordering", "ParallelDispatcher", "unit_of"]

logger = logging.getLogger(__name__)

Ordering = Literal["key", "partition", "unordered"]
ORDERINGS: tuple[str, ...] = ("key", "partition", "unordered")
_unique = itertools.count()


def unit_of(tp: TopicPartitionKey, key: Any, ordering: str) -> Hashable:
    """The ordering unit of a record: records of one unit are processed in offset order.

    A record without a key (or a key that cannot be hashed) has no order to keep
    relative to others under ``"key"``.
    """
    if ordering == "partition":
        return tp
    if ordering == "key" and key is not None:
        try:
            hash(key)
            return (tp[0], tp[1], key)
        except TypeError:
            pass
    return next(_unique)


class LockedBatch(Batch):
    """A batch whose counters are updated from worker threads and delivery callbacks."""

    __slots__ = ("lock",)

    def __init__(self, size: int, registry: list[Batch] | None = None) -> None:
        super().__init__(size, registry)
        self.lock = threading.Lock()

    def expect(self, count: int) -> None:
        with self.lock:
            self.pending += count

    def settle(self, count: int = 1) -> None:
        with self.lock:
            self.pending -= count

    def on_delivery(self, source: Any, err: Any, msg: Any) -> None:
        with self.lock:
            self.pending -= 1
            if err is not None:
                self.failures.append((source, err, msg))
                first = len(self.failures) == 1
            else:
                first = False
        if first and self.registry is not None:
            self.registry.append(self)


class ParallelDispatcher:
    """N worker threads running records by ordering unit."""

    def __init__(self, executor: Executor, concurrency: int, ordering: str, registry: list[Batch]) -> None:
        self.executor = executor
        self.concurrency = concurrency
        self.ordering = ordering
        self.registry = registry
        self.fatal: BaseException | None = None
        self._units: dict[Hashable, deque[tuple[Any, Any, LockedBatch, TopicPartitionKey]]] = {}
        self._ready: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._worker, name=f"sluice-worker-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ poll thread
    def submit(self, msgs: list[Any]) -> list[tuple[Batch, dict[TopicPartitionKey, int]]]:
        """Queue ``msgs`` (one consumed batch); return the per-partition batches to track."""
        by_partition: dict[TopicPartitionKey, list[Any]] = {}
        for m in msgs:
            tp = (m.topic(), m.partition())
            group = by_partition.get(tp)
            if group is None:
                group = by_partition[tp] = []
            group.append(m)
        tracked: list[tuple[Batch, dict[TopicPartitionKey, int]]] = []
        ordering = self.ordering
        for tp, group in by_partition.items():
            batch = LockedBatch(len(group), self.registry)
            plan = self.executor.plan_for(tp[0])
            records = plan.records(group, batch)  # records that cannot be deserialized are disposed of here
            batch.expect(len(records))
            with self._cond:
                for record in records:
                    unit = unit_of(tp, record[1], ordering)
                    queue = self._units.get(unit)
                    if queue is None:
                        queue = self._units[unit] = deque()
                    queue.append((plan, record, batch, tp))
                    if unit not in self._running and unit not in self._queued:
                        self._queued.add(unit)
                        self._ready.append(unit)
                self._cond.notify(len(records))
            batch.seal()
            tracked.append((batch, {tp: group[-1].offset() + 1}))
        return tracked

    def drop(self, partitions: set[TopicPartitionKey]) -> int:
        """Forget the queued (not yet started) records of revoked partitions; return how many."""
        dropped = 0
        with self._cond:
            for unit, queue in list(self._units.items()):
                kept = deque(item for item in queue if item[3] not in partitions)
                dropped += len(queue) - len(kept)
                if kept or unit in self._running:
                    # a running unit keeps its (maybe empty) queue: its worker takes the next record from it
                    self._units[unit] = kept
                else:
                    del self._units[unit]
                    self._queued.discard(unit)
            self._ready = deque(u for u in self._ready if u in self._units)
        if dropped:
            logger.info("dropped %d queued records of revoked partitions (not committed)", dropped)
        return dropped

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._busy and not self._ready

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout / max(1, len(self._threads)))

    # ------------------------------------------------------------------ workers
    def _take(self) -> tuple[Hashable, tuple] | None:
        with self._cond:
            while not self._ready and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            unit = self._ready.popleft()
            self._queued.discard(unit)
            self._running.add(unit)
            self._busy += 1
            return unit, self._units[unit].popleft()

    def _next_of(self, unit: Hashable) -> tuple | None:
        with self._cond:
            queue = self._units.get(unit)
            if queue:
                return queue.popleft()
            self._running.discard(unit)
            self._units.pop(unit, None)
            self._busy -= 1
            return None

    def _worker(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            unit, item = taken
            while item is not None:
                plan, record, batch, _tp = item
                try:
                    self.executor.run_record(plan, record, batch)
                except BaseException as exc:  # noqa: BLE001 - the poll loop stops the app on it
                    # the record's batch stays pending: its offset is never committed
                    self.fatal = exc
                else:
                    batch.settle()
                if self._stopped:
                    self._next_of(unit)
                    return
                item = self._next_of(unit)
