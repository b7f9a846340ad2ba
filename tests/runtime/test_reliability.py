"""Faults production meets (issue 15): each test provokes one for real and checks nothing is lost.

Lost assignments (a worker stopped past its session), brokers away longer than the
producer's message timeout, handlers slower than ``max.poll.interval.ms``, records
larger than a topic takes, revokes with parallel work queued, and retry topics whose
outputs are refused. Every test fails on the runtime before issue 15's fixes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import orjson
import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from sluice import App
from tests.apps import AppProcess, running, wait_for, write_app

#: the header a dead letter carries when its value was cut to fit the dead-letter topic;
#: its value is the original value's size in bytes (the kept value is a prefix of it)
TRUNCATED_HEADER = "sluice.error.truncated"


def _ids(records) -> list[int]:
    return [orjson.loads(r.value)["id"] for r in records]


def _headers(record) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in record.headers if k.startswith("sluice.")}


def _committed_total(kafka, group: str, topic: str, partitions: int) -> int:
    return sum(max(o, 0) for o in kafka.committed(group, topic, partitions).values())


def _topic_config(kafka, topic: str, name: str) -> int:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = kafka.admin.describe_configs([resource])[resource].result(timeout=15)
    return int(configs[name].value)


def _wait_complete(collect: Callable[[], set[int]], expected: set[int], timeout: float) -> set[int]:
    """Collect until every expected id was seen or ``timeout``; return what was seen."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = collect()
        if expected <= seen:
            break
        time.sleep(1.0)
    return seen


# --------------------------------------------------------------------------- 1. lost assignment
LOST_APP = """
import time
from sluice import App

app = App(
    {group!r},
    brokers={bootstrap!r},
    commit_interval="200ms",
    max_poll_records=50,
    progress_interval="2s",
    consumer_config={{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}},
)
app.on_error(retries=0, retry_topics=["15s"])


def fresh_fails(e):
    # a record fails while it is fresh (its first attempt) and succeeds from the retry topic
    if e["id"] % 4 == 0 and time.time() < e["born"] + 2:
        raise ConnectionError(f"service unavailable for {{e['id']}}")
    return e


app.stream({src!r}).map(fresh_fails).to({out!r})
"""


def test_lost_assignment_with_records_parked_in_a_retry_topic_loses_nothing(kafka, topic_factory, tmp_path):
    """Issue 15 item 1 (lost assignment): a worker SIGSTOPped past session.timeout.ms while records wait in a
    retry topic, then SIGCONT with a second worker running (partitions lost, handed over, handed back
    when the first worker leaves): every input ends in the output or the DLQ."""
    src, out = topic_factory(partitions=4), topic_factory(partitions=4)
    group = f"lost-{uuid.uuid4().hex[:8]}"
    retry, dlq = f"{group}.retry.1", f"{group}.dlq"
    kafka.created += [retry, dlq]
    module = write_app(
        tmp_path, "lost_app", LOST_APP.format(group=group, bootstrap=kafka.bootstrap, src=src, out=out)
    )
    produced: list[int] = []
    stop_producing = threading.Event()

    def produce_steadily() -> None:
        # 10 records every 0.5 s for ~25 s: traffic before, during and after the stop
        i = 0
        while not stop_producing.is_set() and i < 500:
            batch = [(f"key-{j}", orjson.dumps({"id": j, "born": time.time()})) for j in range(i, i + 10)]
            kafka.produce(src, batch)
            produced.extend(range(i, i + 10))
            i += 10
            time.sleep(0.5)

    first = AppProcess(tmp_path, module, log_name="first.log")
    second: AppProcess | None = None
    producer = threading.Thread(target=produce_steadily, daemon=True)
    try:
        wait_for(lambda: "assigned" in first.log(), 30, what="the first worker to get partitions")
        producer.start()
        started = time.monotonic()
        wait_for(
            lambda: (
                sum(kafka.end_offsets(retry, 4).values()) >= 8
                if retry in kafka.admin.list_topics(timeout=5).topics
                else False
            ),
            30,
            what="records parked in the retry topic",
        )
        time.sleep(1)  # the worker reads them back, not due yet: it pauses their partitions
        os.kill(first.pid, signal.SIGSTOP)
        second = AppProcess(tmp_path, module, log_name="second.log")
        time.sleep(9)  # past session.timeout.ms=6000: the group evicts the stopped worker
        os.kill(first.pid, signal.SIGCONT)
        wait_for(
            lambda: first.log().count("assigned ") - first.log().count("assigned nothing") >= 2,
            30,
            what="the first worker to get partitions again after losing them",
        )
        time.sleep(3)
        # the first worker leaves: the second one gets back what it handed over (retry partitions
        # it had paused, records not due yet) and must take them up again
        assert first.terminate() == 0, first.log()[-3000:]
        time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        stop_producing.set()
        producer.join(30)
        expected = set(produced)

        def seen() -> set[int]:
            return set(_ids(kafka.drain(out, idle=1, timeout=20))) | set(
                _ids(kafka.drain(dlq, idle=1, timeout=5))
                if dlq in kafka.admin.list_topics(timeout=5).topics
                else []
            )

        got = _wait_complete(seen, expected, timeout=40)
        assert second.proc.poll() is None, f"the second worker died:\n{second.log()[-3000:]}"
    finally:
        stop_producing.set()
        for proc in (first, second):
            if proc is not None and proc.proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
    missing = sorted(expected - got)
    assert not missing, (
        f"{len(missing)} of {len(expected)} inputs are in neither the output nor the DLQ after a lost "
        f"assignment (retry partitions skipped, or left paused?): {missing[:20]}"
    )


