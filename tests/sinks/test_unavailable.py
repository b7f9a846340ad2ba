"""A sink that is unavailable (locked, read-only, disk full) is not a row failure.

The batch waits, nothing is dead-lettered, no offset moves past it, and the app goes on
once the sink heals, or stops after the policy's ``retry_for`` committing nothing past it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid

import orjson
import pytest

from sluice import App, sinks
from sluice.errors import EnvironmentalError, SinkError, SinkRowError, SinkUnavailableError
from tests.apps import running, wait_for
from tests.sinks._helpers import pg_query, rows, sqlite_query


def _committed(kafka, app: App, src: str) -> int:
    return max(kafka.committed(app.name, src, 1)[0], 0)


def _sqlite_count(db: str, table: str) -> int:
    try:
        return sqlite_query(db, f'SELECT count(*) FROM "{table}"')[0][0]
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0


def _produce(kafka, src: str, ids: range) -> None:
    kafka.produce(src, [(None, orjson.dumps({"id": i, "n": i * 2})) for i in ids])


class _Locker:
    """Another connection holding SQLite's write lock on ``db`` until ``release()``."""

    def __init__(self, db: str) -> None:
        self.conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_sqlite_locked_by_another_writer_waits_then_writes_every_row(
    kafka, topic_factory, tmp_path, guarantee
):
    src = topic_factory(partitions=1)
    db = str(tmp_path / "locked.db")
    app = App(
        f"sink-locked-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="100ms",
        guarantee=guarantee,
        state_dir=tmp_path / "state",
    )
    app.on_error(retries=1, backoff="20ms..300ms", retry_for="60s")
    # a lock wait shorter than the lock: SQLite answers "database is locked"
    app.stream(src).sink(sinks.sqlite(db, table="t", key="id", timeout="200ms"))
    kafka.created.append(f"{app.name}.dlq")
    _produce(kafka, src, range(50))
    with running(app) as outcome:
        wait_for(lambda: _committed(kafka, app, src) == 50, 60, outcome=outcome, what="first rows committed")
        locker = _Locker(db)
        try:
            _produce(kafka, src, range(50, 200))
            time.sleep(4)
            committed_while_locked = _committed(kafka, app, src)
            rows_while_locked = _sqlite_count(db, "t")
        finally:
            locker.release()
        wait_for(
            lambda: _committed(kafka, app, src) == 200, 60, outcome=outcome, what="every offset committed"
        )
        assert "error" not in outcome
        dead_letters = app.stats.dead_letters

    assert committed_while_locked == 50, "no offset moved past the batch while the database was locked"
    assert rows_while_locked == 50
    assert dead_letters == 0, "a locked database is not a row failure"
    assert sqlite_query(db, "SELECT id, n FROM t ORDER BY id") == [(i, i * 2) for i in range(200)]


