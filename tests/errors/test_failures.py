"""Every failure kind: retried, then dead-lettered with full context (or skipped, or fatal); nothing lost."""

from __future__ import annotations

import uuid

import orjson
import pytest

from sluice import App, StepError
from tests.apps import running, wait_for

N = 60
BAD = {7, 23, 41}


def headers_of(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers if k.startswith("sluice.error.")}


def bad_deserializer(data: bytes):
    value = orjson.loads(data)
    if value["id"] in BAD:
        raise ValueError(f"id {value['id']} is not allowed")
    return value


def check_raises(pred):
    def fn(e):
        if e["id"] in BAD:
            raise RuntimeError(f"boom on {e['id']}")
        return pred(e)

    return fn


class Sink:
    def __init__(self):
        self.seen = []

    def __call__(self, e):
        if e["id"] in BAD:
            raise ConnectionError(f"db down for {e['id']}")
        self.seen.append(e["id"])


# name -> (value format, bad payload for id i or None, pipeline builder, stage, exception, step prefix)
KINDS = {
    "malformed-json": (
        "json",
        lambda i: b'{"id": %d, "broken' % i,
        lambda s, out: s.to(out),
        "deserialize",
        "JSONDecodeError",
        "deserialize(json)",
    ),
    "invalid-utf8": (
        "str",
        lambda i: b"\xff\xfe id %d" % i,
        lambda s, out: s.map(lambda t: {"id": int(orjson.loads(t)["id"])}).to(out, value="json"),
        "deserialize",
        "UnicodeDecodeError",
        "deserialize(str)",
    ),
    "deserializer-raises": (
        bad_deserializer,
        None,
        lambda s, out: s.to(out, value="json"),
        "deserialize",
        "ValueError",
        "deserialize(bad_deserializer)",
    ),
    "filter-raises": (
        "json",
        None,
        lambda s, out: s.filter(check_raises(lambda e: True)).to(out),
        "process",
        "RuntimeError",
        "filter#",
    ),
    "map-raises": (
        "json",
        None,
        lambda s, out: s.map(check_raises(lambda e: e)).to(out),
        "process",
        "RuntimeError",
        "map#",
    ),
    "flat_map-raises": (
        "json",
        None,
        lambda s, out: s.flat_map(check_raises(lambda e: [e])).to(out),
        "process",
        "RuntimeError",
        "flat_map#",
    ),
    "key_by-raises": (
        "json",
        None,
        lambda s, out: s.key_by(check_raises(lambda e: str(e["id"]))).to(out),
        "process",
        "RuntimeError",
        "key_by#",
    ),
}


def make_app(kafka, **kwargs) -> App:
    return App(f"fail-{uuid.uuid4().hex[:8]}", brokers=kafka.bootstrap, commit_interval="200ms", **kwargs)


def produce_inputs(kafka, topic, bad_payload=None):
    records = []
    for i in range(N):
        value = bad_payload(i) if (bad_payload and i in BAD) else orjson.dumps({"id": i})
        records.append(
            (
                f"key-{i}".encode(),
                value,
                {"headers": [("origin", f"o{i}".encode())], "timestamp": 1_700_000_000_000 + i},
            )
        )
    kafka.produce(topic, records)
    return {
        orjson.loads(r[1])["id"] if i not in BAD or not bad_payload else i: r for i, r in enumerate(records)
    }


