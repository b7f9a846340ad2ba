"""Aggregations: how one group's values fold into an accumulator, and what it reports.

An ``Aggregation`` splits the user's function from the fold: ``extract`` runs the
user's field function once per record (a failure there is that record's failure),
``add`` folds the extracted value into the accumulator, ``result`` reports it.
Accumulators are JSON values, because they are stored on disk and in the changelog.

Example:
    >>> mean = Aggregation.mean(lambda v: v["price"])
    >>> acc = mean.init()
    >>> for price in (10, 20):
    ...     acc = mean.add(acc, mean.extract({"price": price}))
    >>> mean.result(acc)
    15.0
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Aggregation"]


def _one(_value: Any) -> None:
    return None


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Aggregation:
    """A fold over the values of one group (and window).

    ``name`` is the operator (``count``, ``sum``...): it names the state store by default.
    """

    name: str
    extract: Callable[[Any], Any]
    init: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    result: Callable[[Any], Any]

    def fold(self, values: Iterable[Any]) -> Any:
        """The result over already extracted ``values``, in order."""
        acc = self.init()
        add = self.add
        for value in values:
            acc = add(acc, value)
        return self.result(acc)

    @classmethod
    def count(cls) -> Aggregation:
        return cls("count", _one, int, lambda acc, _v: acc + 1, _identity)

    @classmethod
    def sum(cls, fn: Callable[[Any], Any]) -> Aggregation:
        return cls("sum", fn, int, lambda acc, v: acc + v, _identity)

    @classmethod
    def min(cls, fn: Callable[[Any], Any]) -> Aggregation:
        return cls("min", fn, list, lambda acc, v: [v] if not acc or v < acc[0] else acc, _first)

    @classmethod
    def max(cls, fn: Callable[[Any], Any]) -> Aggregation:
        return cls("max", fn, list, lambda acc, v: [v] if not acc or v > acc[0] else acc, _first)

    @classmethod
    def mean(cls, fn: Callable[[Any], Any]) -> Aggregation:
        return cls("mean", fn, lambda: [0, 0], lambda acc, v: [acc[0] + v, acc[1] + 1], _mean)

    @classmethod
    def reduce(cls, fn: Callable[[Any, Any], Any]) -> Aggregation:
        # the first value becomes the accumulator: a copy, as fn may change it in place
        return cls(
            "reduce", _identity, list, lambda acc, v: [fn(acc[0], v)] if acc else [copy.deepcopy(v)], _first
        )

    @classmethod
    def agg(cls, init: Any, fn: Callable[[Any, Any], Any]) -> Aggregation:
        start = init if callable(init) else (lambda: copy.deepcopy(init))  # never share a mutable init
        return cls("agg", _identity, start, fn, _identity)


def _first(acc: list[Any]) -> Any:
    return acc[0] if acc else None


def _mean(acc: list[Any]) -> float | None:
    return acc[0] / acc[1] if acc[1] else None
