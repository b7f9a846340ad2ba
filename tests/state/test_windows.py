"""Event-time windows and aggregations against a brute-force oracle written from the docstring.

The oracle (``_Oracle``) follows ``sluice/state/windows.py``'s module docstring, not its code:
it decides lateness record by record at the record's stream time, recomputes every window
from scratch from the records it accepted, and folds values with plain Python (``len``,
``sum``, ``"".join``...) rather than with ``Aggregation``. ``_drive`` runs the incremental
logic the way ``sluice/runtime/stateful.py`` does: records in arrival order, ``close`` for
the groups whose ``next_close`` is due after each batch, states through
``to_json -> orjson -> from_json`` between batches, updates serialized at the batch's end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import ConfigError
from sluice.state.aggregations import Aggregation
from sluice.state.windows import Windows, logic_for

Rec = tuple[str, int, Any]  # (group key, timestamp, record value)
Win = tuple[str, int, int]  # (group key, start, end)


# ---------------------------------------------------------------------------- aggregations
def _append(acc: list[Any], v: Any) -> list[Any]:
    acc.append(v)  # mutates its accumulator in place, as users do
    return acc


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    a.update(b)  # mutates the first value it was given, as users do
    return a


def _tally(acc: dict[str, int], v: Any) -> dict[str, int]:
    acc[str(v)] = acc.get(str(v), 0) + 1
    return acc


@dataclass(frozen=True)
class Case:
    """An aggregation, how a record value is made from an int, and the plain-Python reference."""

    name: str
    aggregation: Callable[[], Aggregation]
    make: Callable[[int], Any]
    reference: Callable[[list[Any]], Any]


CASES = [
    Case("count", Aggregation.count, lambda i: {"x": i}, len),
    Case(
        "sum",
        lambda: Aggregation.sum(lambda r: r["x"]),
        lambda i: {"x": i},
        lambda rs: sum(r["x"] for r in rs),
    ),
    Case(
        "min",
        lambda: Aggregation.min(lambda r: r["x"]),
        lambda i: {"x": i},
        lambda rs: min(r["x"] for r in rs),
    ),
    Case(
        "max",
        lambda: Aggregation.max(lambda r: r["x"]),
        lambda i: {"x": i},
        lambda rs: max(r["x"] for r in rs),
    ),
    Case(
        "mean",
        lambda: Aggregation.mean(lambda r: r["x"]),
        lambda i: {"x": i},
        lambda rs: sum(r["x"] for r in rs) / len(rs),
    ),
    # string concatenation is not commutative: checks that values fold in arrival order
    Case("reduce", lambda: Aggregation.reduce(lambda a, b: a + b), lambda i: chr(97 + i % 26), "".join),
    Case(
        "reduce-mutating",
        lambda: Aggregation.reduce(_merge),
        lambda i: {str(i % 4): i},
        lambda vs: {k: v for d in vs for k, v in d.items()},
    ),
    Case(
        "agg-dict",
        lambda: Aggregation.agg(
            {"n": 0, "seq": []}, lambda acc, v: {"n": acc["n"] + 1, "seq": [*acc["seq"], v]}
        ),
        lambda i: i,
        lambda vs: {"n": len(vs), "seq": list(vs)},
    ),
    Case("agg-list-mutating", lambda: Aggregation.agg([], _append), lambda i: i, list),
    Case(
        "agg-dict-mutating",
        lambda: Aggregation.agg(dict, _tally),
        lambda i: i % 3,
        lambda vs: {str(k): vs.count(k) for k in dict.fromkeys(vs)},
    ),
]


# ---------------------------------------------------------------------------- the oracle
@dataclass
class _Oracle:
    """The docstring's semantics, brute force: every window recomputed from the accepted records."""

    w: Windows
    case: Case
    stream_time: int = 0
    #: per key, accepted records in arrival order: (ts, record value, stream time at arrival, index)
    accepted: dict[str, list[tuple[int, Any, int, int]]] = field(default_factory=dict)
    #: sessions only: per key, sessions closed (final), as lists of accepted records
    frozen: dict[str, list[list[tuple[int, Any, int, int]]]] = field(default_factory=dict)
    late: list[int] = field(default_factory=list)
    #: per record index, the sessions only: the session (start, end, value) the record is in
    session_of: dict[int, tuple[int, int, Any]] = field(default_factory=dict)

    # ---- definitions
    def fixed_starts(self, ts: int) -> list[int]:
        """Every ``[k*step, k*step + size)`` with ``k*step >= 0`` that holds ``ts``."""
        return [s for s in range(0, ts + 1, self.w.step) if s <= ts < s + self.w.size]

    def close_time(self, start: int, end: int) -> int:
        """The stream time at which the window reported as ``[start, end)`` closes."""
        w = self.w
        if w.kind == "session":
            return end + w.size + w.grace  # last + 1 + gap + grace
        return end + w.grace  # sliding: reported end is last + 1 already

    def clusters(self, records: list[tuple[int, Any, int, int]]) -> list[list[tuple[int, Any, int, int]]]:
        """Sessions: records closer than ``gap`` (inclusive) to a neighbour share a session."""
        out: list[list[tuple[int, Any, int, int]]] = []
        for r in sorted(records, key=lambda r: r[0]):
            if out and r[0] - out[-1][-1][0] <= self.w.size:
                out[-1].append(r)
            else:
                out.append([r])
        return out

    def fold(self, records: list[tuple[int, Any, int, int]]) -> Any:
        return self.case.reference([r[1] for r in sorted(records, key=lambda r: r[3])])

    def session_bounds(self, session: list[tuple[int, Any, int, int]]) -> tuple[int, int]:
        return min(r[0] for r in session), max(r[0] for r in session) + 1

    # ---- records
    def add(self, index: int, key: str, ts: int, value: Any) -> bool:
        """Accept the record unless it is late; False when late."""
        w = self.w
        self.stream_time = st_ = max(self.stream_time, ts)
        mine = self.accepted.setdefault(key, [])
        record = (ts, value, st_, index)
        if w.kind in ("tumbling", "hopping"):
            ok = any(self.close_time(s, s + w.size) > st_ for s in self.fixed_starts(ts))
        elif w.kind == "sliding":
            ok = self.close_time(ts - w.size, ts + 1) > st_  # its own window [ts - size, ts]
        else:
            self.freeze(key)
            session = next(c for c in self.clusters([*mine, record]) if record in c)
            ok = self.close_time(*self.session_bounds(session)) > st_
            if ok:
                self.session_of[index] = (*self.session_bounds(session), self.fold(session))
        if ok:
            mine.append(record)
        else:
            self.late.append(index)
        return ok

    def freeze(self, key: str) -> None:
        """Sessions: a closed session is final; its records leave the open ones."""
        mine = self.accepted.get(key, [])
        for c in self.clusters(mine):
            if self.close_time(*self.session_bounds(c)) <= self.stream_time:
                self.frozen.setdefault(key, []).append(c)
                mine[:] = [r for r in mine if r not in c]

    # ---- windows
    def windows(self, key: str, upto: int | None = None) -> dict[tuple[int, int], Any]:
        """Every window of ``key`` over the records accepted up to index ``upto``: (start, end) -> value."""
        w = self.w
        recs = [r for r in self.accepted.get(key, []) if upto is None or r[3] <= upto]
        out: dict[tuple[int, int], Any] = {}
        if w.kind in ("tumbling", "hopping"):
            for s in sorted({s for r in recs for s in self.fixed_starts(r[0])}):
                # a record goes only into those of its windows still open when it arrived
                inside = [r for r in recs if s <= r[0] < s + w.size and self.close_time(s, s + w.size) > r[2]]
                if inside:
                    out[s, s + w.size] = self.fold(inside)
        elif w.kind == "sliding":
            times = [r[0] for r in recs]
            starts = {t - w.size for t in times}
            starts |= {t + 1 for t in times if any(t + 1 <= u <= t + 1 + w.size for u in times)}
            for s in sorted(starts):
                out[s, s + w.size + 1] = self.fold([r for r in recs if s <= r[0] <= s + w.size])
        else:
            sessions = [*self.frozen.get(key, []), *self.clusters(recs)]
            for c in sessions:
                out[self.session_bounds(c)] = self.fold(c)
        return out

    def finals(self) -> dict[Win, Any]:
        """Every window closed at the final stream time."""
        for key in self.accepted:
            if self.w.kind == "session":
                self.freeze(key)
        return {
            (key, s, e): v
            for key in self.accepted
            for (s, e), v in self.windows(key).items()
            if self.close_time(s, e) <= self.stream_time
        }

    def keys_open(self) -> set[str]:
        """Keys whose state must still be kept at the final stream time."""
        w = self.w
        out = set()
        for key, recs in self.accepted.items():
            if w.kind == "sliding":
                # a future record t is not late while t + 1 + grace > stream time; it shares a
                # window with r (or makes r's right window [r+1, r+1+size]) when t <= r + 1 + size
                if any(r[0] + w.size + 2 + w.grace > self.stream_time for r in recs):
                    out.add(key)
            elif any(self.close_time(s, e) > self.stream_time for s, e in self.windows(key)):
                out.add(key)
        return out


