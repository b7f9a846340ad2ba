"""What an app's graph needs of Kafka, checked and created before the loop starts.

Source topics must exist (a missing one is an error naming it); output, repartition,
changelog, late-record and retry topics are created like their sources when missing.
The graph is checked against the guarantee: exactly-once takes only idempotent sinks,
and what must keep offset order (aggregations, exactly-once) refuses worker threads
and retry topics.
"""

from __future__ import annotations

from typing import TypeVar

from sluice.dataflow import MapBatch, Sink, Source, Step, Stream, To
from sluice.dataflow.steps import Aggregate
from sluice.dataflow.tables import Join
from sluice.errors import ConfigError
from sluice.errors.policy import ErrorPolicy
from sluice.kafka.admin import TopicAdmin, TopicInfo
from sluice.kafka.config import ClientSettings
from sluice.runtime.failures import CONTEXT_BYTES
from sluice.runtime.retry_topics import retry_topic
from sluice.runtime.stateful import changelog_topic

__all__ = ["Topology", "steps_below"]

_S = TypeVar("_S", bound=Step)
_COMPACTED = {"cleanup.policy": "compact"}
# records keep their event time: with time retention, a backlog of old events would be deleted
# before it is read (Kafka Streams makes the same choice for its repartition topics)
_REPARTITION = {"retention.ms": "-1", "segment.bytes": str(64 << 20)}
_LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's default message.max.bytes


