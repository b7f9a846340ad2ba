"""The programs compared by the benchmarks, each run in its own process.

Every contender is ``python -m benchmarks.contenders.<name> --input T --output O
--group G --records N``: it consumes ``N`` records of ``T`` (a fresh consumer group,
from the earliest offset), keeps the clicks, writes ``{"id", "page", "user"}`` to
``O``, and exits (``--scenario windowed``/``io``/``join``: see ``benchmarks.suite``; programs
of other frameworks run until the harness sends SIGTERM). It prints JSON lines on
stdout: ``{"first_consumed": t}`` as soon as it has its first record (``time.monotonic()``, a system-wide clock on Linux, so the
parent can compare it with its own) and a final summary line with its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = [
    "CLIENT_CONSUMER",
    "CLIENT_PRODUCER",
    "HANDLER_S",
    "PIPELINES",
    "SCENARIOS",
    "WINDOW_MS",
    "parse_args",
    "peak_rss_mb",
    "report",
    "report_first",
]

#: what a contender program can be asked to run ("latency" and "memory" are the
#: stateless pipeline, run until SIGTERM; only the ceiling treats them differently)
SCENARIOS = ("stateless", "windowed", "io", "latency", "memory", "join")
#: the stateless pipelines: filter + map (light), or the cleaning of ``benchmarks._heavy`` (heavy)
PIPELINES = ("light", "heavy")
#: the tumbling window of scenario "windowed"
WINDOW_MS = 60_000
#: the handler's sleep in scenario "io"
HANDLER_S = 0.02

#: librdkafka settings of the hand-written loop: the same as sluice's own, so that the
#: comparison measures the Python around the client, not different client tuning.
CLIENT_CONSUMER: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "partition.assignment.strategy": "cooperative-sticky",
    "queued.max.messages.kbytes": 32768,
    "fetch.queue.backoff.ms": 10,
}
CLIENT_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "linger.ms": 5,
    "partitioner": "murmur2_random",
    "queue.buffering.max.kbytes": 131072,
}


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--input", required=True, help="topic to consume")
    parser.add_argument("--output", required=True, help="topic to write the clicks to")
    parser.add_argument(
        "--group", required=True, help="consumer group (fresh: starts at the earliest offset)"
    )
    parser.add_argument("--records", type=int, required=True, help="stop after consuming this many records")
    parser.add_argument("--profile", help="write a pyinstrument text profile to this file (sluice only)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="stateless",
        help="stateless: filter+map+to; windowed: tumbling 1m count per key; io: a 20 ms handler; "
        "join: each record enriched with its user's row of --table",
    )
    parser.add_argument(
        "--table",
        help="scenario join: the table topic (user id -> row) the --input records are enriched from",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="records at once (scenario io)")
    parser.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="light",
        help="stateless only: light = filter + map of JSON events; heavy = benchmarks._heavy (real per-record work)",
    )
    return parser.parse_args(argv)


def peak_rss_mb() -> float | None:
    """This process's peak resident set (``VmHWM``), in MiB.

    Not ``ru_maxrss`` as seen by the parent: Linux carries the parent's peak RSS at
    fork time into the child's, so the parent's own growth would be counted.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def report(**fields: Any) -> None:
    """One JSON line for the harness; the final one (with ``finished``) carries the CPU time so far."""
    if "finished" in fields:
        fields["cpu_at_finish"] = time.process_time()
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def report_first(before: int = 0) -> float:
    """Report the first consumed record: the clock's start, and the CPU time spent before it (start, join).

    ``before``: records already processed when the clock starts (a contender that can see
    its first records only once a batch went through); the rate leaves them out.
    """
    now = time.monotonic()
    report(first_consumed=now, cpu_at_first=time.process_time(), records_before_clock=before)
    return now
