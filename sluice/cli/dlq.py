"""``sluice dlq inspect TOPIC`` and ``sluice dlq replay TOPIC``: look into a dead-letter topic, re-publish it.

Both read a snapshot: every partition from its start position up to the end offset
it had when the command started, so records dead-lettered meanwhile wait for the
next run. ``inspect`` reads without a consumer group of its own (nothing is
committed). ``replay`` remembers its progress in the consumer group
``sluice-dlq-replay.<TOPIC>``, committing an offset only after every dead letter
before it was re-published and acknowledged by Kafka (acks=all, idempotent
producer): a second replay does not repeat the first, and an interrupted one
repeats at most its unacknowledged tail.

Example:
    >>> from click.testing import CliRunner
    >>> from sluice.cli.main import cli
    >>> result = CliRunner().invoke(cli, ["dlq", "replay", "bad topic!"])
    >>> result.exit_code, "'bad topic!' is not a valid Kafka topic name" in result.output
    (2, True)
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import click
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from rich import box
from rich.console import Console
from rich.table import Table

from sluice._names import suggest
from sluice.cli._common import (
    ConnectionArgs,
    connection_options,
    console,
    errors_as_one_line,
    timeout_option,
    topic_name_callback,
)
from sluice.cli._help import SluiceGroup
from sluice.errors import DeliveryError, KafkaUnavailableError, TopicNotFoundError
from sluice.errors.dead_letter import REPLAY_COUNT, DeadLetterContext, original_headers, replay_count
from sluice.kafka.admin import TopicAdmin, TopicInfo
from sluice.kafka.calls import error_text, produce_waiting
from sluice.kafka.coordinator import retry_coordinator
from sluice.kafka.properties import scrub

__all__ = [
    "InspectReport",
    "ReplayReport",
    "dlq",
    "inspect_dead_letters",
    "replay_dead_letters",
    "replay_group",
]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("sluice.kafka.librdkafka")

#: Records replayed between two commits of the replay progress.
CHECKPOINT_RECORDS = 10_000
_NO_CONTEXT = "(no sluice.error headers)"
_SAMPLE_CHARS = 60
_PERMANENT = (
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
)


def replay_group(topic: str) -> str:
    """The consumer group that remembers how far ``sluice dlq replay`` got in ``topic``.

    Example:
        >>> replay_group("orders.dlq")
        'sluice-dlq-replay.orders.dlq'
    """
    return f"sluice-dlq-replay.{topic}"


# ---------------------------------------------------------------------- reading a snapshot


class _Kafka:
    """The clients of one command, created lazily, with the command's brokers, properties and timeout."""

    def __init__(self, brokers: str, timeout: float, kafka_config: Mapping[str, Any] | None = None) -> None:
        self.brokers = brokers
        self.timeout = timeout
        self.properties = dict(kafka_config or {})
        self.admin = TopicAdmin(
            {**self.properties, "bootstrap.servers": brokers, "client.id": "sluice-dlq"}, timeout=timeout
        )
        self._topics: dict[str, TopicInfo | None] = {}
        self.last_error: str | None = None

    def on_error(self, err: KafkaError) -> None:
        self.last_error = scrub(err.str(), self.properties)
        logger.debug("kafka client error: %s", self.last_error)

    def client_config(self) -> dict[str, Any]:
        return {
            **self.properties,
            "bootstrap.servers": self.brokers,
            "client.id": "sluice-dlq",
            "logger": _librdkafka_logger,
            "error_cb": self.on_error,
        }

    def describe(self, topic: str) -> TopicInfo | None:
        if topic not in self._topics:
            self._topics[topic] = self.admin.describe(topic)
        return self._topics[topic]

    def require(self, topic: str, what: str, hint: str, origin: str = "") -> TopicInfo:
        """Describe ``topic``; raise ``TopicNotFoundError`` (with the closest existing name) when missing."""
        info = self.describe(topic)
        if info is not None:
            return info
        try:
            existing = [
                t
                for t in self.admin.client.list_topics(timeout=self.timeout).topics
                if not t.startswith("__")
            ]
        except KafkaException:
            existing = []
        msg = f"{what} {topic!r}{origin} does not exist on {self.brokers}{suggest(topic, existing)}; {hint}"
        raise TopicNotFoundError(msg)

    def kafka_error(self, doing: str, exc: KafkaException) -> KafkaUnavailableError:
        detail = error_text(exc)
        msg = f"{doing} failed on {self.brokers}: {detail}"
        return KafkaUnavailableError(msg)

    @contextlib.contextmanager
    def consumer(self, group_id: str) -> Iterator[Consumer]:
        consumer = Consumer(
            {
                **self.client_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # dead letters of aborted transactions were never dead letters
                "isolation.level": "read_committed",
            }
        )
        try:
            yield consumer
        finally:
            consumer.close()


