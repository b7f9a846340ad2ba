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
from sluice.dataflow.grouped import (
    Aggregated,
    Aggregations,
    WindowedStream,
    check_late_topic,
    check_store_name,
    last_key_by,
)
from sluice.dataflow.joins import JoinSide, WindowJoin
from sluice.dataflow.keyed import STATE_AGGREGATION, KeyedState, StateKind
from sluice.dataflow.meta import MetaFilter, MetaFlatMap, MetaMap, MetaSink, WithHeaders, WithTimestamp
from sluice.dataflow.steps import Aggregate, Filter, FlatMap, KeyBy, Map, MapBatch, Sink, Step, To
from sluice.dataflow.tables import Join, Table
from sluice.errors import ConfigError
from sluice.errors.policy import ErrorPolicy, coerce_policy
from sluice.serde import Format, _check_format
from sluice.serde.registry import bind_format
from sluice.state.aggregations import Aggregation
from sluice.state.joins import JOIN_AGGREGATION, JoinHow, JoinSpec
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
    #: the second input of a stream-stream join reading this internal source (its shape counts too)
    joined: Source | None = None
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
        self,
        fn: Callable[..., Any],
        *,
        meta: bool = False,
        state: bool = False,
        state_ttl: str | timedelta | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Keep the records for which ``fn(value)`` is true.

        ``meta=True`` calls ``fn(value, meta)`` with the record's ``Meta`` (key, timestamp,
        headers, topic, partition, offset); ``state=True`` calls ``fn(value, state)`` with
        the ``KeyState`` of the record's key, both ``fn(value, meta, state)``: see ``map``.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.filter(lambda v: v % 2 == 0), [1, 2, 3, 4])
            [2, 4]
            >>> def first_time(v, state):  # dedup: keep the first record of each key
            ...     seen = "seen" in state
            ...     state["seen"] = True
            ...     return not seen
            >>> run_steps(lambda s: s.key_by(lambda v: v, repartition=False).filter(first_time, state=True), [1, 2, 1, 3, 2])
            [1, 2, 3]
        """
        return self._simple("filter", fn, meta, state, state_ttl, name, on_error)

    def map(
        self,
        fn: Callable[..., Any],
        *,
        meta: bool = False,
        state: bool = False,
        state_ttl: str | timedelta | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Replace each value by ``fn(value)``; the key, timestamp and headers are kept.

        ``meta=True``: ``fn(value, meta)``, where ``meta`` (a ``sluice.dataflow.meta.Meta``)
        has the record's ``key``, ``timestamp`` (ms), ``headers`` (``(name, bytes)`` pairs),
        ``topic``, ``partition`` and ``offset``.

        ``state=True``: ``fn(value, state)``, where ``state`` (a ``KeyState``) is a dict of
        JSON values kept per record key: the key ``key_by`` set (the records go through a
        repartition topic first, as for an aggregation) or the record's own key. It is
        durable as an aggregation's state: a RocksDB store per partition and the compacted
        changelog topic ``<app>-<name>-changelog``, restored when a partition moves, written
        before the offsets are committed (in the transaction under exactly-once). A call
        that raises changes nothing: the record goes to the failure policy and the state
        is as it was. ``name=`` names the store (default ``map-state-<n>``: name it to keep
        the state when the graph above changes). ``state_ttl`` (``"1h"``...) drops a key's
        state once stream time (the partition's largest record timestamp) passes its last
        change by that much. With both, ``fn(value, meta, state)``.

        Args:
            fn: ``fn(value)``, ``fn(value, meta)``, ``fn(value, state)`` or ``fn(value, meta, state)``.
            meta: pass the record's ``Meta``.
            state: pass the ``KeyState`` of the record's key (a keyed, durable step).
            state_ttl: with ``state``: how long (stream time) a key's state outlives its
                last change, e.g. ``"1h"`` (default: until the function empties it).
            name: the step's name in errors and dead letters; with ``state``, the store's
                (letters, digits, ``.``, ``_``, ``-``: it names topics).
            on_error: this step's failure policy (default: the app's).

        Raises:
            ConfigError: ``state_ttl`` without ``state``, a bad duration or store name, or
                ``state=True`` on a stream of several topics without ``key_by``.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.map(lambda v: v * 10), [1, 2])
            [10, 20]
            >>> run_steps(lambda s: s.map(lambda v, meta: f"{meta.topic}@{meta.offset}: {v}", meta=True), ["a", "b"])
            ['memory@0: a', 'memory@1: b']
            >>> def count(v, state):
            ...     state["n"] = state.get("n", 0) + 1
            ...     return {"user": v, "n": state["n"]}
            >>> run_steps(lambda s: s.key_by(str, repartition=False).map(count, state=True), ["a", "b", "a"])
            [{'user': 'a', 'n': 1}, {'user': 'b', 'n': 1}, {'user': 'a', 'n': 2}]
        """
        return self._simple("map", fn, meta, state, state_ttl, name, on_error)

    def flat_map(
        self,
        fn: Callable[..., Iterable[Any]],
        *,
        meta: bool = False,
        state: bool = False,
        state_ttl: str | timedelta | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Replace each value by every item of ``fn(value)`` (an iterable: zero, one or many).

        ``meta=True`` and ``state=True`` as for ``map``.

        Example:
            >>> from sluice.testing import run_steps
            >>> run_steps(lambda s: s.flat_map(lambda v: [v] * v), [1, 2])
            [1, 2, 2]
            >>> def new_tags(post, state):  # each tag of a user once
            ...     seen = state.setdefault("tags", [])
            ...     fresh = [t for t in post["tags"] if t not in seen]
            ...     seen.extend(fresh)
            ...     return fresh
            >>> posts = [{"u": "a", "tags": ["x", "y"]}, {"u": "a", "tags": ["y", "z"]}]
            >>> run_steps(lambda s: s.key_by(lambda p: p["u"], repartition=False).flat_map(new_tags, state=True), posts)
            ['x', 'y', 'z']
        """
        return self._simple("flat_map", fn, meta, state, state_ttl, name, on_error)

    def _simple(
        self,
        kind: StateKind,
        fn: Any,
        meta: bool,
        state: bool,
        state_ttl: str | timedelta | None,
        name: str | None,
        on_error: OnError,
    ) -> Stream:
        """A ``filter``, ``map`` or ``flat_map`` step: plain (fusable), with record metadata, or with state."""
        self._check_fn(fn, kind)
        policy = coerce_policy(on_error, kind)
        if state:
            return self._stateful(kind, fn, meta, state_ttl, name, policy)
        if state_ttl is not None:
            msg = f"{kind}(state_ttl={state_ttl!r}) needs state=True: only a step with state has a TTL"
            raise ConfigError(msg)
        plain = {"filter": Filter, "map": Map, "flat_map": FlatMap}
        with_meta = {"filter": MetaFilter, "map": MetaMap, "flat_map": MetaFlatMap}
        step = (with_meta if meta else plain)[kind]
        return self._add(lambda label: step(label, fn, on_error=policy), kind, fn, name)

    def _stateful(
        self,
        kind: StateKind,
        fn: Any,
        meta: bool,
        state_ttl: str | timedelta | None,
        name: str | None,
        policy: ErrorPolicy | None,
    ) -> Stream:
        """A keyed step with a store: after a ``key_by``, through a repartition topic, as an aggregation."""
        check_store_name(name, f"{kind}(state=True) name")
        ttl = None
        if state_ttl is not None:
            seconds = parse_duration(state_ttl, f"{kind}(state_ttl=)")
            if seconds <= 0:
                msg = f"{kind}(state_ttl={state_ttl!r}): a TTL must be longer than 0 (None: no TTL)"
                raise ConfigError(msg)
            ttl = max(1, round(seconds * 1000))
        store = name or f"{kind}-state-{self._counter[0] + 1}"

        def make(repartitioned: bool) -> Callable[[str], Step]:
            return lambda label: KeyedState(
                label,
                store,
                STATE_AGGREGATION,
                None,
                "current",
                None,
                repartitioned,
                fn=fn,
                kind=kind,
                meta=meta,
                ttl=ttl,
                on_error=policy,
            )

        key_by = last_key_by(self)
        if key_by is not None and key_by.repartition:
            internal = self.source.repartition(store)
            self._to(internal.topics[0], "json", None, None, None, repartition=True)
            return internal.root._add(make(True), kind, _Named(store), store)
        if len(self.source.topics) > 1:
            msg = (
                f"{kind}(state=True) on a stream of several topics {self.source.topics}: their partitions may "
                "be owned by different workers; key_by(...) before it (repartition) to keep one state per key"
            )
            raise ConfigError(msg)
        return self._add(make(False), kind, _Named(store), store)

    def with_timestamp(
        self, fn: Callable[..., Any], *, meta: bool = False, name: str | None = None, on_error: OnError = None
    ) -> Stream:
        """Set each record's timestamp to ``fn(value)``: ms since the epoch, or an aware ``datetime``.

        Like ``key_by`` for the key: the outputs below carry it to their topics, and windows
        below use it as event time. ``meta=True``: ``fn(value, meta)``. A value that is no
        timestamp (negative, a naive datetime, a str) fails the record (the failure policy).

        Args:
            fn: ``fn(value)`` (or ``fn(value, meta)``) returning ms since the epoch or a ``datetime``.
            meta: pass the record's ``Meta`` too.
            name: the step's name in errors and dead letters.
            on_error: this step's failure policy (default: the app's).

        Example:
            >>> from sluice.testing import run_steps
            >>> stamped = lambda s: s.with_timestamp(lambda e: e["ts"]).map(lambda e, m: m.timestamp, meta=True)
            >>> run_steps(stamped, [{"ts": 1_700_000_000_000}])
            [1700000000000]
        """
        self._check_fn(fn, "with_timestamp")
        policy = coerce_policy(on_error, "with_timestamp")
        return self._add(
            lambda label: WithTimestamp(label, fn, meta, on_error=policy), "with_timestamp", fn, name
        )

    def with_headers(
        self, fn: Callable[..., Any], *, meta: bool = False, name: str | None = None, on_error: OnError = None
    ) -> Stream:
        """Set each record's headers to ``fn(value)``: a dict or ``(name, value)`` pairs of str, bytes or None.

        They replace the record's headers (str values are written as UTF-8); to add to them,
        ``meta=True`` and return ``[*meta.headers, ("name", "value")]``. Like ``key_by``
        for the key: the outputs below carry them to their topics.

        Args:
            fn: ``fn(value)`` (or ``fn(value, meta)``) returning a dict or ``(name, value)`` pairs.
            meta: pass the record's ``Meta`` too.
            name: the step's name in errors and dead letters.
            on_error: this step's failure policy (default: the app's).

        Example:
            >>> from sluice.testing import run_steps
            >>> tagged = lambda s: s.with_headers(lambda e: {"kind": e["kind"]}).map(lambda e, m: m.headers, meta=True)
            >>> run_steps(tagged, [{"kind": "click"}])
            [[('kind', b'click')]]
        """
        self._check_fn(fn, "with_headers")
        policy = coerce_policy(on_error, "with_headers")
        return self._add(
            lambda label: WithHeaders(label, fn, meta, on_error=policy), "with_headers", fn, name
        )

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

    def _join_stream(
        self,
        other: Stream,
        fn: Callable[[Any, Any], Any],
        *,
        how: JoinHow,
        within: str | timedelta | None,
        grace: str | timedelta | None,
        name: str | None,
    ) -> Stream:
        """Both streams into one join topic, side-marked; the ``WindowJoin`` step below its source."""
        self._check_fn(fn, "join")
        spec = JoinSpec.parse(how, within=within, grace=grace)
        if other.source.registry is not self.source.registry or other.source.app != self.source.app:
            msg = f"join(): the other stream reads {other.source.topics} of another app; join streams of one app"
            raise ConfigError(msg)
        check_store_name(name, "join name")
        store = name or f"join-{self._counter[0] + 1}"
        internal = self.source.repartition(store)
        internal.joined = other.source
        topic = internal.topics[0]
        for stream, side in ((self, "l"), (other, "r")):
            marked = stream._add(
                lambda label, side=side: JoinSide(label, side=side), "join_side", _Named(side), None
            )
            marked._to(topic, "json", None, None, None, repartition=True)
        return internal.root._add(
            lambda label: WindowJoin(
                label, store, JOIN_AGGREGATION, None, "final", None, True, fn=fn, spec=spec
            ),
            "join",
            fn,
            None,
        )

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
        fn: Callable[..., Any],
        *,
        meta: bool = False,
        idempotent: bool | None = None,
        name: str | None = None,
        on_error: OnError = None,
    ) -> Stream:
        """Call ``fn(value)`` for every record (``print``, a database write...).

        ``fn`` may also be a batch sink (an object with ``write_batch(rows)``, see
        ``sluice.dataflow.sinks``), called once per consumed batch. The record's offset is
        committed only after ``fn`` returned for it and for every earlier record of its
        partition. ``idempotent=True`` says that writing a record twice changes nothing
        (an upsert): ``guarantee="exactly_once"`` accepts only such sinks. ``meta=True``
        calls ``fn(value, meta)`` with the record's ``Meta`` (key, timestamp, headers, topic,
        partition, offset); a batch sink gets them in its ``SinkRow`` already.

        Example:
            >>> from sluice.testing import run_steps
            >>> seen = []
            >>> run_steps(lambda s: s.sink(seen.append), ["a", "b"])
            ['a', 'b']
            >>> seen
            ['a', 'b']
            >>> _ = run_steps(lambda s: s.sink(lambda v, m: seen.append((m.offset, v)), meta=True), ["c"])
            >>> seen[-1]
            (0, 'c')
        """
        batch = hasattr(fn, "write_batch")
        if not batch:
            self._check_fn(fn, "sink")
        elif meta:
            msg = f"sink({fn!r}, meta=True): a batch sink gets each row's key, timestamp and headers in its SinkRow"
            raise ConfigError(msg)
        policy = coerce_policy(on_error, "sink")
        kind = MetaSink if meta else Sink
        return self._add(lambda label: kind(label, fn, idempotent, on_error=policy), "sink", fn, name)

    def join(
        self,
        other: Stream | Table,
        fn: Callable[[Any, Any], Any],
        *,
        how: Literal["inner", "left", "outer"] = "inner",
        on: Callable[[Any], Any] | None = None,
        within: str | timedelta | None = None,
        grace: str | timedelta | None = None,
        name: str | None = None,
    ) -> Stream:
        """Join each record with a table's row (``app.table``/``app.global_table``) or with another stream.

        With a table, each record becomes ``fn(value, row)``, where ``row`` is the table's
        latest value for the record's key as of the record's timestamp (see "Tables and
        joins" in the README for the ordering guarantee). ``how="inner"`` drops records
        the table has no row for (counted: ``sluice_join_misses_total``), ``how="left"``
        calls ``fn(value, None)`` for them. A partitioned table joins on the record key,
        co-partitioned with the stream (checked at start); after ``key_by`` the records
        first go through a repartition topic shaped like the table's. A global table
        joins on ``on(value)`` (default: the record key). A ``fn`` that raises sends the
        record through the failure policy (the dead-letter topic by default).

        With another stream, a record of this stream (left) and one of ``other`` (right)
        with the same key and timestamps at most ``within`` apart join: the output is
        ``fn(left_value, right_value)``, keyed by the key and timestamped with the later
        of the two; every such pair joins. ``how="left"`` also emits ``fn(left, None)``
        for a left record that joined nothing, and ``how="outer"`` ``fn(None, right)``
        for such right records too, once, when the record's window closes:
        ``t + within + 1 + grace <= stream time`` (``t`` its timestamp; its window is
        ``[t - within, t + within]``; stream time is per partition, the largest timestamp
        seen). A record that arrives after its own window closed is late: it joins
        nothing, and is dropped and counted. Both streams go through one internal topic
        ``<app>-<name>-repartition`` (partitioned by key, as wide as the wider input: the
        inputs need not be co-partitioned; values as JSON), and both sides are buffered
        in a durable store with the changelog ``<app>-<name>-changelog``, restored on
        reassignment and inside the transaction under exactly-once. See
        ``docs/stream-joins.md``.

        Args:
            other: a ``Table`` or a ``Stream``.
            fn: ``fn(value, row) -> new value``.
            how: ``"inner"`` or ``"left"`` (and ``"outer"`` for stream-stream joins).
            on: global tables: the lookup key of a value (str/bytes as is, else JSON).
            within: stream-stream joins: how far apart two records' timestamps may be.
            grace: stream-stream joins: how long a window waits for out-of-order records.
            name: names the step, its state and its repartition topic (stream-stream
                joins: default ``join-<n>``; keep it fixed to keep the state).

        Raises:
            ConfigError: a stream-stream join without ``within``, an unknown ``how``, or
                a stream of another app.

        Example:
            >>> from sluice import App
            >>> app = App("doc")
            >>> users = app.table("users", value="json")
            >>> enriched = app.stream("orders").join(users, lambda o, u: {**o, "user": u}, how="left")
            >>> _ = enriched.to("enriched")
            >>> clicks = app.stream("clicks").key_by(lambda c: c["ad"])
            >>> views = app.stream("views").key_by(lambda v: v["ad"])
            >>> _ = clicks.join(views, lambda c, v: {**c, "viewed": v and v["ts"]}, within="5m", grace="10s",
            ...                 how="left").to("click-views")
        """
        if isinstance(other, Stream):
            return self._join_stream(other, fn, how=how, within=within, grace=grace, name=name)
        return self._join_table(other, fn, how=how, on=on, within=within, grace=grace, name=name)

    def _join_table(
        self,
        table: Table,
        fn: Callable[[Any, Any], Any],
        *,
        how: str,
        on: Callable[[Any], Any] | None,
        within: str | timedelta | None,
        grace: str | timedelta | None,
        name: str | None,
    ) -> Stream:
        if not isinstance(table, Table):
            msg = f"join() needs a table (app.table/app.global_table) or a Stream, got {type(table).__name__}"
            raise ConfigError(msg)
        self._check_fn(fn, "join")
        if how not in ("inner", "left"):
            msg = f"join(how={how!r}) with {table!r}: a stream-table join is 'inner' or 'left'"
            raise ConfigError(msg)
        if within is not None or grace is not None:
            msg = f"join(within=/grace=) are for stream-stream joins; {table!r} is a table: drop them"
            raise ConfigError(msg)
        if on is not None and not table.is_global:
            msg = (
                f"join(on=...) with {table!r}: a partitioned table joins on the record key; "
                "key_by(...) before the join, or use app.global_table(...)"
            )
            raise ConfigError(msg)
        if on is not None:
            self._check_fn(on, "join(on=)")
        if name is not None:
            check_topic_name(name, "join name")
        store = name or f"join-{self._counter[0] + 1}"
        label = _Named(table.topic)

        def make(label: str) -> Join:
            return Join(label, table, fn, how, on, store)  # type: ignore[arg-type]

        key_by = last_key_by(self)
        if not table.is_global and key_by is not None and key_by.repartition:
            internal = self.source.repartition(store)
            self._to(internal.topics[0], "json", None, None, None, repartition=True)
            return internal.root._add(make, "join", label, name)
        return self._add(make, "join", label, name)

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
