"""Demo: produce a few thousand JSON events to the local broker, consume them back, print a summary."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BROKERS = os.environ.get("SLUICE_BROKERS", "127.0.0.1:9092")
N = 5000


def main() -> None:
    topic = f"demo-events-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": BROKERS})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 5})
    kinds = ("click", "view", "purchase")
    t0 = time.perf_counter()
    for i in range(N):
        event = {"id": i, "type": kinds[i % 3], "page": f"/p/{i % 17}", "user": f"u{i % 101}"}
        producer.produce(topic, key=event["user"], value=orjson.dumps(event))
        producer.poll(0)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    counts: Counter[str] = Counter()
    while sum(counts.values()) < N:
        for msg in consumer.consume(1000, timeout=1):
            if not msg.error():
                counts[orjson.loads(msg.value())["type"]] += 1
    consumer.close()
    elapsed = time.perf_counter() - t0
    print(f"produced and consumed {N} events on {topic} in {elapsed:.2f}s: {dict(counts)}")


if __name__ == "__main__":
    main()
