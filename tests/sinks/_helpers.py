"""Helpers of the sink tests: rows as the runtime builds them, queries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sluice.dataflow.sinks import SinkRow


def rows(values: Iterable[Any], topic: str = "events", partition: int = 0, start: int = 0) -> list[SinkRow]:
    """One ``SinkRow`` per value, at consecutive offsets from ``start``."""
    return [
        SinkRow(value, None, topic, partition, start + i, 1_700_000_000_000 + i, None)
        for i, value in enumerate(values)
    ]


def pg_query(dsn: str, query: str, *params: Any) -> list[tuple]:
    """Run one statement on its own connection and return its rows (none for DDL)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


def sqlite_query(path: str, query: str, *params: Any) -> list[tuple]:
    """Run one query on its own connection (readers do not block the WAL writer) and return all its rows."""
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()
