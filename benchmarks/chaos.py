"""Chaos suite: the faults of issue 15 and the kill -9 ones, provoked for real on the 3-node cluster.

Each scenario runs a stateless app (``map`` + ``to``) as ``sluice run`` processes on a
4-partition input (replication 3, ``min.insync.replicas=2``) fed at a steady rate with 1%
poison records (malformed JSON: they belong in the dead-letter topic), injects its
faults (kill -9 of a worker or broker, SIGSTOP past the session timeout, two brokers
down longer than ``message.timeout.ms``, slow handlers, oversized outputs, revokes with
parallel work queued, refused outputs of parked records), then waits, bounded in time,
until the group has committed the whole input. It reads the output (``read_committed``
for exactly-once) and the dead-letter topic and prints a table:

- lost: inputs in neither the output nor the DLQ;
- duplicated: output records beyond one per input (exactly-once must have 0);
- wrongly dead-lettered: a DLQ record that is neither poison nor meant to fail (an
  oversized output, a record whose output is refused);
- stalled: the group had not committed the whole input when the scenario's time ran out;
- time to recover: from the end of the last fault until the group's lag is back under
  one second of input.

Usage (``make chaos`` starts the cluster first):
    python -m benchmarks.chaos                       # every scenario, writes benchmarks/results/chaos-<date>.md
    python -m benchmarks.chaos --only kill9-worker,broker-outage --no-save
    python -m benchmarks.chaos --out benchmarks/results/chaos-2026-12-01-before.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PARTITIONS = 4
POISON_EVERY, POISON_AT = 100, 37  # 1%: ids with i % 100 == 37 are malformed JSON
#: the suite's own clients: their connection errors while brokers are down are the point, not news
QUIET = {"log_level": 0}


def _load_kafkactl():
    spec = importlib.util.spec_from_file_location("kafkactl", ROOT / "tools" / "kafka" / "kafkactl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafkactl"] = module
    spec.loader.exec_module(module)
    return module


kafkactl = _load_kafkactl()

APP = """
import dataclasses
import time
from sluice import App

app = App(
    {group!r},
    brokers={brokers!r},
    guarantee={guarantee!r},
    progress_interval="5s",
    max_poll_records={max_poll_records},
    max_in_flight={max_in_flight},
    concurrency={concurrency},
    consumer_config={consumer!r},
    producer_config={producer!r},
    **{extra!r},
)
app.on_error(retries={retries}, **{on_error!r})
SLEEP, FAIL_FRESH, BIG = {sleep!r}, {fail_fresh!r}, {big!r}


def handle(e):
    if SLEEP:
        time.sleep(SLEEP)
    i = e["id"]
    # fails while fresh (its first attempt), succeeds when retried later
    if FAIL_FRESH and i % FAIL_FRESH == 0 and time.time() < e["born"] + 2:
        raise ConnectionError(f"service unavailable for {{i}}")
    if BIG and i % BIG == 0:
        return {{"id": i, "pad": "x" * 200_000}}  # larger than the output topic takes
    return {{"id": i}}


{tweaks}
app.stream({src!r}).map(handle).to({out!r})
"""


# --------------------------------------------------------------------------- processes and brokers
class Worker:
    """One ``sluice run`` process."""

    def __init__(self, folder: Path, module: str, index: int) -> None:
        self.log_path = folder / f"worker-{index}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "run", f"{module}:app"],
            cwd=folder,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": f"{folder}:{ROOT}"},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int | None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        finally:
            self._log.close()


def kill_broker(node_id: int) -> None:
    kafkactl.kill_node(node_id)


def restart_brokers(node_ids: list[int]) -> None:
    nodes = kafkactl.cluster_nodes()
    for node_id in node_ids:
        if kafkactl._read_pid(nodes[node_id - 1]) is None:
            kafkactl._launch(nodes[node_id - 1], heap="512m")
    kafkactl._wait_ready(nodes)


# --------------------------------------------------------------------------- scenarios
@dataclass
class Context:
    """What a fault script may do: start and signal workers, stop brokers, mark the fault's end."""

    folder: Path
    module: str
    started: float
    workers: list[Worker] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    fault_end: float | None = None

    def start_worker(self) -> Worker:
        worker = Worker(self.folder, self.module, len(self.workers))
        self.workers.append(worker)
        return worker

    def at(self, second: float) -> None:
        """Sleep until ``second`` seconds after the input began."""
        time.sleep(max(0.0, self.started + second - time.monotonic()))

    def fault(self, what: str) -> None:
        self.faults.append(what)

    def recovered_from_here(self) -> None:
        self.fault_end = time.monotonic()


