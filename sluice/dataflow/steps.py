"""The operators of a dataflow, each a plain step over a list of records.

A record is a tuple ``(value, key, meta)``: ``meta`` belongs to the runtime and is
carried through untouched. Each step turns the list of records of one consumed batch
into a new list, so the per-record cost is the user's function plus a list operation.
When the user's function raises, ``apply`` raises ``StepFailed`` carrying the
position of the failed record and the outputs of the records before it, so the
runtime can hand that one record to the failure policy and go on with the rest of
the list: no record's function is ever called twice because another one failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sluice.dataflow.frames import FrameKind
from sluice.errors.policy import ErrorPolicy
from sluice.state.aggregations import Aggregation
from sluice.state.windows import Windows

__all__ = [
    "Aggregate",
    "EventTime",
    "EventTimed",
    "Filter",
    "FlatMap",
    "KeyBy",
    "Map",
    "MapBatch",
    "Record",
    "Sink",
    "Step",
    "StepFailed",
    "To",
]

Record = tuple[Any, Any, Any]


class StepFailed(Exception):
    """The function of a step raised for ``records[index]``; ``done`` are the outputs of the records before it."""

    def __init__(self, index: int, done: list[Record], cause: Exception) -> None:
        super().__init__(index, cause)
        self.index = index
        self.done = done
        self.cause = cause


@dataclass(frozen=True)
class Step:
    """Base of all operators. ``name`` identifies the step in errors and dead letters;
    ``on_error`` overrides the app's failure policy for this step."""

    name: str
    on_error: ErrorPolicy | None = field(default=None, kw_only=True)

    def apply(self, records: list[Record]) -> list[Record]:
        raise NotImplementedError

    def apply_one(self, record: Record) -> list[Record]:
        """Apply to one record; the user function's own exception propagates."""
        try:
            return self.apply([record])
        except StepFailed as failed:
            raise failed.cause from None


@dataclass(frozen=True)
class Filter(Step):
    """Keep the records whose value makes ``fn`` true."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        append = out.append
        i = 0
        try:
            for i, r in enumerate(records):  # noqa: B007 - i tells where a failure happened
                if fn(r[0]):
                    append(r)
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        return out


@dataclass(frozen=True)
class Map(Step):
    """Replace each value by ``fn(value)``; key and meta are kept."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        append = out.append
        try:
            for v, k, m in records:
                append((fn(v), k, m))
        except Exception as exc:
            raise StepFailed(len(out), out, exc) from exc
        return out


@dataclass(frozen=True)
class FlatMap(Step):
    """Replace each value by the values of the iterable ``fn(value)`` (zero or more)."""

    fn: Callable[[Any], Iterable[Any]]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        extend = out.extend
        i = 0
        try:
            for i, (v, k, m) in enumerate(records):  # noqa: B007 - i tells where a failure happened
                extend([(item, k, m) for item in fn(v)])
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        return out


@dataclass(frozen=True)
class KeyBy(Step):
    """Set each record's key to ``fn(value)``; output topics are partitioned by it.

    ``repartition``: a stateful step below it first sends the records through a
    repartition topic, so that every record of a key meets the same state.
    """

    fn: Callable[[Any], Any]
    repartition: bool = True

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        append = out.append
        try:
            for v, _k, m in records:
                append((v, fn(v), m))
        except Exception as exc:
            raise StepFailed(len(out), out, exc) from exc
        return out


class EventTimed:
    """A source message seen with another timestamp (event time); everything else is the message's."""

    __slots__ = ("msg", "ts")

    def __init__(self, msg: Any, ts: int) -> None:
        self.msg = msg
        self.ts = ts

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)  # TIMESTAMP_CREATE_TIME

    def headers(self) -> Any:
        return self.msg.headers()

    def topic(self) -> str:
        return self.msg.topic()

    def partition(self) -> int:
        return self.msg.partition()

    def offset(self) -> int:
        return self.msg.offset()

    def key(self) -> Any:
        return self.msg.key()

    def value(self) -> Any:
        return self.msg.value()

    def error(self) -> None:
        return None


@dataclass(frozen=True)
class EventTime(Step):
    """Take each record's event time (ms) from ``fn(value)`` instead of its Kafka timestamp."""

    fn: Callable[[Any], Any]

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        out: list[Record] = []
        append = out.append
        try:
            for v, k, m in records:
                append((v, k, EventTimed(m, int(fn(v)))))
        except Exception as exc:
            raise StepFailed(len(out), out, exc) from exc
        return out


