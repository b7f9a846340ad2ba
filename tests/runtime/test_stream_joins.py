"""Stream-stream joins end to end on the real broker: the oracle per join kind, restarts, late records, failures.

The oracle is the brute-force definition: every left/right pair of one key whose
timestamps are at most ``within`` apart joins; with ``left``/``outer`` each record
that joined nothing comes out once, with ``None`` for the other side. The inputs
are written while no window can close (the grace outlasts the data), and a record
far in the future then closes every window: the result does not depend on how the
two inputs interleave on their way into the join topic, so it must equal the
oracle's as a multiset.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sluice import App
from sluice.errors import ConfigError, SluiceError
from tests.apps import AppProcess, running, wait_for, write_app

T0 = 1_700_000_000_000
WITHIN = 3_000
KEYS = ["a", "b", "c", "d"]
#: keys for the records that close every window: enough that each partition of the join topic gets one
FLUSH_KEYS = [f"flush-{i}" for i in range(24)]
FLUSH_TS = T0 + 10 * 3_600_000

Side = list[tuple[str, int, int]]  # (join key, timestamp, id)


def pair(left: dict | None, right: dict | None) -> dict:
    return {"l": left["id"] if left else None, "r": right["id"] if right else None}


def oracle(left: Side, right: Side, how: str, within: int) -> Counter:
    """(key, timestamp, value) of every output of the join, brute force."""
    out: Counter = Counter()
    matched_l, matched_r = set(), set()
    for kl, tl, il in left:
        for kr, tr, ir in right:
            if kl == kr and abs(tl - tr) <= within:
                out[(kl, max(tl, tr), orjson.dumps({"l": il, "r": ir}))] += 1
                matched_l.add(il)
                matched_r.add(ir)
    if how in ("left", "outer"):
        for k, t, i in left:
            if i not in matched_l:
                out[(k, t, orjson.dumps({"l": i, "r": None}))] += 1
    if how == "outer":
        for k, t, i in right:
            if i not in matched_r:
                out[(k, t, orjson.dumps({"l": None, "r": i}))] += 1
    return out


def records(side: Side, kafka_keys: bool = True) -> list[tuple[bytes, bytes, dict]]:
    # the Kafka key is not the join key: key_by repartitions
    return [
        (
            f"kafka-{i % 5}".encode() if kafka_keys else None,
            orjson.dumps({"k": k, "id": i}),
            {"timestamp": ts},
        )
        for k, ts, i in side
    ]


def outputs(got) -> Counter:
    return Counter((r.key.decode(), r.timestamp, orjson.dumps(orjson.loads(r.value))) for r in got)


def join_topic_size(kafka, app_name: str, store: str, partitions: int) -> int:
    try:
        return sum(kafka.end_offsets(f"{app_name}-{store}-repartition", partitions).values())
    except SluiceError:  # the app has not created it yet
        return 0


def flush_all(kafka, topic: str) -> None:
    kafka.produce(
        topic, [(k.encode(), orjson.dumps({"k": k, "id": -1}), {"timestamp": FLUSH_TS}) for k in FLUSH_KEYS]
    )


side_strategy = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(min_value=0, max_value=20_000)), min_size=0, max_size=25
)


def numbered(raw: list[tuple[str, int]], first: int) -> Side:
    return [(k, T0 + dt, first + i) for i, (k, dt) in enumerate(raw)]


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
    phases=[Phase.explicit, Phase.generate],  # each example runs an app: shrinking would take many minutes
)
@given(raw_left=side_strategy, raw_right=side_strategy)
def test_stream_join_matches_the_oracle(kafka, topic_factory, tmp_path, how, raw_left, raw_right):
    left, right = numbered(raw_left, 0), numbered(raw_right, 1_000)
    left_topic, right_topic = topic_factory(partitions=2), topic_factory(partitions=3)  # not co-partitioned
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"sj-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-cv-repartition", f"{name}-cv-changelog"])
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name)
    clicks = app.stream(left_topic).key_by(lambda e: e["k"])
    views = app.stream(right_topic).key_by(lambda e: e["k"])
    clicks.join(views, pair, within="3s", grace="1h", how=how, name="cv").to(out)

    kafka.produce(left_topic, records(left))
    kafka.produce(right_topic, records(right))
    expected = oracle(left, right, how, WITHIN)
    with running(app) as outcome:
        n = len(left) + len(right)
        wait_for(
            lambda: join_topic_size(kafka, name, "cv", 3) >= n,
            what="both inputs in the join topic",
            outcome=outcome,
        )
        flush_all(kafka, left_topic)  # now, and only now, every window closes
        got = kafka.drain(out, expected=sum(expected.values()), timeout=60, idle=3) if expected else []
        time.sleep(1.5)  # nothing more may come
        got = kafka.drain(out, timeout=10, idle=1)  # all of it again: read back, partitions interleave
        assert "error" not in outcome
    assert outputs(got) == expected


def test_late_records_join_nothing_and_are_never_emitted(kafka, topic_factory, tmp_path):
    left_topic, right_topic = topic_factory(partitions=1), topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"sj-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-lj-repartition", f"{name}-lj-changelog"])
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name)
    lefts = app.stream(left_topic, key="str")
    rights = app.stream(right_topic, key="str")
    lefts.join(rights, pair, within="1s", grace="2s", how="left", name="lj").to(out)

    def rec(i: int, ts: int) -> tuple[bytes, bytes, dict]:
        return (b"a", orjson.dumps({"id": i}), {"timestamp": T0 + ts})

    with running(app) as outcome:
        # stream time reaches 10s; 6s closes at 6s + 1s + 1ms + 2s <= 10s: late; 7.5s is within the grace
        kafka.produce(left_topic, [rec(1, 0), rec(2, 10_000), rec(3, 6_000), rec(4, 7_500)])
        wait_for(lambda: join_topic_size(kafka, name, "lj", 1) >= 4, what="lefts in", outcome=outcome)
        kafka.produce(right_topic, [rec(11, 10_500), rec(12, 8_000), rec(13, 6_500)])  # 6.5s: late too
        wait_for(lambda: join_topic_size(kafka, name, "lj", 1) >= 7, what="rights in", outcome=outcome)
        kafka.produce(left_topic, [(b"z", orjson.dumps({"id": 99}), {"timestamp": T0 + 60_000})])
        got = kafka.drain(out, expected=3, timeout=60)
        time.sleep(1.5)
        got = kafka.drain(out, timeout=10, idle=1)  # all of it again: read back, partitions interleave
        assert "error" not in outcome
    assert outputs(got) == Counter(
        {
            ("a", T0 + 10_500, orjson.dumps({"l": 2, "r": 11})): 1,
            ("a", T0 + 8_000, orjson.dumps({"l": 4, "r": 12})): 1,
            ("a", T0, orjson.dumps({"l": 1, "r": None})): 1,  # closed unmatched: emitted once
        }
    )
    assert app.stats is not None


def test_a_raising_join_function_sends_the_record_to_the_dead_letter_topic(kafka, topic_factory, tmp_path):
    left_topic, right_topic = topic_factory(partitions=1), topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    name = f"sj-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, dlq, f"{name}-bad-repartition", f"{name}-bad-changelog"])
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name)
    app.on_error(retries=1, backoff="10ms..10ms", dead_letter=dlq)

    def merge(left: dict | None, right: dict | None) -> dict:
        if (left or {}).get("boom") or (right or {}).get("boom"):
            raise ValueError("boom")
        return pair(left, right)

    app.stream(left_topic).join(app.stream(right_topic), merge, within="1s", how="left", name="bad").to(out)
    with running(app) as outcome:
        kafka.produce(left_topic, [(b"a", orjson.dumps({"id": 1}), {"timestamp": T0})])
        kafka.produce(left_topic, [(b"b", orjson.dumps({"id": 2, "boom": True}), {"timestamp": T0})])
        wait_for(lambda: join_topic_size(kafka, name, "bad", 1) >= 2, what="lefts in", outcome=outcome)
        kafka.produce(right_topic, [(b"a", orjson.dumps({"id": 11, "boom": True}), {"timestamp": T0 + 500})])
        kafka.produce(right_topic, [(b"a", orjson.dumps({"id": 12}), {"timestamp": T0 + 700})])
        wait_for(lambda: join_topic_size(kafka, name, "bad", 1) >= 4, what="rights in", outcome=outcome)
        kafka.produce(left_topic, [(b"z", orjson.dumps({"id": 99}), {"timestamp": T0 + 60_000})])
        letters = kafka.drain(dlq, expected=2, timeout=60)
        got = kafka.drain(out, expected=1, timeout=30)
        assert "error" not in outcome
    # a:1 joins 12; its join with 11 raised: 11 is dead-lettered (and never buffered); b:2 fails when emitted
    assert [orjson.loads(r.value) for r in got] == [{"l": 1, "r": 12}]
    dead = sorted((orjson.loads(r.value)["id"], dict(r.headers)) for r in letters)
    assert [i for i, _h in dead] == [2, 11]
    for _i, headers in dead:
        assert headers["sluice.error.exception"] == b"ValueError"
        assert headers["sluice.error.topic"] == f"{name}-bad-repartition".encode()
    assert dead[0][1]["sluice.join"] == b"l" and dead[1][1]["sluice.join"] == b"r"


def test_join_configuration_errors_are_clear():
    app = App("cfg", brokers="127.0.0.1:9092")
    a, b = app.stream("a"), app.stream("b")
    with pytest.raises(ConfigError, match="needs within="):
        a.join(b, pair)
    with pytest.raises(ConfigError, match="how='cross'"):
        a.join(b, pair, within="1s", how="cross")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a function"):
        a.join(b, "not a function", within="1s")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="join name"):
        a.join(b, pair, within="1s", name="bad name")
    other = App("other", brokers="127.0.0.1:9092").stream("c")
    with pytest.raises(ConfigError, match="another app"):
        a.join(other, pair, within="1s")
    with pytest.raises(ConfigError, match=r"bare number|unit"):
        a.join(b, pair, within=5)  # type: ignore[arg-type]


RESTART_APP = """
import time
from sluice import App