@dataclass(frozen=True)
class _Range:
    start: int
    end: int


def _read_snapshot(
    kafka: _Kafka, consumer: Consumer, topic: str, ranges: dict[int, _Range]
) -> Iterator[Message]:
    """Yield the records of ``topic`` in ``ranges`` (per partition, in offset order), then stop.

    A partition is finished by a record at or past the end of its range or by the
    end-of-partition event at or past it; the latter matters when the last offsets
    are transaction markers, which no record ever carries.
    """
    todo = {p: r for p, r in ranges.items() if r.start < r.end}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, r.start) for p, r in todo.items()])
    stall = max(kafka.timeout, 10.0)
    last_progress = time.monotonic()
    while todo:
        try:
            batch = consumer.consume(num_messages=500, timeout=0.5)
        except KafkaException as exc:
            raise kafka.kafka_error(f"reading {topic!r}", exc) from exc
        if batch:
            last_progress = time.monotonic()
        finished: list[int] = []
        for msg in batch:
            p = msg.partition()
            rng = todo.get(p)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if rng is not None and msg.offset() >= rng.end:
                        finished.append(p)
                    continue
                if err.fatal() or err.code() in _PERMANENT:
                    msg_ = f"reading {topic!r} partition {p} failed: {err.str()}"
                    raise KafkaUnavailableError(msg_)
                kafka.on_error(err)
                continue
            if rng is None or msg.offset() >= rng.end:
                if rng is not None:
                    finished.append(p)
                continue
            yield msg
            if msg.offset() >= rng.end - 1:
                finished.append(p)
        for p in set(finished):
            if todo.pop(p, None) is not None:
                consumer.pause([TopicPartition(topic, p)])
        if todo and time.monotonic() - last_progress > stall:
            where = ", ".join(f"partition {p} (end offset {r.end})" for p, r in sorted(todo.items()))
            because = f"; last client error: {kafka.last_error}" if kafka.last_error else ""
            msg_ = (
                f"reading {topic!r} made no progress for {stall:.0f}s before reaching {where} "
                f"(an open transaction, or brokers gone{because}); run again, or raise --timeout"
            )
            raise KafkaUnavailableError(msg_)


# ---------------------------------------------------------------------- inspect


@dataclass
class _Group:
    count: int = 0
    replayed: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    sample: str = ""


@dataclass
class InspectReport:
    """Dead letters of one topic grouped by (source topic, stage, exception)."""

    topic: str
    partitions: int
    total: int = 0
    groups: dict[tuple[str, str, str], _Group] = field(default_factory=dict)

    def add(self, headers: list[tuple[str, bytes | None]] | None) -> None:
        """Count one dead letter given its headers.

        Example:
            >>> report = InspectReport("orders.dlq", 1)
            >>> report.add([("sluice.error.topic", b"orders"), ("sluice.error.stage", b"process"),
            ...             ("sluice.error.exception", b"ValueError"), ("sluice.error.message", b"bad sku")])
            >>> report.add(None)
            >>> report.total, sorted(k for k in report.groups)
            (2, [('(no sluice.error headers)', '', ''), ('orders', 'process', 'ValueError')])
        """
        self.total += 1
        ctx = DeadLetterContext.from_headers(headers)
        key = (ctx.topic, ctx.stage, ctx.exception) if ctx else (_NO_CONTEXT, "", "")
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(sample=_one_line(ctx.message) if ctx else "")
        group.count += 1
        if ctx:
            group.steps[ctx.step] += 1
        if replay_count(headers):
            group.replayed += 1


