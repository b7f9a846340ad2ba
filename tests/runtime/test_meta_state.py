"""Record metadata and keyed state in user functions, end to end on the real broker (issue 17)."""

from __future__ import annotations

import shutil
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from sluice import App
from sluice.errors import ConfigError
from tests.apps import running, wait_for
from tests.runtime.test_eos_recovery import produce_input_from
from tests.runtime.test_exactly_once import USERS, check, kill_and_restart, produce_input, read_committed

T0 = 1_700_000_000_000


def make_app(kafka, tmp_path: Path, name: str | None = None, **kwargs) -> App:
    name = name or f"ms-{uuid.uuid4().hex[:8]}"
    state_dir = kwargs.pop("state_dir", tmp_path / name)
    return App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=state_dir, **kwargs)


def internal_topics(kafka, app: App, store: str, *extra: str) -> None:
    kafka.created.extend([f"{app.name}-{store}-changelog", f"{app.name}-{store}-repartition", *extra])


def values(records) -> list:
    return [orjson.loads(r.value) for r in records]


def test_functions_see_the_key_timestamp_headers_topic_partition_and_offset_of_each_record(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=2)
    out, flat = f"out-{uuid.uuid4().hex[:8]}", f"flat-{uuid.uuid4().hex[:8]}"
    kafka.produce(
        src,
        [
            (
                f"k{i}".encode(),
                orjson.dumps({"i": i}),
                {"timestamp": T0 + i, "headers": [("trace", f"t{i}".encode()), ("n", None)]},
            )
            for i in range(40)
        ],
    )
    sunk: list[tuple] = []

    def describe(e, m):
        return {
            "i": e["i"],
            "key": m.key.decode(),
            "timestamp": m.timestamp,
            "headers": [[k, v.decode() if v is not None else None] for k, v in m.headers],
            "trace": m.header("trace").decode(),
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
        }

    app = make_app(kafka, tmp_path)
    events = app.stream(src)
    events.filter(lambda e, m: m.offset % 2 == 0, meta=True).map(describe, meta=True).to(out)
    events.flat_map(lambda e, m: [[e["i"], m.partition, m.offset]] * (e["i"] % 3), meta=True).to(flat)
    events.sink(lambda e, m: sunk.append((e["i"], m.key, m.topic, m.partition, m.offset)), meta=True)
    kafka.created.extend([out, flat])
    inputs = {orjson.loads(r.value)["i"]: r for r in kafka.drain(src, expected=40)}
    even = [r for r in inputs.values() if r.offset % 2 == 0]
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=len(even), timeout=60))
        flat_got = kafka.drain(flat, expected=sum(i % 3 for i in range(40)), timeout=60)
        wait_for(lambda: len(sunk) >= 40, what="every record sunk", outcome=outcome)

    assert len(got) == len(even)
    for v in got:
        r = inputs[v["i"]]
        assert v == {
            "i": v["i"],
            "key": f"k{v['i']}",
            "timestamp": T0 + v["i"],
            "headers": [["trace", f"t{v['i']}"], ["n", None]],
            "trace": f"t{v['i']}",
            "topic": src,
            "partition": r.partition,
            "offset": r.offset,
        }
    assert sorted(values(flat_got)) == sorted(
        [i, r.partition, r.offset] for i, r in inputs.items() for _ in range(i % 3)
    )
    assert sorted(sunk) == sorted((i, r.key, src, r.partition, r.offset) for i, r in inputs.items())


def test_with_timestamp_and_with_headers_set_what_the_output_topic_holds(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    kafka.produce(
        src,
        [
            (b"k", orjson.dumps({"at": T0 + 1000 * i, "kind": f"c{i}"}), {"headers": [("keep", b"yes")]})
            for i in range(10)
        ],
    )
    app = make_app(kafka, tmp_path)
    (
        app.stream(src)
        .with_timestamp(lambda e: e["at"])
        .with_headers(lambda e, m: [*m.headers, ("kind", e["kind"])], meta=True)
        .to(out)
    )
    kafka.created.append(out)
    with running(app):
        got = kafka.drain(out, expected=10, timeout=60)
    assert [r.timestamp for r in got] == [T0 + 1000 * i for i in range(10)]
    assert [r.headers for r in got] == [(("keep", b"yes"), ("kind", f"c{i}".encode())) for i in range(10)]
    assert all(r.key == b"k" for r in got)


def test_a_state_step_counts_and_deduplicates_per_key_exactly(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=3)
    counts, unique = f"counts-{uuid.uuid4().hex[:8]}", f"unique-{uuid.uuid4().hex[:8]}"
    n = 600
    kafka.produce(
        src,
        [(f"id-{i % 150}", orjson.dumps({"i": i, "user": f"u{i % 7}", "id": i % 150})) for i in range(n)],
    )

    def count(e, meta, state):
        state["n"] = state.get("n", 0) + 1
        return {"user": meta.key, "n": state["n"], "i": e["i"], "headers": [h[0] for h in meta.headers]}

    def first_sighting(e, state):
        if "seen" in state:
            return False
        state["seen"] = True
        return True

    app = make_app(kafka, tmp_path)
    events = app.stream(src)
    events.key_by(lambda e: e["user"]).map(count, meta=True, state=True, name="per-user").to(counts)
    events.filter(first_sighting, state=True, name="dedup").to(unique)  # by the record key: no repartition
    internal_topics(kafka, app, "per-user", counts)
    kafka.created.extend([unique, f"{app.name}-dedup-changelog"])
    with running(app) as outcome:
        got = kafka.drain(counts, expected=n, timeout=90)
        firsts = kafka.drain(unique, expected=150, timeout=60)
        assert "error" not in outcome

    by_user: dict[str, list[int]] = defaultdict(list)
    for r in got:
        v = orjson.loads(r.value)
        assert r.key == v["user"].encode()  # key_by's key, as a str: written as is
        assert v["headers"] == []  # the repartition topic's own header is not the user's
        by_user[v["user"]].append(v["n"])
    expected = Counter(f"u{i % 7}" for i in range(n))
    assert {u: ns for u, ns in by_user.items()} == {u: list(range(1, c + 1)) for u, c in expected.items()}
    assert sorted(orjson.loads(r.value)["id"] for r in firsts) == list(range(150))
    assert sorted(orjson.loads(r.value)["i"] for r in firsts) == list(range(150))  # the first of each id


def test_a_function_that_raises_leaves_the_state_unchanged_and_its_record_is_dead_lettered(
    kafka, topic_factory, tmp_path
):
    src = topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    items = ["a", "b", "boom", "c", "bad-json", "d"]
    kafka.produce(src, [(b"k", orjson.dumps({"item": item})) for item in items])
    calls: Counter = Counter()

    def collect(e, state):
        calls[e["item"]] += 1
        state["n"] = state.get("n", 0) + 1
        state.setdefault("items", []).append(e["item"])  # a nested change: must not land either
        if e["item"] == "boom":
            raise RuntimeError("boom after writing the state")
        if e["item"] == "bad-json":
            state["when"] = object()  # not JSON: the record fails, with its state
        return dict(state)

    app = make_app(kafka, tmp_path)
    app.on_error(retries=2, backoff="10ms..10ms", dead_letter=dlq)
    app.stream(src).map(collect, state=True, name="collect").to(out)
    kafka.created.extend([out, dlq, f"{app.name}-collect-changelog"])
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=4, timeout=60))
        letters = kafka.drain(dlq, expected=2, timeout=60)
        assert "error" not in outcome
    assert got == [
        {"n": 1, "items": ["a"]},
        {"n": 2, "items": ["a", "b"]},
        {"n": 3, "items": ["a", "b", "c"]},
        {"n": 4, "items": ["a", "b", "c", "d"]},
    ]
    assert calls["boom"] == 3  # the first call and two retries, each from the state before it
    assert [orjson.loads(r.value)["item"] for r in letters] == ["boom", "bad-json"]
    exceptions = [dict(r.headers)["sluice.error.exception"] for r in letters]
    assert exceptions == [b"RuntimeError", b"StateError"]
    assert all(dict(r.headers)["sluice.error.step"] == b"collect" for r in letters)


def test_state_is_restored_from_the_changelog_by_a_new_instance_with_a_new_state_dir(
    kafka, topic_factory, tmp_path, caplog
):
    src = topic_factory(partitions=2)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"ms-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([out, f"{name}-totals-changelog", f"{name}-totals-repartition"])

    def total(e, state):
        state["sum"] = state.get("sum", 0) + e["amount"]
        return {"user": e["user"], "sum": state["sum"]}

    def run_phase(start: int, end: int, state_dir: Path) -> dict[str, int]:
        app = make_app(kafka, tmp_path, name, state_dir=state_dir)
        app.stream(src).key_by(lambda e: e["user"]).map(total, state=True, name="totals").to(out)
        kafka.produce(
            src, [(b"x", orjson.dumps({"user": f"u{i % 5}", "amount": i})) for i in range(start, end)]
        )
        with running(app):
            last: dict[str, int] = {}
            for v in values(kafka.drain(out, expected=end, timeout=60)):
                last[v["user"]] = v["sum"]
            return last

    first = run_phase(0, 100, tmp_path / "one")
    assert first == {f"u{u}": sum(i for i in range(100) if i % 5 == u) for u in range(5)}
    shutil.rmtree(tmp_path / "one")
    with caplog.at_level("INFO", logger="sluice.runtime.stateful"):
        second = run_phase(100, 150, tmp_path / "two")
    assert second == {f"u{u}": sum(i for i in range(150) if i % 5 == u) for u in range(5)}
    assert "totals[" in caplog.text and "restored" in caplog.text


def test_state_ttl_expires_a_key_by_stream_time(kafka, topic_factory, tmp_path):
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    records = [
        ("a", T0),
        ("a", T0 + 1_000),
        ("gone", T0 + 2_000),
        ("b", T0 + 9_000),
        ("a", T0 + 10_500),  # a's last change at T0 + 1s: 9.5 s ago, within the TTL of 10 s
        ("b", T0 + 30_000),  # stream time: a (changed at 10.5 s) and gone (2 s) have expired
        ("a", T0 + 31_000),
        ("b", T0 + 32_000),
    ]
    kafka.produce(src, [(k.encode(), orjson.dumps({"k": k}), {"timestamp": ts}) for k, ts in records])

    def count(e, state):
        state["n"] = state.get("n", 0) + 1
        return [e["k"], state["n"]]

    app = make_app(kafka, tmp_path)
    app.stream(src).map(count, state=True, state_ttl="10s", name="ttl").to(out)
    changelog = f"{app.name}-ttl-changelog"
    kafka.created.extend([out, changelog])
    with running(app):
        got = values(kafka.drain(out, expected=len(records), timeout=60))
        wait_for(
            lambda: any(r.key == b"gone" and r.value is None for r in kafka.drain(changelog, idle=1)),
            what="a tombstone for the expired key",
        )
    assert got == [["a", 1], ["a", 2], ["gone", 1], ["b", 1], ["a", 3], ["b", 1], ["a", 1], ["b", 2]]


def test_exactly_once_with_state_is_exact_after_aborts(kafka, topic_factory, tmp_path):
    """An output topic missing for a while aborts transactions: the state goes back with them."""
    src = topic_factory(partitions=2)
    ids, counts = f"ids-{uuid.uuid4().hex[:8]}", f"counts-{uuid.uuid4().hex[:8]}"
    half = 500
    produce_input(kafka, src, half)
    app = make_app(
        kafka,
        tmp_path,
        guarantee="exactly_once",
        producer_config={"message.timeout.ms": 2000},
    )

    def count(e, state):
        state["n"] = state.get("n", 0) + 1
        return {"key": e["user"], "value": state["n"]}

    events = app.stream(src)
    events.map(lambda e: {"id": e["id"]}).to(ids)
    events.key_by(lambda e: e["user"]).map(count, state=True, name="c").to(counts)
    internal_topics(kafka, app, "c", counts, f"{app.name}.dlq")
    with running(app) as outcome:
        wait_for(lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= half, outcome=outcome)
        kafka.admin.delete_topics([ids])[ids].result(10)
        produce_input_from(kafka, src, half, 2 * half)
        committer = app._runner.committer
        wait_for(lambda: committer.renewals >= 1, 60, what="an abort and a new producer", outcome=outcome)
        topic_factory(ids, partitions=2)  # the outage ends
        wait_for(
            lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= 2 * half,
            90,
            what="every input committed",
            outcome=outcome,
        )
    assert "error" not in outcome
    assert committer.undone + committer.restored >= 1
    all_ids = [{"id": i} for i in range(half)] + read_committed(kafka, ids)
    duplicates, out_of_sequence = check(all_ids, read_committed(kafka, counts), 2 * half)
    assert (duplicates, out_of_sequence) == (0, 0)


STATE_APP = """
import time
from sluice import App

app = App(
    {group!r},
    brokers={bootstrap!r},
    guarantee={guarantee!r},
    state_dir={state!r},
    max_poll_records=200,
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
    progress_interval="2s",
)

def slow(e):
    time.sleep({delay})
    return {{"id": e["id"]}}

def count(e, state):
    state["n"] = state.get("n", 0) + 1
    return {{"key": e["user"], "value": state["n"]}}

events = app.stream({src!r})
events.map(slow).to({ids!r})
events.key_by(lambda e: e["user"]).map(count, state=True, name="per-user").to({counts!r})
"""


@pytest.mark.parametrize(
    ("guarantee", "exact"), [("exactly_once", True), ("at_least_once", False)], ids=["eos", "alo"]
)
@pytest.mark.timeout(600)
def test_kill9_with_a_state_step(kafka, tmp_path, guarantee, exact):
    """Exactly-once: every id once and every user's counts 1, 2, ..., n across kill -9;
    the same run at-least-once repeats some (the proof that the check can fail)."""
    n = 30_000
    src = kafka.create_topic(partitions=3)
    ids, counts = f"ids-{uuid.uuid4().hex[:8]}", f"counts-{uuid.uuid4().hex[:8]}"
    group = f"ms-{uuid.uuid4().hex[:8]}"
    kafka.created.extend([ids, counts, f"{group}-per-user-repartition", f"{group}-per-user-changelog"])
    module = f"app_{group.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        STATE_APP.format(
            group=group,
            bootstrap=kafka.bootstrap,
            guarantee=guarantee,
            state=str(tmp_path / "state"),
            delay=0.0001,
            src=src,
            ids=ids,
            counts=counts,
        )
    )
    p = {"src": src, "ids": ids, "counts": counts, "group": group, "module": module, "partitions": 3}
    produce_input(kafka, src, n)
    kill_and_restart(tmp_path, p, kafka, n, kills=3, seed=17, second_worker=False)
    duplicates, out_of_sequence = check(read_committed(kafka, ids), read_committed(kafka, counts), n)
    if exact:
        assert (duplicates, out_of_sequence) == (0, 0)
    else:
        assert duplicates > 0 or out_of_sequence > 0


def test_meta_and_state_configuration_errors_are_clear(tmp_path):
    app = App("cfg", brokers="127.0.0.1:9092", state_dir=tmp_path)
    events = app.stream("events")
    with pytest.raises(ConfigError, match="needs state=True"):
        events.map(lambda v: v, state_ttl="1h")
    with pytest.raises(ConfigError, match="letters, digits"):
        events.map(lambda v, s: v, state=True, name="bad name!")
    with pytest.raises(ConfigError, match="several topics"):
        app.stream(["a", "b"]).filter(lambda v, s: True, state=True)
    with pytest.raises(ConfigError, match="unit"):
        events.map(lambda v, s: v, state=True, state_ttl=60)
    with pytest.raises(ConfigError, match="SinkRow"):
        events.sink(app.sinks.jsonl(str(tmp_path / "x.jsonl")), meta=True)
    assert USERS  # the exactly-once helpers count users the same way


