"""sluice.testing.TestDriver: the real runtime on the in-memory Kafka, as users' tests see it."""

from __future__ import annotations

import time

import pytest

from sluice import App
from sluice.errors import ConfigError, SluiceError
from sluice.testing import TestDriver, run_steps
from sluice.testing._memory import murmur2

pytestmark = pytest.mark.memory


def clicks_app() -> App:
    app = App("clicks")
    (
        app.stream("events", value="json")
        .filter(lambda e: e["type"] == "click")
        .key_by(lambda e: e["user"])
        .window(tumbling="1m")
        .count()
        .final()
        .to("clicks-per-minute")
    )
    return app


def test_clicks_per_minute():
    """The example of issue 19, as written there."""
    app = clicks_app()
    with TestDriver(app) as driver:  # the App as the user defined it; no broker
        driver.send("events", {"type": "click", "user": "u1"}, key="u1", timestamp=60_000)
        driver.send("events", b"not json", key="u2", timestamp=61_000)
        driver.send("events", {"type": "click", "user": "u1"}, key="u1", timestamp=200_000)
        [rec] = driver.output("clicks-per-minute")  # records with .key .value .timestamp .headers
        assert rec.value == {"key": "u1", "start": 60_000, "end": 120_000, "value": 1}
        [dead] = driver.dead_letters()  # with the same headers as on Kafka
        assert dead.headers["sluice.error.stage"] == "deserialize"
    assert rec.key == "u1"
    assert rec.timestamp == 119_999  # a closed window's record is stamped end - 1
    assert dead.value == b"not json" and dead.key == b"u2"
    assert dead.headers["sluice.error.app"] == "clicks"


def test_the_app_topics_exist_in_the_driver():
    with TestDriver(clicks_app()) as driver:
        driver.send("events", b"{oops", key="u1", timestamp=1_000)
        driver.dead_letters()
        topics = set(driver.topics())
    assert {"events", "clicks-per-minute", "clicks.dlq"} <= topics
    assert any(t.endswith("-repartition") for t in topics)
    assert any(t.endswith("-changelog") for t in topics)


def test_keys_timestamps_and_headers_pass_through():
    app = App("copy")
    app.stream("in", value="json").map(lambda v: {**v, "seen": True}).to("out")
    with TestDriver(app) as driver:
        driver.send("in", {"n": 1}, key="k1", timestamp=1_234, headers={"trace": "abc", "bin": b"\xff"})
        [rec] = driver.output("out")
        [raw] = driver.output("out", raw=True)
    assert rec.value == {"n": 1, "seen": True}
    assert rec.key == b"k1"  # the input key format is bytes: kept as it came
    assert rec.timestamp == 1_234
    assert rec.headers == {"trace": "abc", "bin": b"\xff"}
    assert raw.value == b'{"n":1,"seen":true}'
    assert raw.headers == [("trace", b"abc"), ("bin", b"\xff")]


def test_to_with_str_and_json_formats():
    app = App("formats")
    words = app.stream("words", value="str")
    words.map(str.upper).to("upper")  # like the input: str
    words.map(lambda w: {"word": w, "len": len(w)}).to("lengths", value="json")
    with TestDriver(app) as driver:
        driver.send("words", "hello")
        driver.send("words", "héllo")
        assert [r.value for r in driver.output("upper")] == ["HELLO", "HÉLLO"]
        assert [r.value for r in driver.output("upper", raw=True)] == [b"HELLO", "HÉLLO".encode()]
        assert [r.value for r in driver.output("lengths")] == [
            {"word": "hello", "len": 5},
            {"word": "héllo", "len": 5},
        ]


def test_send_raw_bytes_skip_the_stream_format():
    app = App("raw")
    app.stream("in", value="json").map(lambda v: v["x"] * 2).to("out")
    with TestDriver(app) as driver:
        driver.send("in", b'{"x": 21}')
        driver.send("in", {"x": 1})
        assert [r.value for r in driver.output("out")] == [42, 2]


def test_partitions_keep_per_key_order_and_follow_the_java_partitioner():
    app = App("ordered")
    app.stream("in", value="json").map(lambda v: {**v, "double": v["i"] * 2}).to("out")
    keys = [f"user-{n}" for n in range(7)]
    with TestDriver(app, partitions=4) as driver:
        for i in range(140):
            driver.send("in", {"k": keys[i % 7], "i": i}, key=keys[i % 7])
        out = driver.output("out")
    assert len(out) == 140
    for key in keys:
        mine = [r for r in out if r.key == key.encode()]
        assert [r.value["i"] for r in mine] == list(range(keys.index(key), 140, 7))
        # the output topic has the source's 4 partitions; a key keeps the partition murmur2 gives it
        assert {r.partition for r in mine} == {(murmur2(key.encode()) & 0x7FFFFFFF) % 4}
    assert len({r.partition for r in out}) > 1


