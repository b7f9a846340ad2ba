"""Bytewax peer: the benchmark dataflows as the Bytewax docs write them.

Run in ``benchmarks/.venv-bytewax`` (``make bench-peers``):
``python -m benchmarks.peers.bytewax_peer --scenario stateless|windowed --input T ...``
(one worker; ``cli_main`` is what ``python -m bytewax.run`` calls). Bytewax's Kafka
source assigns partitions itself (no consumer group) and starts at the beginning.

- stateless: ``kafka.operators.input`` (tail), ``op.filter_map`` to the click, and
  ``kafka.operators.output``. Runs until the harness sends SIGTERM.
- windowed: ``windowing.count_window`` with ``EventClock`` on the record timestamp and
  ``TumblingWindower(1 min)`` keyed by the message key. Bytewax's watermark is the
  largest timestamp its worker has seen, across all partitions, so the per-partition
  flush record (20 minutes after the data) would make the other partitions' last
  records late: the clock waits 15 minutes (``wait_for_system_duration``) and the
  source does not tail, so the remaining windows close at the end of the input, once
  each, and the dataflow exits. (Its windows holding flush records are emitted too;
  the check ignores flush keys.)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.run import cli_main

from benchmarks.contenders import WINDOW_MS, parse_args, peak_rss_mb, report, report_first

ALIGN_TO = datetime(2020, 1, 1, tzinfo=UTC)
WINDOW = timedelta(milliseconds=WINDOW_MS)


class FirstSeen:
    """An ``op.inspect`` callback that reports the first record and counts them all."""

    def __init__(self) -> None:
        self.consumed = 0

    def __call__(self, _step_id: str, _item: Any) -> None:
        if self.consumed == 0:
            report_first()
        self.consumed += 1


def click(msg: KafkaSourceMessage) -> KafkaSinkMessage | None:
    event = json.loads(msg.value)
    if event["type"] != "click":
        return None
    out = {"id": event["id"], "page": event["page"], "user": event["user"]}
    return KafkaSinkMessage(msg.key, json.dumps(out).encode())


def window_out(item: tuple[str, tuple[int, int]]) -> KafkaSinkMessage:
    key, (window_id, count) = item
    start = int((ALIGN_TO + WINDOW * window_id).timestamp() * 1000)
    value = {"key": key, "start": start, "end": start + WINDOW_MS, "value": count}
    return KafkaSinkMessage(key.encode(), json.dumps(value).encode())


def build(args: Any, seen: FirstSeen) -> Dataflow:
    flow = Dataflow(f"bench-{args.scenario}")
    windowed = args.scenario == "windowed"
    source = kop.input("in", flow, brokers=[args.brokers], topics=[args.input], tail=not windowed)
    msgs = op.inspect("first", source.oks, seen)
    if args.scenario == "stateless":
        out = op.filter_map("click", msgs, click)
    elif windowed:
        clock = win.EventClock(
            ts_getter=lambda m: datetime.fromtimestamp(m.timestamp[1] / 1000, tz=UTC),
            wait_for_system_duration=timedelta(minutes=15),
        )
        windower = win.TumblingWindower(length=WINDOW, align_to=ALIGN_TO)
        counts = win.count_window("count", msgs, clock, windower, key=lambda m: m.key.decode())
        out = op.map("format", counts.down, window_out)
    else:
        msg = f"the Bytewax peer runs scenarios 'stateless' and 'windowed', not {args.scenario!r}"
        raise SystemExit(msg)
    kop.output("out", out, brokers=[args.brokers], topic=args.output)
    return flow


def main() -> None:
    args = parse_args(__doc__)
    seen = FirstSeen()
    flow = build(args, seen)
    report(version=f"bytewax {version('bytewax')}")
    cli_main(flow, workers_per_process=1)
    report(consumed=seen.consumed, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