def test_state_steps_refuse_concurrency_and_share_no_store_name(kafka, topic_factory, tmp_path):
    src = topic_factory()
    app = make_app(kafka, tmp_path, concurrency=4)
    app.stream(src).map(lambda v, s: v, state=True).to(f"out-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError, match=r"state=True steps.*concurrency=1"):
        app.run(install_signal_handlers=False)
    app = make_app(kafka, tmp_path)
    events = app.stream(src)
    events.map(lambda v, s: v, state=True, name="same").to(f"out-{uuid.uuid4().hex[:8]}")
    events.filter(lambda v, s: v, state=True, name="same").to(f"out-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError, match="two aggregations or state steps are named 'same'"):
        app.run(install_signal_handlers=False)


def test_a_restored_state_keeps_its_ttl(kafka, topic_factory, tmp_path):
    """The expiry index is rebuilt from the changelog: a new instance deletes what expired there."""
    src = topic_factory(partitions=1)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"ms-{uuid.uuid4().hex[:8]}"
    changelog = f"{name}-ttl-changelog"
    kafka.created.extend([out, changelog])

    def count(e, state):
        state["n"] = state.get("n", 0) + 1
        return [e["k"], state["n"]]

    def run_phase(records: list[tuple[str, int]], total: int, state_dir: Path) -> list:
        app = make_app(kafka, tmp_path, name, state_dir=state_dir)
        app.stream(src).map(count, state=True, state_ttl="10s", name="ttl").to(out)
        kafka.produce(src, [(k.encode(), orjson.dumps({"k": k}), {"timestamp": ts}) for k, ts in records])
        with running(app):
            return values(kafka.drain(out, expected=total, timeout=60))

    first = run_phase([("a", T0), ("gone", T0 + 1_000), ("a", T0 + 2_000)], 3, tmp_path / "one")
    assert first == [["a", 1], ["gone", 1], ["a", 2]]
    second = run_phase([("a", T0 + 11_800)], 4, tmp_path / "two")
    assert second[3:] == [["a", 3]]  # a changed at 2 s: alive until 12 s
    tombstones = [r.key for r in kafka.drain(changelog, idle=1) if r.value is None]
    assert tombstones == [b"gone"]  # changed at 1 s, expired at 11 s: deleted by the restored index


def test_two_workers_and_a_rebalance_give_the_counts_of_one(kafka, topic_factory, tmp_path):
    """Partitions move to a worker joining mid-stream: their states are restored there from the changelog."""
    src = topic_factory(partitions=4)
    out = f"out-{uuid.uuid4().hex[:8]}"
    name = f"ms-{uuid.uuid4().hex[:8]}"
    users = [f"user-{i % 23}" for i in range(2_000)]

    def count(e, state):
        state["n"] = state.get("n", 0) + 1
        return {"key": e["user"], "value": state["n"]}

    def build(worker: int) -> App:
        app = make_app(kafka, tmp_path, name, state_dir=tmp_path / f"w{worker}")
        app.stream(src).key_by(lambda e: e["user"]).map(count, state=True, name="n").to(out)
        return app

    def last_updates() -> dict:
        last: dict = {}
        for v in values(kafka.drain(out, idle=1.0, timeout=20)):
            last[v["key"]] = max(last.get(v["key"], 0), v["value"])
        return last

    def produce(part: list[str]) -> None:
        kafka.produce(src, [(u.encode(), orjson.dumps({"user": u})) for u in part])

    kafka.created.extend([out, f"{name}-n-changelog", f"{name}-n-repartition"])
    produce(users[:1_000])
    first = build(1)
    with running(first) as one:
        wait_for(lambda: len(last_updates()) == 23, what="first half counted", outcome=one)
        second = build(2)
        with running(second) as two:
            produce(users[1_000:])
            want = Counter(users)
            wait_for(lambda: last_updates() == want, timeout=90, what="all counted", outcome=two)
    assert first.stats.records_in > 0 and second.stats.records_in > 0


@pytest.mark.parametrize("repartition", [True, False], ids=["key_by", "record-key"])
def test_a_record_without_a_key_is_dead_lettered_by_a_state_step(kafka, topic_factory, tmp_path, repartition):
    src = topic_factory(partitions=1)
    out, dlq = f"out-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    users = ["a", None, "a"]
    kafka.produce(src, [(u.encode() if u else None, orjson.dumps({"user": u})) for u in users])

    def count(e, state):
        state["n"] = state.get("n", 0) + 1
        return state["n"]

    app = make_app(kafka, tmp_path)
    app.on_error(retries=0, dead_letter=dlq)
    events = app.stream(src)
    keyed = events.key_by(lambda e: e["user"]) if repartition else events
    keyed.map(count, state=True, name="n").to(out)
    internal_topics(kafka, app, "n", out, dlq)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=2, timeout=60))
        letters = kafka.drain(dlq, expected=1, timeout=60)
        assert "error" not in outcome
    assert got == [1, 2]
    assert [dict(r.headers)["sluice.error.exception"] for r in letters] == [b"StateError"]
    assert b"has no key" in dict(letters[0].headers)["sluice.error.message"]
