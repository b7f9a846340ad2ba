"""The PostgreSQL sink against a real server: tables, upserts, all-or-nothing batches, the database going away."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest

from sluice import sinks
from sluice.errors import ConfigError
from sluice.sinks import SinkError, SinkRowError, SinkUnavailableError
from tests.apps import AppProcess, wait_for, write_app
from tests.sinks._helpers import pg_query, rows


def test_nothing_connects_before_the_first_write(pg_table):
    sink = sinks.postgres("postgresql://nobody@127.0.0.1:1/none", table=pg_table, key="id")
    sink.close()  # no connection was attempted, so nothing failed


def test_the_table_is_created_from_the_first_record_with_typed_columns(postgres, pg_table):
    sink = sinks.postgres(postgres.dsn, table=pg_table, key="id")
    sink.write_batch(
        rows(
            [{"id": 1, "page": "/a", "ms": 1.5, "ok": True, "meta": {"a": [1]}, "raw": b"\x01", "note": None}]
        )
    )
    sink.close()
    columns = pg_query(
        postgres.dsn,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        pg_table,
    )
    assert columns == [
        ("id", "bigint"),
        ("page", "text"),
        ("ms", "double precision"),
        ("ok", "boolean"),
        ("meta", "jsonb"),
        ("raw", "bytea"),
        ("note", "text"),
    ]
    assert pg_query(postgres.dsn, f'SELECT * FROM "{pg_table}"') == [
        (1, "/a", 1.5, True, {"a": [1]}, b"\x01", None)
    ]


def test_replayed_records_leave_no_duplicate_rows_and_the_last_record_wins(postgres, pg_table):
    sink = sinks.postgres(postgres.dsn, table=pg_table, key="id")
    batch = rows([{"id": i, "page": f"/p{i}"} for i in range(500)])
    sink.write_batch(batch)
    sink.write_batch(batch[250:])
    sink.write_batch(rows([{"id": 1, "page": "/old"}, {"id": 2, "page": "/two"}, {"id": 1, "page": "/new"}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT count(*), count(DISTINCT id) FROM "{pg_table}"') == [(500, 500)]
    assert pg_query(postgres.dsn, f'SELECT page FROM "{pg_table}" WHERE id IN (1, 2) ORDER BY id') == [
        ("/new",),
        ("/two",),
    ]


def test_without_a_key_rows_are_copied_in(postgres, pg_table):
    sink = sinks.postgres(postgres.dsn, table=pg_table)
    sink.write_batch(rows([{"msg": "a", "tags": ["x", 1]}, {"msg": "a\tb\nc\\d", "tags": None}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT msg, tags FROM "{pg_table}"') == [
        ("a", ["x", 1]),
        ("a\tb\nc\\d", None),
    ]


def test_a_composite_key_and_a_schema_qualified_name(postgres, pg_table):
    sink = sinks.postgres(postgres.dsn, table=f"public.{pg_table}", key=["page", "day"])
    sink.write_batch(rows([{"page": "/a", "day": 1, "n": 1}, {"page": "/a", "day": 2, "n": 5}]))
    sink.write_batch(rows([{"page": "/a", "day": 1, "n": 7}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT page, day, n FROM "{pg_table}" ORDER BY day') == [
        ("/a", 1, 7),
        ("/a", 2, 5),
    ]


def test_a_batch_the_database_refuses_is_rolled_back_and_its_record_named(postgres, pg_table):
    pg_query(
        postgres.dsn, f'CREATE TABLE "{pg_table}" (id int PRIMARY KEY, n int CHECK (n >= 0), at timestamptz)'
    )
    sink = sinks.postgres(postgres.dsn, table=pg_table, key="id")
    with pytest.raises(SinkError, match="writing 3 rows failed, nothing written: CheckViolation"):
        sink.write_batch(rows([{"id": 1, "n": 1}, {"id": 2, "n": -1}, {"id": 3, "n": 3}]))
    assert pg_query(postgres.dsn, f'SELECT count(*) FROM "{pg_table}"') == [(0,)]
    with pytest.raises(SinkRowError, match=r"record events\[0\]@4: the database refused it: CheckViolation"):
        sink.write_batch(rows([{"id": 2, "n": -1}], start=4))
    with pytest.raises(
        SinkRowError, match=r"record events\[0\]@1: field 'at' = 'a\\x00b' holds a NUL character"
    ):
        sink.write_batch(rows([{"id": 5, "n": 1}, {"id": 6, "n": 1, "at": "a\x00b"}]))
    with pytest.raises(SinkRowError, match=r"field 'n' = '1' \(str\) does not fit column 'n' INTEGER"):
        sink.write_batch(rows([{"id": 7, "n": "1"}]))
    # a column of another type (timestamptz) takes what PostgreSQL can parse
    sink.write_batch(rows([{"id": 8, "n": 0, "at": "2024-01-02T03:04:05Z"}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT id, extract(year FROM at)::int FROM "{pg_table}"') == [(8, 2024)]


def test_upserts_need_a_unique_key_in_an_existing_table(postgres, pg_table):
    pg_query(postgres.dsn, f'CREATE TABLE "{pg_table}" (id bigint, page text)')
    sink = sinks.postgres(postgres.dsn, table=pg_table, key="id")
    with pytest.raises(ConfigError, match=r"has no primary key or unique index on \(id\): upserts need one"):
        sink.write_batch(rows([{"id": 1}]))
    pg_query(postgres.dsn, f'CREATE UNIQUE INDEX ON "{pg_table}" (id)')
    sink.write_batch(rows([{"id": 1, "page": "/a"}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT id, page FROM "{pg_table}"') == [(1, "/a")]


def test_a_schema_writes_a_subset_of_an_existing_table_leaving_defaults(postgres, pg_table):
    pg_query(
        postgres.dsn,
        f'CREATE TABLE "{pg_table}" (id bigint PRIMARY KEY, page text, seen timestamptz NOT NULL DEFAULT now())',
    )
    sink = sinks.postgres(postgres.dsn, table=pg_table, key="id", schema={"id": int, "page": str})
    sink.write_batch(rows([{"id": 1, "page": "/a"}]))
    sink.write_batch(rows([{"id": 1, "page": "/b"}]))
    sink.close()
    assert pg_query(postgres.dsn, f'SELECT id, page, seen IS NOT NULL FROM "{pg_table}"') == [(1, "/b", True)]


def test_a_bad_dsn_or_table_is_a_config_error():
    with pytest.raises(ConfigError, match="the DSN is not a libpq connection string"):
        sinks.postgres("nonsense", table="t")
    with pytest.raises(ConfigError, match=r"must be 'table' or 'schema\.table'"):
        sinks.postgres("postgresql://h/db", table="a.b.c")


def test_a_write_waits_while_the_database_restarts_and_then_lands(managed_postgres, pg_table):
    sink = sinks.postgres(managed_postgres.dsn, table=pg_table, key="id", backoff="50ms..500ms")
    sink.write_batch(rows([{"id": 0}]))
    managed_postgres.stop()
    restart = threading.Timer(3.0, managed_postgres.start)
    restart.start()
    started = time.monotonic()
    try:
        sink.write_batch(rows([{"id": i} for i in range(1, 100)]))
    finally:
        restart.join()
    waited = time.monotonic() - started
    sink.close()
    assert waited >= 2.5, "the write waited for the database"
    assert pg_query(managed_postgres.dsn, f'SELECT count(*) FROM "{pg_table}"') == [(100,)]


def test_past_retry_for_a_write_raises_then_fails_fast_until_the_database_is_back(managed_postgres, pg_table):
    sink = sinks.postgres(
        managed_postgres.dsn, table=pg_table, key="id", retry_for="1s", backoff="50ms..200ms"
    )
    sink.write_batch(rows([{"id": 0}]))
    managed_postgres.stop()
    started = time.monotonic()
    with pytest.raises(
        SinkUnavailableError, match=r"unreachable for 1s \(retry_for=1s\); 1 rows not written"
    ):
        sink.write_batch(rows([{"id": 1}]))
    assert 0.9 <= time.monotonic() - started < 10
    started = time.monotonic()
    with pytest.raises(SinkUnavailableError):
        sink.write_batch(rows([{"id": 2}]))
    assert time.monotonic() - started < 1.0, "once retry_for is spent, each write tries once"
    managed_postgres.start()
    sink.write_batch(rows([{"id": 3}]))
    sink.close()
    assert pg_query(managed_postgres.dsn, f'SELECT id FROM "{pg_table}" ORDER BY id') == [(0,), (3,)]


OUTAGE_APP = """
import time
from sluice import App, sinks