app = App({group!r}, brokers={bootstrap!r}, guarantee={guarantee!r}, state_dir={state!r},
          max_poll_records=100, commit_interval="300ms", session_timeout_ms=6000, heartbeat_interval_ms=1000)

def slow(e):
    time.sleep(0.001)
    return e

def pair(left, right):
    return {{"l": left["id"] if left else None, "r": right["id"] if right else None}}

clicks = app.stream({left!r}).map(slow).key_by(lambda e: e["k"])
views = app.stream({right!r}).map(slow).key_by(lambda e: e["k"])
clicks.join(views, pair, within="3s", grace="1h", how="outer", name="cv").to({out!r})
"""


def all_committed(kafka, group: str, sources: dict[str, int], n: int, join_partitions: int) -> bool:
    """The group committed ``n`` records of its sources and every record of its join topic ``cv``."""
    ends = kafka.end_offsets(f"{group}-cv-repartition", join_partitions)
    done = kafka.committed(group, f"{group}-cv-repartition", join_partitions)
    consumed = sum(max(o, 0) for t, p in sources.items() for o in kafka.committed(group, t, p).values())
    # exactly-once: the end is after a transaction marker
    return consumed == n and all(done[p] >= ends[p] - 1 for p in ends)


def fast_oracle(left: Side, right: Side, within: int) -> Counter:
    """``oracle(..., "outer", ...)`` by key, for thousands of records."""
    by_key: dict[str, tuple[Side, Side]] = {}
    for k, t, i in left:
        by_key.setdefault(k, ([], []))[0].append((k, t, i))
    for k, t, i in right:
        by_key.setdefault(k, ([], []))[1].append((k, t, i))
    out: Counter = Counter()
    for lefts, rights in by_key.values():
        out += oracle(lefts, rights, "outer", within)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_join_killed_mid_stream_and_restarted_gives_the_oracles_output(
    kafka, topic_factory, tmp_path, guarantee
):
    rng = random.Random(3)
    n = 1_500
    left = [(f"k{rng.randrange(25)}", T0 + i * 40 + rng.randrange(2_000), i) for i in range(n)]
    right = [(f"k{rng.randrange(25)}", T0 + i * 40 + rng.randrange(2_000), 10_000 + i) for i in range(n)]
    left_topic, right_topic = topic_factory(partitions=2), topic_factory(partitions=3)
    out = f"out-{uuid.uuid4().hex[:8]}"
    group = f"sjr-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{group}-cv-repartition", f"{group}-cv-changelog"])
    source = RESTART_APP.format(
        group=group,
        bootstrap=kafka.bootstrap,
        guarantee=guarantee,
        state=str(tmp_path / "state"),
        left=left_topic,
        right=right_topic,
        out=out,
    )
    module = write_app(tmp_path, f"app_{group.replace('-', '_')}", source)
    kafka.produce(left_topic, records(left))
    kafka.produce(right_topic, records(right))
    read = {"isolation.level": "read_committed"}

    worker = AppProcess(tmp_path, module, log_name="w0.log")
    wait_for(
        lambda: join_topic_size(kafka, group, "cv", 3) >= n // 2, timeout=90, what="half in the join topic"
    )
    worker.kill9()  # mid-stream: outputs, state and offsets of the last batches are not all committed
    committed_at_kill = kafka.committed(group, f"{group}-cv-repartition", 3)
    worker = AppProcess(tmp_path, module, log_name="w1.log")
    try:
        wait_for(
            lambda: all_committed(kafka, group, {left_topic: 2, right_topic: 3}, 2 * n, 3),
            timeout=180,
            interval=1,
            what="every input committed",
        )
        flush_all(kafka, left_topic)
        expected = fast_oracle(left, right, WITHIN)
        got = outputs(kafka.drain(out, expected=sum(expected.values()), timeout=120, idle=5, **read))
        time.sleep(2)
        got = outputs(kafka.drain(out, timeout=30, idle=3, **read))
        joined = kafka.drain(f"{group}-cv-repartition", timeout=30, idle=3, **read)
    finally:
        assert worker.terminate() == 0, worker.log()[-3000:]
    assert not set(got) - set(expected), "outputs the oracle does not have"
    missing = expected - got
    assert not missing, f"{sum(missing.values())} outputs missing, e.g. {list(missing)[:3]}"
    duplicates = got - expected
    if guarantee == "exactly_once":
        assert not duplicates
    else:
        # repeated: only outputs of records processed again after the kill (the uncommitted tail):
        # copies of source records written to the join topic twice, or join topic records past its commit
        copies = Counter(orjson.loads(r.value)["id"] for r in joined)
        tail = {i for i, c in copies.items() if c > 1} | {
            orjson.loads(r.value)["id"] for r in joined if r.offset >= committed_at_kill[r.partition]
        }
        for _key, _ts, value in duplicates:
            ids = orjson.loads(value)
            assert ids["l"] in tail or ids["r"] in tail, f"{ids} repeated, but neither record was replayed"


def test_a_second_worker_joining_mid_stream_gives_the_oracles_output(kafka, topic_factory, tmp_path):
    rng = random.Random(8)
    n = 1_000
    left = [(f"k{rng.randrange(20)}", T0 + i * 40 + rng.randrange(2_000), i) for i in range(n)]
    right = [(f"k{rng.randrange(20)}", T0 + i * 40 + rng.randrange(2_000), 10_000 + i) for i in range(n)]
    left_topic, right_topic = topic_factory(partitions=4), topic_factory(partitions=4)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"sjw-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-cv-repartition", f"{name}-cv-changelog"])

    def build(worker: int) -> App:
        app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / f"w{worker}")
        clicks = app.stream(left_topic).key_by(lambda e: e["k"])
        views = app.stream(right_topic).key_by(lambda e: e["k"])
        clicks.join(views, pair, within="3s", grace="1h", how="outer", name="cv").to(out)
        return app

    half = n // 2
    kafka.produce(left_topic, records(left[:half]))
    kafka.produce(right_topic, records(right[:half]))
    first = build(1)
    with running(first) as one:
        wait_for(lambda: join_topic_size(kafka, name, "cv", 4) >= 2 * half, what="first half in", outcome=one)
        second = build(2)  # joins: partitions of the join topic move, their state is restored on w2
        with running(second) as two:
            kafka.produce(left_topic, records(left[half:]))
            kafka.produce(right_topic, records(right[half:]))
            wait_for(lambda: join_topic_size(kafka, name, "cv", 4) >= 2 * n, what="all in", outcome=two)
            wait_for(
                lambda: all_committed(kafka, name, {left_topic: 4, right_topic: 4}, 2 * n, 4),
                what="all processed",
                outcome=two,
            )
            flush_all(kafka, left_topic)
            expected = fast_oracle(left, right, WITHIN)
            kafka.drain(out, expected=sum(expected.values()), timeout=90, idle=5)
            time.sleep(2)  # nothing more may come
            got = outputs(kafka.drain(out, timeout=30, idle=3))
            assert "error" not in one and "error" not in two
    assert first.stats.records_in > 0 and second.stats.records_in > 0
    assert not set(got) - set(expected), "outputs the oracle does not have"
    assert not expected - got, f"{sum((expected - got).values())} outputs missing"
    assert got == expected  # a rebalance commits what it revokes: nothing repeats


def test_a_record_far_in_the_future_is_dead_lettered_before_it_closes_every_window(
    kafka, topic_factory, tmp_path
):
    left_topic, right_topic = topic_factory(partitions=1), topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    name = f"sj-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, dlq, f"{name}-fut-repartition", f"{name}-fut-changelog"])
    app = App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name)
    app.on_error(dead_letter=dlq)
    lefts = app.stream(left_topic, timestamp=lambda e: e["ts"])  # event time from the payload
    lefts.join(app.stream(right_topic), pair, within="1s", how="left", name="fut").to(out)
    future = int(time.time() * 1000) + 3 * 3_600_000
    with running(app) as outcome:
        kafka.produce(left_topic, [(b"a", orjson.dumps({"id": 1, "ts": T0}))])
        kafka.produce(left_topic, [(b"a", orjson.dumps({"id": 2, "ts": future}))])
        letters = kafka.drain(dlq, expected=1, timeout=60)
        kafka.produce(right_topic, [(b"a", orjson.dumps({"id": 11}), {"timestamp": T0 + 500})])
        got = kafka.drain(out, expected=1, timeout=60)
        assert "error" not in outcome
    assert [orjson.loads(r.value)["id"] for r in letters] == [2]
    assert dict(letters[0].headers)["sluice.error.exception"] == b"FutureTimestampError"
    # stream time did not move: the record at T0 was still open and joined
    assert [orjson.loads(r.value) for r in got] == [{"l": 1, "r": 11}]
