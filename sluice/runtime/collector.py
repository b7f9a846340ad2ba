"""The one place that produces: outputs, repartition and changelog records, dead letters, retry topics.

Every record the runtime writes goes through a ``RecordCollector`` (Kafka Streams'
``RecordCollectorImpl``): it waits for room when the producer queue is full, classifies
what Kafka answers, and latches the first fatal error, which the runtime raises at its
next commit so that no caller handles delivery errors its own way.

Delivery errors come in three kinds (``classify``):

- ``"environmental"``: the cluster cannot take the record *now* (a message timeout after
  a long outage, too few in-sync replicas, a leader moving, a topic not known yet). The
  record is not at fault: it is produced again, and its source offset stays
  uncommitted meanwhile, until ``retry_for`` seconds have passed since the first
  refusal; then the app stops without committing past it.
- ``"record"``: Kafka refuses this record and would refuse it every time (too large,
  invalid, rejected by a policy): the failure policy takes it (dead-letter topic).
- ``"fatal"``: the client cannot go on (authorization, fencing, a fatal idempotence
  error): the app stops.

Example:
    >>> from confluent_kafka import KafkaError
    >>> classify(KafkaError(KafkaError._MSG_TIMED_OUT))
    'environmental'
    >>> classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    'record'
    >>> classify(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    'fatal'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import KafkaError, Producer

from sluice.errors import DeliveryError, RecordError, SluiceError
from sluice.kafka.calls import produce_waiting

__all__ = [
    "TRUNCATED_HEADER",
    "DeliveryKind",
    "RecordCollector",
    "RecordTooLarge",
    "classify",
    "size_checked",
]

logger = logging.getLogger(__name__)

DeliveryKind = Literal["environmental", "record", "fatal"]

#: a dead letter whose value had to be cut to fit the topic: the original size in bytes
TRUNCATED_HEADER = "sluice.error.truncated"

_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.POLICY_VIOLATION,
        KafkaError._INVALID_ARG,
        KafkaError._KEY_SERIALIZATION,
        KafkaError._VALUE_SERIALIZATION,
    }
)
_FATAL_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.INVALID_CONFIG,
    }
)
_SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


class RecordTooLarge(DeliveryError, RecordError):
    """An output is larger than its topic takes: refused here, before Kafka refuses its whole batch."""


def size_checked(produce: Callable[..., None], topic: str, limit: int) -> Callable[..., None]:
    """``produce`` for ``topic`` that refuses a value above ``limit`` bytes at once.

    The broker refuses a whole produce request when one record in it is too large, and
    a transaction with it; a record checked here meets the failure policy alone.

    Example:
        >>> sent = []
        >>> produce = size_checked(lambda t, v, k=None, **kw: sent.append(v), "out", 10)
        >>> produce("out", b"small")
        >>> try:
        ...     produce("out", b"x" * 50)
        ... except RecordTooLarge as exc:
        ...     print(exc)
        Message size too large for topic 'out': the record is 50 bytes, the topic takes about 10 (max.message.bytes); refused before producing
        >>> sent
        [b'small']
    """

    def produce_checked(t: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        size = len(value or b"") + len(key or b"")
        if size > limit:
            msg = (
                f"Message size too large for topic {t!r}: the record is {size} bytes, the topic takes "
                f"about {limit} (max.message.bytes); refused before producing"
            )
            raise RecordTooLarge(msg)
        produce(t, value, key, **kwargs)

    return produce_checked


def classify(err: KafkaError) -> DeliveryKind:
    """What a produce error says about the record: see the module docstring."""
    code = err.code()
    if err.fatal() or code in _FATAL_ERRORS:
        return "fatal"
    if code in _RECORD_ERRORS:
        return "record"
    return "environmental"


def too_large(err: KafkaError) -> bool:
    """The record (or its batch) is above librdkafka's or the topic's size limit."""
    return err.code() in _SIZE_ERRORS


class RecordCollector:
    """Produces through one producer; waits on a full queue; remembers the first fatal error.

    ``produce`` is the producer's own method, for hot loops that deal with
    ``BufferError`` themselves; ``send`` waits for room. Callers read ``produce`` per
    batch, not once, so that the producer can be replaced (exactly-once re-creates it
    after an abort or an indefinite error).
    """

    def __init__(self, producer: Producer, retry_for: float = 300.0) -> None:
        self.producer = producer
        self.produce: Callable[..., None] = producer.produce
        self.poll: Callable[[float], int] = producer.poll
        #: how long an environmental refusal of one record is tolerated before the app stops
        self.retry_for = retry_for
        self.fatal: SluiceError | None = None
        self.environmental = 0  # refusals produced again so far (metrics, tests)

    def replace(self, producer: Producer) -> None:
        """Produce through ``producer`` from now on."""
        self.producer = producer
        self.produce = producer.produce
        self.poll = producer.poll

    def send(self, topic: str, value: Any, key: Any = None, **kwargs: Any) -> None:
        """Produce one record, serving delivery reports while the producer queue is full."""
        produce_waiting(self.produce, self.poll, topic, value, key, **kwargs)

    def latch(self, error: SluiceError) -> None:
        """Remember ``error`` unless an earlier one is latched already; the runtime stops on it."""
        if self.fatal is None:
            self.fatal = error

    def check(self) -> None:
        """Raise the latched fatal error, if any (before a commit)."""
        if self.fatal is not None:
            raise self.fatal

    def refused_for_too_long(self, since: float, now: float | None = None) -> bool:
        """An environmental refusal first seen at ``since`` (monotonic) has lasted past ``retry_for``."""
        return (time.monotonic() if now is None else now) - since > self.retry_for


def truncate_to_fit(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> tuple[bytes | None, list[tuple[str, bytes]]] | None:
    """Cut ``value`` so that the record fits in ``limit`` bytes, with a header giving its size.

    Returns None when even an empty value would not fit (key and headers too large).

    Example:
        >>> value, headers = truncate_to_fit(b"x" * 5000, b"k", [], 2048)
        >>> len(value) < 2048, headers[-1]
        (True, ('sluice.error.truncated', b'5000'))
    """
    size = len(value or b"")
    marker = (TRUNCATED_HEADER, str(size).encode())
    overhead = 512 + len(key or b"") + sum(len(k) + len(v or b"") for k, v in [*headers, marker])
    room = limit - overhead
    if room < 0:
        return None
    return (value or b"")[:room], [*headers, marker]