# --------------------------------------------------------------------------- 2. transient produce failures
def _create_placed(kafka, name: str, replicas: list[int], config: dict | None = None) -> str:
    """A one-partition topic whose replicas (leader first) sit on the given nodes."""
    futures = kafka.admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=1,
                replication_factor=-1,
                replica_assignment=[replicas],
                config=config or {},
            )
        ]
    )
    futures[name].result(timeout=30)
    kafka._wait_for_leaders(name, 1)
    kafka.created.append(name)
    return name


@pytest.mark.cluster
def test_outputs_refused_while_two_brokers_are_down_are_redelivered_not_dead_lettered(cluster):
    """Issue 15 item 2 (transient produce failures): two of three brokers down longer than message.timeout.ms
    with traffic in flight: the DLQ stays empty, every output arrives, no offset is committed past
    an undelivered output."""
    kafka = cluster.kafka
    n = 1500
    tag = uuid.uuid4().hex[:8]
    # the source and the DLQ live on node 1 alone, which stays up: a dead letter can be written
    # during the outage, so an output wrongly dead-lettered shows; the output needs 2 in-sync replicas
    src = _create_placed(kafka, f"src-{tag}", [1], {"min.insync.replicas": "1"})
    dlq = _create_placed(kafka, f"dlq-{tag}", [1], {"min.insync.replicas": "1"})
    out = _create_placed(kafka, f"out-{tag}", [1, 2, 3], {"min.insync.replicas": "2"})
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(n)])

    def slow(e):
        time.sleep(0.01)
        return e

    app = App(
        f"outage-{tag}",
        brokers=cluster.bootstrap,
        commit_interval="200ms",
        max_poll_records=50,
        max_in_flight=500,
        producer_config={"message.timeout.ms": 5000, "request.timeout.ms": 4000},
    )
    app.on_error(retries=1, backoff="100ms", dead_letter=dlq)
    app.stream(src).map(slow).to(out)

    with running(app, ready_timeout=60) as outcome:
        wait_for(lambda: sum(kafka.end_offsets(out).values()) >= 200, 60, what="200 outputs", outcome=outcome)
        cluster.kill(2)
        cluster.kill(3)
        time.sleep(12)  # over twice message.timeout.ms=5000, the app producing all along
        cluster.restart_nodes([2, 3])
        got = _wait_complete(
            lambda: set(_ids(kafka.drain(out, idle=1, timeout=30))),
            set(range(n)),
            timeout=60,
        )
        dead = kafka.drain(dlq, idle=1, timeout=3)
        committed = kafka.committed(app.group_id, src)[0]
    error = outcome.get("error")
    missing = sorted(set(range(n)) - got)
    assert committed <= n
    uncovered = [i for i in range(max(committed, 0)) if i not in got]
    assert not uncovered, (
        f"source offset committed at {committed} but {len(uncovered)} outputs below it were never "
        f"delivered, e.g. ids {uncovered[:10]}"
    )
    assert not dead, (
        f"{len(dead)} outputs refused during the outage were dead-lettered, e.g. "
        f"{[_headers(r).get('sluice.error.message') for r in dead[:2]]}"
    )
    assert error is None, f"the app stopped: {error!r}"
    assert not missing, f"{len(missing)} outputs never arrived after the brokers came back: {missing[:10]}"


