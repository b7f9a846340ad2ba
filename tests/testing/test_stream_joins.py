"""Stream-stream joins on the TestDriver (the real runtime, broker-free): what users' unit tests of a join see."""

from __future__ import annotations

import pytest

from sluice import App
from sluice.testing import TestDriver

pytestmark = pytest.mark.memory


def build(how: str) -> App:
    app = App("ads")
    clicks = app.stream("clicks").key_by(lambda c: c["ad"])
    views = app.stream("views").key_by(lambda v: v["ad"])
    clicks.join(
        views, lambda c, v: {"c": c and c["id"], "v": v and v["id"]}, within="5m", grace="10s", how=how
    ).to("click-views")
    return app


@pytest.mark.parametrize(
    ("how", "unmatched"),
    [
        ("inner", set()),
        ("left", {("a2", "c2", None, 62_000)}),
        ("outer", {("a2", "c2", None, 62_000), ("a2", None, "v3", 500_000)}),
    ],
)
def test_pairs_within_the_window_join_and_unmatched_records_come_out_when_it_closes(how, unmatched):
    with TestDriver(build(how), partitions={"clicks": 2, "views": 3}) as driver:
        driver.send("views", {"ad": "a1", "id": "v1"}, timestamp=1_000)
        driver.send("clicks", {"ad": "a1", "id": "c1"}, timestamp=301_000)  # 5m after v1: joins
        driver.send("clicks", {"ad": "a2", "id": "c2"}, timestamp=62_000)
        before = {(r.key, r.value["c"], r.value["v"], r.timestamp) for r in driver.output("click-views")}
        assert before == {("a1", "c1", "v1", 301_000)}  # no window has closed yet
        # 438s after c2: joins nothing, and closes c2's window (62s + 5m + 10s + 1ms <= 500s)
        driver.send("views", {"ad": "a2", "id": "v3"}, timestamp=500_000)
        driver.send("views", {"ad": "a2", "id": "v2"}, timestamp=600_000)
        driver.output("click-views")  # processed before c9: the two inputs reach the join in this order
        driver.send("clicks", {"ad": "a2", "id": "c9"}, timestamp=900_000)  # exactly 5m after v2: joins
        out = [(r.key, r.value["c"], r.value["v"], r.timestamp) for r in driver.output("click-views")]
    assert len(out) == len(set(out)), "a result came out twice"
    assert set(out) - before == {("a2", "c9", "v2", 900_000)} | unmatched  # v3 closed at 900s, v2 did not
