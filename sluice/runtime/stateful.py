"""Runs aggregation steps: per-partition state stores, changelog writes, closing windows.

A consumed batch reaches an ``AggregateNode`` as a list of records. Per partition
(one "pass"), each record's group state is read once (from the partition's record
cache, else the store), folded, and kept in the cache; the groups whose windows
closed at the new stream time are reported and dropped, and the batch is held.

The record cache (Kafka Streams' record cache) absorbs the updates of a group over
many batches: at a flush (every commit interval, before the offsets are committed or
the transaction commits, and when the cache holds ``FLUSH_RECORDS`` changed groups)
each changed state is written once to the local store, in one write batch per
partition, and produced once to the changelog topic. The held batches are
acknowledged only when the changelog holds every state they produced, so the source
offsets are never committed before the state they made is durable.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from sluice.dataflow.steps import Aggregate, EventTimed, Record
from sluice.errors import FutureTimestampError, KafkaUnavailableError, SluiceError
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.calls import produce_waiting
from sluice.runtime.failures import FailureRouter
from sluice.runtime.tracker import Batch
from sluice.serde import key_serializer
from sluice.state.store import PartitionStore
from sluice.state.windows import GroupLogic, State, logic_for

__all__ = [
    "RESTORE_SLICE_RECORDS",
    "RESTORE_SLICE_SECONDS",
    "AggregateNode",
    "Restoration",
    "changelog_topic",
]

logger = logging.getLogger(__name__)

#: changelog record carrying the partition's stream time (its key never collides: a header marks it)
STREAM_TIME_KEY = b"\x00sluice.stream-time"
META_HEADER = "sluice.meta"
#: header of repartition records: how the group key was serialized ("str", "json", "bytes")
KEY_TYPE_HEADER = "sluice.key"
_USER_STATE = {"agg", "reduce"}
FLUSH_RECORDS = 20_000  # changed states (cached or buffered) that trigger a flush before the commit interval
#: passes held for the next flush that trigger one before the commit interval (small batches at a low rate)
FLUSH_BATCHES = 4_096
STATE_CACHE = 50_000  # decoded group states kept per partition between batches
#: groups closed per chunk when stream time jumps: closing windows holds this many at a time
CLOSE_CHUNK = 2_000
#: changelog records a restore replays per poll-loop iteration at most (the loop polls between slices)
RESTORE_SLICE_RECORDS = 5_000
#: seconds a restore takes of one poll-loop iteration at most
RESTORE_SLICE_SECONDS = 0.1
_MISSING = object()  # accumulators the user builds: checked to be JSON per record


def changelog_topic(app: str, store: str) -> str:
    return f"{app}-{store}-changelog"


def key_type(key: Any) -> bytes:
    """The ``sluice.key`` header value of a repartition record with group key ``key``."""
    return b"str" if isinstance(key, str) else b"bytes" if isinstance(key, bytes) else b"json"


class Repartitioned(EventTimed):
    """A record on its way to a repartition topic: its headers tell how its group key was serialized."""

    __slots__ = ("kind",)

    def __init__(self, msg: Any, key: Any) -> None:
        super().__init__(msg, msg.timestamp()[1])
        self.kind = key_type(key)

    def headers(self) -> list[tuple[str, bytes]]:
        return [(KEY_TYPE_HEADER, self.kind), *(self.msg.headers() or ())]


class Emitted(EventTimed):
    """An aggregation's output: the triggering record's source, the window's timestamp, no headers."""

    __slots__ = ()

    def headers(self) -> None:
        return None


_NO_LIMIT = 1 << 62