app = App({group!r}, brokers={bootstrap!r}, commit_interval="200ms", max_poll_records=100, progress_interval="2s")

def slow(e):
    time.sleep(0.002)
    return e

app.stream({src!r}).map(slow).sink(sinks.postgres({dsn!r}, table={table!r}, key="id", backoff="100ms..2s"))
"""


def test_database_stopped_30s_mid_stream_then_restarted_loses_nothing(
    kafka, topic_factory, tmp_path, managed_postgres, pg_table, capsys
):
    n = 3000
    src = topic_factory(partitions=2)
    values = [{"id": i, "page": f"/p{i % 13}", "n": i * 2} for i in range(n)]
    kafka.produce(src, [(f"k{i % 31}", orjson.dumps(v)) for i, v in enumerate(values)])
    group = f"pg-outage-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path,
        "outage_app",
        OUTAGE_APP.format(
            group=group, bootstrap=kafka.bootstrap, src=src, dsn=managed_postgres.dsn, table=pg_table
        ),
    )

    def count() -> int:
        try:
            return pg_query(managed_postgres.dsn, f'SELECT count(*) FROM "{pg_table}"')[0][0]
        except Exception:  # noqa: BLE001 - the table does not exist yet
            return 0

    def committed() -> int:
        return sum(max(o, 0) for o in kafka.committed(group, src, 2).values())

    app = AppProcess(tmp_path, module)
    wait_for(lambda: count() >= n // 5, 60, what="a fifth of the rows")
    managed_postgres.stop()
    stopped_at = time.monotonic()
    time.sleep(5)
    committed_early = committed()
    time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
    committed_late = committed()
    managed_postgres.start()
    rows_after_restart = count()
    wait_for(lambda: count() >= n, 90, what="every row after the restart")
    assert app.terminate() == 0, app.log()

    assert committed_early == committed_late, "no offset moved while the database was down"
    assert committed_late <= rows_after_restart, "only offsets of written rows were committed"
    got = pg_query(managed_postgres.dsn, f'SELECT id, page, n FROM "{pg_table}" ORDER BY id')
    assert got == [(v["id"], v["page"], v["n"]) for v in values]
    log = app.log()
    assert "unreachable" in log and "is back after" in log
    assert "dead letter" not in log.lower()
    with capsys.disabled():
        print(f"\n  postgres down 30s: {len(got)} rows for {n} inputs, commits paused at {committed_late}")
