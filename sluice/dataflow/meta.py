"""Record metadata for user functions, and the steps that set an output's timestamp and headers.

``map(fn, meta=True)`` (and ``filter``, ``flat_map``, ``sink``) call ``fn(value, meta)``
where ``meta`` is a ``Meta``: the record's key, timestamp (ms), headers, and the topic,
partition and offset it was consumed from. ``with_timestamp(fn)`` and ``with_headers(fn)``
set what the outputs below them carry, as ``key_by(fn)`` sets their key.

Example:
    >>> from sluice.testing import run_steps
    >>> run_steps(lambda s: s.map(lambda v, meta: (v, meta.offset), meta=True), ["a", "b"])
    [('a', 0), ('b', 1)]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice.dataflow.steps import EventTimed, Record, Sink, Step, StepFailed
from sluice.errors import RecordError

__all__ = [
    "Headers",
    "Meta",
    "MetaFilter",
    "MetaFlatMap",
    "MetaMap",
    "MetaSink",
    "Restamped",
    "WithHeaders",
    "WithTimestamp",
]

#: what ``with_headers(fn)``'s function may return: a mapping or (name, value) pairs; str values are UTF-8
Headers = Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]]

# the header a repartition record carries for the runtime (sluice.runtime.stateful.KEY_TYPE_HEADER):
# the user's records never had it, so their functions never see it
_KEY_TYPE_HEADER = "sluice.key"


class Meta:
    """What a record carries besides its value, as a function with ``meta=True`` sees it.

    Attributes:
        key: the record's key: as deserialized (bytes by default), or what ``key_by`` set.

    Example:
        >>> from sluice.testing import run_steps
        >>> run_steps(lambda s: s.map(lambda v, m: [m.topic, m.partition, m.timestamp, m.headers], meta=True), [1])
        [['memory', 0, 0, []]]
    """

    __slots__ = ("_msg", "key")

    def __init__(self, key: Any, msg: Any) -> None:
        self.key = key
        self._msg = msg

    @property
    def timestamp(self) -> int:
        """The record's timestamp in ms since the epoch (its event time when ``timestamp=fn`` or ``with_timestamp`` set one)."""
        return int(self._msg.timestamp()[1])

    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        """The record's headers as ``(name, value)`` pairs, in order (a name may repeat); ``[]`` when none."""
        headers = self._msg.headers()
        if not headers:
            return []
        return [h for h in headers if h[0] != _KEY_TYPE_HEADER]

    def header(self, name: str, default: bytes | None = None) -> bytes | None:
        """The value of the last header called ``name``, or ``default``.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.map(lambda v, m: m.header("trace", b"-"), meta=True), [1])
            [b'-']
        """
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return default

    @property
    def topic(self) -> str:
        """The topic the record was consumed from (after a repartition: the repartition topic)."""
        return self._msg.topic()

    @property
    def partition(self) -> int:
        """The partition the record was consumed from."""
        return self._msg.partition()

    @property
    def offset(self) -> int:
        """The record's offset in that partition."""
        return self._msg.offset()

    def __repr__(self) -> str:
        return (
            f"Meta(key={self.key!r}, timestamp={self.timestamp}, headers={self.headers!r}, "
            f"topic={self.topic!r}, partition={self.partition}, offset={self.offset})"
        )


class Restamped(EventTimed):
    """A record seen with another timestamp and/or other headers (``with_timestamp``, ``with_headers``)."""

    __slots__ = ("_headers",)

    def __init__(self, msg: Any, ts: int, headers: list[tuple[str, bytes | None]] | None) -> None:
        super().__init__(msg, ts)
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


