"""The dead-letter record format, shared by the runtime (which writes) and ``sluice dlq`` (which reads).

A dead letter is a record of a dead-letter topic whose key, value and timestamp are
the failed record's, byte for byte, and whose headers are the failed record's headers
followed by the ``sluice.error.*`` headers of :class:`DeadLetterContext` (UTF-8
strings). A record re-published by ``sluice dlq replay`` carries the original headers
without the ``sluice.error.*`` ones, plus ``sluice.replay.count``.

Example:
    >>> ctx = DeadLetterContext(
    ...     topic="orders", partition=3, offset=1207, timestamp=1700000000000, stage="process",
    ...     step="map#2(enrich)", exception="ValueError", message="bad sku 'x'",
    ...     stacktrace="Traceback ...", attempts=4, app="billing",
    ... )
    >>> headers = [("trace-id", b"abc"), *ctx.to_headers()]
    >>> DeadLetterContext.from_headers(headers) == ctx
    True
    >>> original_headers(headers)
    [('trace-id', b'abc')]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ERROR_APP",
    "ERROR_ATTEMPTS",
    "ERROR_EXCEPTION",
    "ERROR_MESSAGE",
    "ERROR_OFFSET",
    "ERROR_PARTITION",
    "ERROR_STACKTRACE",
    "ERROR_STAGE",
    "ERROR_STEP",
    "ERROR_TIMESTAMP",
    "ERROR_TOPIC",
    "HEADER_PREFIX",
    "MAX_MESSAGE_BYTES",
    "MAX_STACKTRACE_BYTES",
    "REPLAY_COUNT",
    "STAGES",
    "DeadLetterContext",
    "Header",
    "Stage",
    "original_headers",
    "replay_count",
]

HEADER_PREFIX = "sluice.error."
ERROR_TOPIC = HEADER_PREFIX + "topic"
ERROR_PARTITION = HEADER_PREFIX + "partition"
ERROR_OFFSET = HEADER_PREFIX + "offset"
ERROR_TIMESTAMP = HEADER_PREFIX + "timestamp"
ERROR_STAGE = HEADER_PREFIX + "stage"
ERROR_STEP = HEADER_PREFIX + "step"
ERROR_EXCEPTION = HEADER_PREFIX + "exception"
ERROR_MESSAGE = HEADER_PREFIX + "message"
ERROR_STACKTRACE = HEADER_PREFIX + "stacktrace"
ERROR_ATTEMPTS = HEADER_PREFIX + "attempts"
ERROR_APP = HEADER_PREFIX + "app"
REPLAY_COUNT = "sluice.replay.count"

#: Where a record failed: its bytes could not be read, a step raised, Kafka refused an output, a sink raised.
Stage = Literal["deserialize", "process", "produce", "sink"]
STAGES: tuple[str, ...] = ("deserialize", "process", "produce", "sink")

#: Bounds keep a dead letter far below Kafka's default 1 MB record limit whatever the exception says.
MAX_STACKTRACE_BYTES = 8192
MAX_MESSAGE_BYTES = 4096

#: A Kafka header as confluent-kafka gives it: a value may be ``None``.
Header = tuple[str, bytes | None]

_TRUNCATED = "[...truncated]"


@dataclass(frozen=True)
class DeadLetterContext:
    """Why and where a record failed: the ``sluice.error.*`` headers of its dead letter.

    Attributes:
        topic: the failed record's topic.
        partition: its partition.
        offset: its offset.
        timestamp: its timestamp, milliseconds since the epoch (-1 when unknown).
        stage: ``deserialize``, ``process``, ``produce`` or ``sink`` (see :data:`STAGES`).
        step: the operator that failed, e.g. ``map#2(enrich)``.
        exception: the exception's class name, e.g. ``JSONDecodeError``.
        message: ``str(exception)``, at most :data:`MAX_MESSAGE_BYTES` in the headers.
        stacktrace: the formatted traceback; its last :data:`MAX_STACKTRACE_BYTES` go in the headers.
        attempts: how many times the record was tried (1 + retries).
        app: the name of the app that failed.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    stage: str
    step: str
    exception: str
    message: str
    stacktrace: str
    attempts: int
    app: str

    def to_headers(self) -> list[tuple[str, bytes]]:
        """The ``sluice.error.*`` headers, to append after the record's own headers.

        The message keeps its beginning and the stacktrace its end (the frame that
        raised and the exception line) when they are longer than their bound. Text
        that is not valid UTF-8 (lone surrogates) is escaped rather than refused.

        Returns:
            ``(name, UTF-8 bytes)`` pairs, in the documented order.

        Example:
            >>> ctx = DeadLetterContext("orders", 0, 42, 1700000000000, "deserialize", "source(orders)",
            ...                         "JSONDecodeError", "Expecting value", "...", 1, "billing")
            >>> ctx.to_headers()[:3]
            [('sluice.error.topic', b'orders'), ('sluice.error.partition', b'0'), ('sluice.error.offset', b'42')]
            >>> long = DeadLetterContext("t", 0, 0, 0, "process", "map#1", "E", "m", "x" * 9000 + "END", 1, "a")
            >>> trace = dict(long.to_headers())["sluice.error.stacktrace"]
            >>> len(trace) <= MAX_STACKTRACE_BYTES, trace.startswith(b"[...truncated]"), trace.endswith(b"END")
            (True, True, True)
        """
        return [
            (ERROR_TOPIC, _encode(self.topic)),
            (ERROR_PARTITION, str(self.partition).encode()),
            (ERROR_OFFSET, str(self.offset).encode()),
            (ERROR_TIMESTAMP, str(self.timestamp).encode()),
            (ERROR_STAGE, _encode(self.stage)),
            (ERROR_STEP, _encode(self.step)),
            (ERROR_EXCEPTION, _encode(self.exception)),
            (ERROR_MESSAGE, _head(_encode(self.message), MAX_MESSAGE_BYTES)),
            (ERROR_STACKTRACE, _tail(_encode(self.stacktrace), MAX_STACKTRACE_BYTES)),
            (ERROR_ATTEMPTS, str(self.attempts).encode()),
            (ERROR_APP, _encode(self.app)),
        ]

    @classmethod
    def from_headers(
        cls, headers: Iterable[tuple[str, bytes | str | None]] | None
    ) -> DeadLetterContext | None:
        """Read the context back from a dead letter's headers.

        A missing field reads as ``""`` (text) or ``-1`` (numbers), so that a dead
        letter written by another tool can still be inspected. When a name occurs
        more than once (a dead letter of a record that already was a dead letter),
        the last occurrence, the most recent failure, wins.

        Args:
            headers: a record's headers, as ``confluent_kafka.Message.headers()`` returns
                them (``None`` when the record has none).

        Returns:
            The context, or ``None`` when no header starts with :data:`HEADER_PREFIX`.

        Example:
            >>> DeadLetterContext.from_headers([("trace-id", b"abc")]) is None
            True
            >>> ctx = DeadLetterContext.from_headers([("sluice.error.topic", b"orders"),
            ...                                       ("sluice.error.offset", b"17")])
            >>> ctx.topic, ctx.offset, ctx.partition, ctx.exception
            ('orders', 17, -1, '')
        """
        fields: dict[str, str] = {}
        for name, value in headers or ():
            if name.startswith(HEADER_PREFIX):
                fields[name] = _decode(value)
        if not fields:
            return None
        return cls(
            topic=fields.get(ERROR_TOPIC, ""),
            partition=_int(fields.get(ERROR_PARTITION)),
            offset=_int(fields.get(ERROR_OFFSET)),
            timestamp=_int(fields.get(ERROR_TIMESTAMP)),
            stage=fields.get(ERROR_STAGE, ""),
            step=fields.get(ERROR_STEP, ""),
            exception=fields.get(ERROR_EXCEPTION, ""),
            message=fields.get(ERROR_MESSAGE, ""),
            stacktrace=fields.get(ERROR_STACKTRACE, ""),
            attempts=_int(fields.get(ERROR_ATTEMPTS)),
            app=fields.get(ERROR_APP, ""),
        )


