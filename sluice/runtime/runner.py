"""The consume -> process -> produce -> commit loop, at-least-once.

One thread owns the consumer and the producer. Each iteration consumes a batch,
runs it through the graph, serves delivery reports, and every ``commit_interval``
commits per partition the offsets whose outputs (and all earlier ones) were
acknowledged. When more than ``max_in_flight`` records await acknowledgement the
partitions are paused while the loop keeps polling (so the consumer stays in its
group), and resumed below half the cap. On revoke, the revoked partitions' pending
outputs are awaited (bounded by ``revoke_timeout``) and their offsets committed
before they are released. On stop, fetching stops, outputs are flushed, offsets
committed, and the consumer leaves the group.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sluice.dataflow import MapBatch, Sink, Source, Step, Stream, To
from sluice.dataflow.steps import Aggregate
from sluice.errors import ConfigError, SluiceError
from sluice.errors.policy import DEFAULT_POLICY, ErrorPolicy
from sluice.kafka.admin import TopicAdmin, TopicInfo
from sluice.kafka.config import ClientSettings
from sluice.metrics._runtime import RuntimeMetrics, start_metrics
from sluice.runtime.executor import Executor
from sluice.runtime.failures import FailureRouter
from sluice.runtime.parallel import ParallelDispatcher
from sluice.runtime.retry_topics import parse_retry_headers, retry_topic
from sluice.runtime.stateful import changelog_topic
from sluice.runtime.tracker import Batch, OffsetTracker, TopicPartitionKey, next_offsets
from sluice.runtime.transactions import TransactionAborted, Transactions, transactional_id
from sluice.state.slots import Slot, claim_slot

__all__ = ["RunStats", "Runner", "RuntimeOptions"]

logger = logging.getLogger(__name__)
_S = TypeVar("_S", bound=Step)
_librdkafka_logger = logging.getLogger("sluice.kafka.librdkafka")
_COMPACTED = {"cleanup.policy": "compact"}
# records keep their event time: with time retention, a backlog of old events would be deleted
# before it is read (Kafka Streams makes the same choice for its repartition topics)
_REPARTITION = {"retention.ms": "-1", "segment.bytes": str(64 << 20)}
_PURGE_INTERVAL = 30.0  # seconds between deletions of consumed repartition records
_TRANSACTION_TIMEOUT_MS = 30_000  # an abandoned transaction blocks read_committed readers this long at most


@dataclass(frozen=True)
class RuntimeOptions:
    """Timing and memory knobs of the loop (seconds and record counts)."""

    commit_interval: float = 1.0
    max_in_flight: int = 20_000
    progress_interval: float = 10.0
    shutdown_timeout: float = 30.0
    revoke_timeout: float = 20.0
    poll_timeout: float = 0.1
    concurrency: int = 1
    ordering: str = "key"
    exactly_once: bool = False


@dataclass
class RunStats:
    """Counters of one run, readable while it runs (``App.stats``)."""

    records_in: int = 0
    records_out: int = 0
    batches: int = 0
    commits: int = 0
    rebalances: int = 0
    paused: int = 0
    committed: dict[TopicPartitionKey, int] | None = None
    failures: FailureRouter | None = None

    @property
    def dead_letters(self) -> int:
        """Records sent to a dead-letter topic so far."""
        return sum(self.failures.dead_letters.values()) if self.failures else 0

    @property
    def skipped(self) -> int:
        """Failed records skipped (``on_error(skip=True)``) so far."""
        return sum(self.failures.skipped.values()) if self.failures else 0


class Runner:
    """Runs the dataflow of ``sources`` until ``stop()`` or a fatal error."""

    def __init__(
        self,
        name: str,
        settings: ClientSettings,
        sources: list[Source],
        options: RuntimeOptions,
        policy: ErrorPolicy = DEFAULT_POLICY,
        metrics_port: int | None = None,
        state_dir: Path = Path(".sluice-state"),
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.policy = policy
        self.settings = settings
        self.sources = sources
        self.options = options
        self.stats = RunStats(committed={})
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self._assigned: set[TopicPartitionKey] = set()
        self._paused = False
        self._to_commit: dict[TopicPartitionKey, int] = {}
        self._fatal: SluiceError | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._admin = TopicAdmin(settings.admin_config())
        self._topics: dict[str, TopicInfo] = {}
        self._failed_batches: list[Batch] = []
        self._router: FailureRouter | None = None
        self._executor: Executor | None = None
        self._retry_topics: set[str] = set()
        self._dispatcher: ParallelDispatcher | None = None
        self._delayed: dict[TopicPartitionKey, float] = {}
        self._repartition_topics: set[str] = set()
        self._txn: Transactions | None = None
        self._slot: Slot | None = None  # this process's state directory (and transactional id)
        #: exactly-once: per partition, the next offset to consume, and where the open transaction began
        self._positions: dict[TopicPartitionKey, int] = {}
        self._txn_start: dict[TopicPartitionKey, int] = {}
        self._purged: dict[TopicPartitionKey, int] = {}
        #: the one topic consumed, when there is only one (no per-record topic lookups then)
        self._only_topic: str | None = None
        self.ready = threading.Event()
        self.metrics_port = metrics_port
        self.metrics: RuntimeMetrics | None = None

    # ------------------------------------------------------------------ setup
    def _prepare_topics(self) -> list[str]:
        admin = self._admin
        self._check_stateful()
        self._check_exactly_once()
        topics = [t for s in self.sources for t in s.topics]
        infos = admin.require_sources([t for s in self.sources if not s.internal for t in s.topics])
        self._topics = infos
        for source in self.sources:  # an internal source comes after its upstream: its shape is known
            if source.internal:
                assert source.upstream is not None
                self._repartition_topics.add(source.topics[0])
                shape = self._shape_of(source.upstream)
                infos[source.topics[0]] = admin.ensure(source.topics[0], *shape, _REPARTITION)
            partitions, replication = self._shape_of(source)
            for step in _steps_below(source.root, To):
                admin.ensure(step.topic, step.partitions or partitions, step.replication or replication)
            for step in _steps_below(source.root, Aggregate):
                changelog = changelog_topic(self.name, step.store)
                infos[changelog] = admin.ensure(changelog, partitions, replication, _COMPACTED)
                if step.late is not None:
                    admin.ensure(step.late, partitions, replication)
        levels = max((len(p.retry_topics) for p in self._policies()), default=0)
        if levels:
            partitions = max(i.partitions for i in infos.values())
            replication = max(i.replication for i in infos.values())
            for level in range(1, levels + 1):
                name = retry_topic(self.name, level)
                admin.ensure(name, partitions, replication)
                self._retry_topics.add(name)
                topics.append(name)
        return topics

    def _shape_of(self, source: Source) -> tuple[int, int]:
        infos = self._topics
        return (
            max(infos[t].partitions for t in source.topics),
            max(infos[t].replication for t in source.topics),
        )

    def _check_exactly_once(self) -> None:
        if not self.options.exactly_once:
            return
        for source in self.sources:
            for step in _steps_below(source.root, Sink):
                idempotent = step.idempotent
                if idempotent is None:
                    idempotent = bool(getattr(step.fn, "idempotent", False))
                if not idempotent:
                    msg = (
                        f"{step.name}: a sink outside Kafka cannot join a Kafka transaction, so with "
                        "guarantee='exactly_once' a replay after a crash writes its records again; use an "
                        "idempotent sink (sinks.sqlite/postgres(..., key=...): upserts), or sink(fn, "
                        "idempotent=True) if yours is (effectively-once)"
                    )
                    raise ConfigError(msg)
        self._require_offset_order("guarantee='exactly_once'")

    def _check_stateful(self) -> None:
        steps = [s for source in self.sources for s in _steps_below(source.root, Aggregate)]
        if not steps:
            return
        stores = [s.store for s in steps]
        twice = sorted({s for s in stores if stores.count(s) > 1})
        if twice:
            msg = (
                f"two aggregations are named {twice[0]!r}: give each its own name= (it names its state store)"
            )
            raise ConfigError(msg)
        self._require_offset_order("aggregations and windows")

    def _require_offset_order(self, what: str) -> None:
        """Refuse what reorders records: worker threads and retry topics."""
        if self.options.concurrency > 1:
            msg = (
                f"{what}: records are processed on the poll thread, use concurrency=1 "
                "(scale out with more workers: sluice run --workers N)"
            )
            raise ConfigError(msg)
        if any(p.retry_topics for p in self._policies()):
            msg = f"{what}: retry topics reorder records; use retries and a dead-letter topic"
            raise ConfigError(msg)

    def _policies(self) -> list[ErrorPolicy]:
        policies = [self.policy]
        for source in self.sources:
            if source.on_error is not None:
                policies.append(source.on_error)
            policies.extend(s.on_error for s in _steps_below(source.root, Step) if s.on_error is not None)
        return policies

    def _make_clients(self) -> None:
        transactional: dict[str, object] = {}
        consumer_extra: dict[str, object] = {}
        if self.options.exactly_once:
            assert self._slot is not None
            transactional = {
                "transactional.id": transactional_id(self.name, self._slot),
                "transaction.timeout.ms": _TRANSACTION_TIMEOUT_MS,
            }
            consumer_extra = {"isolation.level": "read_committed"}
        self._producer = Producer(
            {
                **self.settings.producer_config(),
                **transactional,
                "logger": _librdkafka_logger,
                "error_cb": self._on_client_error,
            }
        )
        self._consumer = Consumer(
            {
                **self.settings.consumer_config(),
                **consumer_extra,
                "logger": _librdkafka_logger,
                "error_cb": self._on_client_error,
                "on_commit": self._on_commit,
                **(self.metrics.consumer_config() if self.metrics is not None else {}),
            }
        )

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask the loop to stop: it finishes the batch at hand, flushes, commits and leaves the group."""
        self._stop.set()

    def run(self) -> bool:
        """Run until stopped. Returns True when every processed record was committed."""
        self.metrics = start_metrics(self, self.metrics_port)
        try:
            return self._run()
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def _run(self) -> bool:
        topics = self._prepare_topics()
        self._only_topic = topics[0] if len(topics) == 1 else None
        if self.options.exactly_once or any(_steps_below(s.root, Aggregate) for s in self.sources):
            self._slot = claim_slot(self.state_dir)
        try:
            return self._run_claimed(topics)
        finally:
            if self._slot is not None:
                self._slot.release()

    def _run_claimed(self, topics: list[str]) -> bool:
        self._make_clients()
        assert self._consumer is not None and self._producer is not None
        self._router = FailureRouter(
            self.name,
            self.policy,
            self._producer.produce,
            self._producer.poll,
            self._admin,
            self._topic_shape,
        )
        self.stats.failures = self._router
        if self.options.exactly_once:
            self._txn = Transactions(self._producer, self.options.shutdown_timeout)
            self._txn.start()
        executor = self._executor = Executor(
            self.sources,
            self._producer.produce,
            self._producer.poll,
            self._router,
            app=self.name,
            state_dir=self._slot.directory if self._slot is not None else self.state_dir,
        )
        if self.options.concurrency > 1:
            self._dispatcher = ParallelDispatcher(
                executor, self.options.concurrency, self.options.ordering, self._failed_batches
            )
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        logger.info("%s: consuming %s as group %s", self.name, ", ".join(topics), self.settings.group_id)
        clean = False
        thresholds = _freeze_heap(self._batch_shape()[0])
        try:
            self._loop(executor)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            clean = self._shutdown()
        if self._fatal is not None:
            raise self._fatal
        return clean

    def _batch_shape(self) -> tuple[int, float]:
        """Records per consume and its timeout: map_batch steps ask for bigger, timelier batches."""
        max_records, timeout = self.settings.max_poll_records, self.options.poll_timeout
        for source in self.sources:
            for step in _steps_below(source.root, MapBatch):
                max_records = max(max_records, step.max_rows)
                timeout = min(timeout, step.max_wait)
        return max_records, timeout

    def _topic_shape(self, topic: str) -> tuple[int, int]:
        info = self._topics.get(topic)
        return (info.partitions, info.replication) if info else (1, 1)

    # ------------------------------------------------------------------ the loop
    def _loop(self, executor: Executor) -> None:
        consumer, producer, opts = self._consumer, self._producer, self.options
        assert consumer is not None and producer is not None
        max_records, poll_timeout = self._batch_shape()
        stats = self.stats
        metrics = self.metrics
        next_commit = time.monotonic() + opts.commit_interval
        next_purge = time.monotonic() + _PURGE_INTERVAL
        progress = _Progress(self, opts.progress_interval)
        while not self._stop.is_set():
            msgs = consumer.consume(max_records, 0 if self._paused else poll_timeout)
            if self._fatal is not None:
                return
            if msgs:
                good = [m for m in msgs if m.error() is None]
                if len(good) != len(msgs):
                    self._on_message_errors([m for m in msgs if m.error() is not None])
                if good:
                    started = time.perf_counter()
                    try:
                        if self._dispatcher is not None:
                            self._dispatch(executor, good)
                        else:
                            self._process(executor, good)
                    except SluiceError as exc:
                        self._fatal = exc
                        return
                    stats.records_in += len(good)
                    stats.records_out = executor.produced
                    stats.batches += 1
                    if metrics is not None:
                        metrics.on_batch(good, started)
            producer.poll(0.05 if self._paused else 0)
            if self._delayed:
                self._resume_due()
            self._collect()
            if self._fatal is not None:
                return
            self._backpressure()
            now = time.monotonic()
            if metrics is not None:
                metrics.last_loop = now
            if now >= next_commit:
                if self._txn is not None:
                    self._commit_transaction()
                else:
                    executor.flush_state()  # acknowledged by a later commit
                    self._commit(asynchronous=True)
                next_commit = now + opts.commit_interval
            if self._repartition_topics and now >= next_purge:
                self._purge_repartition_topics()
                next_purge = now + _PURGE_INTERVAL
            progress.maybe_log(now)

    def _collect(self) -> None:
        """Dispose of refused outputs, then move newly committable offsets into the pending commit."""
        if self._failed_batches and self._txn is not None:
            # redoing the transaction would meet the same refusal: stop, with nothing past the last commit
            _source, err, out = self._failed_batches[0].failures[0]
            self._failed_batches.clear()
            topic = out.topic() if out is not None else "?"
            self._fatal = SluiceError(
                f"Kafka refused an output to {topic!r}: {err.str()}; exactly-once aborts the transaction "
                "and stops (nothing after the last committed transaction is visible to read_committed readers)"
            )
            return
        if self._failed_batches:
            self._dispose_refused_outputs()
        if self._router is not None and self._router.fatal is not None:
            self._fatal = self._router.fatal
            return
        if self._executor is not None and self._executor.state_failure is not None:
            self._fatal = self._executor.state_failure
            return
        if self._dispatcher is not None and self._dispatcher.fatal is not None:
            exc = self._dispatcher.fatal
            self._fatal = exc if isinstance(exc, SluiceError) else SluiceError(f"a worker failed: {exc!r}")
            return
        ready = self.tracker.committable()
        if ready:
            self._to_commit.update(ready)

    def _commit(self, asynchronous: bool) -> None:
        """Commit every assigned partition whose committable offset is not confirmed yet.

        An offset stays pending until the broker confirms it (``_on_commit`` or the
        synchronous result), so a commit refused during a rebalance is sent again at the
        next interval even when no new record arrives.
        """
        if not self._to_commit:
            return
        assert self._consumer is not None
        committed = self.stats.committed
        offsets = [
            TopicPartition(t, p, o)
            for (t, p), o in self._to_commit.items()
            if (t, p) in self._assigned and committed.get((t, p), -1) < o
        ]
        if not offsets:
            return
        try:
            result = self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            # still pending: sent again at the next commit; a rebalance may redo the records (at-least-once)
            logger.warning("%s: commit failed: %s", self.name, exc.args[0].str() if exc.args else exc)
            return
        self.stats.commits += 1
        if not asynchronous and result:
            for tp in result:
                if tp.error is None:
                    self._confirm(tp)

    def _confirm(self, tp: TopicPartition) -> None:
        key = (tp.topic, tp.partition)
        self.stats.committed[key] = tp.offset
        if self._to_commit.get(key, -1) <= tp.offset:
            self._to_commit.pop(key, None)

    def _process(self, executor: Executor, msgs: list) -> None:
        """Run one consumed batch through the graph on this thread (concurrency=1)."""
        batch = Batch(len(msgs), self._failed_batches)
        assert self._router is not None
        self._router.start_batch()
        if self._retry_topics:
            msgs = self._run_with_parked(executor, msgs, batch)
        else:
            executor.run(msgs, batch)
        batch.seal()
        next_ = next_offsets(msgs, self._only_topic)
        self.tracker.add(batch, next_)
        if self._txn is not None:
            for m in msgs:  # where each partition's part of the open transaction starts
                self._txn_start.setdefault((m.topic(), m.partition()), m.offset())
            self._positions.update(next_)

    def _dispatch(self, executor: Executor, msgs: list) -> None:
        """Hand one consumed batch to the worker threads (concurrency>1)."""
        assert self._dispatcher is not None
        if self._retry_topics:
            parked = [m for m in msgs if m.topic() in self._retry_topics]
            if parked:
                msgs = [m for m in msgs if m.topic() not in self._retry_topics]
                batch = Batch(0, self._failed_batches)
                self._router.start_batch()
                done = self._run_with_parked(executor, parked, batch)
                batch.seal()
                self.tracker.add(batch, {(m.topic(), m.partition()): m.offset() + 1 for m in done})
        for batch, offsets in self._dispatcher.submit(msgs):
            self.tracker.add(batch, offsets)

    # ------------------------------------------------------------------ retry topics
    def _run_with_parked(self, executor: Executor, msgs: list, batch: Batch) -> list:
        """Run source records as a batch and due parked records one by one; return the processed ones."""
        assert self._consumer is not None
        retry_topics = self._retry_topics
        sources = [m for m in msgs if m.topic() not in retry_topics]
        if len(sources) == len(msgs):
            executor.run(msgs, batch)
            return msgs
        if sources:
            executor.run(sources, batch)
        processed = list(sources)
        now_ms = time.time() * 1000
        for m in msgs:
            if m.topic() not in retry_topics:
                continue
            tp = (m.topic(), m.partition())
            if tp in self._delayed:
                continue  # an earlier record of this partition is not due yet
            _level, due = parse_retry_headers(m.headers())
            if due > now_ms:
                part = TopicPartition(m.topic(), m.partition(), m.offset())
                self._consumer.pause([part])
                self._consumer.seek(part)
                self._delayed[tp] = due / 1000
                continue
            executor.run_parked(m, batch)
            processed.append(m)
        batch.size = len(processed)
        return processed

    def _resume_due(self) -> None:
        assert self._consumer is not None
        now = time.time()
        for tp, due in list(self._delayed.items()):
            if due <= now:
                del self._delayed[tp]
                if not self._paused and tp in self._assigned:
                    self._consumer.resume([TopicPartition(*tp)])

    def _backpressure(self) -> None:
        in_flight, cap = self.tracker.in_flight, self.options.max_in_flight
        if not self._paused and in_flight >= cap:
            self._set_paused(True)
            if self._executor is not None and self._txn is None:
                # batches held for the changelog count as in flight: release them now, not at the commit
                self._executor.flush_state()
        elif self._paused and in_flight <= cap // 2:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        assert self._consumer is not None
        parts = [TopicPartition(t, p) for t, p in self._assigned if (t, p) not in self._delayed]
        if parts:
            (self._consumer.pause if paused else self._consumer.resume)(parts)
        if paused:
            self.stats.paused += 1
            logger.debug("%s: %d records in flight: partitions paused", self.name, self.tracker.in_flight)
        self._paused = paused

    # ------------------------------------------------------------------ failures
    def _dispose_refused_outputs(self) -> None:
        """Outputs Kafka refused (after librdkafka's own retries): re-produce, dead-letter, skip or stop."""
        assert self._router is not None and self._executor is not None and self._producer is not None
        batches, self._failed_batches[:] = list(self._failed_batches), []
        for batch in batches:
            failures, batch.failures = batch.failures, []
            batch.registry = self._failed_batches
            for origin, err, out in failures:
                source = origin
                if source is None:  # a dead letter that could not be written: the router made it fatal
                    batch.failures.append((source, err, out))
                    continue
                step, policy = self._executor.emitter_for(out.topic())
                attempt = 1
                if isinstance(source, _Reproduced):
                    source, attempt = source.source, source.attempt
                try:
                    again = self._router.delivery_failed(step, policy, source, err, out, batch, attempt)
                except SluiceError as exc:
                    self._fatal = exc
                    batch.failures.append((source, err, out))
                    return
                if again:
                    batch.expect(1)
                    self._producer.produce(
                        out.topic(),
                        out.value(),
                        out.key(),
                        timestamp=max(out.timestamp()[1], 0),
                        headers=out.headers(),
                        on_delivery=partial(batch.on_delivery, _Reproduced(source, attempt + 1)),
                    )
            if batch.failures and batch not in self._failed_batches:
                self._failed_batches.append(batch)

    def _on_message_errors(self, msgs: list) -> None:
        for m in msgs:
            err = m.error()
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC) or err.fatal():
                self._fatal = SluiceError(f"consuming {m.topic()} failed: {err.str()}")
            else:
                logger.warning("%s: consumer error: %s", self.name, err.str())

    def _on_client_error(self, err: KafkaError) -> None:
        if self.metrics is not None:
            self.metrics.on_client_error(err)
        if err.fatal():
            self._fatal = SluiceError(f"fatal Kafka client error: {err.str()}")
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("%s: all brokers are down (%s); retrying", self.name, err.str())
        else:
            logger.info("%s: kafka: %s", self.name, err.str())

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            logger.warning("%s: offset commit failed: %s", self.name, err.str())
            return
        for tp in partitions:
            if tp.error is None:
                self._confirm(tp)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        logger.info("%s: assigned %s", self.name, _fmt(partitions))
        try:
            self._open_stores(partitions)
        except SluiceError as exc:
            self._fatal = exc
        except Exception as exc:  # noqa: BLE001 - e.g. a store that cannot be opened: stop, say why
            self._fatal = SluiceError(f"opening the state stores of {_fmt(partitions)} failed: {exc}")
        if self._paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("%s: revoking %s", self.name, _fmt(partitions))
        if self._txn is not None:
            committed = self._fatal is None and self._commit_transaction()
            self._close_stores(revoked, clean=committed)
            self._forget(revoked)
            return
        if self._executor is not None:
            self._executor.flush_state()
        self._drain(revoked, self.options.revoke_timeout)
        if self._dispatcher is not None:
            self._dispatcher.drop(revoked)
        self._commit(asynchronous=False)
        self._close_stores(revoked, clean=not self.tracker.pending_for(revoked))
        self.tracker.forget(revoked)
        self._assigned -= revoked
        for tp in revoked:
            self._delayed.pop(tp, None)
            self._to_commit.pop(tp, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        logger.warning(
            "%s: partitions lost (their uncommitted records will be redone): %s", self.name, _fmt(partitions)
        )
        if self._txn is not None and self._fatal is None:
            # the open transaction holds their records; another worker redoes them: drop it all
            self._close_stores(lost, clean=False)
            self._forget(lost)
            self._abort_transaction("partitions lost")
            return
        if self._dispatcher is not None:
            self._dispatcher.drop(lost)
        self._close_stores(lost, clean=False)
        self.tracker.forget(lost)
        self._assigned -= lost
        for tp in lost:
            self._to_commit.pop(tp, None)

    # ------------------------------------------------------------------ exactly-once
    def _commit_transaction(self) -> bool:
        """Commit the open transaction with the consumed positions; on an abortable error, redo it."""
        assert self._txn is not None and self._consumer is not None and self._executor is not None
        if not self._txn_start:
            return True  # nothing consumed since the last commit
        self._executor.flush_state()
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in self._positions.items() if (t, p) in self._txn_start
        ]
        try:
            self._txn.commit(offsets, self._consumer.consumer_group_metadata())
        except TransactionAborted as exc:
            self._rewind(f"the transaction was aborted: {exc}")
            return False
        except SluiceError as exc:
            self._fatal = exc
            return False
        self._txn_start.clear()
        self.stats.commits += 1
        committed = self.stats.committed
        for tp in offsets:
            committed[(tp.topic, tp.partition)] = tp.offset
        return True

    def _abort_transaction(self, why: str) -> None:
        assert self._txn is not None
        try:
            self._txn.abort()
        except SluiceError as exc:
            self._fatal = exc
            return
        self._rewind(why)

    def _rewind(self, why: str) -> None:
        """After an abort: back to where the transaction began, with the state it began with."""
        assert self._txn is not None and self._consumer is not None and self._executor is not None
        logger.warning("%s: %s; redoing its records from the last committed position", self.name, why)
        for node in self._executor.aggregates:
            node.discard_buffer()
        assigned = [TopicPartition(t, p) for t, p in self._assigned]
        self._close_stores(None, clean=False)
        try:
            self._open_stores(assigned)  # restored from the committed changelog
        except SluiceError as exc:
            self._fatal = exc
            return
        for (t, p), start in self._txn_start.items():
            if (t, p) in self._assigned:
                self._consumer.seek(TopicPartition(t, p, start))
                self._positions[(t, p)] = start
        self._txn_start.clear()
        # the aborted batches' purged outputs report errors: they no longer count for anything
        for batch in self.tracker.batches():
            batch.registry = None
        self._failed_batches.clear()
        self.tracker = OffsetTracker()
        self._txn.begin()

    def _forget(self, partitions: set[TopicPartitionKey]) -> None:
        self.tracker.forget(partitions)
        self._assigned -= partitions
        for tp in partitions:
            self._delayed.pop(tp, None)
            self._to_commit.pop(tp, None)
            self._positions.pop(tp, None)
            self._txn_start.pop(tp, None)

    # ------------------------------------------------------------------ state stores
    def _open_stores(self, partitions: list[TopicPartition]) -> None:
        """Open (and restore from the changelog) the stores of newly assigned partitions."""
        if self._executor is None or not self._executor.aggregates:
            return
        config = {**self.settings.restore_consumer_config(), "logger": _librdkafka_logger}
        for node in self._executor.aggregates:
            mine = [tp.partition for tp in partitions if tp.topic in node.input_topics]
            if mine:
                node.open(mine, self._admin, config, self.options.revoke_timeout)

    def _close_stores(self, partitions: set[TopicPartitionKey] | None, clean: bool) -> None:
        """Close stores (all with None); ``clean``: their changelog writes are acknowledged: checkpoint them."""
        if self._executor is None:
            return
        for node in self._executor.aggregates:
            owned = [
                p
                for p in node.stores
                if partitions is None or any((t, p) in partitions for t in node.input_topics)
            ]
            if not owned:
                continue
            ends: dict[int, tuple[int, int]] = {}
            if clean:
                try:
                    ends = self._admin.watermarks(node.changelog, self._topic_shape(node.changelog)[0])
                except SluiceError as exc:
                    logger.warning(
                        "%s: no state checkpoint (%s): the next start restores from the changelog",
                        self.name,
                        exc,
                    )
            for p in owned:
                node.close(p, ends[p][1] if p in ends else None)

    def _purge_repartition_topics(self) -> None:
        """Delete repartition records below the committed offsets (those topics keep records forever)."""
        committed = self.stats.committed or {}
        purge = {
            (t, p): o
            for (t, p), o in committed.items()
            if t in self._repartition_topics and o > self._purged.get((t, p), 0)
        }
        if not purge:
            return
        try:
            futures = self._admin.client.delete_records(
                [TopicPartition(t, p, o) for (t, p), o in purge.items()]
            )
            for future in futures.values():
                future.add_done_callback(_log_purge_failure)
        except KafkaException as exc:
            logger.info("%s: purging repartition topics: %s", self.name, exc)
            return
        self._purged.update(purge)

    def _drain(self, partitions: set[TopicPartitionKey], timeout: float) -> None:
        """Serve delivery reports until ``partitions`` have nothing pending, or ``timeout``."""
        assert self._producer is not None
        deadline = time.monotonic() + timeout
        self._collect()
        while self.tracker.pending_for(partitions) and self._fatal is None:
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s: outputs of %d batches not acknowledged within %.0fs; their offsets are not committed",
                    self.name,
                    self.tracker.pending_for(partitions),
                    timeout,
                )
                return
            self._producer.poll(0.05)
            self._collect()

    # ------------------------------------------------------------------ shutdown
    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                logger.warning("%s: closing the consumer: %s", self.name, exc)

    def _close_sinks(self) -> None:
        if self._executor is not None:
            try:
                self._executor.close_sinks()
            except Exception as exc:  # noqa: BLE001 - a sink failing to close must not hide the rest
                logger.warning("%s: closing a sink failed: %s", self.name, exc)

    def _shutdown(self) -> bool:
        consumer, producer = self._consumer, self._producer
        clean = True
        if self._txn is not None:
            if self._fatal is None and self._txn.open:
                clean = self._commit_transaction()
            elif self._txn.open:
                try:
                    self._txn.abort()
                except SluiceError as exc:
                    logger.warning("%s: %s", self.name, exc)
            self._close_stores(None, clean=clean and self._fatal is None)
            self._close_consumer()
            self._close_sinks()
            return clean and self._fatal is None
        if self._executor is not None and self._fatal is None:
            self._executor.flush_state()
        if self._dispatcher is not None:
            if self._fatal is None:
                self._drain(set(self._assigned), self.options.shutdown_timeout)
            self._dispatcher.stop()
        self._close_sinks()
        if producer is not None:
            remaining = producer.flush(self.options.shutdown_timeout)
            if remaining:
                clean = False
                logger.error(
                    "%s: %d outputs not acknowledged within %.0fs; their source offsets are not committed",
                    self.name,
                    remaining,
                    self.options.shutdown_timeout,
                )
        if consumer is not None:
            # what is complete is committed even after a fatal error: the failed batch never is
            self._collect()
            self._commit(asynchronous=False)
            self._close_consumer()
        self._close_stores(None, clean=clean and self.tracker.in_flight == 0 and self._fatal is None)
        logger.info(
            "%s: stopped after %d records in, %d batches, %d commits",
            self.name,
            self.stats.records_in,
            self.stats.batches,
            self.stats.commits,
        )
        return clean and self.tracker.in_flight == 0


