"""Event-time windows: which windows a record falls in, when they close, what they hold.

Pure logic over one group's state (a dict of JSON values), without Kafka or storage,
so that it can be checked exhaustively against a brute-force oracle. Times are
milliseconds; every window is reported as ``[start, end)``.

Semantics (those of Kafka Streams):

- **tumbling** ``size``: windows ``[k*size, (k+1)*size)`` aligned to the epoch.
- **hopping** ``size``, ``step``: windows ``[k*step, k*step + size)`` with ``k*step >= 0``;
  a record is in every window that contains it (``size`` need not be a multiple of ``step``).
- **sliding** ``size`` (the largest time difference): every record ``t`` defines the
  window ``[t - size, t]`` (both ends included), and ``[t + 1, t + 1 + size]`` when
  another record falls in it; a window holds every record whose time is in it.
  Reported as ``[start, end + 1)``.
- **session** ``gap``: records of a group closer than ``gap`` (inclusive) to each
  other form one session ``[first, last]``; a record between two sessions merges
  them. Reported as ``[first, last + 1)``.

Stream time is the largest timestamp seen (per partition). A window closes when
``end + grace <= stream time`` (``end`` as reported; a session when
``last + 1 + gap + grace <=`` it) and is then final: no record changes it any more.
A record whose every window is closed is late and changes nothing; otherwise it goes
into those of its windows still open (hopping: the closed ones are left as they
were). Precisely, a record is late when:

- tumbling, hopping: every window holding it is closed;
- sliding: its own window ``[t - size, t]`` is closed (``t + 1 + grace <= stream time``),
  even if a later window holding it is still open (every window holding it is open
  otherwise);
- session: the session it would form, merged with the group's *open* sessions, is
  closed. A closed session is never merged again, whether or not it was reported yet:
  a record within ``gap`` of it starts (or joins) another session. Kafka Streams would
  merge it while the session is still in its store, reopening a window it may already
  have reported final; here the result does not depend on when windows are reported.

Values are folded in arrival order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sluice._durations import parse_duration
from sluice.errors import ConfigError
from sluice.state.aggregations import Aggregation

__all__ = ["GroupLogic", "Result", "Windows", "logic_for"]

#: one reported value of a group: (window start, window end, value); start/end None without a window
Result = tuple[int | None, int | None, Any]
State = dict[str, Any]

WindowKind = Literal["tumbling", "hopping", "sliding", "session"]

#: aggregations whose accumulator the user's function builds (and may change in place)
_USER_BUILT = frozenset({"agg", "reduce"})


def _ms(value: str | timedelta, name: str) -> int:
    return round(parse_duration(value, name) * 1000)


#: how far past the wall clock a record's timestamp may be (ms) unless window(max_future=...) says
DEFAULT_MAX_FUTURE = 3_600_000


@dataclass(frozen=True)
class Windows:
    """A window definition in milliseconds (``size`` is the gap for sessions).

    ``max_future``: records whose timestamp is further past the wall clock are refused
    (None: no limit).

    Example:
        >>> Windows.parse(hopping="5m", step="1m", grace="10s")
        Windows(kind='hopping', size=300000, step=60000, grace=10000, max_future=3600000)
    """

    kind: WindowKind
    size: int
    step: int
    grace: int
    max_future: int | None = DEFAULT_MAX_FUTURE

    @classmethod
    def parse(
        cls,
        *,
        tumbling: str | timedelta | None = None,
        hopping: str | timedelta | None = None,
        step: str | timedelta | None = None,
        sliding: str | timedelta | None = None,
        session: str | timedelta | None = None,
        grace: str | timedelta = "0s",
        max_future: str | timedelta | None = f"{DEFAULT_MAX_FUTURE}ms",
    ) -> Windows:
        given = {
            k: v
            for k, v in (
                ("tumbling", tumbling),
                ("hopping", hopping),
                ("sliding", sliding),
                ("session", session),
            )
            if v is not None
        }
        if len(given) != 1:
            msg = (
                "window() needs exactly one of tumbling=, hopping= (with step=), sliding= or session=, "
                f"got {', '.join(given) or 'none'}; e.g. window(tumbling='1m', grace='10s')"
            )
            raise ConfigError(msg)
        kind, raw = next(iter(given.items()))
        size = _ms(raw, f"window: {kind}")
        if size <= 0:
            msg = f"window({kind}={raw!r}): the window must be longer than 0"
            raise ConfigError(msg)
        if kind == "hopping":
            if step is None:
                msg = f"window(hopping={raw!r}) needs step= (how far each window starts after the previous)"
                raise ConfigError(msg)
            advance = _ms(step, "window: step")
            if not 0 < advance <= size:
                msg = f"window(hopping={raw!r}, step={step!r}): step must be > 0 and at most the window size"
                raise ConfigError(msg)
        elif step is not None:
            msg = f"window(step=...) goes with hopping=, not {kind}="
            raise ConfigError(msg)
        else:
            advance = size
        future = None if max_future is None else _ms(max_future, "window: max_future")
        return cls(kind, size, advance, _ms(grace, "window: grace"), future)  # type: ignore[arg-type]


class GroupLogic:
    """How one group's state changes with a record, and what closes when stream time advances."""

    windowed = True

    def __init__(self, aggregation: Aggregation, windows: Windows | None) -> None:
        self.aggregation = aggregation
        self.windows = windows
        # a user's function may change its accumulator in place: it gets a copy, so that neither
        # the state add() was given nor an update already reported (not serialized yet) changes
        self._own: Any = copy.deepcopy if aggregation.name in _USER_BUILT else _same

    def add(
        self, state: State | None, ts: int, value: Any, stream_time: int
    ) -> tuple[State, list[Result]] | None:
        """Fold the extracted ``value`` at time ``ts`` into ``state`` (not mutated); None when late."""
        raise NotImplementedError

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Result]]:
        """Report and drop what closed at ``stream_time``; None when nothing is left."""
        return state, []

    def next_close(self, state: State) -> int | None:
        """The stream time at which something of ``state`` closes next."""
        return None

    # state <-> JSON-ready dict (windows keyed by int in memory, pairs on disk)
    def to_json(self, state: State) -> State:
        return state

    def from_json(self, state: State) -> State:
        return state


