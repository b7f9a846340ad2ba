"""Runs stream-table joins: tables materialized from their topics, time-synchronized with the stream.

A partitioned table (``app.table``) holds, per process, the partitions matching the
stream partitions the process is assigned: partition ``p`` of the table opens when
partition ``p`` of a stream it joins is assigned and closes with it. Its records are
read by a consumer of its own (assigned, no group: the app's group uses the
cooperative-sticky assignor, which does not promise to put a stream partition and
the same-numbered table partition on one member). Records are buffered per
partition and applied to the table only when the stream reaches their time: before
a stream record stamped ``t`` is joined, every table record of its partition stamped
``<= t`` is applied, in offset order, and none stamped later (Kafka Streams'
timestamp synchronization). When the table's buffer is empty the reader fetches
until it holds a later record or reaches the partition's end.

A global table (``app.global_table``) holds every partition: it is read to its end
before the app consumes, then followed (each consumed batch first applies the table
records that arrived); no time synchronization.

The local state lives in ``PartitionStore`` (RocksDB), keyed by the table's key bytes,
holding the value bytes as the topic has them; the topic is the changelog. A clean
close checkpoints the next table offset; after a crash the store is wiped and the
topic read again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from sluice.dataflow.tables import MISSING, Join, TableLookup
from sluice.errors import KafkaUnavailableError, SluiceError
from sluice.kafka.admin import TopicAdmin
from sluice.serde import deserializer, key_serializer
from sluice.state.store import PartitionStore

__all__ = ["GlobalTable", "PartitionedTable", "Tables"]

logger = logging.getLogger(__name__)

#: table records buffered per partition ahead of the stream before its fetching pauses
BUFFER_CAP = 10_000
_FETCH = 1_000
#: written in a global table's store: the next offset of each partition (JSON)
_OFFSETS_KEY = b"\x00sluice.offsets"
#: buffered table writes that trigger a write to the store mid-list (restores)
_WRITE_CHUNK = 20_000


def lookup_key(key: Any) -> bytes:
    """The table key bytes a record key looks up: bytes as is, str as UTF-8, anything else as JSON.

    Example:
        >>> lookup_key("u1"), lookup_key(b"u1"), lookup_key(7)
        (b'u1', b'u1', b'7')
    """
    if type(key) is bytes:
        return key
    if key is None:
        msg = "the record has no key to look the table up with: key_by(...) first, or join(on=...) a global table"
        raise ValueError(msg)
    kb = key_serializer(key)
    assert kb is not None
    return kb


class _Follower:
    """A consumer without a group, assigned table partitions; buffers their records per partition."""

    def __init__(self, topic: str, config: dict[str, Any], make: Callable[[dict[str, Any]], Any]) -> None:
        self.topic = topic
        self._make = make
        self._config = {
            **config,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # a table reader buffers no more than the runtime's own cap needs
            "queued.max.messages.kbytes": 16384,
        }
        self._consumer: Any = None
        self.buffers: dict[int, deque[Any]] = {}
        #: the partition's records up to its end (when last fetched) are buffered or applied
        self.at_end: dict[int, bool] = {}
        self.paused: set[int] = set()
        self.expected: dict[int, int] = {}

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self._make(self._config)
        return self._consumer

    def assign(self, starts: dict[int, tuple[int, bool]]) -> None:
        """Follow ``partition -> (first offset, already at the end)``."""
        for p, (start, at_end) in starts.items():
            self.buffers[p] = deque()
            self.at_end[p] = at_end
            self.expected[p] = start
        self.consumer.incremental_assign([TopicPartition(self.topic, p, s) for p, (s, _e) in starts.items()])

    def unassign(self, partitions: Iterable[int]) -> None:
        parts = [p for p in partitions if p in self.buffers]
        for p in parts:
            del self.buffers[p]
            del self.at_end[p]
            del self.expected[p]
            self.paused.discard(p)
        if parts and self._consumer is not None:
            self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in parts])

    def fetch(self, timeout: float) -> int:
        """Consume what is there (waiting up to ``timeout``) into the buffers; return the records read."""
        msgs = self.consumer.consume(_FETCH, timeout)
        read = 0
        buffers, at_end = self.buffers, self.at_end
        for m in msgs:
            p = m.partition()
            buf = buffers.get(p)
            if buf is None:
                continue  # unassigned since librdkafka fetched it
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end[p] = True
                    continue
                if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    msg = f"reading the table topic {self.topic}[{p}] failed: {err.str()}"
                    raise KafkaUnavailableError(msg)
                logger.warning("table %s[%d]: %s (librdkafka retries)", self.topic, p, err.str())
                continue
            if m.offset() < self.expected[p]:
                continue  # fetched before the partition was assigned again: already had
            self.expected[p] = m.offset() + 1
            buf.append(m)
            at_end[p] = False
            read += 1
        full = [p for p, b in buffers.items() if len(b) >= BUFFER_CAP and p not in self.paused]
        if full:
            self.consumer.pause([TopicPartition(self.topic, p) for p in full])
            self.paused.update(full)
        return read

    def drained(self, p: int) -> None:
        """The stream took records of ``p``'s buffer: fetch it again once it has room."""
        if p in self.paused and len(self.buffers[p]) < BUFFER_CAP // 2:
            self.paused.discard(p)
            self.consumer.resume([TopicPartition(self.topic, p)])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.buffers.clear()
        self.at_end.clear()
        self.paused.clear()


