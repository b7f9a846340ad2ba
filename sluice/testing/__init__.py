"""Helpers for users' unit tests, without Kafka.

- ``TestDriver``: the app's real runtime on an in-memory Kafka (send records, read
  outputs and dead letters); the ``sluice_driver`` pytest fixture makes them.
- ``run_steps``: run dataflow steps on values, nothing else.

Example:
    >>> run_steps(lambda s: s.filter(lambda v: v > 1).map(str), [1, 2, 3])
    ['2', '3']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sluice.dataflow import Source, Stream
from sluice.testing._driver import OutputRecord, TestDriver

__all__ = ["OutputRecord", "TestDriver", "run_steps"]


def run_steps(build: Callable[[Stream], Stream], values: Iterable[Any], *, keys: bool = False) -> list[Any]:
    """Build steps on a fresh stream with ``build`` and run ``values`` through them.

    Args:
        build: receives the source ``Stream``, returns the stream whose output you want.
        values: input values (as if already deserialized).
        keys: return ``(key, value)`` pairs instead of values.

    Functions with ``meta=True`` see topic ``"memory"``, partition 0, offsets from 0,
    timestamp 0 and no headers; ``state=True`` keeps state in memory (no TTL).
    """
    source = Source(("memory",), "json", "bytes")
    end = build(source.root)
    records = [(v, None, _MemoryMessage(i)) for i, v in enumerate(values)]
    for step in end.path():
        if type(step).__name__ == "To":
            continue
        records = step.apply(records)
    return [(k, v) for v, k, _ in records] if keys else [v for v, _, _ in records]


class _MemoryMessage:
    """What ``run_steps`` records carry in place of a Kafka message."""

    __slots__ = ("_offset",)

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "memory"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def headers(self) -> None:
        return None

    def key(self) -> None:
        return None

    def value(self) -> None:
        return None
