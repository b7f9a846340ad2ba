"""Aggregations and windows end to end on the real broker: results, late records, restore, rebalance, failures."""

from __future__ import annotations

import random
import shutil
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from sluice import App
from sluice.errors import ConfigError
from sluice.kafka.admin import TopicAdmin
from sluice.runtime import runner as runner_module
from tests.apps import running, wait_for

T0 = 1_700_000_000_000  # a minute boundary: 1_700_000_000_000 % 60_000 == 20_000, so windows are offset


def make_app(kafka, tmp_path: Path, name: str | None = None, **kwargs) -> App:
    name = name or f"st-{uuid.uuid4().hex[:8]}"
    return App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name, **kwargs)


def internal_topics(kafka, app: App, store: str, *extra: str) -> None:
    kafka.created.extend([f"{app.name}-{store}-changelog", f"{app.name}-{store}-repartition", *extra])


def values(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def event(user: str, ts: int, **fields) -> tuple[bytes, bytes, dict]:
    return (user.encode(), orjson.dumps({"user": user, **fields}), {"timestamp": ts})


def tumbling_oracle(stream: list[tuple[str, int]], size: int, grace: int) -> tuple[Counter, list[int]]:
    """Counts per (user, window start) of the records that are not late, and the late ones' indexes."""
    counts: Counter = Counter()
    late: list[int] = []
    stream_time = -1
    for i, (user, ts) in enumerate(stream):
        stream_time = max(stream_time, ts)
        start = ts - ts % size
        if start + size + grace <= stream_time:
            late.append(i)
        else:
            counts[(user, start)] += 1
    return counts, late


def test_tumbling_count_final_matches_the_oracle_and_late_records_go_to_the_late_topic(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=1)  # one stream time: the oracle can replay it exactly
    out, late_topic = f"out-{uuid.uuid4().hex[:8]}", f"late-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    size, grace = 10_000, 3_000
    stream: list[tuple[str, int]] = []
    for i in range(600):
        ts = T0 + i * 200 + rng.randint(-4_000, 1_000)  # out of order, some beyond the grace
        stream.append((f"u{rng.randint(0, 5)}", ts))
    stream.append(("flush", T0 + 10_000_000))  # closes every window of the data
    kafka.produce(src, [event(u, ts, i=i) for i, (u, ts) in enumerate(stream)])
    expected, late = tumbling_oracle(stream, size, grace)
    assert late, "the input must have late records for this test to mean something"

    app = make_app(kafka, tmp_path)
    app.stream(src).key_by(lambda e: e["user"]).window(tumbling="10s", grace="3s", late=late_topic).count(
        name="per-user"
    ).final().to(out)
    internal_topics(kafka, app, "per-user", out, late_topic)
    data_windows = {k: v for k, v in expected.items() if k[0] != "flush"}
    with running(app) as outcome:
        got = kafka.drain(out, expected=len(data_windows), timeout=60)
        late_got = kafka.drain(late_topic, expected=len(late), timeout=30)
        assert "error" not in outcome

    results = {(v["key"], v["start"]): v for v in values(got)}
    assert len(results) == len(got), "a window was reported twice"
    assert {k: v["value"] for k, v in results.items()} == data_windows
    for (_user, start), v in results.items():
        assert v["end"] == start + size
    for rec in got:
        assert rec.key == orjson.loads(rec.value)["key"].encode()
        assert rec.timestamp == orjson.loads(rec.value)["end"] - 1
    assert sorted(orjson.loads(r.value)["i"] for r in late_got) == late
    assert app.stats is not None


@pytest.mark.parametrize(
    ("window", "aggregate", "records", "expected"),
    [
        pytest.param(
            {"hopping": "10s", "step": "5s"},
            lambda w: w.sum(lambda e: e["n"]),
            [("a", 1_000, 1), ("a", 6_000, 2), ("a", 12_000, 4)],
            # windows holding 1s: [0,10s); 6s: [0,10s) [5s,15s); 12s: [5s,15s) [10s,20s)
            {(0, 10_000): 3, (5_000, 15_000): 6, (10_000, 20_000): 4},
            id="hopping-sum",
        ),
        pytest.param(
            {"sliding": "5s"},
            lambda w: w.max(lambda e: e["n"]),
            [("a", 1_000, 3), ("a", 4_000, 7), ("a", 9_000, 5)],
            # right windows [t-5s, t]: [-4s,1s]={3}, [-1s,4s]={3,7}, [4s,9s]={7,5};
            # left windows [t+1, t+1+5s] with a later record: [1001,6001]={7}, [4001,9001]={5}
            {
                (-4_000, 1_001): 3,
                (-1_000, 4_001): 7,
                (4_000, 9_001): 7,
                (1_001, 6_002): 7,
                (4_001, 9_002): 5,
            },
            id="sliding-max",
        ),
        pytest.param(
            {"session": "3s"},
            lambda w: w.reduce(lambda a, b: {"n": a["n"] * 10 + b["n"]}),
            [("a", 1_000, 1), ("a", 3_000, 2), ("a", 10_000, 3), ("a", 5_500, 4)],
            # 1s, 3s, 5.5s are within 3s of each other: one session [1s, 5.5s]; 10s alone
            {(1_000, 5_501): {"n": 124}, (10_000, 10_001): {"user": "a", "n": 3}},
            id="session-reduce",
        ),
    ],
)
def test_every_window_kind_reports_its_windows(
    kafka, topic_factory, tmp_path, window, aggregate, records, expected
):
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.produce(src, [event(u, ts, n=n) for u, ts, n in records] + [event("zz", 1_000_000, n=0)])
    app = make_app(kafka, tmp_path)
    aggregate(app.stream(src).window(grace="10s", **window)).final().to(out)  # keyed by the record key
    kafka.created.append(out)
    with running(app):
        got = values(kafka.drain(out, expected=len(expected), timeout=60))
    assert {(v["start"], v["end"]): v["value"] for v in got if v["key"] == "a"} == expected


def test_running_count_current_emits_every_update_and_survives_restarts(
    kafka, topic_factory, tmp_path, caplog
):
    src = topic_factory(partitions=2)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"st-{uuid.uuid4().hex[:8]}"
    users = [f"u{i % 7}" for i in range(140)]
    totals: Counter = Counter()

    def run_phase(batch: list[str]) -> list[dict]:
        app = make_app(kafka, tmp_path, name)
        app.stream(src).key_by(lambda e: e["user"]).count(name="clicks").current().to(out)
        kafka.produce(src, [event(u, T0 + i) for i, u in enumerate(batch)])
        totals.update(batch)
        with running(app):
            wanted = sum(totals.values())
            return values(kafka.drain(out, expected=wanted, timeout=60))

    kafka.created.extend([out, f"{name}-clicks-changelog", f"{name}-clicks-repartition"])
    first = run_phase(users[:70])
    assert {v["key"]: v["value"] for v in first} == Counter(users[:70])  # last update per key wins
    assert all(set(v) == {"key", "value"} for v in first)

    second = run_phase(users[70:100])  # same state dir: the store reopens from its checkpoint
    assert last_per_key(second) == Counter(users[:100])

    shutil.rmtree(tmp_path / name)  # state lost: restored from the changelog
    caplog.clear()
    with caplog.at_level("INFO", logger="sluice.runtime.stateful"):
        third = run_phase(users[100:])
    assert last_per_key(third) == Counter(users)
    assert "clicks[" in caplog.text and "restored" in caplog.text


def last_per_key(updates: list[dict]) -> dict:
    last: dict = {}
    for v in updates:
        last[v["key"]] = v["value"]
    return last


def test_two_workers_and_a_rebalance_give_the_results_of_one(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=4)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"st-{uuid.uuid4().hex[:8]}"
    users = [f"user-{i % 23}" for i in range(2_000)]

    def build(worker: int) -> App:
        app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / f"w{worker}")
        app.stream(src).key_by(lambda e: e["user"]).count(name="n").current().to(out)
        return app

    kafka.created.extend([out, f"{name}-n-changelog", f"{name}-n-repartition"])
    kafka.produce(src, [event(u, T0 + i) for i, u in enumerate(users[:1_000])])
    first = build(1)
    with running(first) as one:
        wait_for(lambda: len(last_updates(kafka, out)) == 23, what="first half counted", outcome=one)
        second = build(2)  # joins: partitions move, their state is restored from the changelog on w2
        with running(second) as two:
            kafka.produce(src, [event(u, T0 + i) for i, u in enumerate(users[1_000:])])
            want = Counter(users)
            wait_for(lambda: last_updates(kafka, out) == want, timeout=90, what="all counted", outcome=two)
    assert first.stats.records_in > 0 and second.stats.records_in > 0


