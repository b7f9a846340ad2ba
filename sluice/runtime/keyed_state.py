"""Runs ``map/filter/flat_map(fn, state=True)``: an aggregation's store machinery, the user's function.

A ``StateNode`` is an ``AggregateNode`` whose fold is the user's function: the stores
per partition, the restore from the changelog on assignment, the changelog buffer
flushed before every offset commit (inside the transaction under exactly-once), the
undo of an aborted transaction, the close-time index and the failure handling per
record are all the aggregation's. What differs is one record's work (``_one``) and the
shape of a key's state: ``{"v": <the KeyState's JSON>, "x": <expiry in stream time>}``.

TTL is stream time, as windows are: a key's state expires ``ttl`` after the stream time
(the partition's largest record timestamp) at its last change. An expired state reads
as empty at once, and is deleted (a changelog tombstone) through the same close-time
index that closes windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from sluice.dataflow.keyed import UNCHANGED, KeyedState, state_key
from sluice.dataflow.steps import EventTimed, Record
from sluice.runtime.failures import FailureRouter
from sluice.runtime.stateful import KEY_TYPE_HEADER, AggregateNode, _key_out, _Pass
from sluice.state.windows import GroupLogic, State

__all__ = ["StateNode"]

logger = logging.getLogger(__name__)


class _StateLogic(GroupLogic):
    """A key's state as the aggregation machinery stores it: the JSON bytes ``v`` and expiry ``x``.

    In memory ``v`` stays bytes: each call decodes its own copy (``KeyState``), so a
    call that raises leaves nothing behind; on disk and in the changelog it is embedded
    as JSON (``orjson.Fragment``, no second encoding).
    """

    windowed = False

    def next_close(self, state: State) -> int | None:
        return state.get("x")

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Any]]:
        expiry = state.get("x")
        if expiry is not None and expiry <= stream_time:
            return None, []
        return state, []

    def to_json(self, state: State) -> State:
        return {"v": orjson.Fragment(state["v"]), "x": state.get("x")}

    def from_json(self, state: State) -> State:
        return {"v": orjson.dumps(state["v"]), "x": state.get("x")}


class _Unkeyed(EventTimed):
    """A repartitioned record going on: without the header that told how its key was serialized."""

    __slots__ = ()

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        headers = self.msg.headers()
        if not headers:
            return headers
        return [h for h in headers if h[0] != KEY_TYPE_HEADER] or None


class StateNode(AggregateNode):
    """One ``KeyedState`` step of the graph and its store partitions."""

    def __init__(
        self,
        step: KeyedState,
        app: str,
        state_dir: Path,
        produce: Callable[..., None],
        poll: Callable[[float], Any],
        router: FailureRouter,
    ) -> None:
        super().__init__(step, app, state_dir, produce, poll, router)
        self.logic = _StateLogic(step.aggregation, None)
        self.state_step = step
        self._ttl = step.ttl

    def _one(self, ctx: _Pass, record: Record) -> list[Record]:
        value, key, msg = record
        step = self.state_step
        if step.repartitioned:
            # the key came through the repartition topic as bytes: the function sees key_by's value
            kb = state_key(key)  # bytes as they are; None (key_by returned None): the record fails
            key = _key_out(key, msg)
            msg = _Unkeyed(msg, msg.timestamp()[1])
        else:
            kb = state_key(key)
        ts = msg.timestamp()[1]
        stream_time = ts if ts > ctx.stream_time else ctx.stream_time
        state = self._load(ctx, kb)
        raw = None
        if state is not None:
            expiry = state["x"]
            if expiry is None or expiry > stream_time:
                raw = state["v"]
        values, new = step.call(value, key, msg, raw)
        # the call returned: from here on its state lands
        ctx.stream_time = stream_time
        if new is not UNCHANGED:
            ctx.states[kb] = (
                None
                if new is None
                else {"v": new, "x": None if self._ttl is None else stream_time + self._ttl}
            )
            ctx.changed.add(kb)
        return [(v, key, msg) for v in values]