def wait_committed(kafka, app, topic, partitions=1, expected=N, outcome=None):
    wait_for(
        lambda: sum(max(o, 0) for o in kafka.committed(app.name, topic, partitions).values()) == expected,
        60,
        what=f"all {expected} offsets committed",
        outcome=outcome,
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_failure_kind_goes_to_dead_letter_topic_with_context(kafka, topic_factory, kind):
    value_format, bad_payload, build, stage, exception, step_prefix = KINDS[kind]
    src, out = topic_factory(partitions=2), topic_factory(partitions=2)
    sent = produce_inputs(kafka, src, bad_payload)
    app = make_app(kafka)
    dlq = f"{app.name}.dlq"
    app.on_error(retries=2, backoff="10ms..50ms")
    build(app.stream(src, value=value_format), out)

    with running(app) as outcome:
        wait_committed(kafka, app, src, 2, outcome=outcome)
        outputs = kafka.drain(out, expected=N - len(BAD))
        dead = kafka.drain(dlq, expected=len(BAD))
    kafka.created.append(dlq)

    out_ids = {orjson.loads(r.value)["id"] for r in outputs}
    assert out_ids == set(range(N)) - BAD
    assert len(dead) == len(BAD)
    dead_ids = set()
    for rec in dead:
        h = headers_of(rec)
        i = int(rec.key.decode().split("-")[1])
        dead_ids.add(i)
        key, value, extra = sent[i]
        assert (rec.key, rec.value, rec.timestamp) == (key, value, extra["timestamp"]), (
            "original record byte for byte"
        )
        assert rec.headers[0] == ("origin", f"o{i}".encode()), "original headers first, untouched"
        assert h["sluice.error.topic"] == src
        assert int(h["sluice.error.partition"]) in (0, 1)
        assert int(h["sluice.error.offset"]) >= 0
        assert h["sluice.error.timestamp"] == str(extra["timestamp"])
        assert h["sluice.error.stage"] == stage
        assert h["sluice.error.step"].startswith(step_prefix)
        assert h["sluice.error.exception"] == exception
        assert h["sluice.error.message"]
        assert exception in h["sluice.error.stacktrace"]
        assert h["sluice.error.attempts"] == "3"
        assert h["sluice.error.app"] == app.name
    assert dead_ids == BAD
    assert app.stats.dead_letters == len(BAD)
    assert app.stats.failures.counters()["dead_letters"] == {f"{stage}/{exception}": len(BAD)}


def test_sink_that_keeps_failing_goes_to_dead_letter_and_others_reach_it(kafka, topic_factory):
    src = topic_factory()
    produce_inputs(kafka, src)
    sink = Sink()
    app = make_app(kafka)
    app.on_error(retries=1, backoff="10ms", dead_letter=f"{src}.custom-dlq")
    app.stream(src).sink(sink)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        dead = kafka.drain(f"{src}.custom-dlq", expected=len(BAD))
    kafka.created.append(f"{src}.custom-dlq")
    assert sorted(sink.seen) == sorted(set(range(N)) - BAD)
    assert sorted(int(headers_of(r)["sluice.error.offset"]) for r in dead) == sorted(BAD)
    assert {headers_of(r)["sluice.error.stage"] for r in dead} == {"sink"}
    assert {headers_of(r)["sluice.error.attempts"] for r in dead} == {"2"}


def test_transient_failure_recovered_by_retry_keeps_order(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    produce_inputs(kafka, src)
    failed_once: set[int] = set()

    def flaky(e):
        if e["id"] in BAD and e["id"] not in failed_once:
            failed_once.add(e["id"])
            raise TimeoutError("slow service")
        return e

    app = make_app(kafka)
    app.on_error(retries=3, backoff="10ms")
    app.stream(src).map(flaky).to(out)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        outputs = kafka.drain(out, expected=N)
    assert [orjson.loads(r.value)["id"] for r in outputs] == list(range(N)), (
        "retried records keep their place"
    )
    assert app.stats.dead_letters == 0
    assert app.stats.failures.recovered == len(BAD)


def test_produce_refused_record_too_large_goes_to_dead_letter(kafka, topic_factory):
    src = topic_factory()
    out = topic_factory(config={"max.message.bytes": "20000"})
    records = [
        (f"key-{i}".encode(), orjson.dumps({"id": i, "pad": "x" * (100_000 if i in BAD else 10)}))
        for i in range(N)
    ]
    kafka.produce(src, records)
    app = make_app(kafka, max_poll_records=5, producer_config={"linger.ms": 0})
    app.on_error(retries=1)
    app.stream(src).to(out)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        dead = kafka.drain(f"{app.name}.dlq", expected=len(BAD), timeout=30)
        outputs = kafka.drain(out, idle=2)
    kafka.created.append(f"{app.name}.dlq")
    dead_offsets = {int(headers_of(r)["sluice.error.offset"]) for r in dead}
    assert dead_offsets >= BAD, "every too-large record is a dead letter"
    assert {headers_of(r)["sluice.error.stage"] for r in dead} == {"produce"}
    # refused before producing (the output topic takes less than the producer sends), as Kafka would
    assert {headers_of(r)["sluice.error.exception"] for r in dead} == {"RecordTooLarge"}
    assert all("Message size too large" in headers_of(r)["sluice.error.message"] for r in dead)
    out_ids = {orjson.loads(r.value)["id"] for r in outputs}
    assert out_ids | dead_offsets == set(range(N)), "inputs = outputs + dead letters"


def test_skip_policy_counts_and_commits_past(kafka, topic_factory, caplog):
    src, out = topic_factory(), topic_factory()
    produce_inputs(kafka, src, KINDS["malformed-json"][1])
    app = make_app(kafka)
    app.on_error(skip=True)
    app.stream(src).to(out)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        outputs = kafka.drain(out, expected=N - len(BAD))
    assert len(outputs) == N - len(BAD)
    assert app.stats.skipped == len(BAD)
    assert app.stats.dead_letters == 0
    assert "skipped record" in caplog.text


def test_fail_policy_stops_without_committing_the_failed_offset(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    produce_inputs(kafka, src)
    app = make_app(kafka, max_poll_records=5)
    app.on_error(fail=True)
    app.stream(src).map(check_raises(lambda e: e)).to(out)
    with running(app) as outcome:
        wait_for(lambda: outcome, 60, what="the app to stop")
    assert isinstance(outcome.get("error"), StepError)
    assert f"{src}[0]@{min(BAD)}" in str(outcome["error"])
    assert kafka.committed(app.name, src)[0] <= min(BAD)


def test_per_step_override_beats_the_app_policy(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    produce_inputs(kafka, src)
    app = make_app(kafka)
    app.on_error(fail=True)
    app.stream(src).map(check_raises(lambda e: e), on_error={"skip": True}).to(out)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        outputs = kafka.drain(out, expected=N - len(BAD))
    assert len(outputs) == N - len(BAD)
    assert app.stats.skipped == len(BAD)


def test_default_policy_is_three_retries_then_app_dlq_with_a_warning(kafka, topic_factory, caplog):
    src, out = topic_factory(), topic_factory()
    produce_inputs(kafka, src, KINDS["malformed-json"][1])
    app = make_app(kafka)
    app.stream(src).to(out)
    with running(app) as outcome:
        wait_committed(kafka, app, src, outcome=outcome)
        dead = kafka.drain(f"{app.name}.dlq", expected=len(BAD))
    kafka.created.append(f"{app.name}.dlq")
    assert len(dead) == len(BAD)
    assert {headers_of(r)["sluice.error.attempts"] for r in dead} == {"4"}
    assert "sent to dead-letter topic" in caplog.text


def test_output_topic_gone_for_a_while_is_produced_again_not_dead_lettered(kafka, topic_factory):
    """Issue 15 item 2: a refusal of the moment (the topic is missing) is not the record's fault."""
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(b"k", orjson.dumps({"id": i})) for i in range(10)])
    app = make_app(kafka, producer_config={"message.timeout.ms": 2000})
    app.stream(src).to(out)
    with running(app) as outcome:
        assert len(kafka.drain(out, expected=10)) == 10
        kafka.admin.delete_topics([out])[out].result(10)
        kafka.created.remove(out)
        kafka.produce(src, [(b"k", orjson.dumps({"id": i})) for i in range(10, 15)])
        wait_for(lambda: app.stats.failures.counters()["retries"]["environmental"] >= 5, 30, outcome=outcome)
        assert kafka.committed(app.name, src)[0] <= 10  # nothing past the refused outputs
        topic_factory(out)  # the topic is back
        ids = [orjson.loads(r.value)["id"] for r in kafka.drain(out, expected=5, timeout=60)]
        wait_committed(kafka, app, src, expected=15, outcome=outcome)
    assert sorted(ids) == list(range(10, 15))
    assert app.stats.dead_letters == 0
    assert not kafka.drain(f"{app.name}.dlq", timeout=3, idle=1)


def test_output_refused_longer_than_retry_for_stops_without_committing_past_it(kafka, topic_factory):
    src, out = topic_factory(), topic_factory()
    kafka.produce(src, [(b"k", orjson.dumps({"id": i})) for i in range(5)])
    app = make_app(kafka, producer_config={"message.timeout.ms": 1000})
    app.on_error(retry_for="4s")
    app.stream(src).to(out)
    with running(app) as outcome:
        kafka.drain(out, expected=5)
        wait_committed(kafka, app, src, expected=5, outcome=outcome)
        kafka.admin.delete_topics([out])[out].result(10)
        kafka.created.remove(out)
        kafka.produce(src, [(b"k", orjson.dumps({"id": i})) for i in range(5, 8)])
        wait_for(lambda: "error" in outcome, 60, what="the app to stop")
    assert "for 4s" in str(outcome["error"]) or "refused" in str(outcome["error"])
    assert out in str(outcome["error"])
    assert kafka.committed(app.name, src)[0] == 5
    assert app.stats.dead_letters == 0
