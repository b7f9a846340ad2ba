"""State restore runs in the poll loop a slice at a time, on the real broker.

A store restored from a large changelog keeps the member in its group and ``/healthz``
green, ``/readyz`` says how many records are left, a worker joining meanwhile gets its
partitions at once, a restore cut short by a revoke goes on from where it stopped, and
the counts after it all are exact.
The restore is slowed down (a sleep per changelog record applied, and small slices) so
that it lasts long enough to be observed, and longer than ``max.poll.interval.ms``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sluice import App
from sluice.errors import KafkaUnavailableError
from sluice.kafka.config import ClientSettings
from sluice.runtime import stateful
from tests.apps import running, wait_for
from tests.ops.helpers import get_json, scrape, values

USERS = 20_000
FIRST_RUN = 30_000  # users 0..9999 twice, the others once: about 20k-30k changelog records
RESTORING = re.compile(r"restoring state: (\d+) changelog records to replay")


def counting_app(kafka, name: str, src: str, out: str, state_dir: Path, **kwargs) -> App:
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=state_dir, **kwargs)
    # the source is keyed by user: no repartition topic, so the source partitions wait for the store
    app.stream(src).key_by(lambda e: e["user"], repartition=False).count(name="n").current().to(out)
    return app


def build_changelog(kafka, topic_factory, tmp_path: Path) -> tuple[str, str, dict[str, int]]:
    """Count FIRST_RUN records in a first run until committed; return (app name, source, counts)."""
    src = topic_factory(partitions=2)
    name = f"rs-{uuid.uuid4().hex[:8]}"
    first_out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([first_out, f"{name}-n-changelog"])
    users = [f"u{i % USERS}" for i in range(FIRST_RUN)]
    kafka.produce(src, [(u.encode(), orjson.dumps({"user": u})) for u in users])
    ends = kafka.end_offsets(src, 2)
    app = counting_app(kafka, name, src, first_out, tmp_path / "first")
    with running(app) as outcome:
        wait_for(
            lambda: kafka.committed(name, src, 2) == ends,
            timeout=60,
            interval=0.5,
            what="the first run committed",
            outcome=outcome,
        )
    counts: dict[str, int] = {}
    for u in users:
        counts[u] = counts.get(u, 0) + 1
    changelog = sum(kafka.end_offsets(f"{name}-n-changelog", 2).values())
    assert changelog >= USERS, f"the changelog has {changelog} records: too few to restore slowly"
    return name, src, counts


@contextlib.contextmanager
def started(app: App) -> Iterator[dict]:
    """Run ``app`` in a thread without waiting for its assignment; stop it on exit."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = app.run(install_signal_handlers=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        app.stop()
        thread.join(60)
        assert not thread.is_alive(), "app did not stop within 60s"


def slow_restore(monkeypatch, per_record: float) -> None:
    """Each changelog record applied costs ``per_record`` seconds; slices are small."""
    apply = stateful._Chunk.apply

    def slow_apply(chunk) -> None:
        time.sleep(per_record * len(chunk.states))
        apply(chunk)

    monkeypatch.setattr(stateful._Chunk, "apply", slow_apply)
    monkeypatch.setattr(stateful, "RESTORE_SLICE_RECORDS", 500, raising=False)


def second_run_input(kafka, src: str, counts: dict[str, int]) -> dict[str, int]:
    """One more record for every 10th user, produced before the second run starts: their expected counts."""
    more = [f"u{i}" for i in range(0, USERS, 10)]
    kafka.produce(src, [(u.encode(), orjson.dumps({"user": u})) for u in more])
    return {u: counts[u] + 1 for u in more}


def test_a_restore_keeps_the_loop_polling_and_readyz_says_how_many_records_are_left(
    kafka, topic_factory, tmp_path, monkeypatch
):
    name, src, counts = build_changelog(kafka, topic_factory, tmp_path)
    expected = second_run_input(kafka, src, counts)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(out)
    slow_restore(monkeypatch, per_record=0.00015)  # 20k-30k records: a few seconds
    app = counting_app(kafka, name, src, out, tmp_path / "second", metrics_port=0)  # no state: restored

    samples: list[tuple[int, dict, int, dict]] = []
    gauges: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            runner = app._runner
            base = runner.metrics.url if runner is not None and runner.metrics is not None else None
            if base is None:
                time.sleep(0.01)
                continue
            ready, health = get_json(base + "/readyz"), get_json(base + "/healthz")
            samples.append((*ready, *health))
            if RESTORING.search(ready[1].get("reason", "")) and len(gauges) < 3:
                gauges.append(sum(values(scrape(base), "sluice_state_restore_remaining").values()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with running(app) as outcome:
            got = kafka.drain(out, expected=len(expected), timeout=90)
            assert "error" not in outcome, outcome.get("error")
            final_ready = get_json(app._runner.metrics.url + "/readyz")
            final_gauge = values(scrape(app._runner.metrics.url), "sluice_state_restore_remaining")
            done.set()
            sampler.join(10)  # before the app stops serving
    finally:
        done.set()

    remaining = [int(m.group(1)) for _c, r, _h, _b in samples if (m := RESTORING.search(r.get("reason", "")))]
    assert remaining and max(remaining) > 0, f"/readyz never said it was restoring: {samples[:5]}"
    assert len(remaining) >= 5, f"only {len(remaining)} samples saw the restore: it did not run in the loop"
    assert remaining[-1] < remaining[0], f"the remaining records did not go down: {remaining}"
    assert gauges and max(gauges) > 0, "sluice_state_restore_remaining was never set"
    assert all(code == 503 for code, r, _h, _b in samples if RESTORING.search(r.get("reason", "")))
    unhealthy = [(h, b) for _c, _r, h, b in samples if h != 200]
    assert not unhealthy, f"/healthz failed during the restore: {unhealthy[:3]}"
    # the loop came back every iteration, restore or not: never a gap near max.poll.interval.ms
    gaps = [b["last_poll_seconds_ago"] for _c, _r, _h, b in samples if "last_poll_seconds_ago" in b]
    assert gaps and max(gaps) < 2.0, f"the poll loop stalled: {max(gaps, default=None)}s"
    assert final_ready[0] == 200 and final_ready[1]["status"] == "ready", final_ready
    assert not any(final_gauge.values()), final_gauge

    updates = [orjson.loads(r.value) for r in got]
    assert len(updates) == len(expected), "a record was counted twice or missed"
    assert {u["key"]: u["value"] for u in updates} == expected  # the restored counts, plus one


def test_a_worker_joining_during_a_restore_longer_than_the_poll_interval_gets_its_partitions_at_once(
    kafka, topic_factory, tmp_path, monkeypatch, caplog
):
    """A rolling deploy: a worker joins while the first one restores its stores.

    A rebalance completes only once every member has served its callbacks: a restore
    inside the assign callback held the whole group (the joiner got nothing until the
    restore, longer than ``max.poll.interval.ms``, was over). Restored in the loop, the
    first worker hands a partition over at once, stays in the group, and the counts
    after both restores are exact.
    """
    name, src, counts = build_changelog(kafka, topic_factory, tmp_path)
    expected = second_run_input(kafka, src, counts)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(out)
    slow_restore(monkeypatch, per_record=0.0005)  # 20k-30k records: 10-15 s, twice the poll interval
    applied: list[float] = []
    apply = stateful._Chunk.apply

    def noted(chunk) -> None:
        applied.append(time.monotonic())
        apply(chunk)

    monkeypatch.setattr(stateful._Chunk, "apply", noted)

    def worker(i: int) -> App:
        return counting_app(
            kafka,
            name,
            src,
            out,
            tmp_path / f"worker{i}",
            max_poll_interval_ms=6000,
            session_timeout_ms=6000,
        )

    first, second = worker(1), worker(2)
    # not running(): it waits for an assignment, which used to come only after the restore
    with caplog.at_level("INFO", logger="sluice"), started(first) as one:
        wait_for(lambda: applied, timeout=30, what="the first worker restoring", outcome=one)
        time.sleep(1.0)
        joined = time.monotonic()
        with running(second) as two:
            wait_for(lambda: second._runner.parts.assigned, timeout=60, what="a partition for the joiner")
            handed_over = time.monotonic() - joined
            got = wait_for(
                lambda: (g := kafka.drain(out, idle=1.0, timeout=10)) and len(g) >= len(expected) and g,
                timeout=90,
                what="every second-run record counted",
                outcome=one,
            )
            assert "error" not in one and "error" not in two, (one.get("error"), two.get("error"))
            log = caplog.text  # before stopping

    restore = applied[-1] - applied[0]
    assert restore > 6.0, f"the restores took {restore:.1f}s: not longer than the poll interval"
    assert handed_over < 6.0, (
        f"the joiner waited {handed_over:.1f}s for a partition: the restore held the group"
    )
    assert "partitions lost" not in log, "a member left the group during a restore"
    assert first.stats.records_in + second.stats.records_in == len(expected), "a record was run twice"
    updates = [orjson.loads(r.value) for r in got]
    assert len(updates) == len(expected), "a record was counted twice or missed"
    assert {u["key"]: u["value"] for u in updates} == expected  # the restored counts, plus one


def test_a_restore_cut_short_by_a_revoke_goes_on_from_where_it_stopped_when_the_partition_comes_back(
    kafka, topic_factory, tmp_path, monkeypatch, caplog
):
    name, src, counts = build_changelog(kafka, topic_factory, tmp_path)
    expected = second_run_input(kafka, src, counts)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(out)
    slow_restore(monkeypatch, per_record=0.0005)
    ends = kafka.end_offsets(f"{name}-n-changelog", 2)
    applied: list[float] = []
    apply = stateful._Chunk.apply

    def noted(chunk) -> None:
        applied.append(time.monotonic())
        apply(chunk)

    monkeypatch.setattr(stateful._Chunk, "apply", noted)

    def worker(i: int) -> App:
        return counting_app(kafka, name, src, out, tmp_path / f"worker{i}")

    first, second = worker(1), worker(2)
    with caplog.at_level("INFO", logger="sluice"), started(first) as one:
        wait_for(lambda: applied, timeout=30, what="the first worker restoring", outcome=one)
        time.sleep(2.0)
        with running(second) as two:  # takes a partition from the first, in the middle of its restore
            wait_for(lambda: second._runner.parts.assigned, timeout=30, what="a partition for the joiner")
            assert "error" not in two
        # the second left: its partition is back with the first, which goes on from its checkpoint
        got = wait_for(
            lambda: (g := kafka.drain(out, idle=1.0, timeout=10)) and len(g) >= len(expected) and g,
            timeout=90,
            what="every second-run record counted",
            outcome=one,
        )
        assert "error" not in one, one.get("error")
        log = caplog.text

    stops = [
        (int(p), int(at))
        for p, at in re.findall(r"state n\[(\d)\]: restore stopped at changelog offset (\d+)", log)
    ]
    assert stops, "no restore was cut short: the test did not test anything"
    restored = [
        (int(p), int(n)) for p, n in re.findall(r"state n\[(\d)\]: restored (\d+) changelog records", log)
    ]
    resumed = [(p, at) for p, at in stops if 0 < at < ends[p] and (p, ends[p] - at) in restored]
    assert resumed, f"no restore went on from its checkpoint: stopped {stops}, restored {restored}"
    assert "partitions lost" not in log
    updates = [orjson.loads(r.value) for r in got]
    assert len(updates) == len(expected), "a record was counted twice or missed"
    assert {u["key"]: u["value"] for u in updates} == expected  # the restored counts, plus one


def test_a_restore_that_reads_nothing_stops_the_app_after_the_timeout_with_a_clear_error(
    kafka, topic_factory, tmp_path, monkeypatch
):
    src = topic_factory(partitions=1)
    name = f"rs-{uuid.uuid4().hex[:8]}"
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-n-changelog"])
    kafka.produce(src, [(f"u{i}".encode(), orjson.dumps({"user": f"u{i}"})) for i in range(200)])
    first = counting_app(kafka, name, src, out, tmp_path / "first")
    with running(first) as outcome:
        wait_for(lambda: kafka.committed(name, src, 1) == {0: 200}, what="committed", outcome=outcome)
    # the restore consumer reaches no broker: the changelog has records it never reads
    real = ClientSettings.restore_consumer_config
    monkeypatch.setattr(
        ClientSettings,
        "restore_consumer_config",
        lambda self: {**real(self), "bootstrap.servers": "127.0.0.1:1"},
    )
    second = counting_app(kafka, name, src, out, tmp_path / "second")
    second.options = dataclasses.replace(second.options, revoke_timeout=2.0)
    started_at = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match=rf"restoring {name}-n-changelog made no progress for 2s"):
        second.run(install_signal_handlers=False)
    assert time.monotonic() - started_at < 30


SMALL_PARTITIONS = 6
#: source partitions given records in the first run; the others leave their changelog partitions empty
SMALL_FILLED = (0, 1, 2, 3)


def small_app(kafka, name: str, src: str, out: str, state_dir: Path, repartition: bool, **kwargs) -> App:
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=state_dir, **kwargs)
    stream = app.stream(src)
    if repartition:  # as most apps: a stateless branch too, the count reading a repartition topic
        stream.map(lambda e: {"user": e["user"]}).to(f"{out}-copy")
    stream.key_by(lambda e: e["user"], repartition=repartition).count(name="n").current().to(out)
    return app


