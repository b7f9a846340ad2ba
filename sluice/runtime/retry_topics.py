"""Delayed retry topics: a record that still fails after its in-place retries is parked in
``<app>.retry.<n>`` and tried again once its delay has passed, before the dead-letter topic.

A parked record is the original record (key, value, timestamp, headers) plus the
``sluice.error.*`` headers of its last failure and ``sluice.retry.level`` /
``sluice.retry.due`` (epoch ms). The app consumes its retry topics like its sources:
a record that is not due yet pauses its retry partition, which is seeked back to it
and resumed at the due time; a due record is run again through the path of the step
that failed (the steps before it are re-run on the original value, the branches that
already succeeded are not).

Ordering trade-off: while a record waits in a retry topic, later records of the same
key go on, so per-key order is given up for the records that go through retry topics
(as in Spring Kafka's retryable topics). Use in-place retries only when order matters.

Example:
    >>> retry_topic("clicks", 2)
    'clicks.retry.2'
    >>> parse_retry_headers([("sluice.retry.level", b"1"), ("sluice.retry.due", b"1700000000000")])
    (1, 1700000000000)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RETRY_DUE", "RETRY_LEVEL", "is_internal_header", "parse_retry_headers", "retry_topic"]

RETRY_LEVEL = "sluice.retry.level"
RETRY_DUE = "sluice.retry.due"
_INTERNAL_PREFIXES = ("sluice.error.", "sluice.retry.")


def retry_topic(app: str, level: int) -> str:
    """The name of the ``level``-th (1-based) retry topic of ``app``."""
    return f"{app}.retry.{level}"


def parse_retry_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> tuple[int, int]:
    """``(level, due_ms)`` of a parked record (``(0, 0)`` when the headers are missing)."""
    level, due = 0, 0
    for name, value in headers or ():
        if name == RETRY_LEVEL and value:
            level = int(value)
        elif name == RETRY_DUE and value:
            due = int(value)
    return level, due


def is_internal_header(name: str) -> bool:
    """Headers sluice adds to parked and dead records, dropped when the record is re-parked."""
    return name.startswith(_INTERNAL_PREFIXES)
