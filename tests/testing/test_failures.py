"""The failure policy (sluice.runtime.failures) through the real executor, broker-free: dead letters,
retries without sleeping, skip, fail, retry topics on the driver's clock."""

from __future__ import annotations

import time

import pytest

from sluice import App
from sluice.errors import SinkUnavailableError, SluiceError
from sluice.testing import TestDriver
from sluice.testing._memory import murmur2

pytestmark = pytest.mark.memory


class Flaky:
    """Fails the first ``failures`` calls for each value, then doubles it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[int, int] = {}

    def __call__(self, v: dict) -> int:
        n = self.calls[v["n"]] = self.calls.get(v["n"], 0) + 1
        if n <= self.failures:
            msg = f"call {n} of {v['n']} fails"
            raise ConnectionError(msg)
        return v["n"] * 2


def test_a_map_failure_is_dead_lettered_with_its_context_and_the_record_untouched():
    app = App("orders")
    app.on_error(retries=0, dead_letter="orders.dlq")
    app.stream("orders", value="json").map(lambda o: o["qty"] * o["price"], name="total").to("totals")
    with TestDriver(app, partitions=2) as driver:
        driver.send("orders", {"qty": 2, "price": 3}, key="a")
        driver.send("orders", {"qty": 2}, key="b", timestamp=5_000, headers={"trace": "t-1"})
        driver.send("orders", {"qty": 1, "price": 7}, key="b")
        assert sorted(r.value for r in driver.output("totals")) == [6, 7]
        [dead] = driver.dead_letters()
        [raw] = driver.dead_letters(raw=True)
    assert dead.topic == "orders.dlq"
    assert (dead.key, dead.value, dead.timestamp) == (b"b", b'{"qty":2}', 5_000)
    h = dead.headers
    assert h["trace"] == "t-1"  # the record's own headers come first, untouched
    assert raw.headers[0] == ("trace", b"t-1")
    assert h["sluice.error.stage"] == "process"
    assert h["sluice.error.step"] == "total"
    assert h["sluice.error.exception"] == "KeyError"
    assert h["sluice.error.topic"] == "orders"
    partition = (murmur2(b"b") & 0x7FFFFFFF) % 2
    assert h["sluice.error.partition"] == str(partition)
    before = 1 if (murmur2(b"a") & 0x7FFFFFFF) % 2 == partition else 0  # key a's record, sent first
    assert h["sluice.error.offset"] == str(before)
    assert dead.partition == partition  # the dead-letter topic has the source's partitions
    assert h["sluice.error.attempts"] == "1"
    assert h["sluice.error.app"] == "orders"
    assert "KeyError" in h["sluice.error.stacktrace"]


def test_a_sink_failure_is_dead_lettered_at_the_sink_stage():
    app = App("sinking")
    app.on_error(retries=0)
    written: list[dict] = []

    def write(v: dict) -> None:
        if v.get("bad"):
            msg = f"cannot write {v}"
            raise ValueError(msg)
        written.append(v)

    app.stream("in", value="json").sink(write, name="db")
    with TestDriver(app) as driver:
        for v in ({"n": 1}, {"n": 2, "bad": True}, {"n": 3}):
            driver.send("in", v)
        [dead] = driver.dead_letters()
    assert written == [{"n": 1}, {"n": 3}]
    assert dead.topic == "sinking.dlq"  # the default dead-letter topic: <app>.dlq
    assert dead.headers["sluice.error.stage"] == "sink"
    assert dead.headers["sluice.error.step"] == "db"
    assert dead.headers["sluice.error.message"] == "cannot write {'n': 2, 'bad': True}"


def test_a_deserialize_failure_in_a_fused_loop_takes_only_its_record():
    app = App("fused")
    app.on_error(retries=0)
    app.stream("in", value="json").filter(lambda v: v["n"] % 2 == 0).map(lambda v: v["n"]).to("out")
    with TestDriver(app) as driver:
        for i in range(10):
            driver.send("in", {"n": i} if i != 4 else b"\x00garbage")
        assert [r.value for r in driver.output("out")] == [0, 2, 6, 8]
        [dead] = driver.dead_letters()
    assert dead.value == b"\x00garbage"
    assert dead.headers["sluice.error.stage"] == "deserialize"
    assert dead.headers["sluice.error.offset"] == "4"


def test_retries_are_counted_and_back_off_on_the_drivers_clock():
    app = App("retrying")
    app.on_error(retries=3, backoff="1s..60s")
    flaky = Flaky(failures=2)
    app.stream("in", value="json").map(flaky).to("out")
    started = time.monotonic()
    with TestDriver(app) as driver:
        driver.send("in", {"n": 21})
        assert [r.value for r in driver.output("out")] == [42]
        assert driver.dead_letters() == []
        router = driver.stats.failures
        assert router is not None
        assert (router.retried, router.recovered) == (2, 1)
        assert driver.slept == pytest.approx(1 + 2)  # two backoffs: 1s, then 2s
    assert flaky.calls == {21: 3}
    assert time.monotonic() - started < 2  # not slept for real


def test_a_record_failing_every_retry_is_dead_lettered_with_its_attempts():
    app = App("exhausted")
    app.on_error(retries=2, backoff="100ms..1s", dead_letter="exhausted.dlq")
    flaky = Flaky(failures=10)
    app.stream("in", value="json").map(flaky).to("out")
    with TestDriver(app) as driver:
        driver.send("in", {"n": 1})
        driver.send("in", {"n": 2})
        dead = driver.dead_letters()
        assert driver.output("out") == []
        assert driver.stats.dead_letters == 2
    assert [d.headers["sluice.error.attempts"] for d in dead] == ["3", "3"]
    assert [d.headers["sluice.error.exception"] for d in dead] == ["ConnectionError", "ConnectionError"]
    assert flaky.calls == {1: 3, 2: 3}


def test_skip_counts_and_commits_past_the_record():
    app = App("skipping")
    app.on_error(skip=True)
    app.stream("in", value="json").map(lambda v: 10 // v).to("out")
    with TestDriver(app) as driver:
        for v in (1, 0, 5):
            driver.send("in", v)
        assert [r.value for r in driver.output("out")] == [10, 2]
        assert driver.dead_letters() == []
        assert driver.stats.skipped == 1
        assert driver.committed("in") == {0: 3}


def test_fail_stops_the_app_without_committing_the_failed_offset():
    app = App("failing")
    app.on_error(fail=True)
    app.stream("in", value="json").map(lambda v: 10 // v).to("out")
    driver = TestDriver(app)
    driver.start()
    driver.send("in", 5)
    assert [r.value for r in driver.output("out")] == [2]
    driver.send("in", 0)
    driver.send("in", 1)
    with pytest.raises(SluiceError, match=r"ZeroDivisionError.*stopping \(on_error fail=True\)"):
        driver.output("out")
    driver.close(raise_errors=False)
    assert driver.broker.committed("failing", "in", 0) == 1  # the batch before it only
    assert [m.value() for m in driver.broker.read("out")] == [b"2"]


def test_a_step_policy_overrides_the_app_policy():
    app = App("per-step")
    app.on_error(fail=True)
    app.stream("in", value="json").map(lambda v: 10 // v, on_error={"skip": True}).to("out")
    with TestDriver(app) as driver:
        driver.send("in", 0)
        driver.send("in", 2)
        assert [r.value for r in driver.output("out")] == [5]
        assert driver.stats.skipped == 1


def test_a_parked_record_waits_in_its_retry_topic_until_the_clock_reaches_its_due_time():
    app = App("parking")
    app.on_error(retries=0, retry_topics=["30s"], dead_letter="parking.dlq")
    flaky = Flaky(failures=1)
    app.stream("in", value="json").map(flaky).to("out")
    with TestDriver(app, start_time=1_000_000.0) as driver:
        driver.send("in", {"n": 1})
        assert driver.output("out") == []
        [parked] = driver.output("parking.retry.1", raw=True)
        assert dict(parked.headers)["sluice.error.stage"] == b"process"
        driver.advance("29s")
        assert driver.output("out") == []  # not due yet
        driver.advance("1s")
        assert [r.value for r in driver.output("out")] == [2]
        assert driver.dead_letters() == []
    assert flaky.calls == {1: 2}


def test_an_unavailable_sink_holds_its_batch_until_it_is_back_without_dead_letters():
    app = App("unavailable")
    app.on_error(backoff="1s..8s", retry_for="5m")
    written: list[int] = []
    outage = {"calls": 0}

    def write(v: int) -> None:
        outage["calls"] += 1
        if outage["calls"] <= 3:
            msg = "database is restarting"
            raise SinkUnavailableError(msg)
        written.append(v)

    app.stream("in", value="json").sink(write)
    started = time.monotonic()
    with TestDriver(app) as driver:
        driver.send("in", 1)
        driver.send("in", 2)
        driver.settle()
        assert written == [1, 2]
        assert driver.dead_letters() == []
        assert driver.committed("in") == {0: 2}
        assert driver.slept >= 1 + 2 + 4  # waited on the driver's clock, with the policy's backoff
    assert time.monotonic() - started < 5


def test_a_sink_unavailable_past_retry_for_stops_the_app_without_committing():
    app = App("down")
    app.on_error(backoff="10s..1m", retry_for="2m")

    def write(_v: int) -> None:
        msg = "database is down"
        raise SinkUnavailableError(msg)

    app.stream("in", value="json").sink(write)
    driver = TestDriver(app)
    driver.start()
    driver.send("in", 1)
    with pytest.raises(SinkUnavailableError, match="has been unavailable for 120s"):
        driver.settle()
    driver.close(raise_errors=False)
    assert driver.broker.committed("down", "in", 0) == -1001
    assert driver.slept >= 120


def test_dead_letters_reads_the_dead_letter_topics_of_step_policies_too():
    app = App("two-dlqs")
    app.on_error(retries=0, dead_letter="app.dlq")
    events = app.stream("in", value="json")
    events.map(lambda v: 1 // v["a"], on_error={"retries": 0, "dead_letter": "a.dlq"}).to("a")
    events.map(lambda v: 1 // v["b"]).to("b")
    with TestDriver(app) as driver:
        driver.send("in", {"a": 0, "b": 1})
        driver.send("in", {"a": 1, "b": 0})
        dead = driver.dead_letters()
        only_a = driver.dead_letters("a.dlq")
    assert sorted(d.topic for d in dead) == ["a.dlq", "app.dlq"]
    assert [d.value for d in only_a] == [b'{"a":0,"b":1}']
