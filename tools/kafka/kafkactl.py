"""Fetch, start and stop a real Apache Kafka (KRaft) broker or 3-node cluster on loopback.

Used by the Makefile (``make broker-up``, ``make cluster-up``...) and by the test
harness (``tests/conftest.py`` imports it to kill and restart cluster nodes).

Every process is stopped by the pid this script recorded, never by name. A broker
that fails to start prints the tail of its log and the reason, and the command
exits non-zero with a one-line error.

Usage::

    python tools/kafka/kafkactl.py fetch
    python tools/kafka/kafkactl.py up | down | status
    python tools/kafka/kafkactl.py cluster-up | cluster-down
    python tools/kafka/kafkactl.py kill-node N | start-node N
    python tools/kafka/kafkactl.py secure-up | secure-down
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _processes import alive, java, maven, port_open, read_pid  # noqa: E402

ROOT = HERE.parent.parent
JARS = HERE / "target" / "dependency"
STATE = Path(os.environ.get("SLUICE_KAFKA_HOME", ROOT / ".kafka"))
HOST = "127.0.0.1"

SINGLE_PORT = int(os.environ.get("SLUICE_BROKER_PORT", "9092"))
SINGLE_CONTROLLER_PORT = SINGLE_PORT + 1
CLUSTER_PORTS = (19092, 19093, 19094)
CLUSTER_CONTROLLER_PORTS = (19192, 19193, 19194)
START_TIMEOUT_S = 90.0
#: the secured broker (SASL_SSL, SCRAM-SHA-512 over TLS): its own ports and state, next to the others
SECURE_PORT = int(os.environ.get("SLUICE_SECURE_BROKER_PORT", "9094"))
SECURE_CONTROLLER_PORT = SECURE_PORT + 1
SECURE_MECHANISM = "SCRAM-SHA-512"
SECURE_USER = "sluice"
# one record is produced there (idempotently) and its offset asked of the group coordinator
READY_TOPIC = "kafkactl-ready"


class KafkaCtlError(Exception):
    """A failure with a message meant for a person; printed on one line."""


@dataclass(frozen=True)
class Node:
    """One broker process: its id, ports and where its files live."""

    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


def single_node() -> Node:
    return Node(1, SINGLE_PORT, SINGLE_CONTROLLER_PORT, STATE / "single")


def cluster_nodes() -> list[Node]:
    return [
        Node(i + 1, port, cport, STATE / "cluster" / f"node{i + 1}")
        for i, (port, cport) in enumerate(zip(CLUSTER_PORTS, CLUSTER_CONTROLLER_PORTS, strict=True))
    ]


def cluster_bootstrap() -> str:
    return ",".join(n.bootstrap for n in cluster_nodes())


# --------------------------------------------------------------------------- fetch


def fetch() -> None:
    """Download the broker jars with Maven (once; a second call is a no-op)."""
    if (JARS / "kafka_2.13-4.4.0.jar").exists() or any(JARS.glob("kafka_2.13-*.jar")):
        return
    print("fetching Apache Kafka jars with Maven (first run only)...", file=sys.stderr)
    maven(
        ["dependency:copy-dependencies"],
        HERE,
        purpose="fetch the Kafka jars",
        done=lambda: any(JARS.glob("kafka_2.13-*.jar")),
        error=KafkaCtlError,
    )


def _java() -> str:
    return java("the Kafka broker", KafkaCtlError)


# --------------------------------------------------------------------------- config


def _kafka_uuid() -> str:
    # like Kafka's Uuid.randomUuid: never start with "-", which a command line takes for an option
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _common_config(node: Node) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(node.data_dir),
        # sluice creates every topic it needs, as it must in production
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "log.segment.bytes": str(64 * 1024 * 1024),
        # no time retention: tests and benchmarks write records with fixed, old event times
        # (windows, replays), which time retention would delete mid-run, active segment included
        "log.retention.ms": "-1",
        "log.retention.bytes": str(2 * 1024**3),
        "num.network.threads": "3",
        "num.io.threads": "4",
        "socket.request.max.bytes": str(200 * 1024 * 1024),
    }


def _single_config(node: Node) -> dict[str, str]:
    cfg = _common_config(node)
    cfg.update(
        {
            "controller.quorum.bootstrap.servers": f"{HOST}:{node.controller_port}",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
        }
    )
    return cfg


def _cluster_config(node: Node) -> dict[str, str]:
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in cluster_nodes())
    cfg = _common_config(node)
    cfg.update(
        {
            "controller.quorum.voters": voters,
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
        }
    )
    return cfg


LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _write_config(node: Node, cfg: dict[str, str]) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    node.config_file.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
    (node.home / "log4j2.properties").write_text(LOG4J2)


def _format(node: Node, cluster_id: str, standalone: bool, extra: list[str] | None = None) -> None:
    if (node.data_dir / "meta.properties").exists():
        return
    args = [
        _java(),
        "-cp",
        f"{JARS}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(node.config_file),
    ]
    if standalone:
        args.append("--standalone")
    args.extend(extra or ())
    proc = subprocess.run(args, capture_output=True, text=True, env=_java_env(node))
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr).strip()[-2000:], file=sys.stderr)
        raise KafkaCtlError(
            f"formatting the storage of node {node.node_id} in {node.data_dir} failed (see above)"
        )


def _java_env(node: Node) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    env["LOG_DIR"] = str(node.home)
    return env


# --------------------------------------------------------------------------- processes


def _read_pid(node: Node) -> int | None:
    return read_pid(node.pid_file)


_alive = alive


def _port_open(port: int) -> bool:
    return port_open(HOST, port)


def _log_tail(node: Node, lines: int = 25) -> str:
    try:
        return "\n".join(node.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _launch(node: Node, heap: str) -> int:
    for port in (node.port, node.controller_port):
        if _port_open(port):
            raise KafkaCtlError(
                f"port {HOST}:{port} is already in use by another process (not a broker started by this script); "
                f"stop it, or set SLUICE_BROKER_PORT to another port"
            )
    env = _java_env(node)
    env["KAFKA_HEAP_OPTS"] = f"-Xmx{heap} -Xms{heap}"
    args = [
        _java(),
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={node.home}",
        "-cp",
        f"{JARS}/*",
        "kafka.Kafka",
        str(node.config_file),
    ]
    with open(node.log_file, "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    node.pid_file.write_text(str(proc.pid))
    return proc.pid


def _wait_ready(nodes: list[Node], timeout: float = START_TIMEOUT_S) -> None:
    """Wait until every node answers metadata and the group and transaction coordinators answer."""
    deadline = time.monotonic() + timeout
    _wait_metadata(nodes, deadline, timeout)
    _wait_coordinators(nodes, deadline, timeout)


def _wait_metadata(nodes: list[Node], deadline: float, timeout: float) -> None:
    """Wait until a metadata request through every node lists all the nodes."""
    from confluent_kafka.admin import AdminClient

    pending = list(nodes)
    while pending:
        node = pending[0]
        if _read_pid(node) is None:
            print(_log_tail(node), file=sys.stderr)
            raise KafkaCtlError(
                f"Kafka node {node.node_id} exited during startup (log: {node.log_file}; last lines above)"
            )
        if _port_open(node.port):
            admin = AdminClient(
                {"bootstrap.servers": node.bootstrap, "log_level": 0, "logger": _quiet_logger()}
            )
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) >= len(nodes):
                    pending.pop(0)
                    continue
            except Exception:  # noqa: BLE001 - not ready yet; the deadline bounds the wait
                pass
        if time.monotonic() > deadline:
            print(_log_tail(node), file=sys.stderr)
            raise KafkaCtlError(
                f"Kafka node {node.node_id} did not answer a metadata request within {timeout:.0f}s (log: {node.log_file})"
            )
        time.sleep(0.3)


def _wait_coordinators(nodes: list[Node], deadline: float, timeout: float) -> None:
    """Wait until a group coordinator answers ``committed()`` and an idempotent producer gets its PID.

    A broker that answers metadata may still be loading ``__consumer_offsets`` and
    ``__transaction_state``: clients then get NOT_COORDINATOR or "Coordinator load in
    progress". Only one record acknowledged by an idempotent producer (which needs a
    producer id from the transaction coordinator) and a ``committed()`` answered by the
    group coordinator prove that the first user of the broker will not meet them.
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = ",".join(n.bootstrap for n in nodes)
    quiet = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet_logger()}
    admin = AdminClient(quiet)
    last = "no answer yet"
    stage = "creating the readiness topic"
    while True:
        for node in nodes:
            if _read_pid(node) is None:
                print(_log_tail(node), file=sys.stderr)
                raise KafkaCtlError(
                    f"Kafka node {node.node_id} exited during startup (log: {node.log_file}; last lines above)"
                )
        left = deadline - time.monotonic()
        if left <= 0:
            for node in nodes:
                print(f"--- {node.log_file} (last lines)", file=sys.stderr)
                print(_log_tail(node, 25 if len(nodes) == 1 else 12), file=sys.stderr)
            raise KafkaCtlError(
                f"Kafka on {bootstrap} answers metadata but not as a group/transaction coordinator within "
                f"{timeout:.0f}s ({stage}: {last}); see the broker log lines above"
            )
        attempt = min(left, 5.0)
        try:
            stage = "creating the readiness topic"
            if READY_TOPIC not in admin.list_topics(timeout=attempt).topics:
                topic = NewTopic(READY_TOPIC, 1, min(3, len(nodes)))
                try:
                    admin.create_topics([topic])[READY_TOPIC].result(timeout=attempt)
                except KafkaException as exc:
                    if "already exists" not in str(exc).lower():
                        raise
            stage = "an idempotent producer acquiring its producer id"
            producer = Producer(
                {**quiet, "enable.idempotence": True, "message.timeout.ms": int(attempt * 1000)}
            )
            delivered: list[str | None] = []
            producer.produce(
                READY_TOPIC,
                b"ready",
                on_delivery=lambda err, _m, out=delivered: out.append(err and err.str()),
            )
            producer.flush(attempt)
            if delivered != [None]:
                last = (delivered or ["no acknowledgement yet"])[0]
                time.sleep(0.3)
                continue
            stage = "the group coordinator answering committed()"
            consumer = Consumer({**quiet, "group.id": "kafkactl-ready", "enable.auto.commit": False})
            try:
                consumer.committed([TopicPartition(READY_TOPIC, 0)], timeout=attempt)
            finally:
                consumer.close()
            return
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        time.sleep(0.3)


