"""The broker script's failures are one clear line, not a stack trace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKACTL = ROOT / "tools" / "kafka" / "kafkactl.py"


def run_kafkactl(args, env_extra, tmp_path):
    env = {**os.environ, "SLUICE_KAFKA_HOME": str(tmp_path / "kafka-home"), **env_extra}
    return subprocess.run(
        [sys.executable, str(KAFKACTL), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = run_kafkactl(["up"], {"SLUICE_BROKER_PORT": str(port)}, tmp_path)
    assert proc.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_java_is_a_clear_error(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir), "JAVA_HOME": "", "SLUICE_BROKER_PORT": "0"}
    proc = run_kafkactl(["up"], env, tmp_path)
    assert proc.returncode == 1
    assert "Java is not installed" in proc.stderr or "Maven (mvn) is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr
