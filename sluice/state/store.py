"""The local state of one store partition: RocksDB (rocksdict) on disk, rebuilt from the changelog.

Layout of the keys:

- ``s<group key>``: the group's state (JSON bytes), the same bytes as its changelog record;
- ``i<close time><group key>``: an index of when each group has something to close,
  so that advancing stream time reads only the groups that are due;
- ``m``: the partition's stream time.

The local files are a cache of the changelog topic. A ``checkpoint`` file, written on
a clean close, holds the changelog offset the files are complete up to; it is removed
on open, so after a crash (no checkpoint) the files are wiped and restored from the
changelog's beginning: what the local files hold is never ahead of the changelog.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

__all__ = ["PartitionStore"]

_STATE, _INDEX, _META = b"s", b"i", b"m"
_BIAS = 1 << 63  # close times as unsigned big-endian: byte order == time order, negatives included
CHECKPOINT = "checkpoint"
#: index entries read per chunk when stream time closes groups: memory stays bounded however many close
DUE_CHUNK = 2_000


def _index_key(close: int, key: bytes) -> bytes:
    return _INDEX + struct.pack(">Q", close + _BIAS) + key


class PartitionStore:
    """Key -> state bytes of one partition of one store, with an index of close times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        checkpoint = path / CHECKPOINT
        #: the changelog offset the local files are complete up to (None: restore from the start)
        self.restored_to: int | None = None
        if checkpoint.exists():
            self.restored_to = int(checkpoint.read_text().strip())
            checkpoint.unlink()
        elif path.exists():
            shutil.rmtree(path)  # not closed cleanly: the changelog is the truth
        self._open()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(self.path / "db"), options)
        raw = self._db.get(_META)
        self.stream_time: int = int(raw) if raw is not None else -1
        #: the stream time the changelog holds (written when it changes)
        self.logged_stream_time = self.stream_time
        #: decoded states of recently used groups (the caller's objects, as written); bounded
        self.cache: dict[bytes, Any] = {}
        # every live index entry closes after the last stream time scanned (windows are created
        # open): scans start there, above the deletion markers of closed windows, which RocksDB
        # would otherwise step over one by one until a compaction removes them
        self._due_floor: int | None = None
        #: raw key -> its value before the open transaction (None: absent); None: not tracking
        self._undo: dict[bytes, bytes | None] | None = None

    def reset(self) -> None:
        """Drop everything (the changelog is read again from its beginning)."""
        self._db.close()
        shutil.rmtree(self.path)
        self.restored_to = None
        self._open()

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(_STATE + key)

    def apply(
        self,
        states: dict[bytes, bytes | None],
        index: list[tuple[bytes, int | None, int | None]],
        stream_time: int | None = None,
    ) -> None:
        """Write group states (None deletes), move index entries ``(key, old close, new close)``."""
        writes: list[tuple[bytes, bytes | None]] = [(_STATE + key, value) for key, value in states.items()]
        for key, old, new in index:
            if old is not None:
                writes.append((_index_key(old, key), None))
            if new is not None:
                writes.append((_index_key(new, key), b""))
        if stream_time is not None:
            self.stream_time = stream_time
            writes.append((_META, str(stream_time).encode()))
        undo = self._undo
        if undo is not None:
            get = self._db.get
            for raw, _value in writes:
                if raw not in undo:
                    undo[raw] = get(raw)
        batch = WriteBatch(raw_mode=True)
        for raw, value in writes:
            if value is None:
                batch.delete(raw)
            else:
                batch.put(raw, value)
        self._db.write(batch)

    def start_changes(self) -> None:
        """From now on remember what each write replaces, so that ``undo()`` can take it back.

        Exactly-once calls it when a transaction commits: an abort then rewinds the store
        to that commit in memory-sized work (the keys written since), instead of a
        restore of the whole changelog.

        Example:
            >>> import tempfile
            >>> store = PartitionStore(Path(tempfile.mkdtemp()) / "p0")
            >>> store.apply({b"a": b"1"}, [], 10)
            >>> store.start_changes()
            >>> store.apply({b"a": b"2", b"b": b"9"}, [], 20)
            >>> store.undo()
            >>> store.get(b"a"), store.get(b"b"), store.stream_time
            (b'1', None, 10)
        """
        self._undo = {}

    @property
    def undoable(self) -> bool:
        """Every write since the last ``start_changes()`` can be taken back."""
        return self._undo is not None

    def undo(self) -> None:
        """Take back every write since the last ``start_changes()`` (an aborted transaction)."""
        if not self._undo:
            self._undo = {}
            return
        batch = WriteBatch(raw_mode=True)
        for raw, old in self._undo.items():
            if old is None:
                batch.delete(raw)
            else:
                batch.put(raw, old)
        self._db.write(batch)
        raw = self._db.get(_META)
        self.stream_time = int(raw) if raw is not None else -1
        self.logged_stream_time = self.stream_time
        self.cache.clear()
        self._due_floor = None
        self._undo = {}

    def due(self, stream_time: int, chunk: int = DUE_CHUNK) -> Iterator[list[tuple[int, bytes]]]:
        """``(close time, group key)`` of every group with something that closes at ``stream_time``.

        In close-time order, in lists of at most ``chunk``: a jump of stream time that
        closes millions of windows never holds them all in memory. Each chunk is read by
        a new seek past the previous one, so the caller may write between chunks (close
        groups, move their index entries); an entry moved ahead of the scan within
        ``stream_time`` is listed again.
        """
        start = _INDEX if self._due_floor is None else _index_key(self._due_floor, b"")
        limit = stream_time + _BIAS
        while True:
            out: list[tuple[int, bytes]] = []
            it = self._db.iter()
            it.seek(start)
            while it.valid() and len(out) < chunk:
                raw = it.key()
                if not raw.startswith(_INDEX):
                    break
                close = struct.unpack(">Q", raw[1:9])[0]
                if close > limit:
                    break
                out.append((close - _BIAS, raw[9:]))
                it.next()
            del it
            if out:
                yield out
            if len(out) < chunk:
                break
            close, key = out[-1]
            start = _index_key(close, key) + b"\x00"  # the smallest key after the last one listed
        self._due_floor = stream_time + 1

    def close(self, checkpoint: int | None) -> None:
        """Flush and close; ``checkpoint``: the changelog end offset the files now match (None: unclean)."""
        self._db.flush()
        self._db.close()
        if checkpoint is not None:
            tmp = self.path / (CHECKPOINT + ".tmp")
            tmp.write_text(str(checkpoint))
            tmp.replace(self.path / CHECKPOINT)
