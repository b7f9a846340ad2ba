"""Metrics, liveness and readiness of one running app (``App(metrics_port=)``, ``--metrics-port``).

The poll loop pays for metrics once per consumed batch (one histogram observation
and a per-partition count done in C), and once per loop iteration (a timestamp).
Everything else is read when Prometheus scrapes: counters the runtime keeps anyway
(outputs, dead letters, commits, rebalances, in-flight), and what librdkafka's
statistics callback last reported (end and committed offsets per partition,
broker connections), which it delivers on the poll thread once a second.

Each app has its own ``CollectorRegistry``: several apps in one process do not
clash, and nothing is added to prometheus-client's global registry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, Message
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice._version import __version__
from sluice.metrics._server import MetricsServer

__all__ = [
    "BATCH_BUCKETS",
    "STALL_SECONDS",
    "STATS_INTERVAL_MS",
    "RuntimeMetrics",
    "RuntimeSnapshot",
    "start_metrics",
]

logger = logging.getLogger(__name__)

#: The poll loop is "stuck" (``/healthz`` 503) when it has not come back for this long.
STALL_SECONDS = 60.0
#: How often librdkafka reports offsets and broker states (the lag metric's resolution).
STATS_INTERVAL_MS = 1000
#: Buckets of ``sluice_processing_seconds`` (one observation per consumed batch).
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

TopicPartitionKey = tuple[str, int]
_partition_of = Message.partition
_topic_of = Message.topic


@dataclass(frozen=True)
class RuntimeSnapshot:
    """What the metrics read of the running loop, copied at one moment (``Runner.snapshot()``)."""

    assigned: frozenset[TopicPartitionKey] = frozenset()
    paused: bool = False
    in_flight: int = 0
    #: the error the app is stopping on
    failure: BaseException | None = None
    stopping: bool = False
    retry_topics: frozenset[str] = frozenset()
    #: records produced per output topic
    records_out: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)
    retried: int = 0
    recovered: int = 0
    #: records Kafka refused for reasons of the moment and that were produced again
    produced_again: int = 0
    #: stream records an inner stream-table join dropped (no row), per join step
    join_misses: dict[str, int] = field(default_factory=dict)


class RunnerView(Protocol):
    """What the metrics read from the runtime's ``Runner`` (duck-typed: metrics sit below the runtime)."""

    name: str
    settings: Any
    stats: Any
    sources: list[Any]
    ready: threading.Event

    def snapshot(self) -> RuntimeSnapshot: ...


@dataclass(frozen=True)
class _Offsets:
    """One partition as librdkafka's statistics last reported it (-1001: unknown)."""

    low: int
    end: int
    committed: int
    next_fetch: int