def inspect_dead_letters(
    topic: str, brokers: str, timeout: float = 15.0, *, kafka_config: Mapping[str, Any] | None = None
) -> InspectReport:
    """Read ``topic`` from the beginning up to its end offsets at start and group its dead letters.

    Args:
        topic: the dead-letter topic.
        brokers: bootstrap servers, ``"host:port[,host:port...]"``.
        timeout: seconds to wait for the brokers.
        kafka_config: librdkafka properties every client gets (security settings).

    Raises:
        KafkaAuthenticationError: the brokers refused the credentials or the TLS handshake.
        TopicNotFoundError: ``topic`` does not exist.
        KafkaUnavailableError: the brokers could not be reached, or reading stalled.

    Example:
        >>> report = inspect_dead_letters("orders.dlq", "127.0.0.1:9092")  # doctest: +SKIP
        >>> report.total  # doctest: +SKIP
        12
    """
    kafka = _Kafka(brokers, timeout, kafka_config)
    info = kafka.require(
        topic, "dead-letter topic", "check the name (sluice dlq inspect reads an existing topic)"
    )
    report = InspectReport(topic, info.partitions)
    with kafka.consumer(f"sluice-dlq-inspect-{uuid.uuid4().hex[:12]}") as consumer:
        bounds = kafka.admin.watermarks(topic, info.partitions)
        ranges = {p: _Range(low, high) for p, (low, high) in bounds.items()}
        for msg in _read_snapshot(kafka, consumer, topic, ranges):
            report.add(msg.headers())
    return report