@dataclass
class Scenario:
    name: str
    guarantee: str
    faults: Callable[[Context], None]
    workers: int = 1
    seconds: float = 30.0
    rate: int = 100  # records per second; 0: the whole input at once
    records: int | None = None  # with rate 0
    sleep: float = 0.0
    fail_fresh: int = 0
    big: int = 0  # every big-th output is larger than the output topic takes
    retry_topics: list[str] | None = None
    out_config: dict = field(default_factory=dict)
    concurrency: int = 1
    max_poll_records: int = 500
    max_in_flight: int = 20_000
    consumer: dict = field(default_factory=dict)
    producer: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    #: runtime options App does not take as keywords (e.g. ``revoke_timeout``)
    options: dict = field(default_factory=dict)
    timeout: float = 75.0  # after the input and the faults ended, for the group to commit it all

    def meant_to_fail(self, i: int) -> bool:
        """Records that belong in the DLQ: poison, and outputs the output topic refuses."""
        return i % POISON_EVERY == POISON_AT or bool(self.big and i % self.big == 0)


def _kill9_worker(ctx: Context) -> None:
    ctx.at(8)
    ctx.workers[0].kill9()
    ctx.fault("kill -9 worker")
    ctx.at(14)
    ctx.start_worker()
    ctx.fault("restart it")
    ctx.recovered_from_here()


def _join_leave(ctx: Context) -> None:
    ctx.at(6)
    ctx.start_worker()
    ctx.fault("worker joins")
    ctx.at(14)
    ctx.workers[0].terminate()
    ctx.fault("worker leaves (SIGTERM)")
    ctx.recovered_from_here()


def _kill9_broker(ctx: Context) -> None:
    ctx.at(8)
    kill_broker(2)
    ctx.fault("kill -9 broker 2 for 10 s")
    ctx.at(18)
    restart_brokers([2])
    ctx.recovered_from_here()


def _broker_outage(ctx: Context) -> None:
    ctx.at(8)
    kill_broker(2)
    kill_broker(3)
    ctx.fault("kill -9 brokers 2 and 3 for 20 s (> message.timeout.ms 10 s)")
    ctx.at(28)
    restart_brokers([2, 3])
    ctx.recovered_from_here()


def _long_outage(ctx: Context) -> None:
    ctx.at(8)
    kill_broker(2)
    kill_broker(3)
    ctx.fault("kill -9 brokers 2 and 3 for 45 s (> transaction.timeout.ms 30 s)")
    ctx.at(53)
    restart_brokers([2, 3])
    ctx.recovered_from_here()


def _lost_assignment(ctx: Context) -> None:
    ctx.at(6)
    ctx.workers[0].signal(signal.SIGSTOP)
    ctx.start_worker()
    ctx.fault("SIGSTOP worker 10 s (> session.timeout.ms 6 s), records parked")
    ctx.at(16)
    ctx.workers[0].signal(signal.SIGCONT)
    ctx.at(22)
    ctx.workers[0].terminate()
    ctx.fault("worker leaves (SIGTERM)")
    ctx.recovered_from_here()


def _slow_handler(ctx: Context) -> None:
    ctx.fault("200 ms/record, 1,000-record polls, max.poll.interval.ms 10 s")


def _oversized(ctx: Context) -> None:
    ctx.fault("2% of outputs above the output topic's max.message.bytes")


def _parallel_revoke(ctx: Context) -> None:
    ctx.at(6)
    ctx.start_worker()
    ctx.fault("worker joins (revoke with queued work)")
    ctx.at(16)
    ctx.workers[-1].terminate()
    ctx.fault("worker leaves (SIGTERM)")
    ctx.recovered_from_here()


def _retry_refused(ctx: Context) -> None:
    ctx.fault("5% parked in retry topics; 2.5% refused by the output topic after their retry")


SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
SMALL_OUTPUT = {"max.message.bytes": "100000"}


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for guarantee in ("at_least_once", "exactly_once"):
        tag = "" if guarantee == "at_least_once" else "-eos"
        out += [
            Scenario(f"kill9-worker{tag}", guarantee, _kill9_worker, workers=2),
            Scenario(f"join-leave{tag}", guarantee, _join_leave),
            Scenario(f"kill9-broker{tag}", guarantee, _kill9_broker),
            Scenario(
                f"broker-outage{tag}",
                guarantee,
                _broker_outage,
                producer={"message.timeout.ms": 10_000, "request.timeout.ms": 5_000},
            ),
        ]
    out += [
        Scenario(
            "lost-assignment",
            "at_least_once",
            _lost_assignment,
            fail_fresh=10,
            # parked records are not due yet when the partitions move back and forth
            retry_topics=["15s"],
            consumer=SESSION,
            max_poll_records=50,
        ),
        Scenario(
            "slow-handler",
            "at_least_once",
            _slow_handler,
            rate=0,
            records=150,
            sleep=0.2,
            max_poll_records=1000,
            consumer={"max.poll.interval.ms": 10_000, "session.timeout.ms": 10_000},
            timeout=75,
        ),
        Scenario("oversized", "at_least_once", _oversized, big=50, out_config=SMALL_OUTPUT),
        *(
            Scenario(
                f"parallel-revoke-{ordering}",
                "at_least_once",
                _parallel_revoke,
                rate=80,  # more than one worker takes (40/s): work queues up to max_in_flight
                concurrency=2,
                sleep=0.05,
                max_in_flight=200,
                max_poll_records=100,
                extra={"ordering": ordering},
                # queued work of revoked partitions is given up after 2 s (not 20 s): it is dropped
                options={"revoke_timeout": 2.0},
            )
            for ordering in ("key", "partition")
        ),
        Scenario(
            "retry-refused",
            "at_least_once",
            _retry_refused,
            fail_fresh=20,
            big=40,
            retry_topics=["1s", "2s"],
            out_config=SMALL_OUTPUT,
        ),
        Scenario("oversized-eos", "exactly_once", _oversized, big=50, out_config=SMALL_OUTPUT),
        Scenario(
            "long-outage-eos",
            "exactly_once",
            _long_outage,
            producer={"message.timeout.ms": 10_000, "request.timeout.ms": 5_000},
            timeout=120,
        ),
    ]
    return out


# --------------------------------------------------------------------------- Kafka helpers
def _admin(brokers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": brokers, **QUIET})


def _create(brokers: str, name: str, config: dict | None = None) -> None:
    admin = _admin(brokers)
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 3, config=config or {})])
    futures[name].result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=10).topics.get(name)
        if md and md.error is None and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    msg = f"topic {name} has no leader for every partition after 60s"
    raise TimeoutError(msg)


def _delete(brokers: str, names: list[str]) -> None:
    admin = _admin(brokers)
    existing = set(admin.list_topics(timeout=10).topics)
    names = [n for n in names if n in existing]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=60)


def _lag(brokers: str, group: str, topics: list[str]) -> int | None:
    """Records of ``topics`` not committed by ``group`` yet (None when the cluster does not answer)."""
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False, **QUIET}
    )
    try:
        existing = consumer.list_topics(timeout=5).topics
        parts = [TopicPartition(t, p) for t in topics if t in existing for p in existing[t].partitions]
        committed = consumer.committed(parts, timeout=5)
        total = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            total += high - max(tp.offset, 0)
        return total
    except Exception:  # noqa: BLE001 - brokers down mid-scenario: no sample
        return None
    finally:
        consumer.close()


def _read(brokers: str, topic: str, committed_only: bool, idle: float = 3.0, timeout: float = 90.0) -> list:
    """(key, value) of every record of ``topic``, read until ``idle`` seconds pass without one."""
    admin = _admin(brokers)
    if topic not in admin.list_topics(timeout=10).topics:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"chaos-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
            **QUIET,
        }
    )
    md = admin.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list = []
    last = time.monotonic()
    deadline = last + timeout
    try:
        while time.monotonic() < deadline and time.monotonic() - last < idle:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is None:
                    out.append((msg.key(), msg.value()))
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


def _feed(brokers: str, topic: str, scenario: Scenario, stop: threading.Event, produced: list[int]) -> None:
    """The input: steady at ``rate`` per second for ``seconds`` (or all at once), 1% poison."""
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 300_000,  # kept through broker outages
            **QUIET,
        }
    )

    def send(i: int) -> None:
        if i % POISON_EVERY == POISON_AT:
            value = b'{"id": %d, "born": oops' % i
        else:
            value = orjson.dumps({"id": i, "born": time.time()})
        while True:
            try:
                producer.produce(topic, value, str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
        produced.append(i)

    if scenario.rate == 0:
        for i in range(scenario.records or 0):
            send(i)
    else:
        started = time.monotonic()
        i = 0
        total = int(scenario.rate * scenario.seconds)
        while i < total and not stop.is_set():
            due = started + i / scenario.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.1))
                continue
            send(i)
            i += 1
            producer.poll(0)
    producer.flush(300)


