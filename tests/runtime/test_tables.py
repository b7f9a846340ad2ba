"""Tables and stream-table joins end to end on the real broker: oracle, repartition, global tables, restore."""

from __future__ import annotations

import random
import shutil
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sluice import App
from sluice.errors import ConfigError
from tests.apps import AppProcess, running, wait_for, write_app
from tests.ops.helpers import scrape, value

T0 = 1_700_000_000_000
#: the partitioner of sluice's producers (and Java clients): table keys land where repartitioned records do
MURMUR2 = {"partitioner": "murmur2_random"}


def make_app(kafka, tmp_path: Path, name: str | None = None, **kwargs) -> App:
    name = name or f"tb-{uuid.uuid4().hex[:8]}"
    return App(name, brokers=kafka.bootstrap, commit_interval="200ms", state_dir=tmp_path / name, **kwargs)


def out_topic(kafka) -> str:
    name = f"out-{uuid.uuid4().hex[:8]}"
    kafka.created.append(name)
    return name


def values(records) -> list:
    return [orjson.loads(r.value) for r in records]


def merge(order: dict, user: dict | None) -> dict:
    return {"i": order["i"], "user": user}


# ---------------------------------------------------------------------------------------------- oracle
# an event is ("t", key, value or None, ts): a table update, or ("s", key, None, ts): a stream record
KEYS = ["a", "b", "c"]
table_event = st.tuples(
    st.just("t"), st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 99)), st.integers(0, 15)
)
stream_event = st.tuples(st.just("s"), st.sampled_from(KEYS), st.none(), st.integers(0, 15))


def join_oracle(events: list[tuple]) -> list[tuple[int, int | None]]:
    """``(stream index, the key's table value or None)`` per stream record, by brute force.

    Before a stream record stamped ``t`` the table holds the longest prefix (in offset
    order) of the table records that the records before it let in: a table record is
    applied once it heads its queue and its timestamp is ``<= t``. The table is rebuilt
    from scratch for each stream record.
    """
    table = [e for e in events if e[0] == "t"]
    stream = [e for e in events if e[0] == "s"]
    applied = 0
    out = []
    for i, (_s, key, _v, ts) in enumerate(stream):
        while applied < len(table) and table[applied][3] <= ts:
            applied += 1
        state: dict[str, int | None] = {}
        for _t, k, v, _ts in table[:applied]:
            state[k] = v
        out.append((i, state.get(key)))
    return out


scenario = st.lists(st.one_of(table_event, stream_event), min_size=1, max_size=30)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios=st.lists(scenario, min_size=1, max_size=8))
@example(
    scenarios=[
        [("t", "a", 1, 5), ("s", "a", None, 5)],  # a tie: the table update goes first
        [("t", "a", 1, 9), ("t", "a", 2, 1), ("s", "a", None, 5)],  # a later head holds back the rest
        [("s", "a", None, 5), ("t", "a", 1, 4), ("s", "a", None, 4), ("s", "a", None, 6)],
        [("t", "b", 3, 0), ("t", "b", None, 2), ("s", "b", None, 1), ("s", "b", None, 2)],
    ]
)
def test_stream_table_join_matches_the_timestamp_oracle_inner_and_left(kafka, tmp_path_factory, scenarios):
    """Each scenario is one partition of the stream and of the table: a single-partition interleaving."""
    n = len(scenarios)
    src, users = kafka.create_topic(partitions=n), kafka.create_topic(partitions=n)
    want_left: list[dict] = []
    for p, events in enumerate(scenarios):
        stream_events = [e for e in events if e[0] == "s"]
        kafka.produce(
            users,
            [
                (k, None if v is None else orjson.dumps({"v": v}), {"timestamp": T0 + ts * 1000})
                for kind, k, v, ts in events
                if kind == "t"
            ],
            partition=p,
        )
        kafka.produce(
            src,
            [
                (k, orjson.dumps({"p": p, "i": i}), {"timestamp": T0 + ts * 1000})
                for i, (_s, k, _v, ts) in enumerate(stream_events)
            ],
            partition=p,
        )
        want_left += [
            {"p": p, "i": i, "user": None if v is None else {"v": v}} for i, v in join_oracle(events)
        ]
    want_inner = [row for row in want_left if row["user"] is not None]
    left_out, inner_out = out_topic(kafka), out_topic(kafka)
    app = make_app(kafka, tmp_path_factory.mktemp("oracle"))
    table = app.table(users, value="json")
    orders = app.stream(src, value="json")
    orders.join(table, lambda o, u: {**o, "user": u}, how="left").to(left_out)
    orders.join(table, lambda o, u: {**o, "user": u}, how="inner").to(inner_out)

    def order(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda r: (r["p"], r["i"]))

    with running(app) as outcome:
        got_left = values(kafka.drain(left_out, expected=len(want_left), timeout=60))
        done = len(want_left) + len(want_inner)
        wait_for(lambda: app._runner.executor.produced >= done, timeout=30, outcome=outcome)
        got_inner = values(kafka.drain(inner_out, expected=len(want_inner) + 1, timeout=3, idle=1))
        misses = app._runner.snapshot().join_misses
    assert "error" not in outcome
    assert order(got_left) == want_left
    assert order(got_inner) == want_inner
    assert sum(misses.values()) == len(want_left) - len(want_inner)


