"""A real PostgreSQL server for the sink tests, started once per session by ``tools/postgres/pgctl.py``.

- ``SLUICE_TEST_POSTGRES`` set (a DSN): use that server; the tests that stop the
  server are skipped.
- Otherwise the session starts the throwaway server (reusing one already running,
  installing PostgreSQL from Debian packages when missing) and stops it at the end
  only if it started it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_pgctl():
    spec = importlib.util.spec_from_file_location("pgctl", ROOT / "tools" / "postgres" / "pgctl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgctl"] = module
    spec.loader.exec_module(module)
    return module


pgctl = _load_pgctl()


@dataclass(frozen=True)
class Postgres:
    """The test server: its DSN, and whether this session may stop and restart it."""

    dsn: str
    managed: bool

    def stop(self) -> None:
        """Fast shutdown by pid: sessions are cut off, the data stays."""
        pgctl.stop("fast")

    def start(self) -> None:
        pgctl.start()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    given = os.environ.get("SLUICE_TEST_POSTGRES")
    if given:
        yield Postgres(given, managed=False)
        return
    was_running = pgctl.read_pid() is not None
    try:
        dsn = pgctl.up()
    except pgctl.PgCtlError as exc:
        pytest.fail(f"PostgreSQL could not be started for the tests: {exc}")
    yield Postgres(dsn, managed=True)
    if not was_running:
        pgctl.down()


@pytest.fixture
def managed_postgres(postgres: Postgres) -> Iterator[Postgres]:
    """The server, for tests that stop it; running again when the test ends."""
    if not postgres.managed:
        pytest.skip("SLUICE_TEST_POSTGRES points at a server these tests must not stop")
    yield postgres
    if pgctl.read_pid() is None:
        pgctl.start()


@pytest.fixture
def pg_table(postgres: Postgres) -> Iterator[str]:
    """A unique table name, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    if pgctl.read_pid() is None and postgres.managed:
        pgctl.start()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
