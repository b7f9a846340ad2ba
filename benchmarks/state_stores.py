"""Embedded key-value state stores for windowed aggregations: RocksDB (rocksdict) vs SQLite.

Each candidate runs in its own process (so its peak RSS is its own) on a fresh
directory, one after the other, and goes through the same phases:

    write      ``--keys`` distinct keys, ``put`` in batches of 1000 (one write batch /
               transaction each: the write-back after a consumed batch)
    close      close the store; its size on disk before and after
    open       open the existing store and ``get`` one key
    get hit    1M random existing keys, one ``get`` call per key (timed per 1000)
    get miss   200k absent keys (an existing user, a window end that is not stored)
    multi-get  the same 1M keys, 1000 per call
    rmw        1M distinct random keys: ``get``, orjson decode, bump, encode, ``put``;
               batches of 1000 (the aggregation's hot path)
    scan       the first 1M keys in key order, 1000 per call; each batch is then
    delete     deleted (one write batch / transaction per 1000): dropping closed windows
    seek       the first key of the store right after those deletes
    compact    RocksDB ``compact_range`` of everything / SQLite ``VACUUM``; then close
               and size on disk

Keys are ``b"k" + 10-digit user id + 8-byte big-endian window end`` (19 bytes);
``keys / 10`` users times 10 windows, written window after window with the users in a
scrambled order. Values are JSON aggregates of 60-85 bytes. Every answer is checked
(untimed) against what was written; a wrong answer makes the process exit 1.

Run: ``.venv/bin/python -m benchmarks.state_stores --keys 10000000`` (about 30 minutes on 2 shared cores, most of it SQLite's writes);
writes ``benchmarks/results/state-stores-<date>.md`` and ``.json``.
Smoke: ``--keys 20000`` (runs below 100,000 keys also check the whole store after
reopening it, and write no result files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES = ("rocksdict", "rocksdict-wal", "sqlite")
BATCH = 1000
WINDOWS = 10
WINDOW_MS = 60_000
T0 = 1_764_000_000_000
SMOKE_BELOW = 100_000
VALUE = b'{"count":%d,"sum":%d,"min":%d,"max":%d,"last_ts":%d}'
MB = 1024 * 1024


# -- the data: key i <-> (user, window) through an affine bijection, nothing held in memory


def _coprime(n: int, start: int) -> int:
    a = start % n or 1
    while math.gcd(a, n) != 1:
        a += 1
    return a


@dataclass(frozen=True)
class Data:
    """Key ``i`` (the ``i``-th written) and its value, and the random-looking orders of the phases."""

    keys: int

    @property
    def users(self) -> int:
        return self.keys // WINDOWS

    @property
    def scramble(self) -> int:
        return _coprime(self.users, 2_654_435_761)

    @property
    def pick(self) -> int:
        return _coprime(self.keys, 40_503 * 65_537)

    def user_of(self, i: int) -> int:
        return (i % self.users * self.scramble + 12_345) % self.users

    def key(self, i: int) -> bytes:
        return b"k%010d" % self.user_of(i) + (T0 + (i // self.users + 1) * WINDOW_MS).to_bytes(8, "big")

    def missing_key(self, i: int) -> bytes:
        """Same user as key ``i``, a window end 1 ms later: sorts between stored keys."""
        return b"k%010d" % self.user_of(i) + (T0 + (i // self.users + 1) * WINDOW_MS + 1).to_bytes(8, "big")

    def value(self, i: int, bumped: bool = False) -> bytes:
        count = 1 + i % 97
        total = i * 31 % 1_000_003
        low = i % 1000
        return VALUE % (
            count + bumped,
            total + 7 * bumped,
            low,
            low + 3 * count,
            T0 + (i // self.users + 1) * WINDOW_MS - 1 - i % 997,
        )

    def random_index(self, j: int, salt: int = 0) -> int:
        """The ``j``-th index of a fixed random-looking permutation: distinct for distinct ``j``."""
        return (j * self.pick + 7_919 * salt + 104_729) % self.keys

    def bumped(self, i: int, rmw: int) -> bool:
        """Whether the rmw phase (salt 2, ``rmw`` keys) updated key ``i``."""
        j = (i - 2 * 7_919 - 104_729) * pow(self.pick, -1, self.keys) % self.keys
        return j < rmw

    def rank_of(self, i: int) -> int:
        """The position of key ``i`` in key order."""
        return self.user_of(i) * WINDOWS + i // self.users

    def index_at_rank(self, rank: int) -> int:
        """The index of the ``rank``-th key in key order (users ascending, then windows)."""
        user, window = divmod(rank, WINDOWS)
        slot = (user - 12_345) * pow(self.scramble, -1, self.users) % self.users
        return window * self.users + slot


def bump(value: bytes) -> bytes:
    agg = orjson.loads(value)
    agg["count"] += 1
    agg["sum"] += 7
    return orjson.dumps(agg)


# -- the candidates


class Store(Protocol):
    options: dict[str, str]

    def open(self) -> None: ...
    def put_batch(self, pairs: Iterable[tuple[bytes, bytes]]) -> None: ...
    def get_each(self, keys: list[bytes]) -> list[bytes | None]: ...
    def get_many(self, keys: list[bytes]) -> list[bytes | None]: ...
    def scan(self, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]: ...
    def delete_batch(self, keys: list[bytes]) -> None: ...
    def first_key(self) -> bytes | None: ...
    def compact(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict: ...


class RocksStore:
    """rocksdict in raw bytes mode; ``wal=False`` writes with the WAL disabled."""

    def __init__(self, path: Path, wal: bool) -> None:
        self.path = str(path)
        self.wal = wal
        self.options = {
            "Options": "raw_mode=True, passed again as column_families={'default': opts}, create_if_missing, increase_parallelism(2), max_background_jobs=2",
            "memtables": "write_buffer_size=32 MiB, max_write_buffer_number=3",
            "table": "BlockBasedOptions: LRU block cache 64 MiB, bloom filter 10 bits/key, "
            "partitioned index and filters (two_level_index_search, partition_filters, metadata blocks 4 KiB) "
            "held in the block cache (cache_index_and_filter_blocks, top level and L0 pinned), "
            "data block hash index, format_version 5",
            "compaction": "level, dynamic level bytes, target_file_size_base 64 MiB, lz4 on every level "
            "(zstd on the bottommost level halved get rates: nearly all data sits there)",
            "writes": "WriteBatch(raw_mode=True) per batch, WriteOptions "
            + ("WAL on, sync=False" if wal else "disable_wal(True)"),
            "reads": "get(key) per key; get(list) for multi-get; items(from_key=...) for scans",
        }
        self.cache = None

    def open(self) -> None:
        from rocksdict import (
            BlockBasedIndexType,
            BlockBasedOptions,
            Cache,
            DataBlockIndexType,
            DBCompressionType,
            Options,
            Rdict,
            WriteOptions,
        )

        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.increase_parallelism(os.cpu_count() or 2)
        opts.set_max_background_jobs(2)
        opts.set_write_buffer_size(32 * MB)
        opts.set_max_write_buffer_number(3)
        opts.set_target_file_size_base(64 * MB)
        opts.set_level_compaction_dynamic_level_bytes(True)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_keep_log_file_num(2)
        opts.set_max_log_file_size(4 * MB)
        table = BlockBasedOptions()
        self.cache = Cache(64 * MB)
        table.set_block_cache(self.cache)
        table.set_bloom_filter(10, False)
        # Index and filter blocks live in the block cache, so memory stays bounded as keys grow.
        # Partitioned: whole per-file blocks (MBs) would not fit a cache shard and be re-read
        # on every get.
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_data_block_index_type(DataBlockIndexType.binary_and_hash())
        table.set_data_block_hash_ratio(0.75)
        table.set_format_version(5)
        opts.set_block_based_table_factory(table)
        # Without column_families, rocksdict 0.3.29 reopens an existing store with the options
        # saved in its OPTIONS file: no block cache, no bloom filter.
        self.db = Rdict(self.path, opts, column_families={"default": opts})
        self.write_opts = WriteOptions()
        self.write_opts.disable_wal = not self.wal

    def put_batch(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        put = batch.put
        for k, v in pairs:
            put(k, v)
        self.db.write(batch, self.write_opts)

    def get_each(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.db.get
        return [get(k) for k in keys]

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self.db.get(keys)

    def scan(self, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        rows = list(islice(self.db.items(from_key=after), limit + 1))
        if rows and rows[0][0] == after:
            return rows[1:]
        return rows[:limit]

    def delete_batch(self, keys: list[bytes]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        delete = batch.delete
        for k in keys:
            delete(k)
        self.db.write(batch, self.write_opts)

    def first_key(self) -> bytes | None:
        return next(iter(self.db.keys()), None)

    def compact(self) -> None:
        from rocksdict import BottommostLevelCompaction, CompactOptions

        opts = CompactOptions()
        opts.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        self.db.compact_range(None, None, opts)

    def close(self) -> None:
        self.db.close()

    def stats(self) -> dict:
        props = (
            "rocksdb.block-cache-usage",
            "rocksdb.estimate-table-readers-mem",
            "rocksdb.cur-size-all-mem-tables",
            "rocksdb.estimate-num-keys",
            "rocksdb.num-running-compactions",
        )
        return {p.removeprefix("rocksdb."): self.db.property_int_value(p) for p in props}


class SqliteStore:
    """stdlib sqlite3: WAL, a WITHOUT ROWID table keyed by BLOB, one transaction per batch."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path / "state.sqlite"
        self.synchronous = synchronous
        self.options = {
            "connection": "isolation_level=None (explicit BEGIN/COMMIT), one connection",
            "pragmas": f"journal_mode=WAL, synchronous={synchronous.upper()}, locking_mode=EXCLUSIVE, "
            "cache_size=-131072 (128 MiB), temp_store=MEMORY, wal_autocheckpoint=10000 pages, page_size 4096",
            "table": "CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
            "writes": "executemany(INSERT ... ON CONFLICT(k) DO UPDATE SET v=excluded.v) in BEGIN/COMMIT per batch",
            "reads": "SELECT v FROM kv WHERE k=? per key; WHERE k IN (?,...) for multi-get; "
            "WHERE k > ? ORDER BY k LIMIT ? for scans",
        }

    def open(self) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, cached_statements=16)
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={self.synchronous}",
            "locking_mode=EXCLUSIVE",
            "cache_size=-131072",
            "temp_store=MEMORY",
            "wal_autocheckpoint=10000",
        ):
            con.execute(f"PRAGMA {pragma}")
        con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self.con = con
        self.cur = con.cursor()
        self.in_sql: dict[int, str] = {}

    def put_batch(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        con = self.con
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", pairs
        )
        con.execute("COMMIT")

    def get_each(self, keys: list[bytes]) -> list[bytes | None]:
        execute = self.cur.execute
        out = []
        for k in keys:
            row = execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
            out.append(row[0] if row else None)
        return out

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        sql = self.in_sql.get(len(keys))
        if sql is None:
            sql = self.in_sql[len(keys)] = f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(keys))})"
        found = dict(self.con.execute(sql, keys).fetchall())
        return [found.get(k) for k in keys]

    def scan(self, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        if after is None:
            return self.con.execute("SELECT k, v FROM kv ORDER BY k LIMIT ?", (limit,)).fetchall()
        return self.con.execute(
            "SELECT k, v FROM kv WHERE k > ? ORDER BY k LIMIT ?", (after, limit)
        ).fetchall()

    def delete_batch(self, keys: list[bytes]) -> None:
        con = self.con
        con.execute("BEGIN")
        con.executemany("DELETE FROM kv WHERE k = ?", [(k,) for k in keys])
        con.execute("COMMIT")

    def first_key(self) -> bytes | None:
        row = self.con.execute("SELECT k FROM kv ORDER BY k LIMIT 1").fetchone()
        return row[0] if row else None

    def compact(self) -> None:
        self.con.execute("VACUUM")
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.con.close()

    def stats(self) -> dict:
        return {
            p: self.con.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        }


def make_store(name: str, path: Path, sqlite_sync: str) -> Store:
    if name == "sqlite":
        return SqliteStore(path, sqlite_sync)
    return RocksStore(path, wal=name == "rocksdict-wal")


# -- the child: one candidate, every phase


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB


class Checker:
    """Counts wrong answers; keeps the first few."""

    def __init__(self) -> None:
        self.wrong = 0
        self.examples: list[str] = []

    def expect(self, phase: str, what: object, got: object, want: object) -> None:
        if got != want:
            self.wrong += 1
            if len(self.examples) < 5:
                self.examples.append(f"{phase}: {what!r}: got {got!r}, want {want!r}")


def _batches(count: int) -> Iterator[range]:
    for start in range(0, count, BATCH):
        yield range(start, min(start + BATCH, count))


def run_child(name: str, keys: int, path: Path, sqlite_sync: str) -> dict:
    data = Data(keys)
    reads, misses = min(1_000_000, keys), min(200_000, keys // 5)
    rmw, scans = min(1_000_000, keys // 2), min(1_000_000, keys // 10)
    check = Checker()
    store = make_store(name, path, sqlite_sync)
    counts = {"reads": reads, "misses": misses, "rmw": rmw, "scan": scans}
    out: dict = {"candidate": name, "keys": keys, "options": store.options, "rss_mb": {}, "counts": counts}
    seconds: dict[str, float] = {}
    rss = out["rss_mb"]
    rss["after_imports"] = _status_mb("VmRSS")
    wall0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"  [{name}] {msg} ({time.perf_counter() - wall0:.0f}s)", file=sys.stderr, flush=True)

    store.open()
    took = 0.0
    for chunk in _batches(keys):
        pairs = [(data.key(i), data.value(i)) for i in chunk]
        t = time.perf_counter()
        store.put_batch(pairs)
        took += time.perf_counter() - t
    seconds["write"] = took
    out["disk_mb_after_write"] = _disk_mb(path)
    rss["after_write"] = _status_mb("VmRSS")
    out["stats_after_write"] = store.stats()
    log(f"wrote {keys:,} keys at {keys / took:,.0f}/s")
    t = time.perf_counter()
    store.close()
    seconds["close_after_write"] = time.perf_counter() - t
    out["disk_mb_after_close"] = _disk_mb(path)

    probe = data.random_index(0, salt=9)
    t = time.perf_counter()
    store.open()
    got = store.get_each([data.key(probe)])[0]
    seconds["open"] = time.perf_counter() - t
    check.expect("open", data.key(probe), got, data.value(probe))

    def timed_reads(
        phase: str, count: int, salt: int, getter: Callable[[list[bytes]], list], present: bool
    ) -> None:
        took = 0.0
        for chunk in _batches(count):
            idx = [data.random_index(j, salt) for j in chunk]
            ks = [data.key(i) if present else data.missing_key(i) for i in idx]
            t = time.perf_counter()
            vals = getter(ks)
            took += time.perf_counter() - t
            for i, k, v in zip(idx, ks, vals, strict=True):
                check.expect(phase, k, v, data.value(i) if present else None)
        seconds[phase] = took

    timed_reads("get_hit", reads, 0, store.get_each, True)
    timed_reads("get_miss", misses, 1, store.get_each, False)
    timed_reads("multi_get_hit", reads, 0, store.get_many, True)
    rss["after_reads"] = _status_mb("VmRSS")
    log("reads done")

    t_get = t_codec = t_put = 0.0
    for chunk in _batches(rmw):
        idx = [data.random_index(j, salt=2) for j in chunk]
        ks = [data.key(i) for i in idx]
        t0 = time.perf_counter()
        vals = store.get_each(ks)
        t1 = time.perf_counter()
        new = [bump(v) for v in vals]
        t2 = time.perf_counter()
        store.put_batch(zip(ks, new, strict=True))
        t3 = time.perf_counter()
        t_get, t_codec, t_put = t_get + t1 - t0, t_codec + t2 - t1, t_put + t3 - t2
        for i, k, v in zip(idx, ks, vals, strict=True):
            check.expect("rmw read", k, v, data.value(i))
        for i, k, v in zip(idx, ks, store.get_each(ks), strict=True):
            check.expect("rmw read back", k, v, data.value(i, bumped=True))
    seconds.update(rmw=t_get + t_codec + t_put, rmw_get=t_get, rmw_codec=t_codec, rmw_put=t_put)
    rss["after_rmw"] = _status_mb("VmRSS")
    log("rmw done")

    t_scan = t_delete = 0.0
    after: bytes | None = None
    for chunk in _batches(scans):
        t = time.perf_counter()
        rows = store.scan(after, len(chunk))
        t_scan += time.perf_counter() - t
        for rank, (k, v) in zip(chunk, rows, strict=False):
            i = data.index_at_rank(rank)
            check.expect("scan", rank, (k, v), (data.key(i), data.value(i, data.bumped(i, rmw))))
        check.expect("scan count", chunk.start, len(rows), len(chunk))
        ks = [k for k, _ in rows]
        t = time.perf_counter()
        store.delete_batch(ks)
        t_delete += time.perf_counter() - t
        after = ks[-1] if ks else after
    seconds.update(scan=t_scan, delete=t_delete)
    t = time.perf_counter()
    first = store.first_key()
    seconds["seek_after_delete"] = time.perf_counter() - t
    check.expect(
        "seek after delete", "first key", first, data.key(data.index_at_rank(scans)) if scans < keys else None
    )
    deleted = [data.key(data.index_at_rank(r)) for r in range(0, scans, max(1, scans // 1000))]
    for k, v in zip(deleted, store.get_each(deleted), strict=True):
        check.expect("get deleted", k, v, None)
    out["stats_after_delete"] = store.stats()
    rss["after_scan_delete"] = _status_mb("VmRSS")
    log("scan + delete done")

    t = time.perf_counter()
    store.compact()
    seconds["compact"] = time.perf_counter() - t
    t = time.perf_counter()
    store.close()
    seconds["close_after_compact"] = time.perf_counter() - t
    out["disk_mb_after_compact"] = _disk_mb(path)
    log("compacted and closed")

    store.open()
    if keys < SMOKE_BELOW:
        expected = (
            (data.key(i), data.value(i, data.bumped(i, rmw)))
            for i in map(data.index_at_rank, range(scans, keys))
        )
        after, rank = None, scans
        while rows := store.scan(after, BATCH):
            for k, v in rows:
                want = next(expected, None)
                check.expect("reopened scan", rank, (k, v), want)
                rank += 1
            after = rows[-1][0]
        check.expect("reopened scan", "key count", rank, keys)
    else:
        idx = [data.random_index(j, salt=3) for j in range(min(keys, 100_000))]
        for i, v in zip(idx, store.get_many([data.key(i) for i in idx]), strict=True):
            gone = data.rank_of(i) < scans
            check.expect("reopened get", i, v, None if gone else data.value(i, data.bumped(i, rmw)))
    store.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.update(
        seconds=seconds,
        wall_seconds=time.perf_counter() - wall0,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=_status_mb("VmHWM"),
        wrong=check.wrong,
        wrong_examples=check.examples,
    )
    return out


# -- the parent: one process per candidate, then the table


def _rate(phase: str, count: str) -> Callable[[dict], float]:
    return lambda r: r["counts"][count] / r["seconds"][phase] if r["counts"][count] else math.nan


#: (label, value from a child's result, format)
METRICS: list[tuple[str, Callable[[dict], float], str]] = [
    ("write, puts/s (batches of 1000)", lambda r: r["keys"] / r["seconds"]["write"], "{:,.0f}"),
    ("close after write, s", lambda r: r["seconds"]["close_after_write"], "{:.2f}"),
    ("size on disk after write (open), MB", lambda r: r["disk_mb_after_write"], "{:,.1f}"),
    ("size on disk after close, MB", lambda r: r["disk_mb_after_close"], "{:,.1f}"),
    ("open existing store + first get, ms", lambda r: r["seconds"]["open"] * 1000, "{:.1f}"),
    ("get hit, gets/s (1 call per key)", _rate("get_hit", "reads"), "{:,.0f}"),
    ("get miss, gets/s", _rate("get_miss", "misses"), "{:,.0f}"),
    ("multi-get hit, gets/s (1000 per call)", _rate("multi_get_hit", "reads"), "{:,.0f}"),
    ("read-modify-write, updates/s", _rate("rmw", "rmw"), "{:,.0f}"),
    ("  of which get, us/update", lambda r: r["seconds"]["rmw_get"] / r["counts"]["rmw"] * 1e6, "{:.2f}"),
    (
        "  of which orjson bump, us/update",
        lambda r: r["seconds"]["rmw_codec"] / r["counts"]["rmw"] * 1e6,
        "{:.2f}",
    ),
    (
        "  of which put batch, us/update",
        lambda r: r["seconds"]["rmw_put"] / r["counts"]["rmw"] * 1e6,
        "{:.2f}",
    ),
    ("ordered scan, keys/s (1000 per call)", _rate("scan", "scan"), "{:,.0f}"),
    ("delete, keys/s (batches of 1000)", _rate("delete", "scan"), "{:,.0f}"),
    ("first key right after the deletes, ms", lambda r: r["seconds"]["seek_after_delete"] * 1000, "{:.2f}"),
    ("compact (compact_range / VACUUM), s", lambda r: r["seconds"]["compact"], "{:.1f}"),
    ("size on disk after compact + close, MB", lambda r: r["disk_mb_after_compact"], "{:,.1f}"),
    ("peak RSS (VmHWM), MB", lambda r: r["peak_rss_mb"], "{:,.0f}"),
    ("RSS after imports, MB", lambda r: r["rss_mb"]["after_imports"], "{:,.0f}"),
    ("CPU s (user+sys, whole process)", lambda r: r["cpu_seconds"], "{:.0f}"),
    ("wall s (whole process)", lambda r: r["wall_seconds"], "{:.0f}"),
]


def run_candidate(name: str, keys: int, parent_dir: Path, sqlite_sync: str) -> dict:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent_dir))
    cmd = [sys.executable, "-m", "benchmarks.state_stores", "--child", name, "--keys", str(keys)]
    cmd += ["--dir", str(path), "--sqlite-sync", sqlite_sync]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"candidate": name}
    result["exit_code"] = proc.returncode
    return result


def _library_versions() -> dict:
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("rocksdict", "orjson"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        from rocksdict import Options, Rdict

        with tempfile.TemporaryDirectory() as d:
            Rdict(d, Options(raw_mode=True)).close()
            options = next(Path(d).glob("OPTIONS-*")).read_text()
        versions["rocksdb"] = next(
            line.split("=", 1)[1].strip() for line in options.splitlines() if "rocksdb_version" in line
        )
    except (ImportError, StopIteration, OSError):
        pass
    return versions


def _machine(data_dir: Path) -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    fstype = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(data_dir)], capture_output=True, text=True
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "data_dir_fs": fstype.stdout.strip() or "unknown",
        **_library_versions(),
    }


def _fmt(fmt: str, x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else fmt.format(x)


def table(results: dict[str, dict]) -> list[str]:
    names = [n for n in results if "seconds" in results[n]]
    rocks = [n for n in names if n.startswith("rocksdict")]
    ratios = [f"{n}/sqlite" for n in rocks] if "sqlite" in names else []
    lines = [
        "| metric | " + " | ".join(names + ratios) + " |",
        "|---|" + "---:|" * (len(names) + len(ratios)),
    ]
    for label, get, fmt in METRICS:
        values = {n: get(results[n]) for n in names}
        cells = [_fmt(fmt, values[n]) for n in names]
        if ratios:
            base = values["sqlite"]
            cells += [_fmt("{:.2f}x", values[n] / base if base else math.nan) for n in rocks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000_000, help="distinct keys (a multiple of 10)")
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATES), help=f"comma-separated, of {CANDIDATES}"
    )
    parser.add_argument("--sqlite-sync", choices=("off", "normal"), default="normal")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--no-save", action="store_true", help="write no result files")
    parser.add_argument("--child", choices=CANDIDATES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keys < 10 * WINDOWS or args.keys % WINDOWS:
        parser.error(f"--keys must be a multiple of {WINDOWS} and at least {10 * WINDOWS}")
    if args.child:
        result = run_child(args.child, args.keys, args.dir, args.sqlite_sync)
        print(json.dumps(result))
        sys.exit(1 if result["wrong"] else 0)

    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}; choose from {CANDIDATES}")
    smoke = args.keys < SMOKE_BELOW
    command = "python -m benchmarks.state_stores " + shlex.join(sys.argv[1:])
    parent_dir = Path(tempfile.mkdtemp(prefix="sluice-state-stores-", dir=args.dir))
    machine = _machine(parent_dir)
    started = time.monotonic()
    results: dict[str, dict] = {}
    try:
        for name in names:
            print(f"{name}: {args.keys:,} keys ...", file=sys.stderr, flush=True)
            results[name] = run_candidate(name, args.keys, parent_dir, args.sqlite_sync)
    finally:
        shutil.rmtree(parent_dir, ignore_errors=True)
    failed = []
    for name, r in results.items():
        if r["exit_code"] != 0 or r.get("wrong", 1):
            failed.append(name)
            print(
                f"FAIL {name}: exit code {r['exit_code']}, {r.get('wrong', '?')} wrong answers",
                file=sys.stderr,
            )
            for example in r.get("wrong_examples", []):
                print(f"    {example}", file=sys.stderr)
    lines = table(results)
    print("\n".join(lines))
    print(f"(benchmark took {time.monotonic() - started:.0f}s)")
    if smoke:
        print(
            f"smoke run ({args.keys:,} keys, whole store checked after reopening): "
            + ("FAILED: " + ", ".join(failed) if failed else "every answer was right")
        )
    if not (smoke or args.no_save or failed):
        save(args, command, machine, results, lines)
    sys.exit(1 if failed else 0)


