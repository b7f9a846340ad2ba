"""State restore in the poll loop: the source partitions of a restoring store wait, paused, and the rest runs.

A rebalance callback only marks the stateful partitions it assigns as restoring
(``PartitionState.restore``); nothing slow runs in it. Right after ``consume`` returns
the loop hands its records to ``Restorer.hold``, which opens the new partitions'
stores, pauses those with changelog records to replay (here, not in the callback: an
assign and a pause in quick succession can lose the assign offset, librdkafka issue
#2190; a store already complete is never paused, and resumed if a keep-alive poll
assigned it paused), and drops any record ``consume``
returned for a partition still restoring: it is sought back to it when resumed.
Each loop iteration then calls ``Restorer.step``: one slice of changelog replay
(``RESTORE_SLICE_RECORDS`` or ``RESTORE_SLICE_SECONDS``), the remaining records
reported to ``/readyz`` and ``sluice_state_restore_remaining``; a source partition
whose stores are all complete is resumed (unless the loop is paused at its in-flight
cap, or the partition waits for a parked record).

Example:
    >>> from sluice.runtime.partitions import PartitionState
    >>> parts = PartitionState()
    >>> restorer = Restorer([], parts, admin=None, consumer_config={}, timeout=20.0)
    >>> restorer.busy, restorer.hold(None, ["a record"])
    (False, ['a record'])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from sluice.errors import SluiceError
from sluice.kafka.admin import TopicAdmin
from sluice.runtime import stateful
from sluice.runtime.partitions import PartitionState
from sluice.runtime.stateful import AggregateNode, Restoration
from sluice.runtime.tracker import TopicPartitionKey

__all__ = ["Restorer"]

logger = logging.getLogger(__name__)


class Restorer:
    """The state restores of one runner: one ``Restoration`` per aggregation with stores to restore.

    Args:
        aggregates: the graph's aggregations.
        parts: the runner's partition state (``restoring``, ``unpaused``, ``paused``, ``delayed``).
        admin: reads changelog offsets.
        consumer_config: the restore consumers' properties.
        timeout: seconds without progress after which a restore fails.
        progress: ``(store, partition, records left)``, after each slice (0: done).
    """

    def __init__(
        self,
        aggregates: list[AggregateNode],
        parts: PartitionState,
        admin: TopicAdmin | None,
        consumer_config: dict[str, Any],
        timeout: float,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._aggregates = aggregates
        self._parts = parts
        self._admin = admin
        self._config = consumer_config
        self._timeout = timeout
        self._progress = progress
        self._restorations: dict[AggregateNode, Restoration] = {}
        #: the source topics of the aggregations: their partitions have stores
        self.topics = {t for node in aggregates for t in node.input_topics}

    @property
    def busy(self) -> bool:
        """Some partition waits for its state (the loop then polls without waiting)."""
        return bool(self._parts.restoring)

    def hold(self, consumer: Consumer | None, msgs: list) -> list:
        """Pause the partitions newly restoring, start their restores; return ``msgs`` less their records.

        Raises:
            SluiceError: a store could not be opened, or the changelog's offsets read.
        """
        parts = self._parts
        if parts.unpaused:
            new = sorted(parts.unpaused)
            parts.unpaused.clear()
            self._begin(new)
            # a store with nothing to replay (a checkpoint at the changelog's end, a new app) is
            # open already: its partition is never paused
            wait = [tp for tp in new if self._waits(tp)]
            ready = [tp for tp in new if tp not in wait]
            for tp in ready:
                del parts.restoring[tp]
            if ready and not parts.paused:
                # assigned in a poll with every partition paused (_poll_paused), it was paused in
                # _on_assign and that poll resumed only the partitions not restoring: resume it
                # here or it is never fetched (a resume of a partition not paused does nothing)
                assert consumer is not None
                consumer.resume([TopicPartition(t, p) for t, p in ready if (t, p) not in parts.delayed])
            if wait:
                assert consumer is not None
                consumer.pause([TopicPartition(t, p) for t, p in wait])
        if not msgs or not parts.restoring:
            return msgs
        restoring = parts.restoring
        kept = []
        for m in msgs:
            tp = (m.topic(), m.partition())
            if tp in restoring and m.error() is None:
                if restoring[tp] is None:
                    restoring[tp] = m.offset()  # the first: consumed in offset order
                continue
            kept.append(m)
        if len(kept) != len(msgs):
            logger.debug(
                "%d consumed records of partitions restoring their state held back", len(msgs) - len(kept)
            )
        return kept

    def step(self, consumer: Consumer | None, deadline: float | None = None) -> list[TopicPartitionKey]:
        """Replay one slice of changelog; resume the partitions whose state is complete; return them.

        ``deadline``: when to stop (``time.monotonic()``); by default ``RESTORE_SLICE_SECONDS``
        from now, shared between the aggregations restoring.

        Raises:
            SluiceError: reading the changelog failed or made no progress (``KafkaUnavailableError``).
        """
        # each aggregation restoring gets its share of the slice: none waits for another to finish
        share = stateful.RESTORE_SLICE_SECONDS / max(1, len(self._restorations))
        for node, restoration in list(self._restorations.items()):
            try:
                restoration.step(deadline if deadline is not None else time.monotonic() + share)
            except SluiceError:
                raise
            except Exception as exc:  # a store that cannot be written: stop, say why
                msg = f"restoring the state store {node.step.store!r} from {node.changelog} failed: {exc!r}"
                raise SluiceError(msg) from exc
            if not restoration.pending:
                del self._restorations[node]
                restoration.close()
        return self._resume(consumer)

    def cancel(self, partitions: set[TopicPartitionKey]) -> None:
        """Stop the restores of ``partitions`` (revoked or lost); what they restored stays checkpointed."""
        for node, restoration in list(self._restorations.items()):
            restoration.cancel({p for t, p in partitions if t in node.input_topics})
            if not restoration.pending:
                del self._restorations[node]
                restoration.close()

    def close(self) -> None:
        """Stop every restore (the app stops)."""
        restorations, self._restorations = list(self._restorations.values()), {}
        for restoration in restorations:
            try:
                restoration.close()
            except Exception as exc:  # noqa: BLE001 - the other stores must still be closed
                logger.warning("closing the state restore of %s failed: %s", restoration.node.changelog, exc)

    def restoring(self, node: AggregateNode, partition: int) -> bool:
        """Whether ``node``'s store of ``partition`` is being restored here."""
        restoration = self._restorations.get(node)
        return restoration is not None and partition in restoration.pending

    def _begin(self, partitions: list[TopicPartitionKey]) -> None:
        for node in self._aggregates:
            mine = sorted({p for t, p in partitions if t in node.input_topics})
            if not mine:
                continue
            restoration = self._restorations.get(node)
            if restoration is None:
                progress = None
                if self._progress is not None:
                    report, store = self._progress, node.step.store
                    progress = lambda p, n, report=report, store=store: report(store, p, n)  # noqa: E731
                assert self._admin is not None
                restoration = Restoration(node, self._admin, self._config, self._timeout, progress)
                self._restorations[node] = restoration
            try:
                restoration.add(mine)
            except SluiceError:
                raise
            except Exception as exc:  # e.g. a store that cannot be opened: stop, say why
                where = ", ".join(f"{node.step.store}[{p}]" for p in mine)
                msg = f"opening the state stores {where} failed: {exc!r}"
                raise SluiceError(msg) from exc
            if not restoration.pending:  # every store was complete: nothing to read
                del self._restorations[node]
                restoration.close()

    def _resume(self, consumer: Consumer | None) -> list[TopicPartitionKey]:
        parts = self._parts
        done = [tp for tp in parts.restoring if tp not in parts.unpaused and not self._waits(tp)]
        if not done:
            return done
        assert consumer is not None
        resume = []
        for tp in done:
            again = parts.restoring.pop(tp)
            if again is not None:
                # position it before resuming: fetching starts there, not after the records dropped
                try:
                    consumer.seek(TopicPartition(*tp, again))
                except KafkaException as exc:
                    msg = (
                        f"{tp[0]}[{tp[1]}]: seeking back to offset {again} after its state restore failed "
                        f"({exc}); stopping without committing past it (a restart consumes it again)"
                    )
                    raise SluiceError(msg) from exc
            if not parts.paused and tp not in parts.delayed:
                resume.append(TopicPartition(*tp))
        if resume:
            consumer.resume(resume)
        logger.info("state restored: %s resumed", ", ".join(f"{t}[{p}]" for t, p in sorted(done)))
        return done

    def _waits(self, tp: TopicPartitionKey) -> bool:
        """Whether source partition ``tp`` feeds a store still being restored."""
        topic, partition = tp
        return any(self.restoring(n, partition) for n in self._aggregates if topic in n.input_topics)