def _quiet_logger():
    import logging

    logger = logging.getLogger("kafkactl.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _stop(node: Node, timeout: float = 30.0) -> None:
    pid = _read_pid(node)
    if pid is None:
        node.pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    node.pid_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------- commands


def up() -> str:
    """Start the single-node broker (or reuse the running one); return its bootstrap address."""
    node = single_node()
    if _read_pid(node) is not None:
        _wait_ready([node])
        return node.bootstrap
    fetch()
    _java()
    if node.home.exists():
        shutil.rmtree(node.home)
    _write_config(node, _single_config(node))
    _format(node, _kafka_uuid(), standalone=True)
    _launch(node, heap="1g")
    _wait_ready([node])
    return node.bootstrap


def down() -> None:
    node = single_node()
    _stop(node)
    shutil.rmtree(node.home, ignore_errors=True)


def cluster_up() -> str:
    """Start the 3-node cluster (or reuse it); return its bootstrap list."""
    nodes = cluster_nodes()
    if all(_read_pid(n) is not None for n in nodes):
        _wait_ready(nodes)
        return cluster_bootstrap()
    cluster_down()
    fetch()
    _java()
    cluster_id = _kafka_uuid()
    for node in nodes:
        _write_config(node, _cluster_config(node))
        _format(node, cluster_id, standalone=False)
    for node in nodes:
        _launch(node, heap="512m")
    _wait_ready(nodes)
    return cluster_bootstrap()


def cluster_down() -> None:
    for node in cluster_nodes():
        _stop(node)
    shutil.rmtree(STATE / "cluster", ignore_errors=True)


def kill_node(node_id: int) -> int:
    """kill -9 one cluster node by its recorded pid; return that pid."""
    node = cluster_nodes()[node_id - 1]
    pid = _read_pid(node)
    if pid is None:
        raise KafkaCtlError(f"cluster node {node_id} is not running")
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    return pid


def start_node(node_id: int) -> None:
    """Restart one cluster node on its existing data, and wait until it is back."""
    nodes = cluster_nodes()
    node = nodes[node_id - 1]
    if _read_pid(node) is None:
        _launch(node, heap="512m")
    _wait_ready([node] + [n for n in nodes if n is not node])


# --------------------------------------------------------------------------- the secured broker


def secure_node() -> Node:
    return Node(1, SECURE_PORT, SECURE_CONTROLLER_PORT, STATE / "secure")


def secure_client_file() -> Path:
    """The ready client file of the secured broker (bootstrap.servers, SASL and TLS settings)."""
    return secure_node().home / "client.properties"


def _openssl(args: list[str], cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise KafkaCtlError(
            "openssl is not installed: it makes the secured broker's certificates (apt-get install openssl)"
        )
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KafkaCtlError(
            f"openssl {args[0]} failed making the test certificates: {proc.stderr.strip()[-500:]}"
        )


def _make_tls(home: Path, store_password: str) -> None:
    """A throwaway CA and a broker certificate for 127.0.0.1/localhost, signed by it, in a PKCS#12 keystore."""
    tls = home / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    days = "3650"
    _openssl(
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            days,
            "-subj",
            "/CN=sluice test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        tls,
    )
    _openssl(
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
            "-subj",
            f"/CN={HOST}",
        ],
        tls,
    )
    # librdkafka and the JVM check the broker's name against the subject alternative names
    (tls / "broker.ext").write_text(
        f"subjectAltName=IP:{HOST},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        [
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            days,
            "-extfile",
            "broker.ext",
        ],
        tls,
    )
    _openssl(
        [
            "pkcs12",
            "-export",
            "-in",
            "broker.pem",
            "-inkey",
            "broker.key",
            "-certfile",
            "ca.pem",
            "-name",
            "broker",
            "-out",
            "broker.p12",
            "-passout",
            f"pass:{store_password}",
        ],
        tls,
    )
    for name in ("ca.key", "broker.key", "broker.csr"):
        (tls / name).chmod(0o600)


