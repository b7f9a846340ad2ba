"""map_batch: DataFrame micro-batches with the same outputs, offsets and dead letters as per-record steps."""

from __future__ import annotations

import uuid

import orjson
import polars as pl
import pyarrow.compute as pc
import pytest

from sluice import App, ConfigError
from sluice.testing import run_steps
from tests.apps import AppProcess, running, wait_for, write_app

N = 500


def event(i: int) -> dict:
    return {"id": i, "type": ("click", "view", "buy")[i % 3], "price": float(i % 17), "qty": i % 4}


def per_record(e: dict) -> dict | None:
    if e["type"] != "click":
        return None
    return {**e, "total": e["price"] * e["qty"]}


ORACLE = [per_record(event(i)) for i in range(N) if per_record(event(i))]

FRAMES = {
    "polars": lambda df: df.filter(pl.col("type") == "click").with_columns(
        (pl.col("price") * pl.col("qty")).alias("total")
    ),
    "pandas": lambda df: df[df["type"] == "click"].assign(total=lambda d: d["price"] * d["qty"]),
    "arrow": lambda t: arrow_clicks(t.filter(pc.equal(t["type"], "click"))),
}


def arrow_clicks(clicks):
    return clicks.append_column("total", pc.multiply(clicks["price"], clicks["qty"]))


def make_app(kafka, **kwargs) -> App:
    return App(f"mb-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="100ms", **kwargs)


@pytest.mark.parametrize("frame", list(FRAMES))
def test_same_outputs_as_the_per_record_pipeline(kafka, topic_factory, frame):
    src, out, oracle_out = (
        topic_factory(partitions=2),
        topic_factory(partitions=2),
        topic_factory(partitions=2),
    )
    kafka.produce(
        src,
        [(f"k{i % 7}".encode(), orjson.dumps(event(i)), {"headers": [("h", b"%d" % i)]}) for i in range(N)],
    )
    app = make_app(kafka)
    app.stream(src).map_batch(FRAMES[frame], frame=frame, max_rows=64).to(out)
    reference = make_app(kafka)
    reference.stream(src).map(per_record).filter(lambda e: e is not None).to(oracle_out)

    with running(app), running(reference):
        got = kafka.drain(out, expected=len(ORACLE))
        want = kafka.drain(oracle_out, expected=len(ORACLE))

    def index(records):
        return {orjson.loads(r.value)["id"]: (orjson.loads(r.value), r.key, r.headers) for r in records}

    assert index(got) == index(want)
    assert len(got) == len(ORACLE)


def test_a_frame_never_holds_more_than_max_rows(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(None, orjson.dumps(event(i))) for i in range(N)])
    heights: list[int] = []

    def measured(df):
        heights.append(df.height)
        return df

    app = make_app(kafka, max_poll_records=500)  # a consume brings many frames' worth of the backlog
    app.stream(src).map_batch(measured, max_rows=16).to(out)
    with running(app):
        got = kafka.drain(out, expected=N)
    assert sorted(orjson.loads(r.value)["id"] for r in got) == list(range(N))
    assert sum(heights) == N
    assert max(heights) == 16, heights


def test_batches_larger_than_max_in_flight_do_not_pause_the_partitions(kafka, topic_factory):
    # pausing drops what librdkafka prefetched: a map_batch of 500-record frames under a
    # 100-record cap paused after every batch; a few consumed batches may always be in flight
    n = 1500
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(None, orjson.dumps(event(i))) for i in range(n)])
    app = make_app(kafka, max_in_flight=100, max_poll_records=100)
    app.stream(src).map_batch(lambda df: df, max_rows=500, max_wait="1s").to(out)
    with running(app):
        got = kafka.drain(out, expected=n)
        assert app.stats is not None
        paused = app.stats.paused
    assert sorted(orjson.loads(r.value)["id"] for r in got) == list(range(n))
    assert paused == 0


