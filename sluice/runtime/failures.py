"""Failed records: in-place retries, then the dead-letter topic, a counted skip, or a stop.

A failure is ``(index, record, exception)``: the record's position in the list the
step received, so that records recovered by a retry take their place again and the
order of records (and so per-key order) is kept.

The dead-letter record is the original Kafka record, key, value, timestamp and
headers byte for byte, plus ``sluice.error.*`` headers with its context. Its source
offset is committed only once the dead letter is acknowledged (it counts against
the record's batch); if the dead-letter topic cannot be written the app stops.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaException

from sluice.dataflow.steps import Record
from sluice.errors import (
    DeliveryError,
    DeserializationError,
    EnvironmentalError,
    RecordError,
    SluiceError,
    StepError,
)
from sluice.errors.dead_letter import DeadLetterContext
from sluice.errors.policy import ErrorPolicy
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.calls import kafka_error
from sluice.runtime.clock import SYSTEM_CLOCK, Clock
from sluice.runtime.collector import RecordCollector
from sluice.runtime.retry_topics import (
    RETRY_DUE,
    RETRY_LEVEL,
    is_internal_header,
    parse_retry_headers,
    retry_topic,
)
from sluice.runtime.tracker import Batch

__all__ = ["DeadLetterError", "DeadLetterOrigin", "FailureRouter", "IndexedFailure"]

logger = logging.getLogger(__name__)

IndexedFailure = tuple[int, Record, BaseException]
Retry = Callable[[Record], list[Record]]

_FATAL_KIND: dict[str, type[SluiceError]] = {
    "deserialize": DeserializationError,
    "process": StepError,
    "sink": StepError,
    "produce": DeliveryError,
}


#: room for the ``sluice.error.*`` headers above a source record's size (their values are bounded)
CONTEXT_BYTES = 65536


class DeadLetterError(SluiceError):
    """The dead-letter topic could not be written: the app stops rather than lose the record."""


@dataclass(frozen=True)
class DeadLetterOrigin:
    """The ``source`` of a dead letter's (or parked record's) delivery report: where it goes, whose it is."""

    topic: str
    #: the failed record, as ``topic[partition]@offset``
    record: str
    #: the consumed partition it came from (what a revoke forgets)
    partition: tuple[str, int]
    #: what the dead letter was produced with (a delivery report carries neither)
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = 0
    #: its value was cut to fit the topic already
    truncated: bool = False


class _Unsent:
    """A record ``produce`` refused at once, in the shape of a delivery report's message."""

    def __init__(self, topic: str, value: Any, key: Any, kwargs: dict[str, Any]) -> None:
        self._topic, self._value, self._key = topic, value, key
        self._timestamp = kwargs.get("timestamp", 0)
        self._headers = kwargs.get("headers")

    def topic(self) -> str:
        return self._topic

    def value(self) -> Any:
        return self._value

    def key(self) -> Any:
        return self._key

    def partition(self) -> int:
        return -1

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> Any:
        return self._headers


