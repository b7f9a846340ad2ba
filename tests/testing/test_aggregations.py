"""Aggregations, windows and stream time (sluice.runtime.stateful) on the real runtime, broker-free:
repartition and changelog topics are in-memory topics, state stores are real ones in a temp dir."""

from __future__ import annotations

import pytest

from sluice import App
from sluice.testing import TestDriver

pytestmark = pytest.mark.memory


def test_key_by_and_count_go_through_the_repartition_topic():
    app = App("pages")
    app.stream("views", value="json").key_by(lambda v: v["page"]).count(name="views").current().to("counts")
    pages = ["/a", "/b", "/a", "/c", "/a", "/b"]
    with TestDriver(app, partitions=3) as driver:
        for i, page in enumerate(pages):
            driver.send("views", {"page": page, "user": f"u{i}"}, key=f"u{i}")  # keyed by user, not page
        out = driver.output("counts")
        repartitioned = driver.output("pages-views-repartition", raw=True)
        changelog = driver.output("pages-views-changelog", raw=True)
    # every record went through the repartition topic, keyed by page
    assert sorted(r.key for r in repartitioned) == sorted(p.encode() for p in pages)
    for page in set(pages):
        assert len({r.partition for r in repartitioned if r.key == page.encode()}) == 1
    latest = {}
    for r in out:
        latest[r.value["key"]] = r.value["value"]
    assert latest == {"/a": 3, "/b": 2, "/c": 1}
    assert [r.value["value"] for r in out if r.key == "/a"] == [1, 2, 3]  # per-key order kept
    assert changelog  # the state is logged


def test_windowed_count_emits_final_windows_and_drops_late_records_to_their_topic():
    app = App("windows")
    (
        app.stream("clicks", value="json")
        .key_by(lambda c: c["page"])
        .window(tumbling="10s", grace="2s", late="late-clicks")
        .count()
        .final()
        .to("per-10s")
    )
    with TestDriver(app) as driver:
        driver.send("clicks", {"page": "p"}, timestamp=1_000)
        driver.send("clicks", {"page": "p"}, timestamp=9_000)
        driver.send("clicks", {"page": "p"}, timestamp=11_000)  # stream time 11s: [0, 10s) still in grace
        assert driver.output("per-10s") == []
        driver.send("clicks", {"page": "p"}, timestamp=10_500)
        driver.send("clicks", {"page": "p"}, timestamp=5_000)  # within grace: counted in [0, 10s)
        driver.send("clicks", {"page": "p"}, timestamp=12_000)  # closes [0, 10s)
        driver.send("clicks", {"page": "p"}, timestamp=3_000)  # late: its window is closed
        [first] = driver.output("per-10s")
        [late] = driver.output("late-clicks")
        driver.send("clicks", {"page": "p"}, timestamp=25_000)  # closes [10s, 20s)
        windows = [r.value for r in driver.output("per-10s")]
    assert first.value == {"key": "p", "start": 0, "end": 10_000, "value": 3}
    assert late.value == {"page": "p"} and late.timestamp == 3_000
    assert windows == [
        {"key": "p", "start": 0, "end": 10_000, "value": 3},
        {"key": "p", "start": 10_000, "end": 20_000, "value": 3},
    ]


def test_stream_time_is_per_partition():
    """A partition that receives nothing keeps its windows open (DESIGN.md's known trap)."""
    app = App("per-partition")
    app.stream("in", value="json").window(tumbling="10s").count().final().to("out")
    with TestDriver(app, partitions=2) as driver:
        driver.send("in", {"x": 1}, key="k", partition=0, timestamp=1_000)
        driver.send("in", {"x": 1}, key="k2", partition=1, timestamp=1_000)
        driver.send("in", {"x": 1}, key="k", partition=0, timestamp=60_000)  # closes partition 0's window
        out = driver.output("out")
    assert [r.value["key"] for r in out] == ["k"]


def test_sum_and_mean_current_values():
    app = App("totals")
    orders = app.stream("orders", value="json").key_by(lambda o: o["user"], repartition=False)
    orders.sum(lambda o: o["amount"], name="spent").current().to("spent")
    orders.mean(lambda o: o["amount"], name="avg").current().to("avg")
    with TestDriver(app) as driver:
        for user, amount in [("u1", 10), ("u2", 5), ("u1", 20)]:
            driver.send("orders", {"user": user, "amount": amount}, key=user)
        spent = [(r.key, r.value["value"]) for r in driver.output("spent")]
        avg = [(r.key, r.value["value"]) for r in driver.output("avg")]
        topics = driver.topics()
    assert spent == [("u1", 10), ("u2", 5), ("u1", 30)]
    assert avg == [("u1", 10), ("u2", 5), ("u1", 15)]
    assert not any(t.endswith("-repartition") for t in topics)  # repartition=False


def test_a_timestamp_too_far_past_the_wall_clock_is_refused_until_the_clock_catches_up():
    app = App("future")
    app.on_error(retries=0)
    app.stream("in", value="json").window(tumbling="1m", max_future="1h").count().current().to("out")
    now = 1_700_000_000.0
    with TestDriver(app, start_time=now) as driver:
        ahead = int((now + 2 * 3600) * 1000)  # two hours past the driver's clock
        driver.send("in", {"x": 1}, key="k", timestamp=ahead)
        [dead] = driver.dead_letters()
        assert dead.headers["sluice.error.exception"] == "FutureTimestampError"
        assert driver.output("out") == []
        driver.advance("2h")
        driver.send("in", {"x": 1}, key="k", timestamp=ahead)
        assert [r.value["value"] for r in driver.output("out")] == [1]


def test_state_survives_a_restart_through_the_changelog():
    """A second driver on the same in-memory broker restores the counts from the changelog topic."""
    app = App("restart")
    app.stream("in", value="json").key_by(lambda v: v["k"]).count(name="n").current().to("out")
    with TestDriver(app) as driver:
        for _ in range(3):
            driver.send("in", {"k": "a"})
        assert [r.value["value"] for r in driver.output("out")] == [1, 2, 3]
        broker = driver.broker
    again = TestDriver(app)
    again.broker = broker  # the same "cluster": topics, offsets and changelogs kept; a fresh state dir
    again.clock.now = broker.clock()
    with again:
        again.send("in", {"k": "a"})
        assert [r.value["value"] for r in again.output("out")] == [1, 2, 3, 4]