def original_headers(headers: Iterable[Header] | None) -> list[Header]:
    """A dead letter's headers without the ``sluice.error.*`` and ``sluice.replay.count`` ones.

    What is left is the failed record's own headers, in their order, values untouched.

    Example:
        >>> original_headers([("a", b"1"), ("sluice.replay.count", b"1"), ("sluice.error.topic", b"t"),
        ...                   ("b", None)])
        [('a', b'1'), ('b', None)]
        >>> original_headers(None)
        []
    """
    return [
        (name, value)
        for name, value in headers or ()
        if not name.startswith(HEADER_PREFIX) and name != REPLAY_COUNT
    ]


def replay_count(headers: Iterable[tuple[str, bytes | str | None]] | None) -> int:
    """How many times a record was already replayed (its last ``sluice.replay.count``; 0 when none).

    Example:
        >>> replay_count([("sluice.replay.count", b"2")]), replay_count([]), replay_count(None)
        (2, 0, 0)
    """
    count = 0
    for name, value in headers or ():
        if name == REPLAY_COUNT:
            count = max(_int(_decode(value)), 0)
    return count


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def _decode(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def _int(text: str | None) -> int:
    try:
        return int(text) if text else -1
    except ValueError:
        return -1


def _head(data: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes at most, cut on a character boundary, marked when cut."""
    if len(data) <= limit:
        return data
    marker = _TRUNCATED.encode()
    return data[: limit - len(marker)].decode("utf-8", "ignore").encode() + marker


def _tail(data: bytes, limit: int) -> bytes:
    """The last ``limit`` bytes at most, cut on a character boundary, marked when cut."""
    if len(data) <= limit:
        return data
    marker = _TRUNCATED.encode() + b"\n"
    return marker + data[len(data) - limit + len(marker) :].decode("utf-8", "ignore").encode()
