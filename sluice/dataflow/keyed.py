"""Keyed state in user functions: ``map(fn, state=True)`` (and ``filter``, ``flat_map``).

``fn(value, state)`` gets the ``KeyState`` of the record's key: a dict of JSON values
the function reads and changes. The runtime keeps it like an aggregation's state (a
RocksDB store per partition, the compacted changelog ``<app>-<store>-changelog``,
restored on assignment, inside the transaction under exactly-once). A call that raises
changes nothing: the function works on its own copy of the state, decoded from the
stored JSON, and only a call that returns has its copy written back.

Example:
    >>> from sluice.testing import run_steps
    >>> def running_total(order, state):
    ...     state["total"] = state.get("total", 0) + order["amount"]
    ...     return state["total"]
    >>> orders = [{"user": "a", "amount": 5}, {"user": "b", "amount": 1}, {"user": "a", "amount": 2}]
    >>> run_steps(lambda s: s.key_by(lambda o: o["user"], repartition=False).map(running_total, state=True), orders)
    [5, 1, 7]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from sluice.dataflow.meta import Meta
from sluice.dataflow.steps import Aggregate, Record, StepFailed
from sluice.errors import StateError
from sluice.serde import key_serializer
from sluice.state.aggregations import Aggregation

__all__ = ["KeyState", "KeyedState", "StateKind"]

StateKind = Literal["map", "filter", "flat_map"]
#: ``call``'s answer when the function left the state as it found it (nothing to write)
UNCHANGED = object()


def _same(value: Any) -> Any:
    return value


def _keep(acc: Any, _value: Any) -> Any:
    return acc


#: what a state step is to the code that handles aggregations alike (store, changelog, topics)
STATE_AGGREGATION = Aggregation("state", _same, dict, _keep, _same)


class KeyState(MutableMapping[str, Any]):
    """The state of one record key: a dict of JSON values (``str`` keys), private to one call.

    Read and write it like a dict: ``state.get(k, default)``, ``state[k] = v``,
    ``del state[k]``, ``k in state``, ``state.setdefault(k, [])``... Values must be JSON
    (dict, list, str, int, float, bool, None): they are stored on disk and in the
    changelog topic. A key whose state ends up empty is deleted.

    Example:
        >>> state = KeyState(b'{"seen": 2}')
        >>> state["seen"] += 1
        >>> "seen" in state, state.get("missing", 0)
        (True, 0)
        >>> del state["seen"]
        >>> state.dumped()
        b'{}'
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, raw: bytes | None = None) -> None:
        self._raw = raw
        self._data: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            # a fresh decode per call: what a failed call changed, even inside a nested
            # list or dict, is never seen by the next one
            data = self._data = orjson.loads(self._raw) if self._raw else {}
        return data

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            msg = f"state[{key!r}] = ...: state keys are str (JSON object keys), not {type(key).__name__}; use str(key)"
            raise StateError(msg)
        self._dict()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"KeyState({self._dict()!r})"

    def dumped(self) -> bytes | None:
        """The state as JSON bytes after the call (None: the function never touched it).

        Raises:
            StateError: a value is not JSON.
        """
        if self._data is None:
            return None
        try:
            return orjson.dumps(self._data)
        except TypeError as exc:
            msg = (
                f"the function left a state that is not JSON ({exc}): state values must be dict, list, "
                "str, int, float, bool or None (they are stored in the changelog topic); convert them first"
            )
            raise StateError(msg) from exc


@dataclass(frozen=True)
class KeyedState(Aggregate):
    """``map``/``filter``/``flat_map`` with ``state=True``: ``fn`` reads and changes its key's ``KeyState``.

    A keyed step, kept like an aggregation (``store``, changelog, repartition after a
    ``key_by``); the runtime executes it. ``meta``: ``fn`` also gets the record's ``Meta``
    (``fn(value, meta, state)``). ``ttl``: ms of stream time after its last change after
    which a key's state is dropped (None: kept until the function empties it).
    """

    fn: Callable[..., Any] = field(kw_only=True)
    kind: StateKind = field(default="map", kw_only=True)
    meta: bool = field(default=False, kw_only=True)
    ttl: int | None = field(default=None, kw_only=True)
    #: run_steps' store (the runtime keeps state in RocksDB): serialized key -> state JSON
    memory: dict[bytes, bytes] = field(default_factory=dict, kw_only=True, compare=False, repr=False)

    def call(self, value: Any, key: Any, msg: Any, raw: bytes | None) -> tuple[list[Any], Any]:
        """Run ``fn`` on one record: ``(output values, the new state JSON, None to delete, or UNCHANGED)``.

        The function's own exception propagates, with nothing changed.
        """
        state = KeyState(raw)
        result = self.fn(value, Meta(key, msg), state) if self.meta else self.fn(value, state)
        kind = self.kind
        if kind == "map":
            out = [result]
        elif kind == "filter":
            out = [value] if result else []
        else:
            out = list(result)  # a generator that raises midway fails the call before its state lands
        new = state.dumped()
        if new is None or new == (raw or b"{}"):
            return out, UNCHANGED
        return out, (None if new == b"{}" else new)

    def apply(self, records: list[Record]) -> list[Record]:
        """In memory, for ``sluice.testing.run_steps`` (no TTL); the runtime uses its stores instead."""
        memory = self.memory
        out: list[Record] = []
        i = 0
        try:
            for i, (v, k, m) in enumerate(records):  # noqa: B007 - i tells where a failure happened
                kb = state_key(k)
                values, new = self.call(v, k, m, memory.get(kb))
                if new is None:
                    memory.pop(kb, None)
                elif new is not UNCHANGED:
                    memory[kb] = new
                out.extend((x, k, m) for x in values)
        except Exception as exc:
            raise StepFailed(i, out, exc) from exc
        return out


def state_key(key: Any) -> bytes:
    """The bytes a record key keeps its state under (as a key_by key is written to Kafka).

    Example:
        >>> state_key("u1"), state_key(b"u1"), state_key(7)
        (b'u1', b'u1', b'7')
    """
    if type(key) is str:
        return key.encode()
    if key is None:
        msg = (
            "the record has no key for its state: key_by(...) returned None, or the record has no key; "
            "state=True keeps state per record key"
        )
        raise StateError(msg)
    kb = key_serializer(key)
    assert kb is not None
    return kb
