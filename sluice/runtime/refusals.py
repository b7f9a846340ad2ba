"""Records Kafka refused: produced again when the refusal is of the moment, dead-lettered when it is the record's.

The record collector's delivery reports put refused records on their batches
(``Batch.failures``); the poll loop hands those batches here. Each refusal is
classified (``sluice.runtime.collector.classify``):

- environmental (an outage, too few replicas, a missing topic): the record is produced
  again after a backoff, its batch (so its source offset) waiting for it, until the
  refusal has lasted ``retry_for``; then the app stops without committing past it;
- the record's own (too large, invalid): the failure policy takes its source record
  (dead-letter topic, skipping retry topics, which would only delay the same refusal);
  a dead letter too large for the dead-letter topic is cut to fit, with a header
  giving its original size;
- fatal (authorization, fencing): the app stops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from sluice.errors import SluiceError
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.calls import kafka_error
from sluice.runtime.collector import (
    TRUNCATED_HEADER,
    RecordCollector,
    classify,
    too_large,
    truncate_to_fit,
)
from sluice.runtime.executor import Executor
from sluice.runtime.failures import DeadLetterOrigin, FailureRouter
from sluice.runtime.tracker import Batch, TopicPartitionKey

__all__ = ["Refusals"]

logger = logging.getLogger(__name__)

_RECORD_OVERHEAD = 512  # bytes of a record batch and record header, generously


class Refusals:
    """Disposes of refused records for one running app (poll thread only)."""

    def __init__(
        self,
        app: str,
        collector: RecordCollector,
        router: FailureRouter,
        executor: Executor,
        admin: TopicAdmin,
        producer_config: dict[str, Any],
        failed: list[Batch],
    ) -> None:
        self.app = app
        self.collector = collector
        self.router = router
        self.executor = executor
        self.admin = admin
        self.producer_config = producer_config
        #: batches with refused records, filled by their delivery reports
        self.failed = failed
        #: refused records waiting for their next attempt, in the order they were refused
        self.waiting: list[_Reproduce] = []
        #: set when a refusal stops the app
        self.fatal: SluiceError | None = None
        self._limits: dict[str, int] = {}  # max.message.bytes per topic

    def _limit(self, topic: str) -> int:
        limit = self._limits.get(topic)
        if limit is None:
            limit = self._limits[topic] = self.admin.max_message_bytes(topic, self.producer_config)
        return limit

    def fits(self, source: object, out: Any) -> bool:
        """``out`` alone is well within its topic's record size limit."""
        headers, _ts = _produced_with(source)
        size = len(out.value() or b"") + len(out.key() or b"")
        size += sum(len(k) + len(v or b"") for k, v in headers or ())
        return size + _RECORD_OVERHEAD <= self._limit(out.topic())

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Drop the waiting records of revoked or lost partitions (their next owner redoes them)."""
        self.waiting = [r for r in self.waiting if r.partition not in partitions]

    def dispose(self) -> None:
        """Records Kafka refused (after librdkafka's own retries): produce again, dead-letter, or stop."""
        batches, self.failed[:] = list(self.failed), []
        now = time.monotonic()
        for batch in batches:
            failures, batch.failures = batch.failures, []
            batch.registry = self.failed
            for origin, err, out in failures:
                source, attempt, since = origin, 1, now
                if isinstance(origin, _Reproduced):
                    source, attempt, since = origin.source, origin.attempt, origin.since
                try:
                    self._dispose_one(batch, source, err, out, attempt, since, now)
                except SluiceError as exc:
                    self.fatal = exc
                    batch.failures.append((origin, err, out))
                    return
            if batch.failures and batch not in self.failed:
                self.failed.append(batch)

    def _dispose_one(
        self, batch: Batch, source: object, err: KafkaError, out: Any, attempt: int, since: float, now: float
    ) -> None:
        """One refused record: environmental refusals are produced again, record-level ones dead-lettered."""
        assert self.router is not None and self.executor is not None and self.collector is not None
        kind = classify(err)
        if too_large(err) and self.fits(source, out):
            # refused with a larger record it was batched with (the broker refuses whole
            # batches): not this record's fault; alone, it goes through
            kind = "environmental"
        dead = isinstance(source, DeadLetterOrigin)
        what = f"the dead letter of record {source.record}" if dead else f"an output of {_where(source)}"
        if kind == "environmental":
            if self.collector.refused_for_too_long(since, now):
                msg = (
                    f"Kafka has refused {what} to {out.topic()!r} for {now - since:.0f}s ({err.str()}); "
                    f"stopping without committing past it (raise on_error(retry_for=...) to wait longer)"
                )
                raise SluiceError(msg)
            if attempt == 1:
                logger.warning(
                    "%s: Kafka refused %s to %r (%s): producing it again (its offset is not committed meanwhile)",
                    self.app,
                    what,
                    out.topic(),
                    err.str(),
                )
            self.collector.environmental += 1
            self._schedule(batch, source, out, attempt, since, now + min(5.0, 0.1 * 2 ** (attempt - 1)))
            return
        if kind == "fatal":
            msg = (
                f"Kafka refused {what} to {out.topic()!r}: {err.str()}; stopping (this error is not retried)"
            )
            raise SluiceError(msg)
        if dead:
            assert isinstance(source, DeadLetterOrigin)
            fitted = None
            if too_large(err) and not source.truncated:
                limit = self._limit(out.topic())
                fitted = truncate_to_fit(out.value(), out.key(), list(source.headers), limit)
            if fitted is None:
                raise self.router.dead_letter_refused(source, err)
            value, headers = fitted
            logger.warning(
                "%s: %s is too large for %r (%s): its value is cut to %d bytes (header %s)",
                self.app,
                what,
                out.topic(),
                err.str(),
                len(value or b""),
                TRUNCATED_HEADER,
            )
            cut = replace(source, headers=tuple(headers), truncated=True)
            self._schedule(batch, cut, _Rebuilt(out, value), attempt, since, now)
            return
        step, policy = self.executor.emitter_for(out.topic())
        self.router.delivery_failed(step, policy, source, err, out, batch, attempt)

    def _schedule(
        self, batch: Batch, source: object, out: Any, attempt: int, since: float, due: float
    ) -> None:
        """Produce ``out`` again at ``due``; its batch (and so its offset) waits for it."""
        batch.expect(1)
        self.waiting.append(_Reproduce(batch, source, out, attempt + 1, since, due, _partition_of(source)))

    def produce_due(self) -> None:
        """Produce again the refused records whose backoff is over, in the order they were refused."""
        now = time.monotonic()
        due = [r for r in self.waiting if r.due <= now]
        if not due:
            return
        self.waiting = [r for r in self.waiting if r.due > now]
        for r in due:
            out, origin = r.out, _Reproduced(r.source, r.attempt, r.since)
            headers, timestamp = _produced_with(r.source)
            kwargs: dict[str, Any] = {"timestamp": timestamp, "headers": headers}
            if out.partition() >= 0:
                kwargs["partition"] = out.partition()
            try:
                self.collector.send(
                    out.topic(),
                    out.value(),
                    out.key(),
                    on_delivery=partial(r.batch.on_delivery, origin),
                    **kwargs,
                )
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is None:
                    raise
                r.batch.on_delivery(origin, err, out)


@dataclass(frozen=True)
class _Reproduced:
    """The source of a record produced again after Kafka refused it, which attempt this is, since when."""

    source: object
    attempt: int
    since: float


@dataclass(frozen=True)
class _Reproduce:
    """A refused record waiting for its next attempt (``due``, monotonic seconds)."""

    batch: Batch
    source: object
    out: Any
    attempt: int
    since: float
    due: float
    #: the consumed partition it belongs to (a revoke forgets it)
    partition: TopicPartitionKey | None


class _Rebuilt:
    """A refused record with a new value (a dead letter cut to fit its topic)."""

    def __init__(self, out: Any, value: bytes | None) -> None:
        self._out, self._value = out, value

    def topic(self) -> str:
        return self._out.topic()

    def key(self) -> Any:
        return self._out.key()

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._out.partition()


def _produced_with(source: object) -> tuple[Any, int]:
    """The headers and timestamp a refused record was produced with: a delivery report has neither.

    An output keeps its source's (``sluice.runtime.executor``: emitters produce with the
    source message's headers and timestamp); a dead letter's travel in its origin.
    """
    if isinstance(source, DeadLetterOrigin):
        return list(source.headers), source.timestamp
    try:
        ts = source.timestamp()[1]  # type: ignore[attr-defined]
        return source.headers(), ts if ts > 0 else 0  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None, 0


def _partition_of(source: object) -> TopicPartitionKey | None:
    if isinstance(source, DeadLetterOrigin):
        return source.partition
    try:
        return (source.topic(), source.partition())  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


def _where(source: object) -> str:
    tp = _partition_of(source)
    if tp is None:
        return "a record"
    try:
        return f"{tp[0]}[{tp[1]}]@{source.offset()}"  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return f"{tp[0]}[{tp[1]}]"
