"""``Stream``: the user-facing operators that build an app's dataflow graph.

Every operator returns a new ``Stream`` (a node of the graph) and leaves its parent
untouched, so one stream can feed several branches::

    events = app.stream("events", value="json")
    clicks = events.filter(lambda e: e["type"] == "click")
    clicks.map(lambda e: {"id": e["id"]}).to("clicks")
    events.key_by(lambda e: e["user"]).to("by-user")

Branches share values: functions should return new values rather than mutate theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sluice._checks import positive_int
from sluice._durations import parse_duration
from sluice._names import check_topic_name
from sluice.dataflow.frames import FrameKind
from sluice.dataflow.grouped import Aggregated, Aggregations, WindowedStream, check_late_topic
from sluice.dataflow.steps import Aggregate, Filter, FlatMap, KeyBy, Map, MapBatch, Sink, Step, To
from sluice.errors import ConfigError
from sluice.errors.policy import ErrorPolicy, coerce_policy
from sluice.serde import Format, _check_format
from sluice.serde.registry import bind_format
from sluice.state.aggregations import Aggregation
from sluice.state.windows import Windows

__all__ = ["OnError", "Source", "Stream"]

#: a per-step failure policy: an ErrorPolicy, a dict of App.on_error keywords, or "skip" / "fail" / "dead_letter"
OnError = ErrorPolicy | dict[str, Any] | str | None


@dataclass(eq=False)
class Source:
    """A consumed topic (or topics) and how its records are deserialized.

    ``app`` and ``registry`` (the app's list of sources) let an aggregation add the
    internal source that reads its repartition topic; ``upstream`` is the source
    whose records an internal source receives. ``counter`` numbers the steps app-wide.
    """

    topics: tuple[str, ...]
    value: Any = "json"
    key: Any = "bytes"
    on_error: ErrorPolicy | None = None
    app: str = "app"
    registry: list[Source] | None = None
    upstream: Source | None = None
    counter: list[int] = field(default_factory=lambda: [0])
    #: the app's Schema Registry settings, for ``to(..., value="avro")`` and the like
    schema_registry: Any = None
    root: Stream = field(init=False)

    def __post_init__(self) -> None:
        self.root = Stream(self, None, None)

    @property
    def internal(self) -> bool:
        """Whether sluice made this source (a repartition topic) rather than the user."""
        return self.upstream is not None

    def repartition(self, store: str) -> Source:
        """The internal source reading ``<app>-<store>-repartition`` (registered with the app)."""
        topic = f"{self.app}-{store}-repartition"
        internal = Source(
            (topic,), "json", "bytes", None, self.app, self.registry, self, self.counter, self.schema_registry
        )
        if self.registry is not None:
            self.registry.append(internal)
        return internal


class Stream(Aggregations):
    """A stream of records in the dataflow graph; build it with ``App.stream(...)``.

    Example:
        >>> from sluice import App
        >>> app = App("doc", brokers="127.0.0.1:9092")
        >>> events = app.stream("events", value="json")
        >>> clicks = events.filter(lambda e: e["type"] == "click").map(lambda e: e["page"])
        >>> _ = clicks.to("pages", value="str")
        >>> [s.name for s in clicks.path()]
        ['filter#1(<lambda>)', 'map#2(<lambda>)']
    """

    def __init__(self, source: Source, parent: Stream | None, step: Step | None) -> None:
        self.source = source
        self.parent = parent
        self.step = step
        self.children: list[Stream] = []
        self._counter: list[int] = parent._counter if parent is not None else source.counter

    # ------------------------------------------------------------------ graph plumbing
    def _add(self, make: Callable[[str], Step], kind: str, fn: Any, name: str | None) -> Stream:
        self._counter[0] += 1
        label = name or f"{kind}#{self._counter[0]}({getattr(fn, '__name__', type(fn).__name__)})"
        child = Stream(self.source, self, make(label))
        self.children.append(child)
        return child

    def path(self) -> list[Step]:
        """The steps from the source to this stream, in order."""
        steps: list[Step] = []
        node: Stream | None = self
        while node is not None and node.step is not None:
            steps.append(node.step)
            node = node.parent
        return steps[::-1]

    def _keyed(self) -> bool:
        return self.source.internal or any(
            isinstance(s, KeyBy | Aggregate) or (isinstance(s, MapBatch) and s.key is not None)
            for s in self.path()
        )

    def _aggregate(self, aggregation: Aggregation, name: str | None, on_error: OnError) -> Aggregated:
        return Aggregated(self, aggregation, None, None, name, on_error)

    @staticmethod
    def _check_fn(fn: Any, op: str) -> None:
        if not callable(fn):
            msg = f"{op}() needs a function, got {type(fn).__name__} {fn!r}"
            raise ConfigError(msg)

    # ------------------------------------------------------------------ operators
    def filter(
        self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None
    ) -> Stream:
        """Keep the records for which ``fn(value)`` is true.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.filter(lambda v: v % 2 == 0), [1, 2, 3, 4])
            [2, 4]
        """
        self._check_fn(fn, "filter")
        policy = coerce_policy(on_error, "filter")
        return self._add(lambda label: Filter(label, fn, on_error=policy), "filter", fn, name)

    def map(self, fn: Callable[[Any], Any], *, name: str | None = None, on_error: OnError = None) -> Stream:
        """Replace each value by ``fn(value)``; the key, timestamp and headers are kept.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.map(lambda v: v * 10), [1, 2])
            [10, 20]
        """
        self._check_fn(fn, "map")
        policy = coerce_policy(on_error, "map")
        return self._add(lambda label: Map(label, fn, on_error=policy), "map", fn, name)

    def flat_map(
        self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None, on_error: OnError = None
    ) -> Stream:
        """Replace each value by every item of ``fn(value)`` (an iterable: zero, one or many).

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.flat_map(lambda v: [v] * v), [1, 2])
            [1, 2, 2]
        """
        self._check_fn(fn, "flat_map")
        policy = coerce_policy(on_error, "flat_map")
        return self._add(lambda label: FlatMap(label, fn, on_error=policy), "flat_map", fn, name)

    def key_by(
        self,
        fn: Callable[[Any], Any],
        *,
        repartition: bool = True,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Set the key of each record to ``fn(value)``; outputs are partitioned by it.

        A str key is written as UTF-8, bytes as is, anything else as JSON. Before an
        aggregation the records go through a repartition topic, so that every record of
        a key meets the same state; ``repartition=False`` skips it when the input topic is
        already partitioned by this key.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.key_by(lambda v: v["user"]), [{"user": "u1"}], keys=True)
            [('u1', {'user': 'u1'})]
        """
        self._check_fn(fn, "key_by")
        policy = coerce_policy(on_error, "key_by")
        return self._add(lambda label: KeyBy(label, fn, repartition, on_error=policy), "key_by", fn, name)

    def window(
        self,
        *,
        tumbling: str | timedelta | None = None,
        hopping: str | timedelta | None = None,
        step: str | timedelta | None = None,
        sliding: str | timedelta | None = None,
        session: str | timedelta | None = None,
        grace: str | timedelta = "0s",
        late: str | None = None,
        max_future: str | timedelta | None = "1h",
    ) -> WindowedStream:
        """Cut the stream into event-time windows, per key; aggregate them with ``count()``, ``sum()``...

        Event time is the record's timestamp (or ``app.stream(..., timestamp=fn)``).
        Tumbling and hopping windows are aligned to the epoch and hold ``[start, end)``;
        a sliding window holds the records within ``sliding`` of each other; a session
        holds records no further than ``session`` apart. Stream time is, per partition,
        the largest timestamp seen; a window closes when ``end + grace <= stream time``
        (a partition that receives nothing keeps its windows open). A record whose
        windows are all closed is late: counted, logged, and dropped, or written to the
        topic ``late``.

        Durations are strings with units (``"250ms"``, ``"10s"``, ``"1m30s"``, ``"1h"``) or
        ``datetime.timedelta``; a bare number is refused (seconds or milliseconds?).

        A record whose timestamp is more than ``max_future`` past the wall clock (a
        producer with a wrong clock, milliseconds written as microseconds) is refused
        with ``FutureTimestampError`` and goes through the failure policy (the
        dead-letter topic by default): let in, it would move stream time so far ahead
        that every later record would be late.

        Args:
            tumbling: window length, e.g. ``"1m"`` or ``timedelta(minutes=1)``.
            hopping: window length, with ``step``: how far apart windows start.
            sliding: the largest time difference within a window.
            session: the inactivity gap that ends a session.
            grace: how long after its end a window still accepts out-of-order records.
            late: a topic for late records (default: dropped and counted).
            max_future: how far past the wall clock a timestamp may be (default ``"1h"``;
                None: no limit, e.g. to replay data stamped in the future).

        Example:
            >>> from sluice import App
            >>> app = App("doc")
            >>> clicks = app.stream("clicks").key_by(lambda e: e["page"])
            >>> _ = clicks.window(tumbling="1m", grace="10s").count().final().to("clicks-per-page")
        """
        windows = Windows.parse(
            tumbling=tumbling,
            hopping=hopping,
            step=step,
            sliding=sliding,
            session=session,
            grace=grace,
            max_future=max_future,
        )
        check_late_topic(late)
        return WindowedStream(self, windows, late)

    def map_batch(
        self,
        fn: Callable[[Any], Any],
        *,
        frame: Literal["polars", "pandas", "arrow"] = "polars",
        max_rows: int = 10_000,
        max_wait: str | timedelta = "50ms",
        key: str | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Process micro-batches as DataFrames: ``fn(frame) -> frame``; output rows become records.

        The frame holds one micro-batch: up to ``max_rows`` records, or what arrived
        within ``max_wait``. A JSON stream whose only step is ``map_batch`` is read
        straight from the records' bytes by the library's NDJSON reader, and rows that go
        straight to ``.to()`` are written by its NDJSON writer: no per-record Python dict.
        Output rows keep the key, timestamp and headers of their input row (a hidden
        ``__sluice_row`` column carries it; keep it when you filter, sort or add columns);
        rows without it (aggregates) take the batch's last record's. ``key=`` names a
        column to use as the output key.

        Failures: when ``fn`` raises, the batch is retried per the failure policy, then
        bisected: halves that succeed go on, and each row that fails alone goes to the
        dead-letter topic. Offsets are committed only after the batch's outputs are
        acknowledged, as for any step.

        Args:
            fn: receives a ``polars.DataFrame``, ``pandas.DataFrame`` or ``pyarrow.Table``
                and returns one of the same kind.
            frame: the library (an optional extra: ``pip install 'sluice-streams[polars]'``).
            max_rows: the largest micro-batch.
            max_wait: how long to wait to fill a micro-batch.
            key: the column whose values become the output keys.

        Example:
            >>> import polars as pl
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.map_batch(lambda df: df.filter(pl.col("n") > 1)), [{"n": 1}, {"n": 2}])
            [{'n': 2}]
        """
        self._check_fn(fn, "map_batch")
        FrameKind.of(frame)
        positive_int(max_rows, "map_batch: max_rows")
        wait = parse_duration(max_wait, "max_wait")
        if key is not None and not isinstance(key, str):
            msg = f"map_batch(key={key!r}): must be a column name"
            raise ConfigError(msg)
        policy = coerce_policy(on_error, "map_batch")
        return self._add(
            lambda label: MapBatch(label, fn, frame, max_rows, wait, key, on_error=policy),
            "map_batch",
            fn,
            name,
        )

    def sink(
        self,
        fn: Callable[[Any], Any],
        *,
        idempotent: bool | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Call ``fn(value)`` for every record (``print``, a database write...).

        ``fn`` may also be a batch sink (an object with ``write_batch(rows)``, see
        ``sluice.dataflow.sinks``), called once per consumed batch. The record's offset is
        committed only after ``fn`` returned for it and for every earlier record of its
        partition. ``idempotent=True`` says that writing a record twice changes nothing
        (an upsert): ``guarantee="exactly_once"`` accepts only such sinks.

        Example:
            >>> from sluice.testing import run_steps
            >>> seen = []
            >>> run_steps(lambda s: s.sink(seen.append), ["a", "b"])
            ['a', 'b']
            >>> seen
            ['a', 'b']
        """
        if not hasattr(fn, "write_batch"):
            self._check_fn(fn, "sink")
        policy = coerce_policy(on_error, "sink")
        return self._add(lambda label: Sink(label, fn, idempotent, on_error=policy), "sink", fn, name)

    def to(
        self,
        topic: str,
        *,
        value: Format | Callable[[Any], bytes] | None = None,
        partitions: int | None = None,
        replication: int | None = None,
        on_error: OnError = None,
        key: Format | Callable[[Any], bytes] | None = None,
        schema: Any = None,
        key_schema: Any = None,
    ) -> Stream:
        """Write every record to ``topic``.

        The output keeps the input record's key, timestamp and headers, unless ``key_by``
        changed the key. Values are serialized like the input unless ``value=`` says
        otherwise (a custom input deserializer, or a Schema Registry format, writes JSON).
        A missing topic is created with ``partitions`` and ``replication`` (default: like
        the source topic).

        ``value="avro"``, ``"protobuf"`` or ``"json_schema"`` write the Schema Registry wire
        format (see ``App(schema_registry=...)``) with ``schema``: an Avro schema (JSON
        string or dict), a protobuf message class (values may be its instances or dicts),
        or a JSON Schema; it is registered under the subject (``<topic>-value`` by default)
        unless ``auto.register.schemas`` is off. Without ``schema``, Avro and JSON Schema
        use the latest version registered for the subject. ``key=`` and ``key_schema=``
        do the same for keys (default: keys are written as they came in, or, after
        ``key_by``, str/bytes as is and anything else as JSON).

        Example:
            >>> from sluice import App
            >>> app = App("doc", brokers="127.0.0.1:9092")
            >>> _ = app.stream("events").to("copy", value="json", partitions=4)
        """
        return self._to(
            topic,
            value,
            partitions,
            replication,
            on_error,
            repartition=False,
            key=key,
            schema=schema,
            key_schema=key_schema,
        )

    def _to(
        self,
        topic: str,
        value: Format | Callable[[Any], bytes] | None,
        partitions: int | None,
        replication: int | None,
        on_error: OnError,
        *,
        repartition: bool,
        key: Format | Callable[[Any], bytes] | None = None,
        schema: Any = None,
        key_schema: Any = None,
    ) -> Stream:
        """``to()``, or (``repartition=True``) the write of an aggregation's internal repartition topic."""
        check_topic_name(topic, "output topic")
        registry = self.source.schema_registry
        value = bind_format(value, topic, "value", registry, schema, writing=True)
        key = bind_format(key, topic, "key", registry, key_schema, writing=True)
        if value is not None:
            _check_format(value, "value")
        if key is not None:
            _check_format(key, "key")
        for count, what in ((partitions, "partitions"), (replication, "replication")):
            if count is not None:
                positive_int(count, f"to({topic!r}): {what}")
        keyed = self._keyed()
        policy = coerce_policy(on_error, "to")
        return self._add(
            lambda label: To(
                label, topic, value, partitions, replication, keyed, repartition, key, on_error=policy
            ),
            "to",
            _Named(topic),
            None,
        )


class _Named:
    def __init__(self, name: str) -> None:
        self.__name__ = name
