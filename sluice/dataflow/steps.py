"""The operators of a dataflow, each a plain step over a list of records.

A record is a tuple ``(value, key, meta)``: ``meta`` belongs to the runtime and is
carried through untouched. Each step turns the list of records of one consumed batch
into a new list, so the per-record cost is the user's function plus a list operation.
``apply_each`` runs the same step one record at a time to isolate the records whose
function raised, and is used only after ``apply`` failed for the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Filter", "FlatMap", "KeyBy", "Map", "Record", "Sink", "Step", "To"]

Record = tuple[Any, Any, Any]
Failure = tuple[Record, BaseException]


@dataclass(frozen=True)
class Step:
    """Base of all operators. ``name`` identifies the step in errors and dead letters."""

    name: str

    def apply(self, records: list[Record]) -> list[Record]:
        raise NotImplementedError

    def apply_one(self, record: Record) -> list[Record]:
        return self.apply([record])

    def apply_each(self, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        """Apply record by record; return the outputs and the (record, exception) that failed."""
        out: list[Record] = []
        failed: list[Failure] = []
        for record in records:
            try:
                out.extend(self.apply_one(record))
            except Exception as exc:  # noqa: BLE001 - isolated and handed to the error policy
                failed.append((record, exc))
        return out, failed


@dataclass(frozen=True)
class Filter(Step):
    """Keep the records whose value makes ``fn`` true."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        return [r for r in records if fn(r[0])]


@dataclass(frozen=True)
class Map(Step):
    """Replace each value by ``fn(value)``; key and meta are kept."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        return [(fn(v), k, m) for v, k, m in records]


@dataclass(frozen=True)
class FlatMap(Step):
    """Replace each value by the values of the iterable ``fn(value)`` (zero or more)."""

    fn: Callable[[Any], Iterable[Any]]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        return [(out, k, m) for v, k, m in records for out in fn(v)]


@dataclass(frozen=True)
class KeyBy(Step):
    """Set each record's key to ``fn(value)``; output topics are partitioned by it."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        return [(v, fn(v), m) for v, _k, m in records]


@dataclass(frozen=True)
class Sink(Step):
    """Call ``fn(value)`` for each record (a side effect); the records pass on unchanged."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        for r in records:
            fn(r[0])
        return records


@dataclass(frozen=True)
class To(Step):
    """Write each record to ``topic``. The runtime does the producing; records pass on unchanged.

    ``value`` is the output format (``None``: like the input); ``partitions`` and
    ``replication`` are used when the topic must be created (``None``: as the source).
    ``keyed`` tells whether a ``key_by`` upstream replaced the input record's key.
    """

    topic: str
    value: Any = None
    partitions: int | None = None
    replication: int | None = None
    keyed: bool = False

    def apply(self, records: list[Record]) -> list[Record]:  # pragma: no cover - the runtime binds it
        msg = "To steps are executed by the runtime"
        raise TypeError(msg)
