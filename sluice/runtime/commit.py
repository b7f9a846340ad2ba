"""Committing: the only place that knows whether exactly-once is on.

The poll loop calls the same five hooks whatever the guarantee (Kafka Streams'
``TaskExecutor.commitOffsetsOrTransaction``):

- ``consumed(msgs, next_offsets)``: a batch was run;
- ``refused()``: Kafka refused records of some batches (the record collector's reports);
- ``commit()``: the commit interval is due;
- ``revoke(partitions)`` / ``lost(partitions)``: a rebalance takes partitions away;
- ``shutdown()``: the loop is over.

``AtLeastOnce`` commits per partition the offsets whose outputs (and every earlier
one) were acknowledged. ``Transactional`` commits outputs, changelogs, dead letters and
offsets in one Kafka transaction; after an abort or a commit whose outcome is unknown
it re-creates the producer (a new epoch, ``init_transactions``) and redoes the
records from the last committed position, with the state that position had.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from sluice.errors import DeliveryError, SluiceError
from sluice.kafka.calls import error_text
from sluice.runtime.collector import classify, too_large
from sluice.runtime.tracker import Batch, OffsetTracker, TopicPartitionKey
from sluice.runtime.transactions import TransactionAborted, Transactions, TransactionUnknown

if TYPE_CHECKING:
    from sluice.runtime.runner import Runner

__all__ = ["AtLeastOnce", "Committer", "Transactional"]

logger = logging.getLogger(__name__)


class Committer:
    """The commit hooks of the poll loop (see the module docstring)."""

    exactly_once = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def screen(self, msgs: list[Any], batch: Batch) -> list[Any]:
        """The consumed records to run (exactly-once dead-letters some on a redo)."""
        return msgs

    def consumed(self, msgs: list[Any], next_offsets: dict[TopicPartitionKey, int]) -> None:
        """A batch of ``msgs`` was run; ``next_offsets``: per partition, its last offset + 1."""

    def refused(self) -> None:
        """Records of some batches were refused by Kafka: dispose of them."""
        raise NotImplementedError

    def commit(self) -> bool:
        """Commit what is committable now; False when nothing could be (an abort, a failure)."""
        raise NotImplementedError

    def revoke(self, partitions: set[TopicPartitionKey]) -> bool:
        """Commit what ``partitions`` completed before they go; True when it all is committed."""
        raise NotImplementedError

    def lost(self, partitions: set[TopicPartitionKey]) -> None:
        """``partitions`` are gone without a chance to commit (already released by the runner)."""

    def shutdown(self) -> bool:
        """Commit what is complete; True when every processed record is committed."""
        raise NotImplementedError


class AtLeastOnce(Committer):
    """Contiguous offsets per partition, once every output before them is acknowledged."""

    def refused(self) -> None:
        self.runner.refusals.dispose()

    def commit(self) -> bool:
        runner = self.runner
        if runner.executor is not None:
            runner.executor.flush_state()  # acknowledged by a later commit
        self.send(asynchronous=True)
        return True

    def revoke(self, partitions: set[TopicPartitionKey]) -> bool:
        runner = self.runner
        if runner.executor is not None:
            runner.executor.flush_state()
        runner.drain(partitions, runner.options.revoke_timeout)
        self.send(asynchronous=False)
        return not runner.tracker.pending_for(partitions)

    def shutdown(self) -> bool:
        runner = self.runner
        clean = True
        if runner.executor is not None and runner.fatal is None:
            runner.executor.flush_state()
        if runner.dispatcher is not None:
            if runner.fatal is None:
                runner.drain(set(runner.parts.assigned), runner.options.shutdown_timeout)
            runner.dispatcher.stop()
        runner.close_sinks()
        if runner.producer is not None:
            remaining = runner.producer.flush(runner.options.shutdown_timeout)
            if remaining:
                clean = False
                logger.error(
                    "%s: %d outputs not acknowledged within %.0fs; their source offsets are not committed",
                    runner.name,
                    remaining,
                    runner.options.shutdown_timeout,
                )
        if runner.consumer is not None:
            # what is complete is committed even after a fatal error: the failed batch never is
            runner.collect()
            self.send(asynchronous=False)
            runner.close_consumer()
        in_flight = runner.tracker.in_flight
        runner.close_stores(None, clean=clean and in_flight == 0 and runner.fatal is None)
        return clean and in_flight == 0

    def send(self, asynchronous: bool) -> None:
        """Commit every assigned partition whose committable offset is not confirmed yet.

        An offset stays pending until the broker confirms it (``on_commit`` or the
        synchronous result), so a commit refused during a rebalance is sent again at the
        next interval even when no new record arrives.
        """
        runner = self.runner
        parts = runner.parts
        if not parts.to_commit or runner.consumer is None:
            return
        committed = runner.stats.committed
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in parts.to_commit.items()
            if (t, p) in parts.assigned and committed.get((t, p), -1) < o
        ]
        if not offsets:
            return
        try:
            result = runner.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            # still pending: sent again at the next commit; a rebalance may redo the records (at-least-once)
            logger.warning("%s: commit failed: %s", runner.name, error_text(exc))
            return
        runner.stats.commits += 1
        if not asynchronous and result:
            for tp in result:
                if tp.error is None:
                    self.confirm(tp)

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` callback (asynchronous commits)."""
        if err is not None:
            logger.warning("%s: offset commit failed: %s", self.runner.name, err.str())
            return
        for tp in partitions:
            if tp.error is None:
                self.confirm(tp)

    def confirm(self, tp: TopicPartition) -> None:
        key = (tp.topic, tp.partition)
        self.runner.stats.committed[key] = tp.offset
        to_commit = self.runner.parts.to_commit
        if to_commit.get(key, -1) <= tp.offset:
            to_commit.pop(key, None)