@dataclass(frozen=True)
class MetaFilter(Step):
    """Keep the records for which ``fn(value, meta)`` is true."""

    fn: Callable[[Any, Meta], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        i = 0
        try:
            for i, r in enumerate(records):  # noqa: B007 - i tells where a failure happened
                if fn(r[0], Meta(r[1], r[2])):
                    out.append(r)
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        return out


@dataclass(frozen=True)
class MetaMap(Step):
    """Replace each value by ``fn(value, meta)``; key, timestamp and headers are kept."""

    fn: Callable[[Any, Meta], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        try:
            for v, k, m in records:
                out.append((fn(v, Meta(k, m)), k, m))
        except Exception as exc:
            raise StepFailed(len(out), out, exc) from exc
        return out


@dataclass(frozen=True)
class MetaFlatMap(Step):
    """Replace each value by the values of the iterable ``fn(value, meta)``."""

    fn: Callable[[Any, Meta], Iterable[Any]]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        i = 0
        try:
            for i, (v, k, m) in enumerate(records):  # noqa: B007 - i tells where a failure happened
                out.extend([(item, k, m) for item in fn(v, Meta(k, m))])
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        return out


@dataclass(frozen=True)
class MetaSink(Sink):
    """Call ``fn(value, meta)`` for each record; the records pass on unchanged."""

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        i = 0
        try:
            for i, (v, k, m) in enumerate(records):  # noqa: B007 - i tells where a failure happened
                fn(v, Meta(k, m))  # type: ignore[call-arg]
        except Exception as exc:
            raise StepFailed(i, records[:i], exc) from exc
        return records


@dataclass(frozen=True)
class _Restamp(Step):
    """A step that gives each record a new timestamp or headers from ``fn``'s answer."""

    fn: Callable[..., Any]
    meta: bool = False

    def restamp(self, message: Any, answer: Any) -> Restamped:
        raise NotImplementedError

    def apply(self, records: list[Record]) -> list[Record]:
        fn, meta = self.fn, self.meta
        out: list[Record] = []
        try:
            for v, k, m in records:
                out.append((v, k, self.restamp(m, fn(v, Meta(k, m)) if meta else fn(v))))
        except Exception as exc:
            raise StepFailed(len(out), out, exc) from exc
        return out


@dataclass(frozen=True)
class WithTimestamp(_Restamp):
    """Set each record's timestamp to ``fn(value)`` (or ``fn(value, meta)``): ms, or a ``datetime``."""

    def restamp(self, message: Any, answer: Any) -> Restamped:
        return Restamped(message, timestamp_ms(answer), message.headers())


@dataclass(frozen=True)
class WithHeaders(_Restamp):
    """Set each record's headers to ``fn(value)`` (or ``fn(value, meta)``); they replace the record's."""

    def restamp(self, message: Any, answer: Any) -> Restamped:
        return Restamped(message, message.timestamp()[1], header_list(answer))


def timestamp_ms(value: Any) -> int:
    """A ``with_timestamp`` result as Kafka's ms since the epoch.

    Example:
        >>> import datetime as dt
        >>> timestamp_ms(1_700_000_000_000), timestamp_ms(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        (1700000000000, 1704067200000)
        >>> timestamp_ms(-5)
        Traceback (most recent call last):
        ...
        sluice.errors.RecordError: with_timestamp: -5 is not a timestamp: return ms since the epoch (>= 0) or a datetime
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            msg = f"with_timestamp: {value!r} has no time zone: give it one (tzinfo=datetime.UTC)"
            raise RecordError(msg)
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0:
        return int(value)
    msg = f"with_timestamp: {value!r} is not a timestamp: return ms since the epoch (>= 0) or a datetime"
    raise RecordError(msg)


def header_list(value: Any) -> list[tuple[str, bytes | None]]:
    """A ``with_headers`` result as Kafka headers: ``(str, bytes or None)`` pairs.

    Example:
        >>> header_list({"source": "web", "raw": b"\\x01", "none": None})
        [('source', b'web'), ('raw', b'\\x01'), ('none', None)]
        >>> header_list([("a", "1"), ("a", "2")])
        [('a', b'1'), ('a', b'2')]
        >>> header_list({"n": 5})
        Traceback (most recent call last):
        ...
        sluice.errors.RecordError: with_headers: header 'n' has the value 5 (int): use str, bytes or None
    """
    if value is None:
        return []
    pairs = value.items() if isinstance(value, Mapping) else value
    out: list[tuple[str, bytes | None]] = []
    try:
        for name, v in pairs:
            if not isinstance(name, str):
                msg = f"with_headers: header name {name!r} ({type(name).__name__}) must be a str"
                raise RecordError(msg)
            if isinstance(v, str):
                out.append((name, v.encode()))
            elif v is None or isinstance(v, bytes):
                out.append((name, v))
            else:
                msg = f"with_headers: header {name!r} has the value {v!r} ({type(v).__name__}): use str, bytes or None"
                raise RecordError(msg)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        msg = f"with_headers: {value!r} is not headers: return a dict or (name, value) pairs"
        raise RecordError(msg) from exc
    return out