def _same(value: Any) -> Any:
    return value


class _Running(GroupLogic):
    """No window: one accumulator per group, forever."""

    windowed = False

    def add(self, state: State | None, ts: int, value: Any, stream_time: int) -> tuple[State, list[Result]]:
        agg = self.aggregation
        acc = agg.add(self._own(state["a"]) if state is not None else agg.init(), value)
        return {**(state or {}), "a": acc}, [(None, None, agg.result(acc))]


class _Fixed(GroupLogic):
    """Tumbling and hopping windows: one accumulator per open window."""

    def __init__(self, aggregation: Aggregation, windows: Windows | None) -> None:
        super().__init__(aggregation, windows)
        assert windows is not None
        self._tumbling = windows.step == windows.size
        self._span = windows.size + windows.grace  # a window closes this long after its start

    def starts(self, ts: int) -> list[int]:
        w = self.windows
        assert w is not None
        if w.step == w.size:  # tumbling: one window
            return [ts - ts % w.size] if ts >= 0 else []
        last = ts - ts % w.step
        first = max(0, last - (w.size - 1) // w.step * w.step)
        return [s for s in range(first, last + 1, w.step) if s <= ts < s + w.size]

    def add(
        self, state: State | None, ts: int, value: Any, stream_time: int
    ) -> tuple[State, list[Result]] | None:
        w = self.windows
        assert w is not None
        agg = self.aggregation
        if self._tumbling:  # the usual case, in one step: its one window
            if ts < 0:
                return None
            start = ts - ts % w.size
            if start + self._span <= stream_time:
                return None  # its window closed: the record is late
            if state is None:
                acc = agg.add(agg.init(), value)
                return {"w": {start: acc}}, [(start, start + w.size, agg.result(acc))]
            accs = dict(state["w"])
            acc = agg.add(self._own(accs[start]) if start in accs else agg.init(), value)
            accs[start] = acc
            return {**state, "w": accs}, [(start, start + w.size, agg.result(acc))]
        accs = dict(state["w"]) if state is not None else {}
        out: list[Result] = []
        for start in self.starts(ts):
            end = start + w.size
            if end + w.grace <= stream_time:
                continue  # this window closed: the record is late for it
            acc = agg.add(self._own(accs[start]) if start in accs else agg.init(), value)
            accs[start] = acc
            out.append((start, end, agg.result(acc)))
        if not out:
            return None
        return {**(state or {}), "w": accs}, out

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Result]]:
        w = self.windows
        assert w is not None
        result = self.aggregation.result
        accs = state["w"]
        if len(accs) == 1:  # the usual case (tumbling, in order): no sorting, no rebuilt dicts
            for s, acc in accs.items():
                if s + w.size + w.grace > stream_time:
                    return state, []
                return None, [(s, s + w.size, result(acc))]
        closed = sorted(s for s in accs if s + w.size + w.grace <= stream_time)
        if not closed:
            return state, []
        out = [(s, s + w.size, result(accs[s])) for s in closed]
        left = {s: a for s, a in accs.items() if s + w.size + w.grace > stream_time}
        return ({**state, "w": left} if left else None), out

    def next_close(self, state: State) -> int | None:
        accs = state["w"]
        if len(accs) == 1:
            for start in accs:
                return start + self._span
        return min(accs) + self._span if accs else None

    def to_json(self, state: State) -> State:
        return {**state, "w": [[s, a] for s, a in state["w"].items()]}

    def from_json(self, state: State) -> State:
        return {**state, "w": {s: a for s, a in state["w"]}}