class _Pass:
    """One partition's record cache: the group states read and changed since the last flush.

    Passes (one partition's records of one batch) share it until the next flush writes
    the changed states to the store and the changelog, and drops it. ``closes`` holds
    the close time of every state changed since the flush, and ``due`` the same as a
    heap (entries whose time no longer matches ``closes`` are stale): closing windows
    pops the heap instead of scanning the changed states.
    """

    __slots__ = (
        "batch",
        "changed",
        "closes",
        "due",
        "future_limit",
        "loaded_close",
        "states",
        "store",
        "stream_time",
        "touched",
    )

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.batch: Batch | None = None
        self.stream_time = store.stream_time
        self.states: dict[bytes, State | None] = {}
        #: the close time the store's index holds for a state read (None: no entry)
        self.loaded_close: dict[bytes, int | None] = {}
        #: states changed since they were last written to the store
        self.changed: set[bytes] = set()
        #: states changed in this pass: their close times are updated once, before closing windows
        self.touched: set[bytes] = set()
        self.closes: dict[bytes, int | None] = {}
        self.due: list[tuple[int, bytes]] = []
        #: records with a later timestamp are refused: they would close every window of the partition
        self.future_limit = _NO_LIMIT

    def start(self, batch: Batch, max_future: int | None, now: float) -> None:
        """Begin a pass of ``batch``."""
        self.batch = batch
        self.future_limit = _NO_LIMIT if max_future is None else int(now * 1000) + max_future

    def changed_to(self, kb: bytes, state: State | None, close: int | None) -> None:
        """``kb``'s state is now ``state``, with something to close at ``close``."""
        self.states[kb] = state
        self.changed.add(kb)
        closes = self.closes
        if kb not in closes or closes[kb] != close:
            closes[kb] = close
            if close is not None:
                heapq.heappush(self.due, (close, kb))

    def note_closes(self, next_close: Callable[[State], int | None]) -> None:
        """Track the close times of the states this pass changed."""
        states, closes, due = self.states, self.closes, self.due
        for kb in self.touched:
            state = states[kb]
            close = next_close(state) if state is not None else None
            if kb not in closes or closes[kb] != close:
                closes[kb] = close
                if close is not None:
                    heapq.heappush(due, (close, kb))
        self.touched.clear()


class _Flush:
    """One flush of an aggregation's changelog buffer: releases its held batches once all is acknowledged."""

    __slots__ = ("cancelled", "held", "node", "remaining", "size")

    def __init__(self, node: AggregateNode, held: list[tuple[Batch, Any]], records: int, size: int) -> None:
        self.node = node
        self.held = held
        self.remaining = records
        self.cancelled = False
        #: source records of the held batches
        self.size = size

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if self.cancelled:
            return
        if err is not None:
            # the state of these batches is not durable: stop; their offsets are never committed
            if self.node.fatal is None:
                self.node.fatal = SluiceError(
                    f"writing the changelog {self.node.changelog} failed: {err.str()}; "
                    "stopping before committing offsets whose state it does not hold"
                )
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.release()

    def release(self) -> None:
        for batch, trigger in self.held:
            batch.on_delivery(trigger, None, None)
        self.held = []


