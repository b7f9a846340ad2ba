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

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sluice.dataflow import Source
from sluice.dataflow.steps import Aggregate
from sluice.dataflow.tables import Join
from sluice.errors import SluiceError
from sluice.errors.policy import DEFAULT_POLICY, ErrorPolicy
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.clients import KAFKA_CLIENTS, Clients
from sluice.kafka.config import ClientSettings
from sluice.metrics._runtime import RuntimeMetrics, RuntimeSnapshot, start_metrics
from sluice.runtime.clock import SYSTEM_CLOCK, Clock
from sluice.runtime.collector import RecordCollector
from sluice.runtime.commit import AtLeastOnce, Committer, Transactional
from sluice.runtime.executor import Executor
from sluice.runtime.failures import FailureRouter
from sluice.runtime.pacing import Pacer
from sluice.runtime.parallel import ParallelDispatcher
from sluice.runtime.partitions import PartitionState
from sluice.runtime.polling import take
from sluice.runtime.refusals import Refusals
from sluice.runtime.restoring import Restorer
from sluice.runtime.retry_topics import parse_retry_headers
from sluice.runtime.topology import Topology, steps_below
from sluice.runtime.tracker import Batch, OffsetTracker, TopicPartitionKey, next_offsets
from sluice.runtime.transactions import transactional_id
from sluice.state.slots import Slot, claim_slot

