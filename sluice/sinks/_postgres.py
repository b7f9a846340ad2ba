"""The PostgreSQL sink (psycopg 3): COPY into a temporary table, then one upsert, in one transaction per batch.

While the database is unreachable, a write reconnects and tries again with backoff
for up to ``retry_for``: the poll loop waits inside ``write_batch``, so consumption
pauses and no offset moves past rows that are not committed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sluice._durations import parse_duration
from sluice.dataflow.sinks import SinkRow
from sluice.errors import ConfigError
from sluice.errors.policy import ErrorPolicy
from sluice.sinks._errors import SinkError, SinkUnavailableError
from sluice.sinks._schema import (
    Column,
    Kind,
    Shape,
    describe,
    infer_columns,
    kinds_from_schema,
    last_per_key,
    no_columns_error,
)
from sluice.sinks._sqlite import _key_tuple

__all__ = ["PostgresSink"]

logger = logging.getLogger(__name__)

_SQL_TYPES: dict[Kind, str] = {
    "int": "BIGINT",
    "float": "DOUBLE PRECISION",
    "bool": "BOOLEAN",
    "str": "TEXT",
    "json": "JSONB",
    "bytes": "BYTEA",
    "any": "TEXT",
}
_KIND_OF_TYPNAME: dict[str, Kind] = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float4": "float",
    "float8": "float",
    "numeric": "float",
    "bool": "bool",
    "text": "str",
    "varchar": "str",
    "bpchar": "str",
    "name": "str",
    "citext": "str",
    "json": "json",
    "jsonb": "json",
    "bytea": "bytes",
}
_COLUMNS = """
SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_UNIQUE_SETS = """
SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
FROM pg_index i
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
"""
# connection lost, resources exhausted (disk full, out of memory, too many connections),
# server shutting down or restarting, I/O trouble, a read-only server (a standby after a
# failover; a new connection may reach the new primary), and the two conflicts that
# succeed when tried again: the database, not a row, is at fault
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_STATES = ("25006", "40001", "40P01")
READ_ONLY = "25006"


