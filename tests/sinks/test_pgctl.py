"""The PostgreSQL script: idempotent, and its failures are one clear line, not a stack trace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PGCTL = ROOT / "tools" / "postgres" / "pgctl.py"


def run_pgctl(args, env_extra, tmp_path):
    env = {**os.environ, "SLUICE_PG_HOME": str(tmp_path / "pg-home"), **env_extra}
    return subprocess.run(
        [sys.executable, str(PGCTL), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = run_pgctl(["up"], {"SLUICE_PG_PORT": str(port)}, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"pgctl: error: port 127.0.0.1:{port} is already in use by another process "
        "(not a server started by this script); stop it, or set SLUICE_PG_PORT to another port"
    )


def test_a_bad_bin_folder_is_a_clear_error(tmp_path):
    proc = run_pgctl(["up"], {"SLUICE_PG_BIN": str(tmp_path), "SLUICE_PG_PORT": "1"}, tmp_path)
    assert proc.returncode == 1
    assert "has no initdb; point it at PostgreSQL's bin folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_up_again_reuses_the_running_server(postgres):
    if not postgres.managed:
        pytest.skip("SLUICE_TEST_POSTGRES: the server is not this script's")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(PGCTL), "up"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"PostgreSQL ready: {postgres.dsn}"
    assert time.monotonic() - started < 5