def _scram_jaas(user: str, password: str) -> str:
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def _secure_config(node: Node, store_password: str, admin_password: str) -> dict[str, str]:
    tls = node.home / "tls"
    cfg = _single_config(node)
    cfg.update(
        {
            "listeners": f"SASL_SSL://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"SASL_SSL://{HOST}:{node.port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SECURE_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SECURE_MECHANISM,
            f"listener.name.sasl_ssl.{SECURE_MECHANISM.lower()}.sasl.jaas.config": _scram_jaas(
                "admin", admin_password
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls / "broker.p12"),
            "ssl.keystore.password": store_password,
            "ssl.key.password": store_password,
            # the broker is a client of itself between its listeners: it trusts the same CA
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls / "ca.pem"),
            "ssl.client.auth": "none",
        }
    )
    return cfg


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def _wait_secure_ready(node: Node, client: dict[str, str], timeout: float = START_TIMEOUT_S) -> None:
    """Wait until an authenticated metadata request over TLS succeeds."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if _read_pid(node) is None:
            print(_log_tail(node), file=sys.stderr)
            raise KafkaCtlError(
                f"the secured Kafka broker exited during startup (log: {node.log_file}; last lines above)"
            )
        if _port_open(node.port):
            admin = AdminClient({**client, "log_level": 0, "logger": _quiet_logger()})
            try:
                if admin.list_topics(timeout=3).brokers:
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet; the deadline bounds the wait
                last = str(exc)
        if time.monotonic() > deadline:
            print(_log_tail(node), file=sys.stderr)
            raise KafkaCtlError(
                f"the secured Kafka broker on {node.bootstrap} did not answer an authenticated metadata request "
                f"within {timeout:.0f}s ({last}; log: {node.log_file})"
            )
        time.sleep(0.5)


def secure_up() -> Path:
    """Start the SASL_SSL broker (or reuse the running one); return its client properties file.

    A new CA, broker certificate and SCRAM passwords are made at every fresh start.
    """
    node = secure_node()
    client_file = secure_client_file()
    if _read_pid(node) is not None and client_file.exists():
        _wait_secure_ready(node, _read_properties(client_file))
        return client_file
    _stop(node)
    fetch()
    _java()
    if node.home.exists():
        shutil.rmtree(node.home)
    node.home.mkdir(parents=True)
    node.home.chmod(0o700)
    store_password, admin_password, user_password = (secrets.token_hex(12) for _ in range(3))
    _make_tls(node.home, store_password)
    _write_config(node, _secure_config(node, store_password, admin_password))
    node.config_file.chmod(0o600)
    # SCRAM credentials are written into the cluster metadata at format time (KIP-900), so the
    # broker can authenticate to itself before any admin request could create them
    _format(
        node,
        _kafka_uuid(),
        standalone=True,
        extra=[
            "--add-scram",
            f"{SECURE_MECHANISM}=[name=admin,password={admin_password}]",
            "--add-scram",
            f"{SECURE_MECHANISM}=[name={SECURE_USER},password={user_password}]",
        ],
    )
    client = {
        "bootstrap.servers": node.bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SECURE_MECHANISM,
        "sasl.username": SECURE_USER,
        "sasl.password": user_password,
        "ssl.ca.location": str(node.home / "tls" / "ca.pem"),
    }
    client_file.write_text(
        "# sluice's secured test broker (make secure-broker-up): SASL_SSL, SCRAM-SHA-512 over TLS\n"
        + "".join(f"{k}={v}\n" for k, v in client.items())
    )
    client_file.chmod(0o600)
    _launch(node, heap="512m")
    _wait_secure_ready(node, client)
    return client_file


def secure_down() -> None:
    node = secure_node()
    _stop(node)
    shutil.rmtree(node.home, ignore_errors=True)


def status() -> str:
    lines = []
    for node in [single_node(), *cluster_nodes(), secure_node()]:
        pid = _read_pid(node)
        state = f"running (pid {pid})" if pid else "stopped"
        lines.append(f"node {node.node_id} {node.home.relative_to(STATE)} {node.bootstrap}: {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafkactl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("fetch", "up", "down", "cluster-up", "cluster-down", "secure-up", "secure-down", "status"):
        sub.add_parser(name)
    for name in ("kill-node", "start-node"):
        sub.add_parser(name).add_argument("node", type=int, choices=(1, 2, 3))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            fetch()
        elif args.cmd == "up":
            print(f"Kafka broker ready on {up()}")
        elif args.cmd == "down":
            down()
            print("Kafka broker stopped")
        elif args.cmd == "cluster-up":
            print(f"Kafka cluster ready on {cluster_up()}")
        elif args.cmd == "cluster-down":
            cluster_down()
            print("Kafka cluster stopped")
        elif args.cmd == "kill-node":
            print(f"killed node {args.node} (pid {kill_node(args.node)})")
        elif args.cmd == "start-node":
            start_node(args.node)
            print(f"node {args.node} is back")
        elif args.cmd == "secure-up":
            client_file = secure_up()
            print(
                f"secured Kafka broker (SASL_SSL, {SECURE_MECHANISM}) ready on {secure_node().bootstrap}; client file: {client_file}"
            )
        elif args.cmd == "secure-down":
            secure_down()
            print("secured Kafka broker stopped")
        elif args.cmd == "status":
            print(status())
    except KafkaCtlError as exc:
        print(f"kafkactl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
