"""Exactly-once after an abort (issue 15 item 8): a new producer epoch, the records redone, nothing twice."""

from __future__ import annotations

import uuid

import orjson

from sluice import App
from tests.apps import running, wait_for
from tests.runtime.test_exactly_once import USERS, check, produce_input, read_committed


def test_output_refused_during_an_outage_aborts_renews_the_producer_and_redoes_exactly_once(
    kafka, topic_factory, tmp_path
):
    """An output topic missing for a while (refusals of the moment): the transaction is aborted,
    the producer re-created (init_transactions, a new epoch) and the records redone; the app
    neither stops nor writes anything twice (read_committed), dead letters in flight included."""
    src = topic_factory(partitions=2)
    ids, counts = f"ids-{uuid.uuid4().hex[:8]}", f"counts-{uuid.uuid4().hex[:8]}"
    half = 500
    produce_input(kafka, src, half)
    app = App(
        f"eos-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        guarantee="exactly_once",
        state_dir=tmp_path,
        producer_config={"message.timeout.ms": 2000},
    )
    events = app.stream(src)
    events.map(lambda e: {"id": e["id"]}).to(ids)
    events.key_by(lambda e: e["user"]).count(name="c").current().to(counts)
    kafka.created.extend([counts, f"{app.name}-c-repartition", f"{app.name}-c-changelog", f"{app.name}.dlq"])
    with running(app) as outcome:
        wait_for(lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= half, outcome=outcome)
        first = {v["id"] for v in read_committed(kafka, ids)}
        kafka.admin.delete_topics([ids])[ids].result(10)
        produce_input_from(kafka, src, half, 2 * half)
        # dead letters in flight while the transactions abort: each must end in the DLQ once
        kafka.produce(src, [(f"bad-{i}", b'{"id": "broken') for i in range(3)])
        committer = app._runner.committer
        wait_for(lambda: committer.renewals >= 1, 60, what="an abort and a new producer", outcome=outcome)
        topic_factory(ids, partitions=2)  # the outage ends
        wait_for(
            lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= 2 * half + 3,
            90,
            what="every input committed",
            outcome=outcome,
        )
    assert "error" not in outcome
    dead = kafka.drain(f"{app.name}.dlq", idle=3, timeout=60, **{"isolation.level": "read_committed"})
    assert sorted(r.key for r in dead) == [b"bad-0", b"bad-1", b"bad-2"], "each dead letter once"
    # the stores went back to the last commit: by taking back the writes since it (an abort that
    # succeeded) or, when the abort itself failed (its outcome unknown), by restoring them from
    # the committed changelog; which of the two depends on the broker's timing, both are exact
    assert committer.undone + committer.restored >= 1
    assert first == set(range(half))
    later = read_committed(kafka, ids)
    assert sorted(v["id"] for v in later) == list(range(half, 2 * half)), "each redone output once"
    all_ids = [{"id": i} for i in range(half)] + later
    duplicates, out_of_sequence = check(all_ids, read_committed(kafka, counts), 2 * half)
    assert (duplicates, out_of_sequence) == (0, 0)


def produce_input_from(kafka, src: str, start: int, end: int) -> None:
    records = [
        (f"user-{i % USERS}", orjson.dumps({"id": i, "user": f"user-{i % USERS}"})) for i in range(start, end)
    ]
    kafka.produce(src, records)


def test_output_too_large_under_exactly_once_dead_letters_its_record_once_and_goes_on(
    kafka, topic_factory, tmp_path
):
    """Issue 15 item 5 under exactly-once: the transaction with the refused output is aborted and
    redone with the record's dead letter in its place; no crash loop, nothing twice."""
    src = topic_factory(partitions=2)
    out = topic_factory(partitions=2, config={"max.message.bytes": "20000"})
    n, big = 300, {17, 160}
    records = []
    for i in range(n):
        pad = "x" * (50_000 if i in big else 10)
        records.append((f"k{i}", orjson.dumps({"id": i, "pad": pad})))
    kafka.produce(src, records)
    app = App(
        f"eos-big-{uuid.uuid4().hex[:8]}",
        brokers=kafka.bootstrap,
        guarantee="exactly_once",
        state_dir=tmp_path,
    )
    app.stream(src).map(lambda e: e).to(out)
    dlq = f"{app.name}.dlq"
    kafka.created.append(dlq)
    with running(app) as outcome:
        wait_for(lambda: sum(kafka.committed(app.group_id, src, 2).values()) >= n, 60, outcome=outcome)
    assert "error" not in outcome
    outputs = sorted(
        orjson.loads(r.value)["id"]
        for r in kafka.drain(out, idle=3, timeout=60, **{"isolation.level": "read_committed"})
    )
    assert outputs == sorted(set(range(n)) - big)
    dead = kafka.drain(dlq, idle=3, timeout=60, **{"isolation.level": "read_committed"})
    assert sorted(orjson.loads(r.value)["id"] for r in dead) == sorted(big)
    assert {dict(r.headers)["sluice.error.stage"] for r in dead} == {b"produce"}
