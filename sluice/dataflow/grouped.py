"""Aggregations over a stream's keys, optionally in event-time windows.

``stream.count()`` (and ``sum``, ``min``, ``max``, ``mean``, ``reduce``, ``agg``)
aggregates per record key; ``stream.window(...)`` first cuts time into windows.
Either returns an ``Aggregated``, which becomes a stream again with ``.final()``
(one result per window once it closes) or ``.current()`` (every update)::

    (app.stream("events")
        .key_by(lambda e: e["user"])
        .window(tumbling="1m", grace="10s")
        .count()
        .final()
        .to("clicks-per-user"))

The group key is the record key (the one ``key_by`` set). When a ``key_by`` comes
before the aggregation, the records first go through the repartition topic
``<app>-<store>-repartition`` so that every record of a key reaches the same state
(``key_by(fn, repartition=False)`` when the input is already partitioned by that key).
State lives in a local store per partition, backed by the compacted changelog topic
``<app>-<store>-changelog``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sluice._names import check_topic_name
from sluice.dataflow.steps import Aggregate, KeyBy
from sluice.errors import ConfigError
from sluice.errors.policy import coerce_policy
from sluice.state.aggregations import Aggregation
from sluice.state.windows import Windows

if TYPE_CHECKING:
    from sluice.dataflow.stream import OnError, Stream

__all__ = ["Aggregated", "Aggregations", "WindowedStream"]

_STORE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class Aggregations:
    """The aggregation operators, shared by ``Stream`` (per key) and ``WindowedStream`` (per key and window)."""

    def _aggregate(self, aggregation: Aggregation, name: str | None, on_error: OnError) -> Aggregated:
        raise NotImplementedError

    def count(self, *, name: str | None = None, on_error: OnError = None) -> Aggregated:
        """Count the records of each key (and window).

        Example:
            >>> from sluice import App
            >>> app = App("doc")
            >>> _ = app.stream("clicks").window(tumbling="1m").count().final().to("clicks-per-minute")
        """
        return self._aggregate(Aggregation.count(), name, on_error)

    def sum(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Aggregated:
        """Sum ``fn(value)`` over the records of each key (and window)."""
        return self._aggregate(Aggregation.sum(_fn(fn, "sum")), name, on_error)

    def min(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Aggregated:
        """The smallest ``fn(value)`` of each key (and window)."""
        return self._aggregate(Aggregation.min(_fn(fn, "min")), name, on_error)

    def max(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Aggregated:
        """The largest ``fn(value)`` of each key (and window)."""
        return self._aggregate(Aggregation.max(_fn(fn, "max")), name, on_error)

    def mean(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Aggregated:
        """The mean of ``fn(value)`` over each key (and window)."""
        return self._aggregate(Aggregation.mean(_fn(fn, "mean")), name, on_error)

    def reduce(
        self, fn: Callable[[Any, Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Aggregated:
        """Fold the values of each key (and window) with ``fn(accumulated, value)``; the first value starts it.

        Example:
            >>> from sluice import App
            >>> app = App("doc")
            >>> longest = app.stream("words").reduce(lambda a, b: a if len(a) >= len(b) else b)
        """
        return self._aggregate(Aggregation.reduce(_fn(fn, "reduce")), name, on_error)

    def agg(
        self,
        init: Any,
        fn: Callable[[Any, Any], Any],
        *,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Aggregated:
        """Fold the values of each key (and window) into ``fn(accumulator, value)``, starting at ``init``.

        ``init`` is a JSON value (copied for each group) or a function returning one; the
        accumulator must stay a JSON value (dict, list, str, number, bool, None): it is
        stored on disk and in the changelog topic.

        Example:
            >>> from sluice import App
            >>> app = App("doc")
            >>> pages = app.stream("clicks").agg({}, lambda acc, e: {**acc, e["page"]: acc.get(e["page"], 0) + 1})
        """
        return self._aggregate(Aggregation.agg(init, _fn(fn, "agg")), name, on_error)


def _fn(fn: Any, op: str) -> Any:
    if not callable(fn):
        msg = f"{op}() needs a function, got {type(fn).__name__} {fn!r}"
        raise ConfigError(msg)
    return fn


class WindowedStream(Aggregations):
    """A stream cut into event-time windows; aggregate it with ``count()``, ``sum()``...

    Built by ``Stream.window(...)``.
    """

    def __init__(self, stream: Stream, windows: Windows, late: str | None) -> None:
        self.stream = stream
        self.windows = windows
        self.late = late

    def _aggregate(self, aggregation: Aggregation, name: str | None, on_error: OnError) -> Aggregated:
        return Aggregated(self.stream, aggregation, self.windows, self.late, name, on_error)


class Aggregated:
    """An aggregation waiting to say what it emits: ``.final()`` or ``.current()``."""

    def __init__(
        self,
        stream: Stream,
        aggregation: Aggregation,
        windows: Windows | None,
        late: str | None,
        name: str | None,
        on_error: OnError,
    ) -> None:
        if name is not None and not _STORE_NAME.match(name):
            msg = f"aggregation name {name!r}: use letters, digits, '.', '_' and '-' (it names topics)"
            raise ConfigError(msg)
        self.stream = stream
        self.aggregation = aggregation
        self.windows = windows
        self.late = late
        self.name = name
        self.policy = coerce_policy(on_error, aggregation.name)

    def final(self) -> Stream:
        """One record per window once it closes (``end + grace <= stream time``).

        The record's key is the group key, its value ``{"key", "start", "end", "value"}``,
        its timestamp ``end - 1``.
        """
        if self.windows is None:
            msg = (
                f"{self.aggregation.name}().final() needs a window: a running aggregate never closes; "
                "use .current(), or .window(...) before it"
            )
            raise ConfigError(msg)
        return self._attach("final")

    def current(self) -> Stream:
        """One record per update: the new value of every window (or running total) a record changed.

        Without a window the value is ``{"key", "value"}`` and the timestamp the record's.
        """
        return self._attach("current")

    def __getattr__(self, attr: str) -> Any:
        if attr in {"to", "sink", "map", "filter", "flat_map", "key_by"}:
            msg = f"call .final() or .current() on {self.aggregation.name}() before .{attr}()"
            raise ConfigError(msg)
        raise AttributeError(attr)

    def _attach(self, emit: str) -> Stream:
        stream = self.stream
        source = stream.source
        store = self.name or f"{self.aggregation.name}-{stream._counter[0] + 1}"
        key_by = last_key_by(stream)
        policy = self.policy

        def make(repartitioned: bool) -> Callable[[str], Aggregate]:
            return lambda label: Aggregate(
                label,
                store,
                self.aggregation,
                self.windows,
                emit,
                self.late,
                repartitioned,
                on_error=policy,
            )

        if key_by is not None and key_by.repartition:
            internal = source.repartition(store)
            stream._to(internal.topics[0], "json", None, None, None, repartition=True)
            return internal.root._add(make(True), self.aggregation.name, _Label(store), store)
        if len(source.topics) > 1:
            msg = (
                f"{self.aggregation.name}() on a stream of several topics {source.topics}: their partitions "
                "may be owned by different workers; key_by(...) before it (repartition) to aggregate them together"
            )
            raise ConfigError(msg)
        return stream._add(make(False), self.aggregation.name, _Label(store), store)


class _Label:
    def __init__(self, name: str) -> None:
        self.__name__ = name


def last_key_by(stream: Stream) -> KeyBy | None:
    """The last ``key_by`` on the path to ``stream`` (since its source), or None."""
    for step in reversed(stream.path()):
        if isinstance(step, KeyBy):
            return step
    return None


def check_store_name(name: str | None, what: str) -> None:
    """Refuse a store name that cannot name topics (``<app>-<name>-changelog``)."""
    if name is not None and not _STORE_NAME.match(name):
        msg = f"{what} {name!r}: use letters, digits, '.', '_' and '-' (it names the state store and its topics)"
        raise ConfigError(msg)


def check_late_topic(late: str | None) -> None:
    if late is not None:
        check_topic_name(late, "late-records topic (late=)")