@pytest.mark.parametrize(
    ("guarantee", "repartition"),
    [("at_least_once", False), ("exactly_once", False), ("at_least_once", True), ("exactly_once", True)],
)
def test_a_tiny_changelog_of_many_partitions_some_empty_restores_at_once_with_exact_counts(
    kafka, topic_factory, tmp_path, guarantee, repartition, caplog
):
    """A restart with the state dir gone restores a few records per partition within seconds.

    Six partitions: four with a few changelog records, two with an empty changelog (when
    the count reads its source directly). Under exactly-once the changelog's committed
    end offset lies past its last record (each transaction leaves a commit marker the
    restore consumer never sees), and the first run commits in several transactions, so
    markers sit between records too. Every partition must be restored and resumed, and
    ``/readyz`` and ``sluice_state_restore_remaining`` must say so at the end.
    """
    src = topic_factory(partitions=SMALL_PARTITIONS)
    name = f"rs-{uuid.uuid4().hex[:8]}"
    first_out, out = f"out-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    changelog_topic = f"{name}-n-changelog"
    kafka.created.extend([first_out, out, f"{first_out}-copy", f"{out}-copy", changelog_topic])
    if repartition:
        kafka.created.append(f"{name}-n-repartition")
    counts: dict[str, int] = {}
    for p in SMALL_FILLED:
        users = [f"p{p}u{i % 3}" for i in range(5)]  # 3 keys, 5 records per partition
        for chunk in (users[:2], users[2:]):  # two produce calls: more than one transaction
            kafka.produce(src, [(u.encode(), orjson.dumps({"user": u})) for u in chunk], partition=p)
        for u in users:
            counts[u] = counts.get(u, 0) + 1
    ends = {p: n for p, n in kafka.end_offsets(src, SMALL_PARTITIONS).items() if n}
    options = {"guarantee": guarantee}
    first = small_app(kafka, name, src, first_out, tmp_path / "first", repartition, **options)
    with running(first) as outcome:
        wait_for(
            lambda: ends.items() <= kafka.committed(name, src, SMALL_PARTITIONS).items(),
            timeout=60,
            what="the first run committed",
            outcome=outcome,
        )
        wait_for(
            lambda: (
                len(kafka.drain(first_out, idle=0.5, timeout=2, **{"isolation.level": "read_committed"}))
                >= sum(counts.values())
            ),
            timeout=30,
            what="every first-run record counted",
            outcome=outcome,
        )
    changelog = kafka.end_offsets(changelog_topic, SMALL_PARTITIONS)
    assert sum(changelog.values()) > 0, changelog
    if not repartition:
        assert all(changelog[p] > 0 for p in SMALL_FILLED), changelog
        assert all(changelog[p] == 0 for p in range(SMALL_PARTITIONS) if p not in SMALL_FILLED), changelog

    # one more record for every user, and a first one on every partition left empty so far
    more = [(p, u) for u in counts for p in [int(u[1])]]
    more += [(p, f"p{p}u0") for p in range(SMALL_PARTITIONS) if p not in SMALL_FILLED]
    for p, u in more:
        kafka.produce(src, [(u.encode(), orjson.dumps({"user": u}))], partition=p)
    expected = {u: counts.get(u, 0) + 1 for _p, u in more}

    # no state dir: every store is restored from the changelog
    second = small_app(kafka, name, src, out, tmp_path / "second", repartition, metrics_port=0, **options)
    started_at = time.monotonic()
    with caplog.at_level("INFO", logger="sluice"), running(second) as outcome:
        got = wait_for(
            lambda: (
                (g := kafka.drain(out, idle=0.5, timeout=2, **{"isolation.level": "read_committed"}))
                and len(g) >= len(expected)
                and g
            ),
            timeout=30,
            what="every second-run record counted after the restore",
            outcome=outcome,
        )
        restored_in = time.monotonic() - started_at
        ready = get_json(second._runner.metrics.url + "/readyz")
        gauge = values(scrape(second._runner.metrics.url), "sluice_state_restore_remaining")
    assert "error" not in outcome, outcome.get("error")
    assert restored_in < 20, f"restoring {sum(changelog.values())} changelog records took {restored_in:.1f}s"
    assert ready[0] == 200 and ready[1]["status"] == "ready", ready
    assert not any(gauge.values()), gauge
    # one line for the assignment's restore, as the blocking restore wrote it (the benchmark reads it)
    summary = re.findall(r"state n: restored (\d+) changelog records of (\d+) partitions in", caplog.text)
    assert summary and sum(int(n) for n, _p in summary) > 0, "no summary of the restore was logged"
    updates = [orjson.loads(r.value) for r in got]
    assert len(updates) == len(expected), "a record was counted twice or missed"
    assert {u["key"]: u["value"] for u in updates} == expected  # the restored counts, plus one