def save(
    args: argparse.Namespace, command: str, machine: dict, results: dict[str, dict], lines: list[str]
) -> None:
    today = dt.date.today()
    some = next(iter(results.values()))
    counts = some["counts"]
    doc = [
        f"# Embedded state stores: rocksdict vs SQLite, {args.keys:,} keys ({today})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory_gb']} GB RAM, shared and noisy; "
        f"{machine['os']}, data on {machine['data_dir_fs']}. Python {machine['python']}, "
        f"rocksdict {machine.get('rocksdict')} (RocksDB {machine.get('rocksdb', '?')}), "
        f"SQLite {machine['sqlite']}, orjson {machine.get('orjson')}. Load average at start: "
        f"{machine['load_average_at_start']}.",
        "",
        "Each candidate ran once, in its own process, one after the other, on a fresh directory. "
        f'Keys: 19 bytes (`b"k"` + 10-digit user id + 8-byte big-endian window end), '
        f"{args.keys // WINDOWS:,} users x {WINDOWS} windows, written window by window with the users "
        "scrambled; values: 60-85 byte JSON aggregates. Rates are over the store calls only "
        "(building keys and checking answers is outside the clock; every answer was checked). "
        f"Phases: get hit {counts['reads']:,}, get miss {counts['misses']:,}, "
        f"read-modify-write {counts['rmw']:,} distinct keys, scan + delete the first {counts['scan']:,} keys "
        "in key order. Ratio = rocksdict value / SQLite value: above 1 is better for rates, worse for "
        "sizes, seconds and RSS. The OS page cache (24 GB) holds every store whole, so reads never wait "
        "for the disk.",
        "",
        *lines,
        "",
        "## Options",
        "",
    ]
    for name, r in results.items():
        doc.append(f"- **{name}**")
        doc += [f"  - {k}: {v}" for k, v in r["options"].items()]
    doc += ["", "## Store internals at the end of the write phase and after the deletes", ""]
    for name, r in results.items():
        doc.append(
            f"- {name}: after write {r['stats_after_write']}; after delete {r['stats_after_delete']}; "
            f"RSS MB by phase { ({k: round(v) for k, v in r['rss_mb'].items()}) }"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"state-stores-{today}.md").write_text("\n".join(doc) + "\n")
    payload = {
        "scenario": "state_stores",
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "keys": args.keys,
        "machine": machine,
        "results": results,
    }
    (RESULTS / f"state-stores-{today}.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
