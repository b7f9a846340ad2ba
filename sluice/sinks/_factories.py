"""The sink factories re-exported by ``sluice.sinks`` (``sqlite``, ``postgres``, ``jsonl``, ``parquet``).

Kept apart so that ``sluice.sinks`` holds the sinks and nothing else.

Example:
    >>> from sluice.sinks._factories import sqlite
    >>> sqlite("clicks.db", table="clicks", key="id").table
    'clicks'
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sluice.errors import ConfigError
from sluice.sinks._jsonl import JsonlSink
from sluice.sinks._sqlite import SqliteSink

if TYPE_CHECKING:
    from sluice.sinks._parquet import ParquetSink
    from sluice.sinks._postgres import PostgresSink

__all__ = ["jsonl", "parquet", "postgres", "sqlite"]


def _require(module: str, extra: str, sink: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = (
            f"sinks.{sink}() needs the Python package {module!r}, which is not installed: "
            f"pip install 'sluice-streams[{extra}]'"
        )
        raise ConfigError(msg)


def sqlite(
    path: str | os.PathLike[str],
    *,
    table: str,
    key: str | Sequence[str] | None = None,
    schema: Mapping[str, Any] | None = None,
    timeout: str | timedelta = "30s",
) -> SqliteSink:
    """Write records (dicts) as rows of an SQLite table: the embedded default, no server needed.

    Each batch is one transaction (``executemany``; WAL journal, ``synchronous=FULL``:
    committed means on disk). With ``key``, a write is an upsert: a replayed record
    replaces its row instead of adding one, so at-least-once delivery leaves no
    duplicate rows, and the last record of a key wins. Without ``key``, rows are
    inserted: a crash may repeat the last uncommitted batches.

    The table is created when missing, with the fields of the first record that has
    the key (types from the batch: int -> INTEGER, float -> REAL, bool -> BOOLEAN,
    str -> TEXT, dict/list -> JSON text, bytes -> BLOB; a field null everywhere ->
    TEXT), or with the columns of ``schema``. Every column is written: a field missing
    from a record is NULL. A record that is not a dict, lacks a key field, has a field
    that is no column or a value of the wrong type raises ``SinkRowError`` naming the
    record, the field, the value and the table, and goes through the failure policy.
    Several processes may write one file (``busy_timeout``); for heavy concurrent
    writers prefer PostgreSQL.

    Args:
        path: the database file (its folder is created when missing).
        table: the table name.
        key: the field (or list of fields) identifying a row; makes writes upserts. An
            existing table needs a primary key or unique index on it.
        schema: ``{"field": int | float | bool | str | dict | list | bytes}``: the columns to
            create, or, for an existing table, the subset of its columns to write (the
            others keep their defaults).
        timeout: how long a write waits for another process's lock (default ``"30s"``).

    Returns:
        The sink, for ``stream.sink(...)``. Nothing is opened before the first write.

    Raises:
        ConfigError: an invalid option.

    Example:
        >>> import sqlite3, tempfile, os
        >>> from sluice.dataflow.sinks import SinkRow
        >>> db = os.path.join(tempfile.mkdtemp(), "clicks.db")
        >>> sink = sqlite(db, table="clicks", key="id")
        >>> rows = [SinkRow({"id": i, "page": p}, None, "events", 0, i, 0, None) for i, p in [(1, "/a"), (2, "/b")]]
        >>> sink.write_batch(rows)
        >>> sink.write_batch(rows[:1])  # a replay: no duplicate row
        >>> sink.close()
        >>> sqlite3.connect(db).execute("SELECT id, page FROM clicks ORDER BY id").fetchall()
        [(1, '/a'), (2, '/b')]
    """
    return SqliteSink(path, table=table, key=key, schema=schema, timeout=timeout)


def postgres(
    dsn: str,
    *,
    table: str,
    key: str | Sequence[str] | None = None,
    schema: Mapping[str, Any] | None = None,
    retry_for: str | timedelta = "60s",
    backoff: str | timedelta = "100ms..5s",
    connect_timeout: str | timedelta = "5s",
) -> PostgresSink:
    """Write records (dicts) as rows of a PostgreSQL table, through psycopg 3 (extra ``postgres``).

    Each batch is one transaction: ``COPY`` into a temporary table, then ``INSERT ...
    SELECT ... ON CONFLICT (key) DO UPDATE`` (upsert) with ``key``, or a ``COPY``
    straight into the table without. With ``key``, replays leave no duplicate rows and
    the last record of a key wins. Table creation and record checks work as for
    :func:`sqlite` (int -> BIGINT, float -> DOUBLE PRECISION, bool -> BOOLEAN, str ->
    TEXT, dict/list -> JSONB, bytes -> BYTEA); ``table`` may be ``"schema.table"``.

    When the database goes away (stopped, restarted, unreachable, out of resources,
    or read-only: SQLSTATE 25006, a standby after a failover), ``write_batch``
    reconnects and tries the batch again with exponential ``backoff``, for at most
    ``retry_for``: the app stops consuming meanwhile, and once the database is back
    the batch is written; nothing is lost and, with ``key``, nothing is duplicated
    (without ``key``, a batch whose commit was cut off may be inserted twice). Past
    ``retry_for`` it raises ``SinkUnavailableError``: nothing is dead-lettered, the
    runtime keeps writing the batch again until the app's ``on_error(retry_for=...)``
    is spent, then stops without committing it. Keep ``retry_for`` well below the
    consumer's ``max.poll.interval.ms`` (5 min by default).

    Args:
        dsn: a libpq connection string, e.g. ``"postgresql://user:pw@host:5432/db"``.
        table: the table name, or ``"schema.table"``.
        key: the field (or fields) identifying a row; makes writes upserts.
        schema: the columns to create, or the subset of an existing table's columns to write.
        retry_for: how long one write retries while the database is unavailable (default ``"60s"``).
        backoff: ``"initial..max"`` delay between tries, doubling (default ``"100ms..5s"``).
        connect_timeout: the limit of one connection attempt (default ``"5s"``).

    Returns:
        The sink. Nothing connects before the first write; each process has its own connection.

    Raises:
        ConfigError: an invalid option, or psycopg is not installed.

    Example:
        >>> sink = postgres("postgresql://app@db/analytics", table="clicks", key="id")
        >>> sink.write_batch(rows)  # doctest: +SKIP
    """
    _require("psycopg", "postgres", "postgres")
    from sluice.sinks._postgres import PostgresSink

    return PostgresSink(
        dsn,
        table=table,
        key=key,
        schema=schema,
        retry_for=retry_for,
        backoff=backoff,
        connect_timeout=connect_timeout,
    )


def jsonl(path: str | os.PathLike[str], *, envelope: bool = False) -> JsonlSink:
    """Append each record as one JSON line (orjson) to a file; the file is flushed and fsynced per batch.

    ``path`` may hold ``{topic}`` and ``{partition}``: one file per source partition,
    e.g. ``"out/clicks-{partition}.jsonl"``. Folders are created when missing.

    Appending is not idempotent: after a crash, the records of the last uncommitted
    batches are written again (at-least-once). With ``envelope=True`` each line is
    ``{"topic", "partition", "offset", "timestamp", "key", "value"}``, so readers can
    drop repeats by ``(topic, partition, offset)``. A batch that fails (a value
    orjson cannot encode: ``SinkRowError`` naming it) leaves the files as they were.

    Args:
        path: the file, or a template with ``{topic}`` / ``{partition}``.
        envelope: wrap each value with where it came from (default: the value alone).

    Raises:
        ConfigError: a template field other than ``{topic}`` and ``{partition}``.

    Example:
        >>> import tempfile, os
        >>> from sluice.dataflow.sinks import SinkRow
        >>> out = tempfile.mkdtemp()
        >>> sink = jsonl(os.path.join(out, "clicks-{partition}.jsonl"))
        >>> sink.write_batch([SinkRow({"id": 1}, None, "events", 3, 0, 0, None)])
        >>> sink.close()
        >>> open(os.path.join(out, "clicks-3.jsonl")).read()
        '{"id":1}\\n'
    """
    return JsonlSink(path, envelope=envelope)


def parquet(
    directory: str | os.PathLike[str],
    *,
    rotate: str | int = "100MB",
    schema: Mapping[str, Any] | None = None,
    compression: str = "zstd",
) -> ParquetSink:
    """Write records (dicts) to Parquet files in ``directory``, a new file every ``rotate`` bytes (extra ``parquet``).

    A Parquet file is readable only once its footer is written, so each batch is first
    appended, fsynced, to a hidden staging file (Arrow IPC stream) in
    ``directory/.staging/``: that is what makes the batch durable before its offsets
    are committed. When the staging file reaches ``rotate`` (uncompressed Arrow bytes;
    the Parquet file is usually smaller), or when the app stops, it becomes one Parquet
    file ``part-<time>-<id>.parquet`` (written aside, fsynced, renamed into place). A
    staging file left by a crashed process is turned into its Parquet file by the next
    writer to the directory. Readers see complete files only. The trade-off: big files
    and a durable batch at the cost of writing each row twice; a file per batch would
    write once but leave thousands of small files.

    Columns are typed as for :func:`sqlite` (from the first record, or ``schema``);
    dict/list values are stored as JSON text. Appending is not idempotent: a crash may
    repeat the last uncommitted batches.

    Args:
        directory: where the files go (created when missing).
        rotate: the size of a file before a new one starts: ``"100MB"``, ``"10KB"``...
        schema: ``{"field": int | float | bool | str | dict | list | bytes}``.
        compression: Parquet compression (``"zstd"``, ``"snappy"``, ``"gzip"``, ``"none"``).

    Raises:
        ConfigError: pyarrow is not installed (``pip install 'sluice-streams[parquet]'``),
            or an invalid option.

    Example:
        >>> sink = parquet("out/clicks/", rotate="100MB")
        >>> sink.write_batch(rows)  # doctest: +SKIP
    """
    _require("pyarrow", "parquet", "parquet")
    from sluice.sinks._parquet import ParquetSink

    return ParquetSink(directory, rotate=rotate, schema=schema, compression=compression)
