"""The partition store's close-time index: due groups are read in bounded chunks."""

from __future__ import annotations

import tracemalloc
import types

from sluice.state.store import PartitionStore

GROUPS = 100_000


def fill(store: PartitionStore, groups: int, close: int = 1_000) -> None:
    """``groups`` group states, each with something closing at ``close`` (one write batch per 10k)."""
    for start in range(0, groups, 10_000):
        keys = [f"user-{i:07d}".encode() for i in range(start, min(groups, start + 10_000))]
        store.apply({k: b'{"w":[]}' for k in keys}, [(k, None, close) for k in keys])


def test_a_100k_window_close_is_read_in_bounded_chunks_not_one_list(tmp_path):
    store = PartitionStore(tmp_path / "p0")
    try:
        fill(store, GROUPS)
        due = store.due(2_000, 1_000)
        assert isinstance(due, types.GeneratorType), "due groups are streamed, not returned as one list"
        tracemalloc.start()
        try:
            sizes: list[int] = []
            seen = 0
            first = last = None
            for chunk in due:
                sizes.append(len(chunk))
                seen += len(chunk)
                first = first or chunk[0]
                last = chunk[-1]
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == GROUPS
        assert max(sizes) == 1_000 and len(sizes) == GROUPS // 1_000
        assert first == (1_000, b"user-0000000") and last == (1_000, b"user-0099999")
        # one list of 100k (close, key) tuples takes about 13 MB; a chunk of 1,000 about 130 kB
        assert peak < 2_000_000, f"reading the due groups peaked at {peak} bytes"
    finally:
        store.close(None)


def test_due_chunks_see_writes_between_them_and_list_each_group_once(tmp_path):
    store = PartitionStore(tmp_path / "p0")
    try:
        fill(store, 2_500, close=100)
        store.apply({b"late": b"{}"}, [(b"late", None, 150)])
        listed: list[bytes] = []
        for chunk in store.due(200, 1_000):
            keys = [k for _close, k in chunk]
            listed.extend(keys)
            # the caller closes the chunk's groups: their index entries go, some move past the scan
            store.apply(
                {k: None for k in keys[::2]},
                [(k, close, None) for close, k in chunk[::2]] + [(k, close, 500) for close, k in chunk[1::2]],
            )
        assert len(listed) == len(set(listed)) == 2_501
        assert listed[-1] == b"late"
        assert list(store.due(200, 1_000)) == [], "the scan starts past what it already closed"
        assert [len(c) for c in store.due(600, 1_000)] == [1_000, 250]
    finally:
        store.close(None)