class PartitionedTable(TableLookup):
    """The partitions of an ``app.table`` matching the assigned partitions of the stream joining it."""

    def __init__(self, step: Join, input_topics: Iterable[str], directory: Path) -> None:
        self.step = step
        self.topic = step.table.topic
        self.input_topics = set(input_topics)
        self.directory = directory
        self.decode = deserializer(step.table.value)
        self.misses = 0
        self.stores: dict[int, PartitionStore] = {}
        self.next: dict[int, int] = {}
        self.writes: dict[int, dict[bytes, bytes | None]] = {}
        self.owners: dict[int, set[str]] = {}
        self.follower: _Follower | None = None
        self.timeout = 60.0
        self.buffers: dict[int, deque[Any]] = {}
        self.at_end: dict[int, bool] = {}

    def assign(
        self, partitions: Iterable[tuple[str, int]], admin: TopicAdmin, config: dict[str, Any], timeout: float
    ) -> None:
        """Open the table partitions matching newly assigned stream partitions."""
        self.timeout = max(timeout, 30.0)
        new: list[int] = []
        for t, p in partitions:
            if t not in self.input_topics:
                continue
            self.owners.setdefault(p, set()).add(t)
            if p not in self.stores and p not in new:
                new.append(p)
        if not new:
            return
        if self.follower is None:
            self.follower = _Follower(self.topic, config, admin.clients.consumer)
            self.buffers, self.at_end = self.follower.buffers, self.follower.at_end
        bounds = admin.watermarks(self.topic, new)
        starts: dict[int, tuple[int, bool]] = {}
        for p in new:
            store = PartitionStore(self.directory / str(p))
            low, high = bounds[p]
            start = store.restored_to
            if start is None or not low <= start <= high:
                store.reset()
                start = low
            self.stores[p] = store
            self.next[p] = start
            self.writes[p] = {}
            starts[p] = (start, start >= high)
            logger.info("table %s[%d]: following from offset %d (end %d)", self.topic, p, start, high)
        self.follower.assign(starts)

    def release(self, partitions: Iterable[tuple[str, int]] | None, clean: bool) -> None:
        """Close the table partitions no assigned stream partition needs (None: all).

        ``clean``: the stream's processed records are committed, so the table's checkpoint
        may say where it got. Otherwise records will be redone, and must not meet table
        updates stamped after them: the store is wiped at its next open and the topic read
        again, time-synchronized from its beginning.
        """
        if partitions is None:
            closing = list(self.stores)
        else:
            closing = []
            for t, p in partitions:
                owners = self.owners.get(p)
                if owners is None or t not in self.input_topics:
                    continue
                owners.discard(t)
                if not owners:
                    closing.append(p)
        for p in closing:
            self.owners.pop(p, None)
            self._write(p)
            store = self.stores.pop(p, None)
            offset = self.next.pop(p, None)
            if store is not None:
                store.close(offset if clean else None)
            self.writes.pop(p, None)
        if self.follower is not None:
            if partitions is None:
                self.follower.close()
                self.follower = None
            else:
                self.follower.unassign(closing)

    # ------------------------------------------------------------------ lookups
    def start(self) -> None:
        follower = self.follower
        if follower is not None:
            follower.fetch(0)  # what arrived since the last batch (cheap when nothing did)

    def row(self, value: Any, key: Any, meta: Any) -> Any:
        p = meta.partition()
        writes = self.writes.get(p)
        if writes is None:
            msg = f"table {self.topic}[{p}] is not open: the stream partition {p} is not assigned to this process"
            raise SluiceError(msg)
        buf = self.buffers[p]
        # the usual case costs two lookups: nothing buffered and the partition read to its end
        if buf or not self.at_end[p]:
            self._advance(p, meta.timestamp()[1], writes)
        if key is None:
            return MISSING  # no key, no row: dropped by an inner join, None for a left one
        kb = lookup_key(key)
        raw = writes[kb] if kb in writes else self.stores[p].get(kb)
        return MISSING if raw is None else self.decode(raw)

    def _advance(self, p: int, ts: int, writes: dict[bytes, bytes | None]) -> None:
        """Apply the table records of ``p`` stamped ``<= ts`` (fetching until one is later or the end)."""
        follower = self.follower
        assert follower is not None
        buf = follower.buffers[p]
        applied = False
        waited_since: float | None = None
        while True:
            while buf and buf[0].timestamp()[1] <= ts:
                m = buf.popleft()
                k = m.key()
                if k is not None:  # a record without a key cannot be looked up (Kafka Streams skips it too)
                    writes[k] = m.value()
                self.next[p] = m.offset() + 1
                applied = True
                if len(writes) >= _WRITE_CHUNK:  # catching up on a big table: memory stays bounded
                    self._write(p)
            if buf or follower.at_end[p]:
                break
            if applied:
                # a full buffer paused the partition; emptied, it must be resumed before fetching more
                follower.drained(p)
            if follower.fetch(0.1):
                waited_since = None
            elif waited_since is None:
                waited_since = time.monotonic()
            elif time.monotonic() - waited_since > self.timeout:
                msg = (
                    f"table {self.topic}[{p}]: nothing read for {self.timeout:.0f}s at offset {self.next[p]} "
                    "and its end not reached; is the broker reachable?"
                )
                raise KafkaUnavailableError(msg)
        if applied:
            follower.drained(p)

    def done(self) -> None:
        for p, writes in self.writes.items():
            if writes:
                self._write(p)

    def _write(self, p: int) -> None:
        writes = self.writes.get(p)
        if writes:
            self.stores[p].apply(writes, [])
            writes.clear()  # in place: callers hold the dict


