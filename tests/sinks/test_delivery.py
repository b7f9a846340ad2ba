"""Database sinks inside running apps: rows equal inputs across kill -9, records that do not fit reach the DLQ."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from sluice import App, sinks
from sluice.errors.dead_letter import ERROR_MESSAGE, ERROR_STAGE
from tests.apps import AppProcess, running, wait_for, write_app
from tests.sinks._helpers import pg_query, sqlite_query


@dataclass
class Target:
    """One database table the tests write through a sink, and how to read it back."""

    kind: str
    source: str  # the sink as Python source, for app modules
    location: str
    table: str

    def make(self) -> Any:
        if self.kind == "sqlite":
            return sinks.sqlite(self.location, table=self.table, key="id")
        return sinks.postgres(self.location, table=self.table, key="id")

    def query(self, sql: str) -> list[tuple]:
        sql = sql.replace("{table}", f'"{self.table}"')
        if self.kind == "sqlite":
            return sqlite_query(self.location, sql)
        return pg_query(self.location, sql)

    def count(self) -> int:
        try:
            return self.query("SELECT count(*) FROM {table}")[0][0]
        except Exception:  # noqa: BLE001 - the table does not exist yet
            return 0


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> Target:
    if request.param == "sqlite":
        db = str(tmp_path / "clicks.db")
        return Target("sqlite", f"sinks.sqlite({db!r}, table='clicks', key='id')", db, "clicks")
    dsn = request.getfixturevalue("postgres").dsn
    table = request.getfixturevalue("pg_table")
    return Target("postgres", f"sinks.postgres({dsn!r}, table={table!r}, key='id')", dsn, table)


CRASH_APP = """
import time
from sluice import App, sinks

app = App(
    {group!r},
    brokers={bootstrap!r},
    commit_interval="1s",
    max_poll_records=100,
    progress_interval="2s",
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
)

def slow(e):
    time.sleep(0.001)
    return e

app.stream({src!r}).map(slow).sink({sink})
"""


def test_rows_equal_inputs_after_kill9_and_restart_with_two_workers(
    kafka, topic_factory, tmp_path, target, capsys
):
    n = 4000
    src = topic_factory(partitions=4)
    values = [{"id": i, "page": f"/p{i % 13}", "n": i * 2} for i in range(n)]
    kafka.produce(src, [(f"k{i % 97}", orjson.dumps(v)) for i, v in enumerate(values)])
    group = f"sink-crash-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path,
        "crash_app",
        CRASH_APP.format(group=group, bootstrap=kafka.bootstrap, src=src, sink=target.source),
    )

    first = AppProcess(tmp_path, module)
    wait_for(lambda: target.count() >= n // 4, 90, what="a quarter of the rows")
    first.kill9()
    written = target.count()
    committed = sum(max(o, 0) for o in kafka.committed(group, src, 4).values())
    assert written < n, "the kill must land mid-stream"

    # each worker process opens its own connection to the same table
    second = AppProcess(tmp_path, module, workers=2)
    wait_for(lambda: target.count() >= n, 120, what="every row after the restart")
    assert second.terminate() == 0, second.log()

    got = target.query("SELECT id, page, n FROM {table} ORDER BY id")
    assert got == [(v["id"], v["page"], v["n"]) for v in values]
    with capsys.disabled():
        print(
            f"\n  {target.kind} kill -9: {written} rows written, {committed} offsets committed at the kill "
            f"({written - committed} replayed as upserts); {len(got)} rows for {n} inputs"
        )


BAD = [
    [1, 2],
    {"page": "/no-id", "n": 1},
    {"id": "abc", "page": "/x", "n": 1},
    {"id": 9001, "page": "/x", "n": 1, "color": "red"},
    {"id": 9002, "page": 5, "n": 1},
]


def test_records_that_do_not_fit_reach_the_dead_letter_topic(kafka, topic_factory, target):
    src = topic_factory(partitions=1)
    good = [{"id": i, "page": f"/p{i}", "n": i} for i in range(60)]
    values = good[:10] + BAD + good[10:]
    kafka.produce(src, [(None, orjson.dumps(v)) for v in values])
    app = App(
        f"sink-dlq-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="100ms",
        max_poll_records=20,
    )
    app.on_error(retries=1, backoff="1ms")
    app.stream(src).sink(target.make())
    dlq = f"{app.name}.dlq"
    with running(app) as outcome:
        wait_for(
            lambda: max(kafka.committed(app.name, src, 1)[0], 0) == len(values),
            60,
            outcome=outcome,
            what="every offset committed",
        )
        dead = kafka.drain(dlq, expected=len(BAD))
    kafka.created.append(dlq)

    assert target.query("SELECT id, page, n FROM {table} ORDER BY id") == [
        (v["id"], v["page"], v["n"]) for v in good
    ]
    assert [orjson.loads(r.value) for r in dead] == BAD
    headers = [dict(r.headers) for r in dead]
    assert all(h[ERROR_STAGE] == b"sink" for h in headers)
    messages = [h[ERROR_MESSAGE].decode() for h in headers]
    table = f"{target.kind} table {target.table!r}"
    assert all(m.startswith(f"{table}: record {src}[0]@") for m in messages), messages
    assert "is a list, not a dict of fields" in messages[0]
    assert "no key field 'id'" in messages[1]
    assert "field 'id' = 'abc' (str) does not fit column 'id'" in messages[2]
    assert "field 'color' = 'red' is not a column" in messages[3]
    assert "field 'page' = 5 (int) does not fit column 'page' TEXT" in messages[4]
