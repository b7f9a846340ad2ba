"""The physical ceiling: librdkafka consuming, nothing else (no decoding, no output).

``consume(num_messages=10000)`` in a loop until ``--records`` records were consumed
(or SIGTERM), with the same client settings as the other confluent-kafka contenders.
It reports ``first_consumed`` and ``last_consumed`` (``time.monotonic()``): the harness
times it between the two, since it writes no output topic. Its check: the count, and
every offset of every partition from 0 on, exactly once (``offset_gaps``).

``--scenario latency``: also the latency floor, produce to consume: per record keyed
``user-*`` (the paced records, not the warm-up pings), now minus its CreateTime; the
p50/p99 are reported when SIGTERM stops it. There it waits for a first record only
(``poll``), not for a full batch, as the latency probe does.
"""

from __future__ import annotations

import signal
import statistics
import time

from confluent_kafka import Consumer, KafkaException

from benchmarks.contenders import CLIENT_CONSUMER, parse_args, peak_rss_mb, report, report_first


def main() -> None:
    args = parse_args(__doc__)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            **CLIENT_CONSUMER,
            **({"fetch.wait.max.ms": 5} if args.scenario == "latency" else {}),
        }
    )
    consumer.subscribe([args.input])
    timed = args.scenario == "latency"
    latencies: list[float] = []
    consumed = gaps = 0
    first: float | None = None
    last = 0.0
    next_offset: dict[int, int] = {}
    while consumed < args.records and not stop:
        if timed:  # consume(n, timeout) waits for n records or the timeout: here, for the first only
            msgs = consumer.consume(num_messages=10_000, timeout=0)
            if not msgs:
                first_msg = consumer.poll(0.1)
                msgs = [first_msg, *consumer.consume(num_messages=9_999, timeout=0)] if first_msg else []
        else:
            msgs = consumer.consume(num_messages=10_000, timeout=0.1)
        if not msgs:
            continue
        if first is None:
            first = report_first()
        now_ms = time.time() * 1000
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            p = m.partition()
            if m.offset() != next_offset.get(p, 0):
                gaps += 1
            next_offset[p] = m.offset() + 1
            if timed and (m.key() or b"").startswith(b"user-"):
                latencies.append(now_ms - m.timestamp()[1])
        consumed += len(msgs)
        last = time.monotonic()
    consumer.close()
    extra = {}
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100)
        extra = {"latency_ms": {"p50": cuts[49], "p99": cuts[98], "max": max(latencies), "n": len(latencies)}}
    report(
        consumed=consumed,
        last_consumed=last,
        offset_gaps=gaps,
        end_offsets=next_offset,
        finished=time.monotonic(),
        peak_rss_mb=peak_rss_mb(),
        **extra,
    )


if __name__ == "__main__":
    main()
