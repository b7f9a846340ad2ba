"""``sluice dlq inspect`` and ``sluice dlq replay`` against a real broker, and the dead-letter header format."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import KafkaException

from sluice.cli.main import cli
from sluice.errors.dead_letter import (
    MAX_MESSAGE_BYTES,
    MAX_STACKTRACE_BYTES,
    DeadLetterContext,
    original_headers,
    replay_count,
)

T0 = 1_600_000_000_000  # long ago: a replayed record must keep it, not get "now"


def error_headers(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    stage: str,
    step: str,
    exception: str,
    message: str,
) -> list[tuple[str, bytes]]:
    """The sluice.error.* headers, written out by hand from the documented format."""
    fields = {
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "timestamp": str(timestamp),
        "stage": stage,
        "step": step,
        "exception": exception,
        "message": message,
        "stacktrace": f'Traceback (most recent call last):\n  File "app.py", line 7\n{exception}: {message}',
        "attempts": "4",
        "app": "billing",
    }
    return [(f"sluice.error.{name}", value.encode()) for name, value in fields.items()]


@dataclass(frozen=True)
class DeadLetter:
    source: str  # "" for a record without sluice.error headers
    partition: int  # in the source topic
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]  # the original record's own headers
    timestamp: int
    exception: str


@dataclass
class Scenario:
    bootstrap: str
    dlq: str
    src_a: str
    src_b: str
    letters: list[DeadLetter]

    def replayed(self, source: str, count: int = 1) -> set[tuple]:
        """What re-publishing the dead letters of ``source`` must produce, as comparable tuples."""
        return {
            (
                d.partition,
                d.key,
                d.value,
                (*d.headers, ("sluice.replay.count", str(count).encode())),
                d.timestamp,
            )
            for d in self.letters
            if d.source == source
        }


def write_dead_letters(kafka, dlq: str, letters: list[DeadLetter], dlq_partitions: int = 1) -> None:
    records = []
    for i, d in enumerate(letters):
        headers = list(d.headers)
        if d.source:
            headers += error_headers(
                d.source,
                d.partition,
                100 + i,
                d.timestamp,
                *STAGE_STEP[d.exception],
                d.exception,
                f"bad #{i}",
            )
        records.append(
            (d.key, d.value, {"headers": headers, "timestamp": d.timestamp, "partition": i % dlq_partitions})
        )
    kafka.produce(dlq, records)


STAGE_STEP = {
    "JSONDecodeError": ("deserialize", "source(events)"),
    "ValueError": ("process", "map#2(enrich)"),
    "OperationalError": ("sink", "sink#4(sqlite)"),
}


@pytest.fixture
def replay_groups(kafka) -> Iterator[list[str]]:
    """Consumer groups to delete after the test (the topics are deleted by ``kafka``)."""
    groups: list[str] = []
    yield groups
    if groups:
        try:
            for future in kafka.admin.delete_consumer_groups(groups, request_timeout=10).values():
                future.result(timeout=15)
        except KafkaException:
            pass


@pytest.fixture
def scenario(kafka, topic_factory, replay_groups) -> Scenario:
    """A 2-partition DLQ with 8 records: two source topics, three stages and exceptions, one stray record."""
    src_a = topic_factory(partitions=2)
    src_b = topic_factory()
    dlq = topic_factory(partitions=2)
    replay_groups.append(f"sluice-dlq-replay.{dlq}")
    trace = (("trace-id", b"t-1"), ("content-type", b"application/json"))
    letters = [
        DeadLetter(src_a, 0, b"k0", b"{not json", trace, T0 + 0, "JSONDecodeError"),
        DeadLetter(src_a, 1, b"k1", b"\xff\xfe", (), T0 + 1, "JSONDecodeError"),
        DeadLetter(src_a, 1, None, b"{", trace, T0 + 2, "JSONDecodeError"),
        DeadLetter(src_a, 0, b"k3", b'{"sku": "x"}', trace, T0 + 3, "ValueError"),
        DeadLetter(src_a, 1, b"k4", None, (), T0 + 4, "ValueError"),
        DeadLetter(src_b, 0, b"k5", b'{"sku": "y"}', (("trace-id", b"t-5"),), T0 + 5, "ValueError"),
        DeadLetter(src_b, 0, b"k6", b'{"id": 6}', (), T0 + 6, "OperationalError"),
        DeadLetter("", 0, b"k7", b"stray", (("x", b"y"),), T0 + 7, ""),
    ]
    write_dead_letters(kafka, dlq, letters, dlq_partitions=2)
    return Scenario(kafka.bootstrap, dlq, src_a, src_b, letters)


def dlq_cli(bootstrap: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["dlq", *args, "--brokers", bootstrap], env={"COLUMNS": "200"})


def sluice_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def records_of(kafka, topic: str, expected: int) -> set[tuple]:
    return {
        (r.partition, r.key, r.value, r.headers, r.timestamp) for r in kafka.drain(topic, expected=expected)
    }


def total(offsets: dict[int, int]) -> int:
    return sum(offsets.values())


# ---------------------------------------------------------------------- inspect


def test_inspect_counts_dead_letters_by_source_topic_stage_and_exception(scenario: Scenario):
    proc = sluice_process("dlq", "inspect", scenario.dlq, env={"SLUICE_BROKERS": scenario.bootstrap})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for source, stage, exception, count, step in [
        (scenario.src_a, "deserialize", "JSONDecodeError", 3, r"source\(events\)"),
        (scenario.src_a, "process", "ValueError", 2, r"map#2\(enrich\)"),
        (scenario.src_b, "process", "ValueError", 1, r"map#2\(enrich\)"),
        (scenario.src_b, "sink", "OperationalError", 1, r"sink#4\(sqlite\)"),
    ]:
        assert re.search(rf"\b{source}\s+{stage}\s+{exception}\s+{count}\s+{step}\s+bad #\d", out), out
    assert re.search(r"\(no sluice\.error headers\)\s+1\b", out), out
    assert f"total: 8 dead letters in {scenario.dlq} (5 groups, 2 partitions)" in out
    assert proc.stderr == ""


def test_inspect_of_an_empty_dead_letter_topic_says_so(kafka, topic_factory):
    dlq = topic_factory()
    result = dlq_cli(kafka.bootstrap, "inspect", dlq)
    assert result.exit_code == 0, result.output
    assert f"total: 0 dead letters in {dlq}" in result.stdout


# ---------------------------------------------------------------------- replay


def test_replay_republishes_to_source_partitions_with_key_value_timestamp_and_headers(
    kafka, scenario: Scenario
):
    result = dlq_cli(scenario.bootstrap, "replay", scenario.dlq)
    assert result.exit_code == 0, result.output
    assert "replayed: 7" in result.stdout
    assert "skipped without sluice.error headers: 1" in result.stdout
    assert re.search(rf"\b{scenario.src_a}\s+5\b", result.stdout)
    assert re.search(rf"\b{scenario.src_b}\s+2\b", result.stdout)
    assert "sluice: warning: skipped 1 record without sluice.error headers" in result.stderr

    assert records_of(kafka, scenario.src_a, 5) == scenario.replayed(scenario.src_a)
    assert records_of(kafka, scenario.src_b, 2) == scenario.replayed(scenario.src_b)
    group = f"sluice-dlq-replay.{scenario.dlq}"
    assert kafka.committed(group, scenario.dlq, 2) == kafka.end_offsets(scenario.dlq, 2)


def test_second_replay_replays_nothing_and_from_beginning_replays_all_again(kafka, scenario: Scenario):
    first = dlq_cli(scenario.bootstrap, "replay", scenario.dlq)
    assert first.exit_code == 0, first.output
    assert "replayed: 7" in first.stdout

    second = dlq_cli(scenario.bootstrap, "replay", scenario.dlq)
    assert second.exit_code == 0, second.output
    assert "replayed: 0" in second.stdout
    assert "nothing new to replay" in second.stdout
    assert total(kafka.end_offsets(scenario.src_a, 2)) == 5
    assert total(kafka.end_offsets(scenario.src_b)) == 2

    again = dlq_cli(scenario.bootstrap, "replay", scenario.dlq, "--from-beginning")
    assert again.exit_code == 0, again.output
    assert "replayed: 7" in again.stdout
    assert total(kafka.end_offsets(scenario.src_a, 2)) == 10
    assert total(kafka.end_offsets(scenario.src_b)) == 2 * 2


def test_replay_reads_only_the_dead_letters_present_at_start(kafka, topic_factory, replay_groups):
    dlq = topic_factory()
    replay_groups.append(f"sluice-dlq-replay.{dlq}")
    # dead letters whose source is the DLQ itself: replaying them appends to what is being read
    letters = [DeadLetter(dlq, 0, f"k{i}".encode(), b"v", (), T0 + i, "ValueError") for i in range(3)]
    write_dead_letters(kafka, dlq, letters)

    result = dlq_cli(kafka.bootstrap, "replay", dlq)
    assert result.exit_code == 0, result.output
    assert "3 dead letters read" in result.stdout
    assert "replayed: 3" in result.stdout
    assert kafka.end_offsets(dlq) == {0: 6}
    assert kafka.committed(f"sluice-dlq-replay.{dlq}", dlq) == {0: 3}


def test_dead_letter_of_a_replayed_record_is_replayed_with_count_two(kafka, topic_factory, replay_groups):
    source, dlq = topic_factory(), topic_factory()
    replay_groups.append(f"sluice-dlq-replay.{dlq}")
    headers = [
        ("trace-id", b"t-9"),
        ("sluice.replay.count", b"1"),
        *error_headers(source, 0, 41, T0, "process", "map#1(parse)", "KeyError", "'sku'"),
    ]
    kafka.produce(dlq, [(b"k", b"v", {"headers": headers, "timestamp": T0})])

    result = dlq_cli(kafka.bootstrap, "replay", dlq)
    assert result.exit_code == 0, result.output
    [record] = kafka.drain(source, expected=1)
    assert record.headers == (("trace-id", b"t-9"), ("sluice.replay.count", b"2"))
    assert (record.key, record.value, record.timestamp) == (b"k", b"v", T0)

    inspect = dlq_cli(kafka.bootstrap, "inspect", dlq)
    assert "1 failed again after a replay" in inspect.stdout


def test_where_exception_replays_only_that_exception(kafka, scenario: Scenario):
    result = dlq_cli(scenario.bootstrap, "replay", scenario.dlq, "--where-exception", "ValueError")
    assert result.exit_code == 0, result.output
    assert "replayed: 3" in result.stdout
    assert "skipped by filter: 5 (--where-exception ValueError)" in result.stdout
    assert "replay them later with --from-beginning --where-exception NAME" in result.stdout
    value_errors = {r for r in scenario.replayed(scenario.src_a) if r[4] in (T0 + 3, T0 + 4)}
    assert records_of(kafka, scenario.src_a, 2) == value_errors
    assert records_of(kafka, scenario.src_b, 1) == {
        r for r in scenario.replayed(scenario.src_b) if r[4] == T0 + 5
    }
    time.sleep(0.5)
    assert total(kafka.end_offsets(scenario.src_a, 2)) == 2


def test_to_redirects_every_dead_letter_including_ones_without_headers(
    kafka, topic_factory, scenario: Scenario
):
    elsewhere = topic_factory()
    result = dlq_cli(scenario.bootstrap, "replay", scenario.dlq, "--to", elsewhere)
    assert result.exit_code == 0, result.output
    assert "replayed: 8" in result.stdout
    expected = {
        (d.key, d.value, (*d.headers, ("sluice.replay.count", b"1")), d.timestamp) for d in scenario.letters
    }
    assert {r[1:] for r in records_of(kafka, elsewhere, 8)} == expected
    assert total(kafka.end_offsets(scenario.src_a, 2)) == 0


def test_dry_run_produces_nothing_and_commits_nothing(kafka, scenario: Scenario):
    result = dlq_cli(scenario.bootstrap, "replay", scenario.dlq, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would replay: 7" in result.stdout
    assert re.search(rf"\b{scenario.src_a}\s+5\b", result.stdout)
    assert "dry run: nothing produced, nothing committed" in result.stdout
    assert total(kafka.end_offsets(scenario.src_a, 2)) == 0
    assert total(kafka.end_offsets(scenario.src_b)) == 0
    assert kafka.committed(f"sluice-dlq-replay.{scenario.dlq}", scenario.dlq, 2) == {0: -1001, 1: -1001}

    real = dlq_cli(scenario.bootstrap, "replay", scenario.dlq)  # the dry run left the position alone
    assert "replayed: 7" in real.stdout


# ---------------------------------------------------------------------- errors


def test_missing_destination_topic_is_an_error_naming_it(kafka, topic_factory, replay_groups):
    source, dlq = topic_factory(), topic_factory()
    gone = f"{source}-gone"
    replay_groups.append(f"sluice-dlq-replay.{dlq}")
    letters = [
        DeadLetter(source, 0, b"k0", b"v0", (), T0, "ValueError"),
        DeadLetter(gone, 0, b"k1", b"v1", (), T0, "ValueError"),
        DeadLetter(source, 0, b"k2", b"v2", (), T0, "ValueError"),
    ]
    write_dead_letters(kafka, dlq, letters)

    dry = dlq_cli(kafka.bootstrap, "replay", dlq, "--dry-run")
    assert dry.exit_code == 1
    assert f"{gone} (does not exist)" in dry.stdout
    assert f"sluice: error: replay destination topic '{gone}' does not exist" in dry.stderr

    real = dlq_cli(kafka.bootstrap, "replay", dlq)
    assert real.exit_code == 1
    assert real.stderr.startswith(
        f"sluice: error: replay destination topic '{gone}' (sluice.error.topic of the dead letter "
        f"at partition 0 offset 1) does not exist on {kafka.bootstrap}"
    )
    assert real.stderr.count("\n") == 1
    assert real.stderr.endswith("replayed and committed before it: 1\n")
    assert total(kafka.end_offsets(source)) == 1  # the one before it, committed
    assert kafka.committed(f"sluice-dlq-replay.{dlq}", dlq) == {0: 1}

    to = dlq_cli(kafka.bootstrap, "replay", dlq, "--to", gone)
    assert to.exit_code == 1
    assert f"sluice: error: replay destination topic (--to) '{gone}' does not exist" in to.stderr
    assert f"(did you mean '{source}'?)" in to.stderr


def test_record_kafka_refuses_stops_the_replay_and_progress_stays_before_it(
    kafka, topic_factory, replay_groups
):
    source = topic_factory(config={"max.message.bytes": "2000"})
    dlq = topic_factory()
    replay_groups.append(f"sluice-dlq-replay.{dlq}")
    letters = [
        DeadLetter(source, 0, b"k0", b"small", (), T0, "ValueError"),
        DeadLetter(source, 0, b"k1", b"x" * 10_000, (), T0, "ValueError"),
        DeadLetter(source, 0, b"k2", b"small", (), T0, "ValueError"),
    ]
    write_dead_letters(kafka, dlq, letters)
    result = dlq_cli(kafka.bootstrap, "replay", dlq)
    assert result.exit_code == 1
    assert "sluice: error: Kafka did not acknowledge a replayed record: partition 0 offset " in result.stderr
    assert "too large" in result.stderr
    # never past the refused record, whatever shared its batch
    assert kafka.committed(f"sluice-dlq-replay.{dlq}", dlq)[0] in (-1001, 1)


def test_missing_dead_letter_topic_is_a_one_line_error(kafka, topic_factory):
    existing = topic_factory()
    proc = sluice_process("dlq", "inspect", existing + "x", "--brokers", kafka.bootstrap)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"sluice: error: dead-letter topic '{existing}x' does not exist on {kafka.bootstrap}"
    )
    assert f"did you mean '{existing}'" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["inspect", "replay"])
def test_unreachable_brokers_are_a_one_line_error(command):
    started = time.monotonic()
    proc = sluice_process("dlq", command, "events.dlq", "--brokers", "127.0.0.1:1", "--timeout", "2")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sluice: error: could not reach Kafka at 127.0.0.1:1 within 2s")
    assert proc.stderr.count("\n") == 1
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "inspect"], "Missing argument 'TOPIC'"),
        (["dlq", "replay", "events.dlq", "--bogus"], "--bogus"),
        (["dlq", "replay", "bad topic!"], "'bad topic!' is not a valid Kafka topic name"),
        (["dlq", "replay", "events.dlq", "--to", "a/b"], "'a/b' is not a valid Kafka topic name"),
        (["dlq", "replay", "events.dlq", "--to", "events.dlq"], "is the dead-letter topic itself"),
        (["dlq", "replay", "events.dlq", "--timeout", "0"], "0.0 is not in the range x>=0.1"),
        (["dlq", "requeue", "events.dlq"], "No such command 'requeue'"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_bad_arguments_exit_2_without_traceback_from_the_command_line():
    proc = sluice_process("dlq", "replay", "events.dlq", "--wher-exception", "X")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr
    assert "--where-exception" in proc.stderr  # click suggests the closest option
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- the header format


def context(**changes) -> DeadLetterContext:
    fields = {
        "topic": "orders",
        "partition": 3,
        "offset": 1207,
        "timestamp": T0,
        "stage": "process",
        "step": "map#2(enrich)",
        "exception": "ValueError",
        "message": "bad sku 'x' — ünïcode",
        "stacktrace": "Traceback (most recent call last):\n...\nValueError: bad sku",
        "attempts": 4,
        "app": "billing",
    }
    return DeadLetterContext(**{**fields, **changes})


def test_context_round_trips_through_headers():
    ctx = context()
    headers = ctx.to_headers()
    names = "topic partition offset timestamp stage step exception message stacktrace attempts app"
    assert [name for name, _ in headers] == [f"sluice.error.{n}" for n in names.split(" ")]
    assert all(isinstance(value, bytes) for _, value in headers)
    assert dict(headers)["sluice.error.attempts"] == b"4"
    assert DeadLetterContext.from_headers([("a", b"1"), *headers, ("sluice.replay.count", b"2")]) == ctx


@pytest.mark.parametrize("headers", [None, [], [("trace-id", b"1"), ("sluice.replay.count", b"1")]])
def test_records_without_error_headers_have_no_context(headers):
    assert DeadLetterContext.from_headers(headers) is None


def test_last_error_headers_win_for_a_dead_letter_of_a_dead_letter():
    older, newer = context(exception="KeyError"), context(exception="TimeoutError", attempts=1)
    assert DeadLetterContext.from_headers([*older.to_headers(), *newer.to_headers()]) == newer


def test_long_stacktrace_and_message_are_bounded_keeping_what_matters():
    trace = (
        "Traceback (most recent call last):\n" + "  File 'x.py', line 1, in f\n" * 2000 + "ValueError: boom"
    )
    headers = dict(context(stacktrace=trace, message="é" * 10_000).to_headers())
    assert len(headers["sluice.error.stacktrace"]) <= MAX_STACKTRACE_BYTES
    assert headers["sluice.error.stacktrace"].endswith(b"ValueError: boom")
    assert len(headers["sluice.error.message"]) <= MAX_MESSAGE_BYTES
    assert headers["sluice.error.message"].decode().startswith("éé")  # cut on a character boundary


def test_text_that_is_not_utf8_is_escaped_not_refused():
    headers = dict(context(message="bad byte \udcff").to_headers())
    assert headers["sluice.error.message"] == b"bad byte \\udcff"


def test_malformed_numbers_read_as_minus_one():
    ctx = DeadLetterContext.from_headers([("sluice.error.topic", b"t"), ("sluice.error.offset", b"twelve")])
    assert ctx is not None
    assert (ctx.topic, ctx.offset, ctx.attempts, ctx.stage) == ("t", -1, -1, "")


def test_original_headers_drop_error_and_replay_headers_keeping_order_and_values():
    headers = [
        ("b", b"2"),
        ("sluice.replay.count", b"1"),
        ("a", None),
        *context().to_headers(),
        ("b", b"3"),
    ]
    assert original_headers(headers) == [("b", b"2"), ("a", None), ("b", b"3")]
    assert replay_count(headers) == 1
