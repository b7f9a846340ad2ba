"""Two things every caller of confluent-kafka needs, written once: the error inside an
exception, and a produce that waits while the producer's queue is full.

Example:
    >>> from confluent_kafka import KafkaError, KafkaException
    >>> exc = KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
    >>> kafka_error(exc).code() == KafkaError._MSG_TIMED_OUT, error_text(ValueError("plain"))
    (True, 'plain')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

__all__ = ["error_text", "kafka_error", "produce_waiting"]


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The ``KafkaError`` a ``KafkaException`` carries (None for anything else)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def error_text(exc: BaseException) -> str:
    """librdkafka's own text for a ``KafkaException``, ``str(exc)`` for anything else."""
    err = kafka_error(exc)
    return err.str() if err is not None else str(exc)


def produce_waiting(
    produce: Callable[..., None], poll: Callable[[float], Any], *args: Any, wait: float = 0.05, **kwargs: Any
) -> None:
    """``produce(*args, **kwargs)``, serving delivery reports while the producer queue is full.

    A ``BufferError`` only says that the local queue (``queue.buffering.max.*``) is full:
    polling delivers reports, which frees room; the record is never dropped for it.
    """
    while True:
        try:
            produce(*args, **kwargs)
            return
        except BufferError:
            poll(wait)