# --------------------------------------------------------------------------- 3. slow handlers
def test_slow_handler_keeps_membership_and_processes_each_record_once(kafka, topic_factory):
    """Issue 15 item 4 (slow handlers): 200 ms per record, max_poll_interval_ms=10000, 1,000-record polls:
    offsets advance, no record is processed twice, the member is not evicted."""
    n = 100  # 20 s of work in one poll: twice max.poll.interval.ms
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(n)])
    calls: Counter[int] = Counter()

    def slow(e):
        calls[e["id"]] += 1
        time.sleep(0.2)
        return e

    app = App(
        f"slow-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        commit_interval="200ms",
        max_poll_records=1000,
        max_poll_interval_ms=10_000,
        consumer_config={"session.timeout.ms": 10_000},
    )
    app.stream(src).map(slow).to(out)
    with running(app) as outcome:
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: _committed_total(kafka, app.group_id, src, 1) >= n,
                45,
                what="every offset committed",
                outcome=outcome,
            )
        committed = _committed_total(kafka, app.group_id, src, 1)
        rebalances = app.stats.rebalances
    twice = sorted(i for i, c in calls.items() if c > 1)
    assert not twice, (
        f"{len(twice)} records were processed more than once (member evicted after max.poll.interval.ms "
        f"and the batch redone?), e.g. {[(i, calls[i]) for i in twice[:5]]}; committed offset {committed}"
    )
    assert committed == n, f"committed offset {committed}, expected {n}"
    assert rebalances == 1, f"{rebalances} assignments: the member left its group and came back"
    outputs = _ids(kafka.drain(out, expected=n, timeout=20, idle=2))
    assert sorted(outputs) == list(range(n))


# --------------------------------------------------------------------------- 4. oversized records
def test_output_too_large_for_its_topic_is_dead_lettered_in_full(kafka, topic_factory):
    """Issue 15 item 5 (oversized records): an output above the output topic's max.message.bytes (and above
    librdkafka's default message.max.bytes) is dead-lettered with its full value and context, the
    app goes on, and the DLQ is created to take what its source topic takes."""
    n, big_id = 20, 7
    src = topic_factory(config={"max.message.bytes": "3000000"})
    out = topic_factory(config={"max.message.bytes": "100000"})
    big = orjson.dumps({"id": big_id, "pad": "x" * 1_200_000})
    records = [(f"k{i}", big if i == big_id else orjson.dumps({"id": i})) for i in range(n)]
    kafka.produce(src, records, **{"message.max.bytes": 5_000_000})

    app = App(f"big-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms")
    app.on_error(retries=0)
    app.stream(src).map(lambda e: e).to(out)
    dlq = f"{app.name}.dlq"
    kafka.created.append(dlq)
    with running(app) as outcome:
        wait_for(
            lambda: _committed_total(kafka, app.group_id, src, 1) >= n,
            30,
            what="every offset committed",
            outcome=outcome,
        )
        dead = kafka.drain(dlq, idle=2, timeout=15)
        outputs = _ids(kafka.drain(out, expected=n - 1, timeout=15))
        assert "error" not in outcome
    assert sorted(outputs) == [i for i in range(n) if i != big_id], (
        "every other record reaches the output (a refused produce batch is not a refused record)"
    )
    assert len(dead) == 1, f"{len(dead)} dead letters for one oversized record"
    (letter,) = dead
    headers = _headers(letter)
    assert letter.value == big, "the dead letter holds the original value, whole"
    assert (headers["sluice.error.topic"], headers["sluice.error.partition"]) == (src, "0")
    assert headers["sluice.error.offset"] == str(big_id)
    assert headers["sluice.error.stage"] == "produce"
    assert TRUNCATED_HEADER not in headers
    assert _topic_config(kafka, dlq, "max.message.bytes") >= 3_000_000, (
        "the DLQ must take any record its source topic takes"
    )