def last_updates(kafka, topic: str) -> dict:
    last: dict = {}
    for r in kafka.drain(topic, idle=1.0, timeout=20):
        v = orjson.loads(r.value)
        last[v["key"]] = v["value"]
    return last


def test_failures_in_a_stateful_step_go_through_the_failure_policy(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    records = [
        (b"a", orjson.dumps({"user": "a", "amount": 5}), {"timestamp": T0}),
        (b"a", orjson.dumps({"user": "a"}), {"timestamp": T0 + 1}),  # missing field: sum's fn raises
        (b"b", orjson.dumps({"user": None, "amount": 1}), {"timestamp": T0 + 2}),  # no group key
        (b"a", orjson.dumps({"user": "a", "amount": 7}), {"timestamp": T0 + 3}),
    ]
    kafka.produce(src, records)
    app = make_app(kafka, tmp_path)
    app.on_error(retries=1, backoff="10ms..10ms", dead_letter=dlq)
    app.stream(src).key_by(lambda e: e["user"]).sum(lambda e: e["amount"], name="total").current().to(out)
    internal_topics(kafka, app, "total", out, dlq)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=2, timeout=60))
        letters = kafka.drain(dlq, expected=2, timeout=60)
        assert "error" not in outcome
    assert [v["value"] for v in got] == [5, 12]
    by_exception = {dict(r.headers)["sluice.error.exception"]: r for r in letters}
    assert set(by_exception) == {b"KeyError", b"ValueError"}
    assert dict(by_exception[b"KeyError"].headers)["sluice.error.step"] == b"total"
    assert b"no group key" in dict(by_exception[b"ValueError"].headers)["sluice.error.message"]


