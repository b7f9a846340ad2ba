"""The latency floor: the least a Python consume -> produce loop can do, no commit at all.

``consume(num_messages=500, timeout=0.01)``, keep the clicks, ``produce`` their
``{"id", "page", "user"}`` with the input's timestamp, one ``poll(0)`` per batch; no
offsets committed, no delivery accounting beyond counting errors. The librdkafka
settings are the other contenders' (``CLIENT_CONSUMER``, ``CLIENT_PRODUCER``), so the
scenario compares loops, not client tuning. Runs until ``--records`` or SIGTERM.

``consume(n, timeout)`` returns when it holds ``n`` records *or* the timeout expired:
below 500 records per 10 ms (50,000/s) every call waits the whole 10 ms, which is
part of what this floor measures (see ``benchmarks/results/latency-2026-12-01.md``).
"""

from __future__ import annotations

import signal
import time

import orjson
from confluent_kafka import Consumer, KafkaException, Producer

from benchmarks.contenders import (
    CLIENT_CONSUMER,
    CLIENT_PRODUCER,
    parse_args,
    peak_rss_mb,
    report,
    report_first,
)


def main() -> None:
    args = parse_args(__doc__)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    consumer.subscribe([args.input])
    loads, dumps, produce, poll = orjson.loads, orjson.dumps, producer.produce, producer.poll
    errors: list = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err)

    consumed = 0
    first = None
    while consumed < args.records and not stop:
        msgs = consumer.consume(num_messages=500, timeout=0.01)
        if msgs and first is None:
            first = report_first()
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            event = loads(m.value())
            if event["type"] == "click":
                out = {"id": event["id"], "page": event["page"], "user": event["user"]}
                produce(args.output, dumps(out), m.key(), timestamp=m.timestamp()[1], on_delivery=on_delivery)
        consumed += len(msgs)
        poll(0)
        if errors:
            msg = f"delivery failed: {errors[0]}"
            raise RuntimeError(msg)
    remaining = producer.flush(30)
    consumer.close()
    report(consumed=consumed, unacknowledged=remaining, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