def test_poison_row_alone_goes_to_the_dead_letter_topic(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(
        src, [(None, orjson.dumps({**event(i), "price": -1.0 if i == 123 else float(i)})) for i in range(N)]
    )

    def strict(df: pl.DataFrame) -> pl.DataFrame:
        if (df["price"] < 0).any():
            raise ValueError("negative price in batch")
        return df

    app = make_app(kafka)
    app.on_error(retries=1, backoff="1ms")
    app.stream(src).map_batch(strict, max_rows=200).to(out)
    with running(app):
        got = kafka.drain(out, expected=N - 1)
        dead = kafka.drain(f"{app.name}.dlq", expected=1)
    kafka.created.append(f"{app.name}.dlq")
    assert sorted(orjson.loads(r.value)["id"] for r in got) == [i for i in range(N) if i != 123]
    (letter,) = dead
    headers = dict(letter.headers)
    assert orjson.loads(letter.value)["id"] == 123
    assert headers["sluice.error.stage"] == b"process"
    assert headers["sluice.error.exception"] == b"ValueError"
    assert headers["sluice.error.step"].startswith(b"map_batch#")


def test_malformed_json_in_a_columnar_batch_is_dead_lettered_and_the_rest_proceed(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(None, b'{"id": 7, "bro' if i == 7 else orjson.dumps(event(i))) for i in range(50)])
    app = make_app(kafka)
    app.stream(src).map_batch(lambda df: df, max_rows=100).to(out)
    with running(app):
        got = kafka.drain(out, expected=49)
        dead = kafka.drain(f"{app.name}.dlq", expected=1)
    kafka.created.append(f"{app.name}.dlq")
    assert sorted(orjson.loads(r.value)["id"] for r in got) == [i for i in range(50) if i != 7]
    assert dict(dead[0].headers)["sluice.error.stage"] == b"deserialize"


BAD_ROWS = {
    0: b'{"id": 0, "type": "cl',  # truncated
    17: b"\xff\xfe not utf-8",
    18: b"[1, 2]",  # valid JSON, not an object
    31: None,  # a tombstone
    59: b"42",
}


def test_rows_that_are_not_json_objects_are_dead_lettered_alone_and_the_rest_keep_order_keys_and_types(
    kafka, topic_factory
):
    n = 60
    src, out = topic_factory(), topic_factory()
    kafka.produce(
        src,
        [
            (f"k{i}".encode(), BAD_ROWS.get(i, orjson.dumps(event(i))), {"headers": [("h", b"%d" % i)]})
            for i in range(n)
        ],
    )
    frames: list[tuple[int, dict]] = []

    def twice(df: pl.DataFrame) -> pl.DataFrame:
        frames.append((df.height, dict(df.schema)))
        return df.with_columns(twice=pl.col("id") * 2)

    app = make_app(kafka, max_poll_records=1000)
    app.on_error(retries=2, backoff="1s")  # a row retried would show as a slow test, not a pass
    app.stream(src).map_batch(twice, max_rows=1000, max_wait="1s").to(out)
    good = [i for i in range(n) if i not in BAD_ROWS]
    with running(app):
        got = kafka.drain(out, expected=len(good))
        dead = kafka.drain(f"{app.name}.dlq", expected=len(BAD_ROWS))
    kafka.created.append(f"{app.name}.dlq")
    assert [orjson.loads(r.value)["id"] for r in got] == good, "the rest of the batch, in offset order"
    for r in got:
        value = orjson.loads(r.value)
        assert value["twice"] == 2 * value["id"]
        assert r.key == f"k{value['id']}".encode()
        assert dict(r.headers)["h"] == b"%d" % value["id"]
    letters = {int(dict(r.headers)["sluice.error.offset"]): r for r in dead}
    assert sorted(letters) == sorted(BAD_ROWS)
    for offset, r in letters.items():
        headers = dict(r.headers)
        assert r.value == BAD_ROWS[offset], "the original bytes, untouched"
        assert r.key == f"k{offset}".encode()
        assert headers["h"] == b"%d" % offset
        assert headers["sluice.error.stage"] == b"deserialize"
        # malformed bytes fail the same way each time: retried without waiting; a value that
        # is not an object is no failure of decoding: disposed of at once
        assert headers["sluice.error.attempts"] == (b"3" if offset in (0, 17) else b"1")
    assert b"must be a JSON object" in dict(letters[18].headers)["sluice.error.message"]
    # the survivors were read columnar: the same frame types as a batch without bad rows
    assert sum(height for height, _ in frames) == len(good)
    assert all(schema["id"] == pl.Int64 and schema["price"] == pl.Float64 for _, schema in frames), frames


