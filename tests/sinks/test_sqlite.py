"""The SQLite sink on a real database file: tables, upserts, types, all-or-nothing batches."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sluice import sinks
from sluice.errors import ConfigError
from sluice.sinks import SinkError, SinkRowError
from tests.sinks._helpers import rows, sqlite_query


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "sub" / "clicks.db")


def create(db: str, ddl: str) -> None:
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute(ddl)


def test_nothing_is_opened_before_the_first_write(db):
    sink = sinks.sqlite(db, table="clicks", key="id")
    sink.close()
    assert not Path(db).exists()
    sink.write_batch(rows([{"id": 1}]))
    sink.close()
    assert sqlite_query(db, "SELECT id FROM clicks") == [(1,)]


def test_the_table_is_created_from_the_first_record_with_typed_columns(db):
    sink = sinks.sqlite(db, table="clicks", key="id")
    sink.write_batch(
        rows(
            [{"id": 1, "page": "/a", "ms": 1.5, "ok": True, "meta": {"a": [1]}, "raw": b"\x01", "note": None}]
        )
    )
    sink.close()
    info = sqlite_query(db, "PRAGMA table_info(clicks)")
    assert [(c[1], c[2], c[5]) for c in info] == [
        ("id", "INTEGER", 1),
        ("page", "TEXT", 0),
        ("ms", "REAL", 0),
        ("ok", "BOOLEAN", 0),
        ("meta", "JSON", 0),
        ("raw", "BLOB", 0),
        ("note", "TEXT", 0),
    ]
    assert sqlite_query(db, "SELECT id, page, ms, ok, meta, raw, note FROM clicks") == [
        (1, "/a", 1.5, 1, '{"a":[1]}', b"\x01", None)
    ]
    assert sqlite_query(db, "PRAGMA journal_mode") == [("wal",)]


def test_replayed_records_leave_no_duplicate_rows_and_the_last_record_wins(db):
    sink = sinks.sqlite(db, table="clicks", key="id")
    batch = rows([{"id": i, "page": f"/p{i}"} for i in range(100)])
    sink.write_batch(batch)
    sink.write_batch(batch[50:])  # an at-least-once replay
    sink.write_batch(rows([{"id": 1, "page": "/old"}, {"id": 2, "page": "/two"}, {"id": 1, "page": "/new"}]))
    sink.close()
    assert sqlite_query(db, "SELECT count(*), count(DISTINCT id) FROM clicks") == [(100, 100)]
    assert sqlite_query(db, "SELECT page FROM clicks WHERE id IN (1, 2) ORDER BY id") == [
        ("/new",),
        ("/two",),
    ]


def test_without_a_key_rows_are_inserted(db):
    sink = sinks.sqlite(db, table="log")
    sink.write_batch(rows([{"msg": "a"}, {"msg": "a"}]))
    sink.close()
    assert sqlite_query(db, "SELECT msg FROM log") == [("a",), ("a",)]


def test_a_composite_key(db):
    sink = sinks.sqlite(db, table="views", key=["page", "day"])
    sink.write_batch(rows([{"page": "/a", "day": 1, "n": 1}, {"page": "/a", "day": 2, "n": 5}]))
    sink.write_batch(rows([{"page": "/a", "day": 1, "n": 7}]))
    sink.close()
    assert sqlite_query(db, "SELECT page, day, n FROM views ORDER BY day") == [("/a", 1, 7), ("/a", 2, 5)]


def test_a_batch_with_a_record_that_does_not_fit_writes_nothing(db):
    sink = sinks.sqlite(db, table="clicks", key="id")
    sink.write_batch(rows([{"id": 0, "page": "/a"}]))
    batch = rows([{"id": 1, "page": "/b"}, {"id": 2, "page": "/c"}, {"id": "three", "page": "/d"}], start=10)
    with pytest.raises(SinkRowError) as err:
        sink.write_batch(batch)
    assert str(err.value).startswith(
        "sqlite table 'clicks': record events[0]@12: field 'id' = 'three' (str) does not fit column 'id' INTEGER"
    )
    # the runtime then writes the rows one by one: the good ones land exactly once
    sink.write_batch(batch[:1])
    sink.write_batch(batch[1:2])
    sink.close()
    assert sqlite_query(db, "SELECT id FROM clicks ORDER BY id") == [(0,), (1,), (2,)]


def test_a_batch_the_database_refuses_is_rolled_back_and_a_single_row_is_named(db):
    create(db, "CREATE TABLE scores (id INTEGER PRIMARY KEY, n INTEGER CHECK (n >= 0))")
    sink = sinks.sqlite(db, table="scores", key="id")
    with pytest.raises(
        SinkError, match=r"writing 3 rows failed, nothing written: IntegrityError: CHECK constraint"
    ):
        sink.write_batch(rows([{"id": 1, "n": 1}, {"id": 2, "n": -1}, {"id": 3, "n": 3}]))
    assert sqlite_query(db, "SELECT count(*) FROM scores") == [(0,)]
    with pytest.raises(SinkRowError, match=r"record events\[0\]@5: the database refused it: IntegrityError"):
        sink.write_batch(rows([{"id": 2, "n": -1}], start=5))
    with pytest.raises(
        SinkRowError, match=r"record events\[0\]@1: field 'n' = 100000000000000000000 does not fit in 64 bits"
    ):
        sink.write_batch(rows([{"id": 2, "n": 1}, {"id": 3, "n": 10**20}]))
    sink.close()


def test_an_existing_table_keeps_its_columns_and_schema_picks_the_ones_to_write(db):
    create(
        db, "CREATE TABLE clicks (id BIGINT PRIMARY KEY, page VARCHAR(20), at TEXT DEFAULT 'now', n NUMERIC)"
    )
    sink = sinks.sqlite(db, table="clicks", key="id", schema={"id": int, "page": str, "n": float})
    sink.write_batch(rows([{"id": 1, "page": "/a", "n": 2}]))
    with pytest.raises(SinkRowError, match="field 'at' = 'x' is not a column"):
        sink.write_batch(rows([{"id": 2, "at": "x"}]))
    sink.close()
    assert sqlite_query(db, "SELECT id, page, at, n FROM clicks") == [(1, "/a", "now", 2)]

    every_column = sinks.sqlite(db, table="clicks", key="id")
    with pytest.raises(
        SinkRowError, match=r"field 'page' = 1 \(int\) does not fit column 'page' VARCHAR\(20\)"
    ):
        every_column.write_batch(rows([{"id": 3, "page": 1}]))
    every_column.close()


def test_upserts_need_a_unique_key_in_an_existing_table(db):
    create(db, "CREATE TABLE clicks (id INTEGER, page TEXT)")
    sink = sinks.sqlite(db, table="clicks", key="id")
    with pytest.raises(ConfigError, match=r"has no primary key or unique index on \(id\): upserts need one"):
        sink.write_batch(rows([{"id": 1}]))
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE UNIQUE INDEX clicks_id ON clicks (id)")
    sink.write_batch(rows([{"id": 1, "page": "/a"}, {"id": 1, "page": "/b"}]))
    sink.close()
    assert sqlite_query(db, "SELECT id, page FROM clicks") == [(1, "/b")]


def test_a_given_schema_creates_the_table(db):
    sink = sinks.sqlite(db, table="t", key="id", schema={"id": int, "tags": list, "score": float})
    sink.write_batch(rows([{"id": 1, "score": 1}]))
    sink.close()
    assert [(c[1], c[2]) for c in sqlite_query(db, "PRAGMA table_info(t)")] == [
        ("id", "INTEGER"),
        ("tags", "JSON"),
        ("score", "REAL"),
    ]


def test_options_are_checked_when_the_sink_is_made(db):
    with pytest.raises(ConfigError, match=r"key=\[\] must be a field name"):
        sinks.sqlite(db, table="t", key=[])
    with pytest.raises(ConfigError, match="table=''"):
        sinks.sqlite(db, table="")
    with pytest.raises(ConfigError, match="the key field 'id' is not in schema="):
        sinks.sqlite(db, table="t", key="id", schema={"page": str})


def test_a_table_that_cannot_be_defined_names_the_record(db):
    sink = sinks.sqlite(db, table="t", key="id")
    with pytest.raises(
        SinkRowError, match=r"does not exist and record events\[0\]@0 cannot define its columns: no key"
    ):
        sink.write_batch(rows([{"page": "/a"}]))
    sink.close()
