"""The SQLite sink: one transaction per batch (WAL, synchronous=FULL), upserts on the key."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from sluice._durations import parse_duration
from sluice.dataflow.sinks import SinkRow
from sluice.errors import ConfigError
from sluice.sinks._errors import SinkError, SinkUnavailableError
from sluice.sinks._schema import (
    Column,
    Kind,
    Shape,
    describe,
    infer_columns,
    kinds_from_schema,
    no_columns_error,
)

__all__ = ["SqliteSink"]

logger = logging.getLogger(__name__)

_SQL_TYPES: dict[Kind, str] = {
    "int": "INTEGER",
    "float": "REAL",
    "bool": "BOOLEAN",
    "str": "TEXT",
    "json": "JSON",
    "bytes": "BLOB",
    "any": "",
}
# SQLite's primary result codes that say the database, not the record, is at fault: busy or
# locked by another connection, out of memory, read-only file, I/O error, disk full,
# cannot open, lock protocol error
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# codes after which the connection is reopened: the file may have been replaced or remounted
_REOPEN_CODES = frozenset({8, 10, 14})
_INT = re.compile(r"^(INTEGER|INT|BIGINT|SMALLINT|TINYINT|MEDIUMINT|INT2|INT4|INT8|UNSIGNED BIG INT)\b")


def _kind_of_declared(declared: str) -> Kind:
    """The kind of an existing column from its declared type (SQLite keeps what ``CREATE TABLE`` said)."""
    t = declared.strip().upper()
    if _INT.match(t):
        return "int"
    if t.startswith("BOOL"):
        return "bool"
    if t.startswith("JSON"):
        return "json"
    if any(word in t for word in ("CHAR", "CLOB", "TEXT")):
        return "str"
    if any(word in t for word in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return "float"
    if t.startswith("BLOB"):
        return "bytes"
    return "any"


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unavailable (locked, disk full, I/O error), not a row at fault.

    Example:
        >>> import sqlite3
        >>> locked = sqlite3.OperationalError("database is locked")
        >>> locked.sqlite_errorcode = 5
        >>> unavailable(locked), unavailable(sqlite3.IntegrityError("NOT NULL constraint failed"))
        (True, False)
    """
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE_CODES


def quote(name: str) -> str:
    """An SQLite identifier, quoted.

    Example:
        >>> print(quote("page views"), quote('a"b'))
        "page views" "a""b"
    """
    return '"' + name.replace('"', '""') + '"'


def _key_tuple(key: str | Sequence[str] | None, where: str) -> tuple[str, ...]:
    if key is None:
        return ()
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        msg = f"{where}: key={key!r} must be a field name or a list of field names"
        raise ConfigError(msg)
    return keys