def test_output_row_refused_by_kafka_is_dead_lettered_as_its_source_record(kafka, topic_factory):
    big = {5, 61}
    src = topic_factory()
    out = topic_factory(config={"max.message.bytes": "20000"})
    kafka.produce(
        src,
        [
            (f"k{i}".encode(), orjson.dumps({"id": i, "pad": "x" * (50_000 if i in big else 10)}))
            for i in range(100)
        ],
    )
    app = make_app(kafka, max_poll_records=10, producer_config={"linger.ms": 0})
    app.on_error(retries=1, backoff="1ms")
    app.stream(src).map_batch(lambda df: df, max_rows=10).to(out)
    with running(app) as outcome:
        wait_for(
            lambda: sum(max(o, 0) for o in kafka.committed(app.name, src, 1).values()) == 100,
            60,
            what="all offsets committed",
            outcome=outcome,
        )
        dead = kafka.drain(f"{app.name}.dlq", expected=len(big), timeout=30)
        got = kafka.drain(out, idle=2)
    kafka.created.append(f"{app.name}.dlq")
    # the broker refuses a whole record batch: rows sent with a big one are dead letters too
    dead_ids = {orjson.loads(r.value)["id"] for r in dead}
    assert dead_ids >= big
    for r in dead:
        h = dict(r.headers)
        ident = orjson.loads(r.value)["id"]
        assert int(h["sluice.error.offset"]) == ident, "traced to its own source record"
        assert r.key == f"k{ident}".encode()
        assert h["sluice.error.stage"] == b"produce"
    out_ids = [orjson.loads(r.value)["id"] for r in got]
    assert sorted(out_ids + sorted(dead_ids)) == list(range(100)), "inputs = outputs + dead letters"
    assert all(r.key == f"k{orjson.loads(r.value)['id']}".encode() for r in got)


def test_key_column_sets_output_keys_and_aggregates_work(kafka, topic_factory):
    src, out = topic_factory(), topic_factory(partitions=3)
    kafka.produce(src, [(None, orjson.dumps(event(i))) for i in range(90)])

    def per_type(df: pl.DataFrame) -> pl.DataFrame:
        return df.group_by("type").agg(pl.len().alias("n")).sort("type")

    app = make_app(kafka, max_poll_records=1000)
    app.stream(src).map_batch(per_type, key="type", max_rows=1000, max_wait="500ms").to(out)
    with running(app):
        got = kafka.drain(out, idle=3)
    totals: dict[bytes, int] = {}
    for r in got:
        totals[r.key] = totals.get(r.key, 0) + orjson.loads(r.value)["n"]
    assert totals == {b"buy": 30, b"click": 30, b"view": 30}


def test_map_batch_in_memory_and_bad_arguments():
    assert run_steps(lambda s: s.map_batch(lambda df: df.with_columns(pl.col("n") * 2)), [{"n": 1}]) == [
        {"n": 2}
    ]
    assert run_steps(
        lambda s: s.map_batch(lambda df: df.assign(n=df["n"] + 1), frame="pandas"), [{"n": 1}]
    ) == [{"n": 2}]
    app = App("mbcfg")
    with pytest.raises(ConfigError, match="frame='spark' must be one of"):
        app.stream("e").map_batch(lambda df: df, frame="spark")
    with pytest.raises(ConfigError, match="max_rows=0"):
        app.stream("f").map_batch(lambda df: df, max_rows=0)
    with pytest.raises(TypeError, match="returned list, not a polars DataFrame"):
        run_steps(lambda s: s.map_batch(lambda df: [1]), [{"n": 1}])


def test_missing_library_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name == "polars":
            raise ImportError("No module named 'polars'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ConfigError, match=r"pip install 'sluice-streams\[polars\]'"):
        App("mbx").stream("e").map_batch(lambda df: df)


APP = """
import polars as pl
from sluice import App

# 100-record batches of 50 ms: 20,000 records take ~10 s, so the kill lands mid-stream
app = App({group!r}, brokers={bootstrap!r}, commit_interval="100ms", max_poll_records=100)

def slow_batches(df):
    import time
    time.sleep(0.05)
    return df.with_columns(pl.col("id").alias("copy"))

app.stream({src!r}).map_batch(slow_batches, max_rows=100).to({out!r})
"""


def test_kill9_loses_nothing(kafka, topic_factory, tmp_path):
    n = 20_000
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    kafka.produce(src, [(f"k{i}", orjson.dumps({"id": i})) for i in range(n)])
    group = f"mbkill-{uuid.uuid4().hex[:8]}"
    write_app(tmp_path, "mb_app", APP.format(group=group, bootstrap=kafka.bootstrap, src=src, out=out))

    def outputs() -> int:
        return sum(kafka.end_offsets(out, 2).values())

    first = AppProcess(tmp_path, "mb_app")
    wait_for(lambda: outputs() >= n // 4, 90, what="a quarter of the outputs")
    first.kill9()
    assert outputs() < n
    second = AppProcess(tmp_path, "mb_app")
    wait_for(
        lambda: sum(max(o, 0) for o in kafka.committed(group, src, 2).values()) >= n,
        120,
        what="every input committed",
    )
    assert second.terminate() == 0, second.log()
    assert {orjson.loads(r.value)["id"] for r in kafka.drain(out, idle=3, timeout=120)} == set(range(n))
