"""The contract between ``Stream.sink()`` and sinks that write whole batches (databases, files).

A plain callable passed to ``sink()`` is called once per record. An object with a
``write_batch`` method is called once per consumed batch with every row of it, and
must have made them durable (committed its transaction, flushed its file) when it
returns: the runtime commits the rows' offsets only after that. When
``write_batch`` raises, the runtime calls it again one row at a time to find the
rows that fail; those go through the failure policy (retries, dead letter...). So
a batch sink must be idempotent for rows it already wrote (upserts by key), as every
at-least-once sink must be.

Example:
    >>> class Collect:
    ...     def __init__(self):
    ...         self.rows = []
    ...     def write_batch(self, rows):
    ...         self.rows.extend(row.value for row in rows)
    >>> isinstance(Collect(), BatchSink)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["BatchSink", "SinkRow"]


class SinkRow(NamedTuple):
    """One record reaching a batch sink: its value and where it came from."""

    value: Any
    key: Any
    topic: str
    partition: int
    offset: int
    timestamp: int
    headers: list[tuple[str, bytes | None]] | None


@runtime_checkable
class BatchSink(Protocol):
    """A sink that writes a batch of rows durably in one call (one transaction, one flush)."""

    def write_batch(self, rows: Sequence[SinkRow]) -> None: ...
