"""Faust (faust-streaming) peer: the benchmark pipelines as the Faust docs write them.

Run in ``benchmarks/.venv-faust`` (``make bench-peers``):
``python -m benchmarks.peers.faust_peer --scenario stateless|windowed|io --input T ...``.
A ``faust.Worker`` runs the app until the harness sends SIGTERM.

- stateless: an agent over the source topic, ``stream.filter(...)``, ``await sink.send(...)``.
- windowed: ``app.Table(..., on_window_close=...).tumbling(60s, expires=60s)
  .relative_to_stream()``, counting per message key (the input is keyed by user, so the
  table is co-partitioned without ``group_by``); the close callback sends
  ``{"key", "start", "end", "value"}``. Faust closes windows on the wall clock
  (``time.time() - expires``, checked every ``table_cleanup_interval``, set to 1 s), not
  on stream time: on input whose timestamps lie in the past this closes windows while
  their records are still arriving. Measured as the docs write it; the check tells.
- io: an agent with ``concurrency=--concurrency`` awaiting ``asyncio.sleep(20 ms)``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import tempfile
import time
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import faust

from benchmarks.contenders import HANDLER_S, WINDOW_MS, parse_args, peak_rss_mb, report, report_first


class FirstSeen:
    """Reports the first record and counts them all."""

    def __init__(self) -> None:
        self.consumed = 0

    def see(self) -> None:
        if self.consumed == 0:
            report_first()
        self.consumed += 1


def build(args: Any, seen: FirstSeen) -> faust.App:
    app = faust.App(
        args.group,
        broker=f"kafka://{args.brokers}",
        store="memory://",
        value_serializer="json",
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=1.0,
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-peer-"),
    )
    source = app.topic(args.input, key_serializer="raw", value_serializer="json")
    sink = app.topic(args.output, key_serializer="raw", value_serializer="json")

    if args.scenario == "stateless":

        @app.agent(source)
        async def clicks(stream: faust.StreamT) -> None:
            async for key, event in stream.items():
                seen.see()
                if event["type"] == "click":
                    await sink.send(
                        key=key, value={"id": event["id"], "page": event["page"], "user": event["user"]}
                    )

    elif args.scenario == "windowed":

        async def on_close(key: tuple, value: int) -> None:
            user, (start, _end) = key
            start_ms = round(start * 1000)
            out = {"key": user.decode(), "start": start_ms, "end": start_ms + WINDOW_MS, "value": value}
            await sink.send(key=user, value=out)

        counts = (
            app.Table("counts", default=int, on_window_close=on_close, partitions=4)
            .tumbling(timedelta(milliseconds=WINDOW_MS), expires=timedelta(milliseconds=WINDOW_MS))
            .relative_to_stream()
        )

        @app.agent(source)
        async def count(stream: faust.StreamT) -> None:
            async for key, _event in stream.items():
                seen.see()
                counts[key] += 1

    elif args.scenario == "io":

        @app.agent(source, concurrency=args.concurrency)
        async def handle(stream: faust.StreamT) -> None:
            async for key, event in stream.items():
                seen.see()
                await asyncio.sleep(HANDLER_S)
                await sink.send(key=key, value={"id": event["id"], "key": event["key"]})

    return app


def main() -> None:
    args = parse_args(__doc__)
    seen = FirstSeen()
    app = build(args, seen)
    report(version=f"faust-streaming {version('faust-streaming')}")
    atexit.register(
        lambda: report(consumed=seen.consumed, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())
    )
    faust.Worker(app, loglevel=logging.WARNING, quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