# ---------------------------------------------------------------------------------------------- semantics
def test_a_null_value_deletes_the_row_and_inner_misses_are_counted(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(
        users,
        [
            (b"u1", orjson.dumps({"name": "Ann"}), {"timestamp": T0}),
            (b"u2", orjson.dumps({"name": "Bob"}), {"timestamp": T0}),
            (b"u1", None, {"timestamp": T0 + 10}),  # deleted before the orders below
        ],
        **MURMUR2,
    )
    kafka.produce(
        src,
        [(f"u{i % 3}".encode(), orjson.dumps({"i": i}), {"timestamp": T0 + 100}) for i in range(30)],
        **MURMUR2,
    )
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path, metrics_port=0)
    app.stream(src).join(app.table(users), merge, name="enrich").to(out)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=10, timeout=60))
        wait_for(lambda: sum(app._runner.snapshot().join_misses.values()) == 20, timeout=30, outcome=outcome)
        extra = kafka.drain(out, expected=11, timeout=2, idle=1)
        samples = scrape(app._runner.metrics.url)
    assert value(samples, "sluice_join_misses_total", step="enrich") == 20
    assert sorted(r["i"] for r in got) == [i for i in range(30) if i % 3 == 2]
    assert all(r["user"] == {"name": "Bob"} for r in got)
    assert len(extra) == 10


def test_key_by_then_join_repartitions_like_the_table(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=3), topic_factory(partitions=2)
    kafka.produce(users, [(f"u{n}", orjson.dumps({"n": n}), {"timestamp": T0}) for n in range(20)], **MURMUR2)
    orders = [{"i": i, "user": f"u{i % 25}"} for i in range(200)]  # u20..u24 have no row
    kafka.produce(src, [(None, orjson.dumps(o), {"timestamp": T0 + 1000}) for o in orders])
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path)
    (
        app.stream(src)
        .key_by(lambda o: o["user"])
        .join(app.table(users), lambda o, u: {**o, "n": u["n"] if u else None}, how="left", name="by-user")
        .to(out)
    )
    repartition = f"{app.name}-by-user-repartition"
    kafka.created.append(repartition)
    with running(app) as outcome:
        got = kafka.drain(out, expected=len(orders), timeout=60)
        assert "error" not in outcome
    assert len(got) == len(orders)
    for r in got:
        o = orjson.loads(r.value)
        n = int(o["user"][1:])
        assert o["n"] == (n if n < 20 else None)
        assert r.key == o["user"].encode()
    md = kafka.admin.list_topics(repartition, timeout=10).topics[repartition]
    assert len(md.partitions) == 2  # shaped like the table, not like the stream


def test_a_stream_not_copartitioned_with_its_table_is_refused_at_start(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=2), topic_factory(partitions=3)
    app = make_app(kafka, tmp_path)
    app.stream(src).join(app.table(users), merge).to(out_topic(kafka))
    with pytest.raises(ConfigError) as err:
        app.run(install_signal_handlers=False)
    message = str(err.value)
    assert f"{src!r} has 2 partitions" in message
    assert f"{users!r} has 3" in message