class Topology:
    """The topics of one app: checked, described and created by ``prepare()``."""

    def __init__(
        self,
        name: str,
        settings: ClientSettings,
        sources: list[Source],
        policy: ErrorPolicy,
        admin: TopicAdmin,
        exactly_once: bool,
        concurrency: int,
    ) -> None:
        self.name = name
        self.settings = settings
        self.sources = sources
        self.policy = policy
        self.admin = admin
        self.exactly_once = exactly_once
        self.concurrency = concurrency
        #: every topic the app reads or writes that exists now, with its shape
        self.infos: dict[str, TopicInfo] = {}
        self.retry_topics: set[str] = set()
        self.repartition_topics: set[str] = set()
        #: librdkafka's message.max.bytes for the producer: room for the largest source record and its context
        self.max_record_bytes: int | None = None

    def prepare(self) -> list[str]:
        """Check the graph, describe the sources, create what is missing; return the topics to consume."""
        admin = self.admin
        self._check_stateful()
        self._check_joins()
        self._check_exactly_once()
        topics = [t for s in self.sources for t in s.topics]
        sources = [t for s in self.sources if not s.internal for t in s.topics]
        tables = sorted({j.table.topic for s in self.sources for j in steps_below(s.root, Join)})
        infos = admin.require_sources(list(dict.fromkeys(sources + tables)))
        self.infos = infos
        self.max_record_bytes = self._room_for_sources(sources)
        for source in self.sources:  # an internal source comes after its upstream: its shape is known
            if source.internal:
                assert source.upstream is not None
                self.repartition_topics.add(source.topics[0])
                shape = self._shape_of(source.upstream)
                joined = _joined_table(source)
                if joined is not None:  # co-partitioned with the table it joins
                    shape = (infos[joined].partitions, shape[1])
                if source.joined is not None:  # a stream-stream join topic: as wide as the wider input
                    other = self._shape_of(source.joined)
                    shape = (max(shape[0], other[0]), max(shape[1], other[1]))
                infos[source.topics[0]] = admin.ensure(source.topics[0], *shape, _REPARTITION)
            partitions, replication = self._shape_of(source)
            for step in steps_below(source.root, To):
                if step.repartition:
                    continue  # created with the internal source reading it (a join shapes it like its table)
                admin.ensure(step.topic, step.partitions or partitions, step.replication or replication)
            for step in steps_below(source.root, Aggregate):
                changelog = changelog_topic(self.name, step.store)
                infos[changelog] = admin.ensure(changelog, partitions, replication, _COMPACTED)
                if step.late is not None:
                    admin.ensure(step.late, partitions, replication)
        self._check_copartitioned()
        levels = max((len(p.retry_topics) for p in self._policies()), default=0)
        if levels:
            partitions = max(i.partitions for i in infos.values())
            replication = max(i.replication for i in infos.values())
            for level in range(1, levels + 1):
                name = retry_topic(self.name, level)
                admin.ensure(name, partitions, replication)
                self.retry_topics.add(name)
                topics.append(name)
        return topics

    def _check_copartitioned(self) -> None:
        """A stream joining a partitioned table must have as many partitions as the table's topic."""
        for source in self.sources:
            for step in steps_below(source.root, Join):
                if step.table.is_global:
                    continue
                table = self.infos[step.table.topic].partitions
                for topic in source.topics:
                    count = self.infos[topic].partitions
                    if count != table:
                        msg = (
                            f"{step.name}: the stream topic {topic!r} has {count} partitions and the table "
                            f"topic {step.table.topic!r} has {table}: a stream-table join needs them "
                            "co-partitioned (the same partition count, records keyed alike). Repartition "
                            "the stream with key_by(...) before the join, or use app.global_table(...)"
                        )
                        raise ConfigError(msg)

    def _room_for_sources(self, topics: list[str]) -> int | None:
        """librdkafka's ``message.max.bytes`` for the producer when a source takes more than its default.

        A record the source took must fit in its dead letter (the record plus its context
        headers): librdkafka would refuse it before any topic could take it.
        """
        if "message.max.bytes" in self.settings.producer_config():
            return None  # the user's choice
        limits = [int(v) for v in (self.admin.topic_config(t, "max.message.bytes") for t in topics) if v]
        needed = max(limits, default=0) + CONTEXT_BYTES
        return needed if needed > _LIBRDKAFKA_MAX_MESSAGE_BYTES else None

    def _shape_of(self, source: Source) -> tuple[int, int]:
        infos = self.infos
        return (
            max(infos[t].partitions for t in source.topics),
            max(infos[t].replication for t in source.topics),
        )

    def _check_exactly_once(self) -> None:
        if not self.exactly_once:
            return
        for source in self.sources:
            for step in steps_below(source.root, Sink):
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
        steps = [s for source in self.sources for s in steps_below(source.root, Aggregate)]
        if not steps:
            return
        stores = [s.store for s in steps]
        twice = sorted({s for s in stores if stores.count(s) > 1})
        if twice:
            msg = (
                f"two aggregations or state steps are named {twice[0]!r}: give each its own name= "
                "(it names its state store)"
            )
            raise ConfigError(msg)
        self._require_offset_order("aggregations, windows and state=True steps")

    def _check_joins(self) -> None:
        steps = [s for source in self.sources for s in steps_below(source.root, Join)]
        if not steps:
            return
        stores = [s.store for s in steps]
        twice = sorted({s for s in stores if stores.count(s) > 1})
        if twice:
            msg = f"two joins are named {twice[0]!r}: give each its own name= (it names its table's local state)"
            raise ConfigError(msg)
        # a table is brought up to each record's timestamp in offset order, on the poll thread
        self._require_offset_order("stream-table joins")

    def _require_offset_order(self, what: str) -> None:
        """Refuse what reorders records: worker threads and retry topics."""
        if self.concurrency > 1:
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
            policies.extend(s.on_error for s in steps_below(source.root, Step) if s.on_error is not None)
        return policies

    def shape(self, topic: str) -> tuple[int, int]:
        """(partitions, replication) of ``topic`` ((1, 1) when it is not one of the app's)."""
        info = self.infos.get(topic)
        return (info.partitions, info.replication) if info else (1, 1)

    def batch_shape(self, max_records: int, timeout: float) -> tuple[int, float]:
        """Records per consume and its timeout: map_batch steps ask for bigger, timelier batches."""
        for source in self.sources:
            for step in steps_below(source.root, MapBatch):
                max_records = max(max_records, step.max_rows)
                timeout = min(timeout, step.max_wait)
        return max_records, timeout

    def fills_batches(self) -> bool:
        """Whether a consume should wait to fill its batch (map_batch: a micro-batch is up to ``max_wait``)."""
        return any(steps_below(source.root, MapBatch) for source in self.sources)


def _joined_table(source: Source) -> str | None:
    """The partitioned table the first step of an internal source joins, if it is a join."""
    for child in source.root.children:
        if isinstance(child.step, Join) and not child.step.table.is_global:
            return child.step.table.topic
    return None


def steps_below(stream: Stream, kind: type[_S]) -> list[_S]:
    """The steps of type ``kind`` in the graph below ``stream``, depth first."""
    out: list[_S] = []
    for child in stream.children:
        if isinstance(child.step, kind):
            out.append(child.step)
        out.extend(steps_below(child, kind))
    return out