class AggregateNode:
    """One ``Aggregate`` step of the graph and its store partitions."""

    def __init__(
        self,
        step: Aggregate,
        app: str,
        state_dir: Path,
        produce: Callable[..., None],
        poll: Callable[[float], Any],
        router: FailureRouter,
    ) -> None:
        self.step = step
        self.logic: GroupLogic = logic_for(step.aggregation, step.windows)
        #: ``_fold`` is ``_one`` inlined: a subclass with its own ``_one`` runs records through that
        self._inlined = type(self)._one is AggregateNode._one
        #: a subclass's own ``_close_group`` marks states changed: the record cache tracks their close times
        self._own_close = type(self)._close_group is AggregateNode._close_group
        self.changelog = changelog_topic(app, step.store)
        self.directory = state_dir / step.store
        self.stores: dict[int, PartitionStore] = {}
        self.late = 0
        self.input_topics: set[str] = set()
        self._final = step.emit == "final"
        self._max_future = step.windows.max_future if step.windows is not None else None
        self._check_state = step.aggregation.name in _USER_STATE
        self._produce = produce
        self._poll = poll
        self._router = router
        self._late_logged = 0.0
        self._buffer: dict[int, dict[bytes, bytes | None]] = {}
        self._stream_times: dict[int, int] = {}
        self._held: list[tuple[Batch, Any]] = []
        self._held_size = 0  # source records of the held batches
        self._flushes: list[_Flush] = []
        #: the record cache of each partition (see ``_Pass``)
        self._cache: dict[int, _Pass] = {}
        self._active: _Pass | None = None  # the cache a pass is using (a flush within the pass keeps it)
        self.buffered = 0
        #: a changelog write failed: the runtime stops
        self.fatal: SluiceError | None = None

    # ------------------------------------------------------------------ store lifecycle
    def open(
        self, partitions: list[int], admin: TopicAdmin, consumer_config: dict[str, Any], timeout: float
    ) -> None:
        """Open the stores of ``partitions`` and bring them up to the changelog's end, blocking.

        The poll loop restores a slice at a time instead (``Restoration``); this serves the
        callers that must have the stores before they go on (an exactly-once rewind).
        """
        restoration = Restoration(self, admin, consumer_config, timeout)
        try:
            restoration.add(partitions)
            while restoration.pending:
                # short waits: a consume waits out its timeout unless it fills its batch
                restoration.step(time.monotonic() + RESTORE_SLICE_SECONDS, _NO_LIMIT)
        finally:
            restoration.close()

    def close(self, partition: int, checkpoint: int | None) -> None:
        # a flush wrote what the checkpoint covers; anything cached since is in no changelog either
        self._cache.pop(partition, None)
        store = self.stores.pop(partition, None)
        if store is not None:
            store.close(checkpoint)

    # ------------------------------------------------------------------ processing
    def process(self, records: list[Record], batch: Batch) -> Iterator[list[Record]]:
        """The outputs of ``records``, in lists: a stream-time jump closing many windows yields them in chunks."""
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            p = record[2].partition()
            group = by_partition.get(p)
            if group is None:
                group = by_partition[p] = []
            group.append(record)
        for p, group in by_partition.items():
            yield from self._run_pass(p, group, batch)

    def _run_pass(self, partition: int, records: list[Record], batch: Batch) -> Iterator[list[Record]]:
        store = self.stores.get(partition)
        if store is None:
            msg = f"state store {self.step.store!r} partition {partition} is not open (not assigned to this worker)"
            raise SluiceError(msg)
        ctx = self._cache.get(partition)
        if ctx is None or ctx.store is not store:
            ctx = self._cache[partition] = _Pass(store)
        ctx.start(batch, self._max_future, self._router.clock.time())
        self._active = ctx
        try:
            yield from self._run_in(ctx, partition, records, batch)
        finally:
            self._active = None

    def _run_in(
        self, ctx: _Pass, partition: int, records: list[Record], batch: Batch
    ) -> Iterator[list[Record]]:
        step = self.step
        out: list[Record] = []
        one = partial(self._one, ctx)
        start = 0
        fold = self._fold if self._inlined else self._fold_each
        while start < len(records):
            stopped = fold(ctx, records, start, out)
            if stopped is None:
                break
            failed, exc = stopped
            record = records[failed]
            if isinstance(exc, FutureTimestampError):
                self._refuse_future(record, exc, batch)
            else:  # handed to the failure policy, which may run the record again
                recovered = self._router.handle(
                    "process", step.name, step.on_error, [(0, record, exc)], one, batch
                )
                out.extend(recovered.get(0, ()))
            start = failed + 1
        if not self._inlined:
            # a subclass's _one marks states changed, not touched: their close times are tracked all the same
            ctx.touched.update(ctx.changed)
        trigger = records[-1][2]
        for closed in self._close_due(ctx, partition, trigger):
            out.extend(closed)
            if len(out) >= CLOSE_CHUNK:
                yield out
                out = []
        self._hold(batch, trigger)
        if out:
            yield out

    def _fold(
        self, ctx: _Pass, records: list[Record], start: int, out: list[Record]
    ) -> tuple[int, Exception] | None:
        """``_one`` over ``records[start:]`` as one loop, appending to ``out``.

        Stops at the first record that raises, with its index and the exception; its
        state changes are those ``_one`` would have made before raising.
        """
        extract = self.step.aggregation.extract
        add = self.logic.add
        load = self._load
        states, changed, touched = ctx.states, ctx.changed, ctx.touched
        limit = ctx.future_limit
        check, final = self._check_state, self._final
        i = start
        try:
            for i in range(start, len(records)):
                record = records[i]
                value, key, meta = record
                ts = meta.timestamp()[1]
                if ts > limit:
                    raise self._too_far(ts, limit)
                extracted = extract(value)
                kb = key.encode() if type(key) is str else _key_bytes(key)
                state = states[kb] if kb in states else load(ctx, kb)
                stream_time = ts if ts > ctx.stream_time else ctx.stream_time
                added = add(state, ts, extracted, stream_time)
                if added is None:
                    ctx.stream_time = stream_time
                    self._on_late(record, kb, ts, ctx.batch)
                    continue
                new, updates = added
                if "k" not in new:
                    new["k"] = _key_out(key, meta)
                if check:
                    orjson.dumps(
                        self.logic.to_json(new)
                    )  # an accumulator that cannot be stored fails this record
                states[kb] = new
                changed.add(kb)
                touched.add(kb)
                ctx.stream_time = stream_time
                if not final:
                    k_out = new["k"]
                    out.extend([self._output(k_out, kb, s, e, v, meta, ts) for s, e, v in updates])
        except Exception as exc:  # noqa: BLE001 - the caller hands the record to its failure policy
            return i, exc
        return None

    def _fold_each(
        self, ctx: _Pass, records: list[Record], start: int, out: list[Record]
    ) -> tuple[int, Exception] | None:
        """``_fold`` through ``_one``, record by record (a subclass's own ``_one``)."""
        i = start
        try:
            for i in range(start, len(records)):
                out.extend(self._one(ctx, records[i]))
        except Exception as exc:  # noqa: BLE001 - the caller hands the record to its failure policy
            return i, exc
        return None

    def _one(self, ctx: _Pass, record: Record) -> list[Record]:
        """One record into its group's state (the failure policy's retries run records this way)."""
        value, key, meta = record
        ts = meta.timestamp()[1]
        if ts > ctx.future_limit:
            raise self._too_far(ts, ctx.future_limit)
        extracted = self.step.aggregation.extract(value)
        kb = key.encode() if type(key) is str else _key_bytes(key)
        state = self._load(ctx, kb)
        stream_time = ts if ts > ctx.stream_time else ctx.stream_time
        added = self.logic.add(state, ts, extracted, stream_time)
        if added is None:
            ctx.stream_time = stream_time
            self._on_late(record, kb, ts, ctx.batch)
            return []
        new, updates = added
        if "k" not in new:
            new["k"] = _key_out(key, meta)
        if self._check_state:
            orjson.dumps(self.logic.to_json(new))  # an accumulator that cannot be stored fails this record
        ctx.states[kb] = new
        ctx.changed.add(kb)
        ctx.touched.add(kb)
        ctx.stream_time = stream_time
        if self._final:
            return []
        return [self._output(new["k"], kb, start, end, v, meta, ts) for start, end, v in updates]

    def _output(
        self, key_out: Any, kb: bytes, start: int | None, end: int | None, v: Any, meta: Any, ts: int
    ) -> Record:
        if start is None:
            return ({"key": key_out, "value": v}, kb, Emitted(meta, ts))
        return ({"key": key_out, "start": start, "end": end, "value": v}, kb, Emitted(meta, end - 1))

    def _load(self, ctx: _Pass, kb: bytes) -> State | None:
        if kb in ctx.states:
            return ctx.states[kb]
        state = ctx.store.cache.get(kb, _MISSING)
        if state is _MISSING:
            raw = ctx.store.get(kb)
            state = self.logic.from_json(orjson.loads(raw)) if raw is not None else None
        ctx.states[kb] = state
        ctx.loaded_close[kb] = state.get("x") if state is not None else None
        return state

    def _hold(self, batch: Batch, trigger: Any) -> None:
        """Hold ``batch`` until the next flush's changelog records are acknowledged."""
        batch.expect(1)
        held = self._held
        if not held or held[-1][0] is not batch:
            self._held_size += batch.size
        held.append((batch, trigger))
        changed = self.buffered + sum(len(c.changed) for c in self._cache.values())
        if changed >= FLUSH_RECORDS or len(held) >= FLUSH_BATCHES:
            self.flush()

    @property
    def held_records(self) -> int:
        """Source records of the batches that wait only for this aggregation's changelog (about).

        Their records are done and their states sit in the record cache (bounded by
        ``FLUSH_RECORDS``): they hold no memory of their own.
        """
        return self._held_size + sum(f.size for f in self._flushes if f.held and not f.cancelled)

    def _write_back(self, ctx: _Pass) -> dict[bytes, bytes | None]:
        """Write the changed states and their index entries; return their changelog bytes."""
        blobs: dict[bytes, bytes | None] = {}
        moves: list[tuple[bytes, int | None, int | None]] = []
        logic = self.logic
        for kb in ctx.changed:
            state = ctx.states[kb]
            old = ctx.loaded_close.get(kb)
            if state is None:
                blobs[kb] = None
                new = None
            else:
                new = logic.next_close(state)
                state["x"] = new
                blobs[kb] = orjson.dumps(logic.to_json(state))
            if new != old:
                moves.append((kb, old, new))
                ctx.loaded_close[kb] = new
        ctx.store.apply(blobs, moves, ctx.stream_time if ctx.stream_time != ctx.store.stream_time else None)
        cache = ctx.store.cache
        if len(cache) + len(blobs) > STATE_CACHE:
            cache.clear()  # bounded memory: the store on disk has them all
        for kb in blobs:
            cache[kb] = ctx.states[kb]
        ctx.changed.clear()
        return blobs

    @property
    def max_future(self) -> int | None:
        """How far past the wall clock a record's event time may be, ms (None: no limit)."""
        return self._max_future

    def drop_future(self, records: list[Record], batch: Batch) -> list[Record]:
        """``records`` less those stamped more than ``max_future`` ahead, which meet the failure policy.

        Run before records are written to this aggregation's repartition topic: there the
        broker would refuse them (or let them through to move stream time).
        """
        if self._max_future is None:
            return records
        limit = int(self._router.clock.time() * 1000) + self._max_future
        if all(m.timestamp()[1] <= limit for _v, _k, m in records):
            return records
        kept: list[Record] = []
        for record in records:
            ts = record[2].timestamp()[1]
            if ts > limit:
                self._refuse_future(record, self._too_far(ts, limit), batch)
            else:
                kept.append(record)
        return kept

    def _refuse_future(self, record: Record, exc: FutureTimestampError, batch: Batch) -> None:
        # dead-lettered with the Kafka timestamp it came with, not its event time: a broker
        # refuses a record stamped too far ahead (log.message.timestamp.after.max.ms); no
        # retry, the clock would say the same
        value, key, meta = record
        while isinstance(meta, EventTimed):
            meta = meta.msg
        step = self.step
        self._router.handle("process", step.name, step.on_error, [(0, (value, key, meta), exc)], None, batch)

    def _too_far(self, ts: int, limit: int) -> FutureTimestampError:
        max_future = self._max_future or 0
        ahead = ts - (limit - max_future)
        when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat(timespec="seconds")
        return FutureTimestampError(
            f"{self.step.name}: the record's timestamp {ts} ({when}) is {ahead / 1000:.0f}s ahead of the "
            f"wall clock, beyond max_future={max_future / 1000:g}s: it would move stream time so far that "
            "every later record is late. Fix the producer's clock or the stream's timestamp=, or raise "
            "window(max_future=...)"
        )

    def _close_due(self, ctx: _Pass, partition: int, trigger: Any) -> Iterator[list[Record]]:
        """Report (``final``) and drop every window that closed at the pass's stream time.

        Due are the groups the store's index lists, and the groups this pass changed whose
        windows the stream time it reached already closes (not in the index yet: the pass
        writes its states back once, after this). The index is read in chunks; when it has
        more than one, each full chunk is written back, buffered for the changelog (held
        against the batch like the pass's own states) and dropped from memory before the
        next is read: closing a million windows holds one chunk at a time.
        """
        stream_time = ctx.stream_time
        ctx.note_closes(self.logic.next_close)
        closes = ctx.closes
        for chunk in ctx.store.due(stream_time, CLOSE_CHUNK):
            out: list[Record] = []
            closed_here: list[bytes] = []
            for _close, kb in chunk:
                if kb in closes:
                    continue  # changed since the last write: its close time is the cache's, closed below
                out.extend(self._close_group(ctx, kb, trigger))
                closed_here.append(kb)
                if not self._own_close:
                    ctx.touched.add(kb)
            if len(chunk) == CLOSE_CHUNK and closed_here:
                # more may follow: make this chunk durable and let it go before reading the next
                self._buffer_states(partition, ctx)
                assert ctx.batch is not None
                self._hold(ctx.batch, trigger)
                for kb in closed_here:
                    ctx.states.pop(kb, None)
                    ctx.loaded_close.pop(kb, None)
                    closes.pop(kb, None)
                    ctx.touched.discard(kb)
            if out:
                yield out
        out = []
        due = ctx.due
        while True:
            while due and due[0][0] <= stream_time:
                close, kb = heapq.heappop(due)
                if closes.get(kb) == close:  # else stale: the state changed since
                    out.extend(self._close_group(ctx, kb, trigger))
                    if not self._own_close:
                        ctx.touched.add(kb)
            if self._own_close or not ctx.touched:
                break
            ctx.note_closes(self.logic.next_close)
        if out:
            yield out

    def _close_group(self, ctx: _Pass, kb: bytes, trigger: Any) -> list[Record]:
        state = self._load(ctx, kb)
        if state is None:
            return []
        left, closed = self.logic.close(state, ctx.stream_time)
        if left is state and not closed:
            return []
        ctx.changed_to(kb, left, self.logic.next_close(left) if left is not None else None)
        if not self._final:
            return []
        return [self._output(state["k"], kb, s, e, v, trigger, -1) for s, e, v in closed]

    def _buffer_states(self, partition: int, ctx: _Pass) -> None:
        """Write the cache's changed states to the store and buffer them for the changelog."""
        blobs = self._write_back(ctx)
        self._buffer.setdefault(partition, {}).update(blobs)
        self._stream_times[partition] = ctx.stream_time
        self.buffered = sum(len(b) for b in self._buffer.values())

    def discard_buffer(self) -> None:
        """Forget cached and buffered states, held batches and flushes in flight (their transaction was aborted)."""
        self._buffer, self._stream_times, self._held, self.buffered = {}, {}, [], 0
        self._cache, self._held_size = {}, 0
        for flush in self._flushes:
            flush.cancelled = True
        self._flushes = []

    def rebind(self, produce: Callable[..., None], poll: Callable[[float], Any]) -> None:
        """Write changelog and late records through a new producer from now on."""
        self._produce, self._poll = produce, poll

    def discard_partitions(self, partitions: set[int]) -> None:
        """Forget the buffered states of partitions this process no longer owns (lost, not revoked).

        Their next owner restores from the changelog; a write from here after the loss
        would put a stale state over the one it builds.
        """
        for p in partitions:
            self._cache.pop(p, None)
            dropped = self._buffer.pop(p, None)
            self._stream_times.pop(p, None)
            if dropped:
                self.buffered -= len(dropped)

    def flush(self) -> None:
        """Produce the buffered states (the last of each key) to the changelog.

        The batches held since the last flush are released when every record is
        acknowledged: their offsets are committed only once the changelog can restore
        the state they produced. Buffering over a commit interval writes a key changed
        by many batches once.
        """
        if not self._held:
            return
        for partition, ctx in self._cache.items():
            if ctx.changed or ctx.stream_time != ctx.store.stream_time:
                self._buffer_states(partition, ctx)
        # written: dropped, but for the cache of a pass flushing midway (closing windows in chunks)
        self._cache = {p: c for p, c in self._cache.items() if c is self._active}
        records: list[tuple[int, bytes, bytes | None, Any]] = [
            (p, kb, blob, None) for p, blobs in self._buffer.items() for kb, blob in blobs.items()
        ]
        for p, stream_time in self._stream_times.items():
            store = self.stores.get(p)
            if store is not None and stream_time != store.logged_stream_time:
                records.append(
                    (p, STREAM_TIME_KEY, str(stream_time).encode(), [(META_HEADER, b"stream-time")])
                )
                store.logged_stream_time = stream_time
        flush = _Flush(self, self._held, len(records), self._held_size)
        self._flushes = [f for f in self._flushes if f.remaining and not f.cancelled]
        self._flushes.append(flush)
        self._buffer, self._stream_times, self._held, self.buffered = {}, {}, [], 0
        self._held_size = 0
        if not records:
            flush.release()
            return
        on_delivery = flush.on_delivery
        for partition, kb, blob, headers in records:
            produce_waiting(
                self._produce,
                self._poll,
                self.changelog,
                blob,
                kb,
                partition=partition,
                headers=headers,
                on_delivery=on_delivery,
            )

    def _on_late(self, record: Record, kb: bytes, ts: int, batch: Batch) -> None:
        self.late += 1
        if self.step.late is not None:
            value, _key, meta = record
            batch.expect(1)
            try:
                self._produce(
                    self.step.late,
                    orjson.dumps(value),
                    kb,
                    timestamp=max(ts, 0),
                    headers=meta.headers(),
                    on_delivery=partial(batch.on_delivery, meta),
                )
            except BaseException:
                batch.settle()
                raise
        now = time.monotonic()
        if now - self._late_logged >= 10.0:
            self._late_logged = now
            msg = record[2]
            logger.warning(
                "%s: late record (%s[%d] offset %d, timestamp %d): its windows are closed; %s (%d late so far)",
                self.step.name,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                msg.timestamp()[1],
                f"written to {self.step.late}" if self.step.late else "dropped",
                self.late,
            )