def test_join_api_refuses_what_a_table_join_cannot_do(kafka):
    app = App("tb-api", brokers=kafka.bootstrap)
    users = app.table("users")
    orders = app.stream("orders")
    with pytest.raises(ConfigError, match="'inner' or 'left'"):
        orders.join(users, merge, how="outer")
    with pytest.raises(ConfigError, match="key_by"):
        orders.join(users, merge, on=lambda o: o["user"])
    with pytest.raises(ConfigError, match="stream-stream"):
        orders.join(users, merge, within="5m")
    with pytest.raises(ConfigError, match="needs within="):  # a stream: a stream-stream join
        orders.join(app.stream("other"), merge)


def test_a_table_partition_paused_with_a_full_buffer_is_resumed_once_the_stream_took_it(
    kafka, topic_factory, tmp_path, monkeypatch
):
    """Reading partition 0 of the table fills partition 1's buffer, which pauses it; the stream must resume it.

    While the record of stream partition 0 waits for its table rows, the table reader
    fetches both partitions and partition 1's buffer passes the cap: paused. The record
    of stream partition 1 then takes all of it and needs more; the reader must resume
    the partition, not wait for a fetch that cannot come (it timed out with
    KafkaUnavailableError).
    """
    monkeypatch.setattr("sluice.runtime.tables.BUFFER_CAP", 100)
    monkeypatch.setattr("sluice.runtime.tables._FETCH", 40)
    src, users = topic_factory(partitions=2), topic_factory(partitions=2)
    for p, key in enumerate((b"a", b"b")):
        rows = [(key, orjson.dumps({"v": k}), {"timestamp": T0 + k}) for k in range(1000)]
        kafka.produce(users, rows, partition=p)
        kafka.produce(src, [(key, orjson.dumps({"i": p}), {"timestamp": T0 + 2000})], partition=p)
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path)
    app.stream(src).join(app.table(users), merge, how="left").to(out)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=2, timeout=20))
        assert "error" not in outcome
    assert sorted(got, key=lambda r: r["i"]) == [{"i": 0, "user": {"v": 999}}, {"i": 1, "user": {"v": 999}}]


def test_table_updates_keep_flowing_while_the_app_runs(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=1), topic_factory(partitions=1)
    kafka.produce(users, [(b"u1", orjson.dumps({"v": 1}), {"timestamp": T0})])
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path)
    app.stream(src).join(app.table(users), merge, how="left").to(out)
    with running(app) as outcome:
        kafka.produce(src, [(b"u1", orjson.dumps({"i": 0}), {"timestamp": T0 + 10})])
        first = values(kafka.drain(out, expected=1, timeout=30))
        kafka.produce(users, [(b"u1", orjson.dumps({"v": 2}), {"timestamp": T0 + 20})])
        kafka.produce(src, [(b"u1", orjson.dumps({"i": 1}), {"timestamp": T0 + 30})])
        both = values(kafka.drain(out, expected=2, timeout=30))
        assert "error" not in outcome
    assert first == [{"i": 0, "user": {"v": 1}}]
    assert both[1] == {"i": 1, "user": {"v": 2}}


def test_a_join_function_that_raises_sends_the_record_to_the_dead_letter_topic(
    kafka, topic_factory, tmp_path
):
    src, users = topic_factory(partitions=1), topic_factory(partitions=1)
    kafka.produce(users, [(b"u1", orjson.dumps({"v": 1}), {"timestamp": T0})])
    kafka.produce(
        src,
        [(b"u1", orjson.dumps({"i": i}), {"timestamp": T0 + 10, "headers": [("h", b"x")]}) for i in range(5)],
    )
    out, dlq = out_topic(kafka), out_topic(kafka)

    def fragile(order: dict, user: dict | None) -> dict:
        if order["i"] == 2:
            raise ValueError("order 2 is poison")
        return merge(order, user)

    app = make_app(kafka, tmp_path)
    app.on_error(retries=1, backoff="10ms..20ms", dead_letter=dlq)
    app.stream(src).join(app.table(users), fragile, name="fragile").to(out)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=4, timeout=60))
        dead = kafka.drain(dlq, expected=1, timeout=30)
        assert "error" not in outcome
    assert [r["i"] for r in got] == [0, 1, 3, 4]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert orjson.loads(dead[0].value) == {"i": 2}
    assert dead[0].key == b"u1"
    assert headers["h"] == b"x"
    assert headers["sluice.error.topic"] == src.encode()
    assert headers["sluice.error.offset"] == b"2"
    assert b"order 2 is poison" in headers["sluice.error.message"]
    assert headers["sluice.error.exception"].endswith(b"ValueError")