def test_stateful_configuration_errors_are_clear():
    app = App("cfg", brokers="127.0.0.1:9092")
    events = app.stream("events")
    with pytest.raises(ConfigError, match="needs a window"):
        events.count().final()
    with pytest.raises(ConfigError, match="exactly one of"):
        events.window(tumbling="1m", session="5m")
    with pytest.raises(ConfigError, match="needs step="):
        events.window(hopping="5m")
    with pytest.raises(ConfigError, match=r"call \.final\(\) or \.current\(\)"):
        events.window(tumbling="1m").count().to("x")
    with pytest.raises(ConfigError, match="several topics"):
        app.stream(["a", "b"]).count().current()
    with pytest.raises(ConfigError, match="name"):
        events.count(name="bad name!")


def test_aggregations_refuse_concurrency(kafka, topic_factory, tmp_path):
    src = topic_factory()
    app = make_app(kafka, tmp_path, concurrency=4)
    app.stream(src).count().current().to(f"out-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError, match="concurrency=1"):
        app.run(install_signal_handlers=False)


def test_per_user_counts_by_window(kafka, topic_factory, tmp_path, monkeypatch):
    """Hopping windows over several keys and partitions (no late records): every (key, window) count.

    The consumed part of the repartition topic is purged (its records never expire by time).
    """
    monkeypatch.setattr(runner_module, "_PURGE_INTERVAL", 0.5)
    src = topic_factory(partitions=3)
    out = f"out-{uuid.uuid4().hex[:8]}"
    rng = random.Random(3)
    stream = [(f"u{rng.randint(0, 9)}", T0 + rng.randint(0, 60_000)) for _ in range(500)]
    kafka.produce(src, [event(u, ts) for u, ts in stream])
    app = make_app(kafka, tmp_path)
    app.stream(src).key_by(lambda e: e["user"]).window(hopping="20s", step="10s", grace="10m").count(
        name="hop"
    ).final().to(out)
    internal_topics(kafka, app, "hop", out)
    expected: Counter = Counter()
    for user, ts in stream:
        last = ts - ts % 10_000
        for start in (last - 10_000, last):
            if start <= ts < start + 20_000:
                expected[(user, start)] += 1
    with running(app) as outcome:
        wait_for(
            lambda: app.stats and app.stats.records_in >= 1_000, what="data repartitioned", outcome=outcome
        )
        # stream time is per partition: one far-future record per repartition partition closes everything
        kafka.produce(src, [event(f"flush-{i}", T0 + 10_000_000) for i in range(16)])
        got = values(kafka.drain(out, expected=len(expected), timeout=60))
        repartition = f"{app.name}-hop-repartition"
        admin = TopicAdmin({"bootstrap.servers": kafka.bootstrap})
        wait_for(
            lambda: sum(low for low, _ in admin.watermarks(repartition, 3).values()) >= 500,
            what="consumed repartition records purged",
            outcome=outcome,
        )
    counts = {(v["key"], v["start"]): v["value"] for v in got}
    assert len(counts) == len(got), "a window was reported twice"
    assert counts == dict(expected)


@pytest.mark.parametrize("repartition", [False, True], ids=["record-key", "key_by"])
def test_a_record_far_in_the_future_is_dead_lettered_and_later_records_count_in_their_windows(
    kafka, topic_factory, tmp_path, repartition
):
    import time

    src = topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    base = now - now % 10_000 - 120_000  # two minutes ago, on a window boundary
    stream = [("u", base + i * 1_000) for i in range(20)]  # two 10 s windows of ten records
    future = ("u", now + 5 * 3_600_000)  # a producer clock five hours ahead
    flush = ("flush", now + 1_800_000)  # within max_future: closes every window of the data

    def stamped(user: str, ts: int, i: int) -> tuple[bytes, bytes]:
        return (user.encode(), orjson.dumps({"user": user, "ts": ts, "i": i}))

    records = [stamped(u, ts, i) for i, (u, ts) in enumerate(stream[:10])]
    records.append(stamped(*future, -1))
    records += [stamped(u, ts, i) for i, (u, ts) in enumerate(stream[10:], start=10)]
    records.append(stamped(*flush, 99))
    kafka.produce(src, records)

    app = make_app(kafka, tmp_path)
    app.on_error(retries=0, dead_letter=dlq)
    # event time from the payload (a device's clock): the broker checks only the Kafka timestamp
    stream_ = app.stream(src, timestamp=lambda e: e["ts"])
    if repartition:  # through the repartition topic, whose records carry the event time
        stream_ = stream_.key_by(lambda e: e["user"])
    stream_.window(tumbling="10s", max_future="1h").count(name="per-10s").final().to(out)
    internal_topics(kafka, app, "per-10s", out, dlq)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=2, timeout=60))
        dead = kafka.drain(dlq, expected=1, timeout=30)
        assert "error" not in outcome

    assert {(v["start"], v["value"]) for v in got} == {(base, 10), (base + 10_000, 10)}
    assert len(dead) == 1 and orjson.loads(dead[0].value)["i"] == -1
    headers = dict(dead[0].headers)
    assert headers["sluice.error.stage"] == b"process"
    assert headers["sluice.error.exception"] == b"FutureTimestampError"
    message = headers["sluice.error.message"].decode()
    assert "ahead of the wall clock, beyond max_future=3600s" in message, message