class Transactional(Committer):
    """Kafka transactions: outputs, changelogs, dead letters and offsets visible all at once, or never."""

    exactly_once = True

    def __init__(self, runner: Runner, make_producer: Any) -> None:
        super().__init__(runner)
        #: builds a new transactional producer with the same transactional.id (a new epoch)
        self._make_producer = make_producer
        assert runner.producer is not None
        self.txn = Transactions(runner.producer, runner.options.shutdown_timeout)
        #: consumed records (topic, partition, offset) whose output Kafka refused as such, with the error
        self.poison: dict[tuple[str, int, int], tuple[KafkaError, str]] = {}
        self.renewals = 0  # producers re-created after an abort or an unknown outcome
        self.undone = 0  # rewinds that took back the stores' writes since the last commit
        self.restored = 0  # rewinds that restored the stores from the changelog

    def start(self) -> None:
        self.txn.start()

    def consumed(self, msgs: list[Any], next_offsets: dict[TopicPartitionKey, int]) -> None:
        parts = self.runner.parts
        start = parts.txn_start
        for m in msgs:  # where each partition's part of the open transaction starts
            start.setdefault((m.topic(), m.partition()), m.offset())
        parts.positions.update(next_offsets)

    def refused(self) -> None:
        """A record of the open transaction was refused; the transaction cannot commit.

        A refusal of the moment (an outage) aborts it and redoes its records from the last
        committed position. A refusal of a record as such (too large, invalid) would meet
        the same answer on every redo: the transaction is aborted, and on the redo the
        consumed record whose output was refused goes to the dead-letter topic instead
        (inside the transaction). Anything else stops the app, with nothing past the last
        commit visible to read_committed readers.
        """
        runner = self.runner
        if runner.producer is not None:
            # a failed transaction fails every later produce at once ("erroneous state"): the
            # refusal that caused it may still be on its way back; it decides what to redo
            runner.producer.flush(runner.options.shutdown_timeout)
        refused = [f for batch in runner.failed_batches for f in batch.failures]
        runner.failed_batches.clear()
        if not refused:
            return
        if self._note_poison(refused):
            return
        _source, err, out = refused[0]
        self.abort(f"Kafka refused an output to {out.topic()!r} ({err.str()})")

    def _note_poison(self, refused: list[tuple[Any, Any, Any]]) -> bool:
        """Remember the consumed records whose output Kafka refused as such; True when the app must stop.

        A record refused only because a larger one shared its produce request is not
        poison: it is simply redone.
        """
        runner = self.runner
        assert runner.refusals is not None
        for source, err, out in refused:
            kind = classify(err)
            if kind == "environmental" or (too_large(err) and runner.refusals.fits(source, out)):
                continue
            where = _consumed_at(source)
            if kind == "record" and where is not None and out is not None:
                self.poison[where] = (err, out.topic())
                continue
            topic = out.topic() if out is not None else "?"
            runner.fatal = SluiceError(
                f"Kafka refused an output to {topic!r}: {err.str()}; exactly-once aborts the transaction "
                "and stops (nothing after the last committed transaction is visible to read_committed readers)"
            )
            return True
        return False

    def screen(self, msgs: list[Any], batch: Batch) -> list[Any]:
        """The records to run; those whose output Kafka refused as such go to the dead-letter topic."""
        if not self.poison:
            return msgs
        runner = self.runner
        assert runner.refusals is not None and runner.executor is not None
        kept = []
        for m in msgs:
            hit = self.poison.pop((m.topic(), m.partition(), m.offset()), None)
            if hit is None:
                kept.append(m)
                continue
            err, topic = hit
            step, policy = runner.executor.emitter_for(topic)
            exc = DeliveryError(f"Kafka refused the output to {topic!r}: {err.str()}")
            router = runner.refusals.router
            router.dispose("produce", step, policy or router.policy, m, exc, 1, batch, park=False)
        return kept

    def commit(self) -> bool:
        """Commit the open transaction with the consumed positions; on an abortable error, redo it."""
        runner = self.runner
        parts = runner.parts
        if not parts.txn_start:
            return True  # nothing consumed since the last commit
        assert runner.consumer is not None and runner.executor is not None
        runner.executor.flush_state()
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in parts.positions.items() if (t, p) in parts.txn_start
        ]
        try:
            self.txn.commit(offsets, runner.consumer.consumer_group_metadata())
        except TransactionAborted as exc:
            refused = [f for batch in runner.failed_batches for f in batch.failures]
            if refused and self._note_poison(refused):
                return False
            self.rewind(f"the transaction was aborted: {exc}")
            return False
        except TransactionUnknown as exc:
            # committed or not, nobody can say: a new producer ends it either way, and the
            # records are redone from what the group coordinator holds as committed
            self.rewind(f"the transaction's outcome is unknown ({exc})", from_coordinator=True)
            return False
        except SluiceError as exc:
            runner.fatal = exc
            return False
        parts.txn_start.clear()
        self._track_changes()
        runner.stats.commits += 1
        committed = runner.stats.committed
        for tp in offsets:
            committed[(tp.topic, tp.partition)] = tp.offset
        return True

    def revoke(self, partitions: set[TopicPartitionKey]) -> bool:
        return self.runner.fatal is None and self.commit()

    def lost(self, partitions: set[TopicPartitionKey]) -> None:
        if self.runner.fatal is None:
            # the open transaction holds their records; another worker redoes them: drop it all
            self.abort("partitions lost")

    def shutdown(self) -> bool:
        runner = self.runner
        clean = True
        if runner.fatal is None and self.txn.open:
            clean = self.commit()
        elif self.txn.open:
            try:
                self.txn.abort()
            except SluiceError as exc:
                logger.warning("%s: %s", runner.name, exc)
        runner.close_stores(None, clean=clean and runner.fatal is None)
        runner.close_consumer()
        runner.close_sinks()
        return clean and runner.fatal is None

    def abort(self, why: str) -> None:
        try:
            self.txn.abort()
        except SluiceError as exc:
            logger.warning("%s: %s; re-creating the producer", self.runner.name, exc)
            self.rewind(why, from_coordinator=True)
            return
        self.rewind(why)

    def rewind(self, why: str, from_coordinator: bool = False) -> None:
        """After an abort: back to where the transaction began, with the state it began with.

        The producer is re-created first (``init_transactions`` bumps its epoch): the
        defence against a delayed commit or abort of the old epoch landing on a new
        transaction (the aborted-read and torn-transaction anomalies of Kafka's protocol).
        ``from_coordinator``: where the transaction began is not known for sure (an
        unknown outcome): seek to the offsets the group coordinator has committed.
        """
        runner = self.runner
        assert runner.consumer is not None and runner.executor is not None
        logger.warning("%s: %s; redoing its records from the last committed position", runner.name, why)
        for node in runner.executor.aggregates:
            node.discard_buffer()
        # the aborted batches' purged outputs report errors: they no longer count for anything
        for batch in runner.tracker.batches():
            batch.registry = None
        runner.failed_batches.clear()
        runner.tracker = OffsetTracker()
        if not self._renew_producer():
            return
        parts = runner.parts
        starts = dict(parts.txn_start)
        if from_coordinator:
            starts = self._committed_positions() or {}
            if runner.fatal is not None:
                return
        stores = [store for node in runner.executor.aggregates for store in node.stores.values()]
        # a table cannot be undone (its reader is ahead): reopened, it is read again from its topic
        if not from_coordinator and all(store.undoable for store in stores) and not runner.executor.tables:
            for store in stores:  # back to the last commit: only the keys written since
                store.undo()
            self.undone += 1
        else:
            # the outcome is unknown (the transaction may have committed), or a store opened
            # after the last commit: the committed changelog is the truth
            assigned = [TopicPartition(t, p) for t, p in parts.assigned]
            runner.close_stores(None, clean=False)
            try:
                runner.open_stores(assigned)
            except SluiceError as exc:
                runner.fatal = exc
                return
            self.restored += 1
        for (t, p), start in starts.items():
            if (t, p) in parts.assigned:
                runner.consumer.seek(TopicPartition(t, p, start))
                parts.positions[(t, p)] = start
        parts.txn_start.clear()
        self._track_changes()
        self.txn.begin()

    def _track_changes(self) -> None:
        """The stores' states are committed: what is written from now on can be undone by an abort."""
        executor = self.runner.executor
        for node in executor.aggregates if executor is not None else ():
            for store in node.stores.values():
                store.start_changes()

    def _renew_producer(self) -> bool:
        runner = self.runner
        try:
            producer: Producer = self._make_producer()
            txn = Transactions(producer, runner.options.shutdown_timeout)
            txn.start_without_begin()
        except SluiceError as exc:
            runner.fatal = exc
            return False
        old, self.txn = self.txn, txn
        runner.replace_producer(producer)
        old.close()
        self.renewals += 1
        return True

    def _committed_positions(self) -> dict[TopicPartitionKey, int] | None:
        runner = self.runner
        assert runner.consumer is not None
        parts = [TopicPartition(t, p) for t, p in runner.parts.assigned]
        if not parts:
            return {}
        try:
            committed = runner.consumer.committed(parts, timeout=runner.options.shutdown_timeout)
        except KafkaException as exc:
            runner.fatal = SluiceError(
                f"reading the committed offsets after a transaction of unknown outcome failed: {exc}; "
                "stopping (a restart redoes the records from the committed position)"
            )
            return None
        out: dict[TopicPartitionKey, int] = {}
        for tp in committed:
            if tp.error is None and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
            elif (tp.topic, tp.partition) in runner.parts.txn_start:
                out[(tp.topic, tp.partition)] = runner.parts.txn_start[(tp.topic, tp.partition)]
        return out


def _consumed_at(source: object) -> tuple[str, int, int] | None:
    """Where the consumed record behind a refused output is (None for what is not one)."""
    try:
        return (source.topic(), source.partition(), source.offset())  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None
