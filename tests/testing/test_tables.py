"""Tables and stream-table joins through the TestDriver (no broker): the same runtime, in memory."""

from __future__ import annotations

from sluice import App
from sluice.testing import TestDriver


def enrich_app() -> App:
    app = App("enrich")
    users = app.table("users", value="json")
    orders = app.stream("orders", value="json")
    orders.join(users, lambda o, u: {**o, "user": u}, how="left").to("enriched")
    orders.join(users, lambda o, u: {**o, "user": u}, name="inner").to("enriched-inner")
    return app


def test_a_table_update_counts_for_orders_stamped_at_or_after_it():
    with TestDriver(enrich_app(), partitions=2) as driver:
        driver.send("users", {"name": "Ann"}, key="u1", timestamp=1_000)
        driver.send("orders", {"id": 1}, key="u1", timestamp=999)  # before the row existed
        driver.send("orders", {"id": 2}, key="u1", timestamp=1_000)  # a tie: the update goes first
        driver.send("users", None, key="u1", timestamp=2_000)  # deleted
        driver.send("orders", {"id": 3}, key="u1", timestamp=2_500)
        left = [r.value for r in driver.output("enriched")]
        inner = [r.value for r in driver.output("enriched-inner")]
    assert left == [
        {"id": 1, "user": None},
        {"id": 2, "user": {"name": "Ann"}},
        {"id": 3, "user": None},
    ]
    assert inner == [{"id": 2, "user": {"name": "Ann"}}]


def test_global_table_joins_on_a_field():
    app = App("countries")
    countries = app.global_table("countries", value="json")
    app.stream("orders").join(countries, lambda o, c: {**o, "country": c["name"]}, on=lambda o: o["cc"]).to(
        "out"
    )
    with TestDriver(app, partitions={"orders": 2, "countries": 3}) as driver:
        driver.send("countries", {"name": "France"}, key="fr")
        driver.send("orders", {"id": 1, "cc": "fr"})
        driver.send("orders", {"id": 2, "cc": "xx"})  # no row: an inner join drops it
        out = [r.value for r in driver.output("out")]
    assert out == [{"id": 1, "cc": "fr", "country": "France"}]


def test_catching_up_on_a_big_table_writes_it_in_bounded_chunks(monkeypatch):
    """The rows applied before one order are written to the store every _WRITE_CHUNK, not held until the end."""
    from sluice.runtime import tables
    from sluice.state.store import PartitionStore

    monkeypatch.setattr(tables, "_WRITE_CHUNK", 10)
    sizes: list[int] = []
    apply = PartitionStore.apply

    def recording(self, states, index, stream_time=None):
        sizes.append(len(states))
        return apply(self, states, index, stream_time)

    monkeypatch.setattr(PartitionStore, "apply", recording)
    with TestDriver(enrich_app()) as driver:
        for n in range(100):
            driver.send("users", {"n": n}, key=f"u{n}", timestamp=1_000)
        driver.send("orders", {"id": 1}, key="u99", timestamp=2_000)
        [row] = [r.value for r in driver.output("enriched")]
    assert row == {"id": 1, "user": {"n": 99}}
    assert sum(sizes) >= 200  # both joins' tables hold every row
    assert max(sizes) <= 10