def test_a_stream_time_jump_closing_thousands_of_windows_reports_each_once_in_chunks(
    kafka, topic_factory, tmp_path, monkeypatch
):
    from sluice.runtime import stateful

    monkeypatch.setattr(stateful, "CLOSE_CHUNK", 100)  # 2,500 windows: 25 chunks, each written back apart
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    users = [f"u{i:05d}" for i in range(2_500)]
    kafka.produce(src, [event(u, T0 + i) for i, u in enumerate(users)])

    def build() -> App:
        app = make_app(kafka, tmp_path, name=name)
        app.stream(src).window(tumbling="10s").count(name="jump").final().to(out)
        return app

    name = f"st-{uuid.uuid4().hex[:8]}"
    app = build()
    internal_topics(kafka, app, "jump", out)
    with running(app) as outcome:
        wait_for(
            lambda: app.stats and app.stats.records_in >= len(users), what="all counted", outcome=outcome
        )
    # a restart: the windows are restored from the changelog, then one record closes them all
    second = build()
    with running(second) as outcome:
        kafka.produce(src, [event("flush", T0 + 3_600_000)])
        got = values(kafka.drain(out, expected=len(users), timeout=60))
        assert "error" not in outcome
    counts = Counter(v["key"] for v in got)
    assert len(got) == len(users) and set(counts) == set(users), "every window reported once"
    assert all(v["value"] == 1 for v in got)