class _RateLimitedWarning:
    """At most one warning line per ``interval`` seconds, then how many were suppressed."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def __call__(self, text: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return
        if self.suppressed:
            text += f" (and {self.suppressed} more failures since the last warning)"
            self.suppressed = 0
        self.next_at = now + self.interval
        logger.warning(text, *args)


class FailureRouter:
    """Applies failure policies for one running app."""

    def __init__(
        self,
        app: str,
        policy: ErrorPolicy,
        collector: RecordCollector,
        admin: TopicAdmin,
        topic_shape: Callable[[str], tuple[int, int]],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.app = app
        #: the clock of backoffs, waits for an unavailable sink and retry-topic due times
        self.clock = clock
        self.policy = policy
        self._collector = collector
        self._admin = admin
        self._topic_shape = topic_shape
        self._ready_topics: set[str] = set()
        self._warn = _RateLimitedWarning()
        self.fatal: SluiceError | None = None
        self.dead_letters: Counter[tuple[str, str]] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()
        self.retried = 0
        self.recovered = 0
        self.retry_budget = 30.0
        self.parked = 0
        self._lock = threading.RLock()
        self._local = threading.local()

    # per thread: workers of a parallel app each process their own record
    @property
    def origin(self) -> DeadLetterContext | None:
        """While a record from a retry topic is processed: where it came from originally."""
        return getattr(self._local, "origin", None)

    @origin.setter
    def origin(self, value: DeadLetterContext | None) -> None:
        self._local.origin = value

    @property
    def retry_level(self) -> int:
        return getattr(self._local, "retry_level", 0)

    @retry_level.setter
    def retry_level(self, value: int) -> None:
        self._local.retry_level = value

    # ------------------------------------------------------------------ entry points
    def handle(
        self,
        stage: str,
        step: str,
        policy: ErrorPolicy | None,
        failures: list[IndexedFailure],
        retry: Retry | None,
        batch: Batch,
        backoff: bool = True,
    ) -> dict[int, list[Record]]:
        """Retry ``failures`` in place, dispose of the ones that still fail; return recovered outputs by index."""
        policy = policy or self.policy
        recovered: dict[int, list[Record]] = {}
        pending = failures
        attempts = 1
        if retry is not None:
            for attempt in range(1, policy.retries + 1):
                if not pending:
                    break
                # a RecordError fails the same way every time: retry without waiting
                if backoff and not all(isinstance(exc, RecordError) for _i, _r, exc in pending):
                    self._sleep(policy.delay(attempt))
                still: list[IndexedFailure] = []
                for index, record, _exc in pending:
                    with self._lock:
                        self.retried += 1
                    try:
                        recovered[index] = retry(record)
                        with self._lock:
                            self.recovered += 1
                    except Exception as exc:  # noqa: BLE001 - still failing: next attempt or disposal
                        still.append((index, record, exc))
                pending = still
                attempts += 1
        for _index, _record, exc in pending:
            if isinstance(exc, EnvironmentalError):
                raise exc  # a dependency is down, the record is not at fault: never dead-lettered or skipped
        for _index, record, exc in pending:
            self.dispose(stage, step, policy, record[2], exc, attempts, batch)
        return recovered

    def start_batch(self) -> None:
        """A new batch on the poll thread: its in-place retries may wait ``retry_budget`` seconds in all."""
        self._local.budget = self.retry_budget

    def sleep(self, seconds: float) -> None:
        """Wait before an in-place retry, within the poll thread's budget."""
        self._sleep(seconds)

    def _sleep(self, seconds: float) -> None:
        # past the budget, retries go on without waiting: the poll loop must come back
        # well within max.poll.interval.ms however many records of a batch fail. Worker
        # threads of a parallel app do not block the poll loop: no budget there.
        budget = getattr(self._local, "budget", float("inf"))
        seconds = min(seconds, budget)
        if seconds > 0:
            self._local.budget = budget - seconds
            self.clock.sleep(seconds)

    def dispose(
        self,
        stage: str,
        step: str,
        policy: ErrorPolicy,
        msg: Any,
        exc: BaseException,
        attempts: int,
        batch: Batch,
        park: bool = True,
    ) -> None:
        """After the retries: dead letter, skip or stop, per ``policy``.

        ``park=False``: straight to the dead-letter topic, past any retry topic (a record
        Kafka refuses as such would be refused after every delay).
        """
        origin, level = self.origin, self.retry_level
        if origin is None and msg.topic().startswith(f"{self.app}.retry."):
            # a parked record disposed of outside its run (its output refused later): it keeps
            # the origin and level its headers carry, so it moves on, never back to level 1
            origin = DeadLetterContext.from_headers(msg.headers())
            level = parse_retry_headers(msg.headers())[0]
        if origin is not None:
            where = f"{origin.topic}[{origin.partition}]@{origin.offset}"
            attempts += origin.attempts
        else:
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        if policy.action == "fail":
            text = (
                f"{step} failed on record {where} after {attempts} attempt(s): {type(exc).__name__}: {exc}; "
                f"stopping (on_error fail=True): nothing at or after this offset is committed"
            )
            error = _FATAL_KIND[stage](text)
            error.__cause__ = exc
            self.fatal = error
            raise error
        exc_name = type(exc).__name__
        if policy.action == "skip":
            self.skipped[(stage, exc_name)] += 1
            self._warn(
                "%s: skipped record %s at %s (%s): %s: %s", self.app, where, step, stage, exc_name, exc
            )
            return
        ts = msg.timestamp()[1]
        context = DeadLetterContext(
            topic=origin.topic if origin else msg.topic(),
            partition=origin.partition if origin else msg.partition(),
            offset=origin.offset if origin else msg.offset(),
            timestamp=origin.timestamp if origin else ts,
            stage=stage,
            step=step,
            exception=exc_name,
            message=str(exc),
            stacktrace="".join(traceback.format_exception(exc)),
            attempts=attempts,
            app=self.app,
        )
        headers = [h for h in msg.headers() or () if not is_internal_header(h[0])] + context.to_headers()
        if park and level < len(policy.retry_topics):
            due = int(self.clock.time() * 1000 + policy.retry_topics[level] * 1000)
            headers += [(RETRY_LEVEL, str(level + 1).encode()), (RETRY_DUE, str(due).encode())]
            target = self._ensure_topic(retry_topic(self.app, level + 1), context.topic)
            self.parked += 1
            verb = f"parked in retry topic {target} for {policy.retry_topics[level]:g}s"
        else:
            target = self._dead_letter_topic(policy, context.topic)
            self.dead_letters[(stage, exc_name)] += 1
            verb = f"sent to dead-letter topic {target}"
        batch.expect(1)
        dead = DeadLetterOrigin(
            target, where, (msg.topic(), msg.partition()), tuple(headers), ts if ts > 0 else 0
        )
        self._produce_forced(
            dead,
            batch,
            msg.value(),
            msg.key(),
            timestamp=ts if ts > 0 else 0,
            headers=headers,
            on_delivery=partial(batch.on_delivery, dead),
        )
        self._warn(
            "%s: record %s failed at %s (%s) after %d attempt(s): %s: %s; %s",
            self.app,
            where,
            step,
            stage,
            attempts,
            exc_name,
            exc,
            verb,
        )

    def delivery_failed(
        self,
        step: str,
        policy: ErrorPolicy | None,
        source: Any,
        err: Any,
        out: Any,
        batch: Batch,
        attempt: int,
    ) -> None:
        """Kafka refused an output as such (too large, invalid): its source goes to the dead-letter topic.

        Refusals of the moment (an outage, too few replicas) never come here: the
        runtime produces those outputs again (``sluice.runtime.collector``).
        """
        exc = DeliveryError(f"Kafka refused the output to {out.topic()!r}: {err.str()}")
        self.dispose("produce", step, policy or self.policy, source, exc, attempt, batch, park=False)

    # ------------------------------------------------------------------ dead-letter topic
    def _dead_letter_topic(self, policy: ErrorPolicy, source_topic: str) -> str:
        return self._ensure_topic(policy.dead_letter or f"{self.app}.dlq", source_topic)

    def _ensure_topic(self, topic: str, source_topic: str) -> str:
        if topic not in self._ready_topics:
            partitions, replication = self._topic_shape(source_topic)
            self._admin.ensure(topic, partitions, replication, self._room_for(source_topic))
            self._ready_topics.add(topic)
        return topic

    def _room_for(self, source_topic: str) -> dict[str, str]:
        """Topic config for a dead-letter or retry topic: room for its source's largest record plus context."""
        limit = self._admin.topic_config(source_topic, "max.message.bytes")
        return {"max.message.bytes": str(int(limit) + CONTEXT_BYTES)} if limit else {}

    def _produce_forced(
        self, where: DeadLetterOrigin, batch: Batch, value: Any, key: Any, **kwargs: Any
    ) -> None:
        """Write a dead letter or parked record; one Kafka refuses at once is disposed of like a late refusal."""
        try:
            self._collector.send(where.topic, value, key, **kwargs)
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is None:
                raise
            batch.on_delivery(where, err, _Unsent(where.topic, value, key, kwargs))

    def dead_letter_refused(self, where: DeadLetterOrigin, err: Any) -> DeadLetterError:
        """The error that stops the app when a dead letter cannot be written."""
        return DeadLetterError(
            f"could not write the dead letter of record {where.record} to {where.topic!r}: {err.str()}; "
            f"stopping without committing it (fix the dead-letter topic, then restart)"
        )

    def counters(self) -> dict[str, dict[str, int]]:
        """Failure counts per ``stage/exception``: dead letters, skips, retries."""
        return {
            "dead_letters": {f"{s}/{e}": n for (s, e), n in self.dead_letters.items()},
            "skipped": {f"{s}/{e}": n for (s, e), n in self.skipped.items()},
            "retries": {
                "attempted": self.retried,
                "recovered": self.recovered,
                "parked": self.parked,
                "environmental": self._collector.environmental,
            },
        }