def _render_inspect(report: InspectReport, console: Console) -> None:
    if not report.total:
        console.print(f"{report.topic}: no dead letters")
        console.print(f"total: 0 dead letters in {report.topic}")
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"dead letters in {report.topic}", title_justify="left")
    table.add_column("Source topic", no_wrap=True)
    table.add_column("Stage", no_wrap=True)
    table.add_column("Exception", no_wrap=True)
    table.add_column("Count", justify="right", no_wrap=True)
    table.add_column("Step", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("Sample message", no_wrap=True, overflow="ellipsis")
    groups = sorted(report.groups.items(), key=lambda kv: (-kv[1].count, kv[0]))
    for (source, stage, exception), group in groups:
        step = ""
        if group.steps:
            step, _ = group.steps.most_common(1)[0]
            if len(group.steps) > 1:
                step += f" (+{len(group.steps) - 1} more)"
        table.add_row(source, stage, exception, str(group.count), step, group.sample)
    console.print(table)
    replayed = sum(g.replayed for g in report.groups.values())
    again = f"; {replayed} failed again after a replay" if replayed else ""
    console.print(
        f"total: {_count(report.total, 'dead letter')} in {report.topic} "
        f"({len(report.groups)} groups, {report.partitions} partitions{again})"
    )


def _count(n: int, word: str) -> str:
    """``n`` and ``word``, plural when ``n != 1``.

    Example:
        >>> _count(1, "dead letter"), _count(3, "record")
        ('1 dead letter', '3 records')
    """
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _one_line(text: str) -> str:
    """A message shortened for a table cell.

    Example:
        >>> _one_line("Expecting value:\\n line 1 column 1 (char 0)" + "!" * 80)[-12:]
        '!!!!!!!!!!!…'
    """
    text = " ".join(text.split())
    return text if len(text) <= _SAMPLE_CHARS else text[: _SAMPLE_CHARS - 1] + "…"


# ---------------------------------------------------------------------- replay


@dataclass
class ReplayReport:
    """What a replay did (or, with ``dry_run``, would do)."""

    topic: str
    group: str
    dry_run: bool
    read: int = 0
    replayed: Counter[str] = field(default_factory=Counter)
    skipped_by_filter: int = 0
    skipped_without_context: int = 0
    first_without_context: tuple[int, int] | None = None
    missing: Counter[str] = field(default_factory=Counter)
    committed: dict[int, int] = field(default_factory=dict)

    @property
    def total_replayed(self) -> int:
        return sum(self.replayed.values())


class _Replay:
    """Re-publishes dead letters and tracks, per DLQ partition, how far everything is acknowledged."""

    def __init__(
        self, kafka: _Kafka, report: ReplayReport, to: str | None, where_exception: tuple[str, ...]
    ) -> None:
        self.kafka = kafka
        self.report = report
        self.to = to
        self.where_exception = where_exception
        self._producer: Producer | None = None
        # per DLQ partition: offsets handled since the last checkpoint, in order; and their outcome
        self._handled: dict[int, list[int]] = {}
        self._acked: set[tuple[int, int]] = set()
        self._failures: list[str] = []

    @property
    def failed(self) -> bool:
        return bool(self._failures)

    def _done(self, partition: int, offset: int) -> None:
        if not self.report.dry_run:
            self._handled.setdefault(partition, []).append(offset)
            self._acked.add((partition, offset))

    def handle(self, msg: Message) -> None:
        """Replay, skip or (dry run) count one dead letter."""
        report = self.report
        report.read += 1
        p, offset = msg.partition(), msg.offset()
        headers = msg.headers()
        ctx = DeadLetterContext.from_headers(headers)
        if self.where_exception and not (ctx and _exception_matches(ctx.exception, self.where_exception)):
            report.skipped_by_filter += 1
            self._done(p, offset)
            return
        if self.to is not None:
            destination = self.to
        elif ctx is not None and ctx.topic:
            destination = ctx.topic
        else:
            report.skipped_without_context += 1
            report.first_without_context = report.first_without_context or (p, offset)
            self._done(p, offset)
            return
        info = self.kafka.describe(destination)
        if info is None and report.dry_run:
            report.missing[destination] += 1
            return
        if info is None:
            info = self.kafka.require(
                destination,
                "replay destination topic",
                "create it, or replay to another topic with --to (sluice never creates source topics); "
                f"replayed and committed before it: {report.total_replayed}",
                origin=f" (sluice.error.topic of the dead letter at partition {p} offset {offset})",
            )
        report.replayed[destination] += 1
        if report.dry_run:
            return
        timestamp = ctx.timestamp if ctx is not None and ctx.timestamp >= 0 else msg.timestamp()[1]
        kwargs: dict[str, Any] = {}
        if timestamp >= 0:
            kwargs["timestamp"] = timestamp
        if self.to is None and ctx is not None and 0 <= ctx.partition < info.partitions:
            # back where it came from: after the records of its key that came before it
            kwargs["partition"] = ctx.partition
        headers_out = [*original_headers(headers), (REPLAY_COUNT, str(replay_count(headers) + 1).encode())]
        producer = self._get_producer()
        self._handled.setdefault(p, []).append(offset)
        produce_waiting(
            producer.produce,
            producer.poll,
            destination,
            value=msg.value(),
            key=msg.key(),
            headers=headers_out,
            on_delivery=partial(self._on_delivery, p, offset, destination),
            wait=0.1,
            **kwargs,
        )
        producer.poll(0)

    def _on_delivery(
        self, partition: int, offset: int, destination: str, err: KafkaError | None, _msg: Any
    ) -> None:
        if err is None:
            self._acked.add((partition, offset))
        else:
            self._failures.append(f"partition {partition} offset {offset} -> {destination!r}: {err.str()}")

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self.kafka.client_config(),
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "partitioner": "murmur2_random",
                    "message.timeout.ms": int(max(60.0, 4 * self.kafka.timeout) * 1000),
                }
            )
        return self._producer

    def serve(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    @property
    def pending(self) -> int:
        return sum(len(offsets) for offsets in self._handled.values())

    def checkpoint(self, consumer: Consumer) -> None:
        """Wait for acknowledgements, then commit per partition the offset after the acknowledged prefix."""
        report = self.report
        if report.dry_run:
            return
        if self._producer is not None:
            remaining = self._producer.flush(max(60.0, 4 * self.kafka.timeout))
            if remaining:
                self._failures.append(f"{_count(remaining, 'record')} still unacknowledged after the timeout")
        offsets: list[TopicPartition] = []
        for p, handled in self._handled.items():
            done = 0
            for offset in handled:
                if (p, offset) not in self._acked:
                    break
                done += 1
            if done:
                offsets.append(TopicPartition(report.topic, p, handled[done - 1] + 1))
            self._handled[p] = handled[done:]
        self._acked = {
            (p, o) for p, handled in self._handled.items() for o in handled if (p, o) in self._acked
        }
        if not offsets:
            return
        try:
            retry_coordinator(
                lambda: consumer.commit(offsets=offsets, asynchronous=False),
                what=f"committing the replay progress of group {report.group}",
            )
        except KafkaException as exc:
            doing = f"committing the replay progress of group {report.group} (the next replay will repeat it)"
            raise self.kafka.kafka_error(doing, exc) from exc
        for tp in offsets:
            report.committed[tp.partition] = tp.offset

    def raise_failures(self) -> None:
        if self._failures:
            more = f" (and {len(self._failures) - 1} more)" if len(self._failures) > 1 else ""
            msg = (
                f"Kafka did not acknowledge a replayed record: {self._failures[0]}{more}; "
                "the replay stopped there and its progress is committed before it, so the next replay "
                "starts with it"
            )
            raise DeliveryError(msg)


def replay_dead_letters(
    topic: str,
    brokers: str,
    *,
    to: str | None = None,
    where_exception: tuple[str, ...] = (),
    dry_run: bool = False,
    from_beginning: bool = False,
    timeout: float = 15.0,
    kafka_config: Mapping[str, Any] | None = None,
) -> ReplayReport:
    """Re-publish the dead letters of ``topic`` to their source topics (or to ``to``).

    Each record keeps its key, value, timestamp and original headers (the
    ``sluice.error.*`` ones removed) and gets ``sluice.replay.count`` (previous + 1).
    Back in its source topic a record goes to the partition it came from. Only the
    records present at start are read, from the position committed by the group
    :func:`replay_group` (or from the beginning), and that position is committed
    only after the replayed records are acknowledged.

    Args:
        topic: the dead-letter topic.
        brokers: bootstrap servers, ``"host:port[,host:port...]"``.
        to: re-publish everything here instead of each record's ``sluice.error.topic``;
            records without ``sluice.error`` headers are then replayed too.
        where_exception: replay only dead letters whose exception class name is one of these.
        dry_run: count what would be replayed; produce nothing, commit nothing.
        from_beginning: ignore the committed position and read the whole topic.
        timeout: seconds to wait for the brokers.
        kafka_config: librdkafka properties every client gets (security settings).

    Returns:
        The counts; in a dry run ``missing`` counts records whose destination does not exist.

    Raises:
        TopicNotFoundError: ``topic``, ``to`` or (not in a dry run) a source topic does not exist.
        KafkaUnavailableError: the brokers could not be reached, or committing failed.
        DeliveryError: Kafka refused a replayed record (the progress before it is committed).

    Example:
        >>> report = replay_dead_letters("orders.dlq", "127.0.0.1:9092")  # doctest: +SKIP
        >>> report.replayed  # doctest: +SKIP
        Counter({'orders': 12})
    """
    kafka = _Kafka(brokers, timeout, kafka_config)
    info = kafka.require(
        topic, "dead-letter topic", "check the name (sluice dlq replay reads an existing topic)"
    )
    if to is not None:
        kafka.require(
            to, "replay destination topic (--to)", "create it first (sluice dlq replay creates no topics)"
        )
    group = replay_group(topic)
    report = ReplayReport(topic, group, dry_run)
    replay = _Replay(kafka, report, to, where_exception)
    with kafka.consumer(group) as consumer:
        bounds = kafka.admin.watermarks(topic, info.partitions)
        ranges = _replay_ranges(kafka, consumer, topic, bounds, from_beginning)
        try:
            for msg in _read_snapshot(kafka, consumer, topic, ranges):
                replay.handle(msg)
                if replay.failed:
                    break
                if replay.pending >= CHECKPOINT_RECORDS:
                    replay.checkpoint(consumer)
                else:
                    replay.serve()
        finally:
            # also on errors and Ctrl-C: what was acknowledged is not replayed again
            replay.checkpoint(consumer)
    replay.raise_failures()
    return report


def _replay_ranges(
    kafka: _Kafka, consumer: Consumer, topic: str, bounds: dict[int, tuple[int, int]], from_beginning: bool
) -> dict[int, _Range]:
    if from_beginning:
        return {p: _Range(low, high) for p, (low, high) in bounds.items()}
    try:
        committed = retry_coordinator(
            lambda: consumer.committed([TopicPartition(topic, p) for p in bounds], timeout=kafka.timeout),
            what=f"reading the committed offsets of group {replay_group(topic)}",
        )
    except KafkaException as exc:
        raise kafka.kafka_error(f"reading the committed offsets of group {replay_group(topic)}", exc) from exc
    ranges: dict[int, _Range] = {}
    for tp in committed:
        low, high = bounds[tp.partition]
        start = tp.offset if tp.offset >= 0 else low
        if start > high:
            logger.warning(
                "%s partition %d: committed offset %d is past the end %d (topic recreated?); reading from %d",
                topic,
                tp.partition,
                start,
                high,
                low,
            )
            start = low
        ranges[tp.partition] = _Range(max(start, low), high)
    return ranges


def _exception_matches(exception: str, names: tuple[str, ...]) -> bool:
    """Whether a dead letter's exception is one of ``names`` (a dotted name matches by its last part).

    Example:
        >>> _exception_matches("JSONDecodeError", ("JSONDecodeError",))
        True
        >>> _exception_matches("json.decoder.JSONDecodeError", ("JSONDecodeError",))
        True
        >>> _exception_matches("ValueError", ("KeyError",))
        False
    """
    return exception in names or exception.rpartition(".")[2] in names


def _render_replay(report: ReplayReport, console: Console, where_exception: tuple[str, ...]) -> None:
    verb = "would replay" if report.dry_run else "replayed"
    console.print(
        f"{report.topic}: {_count(report.read, 'dead letter')} read (snapshot up to the end offsets at start)"
    )
    if report.replayed or report.missing:
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("Destination", no_wrap=True)
        table.add_column(verb.capitalize(), justify="right", no_wrap=True)
        for destination, count in sorted(report.replayed.items()):
            table.add_row(destination, str(count))
        for destination, count in sorted(report.missing.items()):
            table.add_row(f"{destination} (does not exist)", str(count))
        console.print(table)
    console.print(f"{verb}: {report.total_replayed}")
    if where_exception:
        console.print(
            f"skipped by filter: {report.skipped_by_filter} (--where-exception {', '.join(where_exception)})"
        )
    else:
        console.print(f"skipped by filter: {report.skipped_by_filter}")
    console.print(f"skipped without sluice.error headers: {report.skipped_without_context}")
    if report.skipped_by_filter and not report.dry_run:
        console.print(
            f"note: the committed position is past the {_count(report.skipped_by_filter, 'dead letter')} "
            "skipped by the filter; replay them later with --from-beginning --where-exception NAME"
        )
    if report.dry_run:
        console.print("dry run: nothing produced, nothing committed")
    elif report.read:
        console.print(f"progress committed for group {report.group}")
    else:
        console.print(
            f"nothing new to replay since the last replay (group {report.group}); --from-beginning replays all"
        )


# ---------------------------------------------------------------------- click


@click.group(cls=SluiceGroup)
def dlq() -> None:
    """Inspect and replay dead-letter topics."""


@dlq.command("inspect")
@click.argument("topic", callback=topic_name_callback)
@connection_options
@timeout_option
def inspect_command(topic: str, kafka: ConnectionArgs, timeout: float) -> None:
    """Count the dead letters of TOPIC by source topic, stage and exception.

    Reads TOPIC from the beginning up to its end offsets at start; commits nothing.
    """
    with errors_as_one_line():
        conn = kafka.resolve()
        report = inspect_dead_letters(topic, conn.brokers, timeout, kafka_config=conn.properties)
    _render_inspect(report, console())


@dlq.command("replay")
@click.argument("topic", callback=topic_name_callback)
@click.option(
    "--to",
    "to",
    metavar="TOPIC",
    callback=topic_name_callback,
    help="Re-publish everything to this existing topic instead of each record's source topic.",
)
@click.option(
    "--where-exception",
    "where_exception",
    metavar="NAME",
    multiple=True,
    help="Replay only dead letters of this exception class (e.g. JSONDecodeError); repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; produce and commit nothing.")
@click.option(
    "--from-beginning", is_flag=True, help="Replay every dead letter, ignoring what earlier replays did."
)
@connection_options
@timeout_option
def replay_command(
    topic: str,
    to: str | None,
    where_exception: tuple[str, ...],
    dry_run: bool,
    from_beginning: bool,
    kafka: ConnectionArgs,
    timeout: float,
) -> None:
    """Re-publish the dead letters of TOPIC to their source topics (or --to TOPIC).

    Records keep their key, value, timestamp and headers (sluice.error.* removed)
    and get sluice.replay.count. Only the dead letters present at start are read.
    Progress is committed in the consumer group sluice-dlq-replay.TOPIC once the
    records are acknowledged, so a second replay does not repeat the first.
    Dead letters skipped by --where-exception are passed as well: replay them
    later with --from-beginning --where-exception NAME.
    """
    if to is not None and to == topic:
        msg = f"--to {to} is the dead-letter topic itself"
        raise click.BadParameter(msg, param_hint="--to")
    out = console()
    with errors_as_one_line():
        conn = kafka.resolve()
        brokers = conn.brokers
        report = replay_dead_letters(
            topic,
            brokers,
            to=to,
            where_exception=where_exception,
            dry_run=dry_run,
            from_beginning=from_beginning,
            timeout=timeout,
            kafka_config=conn.properties,
        )
        if report.skipped_without_context:
            p, offset = report.first_without_context or (-1, -1)
            click.echo(
                f"sluice: warning: skipped {_count(report.skipped_without_context, 'record')} without "
                f"sluice.error headers (the first at partition {p} offset {offset}); "
                "--to TOPIC replays them as they are",
                err=True,
            )
        _render_replay(report, out, where_exception)
        if report.missing:
            names = ", ".join(repr(t) for t in sorted(report.missing))
            which = "topic" if len(report.missing) == 1 else "topics"
            verb = "does" if len(report.missing) == 1 else "do"
            msg = (
                f"replay destination {which} {names} {verb} not exist on {brokers}; create it, "
                "or replay to another topic with --to (sluice never creates source topics)"
            )
            raise TopicNotFoundError(msg)