def test_send_to_an_explicit_partition():
    app = App("explicit")
    app.stream("in", value="str").to("out")
    with TestDriver(app, partitions={"in": 3}) as driver:
        driver.send("in", "a", partition=2)
        [rec] = driver.output("out")
        committed = driver.committed("in")
    assert rec.value == "a"
    assert committed == {0: -1001, 1: -1001, 2: 1}  # consumed from partition 2 only


def test_offsets_are_committed_when_output_returns():
    app = App("committing")
    app.stream("in", value="str").filter(lambda w: w != "drop").to("out")
    with TestDriver(app, partitions=2) as driver:
        for word in ["a", "drop", "b", "c", "drop"]:
            driver.send("in", word, key=word)
        assert sorted(r.value for r in driver.output("out")) == ["a", "b", "c"]
        committed = driver.committed("in")
        assert sum(committed.values()) == 5  # the filtered records are committed too
        assert driver.stats.records_in == 5


def test_sending_to_a_topic_the_app_does_not_consume_says_which_it_does():
    app = App("strict")
    app.stream("in", value="str").to("out")
    with (
        TestDriver(app) as driver,
        pytest.raises(SluiceError, match="does not consume 'nope'; it consumes in"),
    ):
        driver.send("nope", "x")


def test_output_of_an_unknown_topic_names_the_existing_ones():
    app = App("unknown")
    app.stream("in", value="str").to("out")
    with TestDriver(app) as driver, pytest.raises(SluiceError, match="'outt' does not exist"):
        driver.output("outt")


def test_the_runtime_stops_cleanly_when_the_driver_closes():
    app = App("closing")
    seen: list[str] = []
    app.stream("in", value="str").sink(seen.append)
    driver = TestDriver(app)
    with driver:
        driver.send("in", "x")
        driver.settle()
        assert seen == ["x"]
        thread = driver._thread
    assert thread is not None and not thread.is_alive()
    assert app.stats is not None and app.stats.records_in == 1


def test_the_pytest_fixture_closes_its_drivers(sluice_driver):
    app = App("fixture")
    app.stream("in", value="str").map(str.upper).to("out")
    driver = sluice_driver(app)
    driver.send("in", "hi")
    assert [r.value for r in driver.output("out")] == ["HI"]


def test_run_steps_still_works():
    assert run_steps(lambda s: s.filter(lambda v: v > 1).map(str), [1, 2, 3]) == ["2", "3"]


def test_a_driver_run_takes_no_wall_clock_waits():
    """Commit intervals, poll timeouts and backoffs would each cost time: the driver steps past them."""
    app = App("fast")
    app.on_error(retries=2, backoff="2s..10s", dead_letter="fast.dlq")
    app.stream("in", value="json").map(lambda v: 1 / v["d"]).to("out")
    started = time.monotonic()
    with TestDriver(app) as driver:
        for d in (1, 0, 2):
            driver.send("in", {"d": d})
        assert [r.value for r in driver.output("out")] == [1.0, 0.5]
        assert len(driver.dead_letters()) == 1
        assert driver.slept >= 2 + 4  # the backoffs: moved the driver's clock instead
    assert time.monotonic() - started < 5


def test_a_graph_the_runtime_refuses_fails_at_start_with_the_runtimes_error():
    app = App("refused", concurrency=4)
    app.stream("in", value="json").count().current().to("out")  # aggregations need concurrency=1
    driver = TestDriver(app)
    with pytest.raises(ConfigError, match="use concurrency=1"):
        driver.start()
    assert driver._thread is not None and not driver._thread.is_alive()


def test_outputs_are_readable_after_the_driver_closed_and_sending_is_not():
    app = App("after")
    app.stream("in", value="str").map(str.upper).to("out")
    with TestDriver(app) as driver:
        driver.send("in", "a")
        driver.send("in", "b")  # not settled before the close: the shutdown commits it
    assert [r.value for r in driver.output("out")] == ["A", "B"]
    assert driver.committed("in") == {0: 2}
    with pytest.raises(SluiceError, match="not running"):
        driver.send("in", "c")
