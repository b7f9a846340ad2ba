"""Scenario "sinks": rows/s into SQLite and PostgreSQL through sluice's sinks vs a plain ``executemany`` loop.

The same rows (dicts of 5 fields: id, page, user, ts, score) are written in batches
of ``--batch`` rows, one transaction per batch, by:

    sink         ``sinks.sqlite(...)`` / ``sinks.postgres(...)``: ``write_batch(rows)`` per batch, as the
                 runtime calls it (record checks, upsert on ``id``, COPY for PostgreSQL)
    executemany  the loop people write: ``executemany("INSERT ... ON CONFLICT (id) DO UPDATE ...",
                 [(v["id"], ...) for v in batch])`` then ``COMMIT``, per batch

Rounds alternate which contender goes first. Both commit durably (SQLite: WAL, ``synchronous=FULL``; PostgreSQL: its defaults,
``synchronous_commit=on``) into a table with a primary key on ``id``. Two phases per
contender: ``insert`` (an empty table) and ``replay`` (every row again: updates, as
after a crash). Each contender's table is checked afterwards: ``--rows`` distinct ids.
Best of ``--rounds``.

Usage:
    python tools/postgres/pgctl.py up          # or --postgres DSN, or --no-postgres
    python -m benchmarks.sinks --rows 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sluice import sinks
from sluice.dataflow.sinks import SinkRow

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:25432/postgres"
COLUMNS = ("id", "page", "user", "ts", "score")
UPSERT = (
    'INSERT INTO {table} (id, page, "user", ts, score) VALUES ({marks}) '
    'ON CONFLICT (id) DO UPDATE SET page = excluded.page, "user" = excluded."user", '
    "ts = excluded.ts, score = excluded.score"
)


def make_rows(n: int) -> list[SinkRow]:
    return [
        SinkRow(
            {
                "id": i,
                "page": f"/page/{i % 500}",
                "user": f"u{i % 10_000}",
                "ts": 1_700_000_000_000 + i,
                "score": i / 7,
            },
            None,
            "events",
            i % 4,
            i // 4,
            1_700_000_000_000 + i,
            None,
        )
        for i in range(n)
    ]


def batches(rows: list[SinkRow], size: int) -> list[list[SinkRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def timed(write: Callable[[list[SinkRow]], None], chunks: list[list[SinkRow]]) -> tuple[float, float]:
    """Wall and CPU seconds (this process: the database server's CPU is not counted) to write every chunk."""
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        write(chunk)
    return time.perf_counter() - started, time.process_time() - cpu


# --------------------------------------------------------------------------- SQLite


def sqlite_sink(
    folder: Path, round_no: int, chunks: list[list[SinkRow]]
) -> tuple[list[tuple[float, float]], Callable[[], int]]:
    db = folder / f"sink-{round_no}.db"
    sink = sinks.sqlite(db, table="clicks", key="id")
    sink.write_batch(chunks[0][:1])  # create the table outside the timing, as the loop's CREATE TABLE is
    seconds = [timed(sink.write_batch, chunks) for _phase in ("insert", "replay")]
    sink.close()
    return seconds, lambda: sqlite3.connect(db).execute("SELECT count(DISTINCT id) FROM clicks").fetchone()[0]


def sqlite_loop(
    folder: Path, round_no: int, chunks: list[list[SinkRow]]
) -> tuple[list[tuple[float, float]], Callable[[], int]]:
    db = folder / f"loop-{round_no}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        'CREATE TABLE clicks (id INTEGER PRIMARY KEY, page TEXT, "user" TEXT, ts INTEGER, score REAL)'
    )
    sql = UPSERT.format(table="clicks", marks="?, ?, ?, ?, ?")

    def write(chunk: list[SinkRow]) -> None:
        conn.execute("BEGIN")
        conn.executemany(
            sql, [(v["id"], v["page"], v["user"], v["ts"], v["score"]) for v in (r.value for r in chunk)]
        )
        conn.execute("COMMIT")

    seconds = [timed(write, chunks) for _phase in ("insert", "replay")]
    conn.close()
    return seconds, lambda: sqlite3.connect(db).execute("SELECT count(DISTINCT id) FROM clicks").fetchone()[0]


# --------------------------------------------------------------------------- PostgreSQL


def _pg_count(dsn: str, table: str) -> Callable[[], int]:
    import psycopg

    def count() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            n = conn.execute(f"SELECT count(DISTINCT id) FROM {table}").fetchone()[0]
            conn.execute(f"DROP TABLE {table}")
            return n

    return count


def pg_sink(
    dsn: str, round_no: int, chunks: list[list[SinkRow]]
) -> tuple[list[tuple[float, float]], Callable[[], int]]:
    import psycopg

    table = f"bench_sink_{round_no}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    sink = sinks.postgres(dsn, table=table, key="id")
    sink.write_batch(chunks[0][:1])
    seconds = [timed(sink.write_batch, chunks) for _phase in ("insert", "replay")]
    sink.close()
    return seconds, _pg_count(dsn, table)


