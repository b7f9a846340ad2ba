"""Stream-stream join logic against a brute-force oracle written from ``sluice/state/joins.py``'s docstring.

The oracle decides everything per record at the stream time of its arrival: a record is
late when its own window is closed then; two records join when the later one arrives
while the earlier one's window is open and their timestamps are at most ``within``
apart; a record that joined nothing is emitted when the final stream time closes it.
``_drive`` runs the incremental logic as ``sluice/runtime/joins.py`` does: records in
arrival order, cut into batches anywhere, ``close`` for each key whose ``next_close`` is
due after each batch, states through orjson between batches.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import ConfigError
from sluice.state.joins import JoinLogic, JoinSpec

Rec = tuple[str, str, int, int]  # (side, key, timestamp, id)


def fn(left: Any, right: Any) -> list[Any]:
    return [left, right]


def oracle(records: list[Rec], spec: JoinSpec) -> Counter:
    close = spec.close_time
    stream_time = -1
    accepted: list[tuple[Rec, int]] = []  # with the stream time at arrival
    out: Counter = Counter()
    joined: set[int] = set()
    for rec in records:
        side, key, ts, i = rec
        stream_time = max(stream_time, ts)
        if close(ts) <= stream_time:
            continue  # late
        for (other_side, other_key, other_ts, j), _st in accepted:
            partners = other_side != side and other_key == key and abs(other_ts - ts) <= spec.within
            if partners and close(other_ts) > stream_time:  # the earlier one's window is still open
                pair = (i, j) if side == "l" else (j, i)
                out[(key, max(ts, other_ts), orjson.dumps(fn(*pair)))] += 1
                joined.update((i, j))
        accepted.append((rec, stream_time))
    for (side, key, ts, i), _st in accepted:
        if i not in joined and spec.emits(side) and close(ts) <= stream_time:
            value = fn(i, None) if side == "l" else fn(None, i)
            out[(key, ts, orjson.dumps(value))] += 1
    return out


def _drive(records: list[Rec], spec: JoinSpec, cuts: list[int]) -> Counter:
    logic = JoinLogic(spec, fn)
    states: dict[str, bytes] = {}
    stream_time = -1
    out: Counter = Counter()
    bounds = sorted({c % (len(records) + 1) for c in cuts} | {len(records)})
    start = 0
    for end in bounds:
        batch = records[start:end]
        start = end
        for side, key, ts, i in batch:
            stream_time = max(stream_time, ts)
            state = orjson.loads(states[key]) if key in states else None
            added = logic.add(state, side, ts, i, stream_time, i)  # the id as the join topic offset
            if added is None:
                continue
            new, joined = added
            states[key] = orjson.dumps(new)
            for t, value in joined:
                out[(key, t, orjson.dumps(value))] += 1
        for key in list(states):
            state = orjson.loads(states[key])
            due = logic.next_close(state)
            if due is None or due > stream_time:
                continue
            left, unmatched = logic.close(state, stream_time)
            for ts, side, value, _offset in unmatched:
                out[(key, ts, orjson.dumps(logic.unmatched(side, value)))] += 1
            if left is None:
                del states[key]
            else:
                states[key] = orjson.dumps(left)
    return out


records_strategy = st.lists(
    st.tuples(st.sampled_from("lr"), st.sampled_from("ab"), st.integers(min_value=0, max_value=60)),
    max_size=40,
).map(lambda rs: [(side, key, ts, i) for i, (side, key, ts) in enumerate(rs)])


@settings(max_examples=400, deadline=None)
@given(
    records=records_strategy,
    how=st.sampled_from(["inner", "left", "outer"]),
    within=st.integers(min_value=0, max_value=10),
    grace=st.integers(min_value=0, max_value=10),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_join_logic_matches_the_oracle_however_batches_are_cut(records, how, within, grace, cuts):
    spec = JoinSpec(how, within, grace)
    assert _drive(records, spec, cuts) == oracle(records, spec)


def test_the_window_ends_are_inclusive_and_a_closed_record_joins_nothing():
    spec = JoinSpec("outer", 5, 0)
    # 10 and 15 are 5 apart: they join; at stream time 16 the window of 10 (end 15, exclusive 16) closes
    assert oracle([("l", "a", 10, 0), ("r", "a", 15, 1)], spec) == Counter(
        {("a", 15, orjson.dumps([0, 1])): 1}
    )
    records = [("l", "a", 10, 0), ("l", "b", 16, 1), ("r", "a", 15, 2), ("r", "z", 100, 3)]
    got = _drive(records, spec, [])
    assert ("a", 10, orjson.dumps([0, None])) in got  # 10 closed at 16: 15 came too late for it
    assert ("a", 15, orjson.dumps([None, 2])) in got
    assert got == oracle(records, spec)


def test_a_late_record_is_neither_joined_nor_emitted():
    spec = JoinSpec("outer", 1, 2)
    records = [("l", "a", 100, 0), ("r", "a", 50, 1), ("l", "z", 1_000, 2)]
    assert _drive(records, spec, []) == Counter({("a", 100, orjson.dumps([0, None])): 1})


def test_a_failing_function_leaves_the_state_as_it_was():
    def boom(left: Any, right: Any) -> Any:
        raise ValueError("boom")

    logic = JoinLogic(JoinSpec("inner", 5, 0), boom)
    state, _ = logic.add(None, "l", 10, "x", 10, 0)
    before = orjson.dumps(state)
    with pytest.raises(ValueError, match="boom"):
        logic.add(state, "r", 12, "y", 12, 1)
    assert orjson.dumps(state) == before


def test_a_record_processed_again_after_a_crash_joins_again_but_is_buffered_once():
    logic = JoinLogic(JoinSpec("left", 5, 0), fn)
    state, _ = logic.add(None, "l", 10, "x", 10, 7)
    state, out = logic.add(state, "r", 12, "y", 12, 8)
    assert out == [(12, ["x", "y"])]
    again, out = logic.add(state, "l", 10, "x", 12, 7)  # offset 7 again: its commit was lost
    assert out == [(12, ["x", "y"])]  # at-least-once: the pair repeats
    assert len(again["l"]) == 1 and again["l"][0][2] == 1  # still one record, still matched
    _left, unmatched = logic.close(again, 100)
    assert unmatched == []  # it joined: never emitted as unmatched


def test_join_spec_refuses_what_it_cannot_mean():
    with pytest.raises(ConfigError, match="how='full'"):
        JoinSpec.parse("full", within="1s", grace=None)
    with pytest.raises(ConfigError, match="needs within="):
        JoinSpec.parse("inner", within=None, grace="1s")
    assert JoinSpec.parse("left", within="1m", grace=None) == JoinSpec("left", 60_000, 0)