def _key_bytes(key: Any) -> bytes:
    if key is None:
        msg = "the record has no group key: key_by(...) returned None, or the record has no key"
        raise ValueError(msg)
    kb = key_serializer(key)
    assert kb is not None
    return kb


def _key_out(key: Any, meta: Any) -> Any:
    """The group key as it appears in output values (JSON)."""
    if not isinstance(key, bytes):
        orjson.dumps(key)  # a key that cannot be written fails this record
        return key
    kind = b"bytes"
    for name, value in meta.headers() or ():
        if name == KEY_TYPE_HEADER:
            kind = value
    if kind == b"json":
        return orjson.loads(key)
    return key.decode("utf-8", "replace")


class Restoration:
    """Brings the stores of some partitions of one aggregation up to their changelog's end, a slice at a time.

    The poll loop calls ``step`` once per iteration: between two slices it polls its own
    consumer, so the member stays in its group however large the stores (a restore inside
    the rebalance callback blocked the loop past ``max.poll.interval.ms``: the member was
    evicted, and ``/healthz`` saw a stuck loop). One consumer reads the changelog
    partitions of every store being restored; each store joins ``node.stores`` as soon as
    it reached the end offset its changelog partition had when its restore began (nothing
    writes there meanwhile: its source partition is paused until then).

    A store closed before it is complete (its partition revoked or lost, the app stopping)
    keeps a checkpoint at the position reached: it holds exactly the changelog's committed
    records below it, so the next restore of that partition goes on from there.

    Args:
        node: the aggregation whose stores are restored.
        admin: reads the changelog's offsets.
        consumer_config: the restore consumer's properties (``ClientSettings.restore_consumer_config``).
        timeout: seconds without progress after which the restore fails (brokers unreachable).
        progress: called with ``(partition, records left to replay)`` after each slice; 0 when done.

    Example (the poll loop's use, schematically):
        >>> def restore_all(restoration: Restoration, partitions: list[int]) -> None:
        ...     restoration.add(partitions)
        ...     while restoration.pending:
        ...         restoration.step(time.monotonic() + RESTORE_SLICE_SECONDS)  # then poll, process...
        ...     restoration.close()
    """

    def __init__(
        self,
        node: AggregateNode,
        admin: TopicAdmin,
        consumer_config: dict[str, Any],
        timeout: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.node = node
        self._admin = admin
        self._config = {**consumer_config, "enable.partition.eof": True}
        self._timeout = timeout
        self._progress = progress
        self._consumer: Consumer | None = None
        self._stores: dict[int, PartitionStore] = {}
        self._ends: dict[int, int] = {}  # partition -> the changelog's end offset when its restore began
        self._positions: dict[int, int] = {}  # partition -> next changelog offset to apply
        self._assigned: set[int] = set()
        self._counts: dict[int, int] = {}
        self._began: dict[int, float] = {}
        #: seconds this restore's consumer waited and read nothing, since it last read something
        #: (not wall time: the loop gives its time to other work and other restores too)
        self._idle = 0.0
        #: the partitions restored together (added while others were pending): one summary line
        #: when the last completes, as the blocking restore wrote it (benchmarks and operators read it)
        self._round_began: float | None = None
        self._round_partitions = 0
        self._round_records = 0

    @property
    def pending(self) -> set[int]:
        """Partitions whose stores are not complete yet."""
        return set(self._stores)

    def remaining(self) -> dict[int, int]:
        """Changelog records still to replay per pending partition (offsets: an upper bound when compacted)."""
        return {p: max(0, self._ends[p] - self._positions[p]) for p in self._stores}

    def add(self, partitions: list[int]) -> None:
        """Open the stores of ``partitions`` and restore them from their checkpoints (else the start).

        A store with nothing to replay (its checkpoint is the changelog's end) joins
        ``node.stores`` at once.

        Raises:
            KafkaUnavailableError: the changelog's offsets could not be read.
        """
        node = self.node
        new = [p for p in dict.fromkeys(partitions) if p not in self._stores and p not in node.stores]
        if not new:
            return
        stores: dict[int, PartitionStore] = {}
        try:
            for p in new:
                stores[p] = PartitionStore(node.directory / str(p))
            bounds = self._admin.watermarks(node.changelog, new)
        except BaseException:
            for store in stores.values():
                store.close(None)
            raise
        starts: list[TopicPartition] = []
        now = time.monotonic()
        if self._round_began is None:
            self._round_began, self._round_partitions, self._round_records = now, 0, 0
        self._round_partitions += len(stores)
        for p, store in stores.items():
            low, high = bounds[p]
            start = store.restored_to
            if start is None or not low <= start <= high:
                start = low
                store.reset()
            self._stores[p], self._ends[p], self._positions[p] = store, high, start
            self._counts[p], self._began[p] = 0, now
            if start < high:
                starts.append(TopicPartition(node.changelog, p, start))
        for p in [p for p in stores if self._positions[p] >= self._ends[p]]:
            self._finish(p)  # nothing to replay: usable at once
        self._end_round()
        if starts:
            if self._consumer is None:
                self._consumer = self._admin.clients.consumer(self._config)
            self._consumer.incremental_assign(starts)
            self._assigned.update(tp.partition for tp in starts)
        self._idle = 0.0
        self._report()

    def step(self, deadline: float, max_records: int = 0) -> list[int]:
        """Replay changelog records until ``deadline`` (``time.monotonic()``) or ``max_records``.

        Args:
            deadline: when to hand the thread back.
            max_records: records to apply at most (0: ``RESTORE_SLICE_RECORDS``).

        Returns:
            The partitions whose stores became complete (they are in ``node.stores`` now).

        Raises:
            KafkaUnavailableError: reading the changelog failed, or made no progress for ``timeout``.
        """
        limit = max_records or RESTORE_SLICE_RECORDS
        read = 0
        consumer = self._consumer
        while consumer is not None and read < limit and self._reading():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waited = time.monotonic()
            msgs = consumer.consume(min(1000, limit - read), left)
            if msgs:
                read += len(msgs)
                self._apply(msgs)
                self._idle = 0.0
            else:
                self._idle += time.monotonic() - waited
        done = [p for p in self._stores if self._positions[p] >= self._ends[p]]
        for p in done:
            self._finish(p)
        if done:
            self._end_round()
        if self._reading() and self._idle > self._timeout:
            where = ", ".join(
                f"[{p}] at {self._positions[p]} of {self._ends[p]}" for p in sorted(self._stores)
            )
            msg = (
                f"restoring {self.node.changelog} made no progress for {self._timeout:.0f}s: {where}; "
                "check that the brokers are reachable"
            )
            raise KafkaUnavailableError(msg)
        self._report()
        return done

    def cancel(self, partitions: set[int]) -> None:
        """Stop restoring ``partitions`` (revoked, lost): their stores close at the position reached."""
        mine = [p for p in partitions if p in self._stores]
        if not mine:
            return
        self._unassign(mine)
        for p in mine:
            self._stores.pop(p).close(self._positions[p])
            logger.info(
                "state %s[%d]: restore stopped at changelog offset %d of %d",
                self.node.step.store,
                p,
                self._positions[p],
                self._ends[p],
            )
            self._forget(p)
        self._round_partitions -= len(mine)
        self._end_round()

    def close(self) -> None:
        """Stop every restore (checkpointed where it got to) and close the consumer."""
        self.cancel(set(self._stores))
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _reading(self) -> bool:
        return any(self._positions[p] < self._ends[p] for p in self._stores)

    def _apply(self, msgs: list[Any]) -> None:
        chunks: dict[int, _Chunk] = {}
        positions: dict[int, int] = {}
        for m in msgs:
            p = m.partition()
            if p not in self._stores:
                continue  # stopped while its records were on their way
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    positions[p] = max(positions.get(p, self._positions[p]), m.offset())
                    continue
                msg = f"restoring {self.node.changelog}[{p}] failed: {err.str()}"
                raise KafkaUnavailableError(msg)
            positions[p] = m.offset() + 1
            self._counts[p] += 1
            chunk = chunks.get(p)
            if chunk is None:
                chunk = chunks[p] = _Chunk(self._stores[p])
            chunk.add(m)
        for chunk in chunks.values():
            chunk.apply()
        # only once applied: a checkpoint at a position never claims records the store lacks
        self._positions.update(positions)

    def _finish(self, p: int) -> None:
        store = self._stores.pop(p)
        store.logged_stream_time = store.stream_time
        self.node.stores[p] = store
        self._unassign([p])
        n, elapsed = self._counts[p], time.monotonic() - self._began[p]
        self._round_records += n
        if n:
            logger.info(
                "state %s[%d]: restored %d changelog records in %.1fs (%.0f/s)",
                self.node.step.store,
                p,
                n,
                elapsed,
                n / elapsed if elapsed else 0.0,
            )
        self._forget(p)

    def _end_round(self) -> None:
        if self._stores or self._round_began is None:
            return
        records, elapsed = self._round_records, time.monotonic() - self._round_began
        self._round_began = None
        if records:
            logger.info(
                "state %s: restored %d changelog records of %d partitions in %.1fs (%.0f/s)",
                self.node.step.store,
                records,
                self._round_partitions,
                elapsed,
                records / elapsed if elapsed else 0.0,
            )

    def _unassign(self, partitions: list[int]) -> None:
        mine = [p for p in partitions if p in self._assigned]
        if mine and self._consumer is not None:
            self._consumer.incremental_unassign([TopicPartition(self.node.changelog, p) for p in mine])
            self._assigned.difference_update(mine)

    def _forget(self, p: int) -> None:
        for held in (self._ends, self._positions, self._counts, self._began):
            held.pop(p, None)
        if self._progress is not None:
            self._progress(p, 0)

    def _report(self) -> None:
        if self._progress is not None:
            for p, n in self.remaining().items():
                self._progress(p, n)


class _Chunk:
    """The changelog records of one partition in one consumed batch, written to its store at once."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.states: dict[bytes, bytes | None] = {}
        self.moves: list[tuple[bytes, int | None, int | None]] = []
        self.closes: dict[bytes, int | None] = {}  # index entries as this chunk leaves them
        self.stream_time: int | None = None

    def add(self, m: Any) -> None:
        headers = m.headers()
        if headers and any(name == META_HEADER for name, _ in headers):
            self.stream_time = int(m.value())
            return
        kb, blob = m.key(), m.value()
        if kb in self.closes:
            old_close = self.closes[kb]
        else:
            old = self.store.get(kb)
            old_close = orjson.loads(old).get("x") if old is not None else None
        new_close = orjson.loads(blob).get("x") if blob is not None else None
        self.states[kb] = blob
        self.closes[kb] = new_close
        if old_close != new_close:
            self.moves.append((kb, old_close, new_close))

    def apply(self) -> None:
        if self.states or self.stream_time is not None:
            self.store.apply(self.states, self.moves, self.stream_time)