class GlobalTable(TableLookup):
    """Every partition of an ``app.global_table``, read to its end at start, then followed."""

    def __init__(self, step: Join, directory: Path) -> None:
        self.step = step
        self.topic = step.table.topic
        self.directory = directory
        self.decode = deserializer(step.table.value)
        self.on = step.on
        self.misses = 0
        self.store: PartitionStore | None = None
        self.next: dict[int, int] = {}
        self.writes: dict[bytes, bytes | None] = {}
        self.follower: _Follower | None = None

    def open(self, admin: TopicAdmin, config: dict[str, Any], timeout: float) -> None:
        """Read the topic to its end (from where the local store stopped)."""
        info = admin.describe(self.topic)
        if info is None:
            msg = f"the global table's topic {self.topic!r} does not exist: create it before starting the app"
            raise SluiceError(msg)
        started = time.monotonic()
        bounds = admin.watermarks(self.topic, info.partitions)
        store = self.store = PartitionStore(self.directory)
        raw = store.get(_OFFSETS_KEY) if store.restored_to is not None else None
        saved = {int(p): o for p, o in orjson.loads(raw).items()} if raw is not None else {}
        if set(saved) != set(bounds) or any(not lo <= saved[p] <= hi for p, (lo, hi) in bounds.items()):
            store.reset()
            saved = {p: lo for p, (lo, _hi) in bounds.items()}
        self.next = dict(saved)
        follower = self.follower = _Follower(self.topic, config, admin.clients.consumer)
        follower.assign({p: (o, o >= bounds[p][1]) for p, o in saved.items()})
        ends = {p: hi for p, (_lo, hi) in bounds.items()}
        read = 0
        last = time.monotonic()
        while any(self.next[p] < end and not follower.at_end[p] for p, end in ends.items()):
            n = follower.fetch(0.5)
            read += n
            self._apply_buffered()
            if n:
                last = time.monotonic()
            elif time.monotonic() - last > timeout:
                where = ", ".join(
                    f"[{p}] at {self.next[p]} of {e}" for p, e in ends.items() if self.next[p] < e
                )
                msg = f"restoring the global table {self.topic} made no progress for {timeout:.0f}s: {where}"
                raise KafkaUnavailableError(msg)
        self._write()
        logger.info(
            "global table %s: %d records read in %.1fs, following %d partitions",
            self.topic,
            read,
            time.monotonic() - started,
            len(ends),
        )

    def _apply_buffered(self) -> None:
        assert self.follower is not None
        writes, nxt = self.writes, self.next
        for p, buf in self.follower.buffers.items():
            while buf:
                m = buf.popleft()
                k = m.key()
                if k is not None:
                    writes[k] = m.value()
                nxt[p] = m.offset() + 1
            self.follower.drained(p)
        if len(writes) >= _WRITE_CHUNK:
            self._write()

    def _write(self) -> None:
        if self.store is None:
            return
        writes = self.writes
        writes[_OFFSETS_KEY] = orjson.dumps({str(p): o for p, o in self.next.items()})
        self.store.apply(writes, [])
        self.writes = {}

    def close(self) -> None:
        if self.store is not None:
            self._write()
            self.store.close(0)  # the offsets are in the store itself
            self.store = None
        if self.follower is not None:
            self.follower.close()
            self.follower = None

    # ------------------------------------------------------------------ lookups
    def start(self) -> None:
        if self.follower is not None and self.follower.fetch(0):
            self._apply_buffered()

    def row(self, value: Any, key: Any, meta: Any) -> Any:
        wanted = self.on(value) if self.on is not None else key
        if wanted is None:
            return MISSING
        kb = lookup_key(wanted)
        writes = self.writes
        if kb in writes:
            raw = writes[kb]
        else:
            assert self.store is not None
            raw = self.store.get(kb)
        return MISSING if raw is None else self.decode(raw)

    def done(self) -> None:
        if len(self.writes) > 0:
            self._write()


