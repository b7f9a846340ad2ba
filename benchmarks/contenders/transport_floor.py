"""The transport alone: consume every record, then produce the expected outputs, no JSON work at all.

What no Python program on confluent-kafka can beat on this scenario and machine: the
outputs (``{"id", "page", "user"}`` of every click, keyed by user) are serialized
before the clock starts; the loop then consumes the ``--records`` input records
(``consume(num_messages=10_000)``, nothing done with them but counting) and produces
the outputs (``produce`` + a shared delivery callback, ``poll(0)`` every 1,000),
with the same librdkafka settings as the other contenders. It reports the consume-only
and produce-only rates; the harness's msg/s is the two phases back to back.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Consumer, Producer

from benchmarks._kafka import expected_click_ids, make_event
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
    outputs = []
    for i in sorted(expected_click_ids(args.records)):
        event = make_event(i)
        value = orjson.dumps({"id": i, "page": event["page"], "user": event["user"]})
        outputs.append((value, event["user"].encode()))
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, **CLIENT_CONSUMER})
    producer = Producer({"bootstrap.servers": args.brokers, **CLIENT_PRODUCER})
    consumer.subscribe([args.input])
    consumed = 0
    first = None
    while consumed < args.records:
        msgs = consumer.consume(num_messages=10_000, timeout=0.05)
        if msgs and first is None:
            first = report_first()
        consumed += len(msgs)
    consumed_at = time.monotonic()
    errors: list = []
    acked = 0

    def on_delivery(err, _msg) -> None:
        nonlocal acked
        acked += 1
        if err is not None:
            errors.append(err)

    produce, poll = producer.produce, producer.poll
    for n, (value, key) in enumerate(outputs):
        while True:
            try:
                produce(args.output, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.05)
        if n % 1000 == 0:
            poll(0)
    remaining = producer.flush(60)
    produced_at = time.monotonic()
    if remaining or errors:
        msg = f"{remaining} outputs not acknowledged, errors {errors[:3]}"
        raise RuntimeError(msg)
    consumer.close()
    assert first is not None
    report(
        consumed=consumed,
        consume_only_msg_per_s=round(consumed / (consumed_at - first)),
        produce_only_msg_per_s=round(len(outputs) / (produced_at - consumed_at)),
        finished=produced_at,
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main()