def pg_loop(
    dsn: str, round_no: int, chunks: list[list[SinkRow]]
) -> tuple[list[tuple[float, float]], Callable[[], int]]:
    import psycopg

    table = f"bench_loop_{round_no}"
    conn = psycopg.connect(dsn)
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(
        f'CREATE TABLE {table} (id BIGINT PRIMARY KEY, page TEXT, "user" TEXT, ts BIGINT, score DOUBLE PRECISION)'
    )
    conn.commit()
    sql = UPSERT.format(table=table, marks="%s, %s, %s, %s, %s")

    def write(chunk: list[SinkRow]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                sql, [(v["id"], v["page"], v["user"], v["ts"], v["score"]) for v in (r.value for r in chunk)]
            )
        conn.commit()

    seconds = [timed(write, chunks) for _phase in ("insert", "replay")]
    conn.close()
    return seconds, _pg_count(dsn, table)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sinks", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch (the App's max_poll_records)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres", default=DEFAULT_DSN, help=f"DSN (default: pgctl's server, {DEFAULT_DSN})"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    rows = make_rows(args.rows)
    chunks = batches(rows, args.batch)
    folder = Path(tempfile.mkdtemp(prefix="sluice-bench-sinks-"))
    contenders: list[tuple[str, str, Callable]] = [
        ("SQLite", "sink", lambda r: sqlite_sink(folder, r, chunks)),
        ("SQLite", "executemany", lambda r: sqlite_loop(folder, r, chunks)),
    ]
    if not args.no_postgres:
        contenders += [
            ("PostgreSQL", "sink", lambda r: pg_sink(args.postgres, r, chunks)),
            ("PostgreSQL", "executemany", lambda r: pg_loop(args.postgres, r, chunks)),
        ]

    runs: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    failures: list[str] = []
    for round_no in range(1, args.rounds + 1):
        # alternate who goes first: the shared machine's noise should not favour one side
        order = (
            contenders
            if round_no % 2
            else [c for pair in zip(contenders[1::2], contenders[::2], strict=True) for c in pair]
        )
        for db, name, run in order:
            seconds, count = run(round_no)
            distinct = count()
            if distinct != args.rows:
                failures.append(f"{db} {name}: {distinct} distinct ids for {args.rows} rows")
            for phase, (wall, cpu) in zip(("insert", "replay"), seconds, strict=True):
                runs.setdefault((db, name, phase), []).append((wall, cpu))
            print(
                f"round {round_no} {db:10s} {name:12s} "
                + "  ".join(
                    f"{phase} {args.rows / wall:>9,.0f} rows/s ({cpu / args.rows * 1e6:.1f} CPU us/row)"
                    for phase, (wall, cpu) in zip(("insert", "replay"), seconds, strict=True)
                )
            )

    def median_rate(key: tuple[str, str, str]) -> float:
        return args.rows / statistics.median(wall for wall, _cpu in runs[key])

    def best_rate(key: tuple[str, str, str]) -> float:
        return args.rows / min(wall for wall, _cpu in runs[key])

    def cpu_us(key: tuple[str, str, str]) -> float:
        return statistics.median(cpu for _wall, cpu in runs[key]) / args.rows * 1e6

    lines = [
        "| database | contender | phase | rows/s (median) | rows/s (best) | client CPU µs/row (median) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for key in runs:
        db, name, phase = key
        lines.append(
            f"| {db} | {name} | {phase} | {median_rate(key):,.0f} | {best_rate(key):,.0f} | {cpu_us(key):.1f} |"
        )
    ratios = []
    for db in dict.fromkeys(db for db, _n, _r in contenders):
        parts = []
        for phase in ("insert", "replay"):
            sink, loop = (db, "sink", phase), (db, "executemany", phase)
            parts.append(
                f"{median_rate(sink) / median_rate(loop):.2f} ({phase}; client CPU per row "
                f"{cpu_us(sink) / cpu_us(loop):.2f}x)"
            )
        ratios.append(f"- {db}: sink / executemany rows/s (medians) = " + ", ".join(parts))
    print("\n" + "\n".join(lines) + "\n\n" + "\n".join(ratios))
    for failure in failures:
        print(f"WRONG OUTPUT: {failure}", file=sys.stderr)

    if not args.no_save:
        today = dt.date.today().isoformat()
        command = "python -m benchmarks.sinks " + shlex.join(argv if argv is not None else sys.argv[1:])
        report = [
            f'# Benchmark "sinks" — {today}',
            "",
            f"`{command.strip()}`",
            "",
            f"{args.rows:,} rows of 5 fields (id, page, user, ts, score), batches of {args.batch} rows, one",
            "transaction per batch, upsert on the primary key `id`. `insert`: into an empty table;",
            "`replay`: every row again (all updates, as after a crash). Medians and best of "
            f"{args.rounds} round(s), alternating which contender goes first. The machine and its disk are",
            "shared, so fsync times vary between rounds; the client CPU per row (this process: for SQLite that",
            "includes the database engine, for PostgreSQL not the server) is the steadier measure."
            f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
            + (f", PostgreSQL at {args.postgres.split('@')[-1]}" if not args.no_postgres else "")
            + f", {platform.machine()}, {os.cpu_count()} cores.",
            "",
            "- **sink**: `sinks.sqlite(...)` / `sinks.postgres(...)` `write_batch(rows)` per batch, as the runtime",
            "  calls it: every record checked (dict, key, types, unknown fields); SQLite `executemany` of",
            "  `INSERT ... ON CONFLICT DO UPDATE`; PostgreSQL: last row per key kept, `COPY` into a temporary",
            "  table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.",
            "- **executemany**: the hand-written loop: `executemany` of the same upsert with tuples built",
            "  from the dicts, then `COMMIT`; no checks. psycopg 3 runs `executemany` in pipeline mode.",
            "- Both: SQLite WAL + `synchronous=FULL`; PostgreSQL defaults (`synchronous_commit=on`, fsync on).",
            "",
            "## Results",
            "",
            *lines,
            "",
            *ratios,
            "",
        ]
        if failures:
            report += ["## Wrong output", "", *[f"- {f}" for f in failures], ""]
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"sinks-{today}.md"
        path.write_text("\n".join(report))
        print(f"\nwritten to {path.relative_to(ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