def test_dead_letter_too_large_for_the_dlq_is_truncated_with_a_header(kafka, topic_factory):
    """Issue 15 item 5 (oversized records): a dead letter too large even for the DLQ topic is truncated with a
    header saying so (sluice.error.truncated = the original size); no crash loop, the app goes on."""
    n, big_id = 10, 4
    src = topic_factory()
    out = topic_factory(config={"max.message.bytes": "50000"})
    dlq = topic_factory(config={"max.message.bytes": "150000"})  # the user's own, smaller than the record
    big = orjson.dumps({"id": big_id, "pad": "y" * 300_000})
    kafka.produce(src, [(f"k{i}", big if i == big_id else orjson.dumps({"id": i})) for i in range(n)])

    app = App(f"huge-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms")
    app.on_error(retries=0, dead_letter=dlq)
    app.stream(src).map(lambda e: e).to(out)
    with running(app) as outcome:
        try:
            wait_for(
                lambda: _committed_total(kafka, app.group_id, src, 1) >= n,
                30,
                what="every offset committed",
                outcome=outcome,
            )
        except AssertionError as exc:
            msg = f"the app stopped instead of truncating the dead letter: {exc.__cause__}"
            raise AssertionError(msg) from exc
        dead = kafka.drain(dlq, idle=2, timeout=15)
        outputs = _ids(kafka.drain(out, expected=n - 1, timeout=15))
    assert sorted(outputs) == [i for i in range(n) if i != big_id]
    assert len(dead) == 1, f"{len(dead)} dead letters for one oversized record"
    (letter,) = dead
    headers = _headers(letter)
    assert TRUNCATED_HEADER in headers, f"no {TRUNCATED_HEADER} header on the dead letter: {sorted(headers)}"
    assert int(headers[TRUNCATED_HEADER]) == len(big)
    assert 0 < len(letter.value) < len(big) and big.startswith(letter.value)
    assert headers["sluice.error.offset"] == str(big_id)


# --------------------------------------------------------------------------- 5. parallel mode
PARALLEL_APP = """
import dataclasses
import os
import time
from sluice import App

app = App(
    {group!r},
    brokers={bootstrap!r},
    commit_interval="200ms",
    max_poll_records=100,
    max_in_flight=200,
    concurrency=2,
    ordering={ordering!r},
    progress_interval="2s",
)
# a revoke gives up queued work after 1 s instead of 20 s: the test stays short
app.options = dataclasses.replace(app.options, revoke_timeout=1.0)
CALLS = {calls!r}


def slow(e):
    start = time.time()
    time.sleep(0.05)
    with open(CALLS, "a") as f:
        f.write(f"{{os.getpid()}} {{e['p']}} {{e['id']}} {{start}}\\n")
    return e


app.stream({src!r}).map(slow).to({out!r})
"""


def _revoked_at(log: str, topic: str) -> dict[int, float]:
    """Per partition of ``topic``: when the worker's log first says it is revoking it (epoch seconds)."""
    out: dict[int, float] = {}
    for line in log.splitlines():
        if "revok" not in line:
            continue
        when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for p in re.findall(re.escape(topic) + r"\[(\d+)\]", line):
            out.setdefault(int(p), when)
    return out