@dataclass(frozen=True)
class Aggregate(Step):
    """Fold the records of each group key (and window) into a value kept in the state store ``store``.

    ``emit`` is ``"final"`` (one result per window once it closes) or ``"current"``
    (every update). ``late`` is the topic for records of closed windows (None: dropped
    and counted). The runtime executes it; ``repartitioned`` tells that its records come
    from a repartition topic (their key is the serialized group key).
    """

    store: str
    aggregation: Aggregation
    windows: Windows | None
    emit: str
    late: str | None = None
    repartitioned: bool = False

    def apply(self, records: list[Record]) -> list[Record]:  # pragma: no cover - the runtime binds it
        msg = "Aggregate steps are executed by the runtime"
        raise TypeError(msg)


@dataclass(frozen=True)
class Sink(Step):
    """Call ``fn(value)`` for each record (a side effect); the records pass on unchanged.

    A batch sink (``fn.write_batch``) is driven by the runtime, which knows where rows come from.
    ``idempotent``: writing a record twice leaves the same result (None: the sink's own
    ``idempotent`` attribute says, else unknown); exactly-once mode requires it.
    """

    fn: Callable[[Any], Any]
    idempotent: bool | None = None

    def apply(self, records: list[Record]) -> list[Record]:
        fn = self.fn
        i = 0
        try:
            for i, r in enumerate(records):  # noqa: B007 - i tells where a failure happened
                fn(r[0])
        except Exception as exc:
            raise StepFailed(i, records[:i], exc) from exc
        return records


@dataclass(frozen=True)
class To(Step):
    """Write each record to ``topic``. The runtime does the producing; records pass on unchanged.

    ``value`` is the output format (``None``: like the input); ``partitions`` and
    ``replication`` are used when the topic must be created (``None``: as the source).
    ``keyed`` tells whether a ``key_by`` upstream replaced the input record's key;
    ``key`` is the output key format (``None``: as described in ``Stream.to``).
    """

    topic: str
    value: Any = None
    partitions: int | None = None
    replication: int | None = None
    keyed: bool = False
    repartition: bool = False
    key: Any = None

    def apply(self, records: list[Record]) -> list[Record]:  # pragma: no cover - the runtime binds it
        msg = "To steps are executed by the runtime"
        raise TypeError(msg)


@dataclass(frozen=True)
class MapBatch(Step):
    """Apply ``fn`` to a whole micro-batch as a DataFrame; its rows become the output records.

    ``frame`` is ``"polars"``, ``"pandas"`` or ``"arrow"``. An output row keeps the key and
    metadata of the input row it came from (through the hidden ``__sluice_row`` column);
    rows without one (aggregates) take the last input record's metadata. ``key`` names
    a column whose values become the output keys. The runtime sets ``raw_in`` (values
    are JSON bytes to read columnar) and ``raw_out`` (emit NDJSON lines for a ``to``).
    """

    fn: Callable[[Any], Any]
    frame: str = "polars"
    max_rows: int = 10_000
    max_wait: float = 0.05
    key: str | None = None
    raw_in: bool = False
    raw_out: bool = False

    def kind(self) -> FrameKind:
        return FrameKind.of(self.frame)

    def apply(self, records: list[Record]) -> list[Record]:
        kind = self.kind()
        if self.raw_in:
            # raises NotColumnar: the runtime decodes instead
            df = kind.from_ndjson([r[0] for r in records], len(records))
        else:
            df = kind.from_values([r[0] for r in records])
        return self.finish(kind, df, records)

    def finish(self, kind: Any, df: Any, records: list[Record]) -> list[Record]:
        """Run the user's function on ``df`` and turn its rows back into records."""
        positions, values, keys = self.run(kind, df)
        last = records[-1] if records else (None, None, None)
        sources = [records[p] for p in positions] if positions is not None else [last] * len(values)
        if keys is None:
            return [(value, source[1], source[2]) for value, source in zip(values, sources, strict=True)]
        return [(value, key, source[2]) for value, key, source in zip(values, keys, sources, strict=True)]

    def run(self, kind: FrameKind, df: Any) -> tuple[list[int] | None, list[Any], list[Any] | None]:
        """``fn(df)`` as ``(input position of each row or None, values, keys or None)``."""
        out = self.fn(df)
        kind.check(out, getattr(self.fn, "__name__", "fn"))
        keys = kind.column(out, self.key) if self.key is not None else None
        positions, values = kind.rows(out, self.raw_out)
        return positions, values, keys

    def apply_one(self, record: Record) -> list[Record]:
        return self.apply([record])