class Tables:
    """The tables of an app's joins: one per ``Join`` step, opened and closed with the stream's partitions."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.partitioned: list[PartitionedTable] = []
        self.globals: list[GlobalTable] = []

    def bind(self, step: Join, input_topics: Iterable[str]) -> Join:
        """``step`` with its lookup."""
        from dataclasses import replace

        lookup: TableLookup
        if step.table.is_global:
            lookup = GlobalTable(step, self.state_dir / f"global-{step.store}")
            self.globals.append(lookup)  # type: ignore[arg-type]
        else:
            lookup = PartitionedTable(step, input_topics, self.state_dir / f"table-{step.store}")
            self.partitioned.append(lookup)  # type: ignore[arg-type]
        return replace(step, lookup=lookup)

    def __bool__(self) -> bool:
        return bool(self.partitioned or self.globals)

    def start(self, admin: TopicAdmin, config: dict[str, Any], timeout: float) -> None:
        """Read the global tables to their ends (before the app consumes)."""
        for table in self.globals:
            table.open(admin, config, timeout)

    def assign(
        self, partitions: list[tuple[str, int]], admin: TopicAdmin, config: dict[str, Any], timeout: float
    ) -> None:
        for table in self.partitioned:
            table.assign(partitions, admin, config, timeout)

    def release(self, partitions: Iterable[tuple[str, int]] | None, clean: bool) -> None:
        """Close the table partitions of released stream partitions (None: all of them)."""
        parts = list(partitions) if partitions is not None else None
        for table in self.partitioned:
            table.release(parts, clean)

    def close(self) -> None:
        """Close everything, global tables too (the app stops; its stores are closed already)."""
        self.release(None, clean=False)
        for table in self.globals:
            table.close()

    @property
    def misses(self) -> dict[str, int]:
        """Stream records an inner join dropped (no row), per join step."""
        return {t.step.name: t.misses for t in (*self.partitioned, *self.globals)}