# ---------------------------------------------------------------------------------------------- global tables
def test_global_table_joins_on_any_field_and_follows_updates(kafka, topic_factory, tmp_path):
    src, countries = topic_factory(partitions=2), topic_factory(partitions=3)  # not co-partitioned: fine
    kafka.produce(
        countries,
        [
            (cc, orjson.dumps({"name": name}), {"timestamp": T0})
            for cc, name in [("fr", "France"), ("de", "Germany")]
        ],
    )
    orders = [{"i": i, "country": ["fr", "de", "xx"][i % 3]} for i in range(60)]
    kafka.produce(src, [(None, orjson.dumps(o), {"timestamp": T0 + 1}) for o in orders])
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path)
    table = app.global_table(countries, value="json")
    app.stream(src).join(table, lambda o, c: {**o, "name": c["name"]}, on=lambda o: o["country"]).to(out)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=40, timeout=60))
        kafka.produce(countries, [("xx", orjson.dumps({"name": "Nowhere"}), {"timestamp": T0 + 2})])
        sent = iter(range(100, 200))

        def joined_with_the_new_row() -> bool:
            # an order sent before the reader fetched the row is dropped (inner): send until one is joined
            kafka.produce(
                src, [(None, orjson.dumps({"i": next(sent), "country": "xx"}), {"timestamp": T0 + 3})]
            )
            return any(r["name"] == "Nowhere" for r in values(kafka.drain(out, timeout=3, idle=1)))

        wait_for(joined_with_the_new_row, timeout=30, interval=0.5, outcome=outcome)
        later = values(kafka.drain(out, timeout=5, idle=1))
        assert "error" not in outcome
    assert sorted(r["i"] for r in got) == [i for i in range(60) if i % 3 != 2]
    assert all(r["name"] == {"fr": "France", "de": "Germany"}[r["country"]] for r in got)
    assert any(r["country"] == "xx" and r["name"] == "Nowhere" for r in later)


def test_global_table_is_read_to_its_end_before_the_join_runs(kafka, topic_factory, tmp_path):
    src, countries = topic_factory(partitions=1), topic_factory(partitions=2)
    # the table's records are stamped after the orders: a time-synchronized table would miss them
    kafka.produce(countries, [(f"c{n}", orjson.dumps(n), {"timestamp": T0 + 10_000}) for n in range(500)])
    kafka.produce(src, [(None, orjson.dumps({"i": i, "c": f"c{i}"}), {"timestamp": T0}) for i in range(500)])
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path)
    app.stream(src).join(app.global_table(countries), lambda o, n: n, on=lambda o: o["c"]).to(out)
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=500, timeout=60))
        assert "error" not in outcome
    assert sorted(got) == list(range(500))