# ---------------------------------------------------------------------------- the runtime, simulated
@dataclass
class Run:
    finals: list[tuple[str, int, int, Any]]
    #: (record index, key, start, end, value) in emission order
    updates: list[tuple[int, str, int, int, Any]]
    late: list[int]
    states: dict[str, Any]
    stream_time: int


def _roundtrip(logic: Any, state: dict[str, Any]) -> dict[str, Any]:
    return logic.from_json(orjson.loads(orjson.dumps(logic.to_json(state))))


def _drive(w: Windows, case: Case, records: list[Rec], cuts: set[int]) -> Run:
    agg = case.aggregation()
    logic = logic_for(agg, w)
    states: dict[str, Any] = {}
    stream_time = 0
    finals: list[tuple[str, int, int, Any]] = []
    updates: list[tuple[int, str, int, int, Any]] = []
    late: list[int] = []
    pending: list[tuple[int, str, int, int, Any]] = []
    for i, (key, ts, value) in enumerate(records):
        stream_time = max(stream_time, ts)
        before = states.get(key)
        snapshot = copy.deepcopy(before)
        added = logic.add(before, ts, agg.extract(value), stream_time)
        assert before == snapshot, "add() mutated the state it was given"
        if added is None:
            late.append(i)
        else:
            new, out = added
            new.setdefault("k", key)  # the runtime stores the group key in the state
            states[key] = new
            pending.extend((i, key, s, e, v) for s, e, v in out)
        if i + 1 in cuts or i + 1 == len(records):
            # the runtime serializes a pass's outputs after the pass
            updates.extend(orjson.loads(orjson.dumps(pending)))
            pending.clear()
            for k in list(states):
                due = logic.next_close(states[k])
                if due is not None and due <= stream_time:
                    left, closed = logic.close(states[k], stream_time)
                    finals.extend(orjson.loads(orjson.dumps([(k, s, e, v) for s, e, v in closed])))
                    if left is None:
                        del states[k]
                    else:
                        states[k] = left
            states = {k: _roundtrip(logic, s) for k, s in states.items()}
    return Run([tuple(f) for f in finals], [tuple(u) for u in updates], late, states, stream_time)