def test_a_partition_handed_over_during_a_slow_batch_with_no_state_to_restore_is_consumed(
    kafka, topic_factory, tmp_path
):
    """A partition assigned in the poll that keeps a slow batch's member in its group is fetched.

    That poll runs with every partition paused, so the partition arrives paused; a partition
    waiting for its state is resumed when its restore ends, but one with nothing to restore
    (an empty changelog partition) was left paused: its records were never consumed.
    """
    src = topic_factory(partitions=2)
    name = f"rs-{uuid.uuid4().hex[:8]}"
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-n-changelog"])
    slow_seen: list[int] = []

    def pace(e: dict) -> dict:
        if e.get("slow"):
            slow_seen.append(e["id"])
            time.sleep(0.1)
        return e

    def worker(i: int) -> App:
        app = App(
            name,
            brokers=kafka.bootstrap,
            commit_interval="200ms",
            state_dir=tmp_path / f"worker{i}",
            max_poll_records=1000,
            max_poll_interval_ms=6000,  # a keep-alive poll every 3 s of a batch
            session_timeout_ms=6000,
        )
        stream = app.stream(src).map(pace)
        stream.key_by(lambda e: e["user"], repartition=False).count(name="n").current().to(out)
        return app

    first, second = worker(1), worker(2)
    with running(first) as one:
        with running(second) as two:
            wait_for(
                lambda: len(first._runner.parts.assigned) == 1 and len(second._runner.parts.assigned) == 1,
                timeout=30,
                what="one partition each",
                outcome=two,
            )
            [(_, kept)], [(_, handed)] = (
                list(first._runner.parts.assigned),
                list(second._runner.parts.assigned),
            )
            # 100 slow records (10 s in one batch) on the first worker's partition
            slow = [(b"s", orjson.dumps({"id": i, "user": "s", "slow": True})) for i in range(100)]
            kafka.produce(src, slow, partition=kept)
            wait_for(lambda: len(slow_seen) >= 5, timeout=30, what="the slow batch running", outcome=one)
        # the second worker left: its partition (an empty changelog) goes to the first in its slow batch
        wait_for(lambda: len(first._runner.parts.assigned) == 2, timeout=30, what="the handover", outcome=one)
        assert len(slow_seen) < 100, "the slow batch was over before the handover: the test tested nothing"
        kafka.produce(
            src, [(b"h", orjson.dumps({"id": 1000 + i, "user": "h"})) for i in range(3)], partition=handed
        )
        got = wait_for(
            lambda: [
                v for r in kafka.drain(out, idle=0.5, timeout=2) if (v := orjson.loads(r.value))["key"] == "h"
            ],
            timeout=40,
            what="the records of the handed-over partition counted",
            outcome=one,
        )
        assert "error" not in one, one.get("error")
    assert [v["value"] for v in got] == [1, 2, 3]
