"""The loop of the seed article, as people write it with kafka-python.

``for message in consumer:``, a ``value_deserializer`` doing ``json.loads``,
``KafkaProducer.send`` with a ``json.dumps`` serializer, auto-commit. The only
additions are the counter that ends the loop after ``--records`` records and the
final ``flush()``, which a benchmark needs.
"""

from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, KafkaProducer

from benchmarks.contenders import parse_args, peak_rss_mb, report, report_first


def main() -> None:
    args = parse_args(__doc__)
    consumer = KafkaConsumer(
        args.input,
        bootstrap_servers=args.brokers,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        value_deserializer=lambda m: json.loads(m.decode("utf-8")),
    )
    producer = KafkaProducer(
        bootstrap_servers=args.brokers,
        value_serializer=lambda v: json.dumps(v).encode("utf-8"),
    )
    consumed = 0
    for message in consumer:
        if consumed == 0:
            report_first()
        event = message.value
        if event["type"] == "click":
            producer.send(args.output, {"id": event["id"], "page": event["page"], "user": event["user"]})
        consumed += 1
        if consumed >= args.records:
            break
    producer.flush()
    consumer.close()
    producer.close()
    report(consumed=consumed, finished=time.monotonic(), peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
