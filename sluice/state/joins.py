"""Windowed stream-stream joins: what one key's buffered records become as records arrive and time passes.

Pure logic over one key's state (JSON values), without Kafka or storage, like
``windows.py``, so that it can be checked against a brute-force oracle. Times are
milliseconds.

Semantics (those of Kafka Streams' KStream-KStream join, with a window end that
cannot make the result depend on batching):

- A left record at ``t`` and a right record at ``u`` of the same key join when
  ``|t - u| <= within``: the output is ``fn(left, right)``, timestamped ``max(t, u)``.
- A record's window is ``[t - within, t + within]``; it closes when
  ``t + within + 1 + grace <= stream time`` (its end, exclusive, plus the grace).
  Stream time is the largest timestamp seen (per partition, both sides together).
  A record is buffered until its window closes; then it leaves the state, and with
  ``how="left"`` (left records) or ``how="outer"`` (records of both sides) a record
  that joined nothing is emitted once: ``fn(left, None)`` or ``fn(None, right)``,
  timestamped ``t``.
- A record joins the buffered records of the other side whose windows are still
  open at the stream time its own arrival reached (a closed record is final, whether
  or not it was emitted yet).
- A record whose own window is closed when it arrives is late: it joins nothing,
  is never emitted, and is counted (and dropped), as late records of windows are.
- ``offset`` (the record's offset in the join topic) identifies a buffered record: a
  record processed again after a crash joins again but is buffered once.

Example:
    >>> logic = JoinLogic(JoinSpec.parse("left", within="5s", grace="0s"), lambda l, r: (l, r))
    >>> state, out = logic.add(None, "l", 1_000, "click", 1_000, 0)
    >>> out
    []
    >>> state, out = logic.add(state, "r", 4_000, "view", 4_000, 1)
    >>> out
    [(4000, ('click', 'view'))]
    >>> state, out = logic.add(state, "l", 20_000, "lonely", 20_000, 2)
    >>> left, unmatched = logic.close(state, 20_000)
    >>> [(ts, side, value) for ts, side, value, _offset in unmatched]  # both 1s and 4s closed
    []
    >>> left, unmatched = logic.close(left, 30_000)
    >>> [(ts, side, value) for ts, side, value, _offset in unmatched]
    [(20000, 'l', 'lonely')]
    >>> logic.unmatched("l", "lonely")
    ('lonely', None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sluice._durations import parse_duration
from sluice.errors import ConfigError
from sluice.state.aggregations import Aggregation
from sluice.state.windows import GroupLogic, State

__all__ = ["JOIN_AGGREGATION", "JoinHow", "JoinLogic", "JoinSpec", "Side"]

JoinHow = Literal["inner", "left", "outer"]
#: which input a record came from: "l" (the stream ``join`` was called on) or "r" (its argument)
Side = Literal["l", "r"]
#: a buffered record: [timestamp, value, matched (0/1), offset in the join topic]
Entry = list[Any]
#: a record leaving the state unmatched: (timestamp, side, value, offset)
Unmatched = tuple[int, str, Any, int]

_HOWS = ("inner", "left", "outer")
_OTHER = {"l": "r", "r": "l"}


def _unused(*_args: Any) -> Any:  # pragma: no cover - a join has no accumulator
    msg = "a join has no accumulator"
    raise TypeError(msg)


#: what a join is to the runtime's aggregation machinery (it names the store "join-<n>" by default)
JOIN_AGGREGATION = Aggregation("join", _unused, _unused, _unused, _unused)


def _ms(value: str | timedelta, name: str) -> int:
    return round(parse_duration(value, name) * 1000)


@dataclass(frozen=True)
class JoinSpec:
    """How two streams join: ``how``, and ``within`` and ``grace`` in milliseconds.

    Example:
        >>> JoinSpec.parse("outer", within="5m", grace="10s")
        JoinSpec(how='outer', within=300000, grace=10000)
        >>> JoinSpec.parse("inner", within=None, grace=None)
        Traceback (most recent call last):
        ...
        sluice.errors.ConfigError: join() of two streams needs within=: how far apart in time two records may be to join, e.g. within='5m'
    """

    how: JoinHow
    within: int
    grace: int

    @classmethod
    def parse(cls, how: str, *, within: str | timedelta | None, grace: str | timedelta | None) -> JoinSpec:
        if how not in _HOWS:
            msg = f"join(how={how!r}): use one of {', '.join(map(repr, _HOWS))}"
            raise ConfigError(msg)
        if within is None:
            msg = (
                "join() of two streams needs within=: how far apart in time two records may be "
                "to join, e.g. within='5m'"
            )
            raise ConfigError(msg)
        within_ms = _ms(within, "join: within")
        grace_ms = 0 if grace is None else _ms(grace, "join: grace")
        for what, value, raw in (("within", within_ms, within), ("grace", grace_ms, grace)):
            if value < 0:
                msg = f"join({what}={raw!r}): must not be negative"
                raise ConfigError(msg)
        return cls(how, within_ms, grace_ms)  # type: ignore[arg-type]

    def close_time(self, ts: int) -> int:
        """The stream time at which the window of a record at ``ts`` closes."""
        return ts + self.within + 1 + self.grace

    def emits(self, side: str) -> bool:
        """Whether unmatched records of ``side`` are emitted when their window closes."""
        return self.how == "outer" or (self.how == "left" and side == "l")


class JoinLogic(GroupLogic):
    """One key's buffered records of both sides: ``{"l": [entry, ...], "r": [entry, ...]}``.

    ``add`` and ``close`` never change the state they are given (a record whose
    function raises leaves the state as it was).
    """

    def __init__(self, spec: JoinSpec, fn: Callable[[Any, Any], Any]) -> None:
        super().__init__(JOIN_AGGREGATION, None)
        self.spec = spec
        self.fn = fn

    def add(  # type: ignore[override]
        self, state: State | None, side: str, ts: int, value: Any, stream_time: int, offset: int
    ) -> tuple[State, list[tuple[int, Any]]] | None:
        """Buffer the record and join it; ``(new state, [(timestamp, output)])``, or None when late.

        ``stream_time`` already includes ``ts``.
        """
        spec = self.spec
        if spec.close_time(ts) <= stream_time:
            return None
        other_side = _OTHER[side]
        mine: list[Entry] = list(state[side]) if state is not None else []
        others: list[Entry] = list(state[other_side]) if state is not None else []
        fn = self.fn
        out: list[tuple[int, Any]] = []
        within = spec.within
        for i, entry in enumerate(others):
            t = entry[0]
            if abs(t - ts) > within or spec.close_time(t) <= stream_time:
                continue
            joined = fn(value, entry[1]) if side == "l" else fn(entry[1], value)
            out.append((t if t > ts else ts, joined))
            if not entry[2]:
                others[i] = [t, entry[1], 1, entry[3]]
        if not any(e[3] == offset for e in mine):
            mine.append([ts, value, 1 if out else 0, offset])
        # else: the state restored after a crash already holds this record (its offset was not
        # committed): joined again (at-least-once), but buffered once, so it cannot come out
        # unmatched although it joined
        return {side: mine, other_side: others}, out

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Unmatched]]:  # type: ignore[override]
        """Drop the records whose windows closed; return those to emit unmatched, by time then side."""
        spec = self.spec
        kept: State = {}
        unmatched: list[Unmatched] = []
        for side in ("l", "r"):
            entries = state.get(side, [])
            open_ = [e for e in entries if spec.close_time(e[0]) > stream_time]
            if len(open_) != len(entries) and spec.emits(side):
                unmatched.extend(
                    (e[0], side, e[1], e[3])
                    for e in entries
                    if not e[2] and spec.close_time(e[0]) <= stream_time
                )
            kept[side] = open_
        unmatched.sort(key=lambda u: u[0])  # stable: arrival order within a side and time
        if not kept["l"] and not kept["r"]:
            return None, unmatched
        return kept, unmatched

    def next_close(self, state: State) -> int | None:
        times = [e[0] for side in ("l", "r") for e in state.get(side, ())]
        return self.spec.close_time(min(times)) if times else None

    def unmatched(self, side: str, value: Any) -> Any:
        """The output of a record that joined nothing: ``fn(left, None)`` or ``fn(None, right)``."""
        return self.fn(value, None) if side == "l" else self.fn(None, value)