@pytest.mark.parametrize("ordering", ["key", "partition"])
def test_parallel_revoke_with_queued_work_keeps_progress_and_stops_revoked_records(
    kafka, topic_factory, tmp_path, ordering
):
    """Issue 15 item 6 (parallel mode): a revoke drops queued work and settles its pending counts (the worker
    goes on with its other partitions instead of pausing forever at max_in_flight), and no record
    of a revoked partition runs on the old owner once the new owner started on it."""
    per_partition, partitions = 300, 4
    n = per_partition * partitions
    src, out = topic_factory(partitions=partitions), topic_factory(partitions=partitions)
    for p in range(partitions):
        ids = range(p * per_partition, (p + 1) * per_partition)
        kafka.produce(src, [(f"k{i % 8}", orjson.dumps({"id": i, "p": p})) for i in ids], partition=p)
    group = f"par-{uuid.uuid4().hex[:8]}"
    calls_path = tmp_path / "calls.txt"
    module = write_app(
        tmp_path,
        "parallel_app",
        PARALLEL_APP.format(
            group=group, bootstrap=kafka.bootstrap, src=src, out=out, calls=str(calls_path), ordering=ordering
        ),
    )

    def calls() -> list[tuple[int, int, int, float]]:
        if not calls_path.exists():
            return []
        rows = []
        for line in calls_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                rows.append((int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])))
        return rows

    first = AppProcess(tmp_path, module, log_name="first.log")
    second: AppProcess | None = None
    try:
        wait_for(lambda: len(calls()) >= 150, 60, what="150 records processed by the first worker")
        second = AppProcess(tmp_path, module, log_name="second.log")
        wait_for(
            lambda: any(pid == second.pid for pid, *_ in calls()), 60, what="the second worker to start work"
        )
        joined = time.time()
        got = _wait_complete(
            lambda: set(_ids(kafka.drain(out, idle=1, timeout=20))), set(range(n)), timeout=40
        )
        rows = calls()
        alive = first.proc.poll() is None, second.proc.poll() is None
    finally:
        for proc in (first, second):
            if proc is not None and proc.proc.poll() is None:
                proc.terminate()
    assert alive == (True, True), f"a worker died:\n{first.log()[-2000:]}"
    moved = {p for pid, p, _i, _t in rows if pid == second.pid}
    assert moved, "the second worker got no partition"
    # a revoke may finish the records at hand within revoke_timeout (1 s); nothing may start later,
    # and surely not once the new owner started on the partition
    revoked_at = _revoked_at(first.log(), src)
    late = []
    for p in moved:
        second_start = min(t for pid, q, _i, t in rows if pid == second.pid and q == p)
        limit = min(second_start, revoked_at.get(p, second_start) + 1.5)
        late += [
            (p, i, round(t - limit, 2)) for pid, q, i, t in rows if pid == first.pid and q == p and t > limit
        ]
    kept = [(p, t) for pid, p, _i, t in rows if pid == first.pid and p not in moved and t > joined + 2]
    missing = sorted(set(range(n)) - got)
    assert not late, (
        f"{len(late)} records of partitions revoked from the first worker started there after the revoke "
        f"(past revoke_timeout, or once the second worker had started on them), e.g. (partition, id, "
        f"seconds late) {late[:5]}"
    )
    assert kept, "the first worker processed nothing of its remaining partitions after the revoke (stalled)"
    assert not missing, f"{len(missing)} records never reached the output: {missing[:10]}"


# --------------------------------------------------------------------------- 6. retry topics
def test_parked_record_whose_output_is_refused_ends_in_dlq_with_original_headers(kafka, topic_factory):
    """Issue 15 item 7 (retry topics): a parked record whose output is refused (too large for the output topic)
    ends in the DLQ after its attempts, with its original topic/partition/offset, never looping
    between retry levels."""
    n, bad = 10, 4
    src = topic_factory()
    out = topic_factory(config={"max.message.bytes": "50000"})
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(n)])
    calls: Counter[int] = Counter()

    def flaky_then_huge(e):
        calls[e["id"]] += 1
        if e["id"] == bad:
            if calls[bad] == 1:
                raise ConnectionError("service unavailable")
            return {"id": bad, "pad": "z" * 100_000}  # refused by the output topic
        return e

    app = App(f"park-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms")
    app.on_error(retries=0, retry_topics=["1s", "1s"])
    app.stream(src).map(flaky_then_huge).to(out)
    dlq, retries = f"{app.name}.dlq", [f"{app.name}.retry.1", f"{app.name}.retry.2"]
    kafka.created += [dlq, *retries]
    with running(app) as outcome:
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: (
                    _committed_total(kafka, app.group_id, src, 1) >= n
                    and dlq in kafka.admin.list_topics(timeout=5).topics
                    and sum(kafka.end_offsets(dlq).values()) >= 1
                ),
                25,
                what="the record in the DLQ and every source offset committed",
                outcome=outcome,
            )
        time.sleep(4)  # long enough for two more trips through the retry topics, if it loops
        topics = kafka.admin.list_topics(timeout=5).topics
        parked = sum(sum(kafka.end_offsets(t).values()) for t in retries if t in topics)
        dead = kafka.drain(dlq, idle=1, timeout=5) if dlq in topics else []
        attempts = calls[bad]
    assert parked <= 2 and attempts <= 3, (
        f"the record went {parked} times through retry topics and was run {attempts} times: it loops"
    )
    assert len(dead) == 1, f"{len(dead)} dead letters for one record"
    headers = _headers(dead[0])
    where = (headers.get("sluice.error.topic"), headers.get("sluice.error.partition"))
    assert where == (src, "0"), f"the dead letter names {where}, not the original topic and partition"
    assert headers.get("sluice.error.offset") == str(bad)
    assert dead[0].value == orjson.dumps({"id": bad}), "the dead letter holds the original record"
    assert sorted(_ids(kafka.drain(out, expected=n - 1, timeout=15))) == [i for i in range(n) if i != bad]