__all__ = ["RunStats", "Runner", "RuntimeOptions"]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("sluice.kafka.librdkafka")
_PURGE_INTERVAL = 30.0  # seconds between deletions of consumed repartition records
#: map_batch frames that may await acknowledgement before partitions pause, whatever ``max_in_flight``
_FRAMES_IN_FLIGHT = 4
_RECORD_ROOM = 1024  # bytes of headers and record framing next to a record's key and value
_TRANSACTION_TIMEOUT_MS = 30_000  # an abandoned transaction blocks read_committed readers this long at most
#: held-for-changelog records excused from max_in_flight up to this many times it (bounded in every case)
_HELD_ALLOWANCE = 8


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
        clients: Clients = KAFKA_CLIENTS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        #: makes the consumer, producers and admin client (in-memory ones in ``sluice.testing``)
        self.clients = clients
        self.clock = clock
        self.state_dir = state_dir
        self.policy = policy
        self.settings = settings
        self.sources = sources
        self.options = options
        self._in_flight_cap = options.max_in_flight
        self.stats = RunStats(committed={})
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self.parts = PartitionState()
        self.fatal: SluiceError | None = None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._admin = TopicAdmin(settings.admin_config(), clients=clients)
        self.topology = Topology(
            name, settings, sources, policy, self._admin, options.exactly_once, options.concurrency
        )
        self.failed_batches: list[Batch] = []
        self._collector: RecordCollector | None = None
        self.refusals: Refusals | None = None
        self.committer: Committer | None = None
        self._pacer = Pacer(float(settings.consumer_config().get("max.poll.interval.ms", 300_000)) / 1000)
        self._polled = time.monotonic()  # when the loop last called consume
        self._revocations = 0  # revoke and lost callbacks so far
        #: partitions released (resumed on their way out) and not assigned again: records of theirs
        #: that librdkafka had fetched may still come out of a later consume
        self._released: set[TopicPartitionKey] = set()
        self._released_until = 0.0  # records fetched before a release are out well within seconds
        self._stash: list = []  # records polled while a batch waited for a sink
        self._router: FailureRouter | None = None
        self.executor: Executor | None = None
        self.dispatcher: ParallelDispatcher | None = None
        self._slot: Slot | None = None  # this process's state directory (and transactional id)
        self._purged: dict[TopicPartitionKey, int] = {}
        #: the one topic consumed, when there is only one (no per-record topic lookups then)
        self._only_topic: str | None = None
        self.ready = threading.Event()
        self.metrics_port = metrics_port
        self.metrics: RuntimeMetrics | None = None
        self.restorer: Restorer | None = None

    # ------------------------------------------------------------------ setup
    def _producer_config(self) -> dict[str, object]:
        transactional: dict[str, object] = {}
        if self.options.exactly_once:
            assert self._slot is not None
            transactional = {
                "transactional.id": transactional_id(self.name, self._slot),
                "transaction.timeout.ms": _TRANSACTION_TIMEOUT_MS,
            }
        room = {"message.max.bytes": self.topology.max_record_bytes} if self.topology.max_record_bytes else {}
        return {
            **self.settings.producer_config(),
            **room,
            **transactional,
            "logger": _librdkafka_logger,
            "error_cb": self._on_client_error,
        }

    def _make_clients(self) -> None:
        consumer_extra = {"isolation.level": "read_committed"} if self.options.exactly_once else {}
        self.producer = self.clients.producer(self._producer_config())
        self.consumer = self.clients.consumer(
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
    def snapshot(self) -> RuntimeSnapshot:
        """What the loop holds now, copied for readers on other threads (metrics, health checks)."""
        for _attempt in range(5):
            try:
                return self._snapshot()
            except RuntimeError:  # a set or dict changed size while copied: the poll thread moved on
                continue
        return self._snapshot()

    def _snapshot(self) -> RuntimeSnapshot:
        router, executor = self._router, self.executor
        records_out: dict[str, int] = {}
        for emitter in list(executor.emitters) if executor is not None else ():
            records_out[emitter.topic] = records_out.get(emitter.topic, 0) + emitter.produced
        return RuntimeSnapshot(
            assigned=frozenset(self.parts.assigned),
            paused=self.parts.paused,
            in_flight=self.tracker.in_flight,
            failure=self.fatal,
            stopping=self._stop.is_set(),
            retry_topics=frozenset(self.topology.retry_topics),
            records_out=records_out,
            dead_letters=dict(router.dead_letters) if router is not None else {},
            skipped=dict(router.skipped) if router is not None else {},
            retried=router.retried if router is not None else 0,
            recovered=router.recovered if router is not None else 0,
            produced_again=self._collector.environmental if self._collector is not None else 0,
            join_misses=executor.tables.misses if executor is not None else {},
        )

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
        topics = self.topology.prepare()
        self._only_topic = topics[0] if len(topics) == 1 else None
        if self.options.exactly_once or any(steps_below(s.root, Aggregate | Join) for s in self.sources):
            self._slot = claim_slot(self.state_dir)
        try:
            return self._run_claimed(topics)
        finally:
            if self._slot is not None:
                self._slot.release()

    def _run_claimed(self, topics: list[str]) -> bool:
        self._make_clients()
        assert self.consumer is not None and self.producer is not None
        # a record refused for a reason of the moment (an outage) waits as long as a batch for a sink
        self._collector = RecordCollector(self.producer, retry_for=self.policy.retry_for)
        self._router = FailureRouter(
            self.name, self.policy, self._collector, self._admin, self.topology.shape, self.clock
        )
        self.stats.failures = self._router
        if self.options.exactly_once:
            committer = Transactional(self, self._make_transactional_producer)
            self.committer = committer
            committer.start()
        else:
            self.committer = AtLeastOnce(self)
        executor = self.executor = Executor(
            self.sources,
            self.producer.produce,
            self.producer.poll,
            self._router,
            app=self.name,
            state_dir=self._slot.directory if self._slot is not None else self.state_dir,
        )
        executor.limit_sizes(self._output_limits(executor))
        executor.keep_alive = self._keep_alive_mid_batch
        self.restorer = Restorer(
            executor.aggregates,
            self.parts,
            self._admin,
            {**self.settings.restore_consumer_config(), "logger": _librdkafka_logger},
            self.options.revoke_timeout,
            self._restore_progress,
        )
        executor.stopping = self._stop.is_set
        self.refusals = Refusals(
            self.name,
            self._collector,
            self._router,
            executor,
            self._admin,
            self._producer_config(),
            self.failed_batches,
        )
        if self.options.concurrency > 1:
            self.dispatcher = ParallelDispatcher(
                executor, self.options.concurrency, self.options.ordering, self.failed_batches
            )
        if executor.tables:
            config = {**self.settings.restore_consumer_config(), "logger": _librdkafka_logger}
            executor.tables.start(self._admin, config, self.options.revoke_timeout)
        self.consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        logger.info("%s: consuming %s as group %s", self.name, ", ".join(topics), self.settings.group_id)
        clean = False
        thresholds = _freeze_heap(
            self.topology.batch_shape(self.settings.max_poll_records, self.options.poll_timeout)[0]
        )
        try:
            self._loop(executor)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            try:
                clean = self._shutdown()
            finally:
                executor.tables.close()
        if self.fatal is not None:
            raise self.fatal
        return clean

    # ------------------------------------------------------------------ the loop
    def _loop(self, executor: Executor) -> None:
        consumer, producer, opts = self.consumer, self.producer, self.options
        assert consumer is not None and producer is not None
        max_records, poll_timeout = self.topology.batch_shape(
            self.settings.max_poll_records, self.options.poll_timeout
        )
        # a map_batch that asks for bigger batches gets room for a few of them: with 10,000-row
        # frames and the default 20,000, two frames awaiting acks paused the partitions, which
        # drops what librdkafka had prefetched (a 300k-record run took 2.5 s instead of 1.1 s)
        frames = max_records if max_records > self.settings.max_poll_records else 0
        self._in_flight_cap = max(self.options.max_in_flight, _FRAMES_IN_FLIGHT * frames)
        stats = self.stats
        metrics = self.metrics
        next_commit = time.monotonic() + opts.commit_interval
        next_purge = time.monotonic() + _PURGE_INTERVAL
        progress = _Progress(self, opts.progress_interval)
        committer, restorer = self.committer, self.restorer
        assert committer is not None and restorer is not None
        # map_batch wants its micro-batches filled for up to max_wait; other graphs run what arrived
        consume = consumer.consume if self.topology.fills_batches() else partial(take, consumer)
        while not self._stop.is_set():
            revocations = self._revocations
            msgs = consume(max_records, 0 if self.parts.paused or restorer.busy else poll_timeout)
            self._polled = time.monotonic()
            if self._stash:  # records a keep-alive poll returned while a batch waited
                msgs, self._stash = self._stash + msgs, []
            if self.fatal is not None:
                return
            if restorer.busy:  # partitions assigned in that consume wait for their state stores
                try:
                    msgs = restorer.hold(consumer, msgs)
                except SluiceError as exc:
                    self.fatal = exc
                    return
            if msgs:
                if revocations != self._revocations or (
                    self._released and self._polled < self._released_until
                ):
                    msgs = self._still_assigned(msgs)
                good = [m for m in msgs if m.error() is None]
                if len(good) != len(msgs):
                    self._on_message_errors([m for m in msgs if m.error() is not None])
                if good:
                    started = time.perf_counter()
                    try:
                        if self.dispatcher is not None:
                            self._dispatch(executor, good)
                        else:
                            good = self._process_paced(executor, good)
                    except SluiceError as exc:
                        self.fatal = exc
                        return
                    stats.records_in += len(good)
                    stats.records_out = executor.produced
                    stats.batches += 1
                    if metrics is not None:
                        metrics.on_batch(good, started)
            producer.poll(0.05 if self.parts.paused else 0)
            if self.parts.delayed:
                self._resume_due()
            if self.refusals.waiting:
                self.refusals.produce_due()
            self.collect()
            if self.fatal is not None:
                return
            self._backpressure()
            if restorer.busy:  # a slice of changelog replay per iteration: the loop keeps polling
                try:
                    restorer.step(consumer)
                except SluiceError as exc:
                    self.fatal = exc
                    return
            now = time.monotonic()
            if metrics is not None:
                metrics.last_loop = now
            if now >= next_commit:
                committer.commit()
                next_commit = now + opts.commit_interval
            if self.topology.repartition_topics and now >= next_purge:
                self._purge_repartition_topics()
                next_purge = now + _PURGE_INTERVAL
            progress.maybe_log(now)

    def collect(self) -> None:
        """Dispose of refused outputs, then move newly committable offsets into the pending commit."""
        if self.failed_batches:
            self.committer.refused()
        if self.refusals is not None and self.refusals.fatal is not None:
            self.fatal = self.refusals.fatal
            return
        if self._collector is not None and self._collector.fatal is not None:
            self.fatal = self._collector.fatal
            return
        if self._router is not None and self._router.fatal is not None:
            self.fatal = self._router.fatal
            return
        if self.executor is not None and self.executor.state_failure is not None:
            self.fatal = self.executor.state_failure
            return
        if self.dispatcher is not None and self.dispatcher.fatal is not None:
            exc = self.dispatcher.fatal
            self.fatal = exc if isinstance(exc, SluiceError) else SluiceError(f"a worker failed: {exc!r}")
            return
        ready = self.tracker.committable()
        if ready:
            self.parts.to_commit.update(ready)

    def _still_assigned(self, msgs: list) -> list:
        """The consumed records of partitions still assigned.

        A consume that served a revoke (or a loss) can return records fetched before it:
        run, they would be produced (and under exactly-once, their offsets sent) for
        partitions another member owns now.
        """
        assigned = self.parts.assigned
        kept = [m for m in msgs if m.error() is not None or (m.topic(), m.partition()) in assigned]
        if len(kept) != len(msgs):
            logger.info(
                "%s: %d consumed records of revoked partitions dropped", self.name, len(msgs) - len(kept)
            )
        return kept

    def _process_paced(self, executor: Executor, msgs: list) -> list:
        """Run a consumed batch in chunks, polling between them when a chunk ran long; return what ran.

        A batch of slow records would otherwise keep the loop from ``consume`` past
        ``max.poll.interval.ms``: the member would leave its group and the batch be redone
        elsewhere, forever (``sluice.runtime.pacing``).
        """
        pacer = self._pacer
        n = pacer.chunk(len(msgs))
        if n == len(msgs):  # the usual case: the whole batch fits in the budget
            started = time.perf_counter()
            self._process(executor, msgs)
            pacer.observe(n, time.perf_counter() - started)
            return msgs
        done: list = []
        rest = msgs
        while rest:
            chunk, rest = rest[:n], rest[n:]
            started = time.perf_counter()
            self._process(executor, chunk)
            pacer.observe(len(chunk), time.perf_counter() - started)
            done.extend(chunk)
            if rest and pacer.overdue(time.monotonic() - self._polled):
                rest = self._keep_membership(rest)
            n = pacer.chunk(len(rest))
        return done

    def _keep_membership(self, rest: list) -> list:
        """Serve ``max.poll.interval.ms`` between two chunks of a batch; return the records left to run.

        Rebalance callbacks may run in this poll: the chunks already run are tracked, so a
        revoke commits them; the records left of a partition no longer assigned are dropped
        (their next owner consumes them).
        """
        late = self._poll_paused()
        kept = [m for m in rest if (m.topic(), m.partition()) in self.parts.assigned]
        if len(kept) != len(rest):
            logger.info(
                "%s: %d consumed records of revoked partitions dropped mid-batch",
                self.name,
                len(rest) - len(kept),
            )
        return kept + late

    def _keep_alive_mid_batch(self) -> None:
        """The executor's hook while a batch waits for an unavailable sink: stay in the group.

        Records a poll returns meanwhile (a partition assigned in it) wait for the next
        batch. Exactly-once does not poll here: a revoke would commit the transaction with
        the half-run batch's outputs but not its offsets.
        """
        if self.options.exactly_once or not self._pacer.overdue(time.monotonic() - self._polled):
            return
        self._stash.extend(self._poll_paused())

    def _poll_paused(self) -> list:
        """Poll with every partition paused (the member stays in its group); return records it still gave.

        A partition assigned in this poll starts paused (``_on_assign`` sees ``paused``).
        """
        assert self.consumer is not None
        consumer, parts = self.consumer, self.parts
        was_paused = parts.paused
        if not was_paused:
            active = [TopicPartition(t, p) for t, p in parts.active()]
            if active:
                consumer.pause(active)
            parts.paused = True
        try:
            late = consumer.consume(self.settings.max_poll_records, 0)
        finally:
            self._polled = time.monotonic()
            if self.metrics is not None:
                self.metrics.last_loop = self._polled  # /healthz: the loop is waiting, not stuck
            if not was_paused:
                parts.paused = False
                active = [TopicPartition(t, p) for t, p in parts.active()]
                if active:
                    consumer.resume(active)
        late = self._still_assigned(late)
        good = [m for m in late if m.error() is None]
        if len(good) != len(late):
            self._on_message_errors([m for m in late if m.error() is not None])
        return good

    def _process(self, executor: Executor, msgs: list) -> None:
        """Run one consumed batch through the graph on this thread (concurrency=1)."""
        batch = Batch(len(msgs), self.failed_batches)
        assert self._router is not None
        self._router.start_batch()
        revocations = self._revocations
        if self.topology.retry_topics:
            msgs = self._run_with_parked(executor, msgs, batch)
        else:
            executor.run(self.committer.screen(msgs, batch), batch)
        batch.seal()
        next_ = next_offsets(msgs, self._only_topic)
        if revocations != self._revocations:  # partitions went away while the batch ran (a keep-alive poll)
            next_ = {tp: o for tp, o in next_.items() if tp in self.parts.assigned}
        self.tracker.add(batch, next_)
        self.committer.consumed(msgs, next_)

    def _dispatch(self, executor: Executor, msgs: list) -> None:
        """Hand one consumed batch to the worker threads (concurrency>1)."""
        assert self.dispatcher is not None
        if self.topology.retry_topics:
            parked = [m for m in msgs if m.topic() in self.topology.retry_topics]
            if parked:
                msgs = [m for m in msgs if m.topic() not in self.topology.retry_topics]
                batch = Batch(0, self.failed_batches)
                self._router.start_batch()
                done = self._run_with_parked(executor, parked, batch)
                batch.seal()
                self.tracker.add(batch, {(m.topic(), m.partition()): m.offset() + 1 for m in done})
        for batch, offsets in self.dispatcher.submit(msgs):
            self.tracker.add(batch, offsets)

    # ------------------------------------------------------------------ retry topics
    def _run_with_parked(self, executor: Executor, msgs: list, batch: Batch) -> list:
        """Run source records as a batch and due parked records one by one; return the processed ones."""
        assert self.consumer is not None
        retry_topics = self.topology.retry_topics
        sources = [m for m in msgs if m.topic() not in retry_topics]
        if len(sources) == len(msgs):
            executor.run(msgs, batch)
            return msgs
        if sources:
            executor.run(sources, batch)
        processed = list(sources)
        now_ms = self.clock.time() * 1000
        for m in msgs:
            if m.topic() not in retry_topics:
                continue
            tp = (m.topic(), m.partition())
            if tp in self.parts.delayed:
                continue  # an earlier record of this partition is not due yet
            _level, due = parse_retry_headers(m.headers())
            if due > now_ms:
                part = TopicPartition(m.topic(), m.partition(), m.offset())
                self.consumer.pause([part])
                self.consumer.seek(part)
                self.parts.delayed[tp] = due / 1000
                continue
            executor.run_parked(m, batch)
            processed.append(m)
        batch.size = len(processed)
        return processed

    def _resume_due(self) -> None:
        assert self.consumer is not None
        now = self.clock.time()
        for tp, due in list(self.parts.delayed.items()):
            if due <= now:
                del self.parts.delayed[tp]
                if not self.parts.paused and tp in self.parts.assigned:
                    self.consumer.resume([TopicPartition(*tp)])

    def _backpressure(self) -> None:
        in_flight, cap = self.tracker.in_flight, self._in_flight_cap
        if self.executor is not None and in_flight < _HELD_ALLOWANCE * cap:
            # records held for an aggregation's changelog hold no memory (their states are in its
            # bounded record cache); pausing for them would drop librdkafka's prefetched records
            in_flight -= self.executor.held_records
        if not self.parts.paused and in_flight >= cap:
            self._set_paused(True)
            if self.executor is not None and not self.committer.exactly_once:
                # batches held for the changelog count as in flight: release them now, not at the commit
                self.executor.flush_state()
        elif self.parts.paused and in_flight <= cap // 2:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        assert self.consumer is not None
        parts = [TopicPartition(t, p) for t, p in self.parts.active()]
        if parts:
            (self.consumer.pause if paused else self.consumer.resume)(parts)
        if paused:
            self.stats.paused += 1
            logger.debug("%s: %d records in flight: partitions paused", self.name, self.tracker.in_flight)
        self.parts.paused = paused

    # ------------------------------------------------------------------ failures
    def _on_message_errors(self, msgs: list) -> None:
        for m in msgs:
            err = m.error()
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC) or err.fatal():
                self.fatal = SluiceError(f"consuming {m.topic()} failed: {err.str()}")
            else:
                logger.warning("%s: consumer error: %s", self.name, err.str())

    def _on_client_error(self, err: KafkaError) -> None:
        if self.metrics is not None:
            self.metrics.on_client_error(err)
        if err.fatal():
            self.fatal = SluiceError(f"fatal Kafka client error: {err.str()}")
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("%s: all brokers are down (%s); retrying", self.name, err.str())
        else:
            logger.info("%s: kafka: %s", self.name, err.str())

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        self.parts.assign((tp.topic, tp.partition) for tp in partitions)
        self._released -= {(tp.topic, tp.partition) for tp in partitions}
        logger.info("%s: assigned %s", self.name, _fmt(partitions))
        if self.restorer is not None and self.restorer.topics:
            # restored in the loop, a slice at a time: here it would hold the member past its poll interval
            self.parts.restore(
                (tp.topic, tp.partition) for tp in partitions if tp.topic in self.restorer.topics
            )
        try:
            # the tables' partitions; the stores marked above are left to the loop
            self.open_stores(partitions)
        except SluiceError as exc:
            self.fatal = exc
        except Exception as exc:  # noqa: BLE001 - e.g. a store that cannot be opened: stop, say why
            self.fatal = SluiceError(f"opening the state stores of {_fmt(partitions)} failed: {exc}")
        if self.parts.paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("%s: revoking %s", self.name, _fmt(partitions))
        assert self.committer is not None
        # queued parallel work of the revoked partitions may finish within revoke_timeout (the
        # drain): what is left is dropped by _release, and never starts after the revoke
        self._release(revoked, clean=self.committer.revoke(revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        logger.warning(
            "%s: partitions lost (their uncommitted records will be redone): %s", self.name, _fmt(partitions)
        )
        self._release(lost, clean=False)
        assert self.committer is not None
        self.committer.lost(lost)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if isinstance(self.committer, AtLeastOnce):
            self.committer.on_commit(err, partitions)

    def _release(self, partitions: set[TopicPartitionKey], clean: bool) -> None:
        self._revocations += 1
        self._released |= partitions
        self._released_until = time.monotonic() + 10.0
        self._unpause(partitions)
        self._forget(partitions, clean)

    def _unpause(self, partitions: set[TopicPartitionKey]) -> None:
        """Resume partitions on their way out: librdkafka keeps a partition's pause across a
        re-assignment, so a partition revoked while paused (in-flight cap, a parked record not
        due) would otherwise never be fetched again when it comes back."""
        if self.consumer is None or not partitions:
            return
        try:
            self.consumer.resume([TopicPartition(t, p) for t, p in partitions])
        except KafkaException as exc:
            logger.debug("%s: resuming released partitions: %s", self.name, exc)

    def _forget(self, partitions: set[TopicPartitionKey], clean: bool) -> None:
        """Forget everything held for ``partitions`` (called by ``_release``, the one path of revoke and lost).

        ``clean``: their outputs and changelog writes are acknowledged (the stores are
        checkpointed); otherwise their uncommitted work is simply dropped, to be redone
        by their next owner.
        """
        if self.dispatcher is not None:
            self.dispatcher.drop(partitions)
        if self.executor is not None and not clean:
            for node in self.executor.aggregates:
                node.discard_partitions({p for t, p in partitions if t in node.input_topics})
        if self.restorer is not None:
            self.restorer.cancel(partitions)
        self.close_stores(partitions, clean=clean)
        self.tracker.forget(partitions)
        self.parts.forget(partitions)
        if self.refusals is not None:
            self.refusals.forget(partitions)

    # ------------------------------------------------------------------ state stores
    def open_stores(self, partitions: list[TopicPartition]) -> None:
        """Assign the tables' partitions; open and restore the stores of ``partitions``, blocking.

        Stores restoring in the loop (or marked to, by the assign callback) go on there.
        """
        if self.executor is None:
            return
        config = {**self.settings.restore_consumer_config(), "logger": _librdkafka_logger}
        if self.executor.tables:
            assigned = [(tp.topic, tp.partition) for tp in partitions]
            self.executor.tables.assign(assigned, self._admin, config, self.options.revoke_timeout)
        restorer, waiting = self.restorer, self.parts.unpaused
        for node in self.executor.aggregates:
            mine = [
                tp.partition
                for tp in partitions
                if tp.topic in node.input_topics
                and (tp.topic, tp.partition) not in waiting
                and not (restorer and restorer.restoring(node, tp.partition))
            ]
            if mine:
                node.open(mine, self._admin, config, self.options.revoke_timeout)

    def close_stores(self, partitions: set[TopicPartitionKey] | None, clean: bool) -> None:
        """Close stores (all with None); ``clean``: their changelog writes are acknowledged: checkpoint them."""
        if self.executor is None:
            return
        self.executor.tables.release(partitions, clean)
        for node in self.executor.aggregates:
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
                    ends = self._admin.watermarks(node.changelog, self.topology.shape(node.changelog)[0])
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
            if t in self.topology.repartition_topics and o > self._purged.get((t, p), 0)
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

    def drain(self, partitions: set[TopicPartitionKey], timeout: float) -> None:
        """Serve delivery reports until ``partitions`` have nothing pending, or ``timeout``."""
        assert self.producer is not None
        deadline = time.monotonic() + timeout
        self.collect()
        while self.tracker.pending_for(partitions) and self.fatal is None:
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s: outputs of %d batches not acknowledged within %.0fs; their offsets are not committed",
                    self.name,
                    self.tracker.pending_for(partitions),
                    timeout,
                )
                return
            self.producer.poll(0.05)
            self.collect()

    # ------------------------------------------------------------------ shutdown
    def close_consumer(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                logger.warning("%s: closing the consumer: %s", self.name, exc)

    def close_sinks(self) -> None:
        if self.executor is not None:
            try:
                self.executor.close_sinks()
            except Exception as exc:  # noqa: BLE001 - a sink failing to close must not hide the rest
                logger.warning("%s: closing a sink failed: %s", self.name, exc)

    def _restore_progress(self, store: str, partition: int, remaining: int) -> None:
        if self.metrics is not None:
            self.metrics.set_restore_remaining(store, partition, remaining)

    def _shutdown(self) -> bool:
        if self.restorer is not None:
            self.restorer.close()  # half-restored stores keep what they restored (checkpointed)
        if self.committer is None:  # stopped before the clients were ready
            self.close_consumer()
            return False
        clean = self.committer.shutdown()
        logger.info(
            "%s: stopped after %d records in, %d batches, %d commits",
            self.name,
            self.stats.records_in,
            self.stats.batches,
            self.stats.commits,
        )
        return clean

    # ------------------------------------------------------------------ exactly-once
    def _output_limits(self, executor: Executor) -> dict[str, int]:
        """Output topics that take smaller records than the producer sends: their limit, less room for headers."""
        sends = int(self._producer_config().get("message.max.bytes", 1_000_000))  # type: ignore[arg-type]
        limits: dict[str, int] = {}
        for topic in {e.topic for e in executor.emitters}:
            takes = self._admin.topic_config(topic, "max.message.bytes")
            if takes and int(takes) < sends:
                limits[topic] = int(takes) - _RECORD_ROOM
        return limits

    def _make_transactional_producer(self) -> Producer:
        """A new producer with this process's transactional id: ``init_transactions`` bumps its epoch."""
        return self.clients.producer(self._producer_config())

    def replace_producer(self, producer: Producer) -> None:
        """Produce through ``producer`` from now on (exactly-once re-creates it after an abort)."""
        self.producer = producer
        assert self._collector is not None and self.executor is not None
        self._collector.replace(producer)
        self.executor.rebind(producer.produce, producer.poll)


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
            len(runner.parts.assigned),
            " (paused)" if runner.parts.paused else "",
        )


def _lag(runner: Runner) -> str:
    consumer = runner.consumer
    if consumer is None or not runner.parts.assigned:
        return "-"
    try:
        parts = consumer.position([TopicPartition(t, p) for t, p in runner.parts.assigned])
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


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