class _Sliding(GroupLogic):
    """Sliding windows, recomputed from the group's recent records ``e: [[ts, value], ...]``.

    ``c`` is the stream time up to which closed windows were reported.
    """

    def window_starts(self, times: Iterable[int]) -> set[int]:
        w = self.windows
        assert w is not None
        ordered = sorted(set(times))
        starts = {t - w.size for t in ordered}
        for i, t in enumerate(ordered):
            # [t + 1, t + 1 + size] exists when a later record falls in it
            if i + 1 < len(ordered) and ordered[i + 1] <= t + 1 + w.size:
                starts.add(t + 1)
        return starts

    def _value(self, events: list[list[Any]], start: int) -> Any:
        end = start + self.windows.size  # type: ignore[union-attr]
        return self.aggregation.fold(v for t, v in events if start <= t <= end)

    def _close_time(self, start: int) -> int:
        w = self.windows
        assert w is not None
        return start + w.size + 1 + w.grace

    def add(
        self, state: State | None, ts: int, value: Any, stream_time: int
    ) -> tuple[State, list[Result]] | None:
        w = self.windows
        assert w is not None
        if ts + 1 + w.grace <= stream_time:
            return None  # its own window [ts - size, ts] is closed, and so is every window holding it
        events = list(state["e"]) if state is not None else []
        before = self.window_starts(t for t, _ in events)
        events.append([ts, value])
        after = self.window_starts(t for t, _ in events)
        changed = sorted(s for s in after if s <= ts <= s + w.size or s not in before)
        out = [(s, s + w.size + 1, self._value(events, s)) for s in changed]
        new = {**(state or {}), "e": events}
        new.setdefault("c", stream_time)
        return new, out

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Result]]:
        w = self.windows
        assert w is not None
        events, reported = state["e"], state.get("c", stream_time)
        due = sorted(
            s
            for s in self.window_starts(t for t, _ in events)
            if reported < self._close_time(s) <= stream_time
        )
        out = [(s, s + w.size + 1, self._value(events, s)) for s in due]
        kept = [e for e in events if e[0] + w.size + 2 + w.grace > stream_time]
        if not kept:
            return None, out
        return {**state, "e": kept, "c": stream_time}, out

    def next_close(self, state: State) -> int | None:
        w = self.windows
        assert w is not None
        reported = state.get("c", 0)
        times = [self._close_time(s) for s in self.window_starts(t for t, _ in state["e"])]
        later = [t for t in times if t > reported]
        # also when the oldest record can go (no later record can share a window with it):
        # without it, a state whose windows all closed would never be dropped
        later.append(min(t for t, _ in state["e"]) + w.size + 2 + w.grace)
        return min(later)


class _Session(GroupLogic):
    """Session windows ``s: [[first, last, [[ts, value], ...]], ...]``, sorted and apart by more than the gap."""

    def _end(self, session: list[Any]) -> int:
        w = self.windows
        assert w is not None
        return session[1] + 1 + w.size + w.grace  # its close time

    def add(
        self, state: State | None, ts: int, value: Any, stream_time: int
    ) -> tuple[State, list[Result]] | None:
        w = self.windows
        assert w is not None
        sessions = state["s"] if state is not None else []
        # a closed session is final, reported or not yet (close() runs after the batch)
        merged = [s for s in sessions if s[0] - w.size <= ts <= s[1] + w.size and self._end(s) > stream_time]
        first = min([ts, *(s[0] for s in merged)])
        last = max([ts, *(s[1] for s in merged)])
        if last + 1 + w.size + w.grace <= stream_time:
            return None
        events = sorted((e for s in merged for e in s[2]), key=lambda e: e[2])  # arrival order
        seq = (state or {}).get("n", 0)
        events.append([ts, value, seq])
        session = [first, last, events]
        rest = [s for s in sessions if s not in merged]
        new_sessions = sorted([*rest, session], key=lambda s: s[0])
        value_out = self.aggregation.fold(e[1] for e in events)
        return {**(state or {}), "s": new_sessions, "n": seq + 1}, [(first, last + 1, value_out)]

    def close(self, state: State, stream_time: int) -> tuple[State | None, list[Result]]:
        fold = self.aggregation.fold
        out: list[Result] = []
        kept = []
        for s in state["s"]:
            if self._end(s) <= stream_time:
                out.append((s[0], s[1] + 1, fold(e[1] for e in s[2])))
            else:
                kept.append(s)
        if not kept:
            return None, out
        return ({**state, "s": kept} if out else state), out

    def next_close(self, state: State) -> int | None:
        return min((self._end(s) for s in state["s"]), default=None)


def logic_for(aggregation: Aggregation, windows: Windows | None) -> GroupLogic:
    """The group logic of ``aggregation`` over ``windows`` (None: a running aggregate)."""
    if windows is None:
        return _Running(aggregation, None)
    kinds: dict[str, type[GroupLogic]] = {
        "tumbling": _Fixed,
        "hopping": _Fixed,
        "sliding": _Sliding,
        "session": _Session,
    }
    return kinds[windows.kind](aggregation, windows)
