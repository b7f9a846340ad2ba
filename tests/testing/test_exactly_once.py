"""Exactly-once apps (sluice.runtime.commit.Transactional) through the driver: the in-memory producer's
transactions carry outputs, changelogs, dead letters and offsets."""

from __future__ import annotations

import pytest

from sluice import App
from sluice.testing import TestDriver

pytestmark = pytest.mark.memory


def eos_app(name: str) -> App:
    app = App(name, guarantee="exactly_once")
    app.on_error(retries=0)
    orders = app.stream("orders", value="json")
    orders.map(lambda o: {"id": o["id"], "total": o["qty"] * o["price"]}).to("totals")
    orders.key_by(lambda o: o["user"]).count(name="per-user").current().to("order-counts")
    return app


def test_an_exactly_once_app_commits_outputs_state_and_offsets_in_transactions():
    app = eos_app("eos")
    with TestDriver(app, partitions=2) as driver:
        for i in range(10):
            driver.send("orders", {"id": i, "user": f"u{i % 3}", "qty": 1, "price": i}, key=f"order-{i}")
        totals = driver.output("totals")
        counts = driver.output("order-counts")
        committed = driver.committed("orders")
        transactions = [
            rec.txn for topic in driver.broker.topics.values() for log in topic.logs for rec in log
        ]
        commits = driver.stats.commits
    assert sorted(r.value["total"] for r in totals) == list(range(10))
    final = {}
    for r in counts:
        final[r.key] = r.value["value"]
    assert final == {"u0": 4, "u1": 3, "u2": 3}
    assert sum(committed.values()) == 10 and all(o > 0 for o in committed.values())
    # the input was produced outside transactions; everything the app wrote, inside committed ones
    written = [t for t in transactions if t is not None]
    assert written and all(t.state == "committed" for t in written)
    assert {t.offsets and next(iter(t.offsets))[0] for t in written if t.offsets} == {"eos"}
    assert commits >= 1


def test_an_exactly_once_dead_letter_is_written_in_the_transaction():
    app = eos_app("eos-dlq")
    with TestDriver(app) as driver:
        driver.send("orders", {"id": 1, "user": "u1", "qty": 2, "price": 3}, key="u1")
        driver.send("orders", {"id": 2, "user": "u2", "qty": 2}, key="u2")  # no price
        [dead] = driver.dead_letters()
        totals = [r.value for r in driver.output("totals")]
    assert totals == [{"id": 1, "total": 6}]
    assert dead.headers["sluice.error.exception"] == "KeyError"
    assert dead.key == b"u2"


def test_read_committed_output_hides_an_open_transaction():
    """What the driver returns is what a read_committed reader sees: not the open transaction's records."""
    app = eos_app("eos-open")
    with TestDriver(app) as driver:
        driver.send("orders", {"id": 1, "user": "u1", "qty": 1, "price": 5}, key="u1")
        assert len(driver.output("totals")) == 1
        producer = driver.runner.producer
        assert producer is not None
        producer.produce("totals", b'{"id":99}')  # inside the runtime's open transaction
        visible = driver.broker.read("totals", committed_only=True)
        everything = driver.broker.read("totals", committed_only=False)
    assert [m.value() for m in visible] == [b'{"id":1,"total":5}']
    assert len(everything) == 2


def test_an_output_kafka_refuses_aborts_the_transaction_and_its_record_is_dead_lettered_on_the_redo():
    """The abort-and-redo path of Transactional: the in-memory broker refuses a record above
    max.message.bytes (its headers count: the runtime's own size check passes it), the
    transaction is aborted, the producer re-created, the batch redone."""
    app = App("eos-large", guarantee="exactly_once")
    app.on_error(retries=0)
    app.stream("in", value="json").map(lambda v: {"n": v["n"], "pad": "x" * v["size"]}).to("out")
    with TestDriver(app) as driver:
        driver.send("in", {"n": 1, "size": 10})
        driver.send("in", {"n": 2, "size": 1_046_000}, headers={"blob": "y" * 3_000})  # 1_049_0xx bytes
        driver.send("in", {"n": 3, "size": 10})
        out = [r.value["n"] for r in driver.output("out")]
        [dead] = driver.dead_letters()
        committer = driver.runner.committer
        aborted = [
            rec
            for log in driver.broker.topics["out"].logs
            for rec in log
            if rec.txn and rec.txn.state == "aborted"
        ]
    assert out == [1, 3]  # no duplicate of the records redone after the abort
    assert dead.headers["sluice.error.stage"] == "produce"
    assert b'"size":1046000' in dead.value
    assert dead.headers["blob"] == "y" * 3_000
    assert committer is not None and committer.renewals >= 1  # a new producer after the abort
    assert aborted  # the first attempt's outputs are in the log, aborted, invisible