def _check(w: Windows, case: Case, records: list[Rec], cuts: set[int]) -> None:
    run = _drive(w, case, records, cuts)
    oracle = _Oracle(w, case)
    for i, (key, ts, value) in enumerate(records):
        oracle.add(i, key, ts, value)
    assert run.late == oracle.late, "late records differ"
    expected = oracle.finals()

    # (c) no window is reported final twice
    windows = [(k, s, e) for k, s, e, _v in run.finals]
    assert len(windows) == len(set(windows)), f"a window reported final twice: {sorted(windows)}"
    # (a) the final results are the oracle's
    got = {(k, s, e): v for k, s, e, v in run.finals}
    assert got == expected

    # (b) every update is the window's value over the records accepted so far; the last one is its final value
    last: dict[Win, Any] = {}
    for i, key, s, e, v in run.updates:
        if w.kind == "session":
            assert (s, e, v) == oracle.session_of[i]
        else:
            assert oracle.windows(key, upto=i).get((s, e)) == v, f"update {(i, key, s, e, v)}"
        last[key, s, e] = v
    for win, v in expected.items():
        assert win in last, f"final window {win} had no update"
        assert last[win] == v, f"last update of {win} is {last[win]!r}, its final value {v!r}"

    # (c) states are dropped once nothing is open, kept while something is
    assert set(run.states) == oracle.keys_open()
    logic = logic_for(case.aggregation(), w)
    for key, state in run.states.items():
        due = logic.next_close(state)
        assert due is None or due > run.stream_time, f"{key}: close overdue at {due} <= {run.stream_time}"


