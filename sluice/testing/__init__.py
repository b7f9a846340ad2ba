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
    """
    source = Source(("memory",), "json", "bytes")
    end = build(source.root)
    records = [(v, None, None) for v in values]
    for step in end.path():
        if type(step).__name__ == "To":
            continue
        records = step.apply(records)
    return [(k, v) for v, k, _ in records] if keys else [v for v, _, _ in records]
