"""``sluice tail TOPIC``: records as pretty JSON, with key, partition, offset, timestamp and headers.

When it stops:

- without ``--from-beginning``: it waits for new records (from the end of every
  partition) until Ctrl-C, or until ``-n N`` records were shown;
- with ``--from-beginning``: it reads every partition from its start up to the end
  offsets it had when the command started, then exits; ``-n N`` stops earlier and
  ``--follow`` keeps waiting for new records afterwards.

``-n`` counts the records shown, after ``--key`` and ``--grep``. Nothing is
committed: tail uses no consumer group of its own. It reads like the apps do
(``read_committed``: records of aborted transactions are not shown).

Each record is one JSON object: ``topic``, ``partition``, ``offset``, ``timestamp``
(ISO 8601 UTC), ``timestamp_ms``, ``key``, ``headers`` and ``value``. A key or value
that is JSON is shown as JSON, UTF-8 text as a string, other bytes as base64 under
``key_base64``/``value_base64``. A header name that repeats has a list of values.

Example:
    >>> record_json("t", 0, 7, 1700000000000, b"user-1", b'{"a": 1}', [("trace", b"x")])["value"]
    {'a': 1}
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

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
from sluice.errors import KafkaUnavailableError, TopicNotFoundError
from sluice.kafka.admin import TopicAdmin

__all__ = ["record_json", "tail"]


def _bytes_field(out: dict[str, Any], name: str, data: bytes | None, parse_json: bool) -> None:
    if data is None:
        out[name] = None
        return
    if parse_json:
        try:
            out[name] = orjson.loads(data)
            return
        except orjson.JSONDecodeError:
            pass
    try:
        out[name] = data.decode()
    except UnicodeDecodeError:
        out[f"{name}_base64"] = base64.b64encode(data).decode()


def record_json(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
) -> dict[str, Any]:
    """The JSON object ``sluice tail`` prints for one record.

    Example:
        >>> record_json("t", 1, 2, -1, b"\\xff", None, [("h", b"1"), ("h", b"2")])
        {'topic': 't', 'partition': 1, 'offset': 2, 'timestamp': None, 'timestamp_ms': None, 'key_base64': '/w==', 'headers': {'h': ['1', '2']}, 'value': None}
    """
    out: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    if timestamp_ms is not None and timestamp_ms >= 0:
        out["timestamp"] = datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
        out["timestamp_ms"] = timestamp_ms
    else:
        out["timestamp"] = out["timestamp_ms"] = None
    _bytes_field(out, "key", key, parse_json=False)
    shown: dict[str, Any] = {}
    for name, raw in headers or ():
        text = None if raw is None else raw.decode(errors="backslashreplace")
        if name in shown:
            previous = shown[name]
            shown[name] = [*previous, text] if isinstance(previous, list) else [previous, text]
        else:
            shown[name] = text
    out["headers"] = shown
    _bytes_field(out, "value", value, parse_json=True)
    return out


class _Tail:
    def __init__(self, topic: str, conn: KafkaConnection, timeout: float) -> None:
        self.topic = topic
        self.conn = conn
        self.timeout = timeout
        self.last_error: str | None = None

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()

    def consumer(self) -> Consumer:
        return Consumer(
            {
                **self.conn.config(),
                "group.id": f"sluice-tail-{uuid.uuid4().hex[:12]}",
                "client.id": "sluice-tail",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "error_cb": self._on_error,
                "logger": logging.getLogger("sluice.kafka.librdkafka"),
            }
        )


@click.command("tail")
@topic_argument()
@click.option("--from-beginning", is_flag=True, help="Read from the start of every partition (then exit).")
@click.option("--follow", "-f", is_flag=True, help="With --from-beginning: keep waiting for new records.")
@click.option("--key", "-k", "key", metavar="K", help="Only records whose key (as UTF-8 text) is K.")
@click.option("--grep", "grep", metavar="TEXT", help="Only records whose key or value contains TEXT.")
@click.option(
    "-n",
    "--max-records",
    "limit",
    type=int,
    callback=positive_count,
    metavar="N",
    help="Stop after N records.",
)
@click.option(
    "--partition",
    "-p",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Only this partition (repeatable).",
)
@click.option("--compact", is_flag=True, help="One JSON object per line (JSON Lines) instead of pretty JSON.")
@connection_options
@timeout_option
def tail(
    topic: str,
    from_beginning: bool,
    follow: bool,
    key: str | None,
    grep: str | None,
    limit: int | None,
    partitions: tuple[int, ...],
    compact: bool,
    kafka: ConnectionArgs,
    timeout: float,
) -> None:
    """Show the records of TOPIC as JSON: new ones as they arrive, or all with --from-beginning.

    Stops after -n N records, at Ctrl-C, or (with --from-beginning, without --follow)
    at the end offsets the partitions had when it started. Nothing is committed.
    """
    if follow and not from_beginning:
        msg = "--follow goes with --from-beginning (without it, tail always follows)"
        raise click.UsageError(msg)
    out = console()
    pretty = out.is_terminal and not compact
    key_bytes = key.encode() if key is not None else None
    needle = grep.encode() if grep is not None else None
    shown = scanned = 0
    with errors_as_one_line(interrupted_code=0):
        conn = kafka.resolve()
        brokers = conn.brokers
        admin = TopicAdmin(conn.config({"client.id": "sluice-tail"}), timeout=timeout)
        info = admin.describe(topic)
        if info is None:
            existing = [t for t in admin.client.list_topics(timeout=timeout).topics if not t.startswith("__")]
            msg = f"topic {topic!r} does not exist on {brokers}{suggest(topic, existing)}"
            raise TopicNotFoundError(msg)
        wanted = list(partitions) or list(range(info.partitions))
        missing = [p for p in wanted if p >= info.partitions]
        if missing:
            msg = f"topic {topic!r} has {info.partitions} partitions (0 to {info.partitions - 1}); no partition {missing[0]}"
            raise TopicNotFoundError(msg)
        runner = _Tail(topic, conn, timeout)
        consumer = runner.consumer()
        try:
            remaining: dict[int, int] = {}
            if from_beginning and not follow:
                bounds = admin.watermarks(topic, info.partitions)
                remaining = {p: bounds[p][1] for p in wanted if bounds[p][1] > bounds[p][0]}
                if not remaining:
                    click.echo(f"sluice: {topic} is empty", err=True)
                    return
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            consumer.assign([TopicPartition(topic, p, start) for p in wanted])
            snapshot = from_beginning and not follow
            stall = max(timeout, 10.0)
            last_progress = time.monotonic()
            while True:
                batch = consumer.consume(500, timeout=0.5)
                if batch:
                    last_progress = time.monotonic()
                elif snapshot and time.monotonic() - last_progress > stall:
                    because = f"; last client error: {runner.last_error}" if runner.last_error else ""
                    click.echo(
                        f"sluice: warning: no progress for {stall:.0f}s before the end of partitions "
                        f"{', '.join(map(str, sorted(remaining)))} (an open transaction, or brokers gone{because})",
                        err=True,
                    )
                    return
                for msg in batch:
                    err = msg.error()
                    p = msg.partition()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if snapshot and p in remaining and msg.offset() >= remaining[p]:
                                del remaining[p]
                            continue
                        if err.fatal() or err.code() in (
                            KafkaError.UNKNOWN_TOPIC_OR_PART,
                            KafkaError._UNKNOWN_PARTITION,
                        ):
                            msg_ = f"reading {topic!r} failed: {err.str()}"
                            raise KafkaUnavailableError(msg_)
                        continue
                    if snapshot:
                        end = remaining.get(p)
                        if end is None or msg.offset() >= end:
                            continue
                        if msg.offset() >= end - 1:
                            del remaining[p]
                    scanned += 1
                    k, v = msg.key(), msg.value()
                    if key_bytes is not None and k != key_bytes:
                        continue
                    if needle is not None and not ((k and needle in k) or (v and needle in v)):
                        continue
                    obj = record_json(topic, p, msg.offset(), msg.timestamp()[1], k, v, msg.headers())
                    if pretty:
                        out.print_json(data=obj)
                    else:
                        option = 0 if compact else orjson.OPT_INDENT_2
                        click.echo(orjson.dumps(obj, option=option).decode())
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
                if snapshot and not remaining:
                    return
        finally:
            consumer.close()
            if shown or scanned or from_beginning:
                filtered = f" of {scanned} read" if (key is not None or grep is not None) else ""
                click.echo(f"sluice: {shown} record{'s' if shown != 1 else ''} shown{filtered}", err=True)