# ---------------------------------------------------------------------------- strategies
@st.composite
def _records(draw: st.DrawFn, case: Case) -> tuple[list[Rec], set[int]]:
    """Timestamps drift upwards with lags behind the stream time: out of order, some late."""
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from("abc"),
                st.integers(0, 5),  # how far the timeline advances
                st.one_of(
                    st.just(0), st.integers(0, 6), st.integers(4, 25)
                ),  # how far behind it the record is
                st.integers(0, 9),
            ),
            max_size=30,
        )
    )
    base = 0
    records: list[Rec] = []
    for key, advance, lag, i in steps:
        base += advance
        records.append((key, max(0, base - lag), case.make(i)))
    cuts = set(draw(st.lists(st.integers(1, max(1, len(records))), max_size=6)))
    return records, cuts


def _windows(kind: str) -> st.SearchStrategy[Windows]:
    grace = st.integers(0, 8)
    if kind == "tumbling":
        return st.builds(lambda n, g: Windows("tumbling", n, n, g), st.integers(1, 12), grace)
    if kind == "hopping":
        # steps that divide the size and steps that do not
        return st.integers(1, 12).flatmap(
            lambda n: st.builds(lambda s, g: Windows("hopping", n, s, g), st.integers(1, n), grace)
        )
    return st.builds(lambda n, g: Windows(kind, n, n, g), st.integers(1, 10), grace)  # type: ignore[arg-type]


def _property(kind: str) -> Callable[..., None]:
    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(st.sampled_from(CASES), label="aggregation")
        w = data.draw(_windows(kind), label="windows")
        records, cuts = data.draw(_records(case), label="records, batch ends")
        _check(w, case, records, cuts)

    return run


test_tumbling_matches_oracle = _property("tumbling")
test_hopping_matches_oracle = _property("hopping")
test_sliding_matches_oracle = _property("sliding")
test_session_matches_oracle = _property("session")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("kind", ["tumbling", "hopping", "sliding", "session"])
def test_every_aggregation_matches_oracle_on_a_fixed_stream(kind: str, case: Case) -> None:
    # out of order, late records, two keys, batch ends in the middle of everything
    raw = [
        ("a", 3),
        ("b", 1),
        ("a", 9),
        ("a", 4),
        ("b", 12),
        ("a", 2),
        ("a", 15),
        ("b", 11),
        ("a", 27),
        ("b", 9),
    ]
    records = [(k, ts, case.make(i)) for i, (k, ts) in enumerate(raw)]
    w = Windows(kind, 5, 2 if kind == "hopping" else 5, 2)  # type: ignore[arg-type]
    for cuts in (set(), {1, 2, 3, 4, 5, 6, 7, 8, 9}, {4, 7}):
        _check(w, case, records, cuts)


# ---------------------------------------------------------------------------- examples, by hand
def _letters(w: Windows, stream: list[tuple[int, str]], cuts: Iterable[int] = ()) -> Run:
    """One key ``a``; the record values are letters, concatenated by ``reduce`` in arrival order."""
    reduce = Case("reduce", lambda: Aggregation.reduce(lambda x, y: x + y), str, "".join)
    return _drive(w, reduce, [("a", ts, v) for ts, v in stream], set(cuts))


def _finals(run: Run) -> list[tuple[int, int, Any]]:
    return sorted((s, e, v) for _k, s, e, v in run.finals)


def _updates(run: Run) -> list[tuple[int, int, int, Any]]:
    return [(i, s, e, v) for i, _k, s, e, v in run.updates]


def test_tumbling_example_counts_per_window_and_drops_late_records() -> None:
    w = Windows.parse(tumbling="10ms", grace="5ms")  # size 10 ms, grace 5 ms
    assert w == Windows("tumbling", 10, 10, 5)
    stream = [(1, "a"), (12, "b"), (8, "c"), (25, "d"), (3, "e")]
    run = _letters(w, stream, {2, 4})
    # 8 arrives at stream time 12: [0, 10) closes at 10 + 5 = 15 > 12, so it still counts.
    # 25 moves stream time to 25: [0, 10) (15) and [10, 20) (20 + 5 = 25 <= 25) close;
    # 3 then falls in the closed [0, 10) only: late. [20, 30) stays open until 35.
    assert run.late == [4]
    assert _updates(run) == [(0, 0, 10, "a"), (1, 10, 20, "b"), (2, 0, 10, "ac"), (3, 20, 30, "d")]
    assert _finals(run) == [(0, 10, "ac"), (10, 20, "b")]
    assert list(run.states) == ["a"]


