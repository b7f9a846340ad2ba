"""Sinks that write whole batches: SQLite (the embedded default), PostgreSQL, JSON Lines and Parquet files.

Each is a batch sink (see ``sluice.dataflow.sinks``): the runtime calls its
``write_batch`` once per consumed batch, it writes the batch in one transaction (or
one flushed, fsynced append) and returns only when the rows are durable; the rows'
offsets are committed after that. When a batch fails, the runtime writes it again
one row at a time and sends the rows that still fail through the failure policy
(dead-letter topic by default): a failed batch leaves nothing behind, so that retry
writes each good row exactly once.

A sink that cannot write at all (a database down, read-only after a failover or
locked by another writer, a full disk) raises ``SinkUnavailableError``, an
``EnvironmentalError``: no row is at fault, so none is dead-lettered. The runtime
writes the whole batch again with the failure policy's backoff, committing nothing
past it, until it lands or ``on_error(retry_for=...)`` is spent; then the app stops.

A sink that cannot write at all (a database down, read-only after a failover or
locked by another writer, a full disk) raises ``SinkUnavailableError``, an
``EnvironmentalError``: no row is at fault, so none is dead-lettered. The runtime
writes the whole batch again with the failure policy's backoff, committing nothing
past it, until it lands or ``on_error(retry_for=...)`` is spent; then the app stops.

Connections and files are opened on the first write, in the process that writes
(``sluice run --workers N``: one connection per process), and closed when the app stops.

Example:
    >>> from sluice import App, sinks
    >>> app = App("clicks")
    >>> clicks = app.stream("events").filter(lambda e: e["type"] == "click")
    >>> _ = clicks.sink(sinks.sqlite("clicks.db", table="clicks", key="id"))
    >>> _ = clicks.sink(sinks.jsonl("out/clicks-{partition}.jsonl"))
"""

# no `from __future__ import annotations` and no helpers here: every public name is a sink
from sluice.errors import SinkError, SinkRowError, SinkUnavailableError  # noqa: F401 - importable here, as before
from sluice.sinks._factories import jsonl, parquet, postgres, sqlite
from sluice.sinks._jsonl import JsonlSink
from sluice.sinks._sqlite import SqliteSink

__all__ = [
    "JsonlSink",
    "ParquetSink",
    "PostgresSink",
    "SqliteSink",
    "jsonl",
    "parquet",
    "postgres",
    "sqlite",
]


def __getattr__(name: str) -> type:
    # the optional sinks' classes, without importing their optional dependency up front
    if name == "PostgresSink":
        from sluice.sinks._postgres import PostgresSink

        return PostgresSink
    if name == "ParquetSink":
        from sluice.sinks._parquet import ParquetSink

        return ParquetSink
    msg = f"module 'sluice.sinks' has no attribute {name!r}"
    raise AttributeError(msg)