# ---------------------------------------------------------------------------------------------- restore
def test_a_restart_restores_the_table_from_its_topic_and_joins_right(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(users, [(f"u{n}", orjson.dumps({"v": n}), {"timestamp": T0}) for n in range(10)], **MURMUR2)
    out = out_topic(kafka)
    name = f"tb-{uuid.uuid4().hex[:8]}"

    def app_() -> App:
        app = make_app(kafka, tmp_path, name=name)
        app.stream(src).join(app.table(users), merge, name="enrich").to(out)
        return app

    def orders(start: int, ts: int) -> list:
        return [(f"u{i % 10}", orjson.dumps({"i": i}), {"timestamp": ts}) for i in range(start, start + 20)]

    kafka.produce(src, orders(0, T0 + 1), **MURMUR2)
    app = app_()
    with running(app):
        first = values(kafka.drain(out, expected=20, timeout=60))
    assert all(r["user"] == {"v": r["i"] % 10} for r in first)
    stores = list((tmp_path / name).rglob("table-enrich/*/checkpoint"))
    assert stores, "a clean stop checkpoints the table's stores"

    # while the app is down: u0..u4 change; the restarted app reads only what is new
    kafka.produce(
        users, [(f"u{n}", orjson.dumps({"v": n + 100}), {"timestamp": T0 + 2}) for n in range(5)], **MURMUR2
    )
    kafka.produce(src, orders(20, T0 + 3), **MURMUR2)
    app = app_()
    with running(app):
        everything = values(kafka.drain(out, expected=40, timeout=60))
    # the output topic has two partitions: read back, the runs interleave; a clean stop redoes nothing
    assert sorted(r["i"] for r in everything) == list(range(40))
    second = [r for r in everything if r["i"] >= 20]
    for r in second:
        n = r["i"] % 10
        assert r["user"] == {"v": n + 100 if n < 5 else n}

    # the local state lost (a new machine): the table is read again from its topic
    shutil.rmtree(tmp_path / name)
    kafka.produce(src, orders(40, T0 + 4), **MURMUR2)
    app = app_()
    with running(app):
        everything = values(kafka.drain(out, expected=60, timeout=60))
    assert sorted(r["i"] for r in everything) == list(range(60))
    third = [r for r in everything if r["i"] >= 40]
    for r in third:
        n = r["i"] % 10
        assert r["user"] == {"v": n + 100 if n < 5 else n}


def test_exactly_once_app_with_a_join(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(users, [(f"u{n}", orjson.dumps({"v": n}), {"timestamp": T0}) for n in range(10)], **MURMUR2)
    kafka.produce(
        src, [(f"u{i % 12}", orjson.dumps({"i": i}), {"timestamp": T0 + 1}) for i in range(300)], **MURMUR2
    )
    out = out_topic(kafka)
    app = make_app(kafka, tmp_path, guarantee="exactly_once")
    app.stream(src).join(app.table(users), merge, how="left").to(out)
    expected = {i: (None if i % 12 >= 10 else {"v": i % 12}) for i in range(300)}
    with running(app) as outcome:
        got = values(kafka.drain(out, expected=300, timeout=60, **{"isolation.level": "read_committed"}))
        assert "error" not in outcome
    assert len(got) == 300
    assert {r["i"]: r["user"] for r in got} == expected


def test_joins_refuse_worker_threads_and_twice_the_same_name(kafka, topic_factory, tmp_path):
    src, users = topic_factory(partitions=1), topic_factory(partitions=1)
    app = make_app(kafka, tmp_path, concurrency=4)
    app.stream(src).join(app.table(users), merge).to(out_topic(kafka))
    with pytest.raises(ConfigError, match="stream-table joins: records are processed on the poll thread"):
        app.run(install_signal_handlers=False)
    app = make_app(kafka, tmp_path)
    orders = app.stream(src)
    orders.join(app.table(users), merge, name="j").to(out_topic(kafka))
    orders.join(app.table(users), merge, how="left", name="j").to(out_topic(kafka))
    with pytest.raises(ConfigError, match="two joins are named 'j'"):
        app.run(install_signal_handlers=False)


KILL_APP = """
import time
from sluice import App

app = App(
    {group!r},
    brokers={bootstrap!r},
    guarantee={guarantee!r},
    state_dir={state!r},
    commit_interval="200ms",
    max_poll_records=50,
    session_timeout_ms=6000,  # the killed member's partitions move on soon
    heartbeat_interval_ms=1000,
)

def slow(order):
    time.sleep(0.01)
    return order

users = app.table({users!r}, value="json")
(app.stream({src!r}, value="json")
    .map(slow)
    .join(users, lambda o, u: {{"i": o["i"], "user": u}}, how="left")
    .to({out!r}))
"""


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill9_mid_stream_the_restarted_worker_joins_like_the_oracle(kafka, tmp_path, guarantee):
    """Stream timestamps rise per partition: records redone after the crash see the same rows."""
    src, users = kafka.create_topic(partitions=2), kafka.create_topic(partitions=2)
    out = out_topic(kafka)
    rng = random.Random(11)
    updates = []  # (key, value or None, ts): interleaved in time with the orders
    for j in range(300):
        updates.append((f"u{rng.randrange(10)}", None if rng.random() < 0.15 else j, T0 + j * 20 + 5))
    orders = [(f"u{rng.randrange(10)}", i, T0 + i * 10) for i in range(600)]
    kafka.produce(
        users,
        [(k, None if v is None else orjson.dumps({"v": v}), {"timestamp": ts}) for k, v, ts in updates],
        **MURMUR2,
    )
    kafka.produce(src, [(k, orjson.dumps({"i": i}), {"timestamp": ts}) for k, i, ts in orders], **MURMUR2)

    def expected(key: str, ts: int) -> dict | None:
        rows = [v for k, v, t in updates if k == key and t <= ts]
        return None if not rows or rows[-1] is None else {"v": rows[-1]}

    want = {i: expected(k, ts) for k, i, ts in orders}
    group = f"tbk-{uuid.uuid4().hex[:8]}"
    module = write_app(
        tmp_path,
        "joinapp",
        KILL_APP.format(
            group=group,
            bootstrap=kafka.bootstrap,
            guarantee=guarantee,
            state=str(tmp_path / "state"),
            users=users,
            src=src,
            out=out,
        ),
    )
    read = {"isolation.level": "read_committed"} if guarantee == "exactly_once" else {}
    worker = AppProcess(tmp_path, module, log_name="w0.log")
    try:
        wait_for(
            lambda: len(kafka.drain(out, timeout=3, idle=0.5, **read)) >= 150, timeout=60, what="outputs"
        )
        worker.kill9()
        worker = AppProcess(tmp_path, module, log_name="w1.log")

        def all_joined() -> list:
            got = kafka.drain(out, timeout=5, idle=1, **read)
            return got if {orjson.loads(r.value)["i"] for r in got} >= set(want) else []

        got = wait_for(all_joined, timeout=90, interval=0.5, what="every order joined")
        if guarantee == "exactly_once":
            got = kafka.drain(out, timeout=5, idle=2, **read)  # and nothing more
    finally:
        worker.terminate()
    rows = values(got)
    assert {r["i"] for r in rows} == set(want), worker.log()[-2000:]
    wrong = [(r["i"], r["user"], want[r["i"]]) for r in rows if r["user"] != want[r["i"]]]
    assert not wrong, wrong[:5]
    if guarantee == "exactly_once":
        assert len(rows) == len(orders)


def test_a_second_worker_joining_takes_table_partitions_with_its_stream_partitions(kafka, tmp_path):
    src, users = kafka.create_topic(partitions=4), kafka.create_topic(partitions=4)
    out = out_topic(kafka)
    rng = random.Random(5)
    updates = [(f"u{rng.randrange(12)}", j, T0 + j * 20 + 5) for j in range(300)]
    orders = [(f"u{rng.randrange(12)}", i, T0 + i * 10) for i in range(600)]
    kafka.produce(users, [(k, orjson.dumps({"v": v}), {"timestamp": ts}) for k, v, ts in updates], **MURMUR2)

    def expected(key: str, ts: int) -> dict | None:
        rows = [v for k, v, t in updates if k == key and t <= ts]
        return {"v": rows[-1]} if rows else None

    want = {i: expected(k, ts) for k, i, ts in orders}
    name = f"tb-{uuid.uuid4().hex[:8]}"

    def worker() -> App:
        app = make_app(kafka, tmp_path, name=name)  # one state_dir: each process claims its own slot
        app.stream(src).join(app.table(users), merge, how="left").to(out)
        return app

    def produce(part: list) -> None:
        kafka.produce(src, [(k, orjson.dumps({"i": i}), {"timestamp": ts}) for k, i, ts in part], **MURMUR2)

    first = worker()
    with running(first) as one:
        produce(orders[:300])
        wait_for(lambda: len(kafka.drain(out, expected=300, timeout=5)) >= 300, timeout=60, outcome=one)
        second = worker()
        with running(second) as two:
            wait_for(
                lambda: len(first._runner.parts.assigned) < 4, timeout=60, what="a rebalance", outcome=one
            )
            produce(orders[300:])

            def all_joined() -> list:
                got = kafka.drain(out, timeout=5, idle=1)
                return got if {orjson.loads(r.value)["i"] for r in got} >= set(want) else []

            got = wait_for(all_joined, timeout=90, interval=0.5, what="every order joined", outcome=two)
        assert "error" not in one and "error" not in two
    assert second._runner.executor.tables.partitioned[0].directory.parent.name != (
        first._runner.executor.tables.partitioned[0].directory.parent.name
    )
    wrong = [(r["i"], r["user"], want[r["i"]]) for r in values(got) if r["user"] != want[r["i"]]]
    assert not wrong, wrong[:5]
