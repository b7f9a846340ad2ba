"""Output checks: what each scenario's output topic must hold, read back record by record."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from benchmarks._kafka import read_topic, verify_output
from benchmarks.contenders import WINDOW_MS
from benchmarks.suite.data import join_row, join_user

__all__ = ["Check", "check_clicks", "check_io", "check_join", "check_windows"]


@dataclass(frozen=True)
class Check:
    """A verdict: ``ok`` and a one-line description (what is wrong, with counts)."""

    ok: bool
    text: str


def check_clicks(topic: str, partitions: int, expected_ids: set[int], *, complete: bool = True) -> Check:
    """Stateless output: one ``{"id", "page", "user"}`` per click id, nothing else.

    ``complete=False`` (a run stopped early, scenario memory): ids may be missing, but
    none may be repeated, unexpected or malformed.
    """
    v = verify_output(topic, partitions, expected_ids)
    if complete or v.ok:
        return Check(v.ok, v.describe())
    ok = v.duplicates == 0 and v.unexpected == 0 and v.malformed == 0
    text = f"{v.records} records, no duplicate/unexpected/malformed" if ok else "WRONG: " + v.describe()
    return Check(ok, text + " (stopped early: the rest not checked)")


def check_windows(topic: str, partitions: int, expected: dict[tuple[str, int], int]) -> Check:
    """Windowed output: exactly one ``{"key", "start", "end", "value"}`` per (key, window), right count.

    Windows of the flush keys (``flush-<p>``) are ignored: they only exist to move
    stream time past the last real window.
    """
    seen: dict[tuple[str, int], int] = {}
    duplicates = wrong_count = wrong_end = unexpected = malformed = flush = 0
    for msg in read_topic(topic, partitions):
        try:
            v = orjson.loads(msg.value())
            key, start, end, value = v["key"], v["start"], v["end"], v["value"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            malformed += 1
            continue
        if str(key).startswith("flush-"):
            flush += 1
            continue
        window = (key, start)
        if window in seen:
            duplicates += 1
            continue
        seen[window] = value
        if window not in expected:
            unexpected += 1
        elif expected[window] != value:
            wrong_count += 1
        if end != start + WINDOW_MS:
            wrong_end += 1
    missing = len(expected.keys() - seen.keys())
    ok = not (duplicates or wrong_count or wrong_end or unexpected or malformed or missing)
    if ok:
        return Check(
            True, f"ok ({len(seen)} windows" + (f", {flush} flush-key windows ignored)" if flush else ")")
        )
    return Check(
        False,
        f"WRONG: {len(seen)} windows for {len(expected)} expected, {missing} missing, {wrong_count} wrong counts, "
        f"{duplicates} duplicates, {unexpected} unexpected, {wrong_end} wrong ends, {malformed} malformed",
    )


def check_io(topic: str, partitions: int, records: int) -> Check:
    """I/O output: one ``{"id", "key"}`` per input id, and per key in input (id) order."""
    seen: set[int] = set()
    last: dict[str, int] = {}
    duplicates = malformed = violations = 0
    for msg in read_topic(topic, partitions):
        try:
            v = orjson.loads(msg.value())
            ident, key = v["id"], v["key"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            malformed += 1
            continue
        if ident in seen:
            duplicates += 1
            continue
        seen.add(ident)
        if last.get(key, -1) > ident:
            violations += 1
        last[key] = max(ident, last.get(key, -1))
    missing = records - len(seen & set(range(records)))
    ok = not (duplicates or malformed or violations or missing)
    if ok:
        return Check(True, f"ok ({len(seen)} records, key order kept)")
    return Check(
        False,
        f"WRONG: {len(seen)} records for {records}, {missing} missing, {duplicates} duplicates, "
        f"{violations} per-key order violations, {malformed} malformed",
    )


def check_join(topic: str, partitions: int, records: int, keys: int) -> Check:
    """Join output: one ``{"id", "user", "amount", "name", "tier"}`` per input id, each with its user's row.

    Every output is checked against ``join_row(join_user(id))`` (the input's own
    function); a row of ``None`` (a left join that found nothing) counts as a miss.
    """
    seen: set[int] = set()
    duplicates = malformed = wrong = misses = 0
    for msg in read_topic(topic, partitions):
        try:
            v = orjson.loads(msg.value())
            ident, user, name, tier = v["id"], v["user"], v["name"], v["tier"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            malformed += 1
            continue
        if ident in seen:
            duplicates += 1
            continue
        seen.add(ident)
        if name is None:
            misses += 1
            continue
        k = join_user(ident, keys)
        if user != f"u{k}" or {"name": name, "tier": tier} != join_row(k) or v.get("amount") != ident % 100:
            wrong += 1
    missing = records - len(seen & set(range(records)))
    ok = not (duplicates or malformed or wrong or misses or missing)
    if ok:
        return Check(True, f"ok ({len(seen)} records, every one enriched with its user's row)")
    return Check(
        False,
        f"WRONG: {len(seen)} records for {records}, {missing} missing, {misses} without their row, "
        f"{wrong} wrong rows, {duplicates} duplicates, {malformed} malformed",
    )