def test_hopping_example_with_a_step_that_does_not_divide_the_size() -> None:
    w = Windows.parse(hopping="10ms", step="4ms")  # windows [0, 10), [4, 14), [8, 18), [12, 22)...
    stream = [(9, "a"), (13, "b"), (5, "c"), (30, "d"), (2, "e")]
    run = _letters(w, stream, {2})
    # 9 is in [0, 10), [4, 14), [8, 18); 13 in [4, 14), [8, 18), [12, 22).
    # 5 arrives at stream time 13: its windows are [0, 10), closed (10 <= 13, and reported at
    # the end of the first batch), and [4, 14), open (14 > 13): it goes into [4, 14) only.
    # 30 (in [24, 34) and [28, 38)) closes everything before; 2, in [0, 10) only, is late.
    assert run.late == [4]
    assert _updates(run) == [
        (0, 0, 10, "a"),
        (0, 4, 14, "a"),
        (0, 8, 18, "a"),
        (1, 4, 14, "ab"),
        (1, 8, 18, "ab"),
        (1, 12, 22, "b"),
        (2, 4, 14, "abc"),
        (3, 24, 34, "d"),
        (3, 28, 38, "d"),
    ]
    assert _finals(run) == [(0, 10, "a"), (4, 14, "abc"), (8, 18, "ab"), (12, 22, "b")]


def test_sliding_example_left_and_right_windows() -> None:
    w = Windows.parse(sliding="5ms")  # size 5 ms, grace 0
    stream = [(10, "a"), (13, "b"), (20, "c"), (17, "d"), (20, "e")]
    run = _letters(w, stream, {3})
    # Left windows [t - 5, t]: [5, 10] {a}, [8, 13] {a, b}, [15, 20] {c}.
    # Right windows [t + 1, t + 6] when a record falls in them: [11, 16] {b} (13 is in it);
    # 13's [14, 19] and 20's [21, 26] hold nothing, so they do not exist.
    # Reported [start, end + 1); each closes at end + 1 + grace: 11, 14, 17, 21.
    # 17 arrives at stream time 20: its own window [12, 17] closed at 18 <= 20: late, though
    # [15, 20] holds it and is open. 20 (e) is not late (21 > 20) and joins [15, 20].
    assert run.late == [3]
    assert _updates(run) == [
        (0, 5, 11, "a"),
        (1, 8, 14, "ab"),
        (1, 11, 17, "b"),
        (2, 15, 21, "c"),
        (4, 15, 21, "ce"),
    ]
    assert _finals(run) == [(5, 11, "a"), (8, 14, "ab"), (11, 17, "b")]


def test_session_example_merges_open_sessions_never_closed_ones() -> None:
    w = Windows.parse(session="5ms")  # gap 5 ms, grace 0
    stream = [(1, "a"), (4, "b"), (12, "c"), (8, "d"), (6, "e"), (25, "f"), (2, "g")]
    expected_finals = [(1, 5, "ab"), (6, 13, "cde")]
    for cuts in (set(), {3}, {1, 2, 3, 4, 5, 6}):
        run = _letters(w, stream, cuts)
        # 1 and 4 are 3 apart: session [1, 4] "ab". 12 is 8 after 4: a new session [12, 12].
        # At stream time 12, [1, 4] is closed (4 + 1 + 5 = 10 <= 12) whether or not reported yet.
        # 8 is within 5 of both, but merges only with the open [12, 12]: [8, 12] "cd" (closes at 18).
        # 6 is within 5 of 8: [6, 12] "cde". 25 closes it (18 <= 25). 2 alone would close at 8: late.
        assert run.late == [6], cuts
        assert _finals(run) == expected_finals, cuts
        assert _updates(run) == [
            (0, 1, 2, "a"),
            (1, 1, 5, "ab"),
            (2, 12, 13, "c"),
            (3, 8, 13, "cd"),
            (4, 6, 13, "cde"),
            (5, 25, 26, "f"),
        ]


