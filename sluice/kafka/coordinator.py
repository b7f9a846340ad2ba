"""Retry of group-coordinator calls while a broker is still loading its coordinators.

A broker that has just started (or just took over a partition of ``__consumer_offsets``
or ``__transaction_state``) answers ``COORDINATOR_LOAD_IN_PROGRESS``,
``NOT_COORDINATOR`` or ``COORDINATOR_NOT_AVAILABLE`` for some seconds. These errors
say "ask again shortly", not "something is wrong": every one-shot coordinator call of
sluice's tools (committed offsets, group descriptions, commits) goes through
:func:`retry_coordinator`, which asks again for a bounded time.

Example:
    >>> from confluent_kafka import KafkaError, KafkaException
    >>> answers = [KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)), "committed"]
    >>> def call():
    ...     answer = answers.pop(0)
    ...     if isinstance(answer, Exception):
    ...         raise answer
    ...     return answer
    >>> retry_coordinator(call, what="reading committed offsets", sleep=lambda s: None)
    'committed'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "COORDINATOR_RETRY_S",
    "RETRIABLE_COORDINATOR_ERRORS",
    "is_coordinator_retriable",
    "retry_coordinator",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: how long a coordinator call is retried by default: a fresh broker loads its
#: coordinators in seconds; half a minute covers a slow machine without hiding a dead cluster
COORDINATOR_RETRY_S = 30.0

RETRIABLE_COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._WAIT_COORD,
    }
)


def is_coordinator_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` is a Kafka error that a coordinator still loading (or moving) answers.

    Example:
        >>> from confluent_kafka import KafkaError, KafkaException
        >>> is_coordinator_retriable(KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)))
        True
        >>> is_coordinator_retriable(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
        False
    """
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.code() in RETRIABLE_COORDINATOR_ERRORS


def retry_coordinator(
    call: Callable[[], T],
    *,
    what: str = "a group coordinator call",
    budget: float = COORDINATOR_RETRY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Return ``call()``, asking again while it fails with a retriable coordinator error.

    Args:
        call: the coordinator call, e.g. ``lambda: consumer.committed(parts, timeout=10)``.
        what: what the call does, for the log line of each retry.
        budget: seconds after which the last retriable error is raised as it is.
        sleep: how to wait between attempts (tests pass a no-op).

    Returns:
        What ``call`` returned.

    Raises:
        KafkaException: a non-retriable error at once; a retriable one once ``budget`` is spent.

    Example:
        >>> retry_coordinator(lambda: 42)
        42
    """
    deadline = time.monotonic() + budget
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not is_coordinator_retriable(exc) or time.monotonic() + delay > deadline:
                raise
            logger.info("%s: %s; asking again in %.1fs", what, exc.args[0].str(), delay)
        sleep(delay)
        delay = min(delay * 2, 1.0)
