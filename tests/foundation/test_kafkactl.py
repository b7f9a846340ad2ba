"""The broker script: ready means usable at once; failures are one clear line, not a stack trace."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
KAFKACTL = ROOT / "tools" / "kafka" / "kafkactl.py"


def run_kafkactl(args, env_extra, tmp_path, timeout=60):
    env = {**os.environ, "SLUICE_KAFKA_HOME": str(tmp_path / "kafka-home"), **env_extra}
    return subprocess.run(
        [sys.executable, str(KAFKACTL), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _free_port_pair() -> int:
    """A port P with P and P+1 (the controller's) free on loopback."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def test_fresh_broker_reported_ready_answers_as_coordinator_at_once(tmp_path):
    """The first use right after ``up`` (a ``committed()``, an idempotent produce) does not meet
    NOT_COORDINATOR or "Coordinator load in progress": no retry here, short timeouts."""
    port = _free_port_pair()
    env = {"SLUICE_BROKER_PORT": str(port)}
    try:
        up = run_kafkactl(["up"], env, tmp_path, timeout=120)
        assert up.returncode == 0, up.stderr
        bootstrap = f"127.0.0.1:{port}"
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"first-{uuid.uuid4().hex[:8]}", "log_level": 0}
        )
        try:
            [tp] = consumer.committed([TopicPartition("kafkactl-ready", 0)], timeout=5)
        finally:
            consumer.close()
        assert tp.error is None and tp.offset < 0
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
        errors = []
        producer.produce("kafkactl-ready", b"first", on_delivery=lambda err, _m: errors.append(err))
        assert producer.flush(5) == 0
        assert errors == [None]
    finally:
        down = run_kafkactl(["down"], env, tmp_path)
        assert down.returncode == 0, down.stderr


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


def test_coordinator_wait_is_bounded_and_shows_the_broker_log_tail(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kafkactl_under_test", KAFKACTL)
    kafkactl = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = kafkactl  # its dataclasses look their module up
    spec.loader.exec_module(kafkactl)
    port = _free_port_pair()  # nothing listens: no coordinator will ever answer
    node = kafkactl.Node(1, port, port + 1, tmp_path / "node")
    node.home.mkdir()
    node.pid_file.write_text(str(os.getpid()))  # a live process stands in for the broker
    node.log_file.write_text("line 1\nERROR the coordinator could not load (the reason)\n")
    started = time.monotonic()
    with pytest.raises(kafkactl.KafkaCtlError) as raised:
        kafkactl._wait_coordinators([node], time.monotonic() + 2, 2)
    assert time.monotonic() - started < 15
    assert "not as a group/transaction coordinator within 2s" in str(raised.value)
    assert "ERROR the coordinator could not load (the reason)" in capsys.readouterr().err