def test_session_example_a_record_between_two_open_sessions_merges_them() -> None:
    w = Windows.parse(session="5ms", grace="10ms")  # gap 5, grace 10
    run = _letters(w, [(0, "a"), (10, "c"), (5, "b"), (30, "z")], {2})
    # 0 and 10 are 10 apart: two sessions. 5 is within 5 of both, and both are open at stream
    # time 10 ([0, 0] closes at 0 + 1 + 5 + 10 = 16): one session [0, 10] "acb", in arrival
    # order, closing at 10 + 1 + 5 + 10 = 26 <= 30.
    assert _updates(run)[2] == (2, 0, 11, "acb")
    assert _finals(run) == [(0, 11, "acb")]


def test_states_survive_json_round_trips_with_their_extra_keys() -> None:
    for kind in ("tumbling", "hopping", "sliding", "session"):
        logic = logic_for(Aggregation.count(), Windows(kind, 10, 5, 0))  # type: ignore[arg-type]
        added = logic.add(None, 7, None, 7)
        assert added is not None
        state = {**added[0], "k": "user-1", "x": 12}
        assert _roundtrip(logic, state) == state


# ---------------------------------------------------------------------------- Windows.parse
def test_parse_reads_durations_in_milliseconds() -> None:
    assert Windows.parse(tumbling="1m", grace="10s") == Windows("tumbling", 60_000, 60_000, 10_000)
    assert Windows.parse(hopping="5m", step="1m") == Windows("hopping", 300_000, 60_000, 0)
    assert Windows.parse(hopping="1s", step="1s") == Windows("hopping", 1000, 1000, 0)
    assert Windows.parse(sliding="250ms") == Windows("sliding", 250, 250, 0)
    assert Windows.parse(session=timedelta(seconds=30)) == Windows("session", 30_000, 30_000, 0)
    assert Windows.parse(tumbling="1h30m", grace="1m30s") == Windows("tumbling", 5_400_000, 5_400_000, 90_000)
    assert Windows.parse(tumbling=timedelta(milliseconds=250)) == Windows("tumbling", 250, 250, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs exactly one of tumbling=, hopping= (with step=), sliding= or session=, got none"),
        ({"tumbling": "1m", "session": "1m"}, "got tumbling, session"),
        ({"step": "1m"}, "got none"),
        ({"hopping": "5m"}, "window(hopping='5m') needs step="),
        ({"hopping": "5m", "step": "6m"}, "step must be > 0 and at most the window size"),
        ({"hopping": "5m", "step": 0}, "step must be > 0 and at most the window size"),
        ({"tumbling": "1m", "step": "1s"}, "window(step=...) goes with hopping=, not tumbling="),
        ({"session": "1m", "step": "1s"}, "window(step=...) goes with hopping=, not session="),
        ({"tumbling": 0}, "window(tumbling=0): the window must be longer than 0"),
        ({"sliding": "0.1ms"}, "window(sliding='0.1ms'): the window must be longer than 0"),
        ({"tumbling": "5 minutes"}, "tumbling='5 minutes' is not a duration"),
        ({"tumbling": "1m", "grace": -1}, "grace=-1 is negative"),
        (
            {"tumbling": "1m", "grace": timedelta(seconds=-1)},
            "grace=datetime.timedelta(days=-1, seconds=86399) is negative",
        ),
        # Kafka and Quix users write milliseconds, Python users seconds: a bare number is refused
        (
            {"tumbling": 60000},
            "window: tumbling=60000 has no unit: milliseconds (1m) or seconds (16h40m)? Write '60000ms' or '60000s'",
        ),
        ({"tumbling": "1m", "grace": 10}, "window: grace=10 has no unit"),
        ({"hopping": "5m", "step": 60}, "window: step=60 has no unit"),
        ({"session": 0.5}, "timedelta(seconds=0.5)"),
        ({"hopping": "5m", "step": "soon"}, "step='soon' is not a duration"),
    ],
)
def test_parse_refuses_bad_combinations(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Windows.parse(**kwargs)
    assert message in str(info.value)


def test_max_future_defaults_to_an_hour_and_can_be_changed_or_turned_off() -> None:
    assert Windows.parse(tumbling="1m").max_future == 3_600_000
    assert Windows.parse(tumbling="1m", max_future="2h").max_future == 7_200_000
    assert Windows.parse(tumbling="1m", max_future=None).max_future is None
    with pytest.raises(ConfigError, match="max_future"):
        Windows.parse(tumbling="1m", max_future="soon")
