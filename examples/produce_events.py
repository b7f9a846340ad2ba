"""A synthetic event producer: clicks, views and purchases as JSON, keyed by user."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from confluent_kafka import Producer

PAGES = [f"/product/{i}" for i in range(40)] + ["/", "/cart", "/checkout", "/search"]
KINDS = ("click", "view", "purchase")


def produce_events(brokers: str, topic: str, count: int, seed: int = 7) -> Counter[str]:
    """Produce ``count`` events to ``topic``; return how many of each type were acknowledged."""
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 10, "enable.idempotence": True})
    acked: Counter[str] = Counter()
    failed: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            acked[orjson.loads(msg.value())["type"]] += 1

    now = int(time.time() * 1000)
    for i in range(count):
        user = f"user-{rng.randrange(500)}"
        event = {
            "id": i,
            "type": rng.choices(KINDS, weights=(5, 4, 1))[0],
            "user": user,
            "page": rng.choice(PAGES),
            "ts": now + i,
        }
        while True:
            try:
                producer.produce(topic, key=user, value=orjson.dumps(event), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    if failed:
        msg = f"{len(failed)} events were not delivered: {failed[0]}"
        raise RuntimeError(msg)
    return acked
