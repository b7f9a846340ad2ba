"""A synthetic event producer: clicks, views and purchases as JSON, keyed by user.

Like real traffic it is not all clean: every ``malformed_every``-th event is broken
JSON, and every ``broken_every``-th one lacks its ``page`` field.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from confluent_kafka import Producer

PAGES = [f"/product/{i}" for i in range(40)] + ["/", "/cart", "/checkout", "/search"]
KINDS = ("click", "view", "purchase")


def produce_events(
    brokers: str, topic: str, count: int, seed: int = 7, malformed_every: int = 0, broken_every: int = 0
) -> Counter[str]:
    """Produce ``count`` events to ``topic``; return how many of each kind were acknowledged.

    The kinds are the event types, plus ``malformed`` (not JSON) and ``no-page`` (an event
    without its ``page`` field; its type is counted too).
    """
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 10, "enable.idempotence": True})
    acked: Counter[str] = Counter()
    failed: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            try:
                event = orjson.loads(msg.value())
            except orjson.JSONDecodeError:
                acked["malformed"] += 1
                return
            acked[event["type"]] += 1
            if "page" not in event:
                acked["no-page"] += 1

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
        if broken_every and i % broken_every == broken_every - 1:
            del event["page"]
        payload = orjson.dumps(event)
        if malformed_every and i % malformed_every == malformed_every - 1:
            payload = payload[: len(payload) // 2]
        while True:
            try:
                producer.produce(topic, key=user, value=payload, on_delivery=on_delivery)
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