def test_the_record_cache_writes_a_hot_key_once_per_flush_and_its_held_batches_do_not_pause(
    kafka, topic_factory, tmp_path, monkeypatch
):
    from sluice.state.store import PartitionStore

    writes: Counter = Counter()
    apply = PartitionStore.apply

    def counting_apply(self, states, index, stream_time=None):
        writes.update(states.keys())
        return apply(self, states, index, stream_time)

    monkeypatch.setattr(PartitionStore, "apply", counting_apply)
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    users = [f"u{i % 3}" for i in range(1_000)]
    kafka.produce(src, [event(u, T0 + i) for i, u in enumerate(users)])
    # batches of 50 held for a changelog flush every 10 s: 20 batches, far past max_in_flight
    name = f"st-{uuid.uuid4().hex[:8]}"
    app = App(
        name,
        brokers=kafka.bootstrap,
        commit_interval="10s",
        state_dir=tmp_path / name,
        max_poll_records=50,
        max_in_flight=200,
    )
    hot = app.stream(src).key_by(
        lambda e: e["user"], repartition=False
    )  # keyed by user: no outputs in flight
    hot.window(tumbling="1h").count(name="hot").final().to(out)
    internal_topics(kafka, app, "hot", out)
    with running(app) as outcome:
        wait_for(
            lambda: app.stats and app.stats.records_in >= len(users), what="all counted", outcome=outcome
        )
        assert app.stats.batches >= 10, app.stats.batches
        counting = dict(writes)
        paused = app.stats.paused
        kafka.produce(src, [event("flush", T0 + 2 * 3_600_000)])
        got = values(kafka.drain(out, expected=3, timeout=60))
        assert "error" not in outcome
    # one write per key per flush (the first flush may come with the 10 s commit), not one per batch
    assert all(n <= 1 for n in counting.values()), counting
    assert paused == 0, "batches held for the changelog paused the partitions"
    start = T0 - T0 % 3_600_000
    assert sorted((v["key"], v["start"], v["value"]) for v in got) == [
        (u, start, n) for u, n in sorted(Counter(users).items())
    ]


def test_failures_in_a_fused_chain_into_a_window_meet_the_policy_once_and_keep_offset_order(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    records = [
        (b"a", orjson.dumps({"user": "a", "n": 1}), {"timestamp": T0}),
        (b"a", b'{"user": "a", "n": ', {"timestamp": T0 + 1}),  # not JSON: deserialization fails
        (b"a", orjson.dumps({"user": "a", "n": 2}), {"timestamp": T0 + 2}),
        (b"a", orjson.dumps({"user": "a"}), {"timestamp": T0 + 3}),  # the filter raises (no "n")
        (b"b", orjson.dumps({"user": "b", "n": 3}), {"timestamp": T0 + 4}),
        (b"x", orjson.dumps({"n": 4}), {"timestamp": T0 + 5}),  # key_by raises (no "user")
        (b"a", orjson.dumps({"user": "a", "n": 0}), {"timestamp": T0 + 6}),  # filtered out
        (b"a", orjson.dumps({"user": "a", "n": 5}), {"timestamp": T0 + 7}),
    ]
    kafka.produce(src, records)
    app = make_app(kafka, tmp_path)
    app.on_error(retries=0, dead_letter=dlq)
    (
        app.stream(src)
        .filter(lambda e: e["n"] > 0)
        .key_by(lambda e: e["user"], repartition=False)
        .window(tumbling="1m")
        .sum(lambda e: e["n"], name="total")
        .current()
        .to(out)
    )
    internal_topics(kafka, app, "total", out, dlq)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=4, timeout=60))
        letters = kafka.drain(dlq, expected=3, idle=2, timeout=60)
        assert "error" not in outcome
        plans = app._runner.executor._plans.values()
        assert any(plan.fused_aggregate is not None for plan in plans), "the chain into the window is fused"
    assert [(v["key"], v["value"]) for v in got] == [("a", 1), ("a", 3), ("b", 3), ("a", 8)]
    steps = sorted(dict(r.headers)["sluice.error.step"] for r in letters)
    assert len(letters) == 3 and steps[0].startswith(b"deserialize"), steps
    assert sorted(int(dict(r.headers)["sluice.error.offset"]) for r in letters) == [1, 3, 5]