class PostgresSink:
    """Writes each batch to a PostgreSQL table in one transaction; see :func:`sluice.sinks.postgres`."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str,
        key: str | Sequence[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        retry_for: str | timedelta = "60s",
        backoff: str | timedelta = "100ms..5s",
        connect_timeout: str | timedelta = "5s",
    ) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            msg = f"sinks.postgres(): the DSN is not a libpq connection string ({exc}); write e.g. 'postgresql://user@host:5432/db'"
            raise ConfigError(msg) from exc
        self.where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"
        label = f"sinks.postgres({self.where!r})"
        parts = table.split(".") if isinstance(table, str) else []
        if not 1 <= len(parts) <= 2 or not all(parts):
            msg = f"{label}: table={table!r} must be 'table' or 'schema.table'"
            raise ConfigError(msg)
        self.dsn = dsn
        self.table = table
        self._ident = sql.Identifier(*parts)
        self.key = _key_tuple(key, label)
        #: upserts by key: writing a record again changes nothing (exactly-once accepts it)
        self.idempotent = bool(self.key)
        self.schema = kinds_from_schema(schema, label) if schema is not None else None
        if self.schema is not None and self.key:
            missing = [k for k in self.key if k not in dict(self.schema)]
            if missing:
                msg = f"{label}: the key field {missing[0]!r} is not in schema= ({', '.join(dict(self.schema))})"
                raise ConfigError(msg)
        self.retry_for = parse_duration(retry_for, "retry_for")
        policy = ErrorPolicy.from_options(backoff=backoff)
        self._backoff = (policy.backoff_initial, policy.backoff_max)
        defaults: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(parse_duration(connect_timeout, "connect_timeout"))),
            "application_name": "sluice",
            # a peer that vanishes without closing the socket is noticed in seconds, not hours
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
        self._connect_args = {k: v for k, v in defaults.items() if k not in params}
        self._conn: psycopg.Connection | None = None
        self._staged = False
        self._shape: Shape | None = None
        self._json: list[int] = []
        self._copy_sql: sql.Composed | None = None
        self._stage_sql: sql.Composed | None = None
        self._upsert_sql: sql.Composed | None = None
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"sinks.postgres({self.where!r}, table={self.table!r})"

    # ------------------------------------------------------------------ connection
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, **self._connect_args)
            self._staged = False
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._staged = False
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("postgres: closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        """Close the connection (the next write opens a new one)."""
        with self._lock:
            self._disconnect()

    # ------------------------------------------------------------------ table
    def _open_table(self, conn: psycopg.Connection, rows: Sequence[SinkRow]) -> Shape:
        if self._staged:
            # a staging table copied from the table's previous columns
            conn.execute("DROP TABLE IF EXISTS pg_temp.sluice_stage")
            self._staged = False
        qualified = self._ident.as_string(conn)
        existing = conn.execute(_COLUMNS, (qualified,)).fetchall()
        if not existing:
            if self.schema is not None:
                wanted = self.schema
            else:
                inferred = infer_columns([r.value for r in rows], self.key)
                if inferred is None:
                    raise no_columns_error("postgres", self.table, rows, self.key)
                wanted = inferred
            self._create(conn, qualified, wanted)
            existing = conn.execute(_COLUMNS, (qualified,)).fetchall()
        types = {name: (typname, formatted) for name, typname, formatted in existing}
        if self.schema is not None:
            missing = [name for name, _kind in self.schema if name not in types]
            if missing:
                msg = f"postgres table {self.table!r} at {self.where} has no column {missing[0]!r} given in schema="
                raise ConfigError(msg)
            chosen = [Column(name, kind, types[name][1].upper()) for name, kind in self.schema]
        else:
            chosen = [
                Column(name, _KIND_OF_TYPNAME.get(typname, "any"), formatted.upper())
                for name, typname, formatted in existing
            ]
        if self.key:
            missing_key = [k for k in self.key if k not in types]
            if missing_key:
                msg = f"postgres table {self.table!r} at {self.where} has no key column {missing_key[0]!r}"
                raise ConfigError(msg)
            unique = [set(names) for (names,) in conn.execute(_UNIQUE_SETS, (qualified,))]
            if set(self.key) not in unique:
                msg = (
                    f"postgres table {self.table!r} at {self.where} has no primary key or unique index on "
                    f"({', '.join(self.key)}): upserts need one; "
                    f"CREATE UNIQUE INDEX ON {self.table} ({', '.join(self.key)}), or drop key="
                )
                raise ConfigError(msg)
        shape = Shape("postgres", self.table, chosen, self.key)
        self._prepare_sql(shape)
        self._json = [i for i, c in enumerate(shape.columns_) if c.kind == "json"]
        return shape

    def _create(self, conn: psycopg.Connection, qualified: str, columns: list[tuple[str, Kind]]) -> None:
        defs = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_SQL_TYPES[kind])) for name, kind in columns
        ]
        if self.key:
            defs.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, self.key))))
        create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self._ident, sql.SQL(", ").join(defs))
        with conn.transaction():
            # workers starting together: one creates, the others find the table
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (qualified,))
            conn.execute(create)
        logger.info("postgres: created table %s at %s: %s", self.table, self.where, create.as_string(conn))

    def _prepare_sql(self, shape: Shape) -> None:
        names = sql.SQL(", ").join(map(sql.Identifier, shape.names))
        if not self.key:
            self._copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(self._ident, names)
            return
        stage = sql.Identifier("sluice_stage")
        self._stage_sql = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
        ).format(stage, names, self._ident)
        self._copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        others = [n for n in shape.names if n not in self.key]
        if others:
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in others)
            )
        else:
            action = sql.SQL("DO NOTHING")
        # rows locked in key order: two workers upserting overlapping keys cannot deadlock
        self._upsert_sql = sql.SQL(
            "INSERT INTO {target} ({names}) SELECT {names} FROM {stage} ORDER BY {keys} ON CONFLICT ({keys}) {action}"
        ).format(target=self._ident, names=names, stage=stage, keys=keys, action=action)

    # ------------------------------------------------------------------ writing
    def _prepare(self, shape: Shape, rows: Sequence[SinkRow]) -> tuple[list[Sequence[Any]], list[tuple]]:
        tuples, cols = shape.check(rows)
        if self._json:
            cols = list(cols)
            dumps = orjson.dumps
            for index in self._json:
                cols[index] = [None if v is None else dumps(v).decode() for v in cols[index]]
            tuples = list(zip(*cols, strict=True))
        if self.key:
            # one INSERT ... ON CONFLICT may not touch a row twice
            tuples = last_per_key(tuples, cols, shape.key_index)
        return cols, tuples

    def _write(self, conn: psycopg.Connection, tuples: list[tuple]) -> None:
        assert self._copy_sql is not None
        if self.key and not self._staged:
            assert self._stage_sql is not None
            conn.execute(self._stage_sql)
            self._staged = True
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(self._copy_sql) as copy:
                write_row = copy.write_row
                for row in tuples:
                    write_row(row)
            if self.key:
                assert self._upsert_sql is not None
                cur.execute(self._upsert_sql)

    @staticmethod
    def _transient(exc: psycopg.Error, conn: psycopg.Connection | None) -> bool:
        if conn is None or conn.closed or conn.broken:
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        state = exc.sqlstate or ""
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES

    def _pause(self, exc: psycopg.Error, attempt: int, rows: int) -> None:
        """Wait before the next try, or raise ``SinkUnavailableError`` once ``retry_for`` is spent."""
        now = time.monotonic()
        state = getattr(exc, "sqlstate", None)
        status = (
            "read-only"
            if state == READ_ONLY
            else "unreachable"
            if state is None or state.startswith(("08", "57"))
            else "unavailable"
        )
        cause = f"{describe(exc)} (SQLSTATE {state})" if state else describe(exc)
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "postgres %s %s (%s); retrying for up to %.0fs, consumption waits meanwhile",
                self.where,
                status,
                cause,
                self.retry_for,
            )
        waited = now - self._down_since
        if waited >= self.retry_for:
            msg = (
                f"postgres table {self.table!r} at {self.where}: the database has been {status} for "
                f"{waited:.0f}s (retry_for={self.retry_for:g}s); {rows} rows not written: {cause}"
            )
            raise SinkUnavailableError(msg) from exc
        initial, maximum = self._backoff
        time.sleep(min(maximum, initial * 2**attempt, self.retry_for - waited))

    def write_batch(self, rows: Sequence[SinkRow]) -> None:
        """Write ``rows`` in one transaction; return once it is committed.

        Raises:
            SinkRowError: a record does not fit the table (the message names it); nothing
                of the batch was written.
            SinkUnavailableError: the database stayed unreachable, read-only (SQLSTATE
                25006) or out of resources for ``retry_for``: no row is at fault.
            SinkError: PostgreSQL refused the batch (nothing of it was written).
        """
        if not rows:
            return
        with self._lock:
            prepared: tuple[list[Sequence[Any]], list[tuple]] | None = None
            attempt = 0
            while True:
                conn: psycopg.Connection | None = None
                try:
                    conn = self._connection()
                    if self._shape is None:
                        self._shape = self._open_table(conn, rows)
                        prepared = None
                    if prepared is None:
                        prepared = self._prepare(self._shape, rows)
                    self._write(conn, prepared[1])
                except psycopg.Error as exc:
                    if self._transient(exc, conn):
                        self._disconnect()
                        self._pause(exc, attempt, len(rows))
                        attempt += 1
                        continue
                    shape = self._shape
                    if exc.sqlstate in ("42P01", "42703"):
                        # the table changed under us: look at it again on the next write
                        self._shape = None
                    explained = (
                        shape.explain(rows, prepared[0] if prepared else None, exc, nul_in_text=True)
                        if shape is not None
                        else None
                    )
                    raise explained or SinkError(
                        f"postgres table {self.table!r} at {self.where}: writing {len(rows)} rows failed, "
                        f"nothing written: {describe(exc)}"
                    ) from exc
                if self._down_since is not None:
                    logger.warning(
                        "postgres %s is back after %.1fs; the waiting batch is written",
                        self.where,
                        time.monotonic() - self._down_since,
                    )
                    self._down_since = None
                return