def test_past_retry_for_the_app_stops_with_a_clear_error_and_commits_nothing_past_the_batch(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=1)
    db = str(tmp_path / "stuck.db")
    app = App(f"sink-stuck-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=1, backoff="20ms..200ms", retry_for="3s")
    app.stream(src).sink(sinks.sqlite(db, table="t", key="id", timeout="100ms"))
    kafka.created.append(f"{app.name}.dlq")
    _produce(kafka, src, range(30))
    locker = None
    try:
        with running(app) as outcome:
            wait_for(
                lambda: _committed(kafka, app, src) == 30, 60, outcome=outcome, what="first rows committed"
            )
            locker = _Locker(db)
            locked_at = time.monotonic()
            _produce(kafka, src, range(30, 60))
            wait_for(lambda: "error" in outcome, 30, what="the app to stop")
            stopped_after = time.monotonic() - locked_at
    finally:
        if locker is not None:
            locker.release()

    error = outcome["error"]
    assert isinstance(error, SinkUnavailableError), repr(error)
    text = str(error)
    assert "retry_for=3s" in text and "database is locked" in text, text
    assert "sqlite table 't'" in text, text
    assert 3 <= stopped_after < 20
    assert _committed(kafka, app, src) == 30, "nothing committed past the failing batch"
    assert app.stats.dead_letters == 0
    assert _sqlite_count(db, "t") == 30


@pytest.fixture
def readonly_db(postgres):
    """A database of its own (turning it read-only must not disturb other tests), dropped afterwards."""
    import psycopg

    name = f"ro_{uuid.uuid4().hex[:10]}"
    try:
        pg_query(postgres.dsn, f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a database on the test server: {exc}")
    base, _, _db = postgres.dsn.rpartition("/")
    yield name, f"{base}/{name}"
    pg_query(postgres.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _set_read_only(admin_dsn: str, name: str, on: bool) -> None:
    """Turn new sessions of ``name`` read-only (as after a failover to a standby) and cut the current ones."""
    if on:
        pg_query(admin_dsn, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        pg_query(
            admin_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            name,
        )
    else:
        pg_query(admin_dsn, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_postgres_turned_read_only_dead_letters_nothing_and_writes_every_row_once_healed(
    kafka, topic_factory, postgres, readonly_db
):
    name, dsn = readonly_db
    src = topic_factory(partitions=1)
    app = App(f"sink-ro-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=1, backoff="20ms..300ms", retry_for="60s")
    app.stream(src).sink(sinks.postgres(dsn, table="t", key="id", retry_for="1s", backoff="50ms..300ms"))
    kafka.created.append(f"{app.name}.dlq")
    _produce(kafka, src, range(50))
    healed = False
    with running(app) as outcome:
        try:
            wait_for(
                lambda: _committed(kafka, app, src) == 50, 60, outcome=outcome, what="first rows committed"
            )
            _set_read_only(postgres.dsn, name, True)
            _produce(kafka, src, range(50, 150))
            time.sleep(4)
            committed_while_read_only = _committed(kafka, app, src)
            rows_while_read_only = pg_query(dsn, "SELECT count(*) FROM t")[0][0]
            _set_read_only(postgres.dsn, name, False)
            healed = True
            wait_for(
                lambda: _committed(kafka, app, src) == 150, 60, outcome=outcome, what="every offset committed"
            )
            assert "error" not in outcome
            dead_letters = app.stats.dead_letters
        finally:
            if not healed:
                _set_read_only(postgres.dsn, name, False)

    assert committed_while_read_only == 50, "no offset moved past the batch while the database was read-only"
    assert rows_while_read_only == 50
    assert dead_letters == 0, "a read-only database is not a row failure"
    assert pg_query(dsn, "SELECT id, n FROM t ORDER BY id") == [(i, i * 2) for i in range(150)]


def test_postgres_read_only_is_unavailable_not_a_row_error(postgres, readonly_db):
    name, dsn = readonly_db
    sink = sinks.postgres(dsn, table="t", key="id", retry_for="300ms", backoff="50ms..100ms")
    sink.write_batch(rows([{"id": 0}]))
    _set_read_only(postgres.dsn, name, True)
    try:
        with pytest.raises(SinkUnavailableError, match=r"read-only .*25006|25006.*read-only") as raised:
            sink.write_batch(rows([{"id": 1}]))
        assert isinstance(raised.value, EnvironmentalError)
    finally:
        _set_read_only(postgres.dsn, name, False)
    sink.write_batch(rows([{"id": 2}]))  # a new session, no longer read-only
    sink.close()
    assert pg_query(dsn, "SELECT id FROM t ORDER BY id") == [(0,), (2,)]


def test_sqlite_locked_or_unwritable_is_unavailable_a_bad_record_is_not(tmp_path):
    db = str(tmp_path / "c.db")
    sink = sinks.sqlite(db, table="t", key="id", timeout="100ms")
    sink.write_batch(rows([{"id": 0}]))
    locker = _Locker(db)
    try:
        with pytest.raises(SinkUnavailableError, match="database is locked"):
            sink.write_batch(rows([{"id": 1}]))
    finally:
        locker.release()
    with pytest.raises(SinkRowError) as bad:
        sink.write_batch(rows([{"id": "x"}]))
    assert not isinstance(bad.value, EnvironmentalError)
    sink.write_batch(rows([{"id": 1}]))
    sink.close()
    assert sqlite_query(db, "SELECT id FROM t ORDER BY id") == [(0,), (1,)]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (ENOSPC on every write)")
def test_a_full_disk_is_unavailable_for_jsonl_and_the_sink_writes_again_once_there_is_room(tmp_path):
    target = tmp_path / "out.jsonl"
    os.symlink("/dev/full", target)  # the kernel answers every write with ENOSPC
    sink = sinks.jsonl(str(target))
    with pytest.raises(SinkUnavailableError, match="No space left on device") as raised:
        sink.write_batch(rows([{"id": 1}]))
    assert isinstance(raised.value, SinkError)
    target.unlink()  # room again: a regular file
    sink.write_batch(rows([{"id": 1}]))
    sink.close()
    assert target.read_bytes() == b'{"id":1}\n'


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (ENOSPC on every write)")
def test_jsonl_disk_full_in_a_running_app_waits_then_writes_every_record(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=1)
    target = tmp_path / "out.jsonl"
    os.symlink("/dev/full", target)
    app = App(f"sink-full-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=1, backoff="20ms..200ms", retry_for="60s")
    app.stream(src).sink(sinks.jsonl(str(target)))
    kafka.created.append(f"{app.name}.dlq")
    _produce(kafka, src, range(40))
    room = threading.Timer(3.0, target.unlink)
    with running(app) as outcome:
        room.start()
        time.sleep(2)
        committed_while_full = _committed(kafka, app, src)
        room.join()
        wait_for(
            lambda: _committed(kafka, app, src) == 40, 60, outcome=outcome, what="every offset committed"
        )
        dead_letters = app.stats.dead_letters
    assert committed_while_full == 0
    assert dead_letters == 0
    assert [orjson.loads(line)["id"] for line in target.read_bytes().splitlines()] == list(range(40))


def test_a_sink_function_raising_sink_unavailable_waits_instead_of_dead_lettering(kafka, topic_factory):
    src = topic_factory(partitions=1)
    written: list[int] = []
    down_until = time.monotonic() + 2.0

    def deliver(value: dict) -> None:
        if time.monotonic() < down_until:
            raise SinkUnavailableError("the mail gateway answers 503: try later")
        written.append(value["id"])

    app = App(f"sink-fn-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=1, backoff="20ms..200ms", retry_for="60s")
    app.stream(src).sink(deliver)
    kafka.created.append(f"{app.name}.dlq")
    _produce(kafka, src, range(30))
    with running(app) as outcome:
        wait_for(
            lambda: _committed(kafka, app, src) == 30, 60, outcome=outcome, what="every offset committed"
        )
        dead_letters = app.stats.dead_letters
    assert dead_letters == 0
    assert written == list(range(30))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount), with ``fill()`` to use up its room and ``free()`` to give it back."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")

    class Disk:
        path = mount
        filler = mount / "filler"

        def fill(self) -> None:
            with open(self.filler, "ab", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass

        def free(self) -> None:
            self.filler.unlink()

    yield Disk()
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _big(ids: range) -> list:
    return rows([{"id": i, "text": "x" * 2_000} for i in ids])


def test_sqlite_on_a_full_disk_is_unavailable_and_writes_once_there_is_room(tiny_disk):
    db = str(tiny_disk.path / "c.db")
    sink = sinks.sqlite(db, table="t", key="id", timeout="100ms")
    sink.write_batch(_big(range(5)))
    tiny_disk.fill()
    with pytest.raises(SinkUnavailableError, match=r"full|disk I/O error"):
        sink.write_batch(_big(range(5, 100)))
    tiny_disk.free()
    sink.write_batch(_big(range(5, 100)))
    sink.close()
    assert sqlite_query(db, "SELECT count(*), min(id), max(id) FROM t") == [(100, 0, 99)]


def test_parquet_on_a_full_disk_is_unavailable_and_keeps_every_written_batch(tiny_disk):
    pq = pytest.importorskip("pyarrow.parquet")
    sink = sinks.parquet(str(tiny_disk.path / "out"), rotate="10MB", compression="none")
    sink.write_batch(_big(range(5)))
    tiny_disk.fill()
    with pytest.raises(SinkUnavailableError, match="No space left on device"):
        sink.write_batch(_big(range(5, 200)))
    tiny_disk.free()
    sink.write_batch(_big(range(200, 210)))
    sink.close()
    ids = sorted(
        i for f in (tiny_disk.path / "out").glob("part-*.parquet") for i in pq.read_table(f)["id"].to_pylist()
    )
    assert ids == [*range(5), *range(200, 210)], "the batch written before is kept, the refused one is not"
