"""``sluice produce TOPIC``: a rate-limited load generator (JSON templates or a JSON Lines file).

``--template clicks`` makes events like the demo's: ``{"id", "type" (click | view |
purchase), "user", "page", "ts"}`` keyed by ``user``; ``--template orders`` makes
``{"id", "customer", "sku", "quantity", "price", "currency", "ts"}`` keyed by
``customer``. ``--file events.jsonl`` (``-`` for stdin) sends each non-blank line as
it is, after checking that it is JSON; ``--key-field NAME`` keys records by a field.

Records go through an idempotent producer with ``acks=all`` and the Java client's
partitioner (keys land where Kafka Streams and sluice put them). The topic must exist
(topic auto-creation is off): ``--create --partitions N`` creates it when missing.

Example:
    >>> gen = TEMPLATES["clicks"](seed=1)
    >>> key, value = next(gen)
    >>> sorted(orjson.loads(value)), key.startswith(b"user-")
    (['id', 'page', 'ts', 'type', 'user'], True)
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import click
import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sluice._names import suggest
from sluice.cli._common import (
    ConnectionArgs,
    KafkaConnection,
    connection_options,
    console,
    errors_as_one_line,
    positive_count,
    timeout_option,
    topic_argument,
)
from sluice.errors import ConfigError, TopicNotFoundError
from sluice.kafka.admin import TopicAdmin
from sluice.kafka.calls import produce_waiting

__all__ = ["TEMPLATES", "ProduceReport", "produce", "produce_records"]

logger = logging.getLogger(__name__)

PAGES = [f"/product/{i}" for i in range(40)] + ["/", "/cart", "/checkout", "/search"]
KINDS = ("click", "view", "purchase")
KeyValue = tuple[bytes | None, bytes]


def clicks(seed: int = 7) -> Iterator[KeyValue]:
    """Click, view and purchase events (5:4:1) of 500 users on 44 pages, keyed by user."""
    rng = random.Random(seed)
    i = 0
    while True:
        user = f"user-{rng.randrange(500)}"
        event = {
            "id": i,
            "type": rng.choices(KINDS, weights=(5, 4, 1))[0],
            "user": user,
            "page": rng.choice(PAGES),
            "ts": int(time.time() * 1000),
        }
        yield user.encode(), orjson.dumps(event)
        i += 1


def orders(seed: int = 7) -> Iterator[KeyValue]:
    """Orders of 1,000 customers over 200 SKUs, keyed by customer."""
    rng = random.Random(seed)
    i = 0
    while True:
        customer = f"customer-{rng.randrange(1000)}"
        order = {
            "id": i,
            "customer": customer,
            "sku": f"sku-{rng.randrange(200):04d}",
            "quantity": rng.randint(1, 5),
            "price": round(rng.uniform(1, 200), 2),
            "currency": "EUR",
            "ts": int(time.time() * 1000),
        }
        yield customer.encode(), orjson.dumps(order)
        i += 1


#: ``--template`` name -> generator of (key, JSON value) pairs.
TEMPLATES: dict[str, Callable[..., Iterator[KeyValue]]] = {"clicks": clicks, "orders": orders}


class BadInputError(ConfigError):
    """A line of the ``--file`` input is not what it must be."""


def lines_of(stream: IO[bytes], name: str, key_field: str | None = None) -> Iterator[KeyValue]:
    """The non-blank lines of a JSON Lines stream, checked to be JSON, keyed by ``key_field``.

    Example:
        >>> import io
        >>> list(lines_of(io.BytesIO(b'{"u": "a"}\\n\\n{"u": 2}\\n'), "x.jsonl", "u"))
        [(b'a', b'{"u": "a"}'), (b'2', b'{"u": 2}')]
    """
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            msg = f"{name} line {number} is not JSON ({exc}); every line must be one JSON value"
            raise BadInputError(msg) from None
        key = None
        if key_field is not None:
            if not isinstance(value, dict) or key_field not in value:
                msg = f"{name} line {number} has no field {key_field!r} (--key-field)"
                raise BadInputError(msg)
            field = value[key_field]
            key = (field if isinstance(field, str) else orjson.dumps(field).decode()).encode()
        yield key, line


def _rekey(records: Iterator[KeyValue], key_field: str) -> Iterator[KeyValue]:
    for _key, value in records:
        field = orjson.loads(value).get(key_field)
        if field is None:
            msg = f"the template has no field {key_field!r} (--key-field)"
            raise BadInputError(msg)
        yield (field if isinstance(field, str) else orjson.dumps(field).decode()).encode(), value


@dataclass
class ProduceReport:
    """What a ``produce_records`` run did."""

    topic: str
    sent: int = 0
    acknowledged: int = 0
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0


def produce_records(
    topic: str,
    brokers: str,
    records: Iterable[KeyValue],
    *,
    count: int | None = None,
    rate: float | None = None,
    progress: Callable[[ProduceReport], None] | None = None,
    producer_config: dict[str, Any] | None = None,
    kafka_config: dict[str, Any] | None = None,
) -> ProduceReport:
    """Produce ``records`` (at most ``count``, at most ``rate`` per second) and wait for their acks.

    Args:
        topic: an existing topic.
        brokers: bootstrap servers.
        records: (key, value) pairs, e.g. ``TEMPLATES["clicks"]()``.
        count: stop after this many (default: when ``records`` ends).
        rate: records per second (default: as fast as the producer goes).
        progress: called about ten times a second with the report so far.
        producer_config: librdkafka properties to add or override.
        kafka_config: librdkafka properties shared by every client (security settings),
            applied before the producer's own.

    Returns:
        The counts; delivery errors are counted, not raised. A ``KeyboardInterrupt``
        stops producing, waits (up to 30 s) for what was sent, and sets ``interrupted``.
    """
    report = ProduceReport(topic)

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            report.acknowledged += 1
        else:
            report.errors += 1
            if report.first_error is None:
                report.first_error = err.str()

    producer = Producer(
        {
            **(kafka_config or {}),
            "bootstrap.servers": brokers,
            "client.id": "sluice-produce",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "partitioner": "murmur2_random",
            "logger": logging.getLogger("sluice.kafka.librdkafka"),
            **(producer_config or {}),
        }
    )
    started = time.monotonic()
    next_progress = started
    produce = producer.produce
    try:
        for key, value in records:
            if count is not None and report.sent >= count:
                break
            produce_waiting(produce, producer.poll, topic, value, key, on_delivery=on_delivery)
            report.sent += 1
            if rate is not None:
                due = started + report.sent / rate
                now = time.monotonic()
                while now < due:
                    producer.poll(due - now)
                    now = time.monotonic()
            elif report.sent % 1000 == 0:
                producer.poll(0)
            if progress is not None and (rate is not None or report.sent % 1000 == 0):
                now = time.monotonic()
                if now >= next_progress:
                    report.seconds = now - started
                    progress(report)
                    next_progress = now + 0.1
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        remaining = producer.flush(30 if report.interrupted else 120)
        while remaining and not report.interrupted:
            remaining = producer.flush(5)
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report)
    return report


def _ensure_topic(
    topic: str, conn: KafkaConnection, timeout: float, create: bool, partitions: int, replication: int
) -> None:
    brokers = conn.brokers
    admin = TopicAdmin(conn.config({"client.id": "sluice-produce"}), timeout=timeout)
    if admin.describe(topic) is not None:
        return
    if create:
        admin.ensure(topic, partitions, replication)
        click.echo(
            f"sluice: created topic {topic} ({partitions} partitions, replication {replication})", err=True
        )
        return
    try:
        existing = [t for t in admin.client.list_topics(timeout=timeout).topics if not t.startswith("__")]
    except KafkaException:
        existing = []
    msg = (
        f"topic {topic!r} does not exist on {brokers}{suggest(topic, existing)}; topic auto-creation is off: "
        f"create it with --create --partitions N"
    )
    raise TopicNotFoundError(msg)


@click.command("produce")
@topic_argument()
@click.option(
    "--template",
    "-t",
    type=click.Choice(sorted(TEMPLATES)),
    help="Generate JSON events like this (default: clicks, unless --file).",
)
@click.option(
    "--file",
    "-f",
    "source",
    type=click.File("rb"),
    help="Send the lines of this JSON Lines file ('-': stdin) instead of a template.",
)
@click.option(
    "--count",
    "-n",
    type=int,
    callback=positive_count,
    help="Records to produce (default: 1000 with a template, every line with --file).",
)
@click.option(
    "--rate",
    "-r",
    type=click.FloatRange(min=0, min_open=True),
    help="Records per second at most (default: as fast as possible).",
)
@click.option("--key-field", metavar="NAME", help="Key each record by this JSON field.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the template's random choices.")
@click.option("--create", is_flag=True, help="Create the topic when it does not exist.")
@click.option(
    "--partitions", type=click.IntRange(min=1), help="With --create: partitions of the new topic [1]."
)
@click.option("--replication", type=click.IntRange(min=1), help="With --create: replication factor [1].")
@connection_options
@timeout_option
def produce(
    topic: str,
    template: str | None,
    source: IO[bytes] | None,
    count: int | None,
    rate: float | None,
    key_field: str | None,
    seed: int,
    create: bool,
    partitions: int | None,
    replication: int | None,
    kafka: ConnectionArgs,
    timeout: float,
) -> None:
    """Produce JSON records to TOPIC: generated (--template) or from a file (--file), rate-limited.

    Shows a progress bar on a terminal and reports how many records Kafka
    acknowledged; exits 1 when any record was not acknowledged.
    """
    if template is not None and source is not None:
        msg = "give either --template or --file, not both"
        raise click.UsageError(msg)
    if not create and (partitions is not None or replication is not None):
        msg = "--partitions and --replication go with --create"
        raise click.UsageError(msg)
    with errors_as_one_line():
        conn = kafka.resolve()
        _ensure_topic(topic, conn, timeout, create, partitions or 1, replication or 1)
        if source is not None:
            name = (
                "stdin" if source is sys.stdin.buffer or getattr(source, "name", "-") == "-" else source.name
            )
            records: Iterable[KeyValue] = lines_of(source, str(name), key_field)
            total = count
        else:
            records = TEMPLATES[template or "clicks"](seed=seed)
            if key_field is not None:
                records = _rekey(iter(records), key_field)
            total = count = count or 1000
        report = _produce_with_progress(topic, conn, records, count, rate, total)
    out = console()
    rate_text = f"{report.rate:,.0f} records/s"
    out.print(
        f"produced {report.sent} records to {topic}: {report.acknowledged} acknowledged, "
        f"{report.errors} errors in {report.seconds:.2f}s ({rate_text})"
    )
    if report.errors:
        click.echo(
            f"sluice: error: {report.errors} records not acknowledged; first: {report.first_error}", err=True
        )
        sys.exit(1)
    if report.interrupted:
        click.echo("sluice: interrupted", err=True)
        sys.exit(130)


def _produce_with_progress(
    topic: str,
    conn: KafkaConnection,
    records: Iterable[KeyValue],
    count: int | None,
    rate: float | None,
    total: int | None,
) -> ProduceReport:
    err = console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acked {task.fields[acked]}  errors {task.fields[errors]}  {task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    task = bar.add_task(f"producing to {topic}", total=total, acked=0, errors=0, rate="")
    next_line = time.monotonic() + 10
    last = ProduceReport(topic)

    def progress(report: ProduceReport) -> None:
        nonlocal next_line, last
        last = report
        rate_text = f"{report.sent / report.seconds:,.0f}/s" if report.seconds > 0 else ""
        bar.update(
            task, completed=report.sent, acked=report.acknowledged, errors=report.errors, rate=rate_text
        )
        if bar.disable and time.monotonic() >= next_line:
            next_line = time.monotonic() + 10
            of = f"/{total}" if total else ""
            click.echo(
                f"sluice: produced {report.sent}{of}, acknowledged {report.acknowledged}, errors {report.errors}",
                err=True,
            )

    with bar:
        try:
            return produce_records(
                topic,
                conn.brokers,
                records,
                count=count,
                rate=rate,
                progress=progress,
                kafka_config=dict(conn.properties),
            )
        except BadInputError as exc:
            msg = f"{exc}; stopped there: {last.acknowledged} records before it were acknowledged"
            raise BadInputError(msg) from None