class RuntimeMetrics:
    """Hooks for the poll loop, a Prometheus collector, and the health and readiness checks.

    Args:
        runner: the running ``Runner``.
        stall_after: seconds without a poll-loop iteration after which ``/healthz`` fails.
    """

    def __init__(self, runner: RunnerView, stall_after: float = STALL_SECONDS) -> None:
        self.runner = runner
        self.stall_after = stall_after
        self.registry = CollectorRegistry()
        self.processing = Histogram(
            "sluice_processing_seconds",
            "Seconds the poll loop spent running one consumed batch through the dataflow "
            "(with concurrency > 1: handing it to the workers)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.records_in: dict[TopicPartitionKey, int] = {}
        self.last_loop: float | None = None
        self.started = time.monotonic()
        self.brokers_down: str | None = None
        self.restore_remaining: dict[tuple[str, int], int] = {}
        self._offsets: dict[TopicPartitionKey, _Offsets] = {}
        self._single_topic: str | bool | None = False  # False: not known yet
        self._reset = str(runner.settings.consumer_config().get("auto.offset.reset", "earliest"))
        self._worker = os.environ.get("SLUICE_WORKER_INDEX")
        self.registry.register(_Collector(self))
        self.server: MetricsServer | None = None

    # ------------------------------------------------------------------ hooks (poll thread)
    def on_batch(self, msgs: list[Any], started: float) -> None:
        """One consumed batch was processed (``started``: ``time.perf_counter()`` before it)."""
        self.processing.observe(time.perf_counter() - started)
        counts = self.records_in
        topic = self._single_topic
        if topic is False:
            topic = self._single_topic = self._only_topic()
        if topic is not None:
            for partition, n in Counter(map(_partition_of, msgs)).items():
                tp = (topic, partition)
                counts[tp] = counts.get(tp, 0) + n
        else:
            for tp, n in Counter(zip(map(_topic_of, msgs), map(_partition_of, msgs), strict=True)).items():
                counts[tp] = counts.get(tp, 0) + n

    def _only_topic(self) -> str | None:
        topics = [t for s in self.runner.sources for t in s.topics]
        return topics[0] if len(topics) == 1 and not self.runner.snapshot().retry_topics else None

    def on_client_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb``: remember that every broker is down (until one is up again)."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_down = err.str()

    def on_stats(self, raw: str) -> None:
        """librdkafka's ``stats_cb``: offsets per partition and broker connection states."""
        try:
            stats = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        brokers = stats.get("brokers") or {}
        if any(b.get("state") == "UP" for b in brokers.values()):
            if self.brokers_down is not None:
                logger.info("%s: a broker is reachable again", self.runner.name)
            self.brokers_down = None
        elif brokers and self.brokers_down is None:
            self.brokers_down = "no broker connection is up"
        read_committed = stats.get("type") == "consumer" and self._read_committed()
        offsets: dict[TopicPartitionKey, _Offsets] = {}
        for topic, info in (stats.get("topics") or {}).items():
            for p in (info.get("partitions") or {}).values():
                partition = p.get("partition", -1)
                if partition < 0 or not p.get("desired", True):
                    continue
                end = p.get("ls_offset" if read_committed else "hi_offset", -1001)
                offsets[(topic, partition)] = _Offsets(
                    p.get("lo_offset", -1001),
                    end,
                    p.get("committed_offset", -1001),
                    p.get("next_offset", -1001),
                )
        self._offsets = offsets

    def _read_committed(self) -> bool:
        level = self.runner.settings.consumer_config().get("isolation.level", "read_committed")
        return str(level) == "read_committed"

    def consumer_config(self) -> dict[str, Any]:
        """Consumer properties the metrics need: librdkafka statistics once a second."""
        return {"stats_cb": self.on_stats, "statistics.interval.ms": STATS_INTERVAL_MS}

    def set_restore_remaining(self, store: str, partition: int, remaining: int) -> None:
        """State restore progress (for state stores): records of ``store``'s changelog still to replay."""
        if remaining > 0:
            self.restore_remaining[(store, partition)] = remaining
        else:
            self.restore_remaining.pop((store, partition), None)

    # ------------------------------------------------------------------ derived values (any thread)
    def partition_offsets(self) -> dict[TopicPartitionKey, tuple[int | None, int | None, int | None]]:
        """Per assigned partition: (committed offset, end offset, lag); ``None`` where not known yet.

        The lag is the committed lag: records after the group's committed offset, so it
        includes records consumed but not yet done. Before any offset of a partition was
        committed it counts from where consumption starts (the start of the partition
        with ``auto_offset_reset="earliest"``).
        """
        runner = self.runner
        committed_here = dict(runner.stats.committed or {})
        offsets = self._offsets
        out: dict[TopicPartitionKey, tuple[int | None, int | None, int | None]] = {}
        for tp in sorted(runner.snapshot().assigned):
            known = offsets.get(tp)
            committed = max(committed_here.get(tp, -1001), known.committed if known else -1001)
            commit_value = committed if committed >= 0 else None
            if known is None or known.end < 0:
                out[tp] = (commit_value, None, None)
                continue
            if committed >= 0:
                base = committed
            elif self._reset == "earliest" and known.low >= 0:
                base = known.low
            elif known.next_fetch >= 0:
                base = known.next_fetch
            else:
                out[tp] = (commit_value, known.end, None)
                continue
            out[tp] = (commit_value, known.end, max(0, known.end - base))
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the process is up and its poll loop comes back (JSON body for ``/healthz``)."""
        runner = self.runner
        body: dict[str, Any] = {"app": runner.name, "group": runner.settings.group_id}
        if self._worker is not None:
            body["worker"] = int(self._worker)
        snap = runner.snapshot()
        if snap.failure is not None:
            return False, {
                **body,
                "status": "failed",
                "reason": f"the app is stopping after an error: {snap.failure}",
            }
        if snap.stopping:
            return True, {**body, "status": "stopping"}
        last = self.last_loop
        if last is None:
            return True, {**body, "status": "starting", "uptime_seconds": self._uptime()}
        age = time.monotonic() - last
        body["last_poll_seconds_ago"] = round(age, 3)
        if age > self.stall_after:
            return False, {
                **body,
                "status": "stuck",
                "reason": (
                    f"the poll loop has not come back for {age:.0f}s (limit {self.stall_after:.0f}s): "
                    "a step, sink or retry is blocking it"
                ),
            }
        return True, {**body, "status": "ok", "uptime_seconds": self._uptime()}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: partitions assigned, brokers reachable, state restored (JSON body for ``/readyz``)."""
        runner = self.runner
        group = runner.settings.group_id
        body: dict[str, Any] = {"app": runner.name, "group": group}
        if self._worker is not None:
            body["worker"] = int(self._worker)
        snap = runner.snapshot()
        if snap.failure is not None:
            return False, {**body, "status": "not ready", "reason": f"failed: {snap.failure}"}
        if snap.stopping:
            return False, {
                **body,
                "status": "not ready",
                "reason": "stopping: finishing the records in flight, then committing",
            }
        if self.brokers_down is not None:
            return False, {
                **body,
                "status": "not ready",
                "reason": f"all brokers are down ({self.brokers_down}); the clients keep reconnecting",
            }
        if not runner.ready.is_set():
            return False, {
                **body,
                "status": "not ready",
                "reason": f"waiting for a partition assignment in consumer group {group!r}",
            }
        remaining = sum(self.restore_remaining.values())
        if remaining:
            return False, {
                **body,
                "status": "not ready",
                "reason": f"restoring state: {remaining} changelog records to replay",
            }
        return True, {**body, "status": "ready", "partitions": len(snap.assigned)}

    def _uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    # ------------------------------------------------------------------ serving
    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str | None = None) -> MetricsServer:
        """Serve ``/metrics``, ``/healthz``, ``/readyz`` on ``port`` (host: ``$SLUICE_METRICS_HOST`` or all)."""
        host = host or os.environ.get("SLUICE_METRICS_HOST") or "0.0.0.0"
        self.server = MetricsServer(self, port, host)
        logger.info(
            "%s: metrics on %s/metrics, health on /healthz and /readyz", self.runner.name, self.server.url
        )
        return self.server

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the metrics server, once serving."""
        return self.server.url if self.server is not None else None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class _Collector(Collector):
    """Reads the runtime's counters at scrape time."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self.m = metrics

    def collect(self):
        m = self.m
        runner = m.runner
        stats = runner.stats
        info = GaugeMetricFamily(
            "sluice_app", "The app this process runs (value 1)", labels=["app", "group", "version"]
        )
        info.add_metric([runner.name, runner.settings.group_id, __version__], 1)
        yield info

        records_in = CounterMetricFamily(
            "sluice_records_in", "Records consumed from each source partition", labels=["topic", "partition"]
        )
        for (topic, partition), n in sorted(dict(m.records_in).items()):
            records_in.add_metric([topic, str(partition)], n)
        yield records_in

        records_out = CounterMetricFamily(
            "sluice_records_out", "Records produced to each output topic", labels=["topic"]
        )
        snap = runner.snapshot()
        for topic, n in sorted(snap.records_out.items()):
            records_out.add_metric([topic], n)
        yield records_out

        dead = CounterMetricFamily(
            "sluice_dead_letters",
            "Records written to a dead-letter topic, by failing stage and exception class",
            labels=["stage", "exception"],
        )
        skipped = CounterMetricFamily(
            "sluice_skipped",
            "Failed records skipped (on_error skip=True), by stage and exception class",
            labels=["stage", "exception"],
        )
        retries = CounterMetricFamily("sluice_retries", "In-place retries attempted of failed records")
        recovered = CounterMetricFamily("sluice_retries_recovered", "Failed records a retry recovered")
        for (stage, exc), n in sorted(snap.dead_letters.items()):
            dead.add_metric([stage, exc], n)
        for (stage, exc), n in sorted(snap.skipped.items()):
            skipped.add_metric([stage, exc], n)
        retries.add_metric([], snap.retried)
        recovered.add_metric([], snap.recovered)
        produced_again = CounterMetricFamily(
            "sluice_produced_again",
            "Records Kafka refused for a reason of the moment (an outage, too few replicas) and produced again",
        )
        produced_again.add_metric([], snap.produced_again)
        yield from (dead, skipped, retries, recovered, produced_again)

        lag = GaugeMetricFamily(
            "sluice_consumer_lag",
            "Records after the committed offset of each assigned partition (end offset - committed offset)",
            labels=["topic", "partition"],
        )
        end = GaugeMetricFamily(
            "sluice_end_offset",
            "End offset of each assigned partition (last stable offset with read_committed)",
            labels=["topic", "partition"],
        )
        commit = GaugeMetricFamily(
            "sluice_commit_offset",
            "Offset committed for each assigned partition (the next record to process)",
            labels=["topic", "partition"],
        )
        for (topic, partition), (committed, end_offset, behind) in m.partition_offsets().items():
            labels = [topic, str(partition)]
            if committed is not None:
                commit.add_metric(labels, committed)
            if end_offset is not None:
                end.add_metric(labels, end_offset)
            if behind is not None:
                lag.add_metric(labels, behind)
        yield from (lag, end, commit)

        yield _gauge(
            "sluice_in_flight",
            "Records consumed and not yet done (processing or awaiting acks)",
            snap.in_flight,
        )
        yield _gauge(
            "sluice_paused",
            "1 while the partitions are paused because in-flight is full",
            1 if snap.paused else 0,
        )
        yield _gauge("sluice_assigned_partitions", "Partitions assigned to this process", len(snap.assigned))
        yield _counter(
            "sluice_rebalances",
            "Partition assignment changes seen (assign and revoke callbacks)",
            stats.rebalances,
        )
        yield _counter("sluice_batches", "Consumed batches processed", stats.batches)
        misses = CounterMetricFamily(
            "sluice_join_misses",
            "Stream records an inner stream-table join dropped: the table had no row for their key",
            labels=["step"],
        )
        for step, n in sorted(snap.join_misses.items()):
            misses.add_metric([step], n)
        yield misses
        yield _counter("sluice_commits", "Offset commits sent", stats.commits)
        ready, _ = m.readiness()
        yield _gauge("sluice_ready", "1 when /readyz answers 200", 1 if ready else 0)
        yield _gauge("sluice_brokers_up", "0 while every broker is unreachable", 0 if m.brokers_down else 1)
        if m.last_loop is not None:
            yield _gauge(
                "sluice_last_poll_age_seconds",
                "Seconds since the poll loop last came back",
                time.monotonic() - m.last_loop,
            )

        restore = GaugeMetricFamily(
            "sluice_state_restore_remaining",
            "Changelog records still to replay into each state store partition before processing starts",
            labels=["store", "partition"],
        )
        for (store, partition), n in sorted(dict(m.restore_remaining).items()):
            restore.add_metric([store, str(partition)], n)
        yield restore


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def start_metrics(runner: RunnerView, port: int | None) -> RuntimeMetrics | None:
    """The runtime's entry point: metrics for ``runner``, served on ``port`` (``None``: no metrics)."""
    if port is None:
        return None
    metrics = RuntimeMetrics(runner)
    metrics.serve(port)
    return metrics