# --------------------------------------------------------------------------- one scenario
@dataclass
class Outcome:
    name: str
    guarantee: str
    records: int
    faults: str
    lost: int
    duplicated: int
    wrongly_dead: int
    stalled: bool
    recover_s: float | None  # None: never (stalled), or no fault with an end to recover from
    timed: bool = True
    notes: str = ""

    @property
    def ok(self) -> bool:
        clean = self.lost == 0 and self.wrongly_dead == 0 and not self.stalled
        return clean and (self.guarantee != "exactly_once" or self.duplicated == 0)


def run_scenario(scenario: Scenario, brokers: str, folder: Path, logs: Path | None = None) -> Outcome:
    tag = uuid.uuid4().hex[:6]
    group = f"chaos-{scenario.name}-{tag}"
    src, out = f"{group}-in", f"{group}-out"
    dlq = f"{group}.dlq"
    retries = [f"{group}.retry.{n}" for n in range(1, len(scenario.retry_topics or []) + 1)]
    _create(brokers, src)
    _create(brokers, out, scenario.out_config)
    on_error = {"retry_topics": scenario.retry_topics} if scenario.retry_topics else {}
    extra = dict(scenario.extra)
    if scenario.guarantee == "at_least_once":
        extra.setdefault("commit_interval", "200ms")
    source = APP.format(
        group=group,
        brokers=brokers,
        guarantee=scenario.guarantee,
        max_poll_records=scenario.max_poll_records,
        max_in_flight=scenario.max_in_flight,
        concurrency=scenario.concurrency,
        consumer=scenario.consumer,
        producer=scenario.producer,
        extra=extra,
        retries=0 if scenario.retry_topics else 1,
        on_error=on_error,
        sleep=scenario.sleep,
        fail_fresh=scenario.fail_fresh,
        big=scenario.big,
        src=src,
        out=out,
        tweaks=f"app.options = dataclasses.replace(app.options, **{scenario.options!r})"
        if scenario.options
        else "",
    )
    module = f"chaos_{scenario.name.replace('-', '_')}_{tag}"
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    ctx = Context(folder, module, time.monotonic())
    notes: list[str] = []
    samples: list[tuple[float, int]] = []
    produced: list[int] = []
    stop = threading.Event()
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            lag = _lag(brokers, group, [src, *retries])
            if lag is not None:
                samples.append((time.monotonic(), lag))
            sampling.wait(0.5)

    try:
        for _ in range(scenario.workers):
            ctx.start_worker()
        deadline = time.monotonic() + 60
        while not any("assigned" in w.log() for w in ctx.workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        feeder = threading.Thread(target=_feed, args=(brokers, src, scenario, stop, produced), daemon=True)
        sampler = threading.Thread(target=sample, daemon=True)
        ctx.started = time.monotonic()
        feeder.start()
        sampler.start()
        try:
            scenario.faults(ctx)
        finally:
            restart_brokers([1, 2, 3])  # whatever a failed script left down
        feeder.join(scenario.seconds + 300)
        end = time.monotonic() + scenario.timeout
        stalled = True
        while time.monotonic() < end:
            if samples and samples[-1][1] == 0 and samples[-1][0] > ctx.started + scenario.seconds:
                stalled = False
                break
            if not any(w.alive() for w in ctx.workers):
                notes.append("every worker exited")
                break
            time.sleep(1)
        threshold = max(50, scenario.rate)
        recover = (
            None
            if stalled or ctx.fault_end is None
            # no sample after the fault's end: the lag was back to 0 before it (a broker restart
            # that takes longer than the input): nothing left to recover
            else next(
                (t - ctx.fault_end for t, lag in samples if t >= ctx.fault_end and lag <= threshold), 0.0
            )
        )
    finally:
        stop.set()
        sampling.set()
        for worker in ctx.workers:
            if worker.alive():
                worker.terminate()
    for worker in ctx.workers:
        if worker.proc.returncode not in (0, None, -signal.SIGKILL):
            lines = worker.log().splitlines()
            said = [line for line in lines if line.startswith("sluice: error") or "Error:" in line[:80]]
            last = (said or lines or [""])[-1]
            notes.append(f"a worker exited with {worker.proc.returncode}: {last[:200]}")
    if samples and samples[-1][1]:
        notes.append(f"lag {samples[-1][1]} at the end")
    exactly_once = scenario.guarantee == "exactly_once"
    outputs = [orjson.loads(v)["id"] for _k, v in _read(brokers, out, committed_only=exactly_once)]
    dead = [int(k) for k, _v in _read(brokers, dlq, committed_only=exactly_once) if k is not None]
    expected = set(produced)
    seen = set(outputs) | set(dead)
    wrongly = {i for i in dead if not scenario.meant_to_fail(i)}
    _delete(brokers, [src, out, dlq, *retries])
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        for n, worker in enumerate(ctx.workers):
            (logs / f"{scenario.name}-worker-{n}.log").write_bytes(worker.log_path.read_bytes())
    return Outcome(
        name=scenario.name,
        guarantee=scenario.guarantee,
        records=len(expected),
        faults="; ".join(ctx.faults),
        lost=len(expected - seen),
        duplicated=len(outputs) - len(set(outputs)),
        wrongly_dead=len(wrongly),
        stalled=stalled,
        recover_s=recover,
        timed=ctx.fault_end is not None,
        notes="; ".join(notes),
    )


# --------------------------------------------------------------------------- report
def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| scenario | guarantee | records | faults injected | lost | duplicated | wrongly dead-lettered "
        "| stalled | time to recover | verdict |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for o in outcomes:
        recover = (
            f"{o.recover_s:.1f} s" if o.recover_s is not None else "-" if o.timed or o.stalled else "n/a"
        )
        verdict = "ok" if o.ok else "FAIL"
        if o.notes:
            verdict += f" ({o.notes})"
        rows.append(
            f"| {o.name} | {o.guarantee} | {o.records} | {o.faults} | {o.lost} | {o.duplicated} "
            f"| {o.wrongly_dead} | {'yes' if o.stalled else 'no'} | {recover} | {verdict} |"
        )
    return "\n".join(rows)


def report(outcomes: list[Outcome], command: str, started: dt.datetime, seconds: float) -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    passed = sum(o.ok for o in outcomes)
    return (
        textwrap.dedent(
            f"""\
        # Chaos suite, {started:%Y-%m-%d %H:%M} UTC

        `{command}` on commit `{commit}`, {platform.machine()} with {os.cpu_count()} cores,
        Python {platform.python_version()}, confluent-kafka {confluent_kafka.__version__}
        (librdkafka {confluent_kafka.libversion()[0]}), the 3-node KRaft cluster of
        `make cluster-up` (replication 3, min.insync.replicas 2). {seconds:.0f} s in all.

        Every input has 1% poison records (malformed JSON) that belong in the DLQ.
        At-least-once passes with 0 lost, 0 wrongly dead-lettered and no stall;
        exactly-once also needs 0 duplicated in `read_committed` outputs.
        **{passed} of {len(outcomes)} scenarios pass.**

        """
        )
        + table(outcomes)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--brokers", default=os.environ.get("SLUICE_CHAOS_BROKERS") or kafkactl.cluster_bootstrap()
    )
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument(
        "--out", type=Path, default=None, help="the report (default: results/chaos-<date>.md)"
    )
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--note", default="", help="a paragraph added under the table (e.g. what else ran)")
    parser.add_argument("--logs", type=Path, default=None, help="copy every worker's log into this folder")
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios() if not args.only or s.name in args.only.split(",")]
    if not chosen:
        names = ", ".join(s.name for s in scenarios())
        parser.error(f"no scenario named {args.only!r}; choose among {names}")
    started = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="sluice-chaos-") as tmp:
        for scenario in chosen:
            print(f"{scenario.name} ({scenario.guarantee}) ...", flush=True)
            t0 = time.monotonic()
            outcome = run_scenario(scenario, args.brokers, Path(tmp), args.logs)
            outcomes.append(outcome)
            print(
                f"  {'ok' if outcome.ok else 'FAIL'} in {time.monotonic() - t0:.0f} s: {outcome}", flush=True
            )
    print()
    print(table(outcomes))
    if not args.no_save:
        path = args.out or RESULTS / f"chaos-{started:%Y-%m-%d}.md"
        command = "python -m benchmarks.chaos " + " ".join(sys.argv[1:] if argv is None else argv)
        text = report(outcomes, command.strip(), started, time.monotonic() - began)
        path.write_text(text + (f"\n{args.note}\n" if args.note else ""))
        print(f"\nwritten to {path}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