class SqliteSink:
    """Writes each batch to an SQLite table in one transaction; see :func:`sluice.sinks.sqlite`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str,
        key: str | Sequence[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout: str | timedelta = "30s",
    ) -> None:
        where = f"sinks.sqlite({str(path)!r})"
        if not isinstance(table, str) or not table:
            msg = f"{where}: table={table!r} must be a table name"
            raise ConfigError(msg)
        self.path = os.fspath(path)
        self.table = table
        self.key = _key_tuple(key, where)
        #: upserts by key: writing a record again changes nothing (exactly-once accepts it)
        self.idempotent = bool(self.key)
        self.schema = kinds_from_schema(schema, where) if schema is not None else None
        if self.schema is not None and self.key:
            missing = [k for k in self.key if k not in dict(self.schema)]
            if missing:
                msg = f"{where}: the key field {missing[0]!r} is not in schema= ({', '.join(dict(self.schema))})"
                raise ConfigError(msg)
        self.timeout = parse_duration(timeout, "timeout")
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._shape: Shape | None = None
        self._insert_sql = ""
        self._json: list[int] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = (
            f", key={self.key[0]!r}"
            if len(self.key) == 1
            else f", key={list(self.key)!r}"
            if self.key
            else ""
        )
        return f"sinks.sqlite({self.path!r}, table={self.table!r}{key})"

    # ------------------------------------------------------------------ connection
    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # a connection inherited through fork() belongs to the parent: open our own
        try:
            if self.path != ":memory:" and not self.path.startswith("file:"):
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=self.path.startswith("file:"),
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            msg = f"sqlite: cannot open {self.path}: {type(exc).__name__}: {exc}"
            raise (SinkUnavailableError if unavailable(exc) else SinkError)(msg) from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close the connection (the next write opens a new one)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # ------------------------------------------------------------------ table
    def _table_columns(self, conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
        """``(name, declared type, primary-key position)`` of the table's columns; empty when it does not exist."""
        return [(r[1], r[2], r[5]) for r in conn.execute(f"PRAGMA table_info({quote(self.table)})")]

    def _unique_sets(self, conn: sqlite3.Connection, columns: list[tuple[str, str, int]]) -> list[set[str]]:
        sets = [{name for name, _t, pk in columns if pk}]
        for index in conn.execute(f"PRAGMA index_list({quote(self.table)})").fetchall():
            if index[2] and not index[4]:  # unique, not partial
                sets.append({r[2] for r in conn.execute(f"PRAGMA index_info({quote(index[1])})")})
        return sets

    def _open_table(self, conn: sqlite3.Connection, rows: Sequence[SinkRow]) -> Shape:
        existing = self._table_columns(conn)
        if not existing:
            if self.schema is not None:
                wanted = self.schema
            else:
                inferred = infer_columns([r.value for r in rows], self.key)
                if inferred is None:
                    raise no_columns_error("sqlite", self.table, rows, self.key)
                wanted = inferred
            self._create(conn, wanted)
            existing = self._table_columns(conn)
        types = {name: declared for name, declared, _pk in existing}
        if self.schema is not None:
            missing = [name for name, _kind in self.schema if name not in types]
            if missing:
                msg = f"sqlite table {self.table!r} in {self.path} has no column {missing[0]!r} given in schema="
                raise ConfigError(msg)
            chosen = [Column(name, kind, types[name] or "ANY") for name, kind in self.schema]
        else:
            chosen = [Column(n, _kind_of_declared(t), t or "ANY") for n, t, _pk in existing]
        if self.key:
            missing_key = [k for k in self.key if k not in types]
            if missing_key:
                msg = f"sqlite table {self.table!r} in {self.path} has no key column {missing_key[0]!r}"
                raise ConfigError(msg)
            if set(self.key) not in self._unique_sets(conn, existing):
                msg = (
                    f"sqlite table {self.table!r} in {self.path} has no primary key or unique index on "
                    f"({', '.join(self.key)}): upserts need one; "
                    f"CREATE UNIQUE INDEX ON {self.table} ({', '.join(self.key)}), or drop key="
                )
                raise ConfigError(msg)
        shape = Shape("sqlite", self.table, chosen, self.key)
        self._insert_sql = self._insert(shape)
        self._json = [i for i, c in enumerate(shape.columns_) if c.kind == "json"]
        return shape

    def _create(self, conn: sqlite3.Connection, columns: list[tuple[str, Kind]]) -> None:
        defs = [f"{quote(name)} {_SQL_TYPES[kind]}".rstrip() for name, kind in columns]
        if self.key:
            defs.append(f"PRIMARY KEY ({', '.join(map(quote, self.key))})")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({', '.join(defs)})")
        logger.info("sqlite: created table %s in %s: %s", self.table, self.path, ", ".join(defs))

    def _insert(self, shape: Shape) -> str:
        names = ", ".join(map(quote, shape.names))
        marks = ", ".join("?" * len(shape.names))
        sql = f"INSERT INTO {quote(self.table)} ({names}) VALUES ({marks})"
        if not self.key:
            return sql
        others = [quote(n) for n in shape.names if n not in self.key]
        conflict = ", ".join(map(quote, self.key))
        if not others:
            return f"{sql} ON CONFLICT ({conflict}) DO NOTHING"
        updates = ", ".join(f"{c} = excluded.{c}" for c in others)
        return f"{sql} ON CONFLICT ({conflict}) DO UPDATE SET {updates}"

    # ------------------------------------------------------------------ writing
    def write_batch(self, rows: Sequence[SinkRow]) -> None:
        """Write ``rows`` in one transaction; return once it is committed to disk.

        Raises:
            SinkRowError: a record does not fit the table (the message names it); nothing
                of the batch was written.
            SinkUnavailableError: the database is locked by another connection past
                ``timeout``, the disk is full, or the file cannot be read or written (an
                I/O error): no row is at fault, the batch can be written again later.
            SinkError: SQLite refused the batch (nothing of it was written).
        """
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            shape = self._shape
            if shape is None:
                try:
                    shape = self._shape = self._open_table(conn, rows)
                except sqlite3.Error as exc:
                    if unavailable(exc):
                        raise self._unavailable(exc, len(rows)) from exc
                    msg = f"sqlite table {self.table!r} in {self.path}: cannot read or create it: {describe(exc)}"
                    raise SinkError(msg) from exc
            tuples, cols = shape.check(rows)
            if self._json:
                cols = list(cols)
                dumps = orjson.dumps
                for index in self._json:
                    cols[index] = [None if v is None else dumps(v).decode() for v in cols[index]]
                tuples = list(zip(*cols, strict=True))
            # no need to keep the last row per key: executemany upserts in order, so the last wins
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(self._insert_sql, tuples)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OverflowError, TypeError, ValueError) as exc:
                if unavailable(exc):
                    raise self._unavailable(exc, len(rows)) from exc
                if "no such table" in str(exc) or "no column named" in str(exc):
                    # the table changed under us: look at it again on the next write
                    self._shape = None
                raise shape.explain(rows, cols, exc, nul_in_text=False) or SinkError(
                    f"sqlite table {self.table!r} in {self.path}: writing {len(rows)} rows failed, "
                    f"nothing written: {describe(exc)}"
                ) from exc

    def _unavailable(self, exc: BaseException, rows: int) -> SinkUnavailableError:
        """The error for a database that cannot be written now; reopens the file next time when useful."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _REOPEN_CODES and self._conn is not None:
            conn, self._conn = self._conn, None
            if self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error:
                    logger.debug("sqlite: closing %s after an I/O error failed", self.path, exc_info=True)
        return SinkUnavailableError(
            f"sqlite table {self.table!r} in {self.path}: the database is unavailable, "
            f"{rows} rows not written: {describe(exc)}"
        )
