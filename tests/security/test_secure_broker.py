"""Every client and tool through a SASL_SSL broker (SCRAM-SHA-512 over TLS), and a wrong password.

The broker listens only on SASL_SSL: a client that lacks the security settings (an admin,
a restore consumer, a transactional producer, a tool's consumer) cannot do anything, so
each test fails if one client was built without ``kafka_config``/``--config``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from sluice import App
from sluice.cli.main import cli
from sluice.errors import KafkaAuthenticationError
from tests.apps import ROOT, running, wait_for

pytestmark = pytest.mark.secure

USERS = 5


def secure_app(kafka, tmp_path: Path, name: str, **kwargs) -> App:
    return App(
        name,
        brokers=kafka.bootstrap,
        kafka_config=dict(kafka.properties),
        commit_interval="200ms",
        state_dir=tmp_path / name,
        **kwargs,
    )


def events(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"u{i % USERS}".encode(), orjson.dumps({"id": i, "user": f"u{i % USERS}"}))
        for i in range(start, stop)
    ]


def bad_password_file(kafka, tmp_path: Path, password: str) -> Path:
    lines = [
        f"sasl.password={password}" if line.startswith("sasl.password=") else line
        for line in kafka.client_file.read_text().splitlines()
    ]
    path = tmp_path / "bad.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def sluice(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", "SLUICE_BROKERS": None, **(env or {})})


def test_an_app_with_state_runs_and_restores_through_sasl_ssl_and_logs_no_secret(
    secure_kafka, tmp_path, caplog
):
    src = secure_kafka.create_topic(partitions=2)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    out, counts = f"{name}-out", f"{name}-counts"
    secure_kafka.created.extend([out, counts, f"{name}-per-user-changelog", f"{name}-per-user-repartition"])

    def run_phase(start: int, stop: int) -> dict:
        secure_kafka.produce(src, events(start, stop))
        app = secure_app(secure_kafka, tmp_path, name, metrics_port=0)
        stream = app.stream(src)
        stream.map(lambda e: {"id": e["id"]}).to(out)
        stream.key_by(lambda e: e["user"]).count(name="per-user").current().to(counts)
        with running(app) as outcome:
            # the counts come from the repartition topic, whose partitions are read once their
            # stores are restored: its offsets committed too, not only the source's
            wait_for(
                lambda: (
                    app.stats.committed
                    and sum(app.stats.committed.values()) >= stop
                    and sum(
                        max(0, o)
                        for o in secure_kafka.committed(name, f"{name}-per-user-repartition", 2).values()
                    )
                    >= stop
                ),
                what="offsets committed",
                outcome=outcome,
            )
            metrics = urllib.request.urlopen(f"{app._runner.metrics.url}/metrics", timeout=10).read().decode()
        assert "error" not in outcome, outcome
        assert secure_kafka.properties["sasl.password"] not in metrics
        assert secure_kafka.properties["sasl.password"] not in repr(app.settings)
        last: dict = {}
        for record in secure_kafka.drain(counts, expected=stop, timeout=60):
            value = orjson.loads(record.value)
            last[value["key"]] = value["value"]
        return last

    with caplog.at_level(logging.DEBUG):
        first = run_phase(0, 100)
        assert first == Counter(f"u{i % USERS}" for i in range(100))
        ids = [orjson.loads(r.value)["id"] for r in secure_kafka.drain(out, expected=100, timeout=60)]
        assert sorted(set(ids)) == list(range(100))
        # the local state is lost: the restore consumer rebuilds it from the changelog, over SASL_SSL
        shutil.rmtree(tmp_path / name)
        second = run_phase(100, 150)
    assert second == Counter(f"u{i % USERS}" for i in range(150))
    assert secure_kafka.end_offsets(src, 2) == secure_kafka.committed(name, src, 2)
    assert "restored" in caplog.text
    assert secure_kafka.properties["sasl.password"] not in caplog.text


def test_an_exactly_once_app_runs_through_sasl_ssl(secure_kafka, tmp_path):
    src = secure_kafka.create_topic(partitions=2)
    name = f"sec-eos-{uuid.uuid4().hex[:8]}"
    out = f"{name}-out"
    secure_kafka.created.extend([out, f"{name}-n-changelog", f"{name}-n-repartition"])
    secure_kafka.produce(src, events(0, 300))
    app = secure_app(secure_kafka, tmp_path, name, guarantee="exactly_once")
    app.stream(src).map(lambda e: {"id": e["id"]}).to(out)
    with running(app) as outcome:
        got = secure_kafka.drain(out, expected=300, timeout=90, **{"isolation.level": "read_committed"})
        wait_for(lambda: sum((app.stats.committed or {}).values()) >= 300, what="committed", outcome=outcome)
    assert "error" not in outcome, outcome
    assert sorted(orjson.loads(r.value)["id"] for r in got) == list(range(300))
    assert secure_kafka.committed(name, src, 2) == secure_kafka.end_offsets(src, 2)


def test_dlq_tools_and_lag_work_through_sasl_ssl_with_a_config_file(secure_kafka, tmp_path):
    src = secure_kafka.create_topic()
    target = secure_kafka.create_topic()
    name = f"sec-dlq-{uuid.uuid4().hex[:8]}"
    dlq, out = f"{name}.dlq", f"{name}-out"
    secure_kafka.created.extend([dlq, out])
    secure_kafka.produce(src, [*events(0, 20), (b"u0", b"not json"), (b"u1", b"{broken")])

    app = secure_app(secure_kafka, tmp_path, name)
    app.on_error(retries=0, dead_letter=dlq)
    app.stream(src).map(lambda e: {"id": e["id"]}).to(out)
    with running(app) as outcome:
        wait_for(lambda: sum((app.stats.committed or {}).values()) >= 22, what="committed", outcome=outcome)
    assert "error" not in outcome, outcome

    config = str(secure_kafka.client_file)  # holds bootstrap.servers: no --brokers needed
    inspect = sluice("dlq", "inspect", dlq, "--config", config)
    assert inspect.exit_code == 0, inspect.output
    assert "JSONDecodeError" in inspect.output or "DeserializationError" in inspect.output, inspect.output
    assert "total: 2 dead letters" in inspect.output

    replay = sluice("dlq", "replay", dlq, "--to", target, "--config", config)
    assert replay.exit_code == 0, replay.output
    assert sorted(r.value for r in secure_kafka.drain(target, expected=2, timeout=30)) == [
        b"not json",
        b"{broken",
    ]

    # the file named by $SLUICE_KAFKA_CONFIG serves when the command line gives none
    lag = sluice("lag", "--group", name, "--json", env={"SLUICE_KAFKA_CONFIG": config})
    assert lag.exit_code == 0, lag.output
    report = orjson.loads(lag.stdout)
    assert report["total_lag"] == 0
    assert [(p["committed"], p["end"]) for p in report["partitions"]] == [(22, 22)]


def test_a_wrong_password_fails_fast_with_one_line_naming_the_mechanism(secure_kafka, tmp_path):
    secret = f"wrong-{uuid.uuid4().hex}"
    bad = bad_password_file(secure_kafka, tmp_path, secret)
    for command in (
        ["lag", "--group", "g"],
        ["dlq", "inspect", "some.dlq"],
        ["tail", "t", "--from-beginning"],
    ):
        started = time.monotonic()
        result = sluice(*command, "--config", str(bad), "--timeout", "30")
        elapsed = time.monotonic() - started
        assert result.exit_code == 1, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (command, result.stderr)
        assert lines[0].startswith("sluice: error: SASL authentication (SCRAM-SHA-512, user 'sluice')"), lines
        assert "sasl.password" in lines[0]
        assert secret not in result.output
        assert elapsed < 10, f"{command} took {elapsed:.1f}s to report a wrong password (timeout 30s)"


def test_an_untrusted_broker_certificate_fails_fast_naming_ssl_ca_location(secure_kafka, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    shutil.copy(secure_kafka.client_file.parent / "tls" / "broker.pem", other_ca)  # not the CA that signed it
    conf = tmp_path / "other.properties"
    conf.write_text(
        "".join(
            f"ssl.ca.location={other_ca}\n" if line.startswith("ssl.ca.location=") else line + "\n"
            for line in secure_kafka.client_file.read_text().splitlines()
        )
    )
    started = time.monotonic()
    result = sluice("lag", "--group", "g", "--config", str(conf), "--timeout", "30")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("sluice: error: TLS connection to Kafka at 127.0.0.1:9094 failed: ")
    assert "certificate verify failed" in result.stderr and "check ssl.ca.location" in result.stderr
    assert time.monotonic() - started < 10


def test_an_app_with_a_wrong_password_stops_with_an_authentication_error(secure_kafka, tmp_path, caplog):
    src = secure_kafka.create_topic()
    secret = f"wrong-{uuid.uuid4().hex}"
    props = {**secure_kafka.properties, "sasl.password": secret}
    app = App(f"sec-bad-{uuid.uuid4().hex[:8]}", brokers=secure_kafka.bootstrap, kafka_config=props)
    app.stream(src).map(lambda e: e).to(f"{app.name}-out")
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaAuthenticationError) as info:
        app.run(install_signal_handlers=False)
    assert time.monotonic() - started < 10
    assert "SCRAM-SHA-512" in str(info.value) and "\n" not in str(info.value)
    assert secret not in str(info.value)
    assert secret not in caplog.text
    assert secret not in repr(app.settings)


def test_sluice_run_with_workers_connects_with_the_config_file_over_the_apps_brokers(secure_kafka, tmp_path):
    src = secure_kafka.create_topic(partitions=2)
    name = f"sec-run-{uuid.uuid4().hex[:8]}"
    out = f"{name}-out"
    secure_kafka.created.append(out)
    # the app names a closed port and no security: only --config makes it work
    (tmp_path / "secured_app.py").write_text(
        "from sluice import App\n"
        f"app = App({name!r}, brokers='127.0.0.1:1', commit_interval='200ms')\n"
        f"app.stream({src!r}).map(lambda e: {{'id': e['id']}}).to({out!r})\n"
    )
    secure_kafka.produce(src, events(0, 200))
    # the brokers from --brokers, the security settings from a file without bootstrap.servers
    no_brokers = tmp_path / "no-brokers.properties"
    no_brokers.write_text(
        "".join(
            line + "\n"
            for line in secure_kafka.client_file.read_text().splitlines()
            if not line.startswith("bootstrap.servers")
        )
    )
    log = tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLUICE_BROKERS", None)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice",
                "run",
                "secured_app:app",
                "--workers",
                "2",
                "--brokers",
                secure_kafka.bootstrap,
                "--config",
                str(no_brokers),
                "--log-level",
                "debug",
            ],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            got = secure_kafka.drain(out, expected=200, timeout=90)
            wait_for(
                lambda: secure_kafka.committed(name, src, 2) == secure_kafka.end_offsets(src, 2),
                what="committed",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert sorted(orjson.loads(r.value)["id"] for r in got) == list(range(200))
    assert secure_kafka.properties["sasl.password"] not in text


def test_produce_tail_and_top_work_through_sasl_ssl_with_a_config_file(secure_kafka, tmp_path):
    topic = f"sec-tools-{uuid.uuid4().hex[:8]}"
    secure_kafka.created.append(topic)
    config = str(secure_kafka.client_file)
    made = sluice("produce", topic, "--create", "--partitions", "2", "-n", "25", "--config", config)
    assert made.exit_code == 0, made.output
    assert "25 acknowledged" in made.output
    shown = sluice("tail", topic, "--from-beginning", "--compact", "--config", config)
    assert shown.exit_code == 0, shown.output
    records = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert len(records) == 25 and all(r["topic"] == topic for r in records)

    group = f"sec-top-{uuid.uuid4().hex[:8]}"
    consumer = secure_kafka.consumer(group)
    consumer.subscribe([topic])
    wait_for(lambda: consumer.consume(25, timeout=1) and consumer.commit(asynchronous=False), what="a commit")
    consumer.close()
    view = sluice("top", "--group", group, "--once", "--config", config)
    assert view.exit_code == 0, view.output
    assert topic in view.output