@dataclass(frozen=True)
class _Reproduced:
    """The source of an output produced again after Kafka refused it, and which attempt this is."""

    source: object
    attempt: int


class _Progress:
    """A periodic one-line summary: rates, lag, in-flight."""

    def __init__(self, runner: Runner, interval: float) -> None:
        self.runner = runner
        self.interval = interval
        self.last = time.monotonic()
        self.last_in = 0

    def maybe_log(self, now: float) -> None:
        if now - self.last < self.interval:
            return
        runner = self.runner
        rate = (runner.stats.records_in - self.last_in) / (now - self.last)
        self.last, self.last_in = now, runner.stats.records_in
        logger.info(
            "%s: %.0f rec/s in, lag %s, in-flight %d, %d partitions%s",
            runner.name,
            rate,
            _lag(runner),
            runner.tracker.in_flight,
            len(runner._assigned),
            " (paused)" if runner._paused else "",
        )


def _lag(runner: Runner) -> str:
    consumer = runner._consumer
    if consumer is None or not runner._assigned:
        return "-"
    try:
        parts = consumer.position([TopicPartition(t, p) for t, p in runner._assigned])
        total = 0
        for tp in parts:
            _lo, hi = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and hi >= 0:
                total += max(0, hi - tp.offset)
        return str(total)
    except KafkaException:
        return "?"


def _log_purge_failure(future) -> None:
    exc = future.exception()
    if exc is not None:
        logger.info("purging a repartition topic failed (retried later): %s", exc)


def _freeze_heap(batch_size: int) -> tuple[int, int, int]:
    """Make the garbage collector cheap for the loop; returns the thresholds to restore afterwards.

    What exists before the loop (modules, frame libraries, the graph, the clients) lives
    as long as the run: frozen, full collections stop walking it again (garbage is
    collected first, so only live objects are frozen). And each consumed batch allocates
    thousands of GC-tracked ``Message`` objects, which alone triggered a young
    collection every 700: the first threshold becomes five batches. In a 1M-record
    map_batch run, collections had taken 15-20% of the loop's CPU (py-spy).
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 5 * batch_size), thresholds[1], thresholds[2])
    return thresholds


def _steps_below(stream: Stream, kind: type[_S]) -> list[_S]:
    """The steps of type ``kind`` in the graph below ``stream``, depth first."""
    out: list[_S] = []
    for child in stream.children:
        if isinstance(child.step, kind):
            out.append(child.step)
        out.extend(_steps_below(child, kind))
    return out


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
