"""Runs a windowed stream-stream join: both sides buffered per key in a durable store.

A ``JoinNode`` is an ``AggregateNode`` whose group state is one key's buffered
records of both sides (``sluice.state.joins``): the same per-partition RocksDB
store, pass-local cache, changelog writes acknowledged against the batch, restore
on assignment, undo on an aborted transaction and close index. The close index
says when a key's oldest record closes: then the records whose windows closed
leave the state, and with ``how="left"``/``"outer"`` those that joined nothing are
emitted, in the same pass whose state write (and changelog record) removes them,
so each is emitted once (under exactly-once, in the same transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from sluice.dataflow.joins import SIDE_HEADER, WindowJoin
from sluice.dataflow.steps import EventTimed, Record
from sluice.errors import FutureTimestampError, RecordError
from sluice.runtime.failures import FailureRouter
from sluice.runtime.stateful import KEY_TYPE_HEADER, AggregateNode, _key_bytes, _Pass
from sluice.state.joins import JoinLogic
from sluice.state.windows import DEFAULT_MAX_FUTURE

__all__ = ["JoinNode"]

logger = logging.getLogger(__name__)

_OWN_HEADERS = (SIDE_HEADER, KEY_TYPE_HEADER)


class JoinOutput(EventTimed):
    """A join result: the triggering record's source, the result's timestamp, the record's own headers."""

    __slots__ = ()

    def headers(self) -> list[tuple[str, bytes]] | None:
        headers = self.msg.headers()
        if not headers:
            return None
        return [h for h in headers if h[0] not in _OWN_HEADERS] or None


class Unmatched(EventTimed):
    """The output of a record that joined nothing, emitted when its window closed (no headers)."""

    __slots__ = ()

    def headers(self) -> None:
        return None


class Buffered:
    """A buffered record as the join topic held it: what the failure policy dead-letters when ``fn`` raises."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_ts", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes, value: Any, side: str, ts: int):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._ts = key, orjson.dumps(value), ts
        self._headers = [(SIDE_HEADER, side.encode())]

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> None:
        return None


class JoinNode(AggregateNode):
    """One ``WindowJoin`` step of the graph and its store partitions."""

    step: WindowJoin

    def __init__(
        self,
        step: WindowJoin,
        app: str,
        state_dir: Path,
        produce: Callable[..., None],
        poll: Callable[[float], Any],
        router: FailureRouter,
    ) -> None:
        super().__init__(step, app, state_dir, produce, poll, router)
        self.join = JoinLogic(step.spec, step.fn)
        self.logic = self.join
        # a far-future record would close every buffered record of its partition at once
        self._max_future = DEFAULT_MAX_FUTURE

    def _too_far(self, ts: int, limit: int) -> FutureTimestampError:
        exc = super()._too_far(ts, limit)
        # a join has no max_future= to raise: its limit is the windows' default
        text = str(exc).replace(
            ", or raise window(max_future=...)", " (a join refuses event times over 1h ahead)"
        )
        return FutureTimestampError(text)

    def _one(self, ctx: _Pass, record: Record) -> list[Record]:
        value, key, meta = record
        ts = meta.timestamp()[1]
        if ts > ctx.future_limit:
            raise self._too_far(ts, ctx.future_limit)
        side = _side(meta)
        kb = key if type(key) is bytes else _key_bytes(key)
        state = self._load(ctx, kb)
        stream_time = ts if ts > ctx.stream_time else ctx.stream_time
        added = self.join.add(state, side, ts, value, stream_time, meta.offset())
        if added is None:
            ctx.stream_time = stream_time
            self._on_late(record, kb, ts, ctx.batch)
            return []
        new, joined = added
        ctx.states[kb] = new
        ctx.changed.add(kb)
        ctx.stream_time = stream_time
        return [(out, kb, JoinOutput(meta, t)) for t, out in joined]

    def _close_group(self, ctx: _Pass, kb: bytes, trigger: Any) -> list[Record]:
        state = self._load(ctx, kb)
        if state is None:
            return []
        left, unmatched = self.join.close(state, ctx.stream_time)
        ctx.states[kb] = left
        ctx.changed.add(kb)
        out: list[Record] = []
        for ts, side, value, offset in unmatched:
            try:
                out.append((self.join.unmatched(side, value), kb, Unmatched(trigger, ts)))
            except Exception as exc:  # noqa: BLE001 - handed to the failure policy
                out.extend(self._fail_unmatched(trigger, kb, ts, side, value, offset, exc, ctx))
        return out

    def _fail_unmatched(
        self, trigger: Any, kb: bytes, ts: int, side: str, value: Any, offset: int, exc: Exception, ctx: _Pass
    ) -> list[Record]:
        # the record left the state with its window: retried in place, then dead-lettered as the
        # join topic held it (its topic, partition and offset), not as the record that closed it
        origin = Buffered(trigger.topic(), trigger.partition(), offset, kb, value, side, ts)
        step = self.step

        def retry(_record: Record) -> list[Record]:
            return [(self.join.unmatched(side, value), kb, Unmatched(trigger, ts))]

        recovered = self._router.handle(
            "process", step.name, step.on_error, [(0, (value, kb, origin), exc)], retry, ctx.batch
        )
        return recovered.get(0, [])


def _side(meta: Any) -> str:
    for name, value in meta.headers() or ():
        if name == SIDE_HEADER:
            return "l" if value == b"l" else "r"
    msg = (
        f"the record {meta.topic()}[{meta.partition()}]@{meta.offset()} has no {SIDE_HEADER!r} header: "
        "a join topic takes only records its join wrote (replay dead letters of a join with their headers)"
    )
    raise RecordError(msg)
